"""`flamefit` command line. Errors the user can act on print one line on stderr."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from . import __version__
from .config import PATH_KEYS, load_settings
from .errors import FlameFitError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model files (override FLAMEFIT_* variables and the settings file)")
    group.add_argument("--model", dest="flame_model", metavar="FILE", help="FLAME .pkl/.npz (default: configured file, else the open head)")
    group.add_argument("--uv-template", metavar="FILE", help="FLAME head_template_mesh.obj or a texture-space .npz with vt/ft")
    group.add_argument("--texture-space", metavar="FILE", help="albedo PCA space (.npz)")
    group.add_argument("--landmark-embedding", metavar="FILE", help="DECA landmark_embedding.npy, FLAME_PyTorch or MediaPipe embedding")
    group.add_argument("--cache-dir", metavar="DIR", help="where built models and embeddings are cached")


def settings_from(args):
    return load_settings({key: getattr(args, key, None) for key in (*PATH_KEYS, "cache_dir")})


def cmd_models(args) -> None:
    from .models import load_head_model

    settings = settings_from(args)
    model = load_head_model(settings)
    report = {"settings": settings.describe(), "settings_file": str(settings.settings_file or "none"),
              "head_model": model.summary(), "provenance": model.provenance}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"Settings file: {report['settings_file']}")
    for key, item in report["settings"].items():
        print(f"  {key:20s} {item['value'] or '-':50s} ({item['from']})")
    print("Head model in use:")
    for key, value in report["head_model"].items():
        print(f"  {key:22s} {value}")


def cmd_model_info(args) -> None:
    from .models.flame import inspect_model_file

    info = inspect_model_file(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(f"{info['path']}: {info['kind']}")
        for key, item in info.get("keys", {}).items():
            print(f"  {key:28s} {str(tuple(item.get('shape', ()))):18s} {item.get('dtype', '')}")
        for key, value in info.items():
            if key in ("path", "kind", "keys", "problems"):
                continue
            if isinstance(value, dict):  # "model", "texture_space": one line per entry
                print(f"  {key}:")
                for name, item in value.items():
                    print(f"    {name}: {item}")
            else:
                print(f"  {key}: {value}")
    if info.get("problems"):
        raise FlameFitError(f"{args.path}: " + "; ".join(info["problems"]))


# --- fit / batch ---------------------------------------------------------------------


def add_fit_flags(parser: argparse.ArgumentParser) -> None:
    from .fitting.schedule import OPTIONAL_STAGES

    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="bundle folder to write")
    add_model_flags(parser)
    group = parser.add_argument_group("fitting")
    group.add_argument("--detector", default="dlib", choices=("dlib", "face-alignment", "mediapipe"),
                       help="68-point landmark detector (default: dlib)")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    group.add_argument("--no-expression", action="store_true", help="fit a neutral face (no expression, jaw closed)")
    group.add_argument("--stages", default=",".join(OPTIONAL_STAGES), metavar="LIST",
                       help=f"optional stages to run, comma-separated (default: {','.join(OPTIONAL_STAGES)}); "
                            "the rigid fit always runs")
    group.add_argument("--texture-size", type=int, default=1024, metavar="N", help="albedo.png size (default 1024)")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    group.add_argument("--json-progress", action="store_true",
                       help="one JSON object per line on stdout (for the Blender add-on)")


def fit_options_from(args):
    from .fitting import FitOptions

    if not 16 <= args.texture_size <= 8192:
        raise FlameFitError(f"--texture-size {args.texture_size}: choose between 16 and 8192")
    return FitOptions(stages=FitOptions.parse_stages(args.stages), expression=not args.no_expression,
                      texture_size=args.texture_size)


def configure_threads() -> None:
    """CPU threads for torch: FLAMEFIT_THREADS, default 1 (the fit's tensors are small;
    extra threads mostly spin, and badly so when the cores are shared)."""
    import os

    import torch

    value = os.environ.get("FLAMEFIT_THREADS", "1")
    try:
        torch.set_num_threads(max(1, int(value)))
    except ValueError:
        raise FlameFitError(f"FLAMEFIT_THREADS={value!r} is not a number") from None


def load_model_and_space(settings):
    """(model, texture space or None) for fitting (`fit`, `batch` and its workers). The
    space holds only the components the photometric stage fits (load_texture_space)."""
    from .models import load_head_model

    model = load_head_model(settings)
    space = None
    if settings.texture_space is not None:
        from .textures.spaces import load_texture_space

        space = load_texture_space(settings.texture_space, model)
    return model, space


def load_fit_inputs(args):
    """(model, texture space or None, seconds) from the settings."""
    start = time.perf_counter()
    model, space = load_model_and_space(settings_from(args))
    return model, space, round(time.perf_counter() - start, 3)


def _internal(exc: Exception) -> FlameFitError:
    """An unexpected failure as one line (FLAMEFIT_DEBUG=1 shows the traceback)."""
    import os
    import traceback

    if os.environ.get("FLAMEFIT_DEBUG"):
        traceback.print_exc()
    return FlameFitError(f"fit failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                         "(set FLAMEFIT_DEBUG=1 for details)")


def cmd_fit(args) -> None:
    from .bundle import check_output, write_bundle
    from .fitting import fit_photo, resolve_device
    from .image import load_photo
    from .progress import BarProgress, JsonProgress

    progress = JsonProgress() if args.json_progress else BarProgress()
    try:
        out = check_output(args.output, args.overwrite)
        options = fit_options_from(args)
        device = resolve_device(args.device)
        configure_threads()
        start = time.perf_counter()
        photo = load_photo(args.photo)  # bad photos fail before the model loads
        image_seconds = time.perf_counter() - start
        model, space, model_seconds = load_fit_inputs(args)
        result = fit_photo(photo, model, options, landmarks=args.landmarks, detector=args.detector,
                           face_index=args.face, texture_space=space, device=device, progress=progress)
        result.timings["image"] = round(result.timings.get("image", 0.0) + image_seconds, 3)
        path = write_bundle(result, out, args.overwrite, progress, extra_timings={"model": model_seconds})
    except KeyboardInterrupt:
        progress({"event": "error", "message": "interrupted; nothing was written"})
        raise
    except FlameFitError as exc:
        progress({"event": "error", "message": str(exc)})
        raise
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        error = _internal(exc)
        progress({"event": "error", "message": str(error)})
        raise error from None
    finally:
        progress.close()
    progress({"event": "done", "bundle": str(path), "result": str(path / "result.json")})
    if not args.json_progress:
        m = result.metrics
        print(f"wrote {path}  (landmarks {m['landmark_error_px']:.2f} px, "
              f"{100 * m['landmark_error_eye_fraction']:.1f}% of eye distance; PSNR {m['psnr_db']:.1f} dB; "
              f"{result.timings['total']:.1f} s)")


def cmd_batch(args) -> None:
    from .bundle.batch import run_batch

    options = fit_options_from(args)
    run_batch(args, options)


# --- texture-space build ---------------------------------------------------------------


def add_texture_space_parser(sub) -> None:
    p = sub.add_parser("texture-space", help="albedo PCA spaces: build one from a folder of photos")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="fit every photo, unwrap its de-lit albedo into UV, PCA (resumable)")
    b.add_argument("photos", metavar="PHOTOS_DIR")
    b.add_argument("-o", "--output", required=True, metavar="SPACE.npz",
                   help="the space (FLAME_texture.npz layout); SPACE.png (contact sheet) and SPACE.work/ go beside it")
    b.add_argument("--components", type=int, default=50, metavar="K", help="principal components to keep (default 50)")
    b.add_argument("--workers", type=int, default=1, metavar="N", help="fit N photos at a time (processes)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build: reuse every stored photo")
    b.add_argument("--uv-resolution", type=int, default=256, metavar="N", help="unwrap and PCA resolution (default 256)")
    b.add_argument("--size", type=int, default=512, metavar="N", help="stored resolution (default 512, like FLAME's)")
    b.add_argument("--normalise", default="white-balance", choices=("none", "exposure", "white-balance"),
                   help="per-photo gains divided out before the PCA (default white-balance: one per channel)")
    b.add_argument("--symmetric-fill", type=float, default=0.5, metavar="W",
                   help="weight of mirrored texels filling unseen ones (0: off; default 0.5)")
    b.add_argument("--licence", default="not stated (pass --licence)", metavar="TEXT",
                   help="the licence of the input photos, recorded in the space's metadata")
    b.add_argument("--detector", default="dlib", choices=("dlib", "face-alignment", "mediapipe"))
    add_model_flags(b)
    b.set_defaults(run=cmd_texture_space_build)


def cmd_texture_space_build(args) -> None:
    from pathlib import Path

    from .textures.build import build_from_cli, work_dir_for

    try:
        build_from_cli(args, settings_from(args))
    except KeyboardInterrupt:
        print(f"flamefit: interrupted; the photos done so far are kept in {work_dir_for(Path(args.output))}: "
              "run the same command with --resume to continue", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamefit", description="Fit a FLAME head to a photo.")
    parser.add_argument("--version", action="version", version=f"flamefit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="show the configured head model, validated, with shapes and licences")
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("model-info", help="inspect any model, UV, embedding or texture file safely")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_model_info)

    p = sub.add_parser("fit", help="fit the head model to one photo and write a result bundle")
    p.add_argument("photo", metavar="PHOTO")
    add_fit_flags(p)
    p.add_argument("--landmarks", metavar="FILE", help="68 iBUG points (.pts, .json or .npy) instead of the detector")
    p.add_argument("--face", type=int, metavar="N", help="which face when there are several (0 = leftmost; default: largest)")
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser("batch", help="fit every photo in a folder: one bundle each, and summary.csv")
    p.add_argument("photos", metavar="PHOTOS_DIR")
    add_fit_flags(p)
    p.add_argument("--resume", action="store_true", help="skip photos whose bundle is already complete")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="fit N photos at a time (processes)")
    p.set_defaults(run=cmd_batch)
    add_texture_space_parser(sub)
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        args.run(args)
    except FlameFitError as exc:
        print(f"flamefit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("flamefit: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
