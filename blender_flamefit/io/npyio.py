"""Reading .npy/.npz files without numpy (no bpy either).

Debian's Blender 3.4 runs on the system Python, which may have no numpy, so the add-on
reads the backend's arrays itself. Supported: the plain numeric dtypes (little or big
endian), bool, fixed-width unicode/bytes strings; C or Fortran order; stored or
deflated .npz members. Object arrays (pickles) are refused, never unpickled.
"""

from __future__ import annotations

import ast
import struct
import sys
import zipfile
from array import array

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


def _fortran_to_c(flat, shape):
    """Reorder flat Fortran-order data into C order."""
    n = len(flat)
    if len(shape) < 2 or n == 0:
        return flat
    # C-order index -> Fortran-order flat position
    strides_f = []
    acc = 1
    for s in shape:
        strides_f.append(acc)
        acc *= s
    idx = [0] * len(shape)
    values = []
    for _ in range(n):
        pos = 0
        for k, i in enumerate(idx):
            pos += i * strides_f[k]
        values.append(flat[pos])
        for k in range(len(shape) - 1, -1, -1):
            idx[k] += 1
            if idx[k] < shape[k]:
                break
            idx[k] = 0
    if isinstance(flat, array):
        return array(flat.typecode, values)
    return values


def read_npy_bytes(raw: bytes, name: str = "array") -> NdArray:
    """Parse the bytes of one .npy file."""
    if not raw.startswith(MAGIC) or len(raw) < 10:
        raise NpyError(f"{name}: not a numpy .npy array")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12
    else:
        raise NpyError(f"{name}: unsupported .npy format version {major}")
    header_text = raw[start:start + hlen].decode("utf8" if major == 3 else "latin1")
    try:
        header = ast.literal_eval(header_text)
        descr, fortran, shape = header["descr"], bool(header["fortran_order"]), tuple(header["shape"])
    except Exception as exc:  # noqa: BLE001 - any malformed header is the same error
        raise NpyError(f"{name}: unreadable .npy header ({exc})") from None
    if not isinstance(descr, str):
        raise NpyError(f"{name}: structured arrays are not supported")
    body = raw[start + hlen:]
    count = 1
    for s in shape:
        count *= int(s)
    order, kind = descr[0], descr[1:]
    if kind.startswith("O"):
        raise NpyError(f"{name}: object arrays (pickles) are refused")
    if kind[0] in "US":
        width = int(kind[1:] or 1)
        itemsize = width * (4 if kind[0] == "U" else 1)
        if len(body) < count * itemsize:
            raise NpyError(f"{name}: truncated data")
        enc = ("utf-32-be" if order == ">" else "utf-32-le") if kind[0] == "U" else "latin1"
        data = [body[i * itemsize:(i + 1) * itemsize].decode(enc).rstrip("\x00") for i in range(count)]
    else:
        code = _NUMERIC.get(kind)
        if code is None:
            raise NpyError(f"{name}: unsupported dtype {descr!r}")
        data = array(code)
        if data.itemsize != int(kind[1:]):
            raise NpyError(f"{name}: this platform has no {descr!r} array type")
        nbytes = count * data.itemsize
        if len(body) < nbytes:
            raise NpyError(f"{name}: truncated data ({len(body)} of {nbytes} bytes)")
        data.frombytes(body[:nbytes])
        big = order == ">"
        if data.itemsize > 1 and big != (sys.byteorder == "big"):
            data.byteswap()
    if fortran:
        data = _fortran_to_c(data, shape)
    return NdArray(data, shape, kind)


def read_npy(path) -> NdArray:
    with open(path, "rb") as fh:
        return read_npy_bytes(fh.read(), str(path))


def read_npz(path) -> dict:
    """All arrays of an .npz file by name (without the .npy suffix)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                out[key] = read_npy_bytes(zf.read(info), f"{path}:{key}")
    except zipfile.BadZipFile:
        raise NpyError(f"{path}: not an .npz archive") from None
    return out
