"""Jobs as data (issue #21): `batch` and `texture-space build` plan a list of PhotoJobs,
an executor (app/executors.py) runs each with one function, and the driver writes what
comes back; summary.csv and the build's work folder are rebuilt from what is on disk, so
a resumed or interrupted run agrees whatever executed the jobs.

A worker on the driver's machine reads the photo itself (`data` is None); a Ray worker
may not share the driver's disk, so the driver reads the photo and its landmark sidecar
(`read_data`, one job at a time as it sends them) and the worker fits a private copy
(`local_files`) with the same names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlameFitError
from ..fsutil import process_temp_folder, require_regular_file

COPY_PREFIX = "flamefit-job-"
NODE: list = [None]  # in a Ray worker: its node id (set by ray_executor); else the host name is used


def worker_name() -> str:
    """Who ran a job, for summary.csv's `worker` column: `<ray node id>:<pid>` on Ray,
    `<host>:<pid>` on this machine."""
    return f"{NODE[0] or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class PhotoJob:
    photo: str  # the photo as listed on the driver (summary.csv)
    resolved: str  # its resolved path on the driver: what the bundle records
    landmarks: str | None  # its sidecar landmarks file (photos.sidecar_landmarks), or None
    target: str  # the bundle folder (batch) or the photo's id in the work folder (build)
    overwrite: bool = False


@dataclass(frozen=True)
class SubjectJob:
    """Several photos of one person, one bundle (`batch --subjects`: fitting.fit_photos)."""

    photo: str  # the person's folder as listed on the driver (summary.csv's photo column)
    views: tuple[PhotoJob, ...]  # the photos, the reference first
    target: str  # the bundle folder
    overwrite: bool = False


@dataclass(frozen=True)
class PhotoData:
    """What a worker that does not share the driver's disk is sent with a job."""

    photo: bytes
    landmarks: bytes | None
    sha256: str  # of `photo`: checked by the worker, so a damaged transfer is one photo's failure


def read_data(job: PhotoJob) -> PhotoData:
    """The photo's (and its sidecar's) bytes, read by the driver; FlameFitError if unreadable."""
    try:
        photo = require_regular_file(job.photo, "photo").read_bytes()
        landmarks = require_regular_file(job.landmarks, "landmarks file").read_bytes() if job.landmarks else None
    except OSError as exc:
        raise FlameFitError(f"{exc.filename or job.photo}: cannot read it ({exc.strerror or exc})") from None
    return PhotoData(photo, landmarks, hashlib.sha256(photo).hexdigest())


def read_subject_data(job: SubjectJob) -> tuple[PhotoData, ...]:
    return tuple(read_data(view) for view in job.views)


@contextmanager
def local_files(job: PhotoJob, data: PhotoData | None):
    """(photo path, landmarks path or None) to fit on this worker: the driver's own files
    when it was sent none, else a private copy with the same file names (removed after;
    one of a killed worker by a later job)."""
    if data is None:
        yield Path(job.photo), (Path(job.landmarks) if job.landmarks else None)
        return
    if hashlib.sha256(data.photo).hexdigest() != data.sha256:
        raise FlameFitError(f"{Path(job.photo).name}: the photo's bytes arrived damaged (SHA-256 differs)")
    folder = process_temp_folder(COPY_PREFIX)
    try:
        photo = folder / Path(job.photo).name
        photo.write_bytes(data.photo)
        landmarks = None
        if job.landmarks and data.landmarks is not None:
            landmarks = folder / Path(job.landmarks).name
            landmarks.write_bytes(data.landmarks)
        yield photo, landmarks
    finally:
        shutil.rmtree(folder, ignore_errors=True)
