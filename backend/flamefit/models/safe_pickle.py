"""Read FLAME's pickled data files (.pkl, object .npy, .npz) without running foreign code.

FLAME and its landmark embeddings ship as Python pickles, some written by Python 2
with chumpy objects, some (DECA) holding torch tensors. `pickle.load` would run
whatever callable a file names, so `SafeUnpickler.find_class` resolves only an
allow-list of array types; chumpy and scipy.sparse classes are replaced by inert
stand-ins that merely keep their state, converted to plain arrays afterwards.
Anything else is refused before it can run.

Resource bounds (a small file must not expand without limit): a pickle's objects are
counted as expanded (shared sub-lists count each time they are reached) and nested at
most MAX_DEPTH deep; every array's declared shape x itemsize (the .npy header, inside a
zip or not) is checked against MAX_READ_BYTES and against the bytes the file really holds
before anything is allocated, and then exactly that many bytes are read, in chunks.
Allow-listed functions reach the pickle as wrappers that refuse BUILD, so a pickle cannot
change them (their __name__, __defaults__...).

An .npz is read only if every member is stored or deflated (what numpy writes): Python's
zipfile inflates deflate only as far as it is read, but a bzip2 or lzma member whole on its
first read(), whatever sizes the zip declares (1.7 KB of bzip2 makes 4.5 GB). `load_npz`
is the one reader of every .npz the backend takes from a user (models, UV layouts, texture
spaces, bundle mesh.npz, texture-space build work files).
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import zipfile

import numpy as np

from ..errors import ModelFileError

REFUSAL_HINT = "FlameFit unpickles only arrays; use the file from the official download or convert it to .npz"
MAX_OBJECTS = 1_000_000  # containers and values in one pickle, counted as expanded
MAX_DEPTH = 100  # nesting of containers in one pickle
MAX_READ_BYTES = 1 << 30  # array data read from one file (FLAME 2023: ~60 MB; a texture space's K directions)
MAX_NPZ_MEMBERS = 10_000
# The zip directory, read from its end record before zipfile parses (and keeps) every entry:
# 300 k entries cost zipfile 4.6 s and 180 MB before the member count could be checked.
# 10,000 members with 300-character names fit.
MAX_NPZ_DIRECTORY_BYTES = 4 * 2 ** 20


class ChumpyStandIn:
    """Takes the place of a chumpy object: keeps its pickled state, runs nothing."""

    chumpy_name = "chumpy.ch.Ch"

    def __init__(self, *args, **kwargs):  # called only if a pickle invokes the class
        self.state = {}

    def __setstate__(self, state):
        self.state = state[0] if isinstance(state, tuple) else state


class ChumpyExpression:
    """A chumpy value with no stored array (an operation such as chumpy.ch_ops.add):
    it cannot be evaluated without chumpy. Kept as a marker so that only a loader
    that needs this value fails."""

    def __init__(self, chumpy_name: str):
        self.chumpy_name = chumpy_name

    def __repr__(self):
        return f"<unevaluated {self.chumpy_name}>"


_chumpy_classes: dict[str, type] = {}


def _chumpy_stand_in(qualified_name: str) -> type:
    if qualified_name not in _chumpy_classes:
        _chumpy_classes[qualified_name] = type("ChumpyStandIn", (ChumpyStandIn,), {"chumpy_name": qualified_name})
    return _chumpy_classes[qualified_name]


class SparseStandIn:
    """Takes the place of a scipy.sparse matrix: keeps the pickled __dict__."""

    format = ""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state


def _sparse_stand_in(fmt):
    return type(f"{fmt}_matrix_stand_in", (SparseStandIn,), {"format": fmt})


def _numpy_attr(submodule: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; old pickles name either.
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


def _tensor_storage_from_bytes(data: bytes):
    """torch.storage._load_from_bytes, but through torch's weights-only loader."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _tensor_as_array(storage, offset, size, stride, *ignored):
    """torch._utils._rebuild_tensor_v2 that returns a numpy copy (hooks etc. dropped)."""
    import torch

    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("tensor without storage")
    tensor = torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride)
    return tensor.numpy().copy()


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode limited to the encodings pickle itself uses."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return text.encode(encoding, errors)


