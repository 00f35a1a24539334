"""A bundle fitted on one machine and written on another (issue #21).

A worker that may not share the driver's disk (a Ray node) writes the bundle with the
ordinary writer (bundle.writer.write_bundle) into a private temporary folder of its own,
so the files are exactly those of a local fit, and sends back their bytes (`pack`). The
driver writes them at OUT/<name> (`write_files`) under the writer's rules: the target is
checked first (check_output), the files go into `.NAME.tmp-PID` with its marker, and
the swap happens under the folder's claim: with --overwrite the old bundle is checked
again and moved aside, put back if anything foreign appeared in it; on any error or
interrupt the temporary folder goes and OUT is as it was. All of that is
bundle.writer.write_folder, the one folder writer write_bundle uses too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..bundle.claim import BUNDLE_NAMES
from ..bundle.schema import RESULT_FILE
from ..bundle.writer import write_bundle, write_folder
from ..errors import FlameFitError
from ..fsutil import process_temp_folder

PACK_PREFIX = "flamefit-pack-"


def pack(result) -> dict[str, bytes]:
    """The files of `result`'s bundle (name -> bytes), written by the ordinary writer into a
    private temporary folder that is removed again (a killed worker's: by a later pack)."""
    folder = process_temp_folder(PACK_PREFIX)
    try:
        out = write_bundle(result, folder / "bundle")
        return {entry.name: entry.read_bytes() for entry in sorted(out.iterdir())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_files(files) -> None:
    """A worker's answer holds a result.json and nothing but bundle file names (no paths)."""
    if not isinstance(files, dict) or RESULT_FILE not in files or not set(files) <= BUNDLE_NAMES \
            or not all(isinstance(data, bytes) for data in files.values()):
        shown = sorted(files)[:5] if isinstance(files, dict) else type(files).__name__
        raise FlameFitError(f"the worker sent back no bundle (got {shown})")


def write_files(files: dict[str, bytes], out_dir, overwrite: bool = False) -> Path:
    """Write a packed bundle at out_dir with bundle.writer's one folder writer (same checks,
    claim and clean-up as write_bundle); its absolute path."""
    check_files(files)

    def fill(tmp: Path, out: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)

    return write_folder(out_dir, fill, overwrite)
