"""68-point (iBUG) face landmarks from one photo.

Coordinates: pixels, x right, y down, origin at the image's top-left corner, pixel
(i, j) centred at (j + 0.5, i + 0.5): the renderer's screen frame.

Several faces: they are numbered left to right by the centre of their box
(face_index 0 = leftmost); without face_index the largest box is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FlameFitError
from . import dlib_detector, ibug68, optional_detectors

DETECTORS = ("dlib", "face-alignment", "mediapipe")
MIN_INTER_OCULAR_PX = 20.0
NO_FACE_HINT = "try a larger, more frontal photo, or give the points with --landmarks FILE"


@dataclass
class Detection:
    points: np.ndarray  # (68,2) float64; NaN rows where the detector has no such point
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (continuous pixel coordinates)
    score: float  # the detector's own confidence (scales differ between detectors)
    num_faces: int  # faces found in the image
    face_index: int  # this face's place in the left-to-right order
    detector: str  # which stage found it: "dlib-hog", "dlib-hog-upsample1", "dlib-cnn", ...
    dense_points: np.ndarray | None = None  # MediaPipe's (478,2) face mesh, when used

    @property
    def valid(self) -> np.ndarray:
        """(68,) bool: the points this detector provides (MediaPipe: no jaw line)."""
        return np.isfinite(self.points).all(axis=1)

    @property
    def inter_ocular(self) -> float:
        """Distance between the outer eye corners 36 and 45, in pixels."""
        a, b = ibug68.OUTER_EYE_CORNERS
        return float(np.linalg.norm(self.points[a] - self.points[b]))


def as_detector_image(image: np.ndarray, image_name: str = "image") -> np.ndarray:
    """uint8 grey (H,W) or RGB (H,W,3), C-contiguous; RGBA loses its alpha."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise FlameFitError(f"{image_name}: expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or min(image.shape[:2]) < 1:
        raise FlameFitError(f"{image_name}: expected a grey, RGB or RGBA image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2)) if image.ndim == 2 else image


def _choose(faces: list[dict], face_index: int | None, image_name: str) -> tuple[int, dict]:
    faces = sorted(faces, key=lambda f: (f["box"][0] + f["box"][2]) / 2)
    if face_index is None:
        areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
        index = int(np.argmax(areas))  # ties: the leftmost
    elif 0 <= face_index < len(faces):
        index = face_index
    else:
        raise FlameFitError(f"{image_name}: --face {face_index} is out of range: found {len(faces)} "
                            f"face{'s' if len(faces) != 1 else ''}, numbered 0..{len(faces) - 1} left to right")
    return index, faces[index]


def _dlib_faces(image: np.ndarray) -> tuple[list[dict], str]:
    boxes, stage = dlib_detector.find_faces(image)
    return [{"box": box, "score": score} for box, score in boxes], stage


def detect_landmarks(image_rgb: np.ndarray, detector: str = "dlib", face_index: int | None = None,
                     image_name: str = "image") -> Detection:
    """Find one face's 68 iBUG points.

    image_rgb: uint8 (H,W,3) RGB, (H,W,4) RGBA or (H,W) grey. detector: "dlib"
    (default, offline), "face-alignment" (needs its weights already in the torch hub
    cache) or "mediapipe" (optional package; jaw points NaN, 478-point mesh in
    dense_points). face_index: which face, counted left to right; default the largest.
    Raises FlameFitError when no face is found, the index is out of range or the face
    is too small.
    """
    image = as_detector_image(image_rgb, image_name)
    if detector == "dlib":
        faces, stage = _dlib_faces(image)
    elif detector == "face-alignment":
        faces, stage = optional_detectors.face_alignment_faces(_as_rgb(image)), "face-alignment"
    elif detector == "mediapipe":
        faces, stage = optional_detectors.mediapipe_faces(_as_rgb(image)), "mediapipe"
    else:
        raise FlameFitError(f"unknown landmark detector '{detector}'; choose one of {', '.join(DETECTORS)}")
    if not faces:
        raise FlameFitError(f"no face found in {image_name} ({image.shape[1]}x{image.shape[0]} px, "
                            f"detector {detector}): {NO_FACE_HINT}")
    index, face = _choose(faces, face_index, image_name)
    points = face["points"] if "points" in face else dlib_detector.predict_points(image, face["box"])
    found = Detection(points=points, box=face["box"], score=face["score"], num_faces=len(faces),
                      face_index=index, detector=stage, dense_points=face.get("dense_points"))
    if found.inter_ocular < MIN_INTER_OCULAR_PX:
        raise FlameFitError(f"the face in {image_name} is too small: {found.inter_ocular:.0f} px between the "
                            f"outer eye corners, at least {MIN_INTER_OCULAR_PX:.0f} needed; use a "
                            "higher-resolution photo or crop closer to the face")
    return found
