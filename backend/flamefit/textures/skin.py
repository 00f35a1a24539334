"""Skin colour, one estimator for both users: the photometric mask (fitting/masks.py,
photo pixels against the cheeks') and the unwrap (textures/unwrap.py, de-lit texels
against the face core's). It lives here, the lower of the two layers."""

from __future__ import annotations

import numpy as np

MIN_REFERENCE = 20  # fewer reference colours than this: no estimate (all ones)


def skin_colour_weight(colours: np.ndarray, reference: np.ndarray, brightness: float = 0.2,
                       tolerance: float = 27 ** 0.5) -> np.ndarray:
    """(...) float32 in [0, 1]: how much each linear RGB colour (..., 3) looks like this
    face's skin, the `reference` colours ((...) bool, e.g. the cheeks' pixels).

    Robust median / MAD of chromaticity (r, g) and log brightness over the reference, each
    MAD widened by a floor (chromaticity 0.004, log brightness `brightness`); weight 1
    within `tolerance` MADs, then a Gaussian fall-off. The defaults suit a photo's shaded
    pixels (brightness varies with the light, so it counts little); de-lit albedo uses
    tighter ones (textures/unwrap.py) against dark hair. Hair, beard, glasses frames,
    hands and background get low weight.
    """
    total = np.maximum(colours.sum(-1), 0) + 1e-4  # unseen texels may hold negative albedo
    # Log brightness in twentieths (its floor too): the photometric mask's arithmetic, bit for bit.
    features = np.concatenate([colours[..., :2] / total[..., None], np.log(total)[..., None] * 0.05], axis=-1)
    samples = features[reference]
    if len(samples) < MIN_REFERENCE:
        return np.ones(colours.shape[:-1], np.float32)
    median = np.median(samples, axis=0)
    mad = np.median(np.abs(samples - median), axis=0) * 1.4826 + np.array([0.004, 0.004, brightness / 20])
    d2 = (((features - median) / mad) ** 2).sum(-1)
    return np.exp(-0.5 * np.clip(d2 - tolerance ** 2, 0, None) / 9.0).astype(np.float32)


def skin_hue(colours: np.ndarray) -> np.ndarray:
    """(...) float32 in [0, 1]: a skin-like hue, red >= green and red > blue (no grass,
    sky or blue shirts; a grey colour has none). For de-lit albedo, where white balance
    is known; a photo's own pixels may be tinted."""
    total = np.maximum(colours.sum(-1), 1e-4)
    r, g, b = np.moveaxis(colours / total[..., None], -1, 0)
    return (smoothstep(r - g, -0.02, 0.02) * smoothstep(r - b, 0.0, 0.04)).astype(np.float32)


def smoothstep(x, lo, hi):
    """0 below lo, 1 above hi, a smooth cubic between (numpy arrays or torch tensors)."""
    t = ((x - lo) / (hi - lo)).clip(0, 1)
    return t * t * (3 - 2 * t)
