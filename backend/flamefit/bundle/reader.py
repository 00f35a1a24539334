"""Read and check a result bundle against schema.json (tests, `batch --resume`, and the
rule that only a FlameFit bundle is ever replaced).

Schemas 1, 2 and 3 are read; `read_subject` gives any of them in schema 3's shape (a
schema 1-2 bundle becomes one view), so callers see one shape.

A bundle's own files (its manifest) are result.json and the names its `files` object
(and, from schema 3 on, each `views[k].files`) gives for the schema's file keys (each one
a name schema.json allows for that key and view, so a hand-made result.json cannot claim
a user's file). `foreign_files` lists everything else in the folder: what `--overwrite`
refuses to delete.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .schema import (
    MAX_VIEWS,
    READABLE_VERSIONS,
    RESULT_FILE,
    RESULT_KEYS,
    RESULT_KEYS_3,
    SCHEMA,
    VIEW_KEYS,
    VIEWS_SINCE,
    arrays_for,
    file_names,
    files_for,
    view_files_for,
)

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


def _keys_problems(value, keys, subkeys: dict, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} is not a JSON object"]
    problems = []
    missing = [k for k in keys if k not in value]
    if missing:
        problems.append(f"{where} lacks {missing}")
    for key, names in subkeys.items():
        item = value.get(key)
        if key in value and (not isinstance(item, dict) or any(s not in item for s in names)):
            problems.append(f"{where} {key} lacks some of {names}")
    return problems


def _files_problems(files, entries: dict, view: int, where: str) -> list[str]:
    if not isinstance(files, dict):
        return [f"{where} is not an object"]
    return [f"{where}.{key} is {files.get(key)!r}, expected one of {list(file_names(key, view))}"
            for key in entries if files.get(key) not in file_names(key, view)]


def _result_problems(result) -> list[str]:
    """What makes a parsed result.json not one of ours (shallow: keys, version, file names)."""
    if not isinstance(result, dict):
        return [f"{RESULT_FILE} is not a JSON object"]
    version = result.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        return [f"schema_version {version!r} is not one of {list(READABLE_VERSIONS)}"]
    if version < VIEWS_SINCE:
        problems = _keys_problems(result, RESULT_KEYS, SCHEMA["result_subkeys"], RESULT_FILE)
        return problems + _files_problems(result.get("files"), files_for(version), 1, f"{RESULT_FILE} files")
    problems = _keys_problems(result, RESULT_KEYS_3, SCHEMA["result_subkeys_3"], RESULT_FILE)
    problems += _files_problems(result.get("files"), files_for(version), 1, f"{RESULT_FILE} files")
    views = result.get("views")
    if not isinstance(views, list) or not 1 <= len(views) <= MAX_VIEWS:
        return problems + [f"{RESULT_FILE} views is not a list of 1 to {MAX_VIEWS} views"]
    for k, view in enumerate(views, start=1):
        where = f"{RESULT_FILE} views[{k - 1}]"
        problems += _keys_problems(view, VIEW_KEYS, SCHEMA["view_subkeys"], where)
        if isinstance(view, dict):
            problems += _files_problems(view.get("files"), view_files_for(version), k, f"{where}.files")
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
    """The names of the files a bundle wrote itself (its manifest), from its parsed
    result.json: `files` and every `views[k].files`, each name one the schema allows there."""
    own = {RESULT_FILE}
    if not isinstance(result, dict):
        return own
    files = result.get("files")
    if isinstance(files, dict):
        own.update(name for key, name in files.items() if key in SCHEMA["files"] and name in file_names(key))
    views = result.get("views") if result.get("schema_version") == 3 else None
    if isinstance(views, list):
        for k, view in enumerate(views[:MAX_VIEWS], start=1):
            files = view.get("files") if isinstance(view, dict) else None
            if isinstance(files, dict):
                own.update(name for key, name in files.items()
                           if key in SCHEMA["files"] and isinstance(name, str) and name in file_names(key, k))
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


VIEW_LEVEL_KEYS = ("photo", "camera", "lights", "landmarks_2d", "landmarks_2d_fixed", "detected_landmarks_2d",
                   "landmarks_3d", "metrics")


def upgraded(result: dict) -> dict:
    """A parsed result.json of any readable schema in schema 3's shape: a schema 1-2
    result becomes one view (its photo, camera, parameters but identity, lights,
    landmarks, metrics, crop, landmark source and per-view files); `schema_version` stays
    the file's. A schema 3 result is returned as it is."""
    if result.get("schema_version", 0) >= VIEWS_SINCE:
        return result
    params = dict(result.get("parameters") or {})
    files = dict(result.get("files") or {})
    fit = dict(result.get("fit") or {})
    view = {key: result[key] for key in VIEW_LEVEL_KEYS if key in result}
    photo_path = (result.get("photo") or {}).get("path") or "photo"
    view["name"] = Path(str(photo_path)).stem or "photo"
    view["parameters"] = {k: params[k] for k in ("expression", "pose", "translation") if k in params}
    view["fit"] = {k: fit[k] for k in ("crop", "landmarks") if k in fit}
    view["files"] = {k: files.pop(k) for k in ("photo", "overlay", "report") if k in files}
    out = {k: v for k, v in result.items() if k not in VIEW_LEVEL_KEYS or k == "metrics"}
    out["parameters"] = {"identity": params.get("identity", [])}
    out["expression_names"] = params.get("expression_names", [])
    out["files"] = files
    out["fit"] = {k: v for k, v in fit.items() if k not in ("crop", "landmarks")}
    out["views"] = [view]
    return out


