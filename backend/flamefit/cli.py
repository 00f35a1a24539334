"""`flamefit` command line. Errors the user can act on print one line on stderr."""

from __future__ import annotations

import argparse
import json
import signal
import sys

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
    print(json.dumps(info, indent=2, default=str))
    if info.get("problems"):
        raise FlameFitError(f"{args.path}: " + "; ".join(info["problems"]))


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
    p.set_defaults(run=cmd_model_info)
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
