"""Data derived from a head model alone (its texel map, mirror map, feature zones, seam
graph), built once per model object and kept in memory; with a cache folder
(`use_cache_dir`, which `prepare_model(model, cache_dir)` sets) also kept on disk, so a
fresh `flamefit fit` process does not rebuild them: ~0.4 s of the texture stage at 1024^2
on the 2-core CPU, against ~0.05 s to read them back.

On disk: CACHE_DIR/derived/<kind>-<key>.npz, key = SHA-256 of the model's geometry, UVs,
regions and iBUG-68 embedding, the kind's parameters and the source of the modules that
build them (BUILDERS: a changed builder never reads an older build). Written
atomically (parallel processes never see half a file), read with allow_pickle=False; a
file that cannot be read is built again. Values are arrays, torch tensors, scipy sparse
matrices, numbers and tuples of them, or objects of the classes in DECODABLE holding
those (the file names its class; nothing else is ever instantiated).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import zipfile
from pathlib import Path

import numpy as np

# The modules whose code builds what is kept: their source is part of every file's key.
BUILDERS = ("flamefit.render.uv_raster", "flamefit.textures.seams", "flamefit.textures.texture_mask",
            "flamefit.textures.uv_masks", "flamefit.models.derived")
# Classes a cache file may name (module, class): built with __new__ and their saved fields.
DECODABLE = {("flamefit.render.uv_raster", "TexelMap"), ("flamefit.textures.seams", "SeamBlender")}

_MEMORY: dict = {}  # (kind, id(owner), params) -> (owner, value): the owner kept, so an id is never reused
_MEMORY_SIZE = 16
_DIGESTS: dict = {}  # id(model) -> (model, hex digest)
_disk: Path | None = None


def use_cache_dir(cache_dir) -> None:
    """Keep derived data under cache_dir/derived from now on (None: memory only)."""
    global _disk
    _disk = None if cache_dir is None else Path(cache_dir) / "derived"


def derived(kind: str, owner, params: tuple, make, *, disk: bool = True):
    """make() once per (kind, owner object, params); with `disk` and a cache folder set,
    read from / written to disk (owner: a HeadModel)."""
    key = (kind, id(owner), params)
    hit = _MEMORY.get(key)
    if hit is not None and hit[0] is owner:
        return hit[1]
    path = _disk / f"{kind}-{_file_key(owner, params)}.npz" if disk and _disk is not None else None
    value = _read(path) if path is not None and path.is_file() else None  # is_file: never open a FIFO
    if value is None:
        value = make()
        if path is not None:
            _write(path, value)
    if len(_MEMORY) >= _MEMORY_SIZE:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = (owner, value)
    return value


def _file_key(model, params: tuple) -> str:
    hit = _DIGESTS.get(id(model))
    if hit is None or hit[0] is not model:
        digest = hashlib.sha256()
        for array in (model.v_template, model.faces, model.uv_coords, model.uv_faces):
            digest.update(np.ascontiguousarray(array).tobytes())
        for name in sorted(model.regions):
            digest.update(name.encode() + np.ascontiguousarray(model.regions[name], np.int64).tobytes())
        embedding = model.landmarks.get("ibug68")
        if embedding is not None:
            digest.update(np.ascontiguousarray(embedding.face_idx, np.int64).tobytes())
            digest.update(np.ascontiguousarray(embedding.bary, np.float32).tobytes())
        hit = _DIGESTS[id(model)] = (model, digest.hexdigest())
    return hashlib.sha256(f"{hit[1]} {params!r} {_code_digest()}".encode()).hexdigest()[:24]


@functools.cache
def _code_digest() -> str:
    digest = hashlib.sha256()
    for name in BUILDERS:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()


# --- a value as named arrays and back ---------------------------------------------------


def _encode(value, name: str, arrays: dict):
    """The layout of `value` (JSON-able), its arrays put into `arrays` under `name`."""
    import scipy.sparse
    import torch

    if isinstance(value, np.ndarray):
        arrays[name] = value
        return {"array": name}
    if torch.is_tensor(value):
        arrays[name] = value.detach().cpu().numpy()
        return {"tensor": name}
    if scipy.sparse.issparse(value):
        csr = value.tocsr()
        for part in ("data", "indices", "indptr"):
            arrays[f"{name}.{part}"] = getattr(csr, part)
        return {"sparse": name, "shape": list(csr.shape), "format": value.format}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return {"value": value}
    if isinstance(value, (tuple, list)):
        return {"tuple": [_encode(v, f"{name}.{k}", arrays) for k, v in enumerate(value)]}
    cls = type(value)
    if (cls.__module__, cls.__qualname__) not in DECODABLE:
        raise TypeError(f"cannot keep a {cls.__qualname__} on disk")
    return {"object": [cls.__module__, cls.__qualname__],
            "fields": {k: _encode(v, f"{name}.{k}", arrays) for k, v in vars(value).items()}}


def _decode(layout: dict, arrays):
    import scipy.sparse
    import torch

    if "array" in layout:
        return arrays[layout["array"]]
    if "tensor" in layout:
        return torch.from_numpy(arrays[layout["tensor"]])
    if "sparse" in layout:
        name = layout["sparse"]
        csr = scipy.sparse.csr_matrix(tuple(arrays[f"{name}.{p}"] for p in ("data", "indices", "indptr")),
                                      shape=tuple(layout["shape"]))
        return csr.asformat(layout["format"])
    if "value" in layout:
        return layout["value"]
    if "tuple" in layout:
        return tuple(_decode(item, arrays) for item in layout["tuple"])
    module, qualname = layout["object"]
    if (module, qualname) not in DECODABLE:
        raise ValueError(f"{module}.{qualname} is not a derived-data class")
    value = object.__new__(getattr(importlib.import_module(module), qualname))
    value.__dict__.update({k: _decode(v, arrays) for k, v in layout["fields"].items()})
    return value


def _read(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return _decode(json.loads(str(arrays.pop("__layout__"))), arrays)
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None  # unreadable or from other code: build it again


def _write(path: Path, value) -> None:
    from ..fsutil import atomic_save_npz

    arrays: dict = {}
    layout = _encode(value, "v", arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, compressed=False, __layout__=np.array(json.dumps(layout)), **arrays)
    except OSError:
        pass  # a read-only or full cache folder only costs the time to build it again
