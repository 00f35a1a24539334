"""The face detectors by name: the CLI's --detector choices, `flamefit models` and the
bundle schema's detector list are built from DETECTORS.

Adding a detector: a FaceDetector subclass in its own module, and one line below.
"""

from __future__ import annotations

from .dlib_detector import DlibDetector
from .faces import FaceDetector
from .optional_detectors import FaceAlignmentDetector, MediaPipeDetector
from .retinaface_detector import RetinaFaceDetector

DETECTORS: dict[str, type[FaceDetector]] = {cls.name: cls for cls in (
    RetinaFaceDetector, DlibDetector, FaceAlignmentDetector, MediaPipeDetector)}
# The default is the first of these whose packages are installed.
DEFAULT_ORDER = ("retinaface", "dlib")


def default_detector() -> str:
    for name in DEFAULT_ORDER:
        if not DETECTORS[name].missing():
            return name
    return DEFAULT_ORDER[-1]  # its own error then names what to install


def describe() -> list[dict]:
    """One entry per detector for `flamefit models`: name, summary, installed or what to run."""
    default = default_detector()
    return [{"name": name, "default": name == default, "summary": cls.summary,
             "min_score": cls.min_score, "missing": cls.missing(), "install": cls.install}
            for name, cls in DETECTORS.items()]
