"""Face landmarks: 68-point (iBUG) detection on a photo and landmark files."""

from . import ibug68
from .detect import DETECTORS, Detection, detect_landmarks
from .io import load_landmarks_file, save_landmarks_file

__all__ = ["DETECTORS", "Detection", "detect_landmarks", "ibug68", "load_landmarks_file", "save_landmarks_file"]
