#!/usr/bin/env python3
"""Build the Blender add-on zip: `python build_addon.py` -> dist/flamefit-<version>.zip

The zip holds one top-level folder, blender_flamefit/, with bl_info (__init__.py) for
Preferences > Add-ons > Install (Blender 3.4) and blender_manifest.toml for Install from
Disk (extensions, Blender 4.2+), plus the backend's source (backend/pyproject.toml and
backend/flamefit/**) under blender_flamefit/backend/ for Set up backend to pip-install, and
the bundle schema (backend/flamefit/bundle/schema.json) as blender_flamefit/io/schema.json
for the add-on's bundle reader.
Standard library only; any Python 3.8+.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "blender_flamefit"
BACKEND = REPO / "backend"
PACKAGE = "blender_flamefit"
SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp")
SKIP_FILES = {".DS_Store"}
SCHEMA = BACKEND / "flamefit" / "bundle" / "schema.json"


def version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text(encoding="utf8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        sys.exit("build_addon: no version in blender_manifest.toml")
    return match.group(1)


def _files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
                             and not d.startswith("."))
        for name in sorted(filenames):
            if name in SKIP_FILES or name.endswith(SKIP_SUFFIXES):
                continue
            yield Path(dirpath) / name


def members():
    """(path on disk, name in the zip) in a stable order."""
    for path in _files(ADDON):
        rel = path.relative_to(ADDON)
        if rel.parts[0] == "backend" or rel.as_posix() == "io/schema.json":  # stale copies: shipped below
            continue
        yield path, f"{PACKAGE}/{rel.as_posix()}"
    yield SCHEMA, f"{PACKAGE}/io/schema.json"
    yield BACKEND / "pyproject.toml", f"{PACKAGE}/backend/pyproject.toml"
    yield BACKEND / "requirements-nodeps.txt", f"{PACKAGE}/backend/requirements-nodeps.txt"
    for extra in ("README.md", "LICENSE", "LICENSE.txt"):
        if (BACKEND / extra).is_file():
            yield BACKEND / extra, f"{PACKAGE}/backend/{extra}"
    for path in _files(BACKEND / "flamefit"):
        yield path, f"{PACKAGE}/backend/{path.relative_to(BACKEND).as_posix()}"


def build(out_dir: Path) -> Path:
    for required in (ADDON / "__init__.py", ADDON / "blender_manifest.toml", BACKEND / "pyproject.toml",
                     BACKEND / "flamefit" / "__init__.py", SCHEMA):
        if not required.is_file():
            sys.exit(f"build_addon: missing {required}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"flamefit-{version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    count = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, name in members():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))  # reproducible
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
            count += 1
    os.replace(tmp, target)
    print(f"build_addon: wrote {target} ({count} files, {target.stat().st_size / 1024:.0f} KiB)")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--out-dir", default=str(REPO / "dist"), help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    build(Path(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
