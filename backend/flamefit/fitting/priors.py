"""Priors and the landmark term shared by the stages, defined once as residuals.

Each prior is a list of (weight w, value v) terms with cost 0.5 sum w |v|^2:
the Levenberg-Marquardt stages (shape.py) stack `as_residuals` (sqrt(w) v) beside the
landmark residuals, the gradient stages (photometric.py) add `as_loss`.

- identity / expression coefficients ~ N(0, 1): 0.5 * w * |c|^2 (FLAME's shapedirs and
  the open head's identity basis are scaled that way; the open head's ARKit units are
  weights in [0, 1]: the same L2 keeps them small, plus a penalty below 0);
- jaw: opening (rotation about +X) allowed in options.jaw_open_range rad, sideways and
  twist kept within +-options.jaw_side_limit; quadratic penalty outside, weight `jaw_prior`;
- neck: 0.5 * w * |neck|^2 (head rotation is carried by the global joint);
- landmarks: 0.5 * sum_l w_l |r_l|^2 / sigma^2 with r in pixels and sigma =
  landmark_sigma x the eye-corner distance, so the weights do not depend on resolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..landmarks import ibug68
from .geometry import JAW, NECK


def coefficient_terms(coeffs: torch.Tensor, weight: float, nonnegative: bool = False) -> list[tuple[float, torch.Tensor]]:
    """Coefficients ~ N(0, 1): weight w on |c|^2 (+ 100 w on |min(c, 0)|^2 for weights that
    must stay >= 0)."""
    terms = [(weight, coeffs)]
    if nonnegative:
        terms.append((100.0 * weight, torch.relu(-coeffs)))
    return terms


def _outside(x, lo, hi):
    return torch.relu(lo - x) + torch.relu(x - hi)


def jaw_terms(jaw: torch.Tensor, options) -> list[tuple[float, torch.Tensor]]:
    """(B, 3) jaw rotation: zero inside the allowed range, the distance outside it, x100 jaw_prior."""
    weight, (lo, hi), side = options.jaw_prior, options.jaw_open_range, options.jaw_side_limit
    return [(100.0 * weight, _outside(jaw[:, :1], lo, hi)), (100.0 * weight, _outside(jaw[:, 1:], -side, side))]


def neck_terms(neck: torch.Tensor, weight: float) -> list[tuple[float, torch.Tensor]]:
    return [(weight, neck)]


def pose_terms(pose: torch.Tensor, options) -> list[tuple[float, torch.Tensor]]:
    return jaw_terms(pose[:, JAW], options) + neck_terms(pose[:, NECK], options.neck_prior)


def as_residuals(terms) -> list[torch.Tensor]:
    """Residual blocks sqrt(w) v, cost 0.5 |r|^2 (the Levenberg-Marquardt stages)."""
    return [math.sqrt(w) * v for w, v in terms]


def as_loss(terms) -> torch.Tensor:
    """The same cost as a loss, 0.5 sum w |v|^2 (the gradient-descent stages)."""
    return sum(0.5 * w * (v ** 2).sum() for w, v in terms)


def landmark_weights(reliability, contour_weight: float, device, dtype=torch.float32) -> torch.Tensor:
    """(68,) per-point weights from the detector's reliability of each point
    (`Detection.weights`; a validity mask for given points; 0: missing).

    Inner face: the reliability itself. Jaw line: `contour_weight` x the detection's
    level (its mean inner-face reliability), not x the detector's own jaw weights: those
    say the same thing as contour_weight (the outline is less precise), and multiplying
    both (mesh path: jaw 0.5 x 0.3-0.5) made AFW's fitted NME worse, 3.90 / 3.57 / 5.52 ->
    3.99 / 3.65 / 5.67 % (all / frontal / turned). So the mesh path (inner 1) fits as
    before, and the posed template at profile (inner 0.3, jaw 0.15) gets 0.3 / 0.15.
    """
    r = np.asarray(reliability, dtype=np.float64)
    inner = r[list(ibug68.INNER_FACE)]
    level = float(inner[inner > 0].mean()) if (inner > 0).any() else 1.0
    w = r.copy()
    jaw = list(ibug68.JAW)
    w[jaw] = np.where(r[jaw] > 0, contour_weight * level, 0.0)
    return torch.as_tensor(w, dtype=dtype, device=device)


def landmark_loss(projected: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """0.5 * sum_l w_l * |p_l - t_l|^2 / sigma^2; projected (1,68,2), target (68,2)."""
    residual = (projected[0] - target) / sigma_px
    return 0.5 * (weights * (residual ** 2).sum(-1)).sum()
