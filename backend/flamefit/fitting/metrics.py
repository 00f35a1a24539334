"""Fit quality figures reported in result.json.

- landmark_error_px: mean distance, in original-image pixels, between the fitted mesh's
  68 landmarks projected by the fitted camera and the detected (or given) ones;
- landmark_error_eye_fraction: the same divided by the detected outer-eye-corner
  distance (iBUG points 36 and 45);
- photometric_error: mean absolute difference per channel (sRGB, [0, 1]) between the
  final render and the photo over the face mask (face polygon from the landmarks x
  rendered foreground, eyes/brows/mouth opening excluded), at the evaluation crop
  resolution (EVAL_RESOLUTION);
- psnr_db: 10 log10(1 / MSE) over the same pixels (sRGB, [0, 1]).
"""

from __future__ import annotations

import numpy as np

from ..landmarks import ibug68

EVAL_RESOLUTION = 256


def landmark_errors(fitted: np.ndarray, detected: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    a, b = ibug68.OUTER_EYE_CORNERS
    error = float(np.linalg.norm(fitted[valid] - detected[valid], axis=1).mean())
    eye = float(np.linalg.norm(detected[a] - detected[b]))
    return error, error / max(eye, 1e-9)


def image_errors(render_srgb: np.ndarray, photo_srgb: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean absolute error, PSNR dB) over mask > 0.5; NaN when the mask is empty."""
    m = mask > 0.5
    if not m.any():
        return float("nan"), float("nan")
    diff = render_srgb[m] - photo_srgb[m]
    mse = float((diff ** 2).mean())
    return float(np.abs(diff).mean()), float(10 * np.log10(1.0 / max(mse, 1e-12)))


def similarity_align(source: np.ndarray, target: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """`points` (default: source itself) moved by the least-squares similarity (Umeyama)
    that takes source onto target."""
    points = source if points is None else points
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    U, S, Vt = np.linalg.svd(t.T @ s)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1.0, 1.0, d])
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / (s ** 2).sum()
    return scale * (points - mu_s) @ R.T + mu_t
