"""Who may write a bundle folder, and what is left of writers that died.

`OutputClaim(out)` is an exclusive lock on the sibling file `.OUT.lock` (flock: atomic,
released by the kernel when its holder dies, so a killed writer never blocks the next
one). Every FlameFit writer of OUT holds it while it commits, and a fit without
--overwrite holds it from before the fit to the end, so of two `fit -o SAME` exactly one
writes and the other fails at once. The lock file is FlameFit's only when FlameFit made
it: it is created with O_EXCL and holds nothing but a process id; it is opened with
O_NOFOLLOW. A symlink there, or a file with anything else in it, is the user's: refused
with one line, never written to or removed. The holder removes the lock file when done
(only if the path still names the file it locked); a taker checks that the file it
locked is still the one at the path (else it retries).

Temporary siblings: a write goes to `.OUT.tmp-PID` (`free_temp_folder`, `make_temp_folder`, whose first file
is the marker `.flamefit-temp` naming the PID), and with --overwrite the old bundle is
moved to `.OUT.old-PID` for the moment of the swap. `remove_stale_siblings(out)` removes
those of dead processes (a SIGKILL or power loss mid-write) only when they are provably
FlameFit's: a temporary folder holding its marker and nothing but bundle file names, an
old folder that is a bundle holding nothing but its own files. Anything else, e.g. a
user's folder that happens to be called `.OUT.tmp-123`, is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from pathlib import Path

from ..errors import FlameFitError
from ..fsutil import pid_alive
from .reader import foreign_files, is_bundle, own_files, read_result
from .schema import RESULT_FILE, all_file_names

_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")
_LOCK_TEXT = re.compile(rb"\d{1,10}")  # all a FlameFit lock file ever holds: a process id
TEMP_MARKER = ".flamefit-temp"
# Every name a bundle file can have: all a temporary folder of ours ever holds, beside its marker.
BUNDLE_NAMES = all_file_names()
MAX_PID = 9_999_999  # Linux's pid_max is at most 2**22: 7 digits (for the name-length check)


def temp_marker_text(pid: int) -> str:
    return f"FlameFit temporary folder of process {pid}; removed once that process has ended\n"


def temp_sibling(out: Path, kind: str = "tmp", pid: int | None = None) -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid() if pid is None else pid}"


def sibling_paths(out: Path) -> list[Path]:
    """Every name FlameFit may create beside `out` (PIDs at their longest)."""
    return [OutputClaim(out).path, temp_sibling(out, "tmp", MAX_PID), temp_sibling(out, "old", MAX_PID)]


def _is_our_temp(folder: Path, pid: int) -> bool:
    """`folder` was made by make_temp_folder in process `pid` and holds nothing else."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        if (folder / TEMP_MARKER).read_text(encoding="utf-8") != temp_marker_text(pid):
            return False
        with os.scandir(folder) as entries:
            return all(e.is_file(follow_symlinks=False) and (e.name in BUNDLE_NAMES or e.name == TEMP_MARKER)
                       for e in entries)
    except (OSError, UnicodeDecodeError):
        return False


def free_temp_folder(out: Path) -> Path:
    """The path `.OUT.tmp-PID`, free to create: a folder already there is removed only when
    it is a leftover of ours (a dead process with the same PID); otherwise FlameFitError.
    A writer holds this path before it creates anything there (make_temp_folder), so an
    interrupt at any moment after leaves it knowing what to remove."""
    tmp = temp_sibling(out, "tmp")
    if tmp.exists() or tmp.is_symlink():
        if not _is_our_temp(tmp, os.getpid()):
            raise FlameFitError(f"{tmp}: exists and is not a temporary folder of FlameFit's; it is left alone, "
                                "so nothing was written: move it away")
        shutil.rmtree(tmp)
    return tmp


def make_temp_folder(tmp: Path) -> None:
    """Create the free temporary folder `tmp` with its marker (written first, so a leftover is
    provably ours)."""
    tmp.mkdir()
    (tmp / TEMP_MARKER).write_text(temp_marker_text(os.getpid()), encoding="utf-8")


