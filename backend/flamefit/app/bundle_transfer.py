"""A bundle fitted on one machine and written on another (issue #21).

A worker that may not share the driver's disk (a Ray node) writes the bundle with the
ordinary writer (bundle.writer.write_bundle) into a private temporary folder of its own,
so the files are exactly those of a local fit, and sends back their bytes (`pack`). The
driver writes them at OUT/<name> (`write_files`) under the writer's rules: the target is
checked first (check_output), the files go into `.NAME.tmp-PID` with its marker, and
the swap happens under the folder's claim: with --overwrite the old bundle is checked
again and moved aside, put back if anything foreign appeared in it; on any error or
interrupt the temporary folder goes and OUT is as it was. The commit step follows
bundle.writer._write's (owned by the bundle module; see notes/s2/D.md for a shared
entry point).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from ..bundle.claim import (
    BUNDLE_NAMES,
    TEMP_MARKER,
    free_temp_folder,
    make_temp_folder,
    remove_own_files,
    remove_stale_siblings,
    temp_sibling,
)
from ..bundle.schema import RESULT_FILE
from ..bundle.writer import check_output, check_replaceable, write_bundle
from ..errors import FlameFitError
from ..fsutil import pid_alive

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
PACK_PREFIX = "flamefit-pack-"


def pack(result) -> dict[str, bytes]:
    """The files of `result`'s bundle (name -> bytes), written by the ordinary writer into a
    private temporary folder that is removed again (a killed worker's: by a later pack)."""
    _remove_stale_packs()
    folder = tempfile.mkdtemp(prefix=f"{PACK_PREFIX}{os.getpid()}-")
    try:
        out = write_bundle(result, Path(folder) / "bundle")
        return {entry.name: entry.read_bytes() for entry in sorted(out.iterdir())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_packs() -> None:
    for stale in Path(tempfile.gettempdir()).glob(f"{PACK_PREFIX}*-*"):
        pid = stale.name[len(PACK_PREFIX):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def check_files(files) -> None:
    """A worker's answer holds a result.json and nothing but bundle file names (no paths)."""
    if not isinstance(files, dict) or RESULT_FILE not in files or not set(files) <= BUNDLE_NAMES \
            or not all(isinstance(data, bytes) for data in files.values()):
        shown = sorted(files)[:5] if isinstance(files, dict) else type(files).__name__
        raise FlameFitError(f"the worker sent back no bundle (got {shown})")


def write_files(files: dict[str, bytes], out_dir, overwrite: bool = False) -> Path:
    """Write a packed bundle at out_dir as bundle.writer.write_bundle would write it
    (same checks, claim and clean-up); its absolute path."""
    check_files(files)
    target = check_output(out_dir, overwrite, claim=False)
    try:
        return _commit(files, target)
    except BaseException as exc:
        target.abandon()
        if isinstance(exc, OSError):
            raise FlameFitError(f"{target.path}: cannot write the bundle ({exc.strerror or exc})") from None
        raise
    finally:
        target.claim.release()


@contextmanager
def _signals_blocked():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _commit(files: dict[str, bytes], target) -> Path:
    out = target.path
    tmp, old = None, temp_sibling(out, "old")
    moved = committed = False
    try:
        remove_stale_siblings(out)
        tmp = free_temp_folder(out)  # known before it exists: an interrupt in mkdir is cleaned up
        make_temp_folder(tmp)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        with target.claim:  # every writer of `out` commits under its claim
            with _signals_blocked():
                if out.exists() or out.is_symlink():
                    if not target.overwrite:
                        raise FlameFitError(f"{out}: output folder already exists (use --overwrite to replace it)")
                    check_replaceable(out)  # again: it may have changed while the worker fitted
                    out.rename(old)
                    moved = True
                    check_replaceable(old)  # a file saved between the check and the rename
                (tmp / TEMP_MARKER).unlink()
                tmp.rename(out)
                committed = True
                if moved:
                    remove_own_files(old)  # anything that appeared in it since: kept, with the folder
    except BaseException:
        with _signals_blocked():
            if moved and not committed:
                with suppress(OSError):
                    old.rename(out)  # the old bundle back, as it was
            if not committed and tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

