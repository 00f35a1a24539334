"""Landmarks stage: the photo's 68 landmarks, from the detector or from points in a file
/ given by the caller, with the detector's reliability of each point (the photo itself:
photo_stage.py; the crop, frame, rig and state built from the points: fit_setup.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from ..image import Photo
from ..landmarks.detect import check_face_size
from .context import FitContext, Stage


class LandmarksStage(Stage):
    name = "landmarks"

    def run(self, ctx: FitContext) -> None:
        for view in ctx.views:
            view.points, view.weights, view.detection = weighted_landmarks(view.photo, view.landmarks_source,
                                                                        ctx.detector, ctx.face_index)
            view.valid = np.isfinite(view.points).all(1)


def find_landmarks(photo: Photo, landmarks=None, detector: str | None = None, face_index=None) -> tuple[np.ndarray, dict]:
    """(68, 2) points in original pixels and a description of where they came from."""
    points, _, detection = weighted_landmarks(photo, landmarks, detector, face_index)
    return points, detection


def weighted_landmarks(photo: Photo, landmarks=None, detector: str | None = None,
                       face_index=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(68, 2) points in original pixels, (68,) reliability of each (the detector's
    `Detection.weights`; 1 for given points, 0 where missing) and where they came from.
    The fit's landmark weights come from it (priors.landmark_weights): before, only
    validity reached the fit, and the posed template at profile (weights 0.3 / 0.15) was
    fitted as firmly as the mesh path's points."""
    if landmarks is not None:
        from ..landmarks import load_landmarks_file

        points = np.asarray(load_landmarks_file(landmarks) if isinstance(landmarks, (str, Path)) else landmarks,
                            dtype=np.float64)
        if points.shape != (68, 2):
            raise FlameFitError(f"expected 68 landmarks of (x, y), got shape {points.shape}")
        finite = np.isfinite(points).all(1)
        inside = finite & (points[:, 0] >= -0.5 * photo.width) & (points[:, 0] <= 1.5 * photo.width) \
            & (points[:, 1] >= -0.5 * photo.height) & (points[:, 1] <= 1.5 * photo.height)
        if not inside[finite].all() or finite.sum() < 20:
            raise FlameFitError(f"the landmarks do not lie on {photo.path.name} ({photo.width}x{photo.height} px): "
                                "wrong file, or coordinates for another image size?")
        # The detectors' size rule, on the points' extent.
        check_face_size(float((points[finite].max(0) - points[finite].min(0)).max()), photo.path.name)
        return points, finite.astype(np.float64), {
            "source": "file" if isinstance(landmarks, (str, Path)) else "given",
            "path": str(landmarks) if isinstance(landmarks, (str, Path)) else None}
    from ..image import detection_copy
    from ..landmarks import detect_landmarks

    small, scale = detection_copy(photo.rgb)  # a huge photo: detect on a downscaled copy (#11.6)
    found = detect_landmarks(small, detector=detector, face_index=face_index, image_name=photo.path.name,
                             photo_size=(photo.width, photo.height))
    candidates = [{**c, "box": [round(v / scale, 1) for v in c["box"]]} for c in found.choice["candidates"]]
    return found.points.astype(np.float64) / scale, np.asarray(found.weights, np.float64), {
        "source": "detector", "detector": found.detector, "num_faces": found.num_faces,
        "face_index": found.face_index, "box": [float(v) / scale for v in found.box], "score": float(found.score),
        "enlarged": float(found.enlarged), "choice": {"reason": found.choice["reason"], "candidates": candidates}}


