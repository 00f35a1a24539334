"""Exposure and white balance made comparable across photos.

A de-lit albedo is known only up to the light's colour and strength: the camera's
exposure and white balance, and the part of the light the fit could not tell from
albedo, scale each photo's albedo by an unknown gain per channel. `normalise_gains`
estimates each photo's gain against the mean albedo on the texels it sees (least
squares x ~ g * mean, a few rounds of gains and mean): the start of the PCA, which then
refits every gain against the photo's own rank-K reconstruction (pca.weighted_pca,
gains=...), so that a photo that sees only part of the face, or whose albedo differs
from the mean, gets the right gain. Gains have a geometric mean of 1: the space keeps
the average photo's level.

Consequence (documented in the space's metadata): variation of a whole face's albedo in
proportion to the mean (overall skin tone) cannot be told apart from exposure/white
balance, and is removed together with it. Use mode "none" for photos taken under one
controlled light and camera.
"""

from __future__ import annotations

import numpy as np

MODES = ("none", "exposure", "white-balance")


def weighted_mean(X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-texel weighted mean (P, C) and coverage (P,); unseen texels get the global mean."""
    coverage = W.sum(0, dtype=np.float64)
    total = np.einsum("np,npc->pc", W, X, dtype=np.float64)
    seen = coverage > 1e-6
    mean = np.empty(X.shape[1:], np.float64)
    mean[seen] = total[seen] / coverage[seen, None]
    mean[~seen] = mean[seen].mean(0) if seen.any() else 0.0
    return mean.astype(np.float32), coverage.astype(np.float32)


def normalise_gains(X: np.ndarray, W: np.ndarray, mode: str = "white-balance", rounds: int = 3):
    """Divide each photo by its gain; returns (X normalised, gains (N, 3))."""
    if mode not in MODES:
        raise ValueError(f"normalisation must be one of {MODES}, got {mode!r}")
    N, _, C = X.shape
    gains = np.ones((N, C), np.float64)
    if mode == "none":
        return X, gains
    Xn = X.copy()
    for _ in range(rounds):
        mean, _ = weighted_mean(Xn, W)
        num = np.einsum("np,npc,pc->nc", W, X, mean, dtype=np.float64)
        den = np.einsum("np,pc->nc", W, mean.astype(np.float64) ** 2)
        if mode == "exposure":
            num, den = num.sum(1, keepdims=True), den.sum(1, keepdims=True)
        g = np.where(den > 1e-9, num / np.maximum(den, 1e-12), 1.0)
        g = np.clip(g, 1e-3, None)
        g = g / np.exp(np.log(g).mean(0, keepdims=True))
        gains = np.broadcast_to(g, (N, C)).copy()
        Xn = (X / gains[:, None, :]).astype(np.float32)
    return Xn, gains
