"""`flamefit` command line: parses arguments and calls `flamefit.app`.

One top-level handler (`main`) turns every failure into one line on stderr:
`flamefit: error: ...` with exit code 2 for anything the user can act on, 1 for an
internal bug (the traceback with --debug or FLAMEFIT_DEBUG=1), and one interrupt path
for Ctrl-C, SIGTERM and SIGHUP (exit code 130, repeated signals ignored while the run
cleans up).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from . import __version__
from .errors import FlameFitError, Interrupted

EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
# The texture stage works per texel: 4096 peaks at 3.8 GB, 8192 would need ~15 GB (#11.6).
MAX_TEXTURE_SIZE = 4096
MODEL_KEYS = ("flame_model", "uv_template", "texture_space", "landmark_embedding", "cache_dir")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model files (override FLAMEFIT_* variables and the settings file)")
    group.add_argument("--model", dest="flame_model", metavar="FILE", help="FLAME .pkl/.npz (default: configured file, else the open head)")
    group.add_argument("--uv-template", metavar="FILE", help="FLAME head_template_mesh.obj or a texture-space .npz with vt/ft")
    group.add_argument("--texture-space", metavar="FILE", help="albedo PCA space (.npz)")
    group.add_argument("--landmark-embedding", metavar="FILE", help="DECA landmark_embedding.npy, FLAME_PyTorch or MediaPipe embedding")
    group.add_argument("--cache-dir", metavar="DIR", help="where built models and embeddings are cached")


def model_flags(args) -> dict:
    return {key: getattr(args, key, None) for key in MODEL_KEYS}


def _detector_flag(parser, help_text: str) -> None:
    from .landmarks.registry import DETECTORS, default_detector

    parser.add_argument("--detector", default=None, choices=tuple(DETECTORS),
                        help=f"{help_text} (default: {default_detector()})")


# --- models / model-info --------------------------------------------------------------


def cmd_models(args) -> None:
    from .app.inspect import models_lines, models_report

    report = models_report(model_flags(args))
    print(json.dumps(report, indent=2, default=str) if args.json else "\n".join(models_lines(report)))


def cmd_model_info(args) -> None:
    from .app.inspect import model_info, model_info_lines, model_info_problems

    info = model_info(args.path)
    print(json.dumps(info, indent=2, default=str) if args.json else "\n".join(model_info_lines(info)))
    model_info_problems(info, args.path)


# --- fit / batch ----------------------------------------------------------------------


def add_fit_flags(parser: argparse.ArgumentParser) -> None:
    from .fitting.schedule import OPTIONAL_STAGES

    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="bundle folder to write")
    add_model_flags(parser)
    group = parser.add_argument_group("fitting")
    _detector_flag(group, "face and landmark detector")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    group.add_argument("--no-expression", action="store_true", help="fit a neutral face (no expression, jaw closed)")
    group.add_argument("--stages", default=",".join(OPTIONAL_STAGES), metavar="LIST",
                       help=f"optional stages to run, comma-separated (default: {','.join(OPTIONAL_STAGES)}); "
                            "the rigid fit always runs")
    group.add_argument("--texture-size", type=int, default=1024, metavar="N", help="albedo.png size (default 1024)")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output bundle (only a FlameFit bundle)")
    group.add_argument("--json-progress", action="store_true",
                       help="one JSON object per line on stdout (for the Blender add-on)")


def fit_options_from(args):
    from .fitting import FitOptions

    if not 16 <= args.texture_size <= MAX_TEXTURE_SIZE:
        raise FlameFitError(f"--texture-size {args.texture_size}: choose between 16 and {MAX_TEXTURE_SIZE}")
    return FitOptions(stages=FitOptions.parse_stages(args.stages), expression=not args.no_expression,
                      texture_size=args.texture_size)


def cmd_fit(args) -> None:
    from .app.fit import FitRequest, internal_error, run_fit
    from .progress import BarProgress, JsonProgress

    progress = JsonProgress() if args.json_progress else BarProgress()
    try:
        request = FitRequest(photos=args.photos, output=args.output, fit_options=fit_options_from(args),
                             landmarks=args.landmarks, detector=args.detector, face_index=args.face,
                             device=args.device, overwrite=args.overwrite, settings=model_flags(args))
        path, result = run_fit(request, progress)
    except KeyboardInterrupt as exc:
        _report_error(progress, getattr(exc, "message", "interrupted; nothing was written"))
        raise
    except FlameFitError as exc:
        _report_error(progress, str(exc))
        raise
    except Exception as exc:
        _report_error(progress, str(internal_error(exc)))
        raise
    finally:
        progress.close()
    progress({"event": "done", "bundle": str(path), "result": str(path / "result.json")})
    if not args.json_progress:
        m = result.metrics
        print(f"wrote {path}  (landmarks {m['landmark_error_px']:.2f} px, "
              f"{100 * m['landmark_error_eye_fraction']:.1f}% of eye distance; PSNR {m['psnr_db']:.1f} dB; "
              f"{result.timings['total']:.1f} s)")


def _report_error(progress, message: str) -> None:
    try:
        progress({"event": "error", "message": message})
    except (OSError, ValueError, FlameFitError):
        pass  # stdout is gone; the line on stderr says it


def cmd_batch(args) -> None:
    from .app.batch import BatchRequest, run_batch
    from .progress import JsonProgress

    run_batch(BatchRequest(photos_dir=args.photos, output=args.output, fit_options=fit_options_from(args),
                           detector=args.detector, device=args.device, overwrite=args.overwrite, resume=args.resume,
                           subjects=args.subjects, workers=args.workers, executor=executor_from(args), settings=model_flags(args),
                           progress=JsonProgress() if args.json_progress else None))


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """Where the photos are fitted (batch, texture-space build): issue #21."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="fit N photos at a time (local: processes, default 1; Ray: photos in flight, "
                             "default two per CPU of the cluster)")
    parser.add_argument("--executor", choices=("local", "ray"), default=None,
                        help="local: this machine's worker pool (default); ray: Ray tasks (same as --ray)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="fit on Ray: the cluster at ADDRESS (or RAY_ADDRESS), else a local runtime "
                             '(pip install "flamefit[ray]")')
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="Ray: a photo whose worker died is tried again N more times (default 2)")


