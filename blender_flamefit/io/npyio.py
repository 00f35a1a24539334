"""Reading .npy/.npz files without numpy (no bpy either).

Debian's Blender 3.4 runs on the system Python, which may have no numpy, so the add-on
reads the backend's arrays itself. Supported: the plain numeric dtypes (little or big
endian), bool, fixed-width unicode/bytes strings; C or Fortran order; stored or
deflated .npz members (what numpy writes). Object arrays (pickles) are refused, never
unpickled. Data is read in chunks straight into the array it fills, never more than the
header declares, so memory stays at the array's own size.
"""

from __future__ import annotations

import ast
import io
import itertools
import os
import re
import struct
import sys
import zipfile
import zlib
from array import array
from dataclasses import dataclass

MAGIC = b"\x93NUMPY"

# numpy kind+size -> array typecode of that exact size
_NUMERIC = {
    "f4": "f", "f8": "d",
    "i1": "b", "u1": "B", "b1": "B",
    "i2": "h", "u2": "H",
    "i4": "i", "u4": "I",
    "i8": "q", "u8": "Q",
}


class NpyError(ValueError):
    """A file that is not a readable numpy array."""


class NdArray:
    """A minimal n-d array: `data` is flat in C order (array.array or list of str)."""

    __slots__ = ("data", "shape", "dtype")

    def __init__(self, data, shape, dtype):
        self.data = data
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    def row(self, i: int):
        """Row i of a 2-d array (or the i-th element of a 1-d one)."""
        if self.ndim == 1:
            return self.data[i]
        width = self.size // self.shape[0]
        return self.data[i * width:(i + 1) * width]

    def slab(self, i: int):
        """The flat data of leading index i (e.g. one shape key of a (K, V, 3) array)."""
        width = self.size // self.shape[0]
        return self.data[i * width:(i + 1) * width]

    def tolist(self):
        """Nested Python lists (for small arrays)."""
        flat = list(self.data)
        if not self.shape:
            return flat[0]

        def build(offset, dims):
            if len(dims) == 1:
                return flat[offset:offset + dims[0]], offset + dims[0]
            out = []
            for _ in range(dims[0]):
                item, offset = build(offset, dims[1:])
                out.append(item)
            return out, offset

        return build(0, list(self.shape))[0]

    def __repr__(self) -> str:
        return f"NdArray(shape={self.shape}, dtype={self.dtype!r})"


MAX_REORDER_STEPS = 10_000  # strided copies to reorder a Fortran-order array: (V, 3) needs 3, (K, V, 3) 3K


def _prod(values) -> int:
    n = 1
    for v in values:
        n *= v
    return n


def _reorder_steps(shape) -> int:
    """Strided copies _fortran_to_c makes: one per line along the longest axis."""
    return _prod(shape) // max(shape) if len(shape) > 1 and min(shape) > 0 else 0


def _fortran_to_c(flat, shape):
    """Reorder flat Fortran-order data into C order: one strided slice copy (C speed) per line
    along the longest axis, instead of a Python step per element."""
    if len(shape) < 2 or len(flat) == 0:
        return flat
    ndim = len(shape)
    c_strides = [_prod(shape[k + 1:]) for k in range(ndim)]
    f_strides = [_prod(shape[:k]) for k in range(ndim)]
    axis = max(range(ndim), key=lambda k: shape[k])
    length, c_step, f_step = shape[axis], c_strides[axis], f_strides[axis]
    others = [k for k in range(ndim) if k != axis]
    out = flat[:]  # same type and size; every element is overwritten
    for idx in itertools.product(*(range(shape[k]) for k in others)):
        c0 = sum(i * c_strides[k] for i, k in zip(idx, others, strict=True))
        f0 = sum(i * f_strides[k] for i, k in zip(idx, others, strict=True))
        out[c0:c0 + length * c_step:c_step] = flat[f0:f0 + length * f_step:f_step]
    return out


MAX_HEADER = 10000  # numpy's own limit for a trusted header (np.load max_header_size)
MAX_MEMBERS = 64
MAX_DIRECTORY = 2 ** 20  # bytes of zip directory; 64 members need ~6 KB
DEFAULT_MAX_BYTES = 256 * 2 ** 20  # what one .npz may expand to (a FLAME mesh.npz is ~30 MB)
_DESCR = re.compile(r"^([<>|=])(b1|[fiu][1248]|[US][0-9]{1,6})$")
_OBJECT = re.compile(r"^[<>|=]?O")
MAX_STRINGS = 100_000  # text elements in one array (a FlameFit mesh has ~400 shape-key names)
CHUNK = 2 ** 20  # bytes per read while filling an array
_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


