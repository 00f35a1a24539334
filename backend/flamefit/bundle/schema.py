"""The bundle schema (schema.json beside this file): the one description of a result
bundle that the writer, the readers (here and in the Blender add-on, which ships a copy)
and the tests use."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("schema.json")


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


SCHEMA = load_schema()
SCHEMA_VERSION: int = SCHEMA["schema_version"]
READABLE_VERSIONS: tuple[int, ...] = tuple(SCHEMA["readable_versions"])
RESULT_FILE: str = SCHEMA["result_file"]
STAGES: tuple[str, ...] = tuple(SCHEMA["stages"])
DETECTORS: tuple[str, ...] = tuple(SCHEMA["detectors"])
PHOTO_SUFFIXES: tuple[str, ...] = tuple(SCHEMA["photo_suffixes"])
LANDMARK_SUFFIXES: tuple[str, ...] = tuple(SCHEMA["landmark_suffixes"])
RESULT_KEYS: tuple[str, ...] = tuple(SCHEMA["result_keys"])  # schemas 1-2
RESULT_KEYS_3: tuple[str, ...] = tuple(SCHEMA["result_keys_3"])
VIEW_KEYS: tuple[str, ...] = tuple(SCHEMA["view_keys"])
MAX_VIEWS: int = SCHEMA["max_views"]
VIEWS_SINCE = 3  # the schema that has result.json `views` and per-view files


def files_for(version: int = SCHEMA_VERSION) -> dict[str, dict]:
    """The file entries (key -> schema entry) in result.json's top-level `files` of a bundle
    of `version` (from schema 3 on, the per-view files are in views[k].files instead)."""
    return {key: entry for key, entry in SCHEMA["files"].items()
            if entry.get("since", 1) <= version and not (version >= VIEWS_SINCE and entry.get("per_view"))
            and not entry.get("optional")}  # an optional file (texture_mask) is the bundle's own, never required


def view_files_for(version: int = SCHEMA_VERSION) -> dict[str, dict]:
    """The per-view file entries (views[k].files) of a bundle of `version` (none before 3)."""
    if version < VIEWS_SINCE:
        return {}
    return {key: entry for key, entry in SCHEMA["files"].items() if entry.get("per_view")}


def arrays_for(file_key: str, version: int = SCHEMA_VERSION, optional: bool = False) -> dict[str, dict]:
    """Array name -> {"dtype", "shape"} of an npz file in a bundle of `version` (per-view
    arrays with their leading N axis from schema 3 on). `optional`: also the arrays that
    bundles of `version` written by earlier FlameFits lack (mesh.npz's view_* arrays)."""
    arrays = SCHEMA["files"][file_key].get("arrays", {})
    out = {}
    for name, spec in arrays.items():
        if spec.get("since", 1) > version or (spec.get("optional") and not optional):
            continue
        if spec.get("per_view") and version >= VIEWS_SINCE:
            spec = {**spec, "shape": ["N", *spec["shape"]]}
        out[name] = spec
    return out


def file_names(file_key: str, view: int = 1) -> tuple[str, ...]:
    """The names a file may have in a bundle (the photo: .png or .jpg); a per-view file of
    view `view` >= 2 (1-based) has its numbered name."""
    entry = SCHEMA["files"][file_key]
    if view == 1:
        return (entry["path"], *entry.get("alternatives", ()))
    if not entry.get("per_view") or not 2 <= view <= MAX_VIEWS:
        return ()
    return tuple(name.format(k=view) for name in (entry["view_path"], *entry.get("view_alternatives", ())))


def all_file_names() -> frozenset[str]:
    """Every name a file of a bundle can have (every view's included), result.json too."""
    names = {RESULT_FILE, *(name for key in SCHEMA["files"] for name in file_names(key))}
    for key, entry in SCHEMA["files"].items():
        if entry.get("per_view"):
            names.update(name for view in range(2, MAX_VIEWS + 1) for name in file_names(key, view))
    return frozenset(names)