def executor_from(args):
    from .app.executors import ExecutorOptions

    if args.executor == "local" and args.ray is not None:
        raise FlameFitError("--executor local and --ray contradict each other: give one")
    if args.retries < 0:
        raise FlameFitError(f"--retries {args.retries}: need 0 or more")
    ray = args.ray is not None or args.executor == "ray"
    return ExecutorOptions(kind="ray" if ray else "local", address=args.ray or None, retries=args.retries)


# --- faces ---------------------------------------------------------------------------


def cmd_faces(args) -> None:
    from .app.faces import list_faces, listing_lines

    listing = list_faces(args.photo, detector=args.detector, picture=args.picture, overwrite=args.overwrite)
    # --json: one line, so a reader of lines (the add-on) gets it whole
    print(json.dumps(listing) if args.json else "\n".join(listing_lines(listing)))


# --- texture-space build ---------------------------------------------------------------


def add_texture_space_parser(sub) -> None:
    p = sub.add_parser("texture-space", help="albedo PCA spaces: build one from a folder of photos")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="fit every photo, unwrap its de-lit albedo into UV, PCA (resumable)")
    b.add_argument("photos", metavar="PHOTOS_DIR")
    b.add_argument("-o", "--output", required=True, metavar="SPACE.npz",
                   help="the space (FLAME_texture.npz layout); SPACE.png (contact sheet) and SPACE.work/ go beside it")
    b.add_argument("--components", type=int, default=50, metavar="K", help="principal components to keep (default 50)")
    add_executor_flags(b)
    b.add_argument("--resume", action="store_true", help="continue an interrupted build: reuse every stored photo")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an existing SPACE.npz and SPACE.png (only ones FlameFit wrote; never a photo)")
    b.add_argument("--uv-resolution", type=int, default=256, metavar="N", help="unwrap and PCA resolution (default 256)")
    b.add_argument("--size", type=int, default=512, metavar="N", help="stored resolution (default 512, like FLAME's)")
    b.add_argument("--normalise", default="white-balance", choices=("none", "exposure", "white-balance"),
                   help="per-photo gains divided out before the PCA (default white-balance: one per channel)")
    b.add_argument("--symmetric-fill", type=float, default=0.5, metavar="W",
                   help="weight of mirrored texels filling unseen ones (0: off; default 0.5)")
    b.add_argument("--licence", default="not stated (pass --licence)", metavar="TEXT",
                   help="the licence of the input photos, recorded in the space's metadata")
    _detector_flag(b, "face and landmark detector")
    add_model_flags(b)
    b.set_defaults(run=cmd_texture_space_build)