class _Allowed:
    """An allow-listed function as a pickle sees it: calls through, and refuses BUILD
    (which would otherwise setattr on the shared function object for the whole process)."""

    __slots__ = ("function", "qualified_name")

    def __init__(self, function, qualified_name):
        self.function = function
        self.qualified_name = qualified_name

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __setstate__(self, state):
        raise MutatedGlobal(self.qualified_name)


class _NdarrayMarker:
    """numpy.ndarray as a pickle sees it: only an argument of numpy's _reconstruct (how
    every ndarray pickles); calling it (an uninitialised array of any size) is refused."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise RefusedGlobal("numpy.ndarray (called directly)")

    def __setstate__(self, state):
        raise MutatedGlobal("numpy.ndarray")


_NDARRAY = _NdarrayMarker()


def _reconstruct_array(subtype, shape, dtype):
    """numpy's _reconstruct for plain ndarrays (shape is (0,) in every numpy pickle; the
    data comes with BUILD, whose length numpy checks)."""
    if subtype is not _NDARRAY:
        raise RefusedGlobal(f"numpy _reconstruct of {type(subtype).__name__}")
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > MAX_READ_BYTES:
        raise pickle.UnpicklingError(f"an array of shape {tuple(shape)} is too large")
    return _numpy_attr("multiarray", "_reconstruct")(np.ndarray, shape, dtype)


def _allowed_globals() -> dict:
    import collections
    import copyreg

    table = {}
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = lambda: _reconstruct_array
        table[(f"{package}.multiarray", "scalar")] = lambda: _numpy_attr("multiarray", "scalar")
        table[(f"{package}.numeric", "_frombuffer")] = lambda: _numpy_attr("numeric", "_frombuffer")
    table[("numpy", "ndarray")] = lambda: _NDARRAY
    table[("numpy", "dtype")] = lambda: np.dtype
    for module in ("copyreg", "copy_reg"):  # copy_reg: Python 2
        table[(module, "_reconstructor")] = lambda: copyreg._reconstructor
    for module in ("builtins", "__builtin__"):
        for name in ("object", "set", "frozenset", "complex"):
            table[(module, name)] = lambda name=name: getattr(__import__("builtins"), name)
    table[("_codecs", "encode")] = lambda: _latin1_encode  # how protocol 2 writes bytes
    table[("collections", "OrderedDict")] = lambda: collections.OrderedDict
    for fmt in ("csc", "csr"):
        stand_in = _sparse_stand_in(fmt)
        for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            for kind in ("matrix", "array"):
                table[(module, f"{fmt}_{kind}")] = lambda s=stand_in: s
    table[("chumpy.ch", "Ch")] = lambda: _chumpy_stand_in("chumpy.ch.Ch")
    table[("torch._utils", "_rebuild_tensor_v2")] = lambda: _tensor_as_array
    table[("torch.storage", "_load_from_bytes")] = lambda: _tensor_storage_from_bytes
    return table


_ALLOWED = _allowed_globals()
_CHUMPY_MODULES = ("chumpy.reordering", "chumpy.ch_ops")


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, qualified_name):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class MutatedGlobal(pickle.UnpicklingError):
    def __init__(self, qualified_name):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            found = _ALLOWED[(module, name)]()
            if isinstance(found, type) or isinstance(found, _NdarrayMarker):
                return found  # classes: builtins are immutable, the stand-ins' __setstate__ needs an instance
            return _Allowed(found, f"{module}.{name}")  # a fresh wrapper: BUILD on it is refused
        if module in _CHUMPY_MODULES and name.isidentifier() and not name.startswith("_"):
            return _chumpy_stand_in(f"{module}.{name}")
        raise RefusedGlobal(f"{module}.{name}")


def _refusal(path, qualified_name):
    return ModelFileError(path, f"refuses to load: the pickle names {qualified_name}, which is not a FLAME data type", REFUSAL_HINT)


def _corrupt(path, what, exc):
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ModelFileError(path, f"cannot be read as {what}: the file is truncated or corrupt ({detail})")


def unpickle_stream(stream, path) -> object:
    """Unpickle from an open binary stream; `path` is only for messages."""
    try:
        raw = SafeUnpickler(stream, encoding="latin1").load()  # latin1: Python 2 pickles
        return to_plain(raw, path)
    except RefusedGlobal as exc:
        raise _refusal(path, exc.qualified_name) from None
    except MutatedGlobal as exc:
        raise ModelFileError(path, f"refuses to load: the pickle tries to modify {exc.qualified_name}", REFUSAL_HINT) from None
    except ModelFileError:
        raise
    except RecursionError:
        raise _too_big(path, f"nests objects deeper than Python can follow (FlameFit follows {MAX_DEPTH})") from None
    except Exception as exc:  # any malformed stream: EOFError, UnpicklingError, ValueError...
        raise _corrupt(path, "a pickle", exc) from None


def load_pickle(path) -> object:
    """Unpickle a FLAME-style .pkl safely; chumpy values come back as np.ndarray
    (ChumpyExpression markers for operations without a stored value), scipy sparse
    matrices as scipy.sparse matrices."""
    with _open(path) as stream:
        return unpickle_stream(stream, path)


def _too_big(path, what):
    return ModelFileError(path, f"refuses to load: the file {what}", "a FLAME file holds a few dozen arrays; "
                          "this looks like a decompression bomb or not a FLAME file")


def to_plain(obj, path="pickle"):
    """Replace stand-ins by arrays, recursively through dicts, lists and tuples. Shared
    objects are converted once (and stay shared); their expanded count is bounded."""
    counts: dict[int, int] = {}  # id -> objects inside, counted as expanded
    done: dict[int, object] = {}
    keep = []  # the originals stay alive, so their ids stay unique

    def convert(value, depth):
        key = id(value)
        if key in done:
            return done[key]
        if depth > MAX_DEPTH:
            raise _too_big(path, f"nests objects more than {MAX_DEPTH} deep")
        out, inside = _convert_one(value, depth, convert, counts, path)
        if inside > MAX_OBJECTS:
            raise _too_big(path, f"expands to more than {MAX_OBJECTS:,} objects")
        counts[key] = inside
        done[key] = out
        keep.append(value)
        return out

    return convert(obj, 0)


def _convert_one(obj, depth, convert, counts, path):
    """(converted obj, objects it expands to); children through `convert`."""
    def size(child):
        return counts.get(id(child), 1)

    if isinstance(obj, ChumpyStandIn):
        value = obj.state.get("x") if isinstance(obj.state, dict) else None
        if value is None:
            return ChumpyExpression(obj.chumpy_name), 1
        plain = convert(value, depth + 1)
        return (plain if isinstance(plain, ChumpyExpression) else np.asarray(plain)), 1 + size(value)
    if isinstance(obj, SparseStandIn):
        return _sparse_from_state(obj, path), 1
    if isinstance(obj, dict):
        out = {key: convert(value, depth + 1) for key, value in obj.items()}
        return out, 1 + sum(size(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        items = [convert(value, depth + 1) for value in obj]
        return type(obj)(items), 1 + sum(size(value) for value in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        if obj.size > MAX_OBJECTS:
            return None, obj.size + 1  # refused by the caller
        flat = [convert(value, depth + 1) for value in obj.ravel()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(obj.shape), 1 + sum(size(value) for value in obj.ravel())
    return obj, 1


def _sparse_from_state(obj, path):
    import scipy.sparse

    state = obj.state if isinstance(obj.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    try:
        arrays = tuple(np.asarray(state[key]) for key in ("data", "indices", "indptr"))
        matrix_class = scipy.sparse.csc_matrix if obj.format == "csc" else scipy.sparse.csr_matrix
        return matrix_class(arrays, shape=tuple(int(n) for n in shape))
    except Exception as exc:
        raise ModelFileError(path, f"holds a malformed sparse matrix ({type(exc).__name__}: {exc})") from None


# --- .npy / .npz -------------------------------------------------------------------


def _open(path):
    require_regular(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(path, "file not found") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot be read ({exc.strerror})") from None


def require_regular(path) -> None:
    """A FIFO, device or folder is refused before open() (which blocks forever on a FIFO)."""
    from ..fsutil import regular_file_problem

    problem = regular_file_problem(path, "file")
    if problem:
        raise ModelFileError(path, problem)


class _Budget:
    """Array bytes still allowed from one file (MAX_READ_BYTES in all)."""

    def __init__(self, limit=MAX_READ_BYTES):
        self.left = limit

    def take(self, path, shape, dtype, available, what=None):
        """Check an array's declared size before it is allocated: within the budget and
        no larger than the bytes the file (or zip member) really holds."""
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= int(n)  # Python ints: no overflow on absurd shapes
        if nbytes > self.left:
            what = what or f"an array of shape {tuple(shape)} {dtype}"
            raise _too_big(path, f"declares {what} ({nbytes / 2**30:.2f} GiB); FlameFit "
                                 f"reads at most {MAX_READ_BYTES / 2**30:.2f} GiB of arrays from one file")
        if available is not None and nbytes > available:
            raise _corrupt(path, "a numpy array file", EOFError(
                f"the header declares {nbytes} bytes of data, the file holds {max(available, 0)}"))
        self.left -= nbytes


def _read_npy_header(stream):
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    # 3.0 (utf-8 field names) has no public reader, and numpy writes it only for such names
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read (only 1.0 and 2.0)")


def read_npy_stream(stream, path, size=None, budget=None, allow_pickle=True):
    """One array from an .npy stream of `size` bytes (when known); object arrays go
    through the safe unpickler (refused when not allow_pickle) and a 0-d object array (a
    pickled dict, as in DECA's embedding) returns its item. The declared size is checked
    before reading."""
    budget = budget or _Budget()
    try:
        start = stream.tell()
        shape, _, dtype = _read_npy_header(stream)
        left = None if size is None else size - (stream.tell() - start)
        if dtype.hasobject:
            if not allow_pickle:
                raise ModelFileError(path, "holds Python objects, not numbers or text")
            if left is not None:  # the pickle can read no more than the rest of the member
                budget.take(path, (left,), np.dtype(np.uint8), None, what="a pickled object array")
            value = unpickle_stream(stream, path)
            if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
                return value.item()
            return value
        budget.take(path, shape, dtype, left)
        stream.seek(start)
        return np.lib.format.read_array(stream, allow_pickle=False)
    except ModelFileError:
        raise
    except Exception as exc:
        raise _corrupt(path, "a numpy array file", exc) from None


def load_npy(path):
    with _open(path) as stream:
        return read_npy_stream(stream, path, size=os.fstat(stream.fileno()).st_size)


def _npz_members(archive: zipfile.ZipFile) -> dict[str, str]:
    return {name[:-4] if name.endswith(".npy") else name: name for name in archive.namelist()}


NPZ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what numpy writes; read in bounded steps


def _open_npz(path) -> zipfile.ZipFile:
    """The archive, refused before any member is read when one is compressed in a way
    numpy never writes (bzip2, lzma: inflated whole on the first read) or encrypted."""
    with _open(path) as stream:  # also the uniform "file not found" message
        directory = _zip_directory_size(stream)
    if directory > MAX_NPZ_DIRECTORY_BYTES:
        raise _too_big(path, f"has a zip directory of {directory:,} bytes (more than {MAX_NPZ_MEMBERS:,} arrays)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _corrupt(path, "an .npz (zip) archive", exc) from None
    try:
        _check_members(archive, path)
    except ModelFileError:
        archive.close()
        raise
    return archive


def _zip_directory_size(stream) -> int:
    """The central directory's size that the zip's end record (or its zip64 record) gives,
    found as zipfile finds it; 0 without one (zipfile then says it is no zip)."""
    end = stream.seek(0, os.SEEK_END)
    start = stream.seek(max(0, end - 22 - 65535))
    tail = stream.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return 0
    sizes = [int.from_bytes(tail[at + 12:at + 16], "little")]
    if start + at >= 76:  # a zip64 locator and record just before it take precedence
        stream.seek(start + at - 76)
        record = stream.read(76)
        if record[:4] == b"PK\x06\x06" and record[56:60] == b"PK\x06\x07":
            sizes.append(int.from_bytes(record[40:48], "little"))
    return max(sizes)


def _check_members(archive: zipfile.ZipFile, path) -> None:
    if len(archive.infolist()) > MAX_NPZ_MEMBERS:
        raise _too_big(path, f"holds more than {MAX_NPZ_MEMBERS:,} arrays")
    for info in archive.infolist():
        if info.compress_type not in NPZ_METHODS:
            method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
            raise ModelFileError(path, f"refuses to read member {info.filename}: it is compressed with {method} "
                                       "(FlameFit reads only stored or deflate members, as numpy writes them)")
        if info.flag_bits & 0x1:
            raise ModelFileError(path, f"refuses to read member {info.filename}: it is encrypted")


def load_npz(path, only=None, allow_pickle=True) -> dict:
    """Arrays of an .npz as a dict, `only` those keys when given (big texture spaces);
    allow_pickle=False refuses object arrays (files FlameFit wrote: numbers and text)."""
    with _open_npz(path) as archive:
        out = {}
        budget = _Budget()  # for all members together
        for key, member in _npz_members(archive).items():
            if only is not None and key not in only:
                continue
            try:
                with archive.open(member) as stream:  # read in chunks: texture spaces are big
                    out[key] = read_npy_stream(stream, f"{path}[{key}]", archive.getinfo(member).file_size, budget,
                                               allow_pickle)
            except ModelFileError:
                raise
            except Exception as exc:
                raise _corrupt(path, f"an .npz archive (member {key})", exc) from None
        return out


NPZ_CHUNK_BYTES = 16 << 20  # load_npz_leading reads this much of the file at a time


def load_npz_leading(path, key: str, count: int | None) -> np.ndarray:
    """Member `key` of an .npz with only the first `count` entries of its LAST axis (all
    when None), e.g. K of FLAME_texture.npz's 200 texture directions. The member is read
    in chunks of NPZ_CHUNK_BYTES, so the whole array is never in memory."""
    with _open_npz(path) as archive:
        member = _npz_members(archive).get(key)
        if member is None:
            raise ModelFileError(path, f"has no '{key}' array")
        try:
            with archive.open(member) as stream:
                start_of_member = stream.tell()
                shape, fortran, dtype = _read_npy_header(stream)
                if dtype.hasobject or fortran or len(shape) == 0:  # rare layouts: read it all
                    stream.seek(start_of_member)
                    whole = np.asarray(read_npy_stream(stream, f"{path}[{key}]", archive.getinfo(member).file_size))
                    return np.ascontiguousarray(whole if count is None or whole.ndim == 0 else whole[..., :count])
                total = shape[-1]
                keep = total if count is None else max(0, min(int(count), total))
                header = stream.tell() - start_of_member
                # The member may be big (only `keep` of its `total` columns are read), but it
                # must hold what it declares, and what is kept must fit the budget.
                _Budget(limit=float("inf")).take(f"{path}[{key}]", shape, dtype, archive.getinfo(member).file_size - header)
                _Budget().take(f"{path}[{key}]", (*shape[:-1], keep), dtype, None)
                rows = int(np.prod(shape[:-1], dtype=np.int64))
                out = np.empty((rows, keep), dtype)
                row_bytes = total * dtype.itemsize
                step = max(1, NPZ_CHUNK_BYTES // max(row_bytes, 1))
                for start in range(0, rows, step):
                    n = min(step, rows - start)
                    data = stream.read(n * row_bytes)
                    if len(data) != n * row_bytes:
                        raise EOFError(f"'{key}' is truncated")
                    out[start:start + n] = np.frombuffer(data, dtype).reshape(n, total)[:, :keep]
                return out.reshape(*shape[:-1], keep)
        except ModelFileError:
            raise
        except Exception as exc:
            raise _corrupt(path, f"an .npz archive (member {key})", exc) from None


def npz_headers(path) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of each member without loading the data."""
    with _open_npz(path) as archive:
        headers = {}
        for key, member in _npz_members(archive).items():
            try:
                with archive.open(member) as stream:
                    shape, _, dtype = _read_npy_header(stream)
            except Exception as exc:
                raise _corrupt(path, f"an .npz archive (member {key})", exc) from None
            headers[key] = (shape, dtype)
        return headers


def npy_header(path) -> tuple[tuple, np.dtype]:
    with _open(path) as stream:
        try:
            shape, _, dtype = _read_npy_header(stream)
        except Exception as exc:
            raise _corrupt(path, "a numpy array file", exc) from None
        return shape, dtype