def read_subject(bundle) -> dict:
    """result.json of the bundle in schema 3's shape (see `upgraded`)."""
    return upgraded(read_result(bundle))


def fitted_photos(bundle) -> list[dict]:
    """Each view's `photo` entry ({path, width, height[, sha256]}) in view order, for any
    schema (1-2: the one photo). What `batch --resume` compares a photo with."""
    views = read_subject(bundle).get("views") or []
    return [v["photo"] if isinstance(v, dict) and isinstance(v.get("photo"), dict) else {} for v in views]


def photo_sha256s(bundle) -> list[str | None]:
    """The hex SHA-256 of each view's photo file, in view order (None where not recorded:
    older bundles, a photo given as an array)."""
    out = []
    for view in read_subject(bundle).get("views") or []:
        photo = view.get("photo") if isinstance(view, dict) else None
        value = photo.get("sha256") if isinstance(photo, dict) else None
        out.append(value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None)
    return out


def photo_sha256(bundle) -> str | None:
    """The hex SHA-256 of the photo file the bundle was fitted to (its first view's
    `photo.sha256`); None when the bundle does not record it (older bundles, a photo
    given as an array)."""
    digests = photo_sha256s(bundle)
    return digests[0] if digests else None


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
    subject = upgraded(result)
    paths = {}
    wanted = [(key, result["files"][key], key) for key in files_for(version)]
    for k, view in enumerate(subject["views"], start=1):
        wanted += [(f"{key}-{k}", view["files"][key], key) for key in view_files_for(version)]
    for label, name, _ in wanted:
        try:
            paths[label] = bundle_file(bundle, name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if not paths[label].is_file():
            problems.append(f"missing {name}")
    if problems or not deep:
        return problems
    for k, view in enumerate(subject["views"]):
        for key in ("landmarks_2d", "landmarks_2d_fixed", "detected_landmarks_2d", "landmarks_3d"):
            if key in view and len(view[key]) != 68:  # landmarks_2d_fixed is optional (older bundles)
                problems.append(f"views[{k}] {key} has {len(view[key])} points, expected 68")
        if len(view["lights"]["sh"]) != 9:
            problems.append(f"views[{k}] lights.sh is not 9x3")
    from ..errors import ModelFileError
    from ..models.safe_pickle import load_npz  # the bounded .npz reader: no zip bomb, no pickle

    sizes: dict = {"N": len(subject["views"])} if version >= VIEWS_SINCE else {}
    for key, entry in files_for(version).items():
        if entry["format"] != "npz":
            continue
        try:
            required = arrays_for(key, version)
            data = load_npz(paths[key], only=set(arrays_for(key, version, optional=True)), allow_pickle=False)
            for name, spec in arrays_for(key, version, optional=True).items():
                if name not in data:
                    if name in required:  # an optional array: bundles of earlier FlameFits lack it
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

    for label, name, key in wanted:
        if SCHEMA["files"][key]["format"] not in ("png", "image") or label not in paths:
            continue
        try:
            with Image.open(paths[label]) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 - any decoding problem is a problem
            problems.append(f"{name} unreadable: {exc}")
    return problems
