"""Small file-system rules shared by every reader and writer (imports nothing from
flamefit but its errors).

* `atomic_write(path)` / `atomic_save_npz(path, ...)`: the file appears whole or not at
  all. Each writer uses its own temporary name beside the target (".NAME.tmp-PID-RANDOM",
  created with O_EXCL, never through a symlink) and `os.replace`s it, so parallel writers
  never share a half-written file and readers see either the old file, or a complete new
  one. Temporaries of dead writers are removed: only regular files of this user whose
  name has exactly that shape (8 hex digits) and whose process has ended.
* `file_lock(path)`: an exclusive advisory lock (a lock file), e.g. so that parallel
  processes build a cache once instead of each building it.
* `require_writable(place, target)`: one line when `target` cannot be written at `place`
  (the nearest existing folder is a file or read-only), before any work.
* `file_sha256(path)`: the hex SHA-256 of a file's bytes, read in chunks (which photo a
  bundle was fitted to: a name alone does not say).
* `require_regular_file(path, what)` / `regular_file_problem(path, what)`: refuse a missing file, a folder, or a FIFO, device
  or socket up front (opening a FIFO blocks forever) with one clear line.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import FlameFitError

_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")  # exactly what temp_name_for makes


def require_regular_file(path, what: str = "file") -> Path:
    """`path` as a Path when it names a regular file (symlinks followed); FlameFitError otherwise."""
    problem = regular_file_problem(path, what)
    if problem:
        raise FlameFitError(f"{path}: {problem}")
    return Path(path)


def regular_file_problem(path, what: str = "file") -> str | None:
    """Why `path` is not a readable regular file ("photo not found", "is a FIFO ..."), or None."""
    try:
        mode = os.stat(path).st_mode  # stat never blocks, unlike open() on a FIFO
    except FileNotFoundError:
        return f"{what} not found"
    except OSError as exc:
        return f"cannot read the {what} ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(mode):
        return f"is a folder, not a {what}"
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"is {kind}, not a regular file; FlameFit reads the {what} only from a regular file"
    return None


def require_writable(place, target) -> None:
    """Refuse, with one line, to write `target` when the nearest existing folder at or above
    `place` (where `target` goes) is a file or not writable."""
    place = Path(place)
    ancestor = next(p for p in (place, *place.parents) if p.exists())
    if not ancestor.is_dir():
        raise FlameFitError(f"{ancestor}: is a file, so {target} cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FlameFitError(f"{ancestor}: folder is not writable, so {target} cannot be written")


def file_sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temp_name_for(path) -> Path:
    """A temporary sibling of `path` that no other writer uses."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # no cheap, safe check there: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # someone else's live process, or no way to tell: keep its files
    return True


def process_temp_folder(prefix: str) -> Path:
    """A new private folder `<prefix><pid>-*` in the system's temporary folder, after removing
    those of processes that died (a killed worker's copies). The caller removes its own."""
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = stale.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_stale_temps(path) -> None:
    """Delete temporaries of `path` left by writers that died (SIGKILL, power): regular
    files (no symlink, no folder) of this user named exactly as temp_name_for names them."""
    path = Path(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match and match["name"] == path.name and not pid_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                info = entry.lstat()
                mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
                if stat.S_ISREG(info.st_mode) and mine:
                    entry.unlink()


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs):
    """Open a private temporary beside `path` for writing; on a clean exit it replaces
    `path` (atomically), on an exception it is removed and `path` is untouched."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = temp_name_for(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # outside the try: a name that was there is not ours to remove
    try:
        with open(fd, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding) as stream:
        stream.write(text)


def atomic_save_npz(path, compressed: bool = True, **arrays) -> None:
    """np.savez(_compressed) to exactly `path` (no ".npz" added), atomically."""
    import numpy as np

    with atomic_write(path, "wb") as stream:
        (np.savez_compressed if compressed else np.savez)(stream, **arrays)


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive lock on the lock file `path` (created if needed) while inside.
    Advisory: it only orders processes that take the same lock. Released when the
    process dies, so a killed holder never blocks the others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s: keep waiting
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