def cmd_texture_space_build(args) -> None:
    from pathlib import Path

    from .app.texture_space_build import BuildRequest, run_build
    from .textures.work import work_dir_for

    request = BuildRequest(photos_dir=args.photos, output=args.output, components=args.components,
                           workers=args.workers, executor=executor_from(args), resume=args.resume,
                           overwrite=args.overwrite, uv_resolution=args.uv_resolution, size=args.size, normalise=args.normalise,
                           symmetric_fill=args.symmetric_fill, licence=args.licence, detector=args.detector,
                           settings=model_flags(args))
    try:
        run_build(request)
    except KeyboardInterrupt:
        work = work_dir_for(Path(args.output).expanduser().absolute())
        raise Interrupted(f"interrupted; the photos done so far are kept in {work}: "
                          "run the same command with --resume to continue") from None


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line like every other error, not argparse's usage block;
    the subcommand parsers are of this class too (add_subparsers copies it)."""

    def error(self, message):
        raise FlameFitError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flamefit", description="Fit a FLAME head to a photo.")
    parser.add_argument("--version", action="version", version=f"flamefit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="show the configured head model, validated, with shapes and licences")
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("model-info", help="inspect any model, UV, embedding or texture file safely")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_model_info)

    p = sub.add_parser("fit", help="fit the head model to one photo, or several photos of one person, and write a "
                                   "result bundle")
    p.add_argument("photos", metavar="PHOTO", nargs="+", help="one or more photos of one person (one head is fitted "
                                                              "to all; the first is the reference view)")
    add_fit_flags(p)
    p.add_argument("--landmarks", metavar="FILE", action="append",
                   help="68 iBUG points (.pts, .json or .npy) instead of the detector; with several photos give it "
                        "once per photo, in the photos' order, '-' for a photo whose points the detector finds "
                        "(e.g. a front photo beside profiles, which need their points)")
    p.add_argument("--face", type=int, metavar="N", help="which face when there are several (0 = leftmost; default: the one a person means: large, sharp, central, whole; result.json says why)")
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser("faces", help="list the faces of a photo as fit --face counts them, and the one a fit takes")
    p.add_argument("photo", metavar="PHOTO")
    _detector_flag(p, "face detector")
    p.add_argument("--picture", metavar="OUT.png", help="also write the photo (at most 1024 px) with the faces boxed and numbered")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --picture file")
    p.add_argument("--json", action="store_true", help="print one JSON object on one line")
    p.set_defaults(run=cmd_faces)

    p = sub.add_parser("batch", help="fit every photo in a folder: one bundle each, and summary.csv")
    p.add_argument("photos", metavar="PHOTOS_DIR")
    add_fit_flags(p)
    p.add_argument("--resume", action="store_true", help="skip photos whose bundle is already complete")
    p.add_argument("--subjects", action="store_true",
                   help="PHOTOS_DIR holds one folder of photos per person: one bundle per person, fitted from all "
                        "of their photos at once (as `fit PHOTO PHOTO ...`)")
    add_executor_flags(p)
    p.set_defaults(run=cmd_batch)
    add_texture_space_parser(sub)
    return parser


# --- the one handler --------------------------------------------------------------------

_INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_interrupted = [False]


def _on_signal(signum, frame):
    """The first interrupt raises KeyboardInterrupt; later ones are ignored, so the clean-up
    it starts always finishes (one path for Ctrl-C, SIGTERM and SIGHUP)."""
    if _interrupted[0]:
        return
    _interrupted[0] = True
    for number in _INTERRUPT_SIGNALS:  # also through interpreter shutdown, which restores SIG_DFL
        signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt


def _one_line(text: str) -> str:
    """A message as one line: newlines in paths shown as \\n, never split."""
    return " ".join(str(text).replace("\r", "\\r").replace("\n", "\\n").split(" ")) or "unknown error"


def _say(message: str) -> None:
    try:
        print(f"flamefit: {_one_line(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass  # stderr is gone too: the exit code says it


def _silence_stdout() -> None:
    """After stdout broke (closed, or `| head -1` exited): point it at /dev/null so the
    interpreter's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _stdout_usable() -> bool:
    if sys.stdout is None:
        return False
    try:
        os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    text = str(exc).strip().splitlines()
    _say(f"error: internal error: {type(exc).__name__}: {text[0] if text else ''} (run with --debug for the traceback)")
    return EXIT_INTERNAL


def main(argv=None) -> int:
    in_process = argv is not None
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[:1] or bool(os.environ.get("FLAMEFIT_DEBUG"))
    try:
        parser = build_parser()  # imports the layers below: a broken install is one line too
    except Exception as exc:  # noqa: BLE001
        return _internal(exc, debug)
    try:
        args = parser.parse_args(argv)
    except FlameFitError as exc:
        _say(f"error: {exc}")
        return EXIT_ERROR
    debug = debug or args.debug
    _interrupted[0] = False
    # Called in-process (argv given, e.g. by tests) the caller's handlers come back after;
    # as the program they stay, so no signal can kill it during interpreter shutdown.
    previous = {number: signal.getsignal(number) for number in _INTERRUPT_SIGNALS} if in_process else {}
    for number in _INTERRUPT_SIGNALS:
        signal.signal(number, _on_signal)
    try:
        if getattr(args, "json_progress", False) and not _stdout_usable():
            raise FlameFitError("--json-progress: stdout is closed; the progress stream needs it")
        args.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt as exc:
        _say(getattr(exc, "message", "interrupted; nothing was written"))
        return EXIT_INTERRUPTED
    except FlameFitError as exc:
        _say(f"error: {exc}")
        return EXIT_ERROR
    except (BrokenPipeError, ConnectionResetError):
        _silence_stdout()
        _say("error: the program reading the output went away (broken pipe); stopped")
        return EXIT_ERROR
    except MemoryError:
        _say("error: out of memory (a smaller photo, --texture-size or fewer --workers may help)")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback on request
        return _internal(exc, debug)
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):
            _silence_stdout()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
