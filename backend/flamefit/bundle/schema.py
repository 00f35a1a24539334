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
RESULT_KEYS: tuple[str, ...] = tuple(SCHEMA["result_keys"])


def files_for(version: int = SCHEMA_VERSION) -> dict[str, dict]:
    """The file entries (key -> schema entry) a bundle of `version` has."""
    return {key: entry for key, entry in SCHEMA["files"].items() if entry.get("since", 1) <= version}


def arrays_for(file_key: str, version: int = SCHEMA_VERSION) -> dict[str, dict]:
    """Array name -> {"dtype", "shape"} of an npz file in a bundle of `version`."""
    arrays = SCHEMA["files"][file_key].get("arrays", {})
    return {name: spec for name, spec in arrays.items() if spec.get("since", 1) <= version}


def file_names(file_key: str) -> tuple[str, ...]:
    """The names a file may have in a bundle (the photo: .png or .jpg)."""
    entry = SCHEMA["files"][file_key]
    return (entry["path"], *entry.get("alternatives", ()))
