"""One UV albedo from several photos' de-lit unwraps (the texture stage of a fit of
several photos).

Each view k brings, per texel, its de-lit albedo a_k (the photo / its own fitted SH
light, so each photo's shading and exposure are explained by its own light) and a
confidence c_k in [0, 1] (visible x viewing-angle ramp x not in deep shadow), plus the
texel's detail in that photo (photo pixels per metre of surface there). The merge:

1. colour match: a view's gain per channel toward the reference view (the first), the
   median ratio over texels both see well (bounded; no shared texels: gain 1);
2. feathering: c_k fades to 0 over `feather` texels toward the edge of the region the
   view sees (a distance transform in UV; a chart's border in the layout is no such
   edge), so where one view's coverage ends its weight has already gone smoothly to 0
   and no seam appears;
3. blend: w_k = feathered c_k^2 x (detail_k / the best detail at that texel); albedo =
   sum w_k a_k / sum w_k (a weighted average everywhere, never a switch).

The merged confidence is the best view's (unfeathered: what the photos saw); the mirror
and pull-push fills take the best feathered confidence, so the seen region fades into
the fill instead of ending at an edge (an occlusion edge, e.g. the jaw over the neck, is
sharp in every view's own confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class MergeOptions:
    feather: float = 0.05  # fade width, as a fraction of the texture size (51 texels at 1024)
    overlap_confidence: float = 0.5  # texels both views see at least this well set the gains
    min_overlap: int = 200  # fewer shared texels: no colour match for that view
    gain_range: tuple[float, float] = (0.67, 1.5)


def feathered(confidence: np.ndarray, index: np.ndarray, size: int, width: float) -> np.ndarray:
    """(M,) confidence at the texels `index` of a size x size map, faded to 0 over `width`
    texels toward the edge of the seen region: covered texels the view does not see. A
    chart's border in the layout is no such edge (the surface, and what the view sees of
    it, goes on in the next chart), so texels outside `index` count as seen."""
    seen = np.ones(size * size, np.uint8)
    seen[index] = confidence > 0.05
    distance = cv2.distanceTransform(seen.reshape(size, size), cv2.DIST_L2, 3).reshape(-1)[index]
    ramp = np.clip(distance / max(width, 1.0), 0.0, 1.0)
    return confidence * ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep


def colour_gains(albedos: list[np.ndarray], confidences: list[np.ndarray], options: MergeOptions) -> list[np.ndarray]:
    """(3,) gain of each view's albedo toward the first view's, per channel."""
    gains = [np.ones(3, np.float32)]
    lo, hi = options.gain_range
    for albedo, confidence in zip(albedos[1:], confidences[1:]):
        both = (confidence > options.overlap_confidence) & (confidences[0] > options.overlap_confidence)
        if both.sum() < options.min_overlap:
            gains.append(np.ones(3, np.float32))
            continue
        ratio = np.median(albedos[0][both], axis=0) / np.maximum(np.median(albedo[both], axis=0), 1e-4)
        gains.append(np.clip(ratio, lo, hi).astype(np.float32))
    return gains


def merge_views(albedos: list[np.ndarray], confidences: list[np.ndarray], details: list[np.ndarray],
                index: np.ndarray, size: int, options: MergeOptions | None = None):
    """albedos (M, 3), confidences (M,), details (M,) per view at the texels `index` of a
    size x size map -> (albedo (M, 3), confidence (M,): the best view's, fill weight
    (M,): the best feathered confidence, for the mirror and pull-push fills so the seen
    region fades into them instead of ending at an edge)."""
    options = options or MergeOptions()
    gains = colour_gains(albedos, confidences, options)
    best = np.maximum(np.max(np.stack(details), axis=0), 1e-9)
    width = options.feather * size
    faded = [feathered(c, index, size, width) for c in confidences]
    # A faint unfeathered share decides where every view is at its edge (all feathered to 0).
    weights = np.stack([(f ** 2 + 1e-3 * c ** 2) * (d / best) for f, c, d in zip(faded, confidences, details)])
    total = weights.sum(0)
    merged = sum(w[:, None] * a * g for w, a, g in zip(weights, albedos, gains))
    with np.errstate(invalid="ignore", divide="ignore"):
        albedo = np.where(total[:, None] > 0, merged / np.maximum(total, 1e-12)[:, None], 0.0)
    confidence = np.max(np.stack(confidences), axis=0)
    fill = np.max(np.stack(faded), axis=0)
    return np.clip(albedo, 0.0, 1.0).astype(np.float32), confidence.astype(np.float32), fill.astype(np.float32)