@dataclass(frozen=True)
class NpyHeader:
    order: str  # "<", ">", "|" or "="
    kind: str  # e.g. "f4", "U7"
    fortran: bool
    shape: tuple
    offset: int  # where the data starts

    @property
    def count(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        width = int(self.kind[1:])
        return width * 4 if self.kind[0] == "U" else width  # U: UCS-4 characters

    @property
    def nbytes(self) -> int:
        return self.count * self.itemsize


def parse_header(raw: bytes, name: str = "array") -> NpyHeader:
    """Check and parse the header at the start of `raw` (only the first bytes are needed):
    every malformed header is an NpyError, never another exception."""
    if not raw.startswith(MAGIC) or len(raw) < 10:
        raise NpyError(f"{name}: not a numpy .npy array")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10
    elif major in (2, 3) and len(raw) >= 12:
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12
    else:
        raise NpyError(f"{name}: unsupported .npy format version {major}")
    if hlen > MAX_HEADER:
        raise NpyError(f"{name}: .npy header of {hlen} bytes is too long")
    if len(raw) < start + hlen:
        raise NpyError(f"{name}: truncated .npy header")
    try:
        header = ast.literal_eval(raw[start:start + hlen].decode("utf8" if major == 3 else "latin1"))
    except Exception:  # noqa: BLE001 - any unparsable header (incl. deep nesting) is the same error
        header = None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError(f"{name}: unreadable .npy header")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if isinstance(descr, str) and _OBJECT.match(descr):
        raise NpyError(f"{name}: object arrays (pickles) are refused")
    match = _DESCR.match(descr) if isinstance(descr, str) else None
    if match is None or match.group(2) in ("U0", "S0"):
        raise NpyError(f"{name}: unsupported dtype {descr!r:.40}")
    if not isinstance(fortran, bool):
        raise NpyError(f"{name}: fortran_order must be True or False")
    if not isinstance(shape, tuple) or len(shape) > 8 or \
            not all(type(s) is int and 0 <= s < 2 ** 40 for s in shape):
        raise NpyError(f"{name}: bad array shape {shape!r:.40}")
    return NpyHeader(match.group(1), match.group(2), fortran, shape, start + hlen)


def _read_header(fh, name: str) -> tuple:
    """Read and parse the header at the start of the stream `fh`; returns (header, the bytes
    read past it). Never reads more than the longest header allowed."""
    raw = fh.read(12)
    if raw.startswith(MAGIC) and len(raw) == 12:
        # version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one
        end = 10 + struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else 12 + struct.unpack("<I", raw[8:12])[0]
        if end <= 12 + MAX_HEADER:
            raw += fh.read(max(0, end - len(raw)))
    head = parse_header(raw, name)
    return head, raw[head.offset:]


def _read_data(fh, head: NpyHeader, name: str, start: bytes = b""):
    """The header's data from the stream: numbers are read in chunks into the final array
    (memory: the array itself); never more bytes than the header declares."""
    order, kind, count = head.order, head.kind, head.count
    if kind[0] in "US":
        if count > MAX_STRINGS:  # each becomes a Python str of ~60 bytes
            raise NpyError(f"{name}: {count} strings is too many for a FlameFit array file")
        body = start + fh.read(head.nbytes - len(start))
        if len(body) < head.nbytes:
            raise NpyError(f"{name}: truncated data ({len(body)} of {head.nbytes} bytes)")
        itemsize = head.itemsize
        enc = ("utf-32-be" if order == ">" else "utf-32-le") if kind[0] == "U" else "latin1"
        try:
            return [body[i * itemsize:(i + 1) * itemsize].decode(enc).rstrip("\x00") for i in range(count)]
        except UnicodeDecodeError:
            raise NpyError(f"{name}: invalid text data") from None
    typecode, itemsize = _NUMERIC[kind], int(kind[1:])
    if array(typecode).itemsize != itemsize:
        raise NpyError(f"{name}: this platform has no {order + kind!r} array type")
    data = array(typecode, bytes(itemsize)) * count  # zeros, filled in place below
    with memoryview(data) as view, view.cast("B") as buf:
        pos = min(len(start), head.nbytes)
        buf[:pos] = start[:pos]
        while pos < head.nbytes:
            got = fh.readinto(buf[pos:pos + CHUNK])
            if not got:
                raise NpyError(f"{name}: truncated data ({pos} of {head.nbytes} bytes)")
            pos += got
    if data.itemsize > 1 and (order == ">") != (sys.byteorder == "big"):
        data.byteswap()
    return data


def read_npy_stream(fh, name: str = "array", check=None) -> NdArray:
    """One .npy array from a binary stream. `check(header)` may refuse it (NpyError) before
    any data is read."""
    head, start = _read_header(fh, name)
    if check is not None:
        check(head)
    if head.fortran and _reorder_steps(head.shape) > MAX_REORDER_STEPS:
        raise NpyError(f"{name}: a Fortran-order array of shape {head.shape} is refused (too slow to reorder)")
    data = _read_data(fh, head, name, start)
    if head.fortran:
        data = _fortran_to_c(data, head.shape)
    return NdArray(data, head.shape, head.kind)


def read_npy_bytes(raw: bytes, name: str = "array") -> NdArray:
    """Parse the bytes of one .npy file."""
    return read_npy_stream(io.BytesIO(raw), name)


def read_npy(path) -> NdArray:
    with open(path, "rb") as fh:
        return read_npy_stream(fh, str(path))


def _directory_size(fh) -> int:
    """The size of the zip's central directory as the end record zipfile will use gives it (0
    when there is none: zipfile then says it is no zip). Read before zipfile.ZipFile, which
    parses and keeps every entry (300 k entries: 4.6 s and 180 MB before a count can be checked)."""
    end = fh.seek(0, os.SEEK_END)
    start = fh.seek(max(0, end - 22 - 65535))
    tail = fh.read()
    # like zipfile: an end record without comment at the very end, else the last one in the tail
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\x00\x00" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return 0
    sizes = [struct.unpack("<I", tail[at + 12:at + 16])[0]]
    at += start
    if at >= 76:  # a zip64 locator and record just before it take precedence
        fh.seek(at - 76)
        record = fh.read(76)
        if record[56:60] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            sizes.append(struct.unpack("<Q", record[40:48])[0])
    return max(sizes)


def _members(zf, path, names, max_bytes: int) -> list:
    """[(key, ZipInfo)] to read, checked from the zip directory alone."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise NpyError(f"{path}: {len(infos)} members is too many for a FlameFit array file")
    chosen = []
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if names is not None and key not in names:
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise NpyError(f"{path}: member {info.filename[:80]!r} is compressed with {method}; "
                           f"only stored or deflated members (what numpy writes) are read")
        if info.flag_bits & 0x1:
            raise NpyError(f"{path}: member {info.filename[:80]!r} is encrypted")
        chosen.append((key, info))
    total = sum(info.file_size for _, info in chosen)
    if total > max_bytes:
        raise NpyError(f"{path}: the arrays would take {total / 2 ** 20:.0f} MiB, more than the "
                       f"{max_bytes / 2 ** 20:.0f} MiB allowed")
    return chosen


def _read_member(zf, key: str, info, name: str, check) -> NdArray:
    def check_header(head):
        if head.offset + head.nbytes != info.file_size:
            raise NpyError(f"{name}: the header declares {head.nbytes} bytes of data but the "
                           f"member holds {info.file_size - head.offset}")
        if check is not None:
            check(key, head)

    with zf.open(info) as fh:  # inflates no more than it is asked for (stored or deflated only)
        return read_npy_stream(fh, name, check_header)


def read_npz(path, names=None, max_bytes: int = DEFAULT_MAX_BYTES, check=None) -> dict:
    """Arrays of an .npz file by name (without the .npy suffix): all of them, or those in
    `names`. The sizes the zip directory declares are checked against `max_bytes` before any
    data is decompressed, then each member's header (and `check(key, header)`, which may
    refuse it with an NpyError) before its data is read, so a zip bomb is refused after a
    few hundred bytes. Only stored or deflated members are read: zipfile inflates other
    methods (bzip2, lzma) whole on the first read, whatever size the zip declares."""
    try:
        with open(path, "rb") as raw:
            if _directory_size(raw) > MAX_DIRECTORY:
                raise NpyError(f"{path}: its zip directory is too large for a FlameFit array file")
            with zipfile.ZipFile(raw) as zf:
                return {key: _read_member(zf, key, info, f"{path}:{key}", check)
                        for key, info in _members(zf, path, names, max_bytes)}
    except zipfile.BadZipFile as exc:
        raise NpyError(f"{path}: not a readable .npz archive ({exc})") from None
    except (NotImplementedError, EOFError, zlib.error, RuntimeError) as exc:  # odd compression, bad data
        raise NpyError(f"{path}: unreadable .npz member ({exc})") from None
