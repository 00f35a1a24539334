"""Read and check a result bundle against schema.json (tests, `batch --resume`, and the
rule that only a FlameFit bundle is ever replaced).

A bundle's own files (its manifest) are result.json and the names its `files` object
gives for the schema's file keys (each one a name schema.json allows for that key, so a
hand-made result.json cannot claim a user's file). `foreign_files` lists everything else
in the folder: what `--overwrite` refuses to delete.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .schema import READABLE_VERSIONS, RESULT_FILE, RESULT_KEYS, SCHEMA, arrays_for, file_names, files_for

MAX_RESULT_BYTES = 64 << 20  # a result.json is ~100 kB; refuse to parse anything huge


def read_result(bundle) -> dict:
    path = Path(bundle) / RESULT_FILE
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise ValueError(f"{RESULT_FILE} is larger than {MAX_RESULT_BYTES >> 20} MB")
    return json.loads(path.read_text(encoding="utf-8"))


def bundle_file(bundle, relative) -> Path:
    """The file a `files.*` entry names, confined to the bundle: a relative path that
    resolves inside the folder (no absolute path, no `..`, no symlink out). ValueError else."""
    if not isinstance(relative, str) or not relative or os.path.isabs(relative) or "\x00" in relative:
        raise ValueError(f"file entry {relative!r} is not a relative path")
    root = Path(bundle).resolve()
    path = (root / relative).resolve()
    if path == root or root not in path.parents:
        raise ValueError(f"file entry {relative!r} points outside the bundle")
    return path


def _result_problems(result) -> list[str]:
    """What makes a parsed result.json not one of ours (shallow: keys and version)."""
    if not isinstance(result, dict):
        return [f"{RESULT_FILE} is not a JSON object"]
    version = result.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        return [f"schema_version {version!r} is not one of {list(READABLE_VERSIONS)}"]
    problems = []
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        problems.append(f"{RESULT_FILE} lacks {missing}")
    for key, subkeys in SCHEMA["result_subkeys"].items():
        value = result.get(key)
        if key in result and (not isinstance(value, dict) or any(s not in value for s in subkeys)):
            problems.append(f"{RESULT_FILE} {key} lacks some of {subkeys}")
    files = result.get("files")
    if not isinstance(files, dict):
        problems.append(f"{RESULT_FILE} files is not an object")
    else:
        for key in files_for(version):
            if files.get(key) not in file_names(key):
                problems.append(f"files.{key} is {files.get(key)!r}, expected one of {list(file_names(key))}")
    return problems


def is_bundle(folder) -> bool:
    """True when `folder` holds a FlameFit result bundle: its result.json parses and has
    our schema's keys and a version we write or read. The only kind of folder that
    `fit --overwrite` and `batch --resume` ever replace."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return not _result_problems(read_result(folder))
    except (OSError, ValueError, RecursionError):
        return False


def own_files(result: dict) -> set[str]:
    """The names of the files a bundle wrote itself (its manifest), from its parsed result.json."""
    files = result.get("files") if isinstance(result, dict) else None
    own = {RESULT_FILE}
    if isinstance(files, dict):
        own.update(name for key, name in files.items() if key in SCHEMA["files"] and name in file_names(key))
    return own


def foreign_files(folder) -> list[str]:
    """What in the bundle `folder` is not its own (sorted names; a subfolder as "NAME/",
    everything in it foreign too): anything but a regular file named in its manifest.
    Everything, for a folder without a readable result.json."""
    folder = Path(folder)
    try:
        own = own_files(read_result(folder))
    except (OSError, ValueError, RecursionError):
        own = set()
    foreign = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                foreign.append(entry.name + "/")
            elif entry.name not in own or not entry.is_file(follow_symlinks=False):
                foreign.append(entry.name)
    return sorted(foreign)


def photo_sha256(bundle) -> str | None:
    """The hex SHA-256 of the photo file the bundle was fitted to (`photo.sha256`); None
    when the bundle does not record it (older bundles, a photo given as an array)."""
    photo = read_result(bundle).get("photo")
    value = photo.get("sha256") if isinstance(photo, dict) else None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None


def _check_array(name: str, array: np.ndarray, spec: dict, sizes: dict) -> str | None:
    dtype = spec["dtype"]
    ok_dtype = array.dtype.kind == "U" if dtype == "str" else array.dtype == np.dtype(dtype)
    if not ok_dtype:
        return f"{name} has dtype {array.dtype}, expected {dtype}"
    if array.ndim != len(spec["shape"]):
        return f"{name} has shape {array.shape}, expected {spec['shape']}"
    for size, want in zip(array.shape, spec["shape"]):
        if isinstance(want, str):
            want = sizes.setdefault(want, size)
        if size != want:
            return f"{name} has shape {array.shape}, expected {spec['shape']} with {sizes}"
    return None


def validate_bundle(bundle, deep: bool = True) -> list[str]:
    """Problems found in the bundle at `bundle` (empty list: a complete, consistent bundle)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        return [f"{bundle}: not a folder"]
    try:
        result = read_result(bundle)
    except (OSError, ValueError, RecursionError) as exc:
        return [f"{RESULT_FILE} unreadable: {exc}"]
    problems = _result_problems(result)
    if problems:
        return problems
    version = result["schema_version"]
    paths = {}
    for key in files_for(version):
        try:
            paths[key] = bundle_file(bundle, result["files"][key])
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if not paths[key].is_file():
            problems.append(f"missing {result['files'][key]}")
    if problems or not deep:
        return problems
    for key in ("landmarks_2d", "landmarks_2d_fixed", "detected_landmarks_2d", "landmarks_3d"):
        if key in result and len(result[key]) != 68:  # landmarks_2d_fixed is optional (older bundles)
            problems.append(f"{key} has {len(result[key])} points, expected 68")
    if len(result["lights"]["sh"]) != 9:
        problems.append("lights.sh is not 9x3")
    from ..errors import ModelFileError
    from ..models.safe_pickle import load_npz  # the bounded .npz reader: no zip bomb, no pickle

    sizes: dict = {}
    for key, entry in files_for(version).items():
        if entry["format"] != "npz":
            continue
        try:
            data = load_npz(paths[key], only=set(arrays_for(key, version)), allow_pickle=False)
            for name, spec in arrays_for(key, version).items():
                if name not in data:
                    problems.append(f"{entry['path']} lacks {name}")
                    continue
                array = data[name]
                problem = _check_array(name, array, spec, sizes)
                if problem:
                    problems.append(f"{entry['path']}: {problem}")
                elif array.dtype.kind == "f" and not np.isfinite(array).all():
                    problems.append(f"{entry['path']}: {name} holds NaN or infinity")
            if key == "mesh" and not problems:
                if data["faces"].max() >= sizes["V"] or data["uv_faces"].max() >= sizes["T"]:
                    problems.append("mesh.npz faces index missing vertices or UVs")
        except (ModelFileError, ValueError, KeyError) as exc:
            problems.append(f"cannot read {entry['path']}: {exc}")
    from PIL import Image

    for key, entry in files_for(version).items():
        if entry["format"] not in ("png", "image") or key not in paths:
            continue
        try:
            with Image.open(paths[key]) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 - any decoding problem is a problem
            problems.append(f"{result['files'][key]} unreadable: {exc}")
    return problems
