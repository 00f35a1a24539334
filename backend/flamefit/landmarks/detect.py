"""68-point (iBUG) face landmarks from one photo.

Coordinates: pixels, x right, y down, origin at the image's top-left corner, pixel
(i, j) centred at (j + 0.5, i + 0.5): the renderer's screen frame.

Several faces: they are numbered left to right by the centre of their box
(face_index 0 = leftmost); without face_index the largest box is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FlameFitError
from . import ibug68
from .faces import Face
from .registry import DETECTORS, default_detector

MIN_INTER_OCULAR_PX = 20.0
# Fits any photo size: detectors search downscaled copies, so a bigger photo does not help
# a small face, a closer crop does.
NO_FACE_HINT = ("try a more frontal photo with the face larger in the frame (crop closer to it), "
                "or give the points with --landmarks FILE")


@dataclass
class Detection:
    points: np.ndarray  # (68,2) float64; NaN rows where the detector has no such point
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (continuous pixel coordinates)
    score: float  # the detector's own confidence (scales differ between detectors)
    num_faces: int  # faces found in the image (at or above the detector's min_score)
    face_index: int  # this face's place in the left-to-right order
    detector: str  # which stage found it: "retinaface+mediapipe", "dlib-hog", "dlib-cnn", ...
    dense_points: np.ndarray | None = None  # MediaPipe's (478,2) face mesh, when used
    weights: np.ndarray | None = None  # (68,) reliability 0..1 per point (0 where NaN)
    sources: dict = field(default_factory=dict)  # extra landmark sets: name -> {"points", "weights"}

    def __post_init__(self):
        if self.weights is None:
            self.weights = np.ones(len(self.points))
        self.weights = np.where(self.valid, np.asarray(self.weights, dtype=np.float64), 0.0)

    @property
    def valid(self) -> np.ndarray:
        """(68,) bool: the points this detector provides (MediaPipe alone: no jaw line)."""
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


def _area(face: Face) -> float:
    return (face.box[2] - face.box[0]) * (face.box[3] - face.box[1])


def detect_landmarks(image_rgb: np.ndarray, detector: str | None = None, face_index: int | None = None,
                     image_name: str = "image", photo_size: tuple[int, int] | None = None) -> Detection:
    """Find one face's 68 iBUG points.

    image_rgb: uint8 (H,W,3) RGB, (H,W,4) RGBA or (H,W) grey. detector: a name in
    DETECTORS, default `default_detector()` (retinaface when its packages are installed,
    else dlib). face_index: which face, counted left to right by box centre; default the
    largest (the next largest when the largest is not a human face). Faces scoring below
    the detector's min_score are not counted. Raises FlameFitError when no face is found,
    the index is out of range or the face is too small. photo_size: (width, height) of the
    photo when `image_rgb` is a downscaled copy of it (image.detection_copy), for messages.
    """
    name = detector or default_detector()
    if name not in DETECTORS:
        raise FlameFitError(f"unknown landmark detector '{name}'; choose one of {', '.join(DETECTORS)}")
    finder = DETECTORS[name]()
    image = as_detector_image(image_rgb, image_name)
    rgb = _as_rgb(image)
    found = finder.detect(rgb)
    weak = [f for f in found if f.score < finder.min_score]
    faces = sorted((f for f in found if f.score >= finder.min_score), key=lambda f: (f.box[0] + f.box[2]) / 2)
    if not faces:
        best = f" (best candidate scored {max(f.score for f in weak):.2f}, below the {finder.min_score} needed)" \
            if weak else ""
        width, height = photo_size or (image.shape[1], image.shape[0])
        raise FlameFitError(f"no face found in {image_name} ({width}x{height} px, "
                            f"detector {name}){best}: {NO_FACE_HINT}")
    if face_index is not None and not 0 <= face_index < len(faces):
        raise FlameFitError(f"{image_name}: --face {face_index} is out of range: found {len(faces)} "
                            f"face{'s' if len(faces) != 1 else ''}, numbered 0..{len(faces) - 1} left to right")
    # Largest first (ties: the leftmost); a chosen index is tried alone.
    order = [face_index] if face_index is not None else sorted(range(len(faces)), key=lambda i: (-_area(faces[i]), i))
    refusal = None
    for index in order:
        try:
            face = finder.landmarks(rgb, faces[index])
        except FlameFitError as error:  # e.g. an animal's face
            refusal = refusal or error
            continue
        result = Detection(points=np.asarray(face.points, dtype=np.float64), box=face.box, score=face.score,
                           num_faces=len(faces), face_index=index, detector=face.stage or name,
                           dense_points=face.sources.get("mediapipe478", {}).get("points"),
                           weights=face.weights, sources=face.sources)
        break
    else:
        raise FlameFitError(f"{image_name}: {refusal}")
    if result.inter_ocular < MIN_INTER_OCULAR_PX:
        raise FlameFitError(f"the face in {image_name} is too small: {result.inter_ocular:.0f} px between the "
                            f"outer eye corners, at least {MIN_INTER_OCULAR_PX:.0f} needed; use a "
                            "higher-resolution photo or crop closer to the face")
    return result
