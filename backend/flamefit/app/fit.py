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
    landmarks: list | None = None  # None, or one file per photo, in order
    detector: str | None = None  # None: landmarks.default_detector()
    face_index: int | None = None
    device: str = "auto"
    overwrite: bool = False
    settings: dict = field(default_factory=dict)


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
    landmarks = list(request.landmarks or [])
    if landmarks and len(landmarks) != len(photos):
        raise FlameFitError(f"{len(landmarks)} --landmarks file(s) for {len(photos)} photos: give one per photo, "
                            "in the photos' order")
    for photo in photos:
        check_path_text(photo.absolute(), "photo file")
    target = check_output(request.output, request.overwrite)
    try:
        device = resolve_device(request.device)
        configure_threads()
        settings = settings_from(request.settings)
        start = time.perf_counter()
        loaded = [load_photo(photo) for photo in photos]  # bad photos fail before the model loads
        image_seconds = time.perf_counter() - start
        model, space, model_seconds = load_fit_inputs(settings)
        result = fit_photos(loaded, model, request.fit_options, landmarks=landmarks or None, detector=request.detector,
                            face_index=request.face_index, texture_space=space, device=device, progress=progress)
        result.timings["image"] = round(result.timings.get("image", 0.0) + image_seconds, 3)
        path = write_bundle(result, target, request.overwrite, progress, extra_timings={"model": model_seconds},
                            final=True)
    except BaseException:
        target.abandon()
        raise
    return path, result
