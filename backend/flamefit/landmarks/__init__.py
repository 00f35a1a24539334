"""Face landmarks: 68-point (iBUG) detection on a photo and landmark files."""

from . import ibug68
from .detect import Detection, detect_landmarks
from .io import load_landmarks_file, save_landmarks_file
from .registry import DETECTORS, default_detector

__all__ = ["DETECTORS", "Detection", "default_detector", "detect_landmarks", "ibug68", "load_landmarks_file",
           "save_landmarks_file"]
