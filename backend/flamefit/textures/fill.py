"""Filling UV maps where they were not seen: the one pull-push of FlameFit (the texture
stage's albedo.png and the texture-space build's mean and basis both use it).

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
