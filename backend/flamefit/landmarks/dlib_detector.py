"""dlib: HOG face detector (upsampling when it finds nothing), the MMOD CNN detector as
a last resort, and the 68-point shape predictor. Models come from the
face_recognition_models package, so this works offline.

dlib's coordinates are integer pixel indices; FlameFit puts pixel (i, j)'s centre at
(j + 0.5, i + 0.5), so points get +0.5 and a rectangle [left..right] covers the
continuous span [left, right + 1).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from .faces import Face, FaceDetector

# Upsampling doubles each side; stop before the upsampled image gets huge.
MAX_UPSAMPLED_SIDE = 2400
UPSAMPLE_LEVELS = (0, 1, 2)
# The CNN detector is slow (~2 s for 512x512 on one core): run it on a reduced copy.
CNN_MAX_SIDE = 800
# dlib reports every window scoring above 0; spurious ones score far below the real face
# (astronaut upsampled: 0.06 and 0.12 beside 1.2), so drop those under this share of the best.
WEAK_SHARE_OF_BEST = 0.2


def _models_dir() -> Path:
    # face_recognition_models' own locator imports pkg_resources, gone from recent
    # setuptools; find the package folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FlameFitError("the dlib detector needs the face_recognition_models package "
                            "(pip install face_recognition_models), or pass --landmarks FILE")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_file(name: str) -> str:
    path = _models_dir() / name
    if not path.is_file():
        raise FlameFitError(f"{path}: dlib model file missing; reinstall face_recognition_models")
    return str(path)


def _dlib():
    try:
        import dlib
    except ImportError:
        raise FlameFitError("the dlib detector needs dlib (pip install dlib-bin), "
                            "or pass --landmarks FILE") from None
    return dlib


@functools.lru_cache(maxsize=None)
def _hog_detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _cnn_detector():
    return _dlib().cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))


@functools.lru_cache(maxsize=None)
def _shape_predictor():
    return _dlib().shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))


def _box(rect, scale=1.0) -> tuple[float, float, float, float]:
    """dlib rectangle (inclusive pixel indices) -> continuous (x0, y0, x1, y1)."""
    return (rect.left() / scale, rect.top() / scale, (rect.right() + 1) / scale, (rect.bottom() + 1) / scale)


def _drop_weak(faces):
    best = max((score for _, score in faces), default=0.0)
    return [(box, score) for box, score in faces if score >= WEAK_SHARE_OF_BEST * best]


def find_faces(image: np.ndarray) -> tuple[list[tuple[tuple, float]], str]:
    """Face boxes with scores, and which stage found them ("" and [] when none).

    `image` is uint8 grey (H,W) or RGB (H,W,3), C-contiguous.
    """
    hog = _hog_detector()
    longest = max(image.shape[:2])
    for level in UPSAMPLE_LEVELS:
        if level and longest * 2**level > MAX_UPSAMPLED_SIDE:
            break
        rects, scores, _ = hog.run(image, level, 0.0)
        if len(rects):
            stage = "dlib-hog" + (f"-upsample{level}" if level else "")
            return _drop_weak([(_box(r), float(s)) for r, s in zip(rects, scores)]), stage
    import cv2

    scale = min(1.0, CNN_MAX_SIDE / longest)
    small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = _cnn_detector()(np.ascontiguousarray(small), 1 if max(small.shape[:2]) <= CNN_MAX_SIDE // 2 else 0)
    faces = _drop_weak([(_box(d.rect, scale), float(d.confidence)) for d in found])
    return faces, ("dlib-cnn" if faces else "")


def predict_points(image: np.ndarray, box) -> np.ndarray:
    """The 68 iBUG points (68,2) inside a continuous box, FlameFit pixel convention."""
    dlib = _dlib()
    x0, y0, x1, y1 = box
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    shape = _shape_predictor()(image, rect)
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


class DlibDetector(FaceDetector):
    name = "dlib"
    summary = ("dlib HOG (CNN when HOG finds nothing) + its 68-point predictor; offline; frontal "
               "faces; the 68-point model is non-commercial (300-W terms)")
    packages = ("dlib", "face_recognition_models")
    install = "pip install dlib-bin face_recognition_models"
    # HOG scores of real faces on AFW photos 100-185: 156 of 157 at or above 0.18; the weak
    # false positive of issue 11.11 (a shoulder patch) scored 0.12.
    min_score = 0.15

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        boxes, stage = find_faces(image_rgb)
        return [Face(box=box, score=score, stage=stage) for box, score in boxes]

    def landmarks(self, image_rgb: np.ndarray, face: Face) -> Face:
        if face.points is None:
            face.points = predict_points(image_rgb, face.box)
        return face
