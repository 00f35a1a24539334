"""Where the photometric loss looks: face-skin pixels.

`skin_mask(points, image)` (image space, from the 68 landmarks): the face polygon (jaw
line + the brows raised to mid-forehead) minus the eyes, the brows and the mouth
opening (each slightly dilated), times a skin-colour consistency weight (chromaticity
and brightness close to the cheeks'/nose's robust statistics; hair, beard, glasses
frames and hands get low weight). The photometric stage multiplies it with the
rendered foreground and, when the model has a "face" region, with that region.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..landmarks import ibug68
from ..textures.skin import skin_colour_weight


def _poly(mask, pts, value=1.0):
    pts = np.round(np.asarray(pts) * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    cv2.fillPoly(mask, [pts - 2], value, lineType=cv2.LINE_8, shift=2)  # -2 (=0.5 px): pixel centres


def face_polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 {0,1}: the face skin region from 68 landmarks (crop pixels)."""
    pts = np.asarray(points, dtype=np.float64)
    valid = np.isfinite(pts).all(1)
    a, b = ibug68.OUTER_EYE_CORNERS
    iod = float(np.linalg.norm(pts[a] - pts[b]))
    brows = pts[list(ibug68.RIGHT_BROW) + list(ibug68.LEFT_BROW)]
    eyes_centre = pts[list(ibug68.RIGHT_EYE) + list(ibug68.LEFT_EYE)].mean(0)
    mouth_centre = pts[list(ibug68.OUTER_LIPS)].mean(0)
    up = eyes_centre - mouth_centre
    up = up / max(np.linalg.norm(up), 1e-6)
    raised = brows[::-1] + up * 0.45 * iod
    if valid[list(ibug68.JAW)].all():
        outline = np.concatenate([pts[list(ibug68.JAW)], raised])
    else:  # no jaw line (MediaPipe): the inner points' hull, grown
        inner = pts[list(ibug68.INNER_FACE)]
        centre = inner.mean(0)
        outline = np.concatenate([centre + (inner - centre) * 1.25, raised])
    mask = np.zeros((size, size), np.float32)
    hull = cv2.convexHull(np.asarray(outline, dtype=np.float32)).reshape(-1, 2)
    _poly(mask, hull)
    holes = np.zeros_like(mask)
    for group in (ibug68.RIGHT_EYE, ibug68.LEFT_EYE, ibug68.INNER_LIPS):
        _poly(holes, pts[list(group)])
    for group in (ibug68.RIGHT_BROW, ibug68.LEFT_BROW):  # brows are hair
        brow = pts[list(group)]
        band = np.concatenate([brow + up * 0.12 * iod, (brow - up * 0.08 * iod)[::-1]])
        _poly(holes, band)
    radius = max(1, int(round(0.06 * iod)))
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return mask * (1 - holes)


def skin_weight(image_lin: np.ndarray, points: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(H, W) weight in [0, 1]: how much each pixel's colour looks like this face's skin.

    image_lin: (H, W, 3) linear RGB. Reference: cheeks and nose (inside the face between
    the eyes and the mouth); the estimator is textures/skin.skin_colour_weight.
    """
    pts = np.asarray(points, dtype=np.float64)
    H, W = image_lin.shape[:2]
    ref_region = np.zeros((H, W), np.float32)
    cheeks = pts[[1, 2, 3, 31, 33, 35, 13, 14, 15, 28]]
    cheeks = cheeks[np.isfinite(cheeks).all(1)]  # MediaPipe has no jaw line
    if len(cheeks) < 3:
        return np.ones((H, W), np.float32)
    if len(cheeks) < 7:  # nose only: widen toward the cheeks
        centre = cheeks.mean(0)
        cheeks = centre + (cheeks - centre) * np.array([3.0, 1.5])
    _poly(ref_region, cv2.convexHull(cheeks.astype(np.float32)).reshape(-1, 2))
    return skin_colour_weight(image_lin, ref_region * region > 0.5)


def photometric_mask(points: np.ndarray, image_lin: np.ndarray) -> np.ndarray:
    """(H, W) float32: face polygon x skin-colour weight, for a crop with these landmarks."""
    region = face_polygon_mask(points, image_lin.shape[0])
    return region * skin_weight(image_lin, points, region)