def remove_own_files(folder: Path) -> bool:
    """Delete a bundle's own files (by name, result.json last), then the folder if that
    left it empty. False when something else was in it: that is kept, and so is the folder."""
    try:
        own = own_files(read_result(folder))
    except (OSError, ValueError, RecursionError):
        return False
    for name in sorted(own - {RESULT_FILE}) + [RESULT_FILE]:
        path = folder / name
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove temporary siblings of `out` left by dead FlameFit processes that are provably
    FlameFit's (the module docstring); the removed paths."""
    removed = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SIBLING.match(entry.name)
        if not match or match["name"] != out.name or pid_alive(int(match["pid"])):
            continue
        if match["kind"] == "tmp":
            if _is_our_temp(entry, int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        elif is_bundle(entry) and not foreign_files(entry) and remove_own_files(entry):
            removed.append(entry)
    return removed


class OutputClaim:
    """Exclusive right to write the folder `out` (see the module docstring)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None

    def _not_ours(self, why: str) -> FlameFitError:
        return FlameFitError(f"{self.path}: {why}, not a lock file of FlameFit's (those hold only a process id); "
                             f"it is left alone, so nothing was written to {self.out.name}: move it away")

    def _open_existing(self) -> int | None:
        """The lock file at the path opened without following a symlink; None when it is gone."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if self.path.is_symlink():
                raise self._not_ours("is a symbolic link") from None
            raise self._not_ours(f"cannot be opened ({exc.strerror or exc})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._not_ours("is not a regular file")
        return fd

    def _still_at_path(self, fd: int) -> bool:
        try:
            here, held = os.lstat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def check(self) -> None:
        """Refuse, before any work, a lock path that is not FlameFit's (without locking)."""
        if os.name == "nt":
            return
        fd = self._open_existing()
        if fd is not None:
            try:
                text = os.pread(fd, 32, 0)
            finally:
                os.close(fd)
            if text and not _LOCK_TEXT.fullmatch(text):
                raise self._not_ours("holds something else")

    def acquire(self, wait: bool) -> bool:
        """Take the claim; False when another process holds it and `wait` is False.
        FlameFitError when the lock path is not FlameFit's."""
        if os.name == "nt":  # no flock; Windows is not a target of the backend's CLI
            return True
        import fcntl

        patience = time.monotonic() + 2.0
        while True:
            try:  # O_EXCL: a file made now is ours (and O_CREAT|O_EXCL never follows a symlink)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
                created = True
            except FileExistsError:
                fd, created = self._open_existing(), False
                if fd is None:
                    continue  # removed by its holder meanwhile
            try:
                # Our own new file is locked at once: a taker holds an empty one only to look.
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait or created else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            pid = str(os.getpid()).encode()
            if created:
                os.write(fd, pid)
                self.fd = fd
                return True
            text, same = os.pread(fd, 32, 0), self._still_at_path(fd)
            if same and _LOCK_TEXT.fullmatch(text):  # FlameFit's, left by a holder that died
                os.pwrite(fd, pid, 0)  # digits over digits: it reads as a process id throughout
                os.ftruncate(fd, len(pid))
                self.fd = fd
                return True
            os.close(fd)
            if same and text:
                raise self._not_ours("holds something else")
            if same and time.monotonic() > patience:  # empty for long: not a taker between O_EXCL and write
                raise self._not_ours("is an empty file")
            time.sleep(0.01)  # gone or replaced by its holder, or being made: look again

    def take(self) -> "OutputClaim":
        """acquire(wait=False) or FlameFitError (another process is writing `out`)."""
        if not self.acquire(wait=False):
            raise FlameFitError(f"{self.out}: another FlameFit process is writing this folder right now")
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if self._still_at_path(self.fd):  # never a file someone else put there
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None or os.name == "nt"

    def __enter__(self):
        if not self.held:
            self.acquire(wait=True)
        return self

    def __exit__(self, *exc):
        self.release()
