"""The photos of a folder (one suffix list: bundle/schema.json, which the Blender batch
reads too), their landmark sidecar files, and unique, deterministic bundle names."""

from __future__ import annotations

import re
from pathlib import Path

from ..bundle.schema import LANDMARK_SUFFIXES, PHOTO_SUFFIXES
from ..errors import FlameFitError


def list_photos(folder, exclude=()) -> list[Path]:
    """The photos directly in `folder` (regular files with a photo suffix, no hidden
    ones), sorted by name, minus `exclude`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlameFitError(f"{folder}: photo folder not found" if not folder.exists() else f"{folder}: not a folder")
    excluded = {Path(p).absolute() for p in exclude}
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise FlameFitError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    photos = sorted((p for p in entries if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")
                     and p.is_file() and p.absolute() not in excluded), key=lambda p: p.name)
    if not photos:
        raise FlameFitError(f"{folder}: no photos ({', '.join(PHOTO_SUFFIXES)})")
    return photos


def sidecar_landmarks(photo: Path) -> Path | None:
    """PHOTO_STEM.pts / .json / .npy beside the photo, the first that exists."""
    for suffix in LANDMARK_SUFFIXES:
        candidate = Path(photo).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _safe(text: str) -> str:
    """A folder name from a file name: no path separators, no leading dot, not empty."""
    text = re.sub(r"[\x00-\x1f/\\]", "_", text).lstrip(".")
    return text or "photo"


def bundle_names(photos: list[Path]) -> dict[Path, str]:
    """Photo -> bundle folder name, unique and the same for the same set of photos:
    the stem when no other photo has it, else stem_ext (`a.jpg`, `a.png` -> `a_jpg`,
    `a_png`); a name that is still taken (`a_jpg.png` next to `a.jpg` + `a.png`) gets
    `_2`, `_3`, ... in the photos' sorted order. Names compare case-insensitively, so
    they stay distinct on case-insensitive file systems."""
    photos = sorted(photos, key=lambda p: p.name)
    stems: dict[str, int] = {}
    for p in photos:
        stems[_safe(p.stem).lower()] = stems.get(_safe(p.stem).lower(), 0) + 1
    wanted = {p: _safe(p.stem) if stems[_safe(p.stem).lower()] == 1 else f"{_safe(p.stem)}_{p.suffix.lstrip('.').lower()}"
              for p in photos}
    # Plain stems first, so a photo named like another's stem_ext keeps its own stem.
    order = sorted(photos, key=lambda p: (stems[_safe(p.stem).lower()] != 1, p.name))
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for p in order:
        name, k = wanted[p], 2
        while name.lower() in taken or name.lower() == "summary.csv":
            name, k = f"{wanted[p]}_{k}", k + 1
        taken.add(name.lower())
        names[p] = name
    return {p: names[p] for p in photos}
