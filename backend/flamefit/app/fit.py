"""`flamefit fit PHOTO [PHOTO ...] -o OUT_DIR`: one person's photos (one or several), one bundle."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import check_output, write_bundle
from ..bundle.writer import check_path_text
from ..errors import FlameFitError
from .session import configure_threads, load_fit_inputs, resolve_device, settings_from


@dataclass
class FitRequest:
    photos: list  # paths, one or more photos of one person
    output: Path
    fit_options: object  # fitting.FitOptions
    landmarks: list | None = None  # None, or one per photo, in order: a file, or DETECT
    detector: str | None = None  # None: landmarks.default_detector()
    face_index: int | None = None
    device: str = "auto"
    overwrite: bool = False
    settings: dict = field(default_factory=dict)


DETECT = "-"  # `--landmarks -`: this photo's points come from the detector


def landmark_sources(given, photos) -> list | None:
    """--landmarks as fit_photos takes them: None (detect every photo), or one entry per photo,
    in the photos' order, a file or None for DETECT. Each file is read here, so a missing or
    unreadable one is refused before anything is written."""
    from ..landmarks import load_landmarks_file

    given = list(given or [])
    if not given:
        return None
    if len(given) != len(photos):
        raise FlameFitError(f"{len(given)} --landmarks file(s) for {len(photos)} photos: give one per photo, "
                            f"in the photos' order ({DETECT} for a photo whose points the detector finds)")
    sources = [None if g == DETECT else g for g in given]
    for path in sources:
        if path is not None:
            load_landmarks_file(path)
    return None if all(s is None for s in sources) else sources


def internal_error(exc: BaseException) -> FlameFitError:
    """An unexpected failure as one line (--debug or FLAMEFIT_DEBUG=1 shows the traceback)."""
    text = str(exc).strip().splitlines()
    return FlameFitError(f"internal error: {type(exc).__name__}: {text[0] if text else ''} "
                         "(run with --debug for the traceback)")


def run_fit(request: FitRequest, progress):
    """Fit and write; (bundle path, FitResult). Everything that can be checked without
    fitting is checked first, and the output folder is claimed (without --overwrite,
    another process writing it makes this one fail at once)."""
    from ..fitting import fit_photos
    from ..image import load_photo

    photos = [Path(p) for p in request.photos]
    for photo in photos:
        check_path_text(photo.absolute(), "photo file")
    landmarks = landmark_sources(request.landmarks, photos)
    target = check_output(request.output, request.overwrite)
    try:
        device = resolve_device(request.device)
        configure_threads()
        settings = settings_from(request.settings)
        start = time.perf_counter()
        loaded = [load_photo(photo) for photo in photos]  # bad photos fail before the model loads
        image_seconds = time.perf_counter() - start
        model, space, model_seconds = load_fit_inputs(settings)
        result = fit_photos(loaded, model, request.fit_options, landmarks=landmarks, detector=request.detector,
                            face_index=request.face_index, texture_space=space, device=device, progress=progress)
        result.timings["image"] = round(result.timings.get("image", 0.0) + image_seconds, 3)
        path = write_bundle(result, target, request.overwrite, progress, extra_timings={"model": model_seconds},
                            final=True)
    except BaseException:
        target.abandon()
        raise
    return path, result
