"""Who may write a bundle folder, and what is left of writers that died.

`OutputClaim(out)` is an exclusive lock on the sibling file `.OUT.lock` (flock: atomic,
released by the kernel when its holder dies, so a killed writer never blocks the next
one). Every FlameFit writer of OUT holds it while it commits, and a fit without
--overwrite holds it from before the fit to the end, so of two `fit -o SAME` exactly one
writes and the other fails at once. The lock file is removed by its holder; a taker
checks that the file it locked is still the one at the path (else it retries).

`remove_stale_siblings(out)` deletes `.OUT.tmp-PID` / `.OUT.old-PID` folders whose
process is dead (a SIGKILL or power loss mid-write); nothing else is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

from ..errors import FlameFitError

_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or no way to tell: keep its files
    return True


def temp_sibling(out: Path, kind: str = "tmp") -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}"


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove temporary siblings of `out` left by dead FlameFit processes; the removed paths."""
    removed = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SIBLING.match(entry.name)
        if not match or match["name"] != out.name or int(match["pid"]) == os.getpid():
            continue
        if pid_alive(int(match["pid"])) or entry.is_symlink() or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class OutputClaim:
    """Exclusive right to write the folder `out` (see the module docstring)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool) -> bool:
        """Take the claim; False when another process holds it and `wait` is False."""
        if os.name == "nt":  # no flock; Windows is not a target of the backend's CLI
            return True
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False  # the previous holder removed it after we opened it
            if same:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return True
            os.close(fd)
            time.sleep(0.01)

    def take(self) -> "OutputClaim":
        """acquire(wait=False) or FlameFitError (another process is writing `out`)."""
        if not self.acquire(wait=False):
            raise FlameFitError(f"{self.out}: another FlameFit process is writing this folder right now")
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
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
