"""Filling UV maps where they were not seen, one way each (the texture stage's
albedo.png and the texture-space build both use them):

- `mirror_fill`: a poorly seen texel takes in its mirror texel's value;
- `pull_push`: what is still unseen, from the neighbourhood.

Pull: weighted averages down a pyramid (halving, weight-weighted); push: back up, each
level keeping its own values where it is confident (weight at the finest level, 4 x the
averaged weight above) and taking the bilinear upsampling of the coarser level
elsewhere. Seen texels keep their values (weight 1); holes fill smoothly, without seams
or streaks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_ROWS = 64  # maps processed at once by mirror_fill


def mirror_fill(X: np.ndarray, W: np.ndarray, mirror: np.ndarray, strength: float = 0.5):
    """Fill poorly seen texels from their mirror texels (left/right symmetry of faces).

    X (N, P, C) values of N maps at P texels, W (N, P) their weights in [0, 1].
    mirror: (P,) index of each texel's mirror image (-1: none). The mirrored value enters
    as an extra observation with weight strength * W[mirror]; the result is the weighted
    average and the weights add (capped at 1). Returns new (X, W).
    """
    valid = mirror >= 0
    src = np.where(valid, mirror, 0)
    Xn = np.empty(X.shape, np.float32)
    Wn = np.empty(W.shape, np.float32)
    for start in range(0, len(X), _ROWS):  # bounded temporaries for thousands of photos
        rows = slice(start, start + _ROWS)
        w, x = W[rows], X[rows]
        wm = np.where(valid[None], w[:, src], 0.0) * strength
        wm = np.minimum(wm, np.maximum(0.0, 1.0 - w))  # only fill what is missing
        total = w + wm
        with np.errstate(invalid="ignore", divide="ignore"):
            Xn[rows] = np.where(total[..., None] > 0, (w[..., None] * x + wm[..., None] * x[:, src]) / total[..., None], x)
        Wn[rows] = np.clip(total, 0, 1)
    return Xn, Wn


def pull_push(maps: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """maps (..., H, W) filled where weight (H, W) in [0, 1] is low; float32."""
    H, W = weight.shape
    values = torch.from_numpy(np.ascontiguousarray(maps, np.float32)).reshape(1, -1, H, W)
    w = torch.from_numpy(np.ascontiguousarray(weight, np.float32))[None, None]
    levels = []
    c = values * w
    while True:
        levels.append((c, w))
        if w.shape[-2] <= 1 and w.shape[-1] <= 1:
            break
        c, w = F.avg_pool2d(c, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)
    out = None
    for depth, (c, w) in enumerate(reversed(levels)):
        mean = c / w.clamp(min=1e-8)
        if out is None:
            out = mean
            continue
        conf = w if depth == len(levels) - 1 else (4.0 * w).clamp(0.0, 1.0)
        up = F.interpolate(out, size=w.shape[-2:], mode="bilinear", align_corners=False)
        out = mean * conf + up * (1 - conf)
    return out.reshape(maps.shape).numpy()
