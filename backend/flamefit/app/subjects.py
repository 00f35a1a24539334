"""`flamefit batch --subjects PEOPLE_DIR -o OUT` (issue #19.1): PEOPLE_DIR holds one
sub-folder of photos per person; each person is fitted from all their photos at once
(fitting.fit_photos: one identity and albedo) into one bundle OUT/<folder name>.

The bookkeeping is batch's (app/batch.py: summary.csv, --resume, --overwrite, the
executors); what differs is what a bundle belongs to: a person's bundle is "the same"
when it records the same photo file names with the same SHA-256s (a bundle without the
digests: the same names); a person whose photos changed (added, removed, edited) is
refitted only with --overwrite.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..bundle.reader import fitted_photos
from ..errors import FlameFitError
from ..fsutil import file_sha256
from .jobs import PhotoJob, SubjectJob
from .photos import list_photos, sidecar_landmarks


def list_people(folder: Path, exclude=()) -> list[Path]:
    """The sub-folders of `folder` (no hidden ones, not `exclude`), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlameFitError(f"{folder}: folder of people not found" if not folder.exists() else f"{folder}: not a folder")
    excluded = {Path(p).absolute() for p in exclude}
    try:
        people = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.absolute() not in excluded), key=lambda p: p.name)
    except OSError as exc:
        raise FlameFitError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    if not people:
        raise FlameFitError(f"{folder}: no sub-folders; with --subjects each person's photos are in a folder of "
                            "their own (PEOPLE_DIR/NAME/*.jpg)")
    return people


def people_names(people: list[Path]) -> dict[Path, str]:
    """Person folder -> bundle name: the folder's name, made unique case-insensitively."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for person in sorted(people, key=lambda p: p.name):
        base = re.sub(r"[\x00-\x1f/\\]", "_", person.name).lstrip(".") or "person"
        name, k = base, 2
        while name.lower() in taken or name.lower() == "summary.csv":
            name, k = f"{base}_{k}", k + 1
        taken.add(name.lower())
        names[person] = name
    return names


def subject_job(person: Path, bundle: Path, overwrite: bool) -> SubjectJob:
    """The person's photos as one job (FlameFitError: a folder without photos)."""
    views = tuple(PhotoJob(photo=str(p), resolved=str(p.resolve()), target=str(bundle), overwrite=overwrite,
                           landmarks=str(sidecar_landmarks(p)) if sidecar_landmarks(p) else None)
                  for p in list_photos(person))
    return SubjectJob(photo=str(person), views=views, target=str(bundle), overwrite=overwrite)


def owner(person: Path, bundle: Path) -> tuple[str, str]:
    """("same" | "changed", what the bundle was fitted to) for a person's existing bundle."""
    recorded = fitted_photos(bundle)
    fitted = sorted((Path(str(r.get("path", ""))).name, r.get("sha256")) for r in recorded)
    photos = list_photos(person)
    if [name for name, _ in fitted] != sorted(p.name for p in photos):
        return "changed", ", ".join(name for name, _ in fitted)
    digests = {p.name: file_sha256(p) for p in photos}
    if all(digest is None or digest == digests[name] for name, digest in fitted):
        return "same", ""
    return "changed", "earlier versions of these photos"
