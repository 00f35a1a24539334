"""The SH light a photo supports: one shape times one colour, the colour from the photo.

A free 9x3 SH light (one light per colour channel) and the albedo explain the same
pixels: albedo * light. Whatever colour the albedo's prior or start lacks, the light
takes (the astronaut's came out blue, 1.29 x grey in B; messi5's world pure red), and a
user who relights the head in Blender sees that cast on the skin. So the light is

    sh[k, c] = shape[k] * colour[c] + deviation[k, c]

with `colour` fixed per photo by `estimate_illuminant` (neutral unless the photo shows
evidence of a cast: eye whites, teeth, the background's grey world) and `deviation` a
per-channel correction held near 0 by a prior (`LightOptions.deviation_weight`, per SH
band), so the albedo carries the skin's colour. Both are linear in the unknowns: one
36x36 weighted least-squares solve (`solve_light`), as cheap as the free one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..landmarks import ibug68
from .masks import face_polygon_mask
from .schedule import LightOptions

NEUTRAL = (1.0, 1.0, 1.0)
BANDS = (0, 1, 1, 1, 2, 2, 2, 2, 2)  # the SH band of each coefficient


def chroma(rgb) -> np.ndarray:
    """RGB / its mean: (1, 1, 1) is grey."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb / max(float(rgb.mean()), 1e-9)


def _polygon(size, pts) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(pts)).astype(np.int32)], 1)
    return mask.astype(bool)


def _whites(image, pts, groups, opts) -> tuple[np.ndarray, int] | None:
    """Median chroma of the bright, colourless pixels inside the landmark polygons."""
    H, W = image.shape[:2]
    inside = np.zeros((H, W), bool)
    for group in groups:
        poly = pts[list(group)]
        if np.isfinite(poly).all():
            inside |= _polygon((H, W), poly)
    pixels = image[inside].astype(np.float64)
    if len(pixels) < opts.min_white_pixels:
        return None
    mean = pixels.mean(1)
    spread = (pixels.max(1) - pixels.min(1)) / np.maximum(mean, 1e-6)
    bright = (mean >= np.percentile(mean, opts.white_percentile)) & (mean < 0.97)  # not clipped
    # a lit sclera or tooth is brighter than the skin around it: dark, shadowed eyes and the
    # glints on sunglasses are not evidence
    face = face_polygon_mask(pts, H) > 0.5 if H == W else np.zeros((H, W), bool)
    if face.sum() >= opts.min_white_pixels:
        bright &= mean >= opts.white_min_vs_skin * float(np.median(image[face].astype(np.float64).mean(1)))
    if bright.sum() < opts.min_white_pixels:
        return None
    # the whites are the least coloured of the bright pixels (lips, skin, iris are more),
    # whatever the light's colour shifts them all by
    least = np.percentile(spread[bright], opts.white_least_coloured)
    keep = bright & (spread <= least) & (spread < opts.white_max_chroma)
    if keep.sum() < opts.min_white_pixels:
        return None
    return chroma(np.median(pixels[keep], axis=0) / np.asarray(opts.white_tint)), int(keep.sum())


def _background(image, pts, opts) -> np.ndarray | None:
    """Grey-world chroma of the crop's pixels far from the face polygon (not hair, ears) and
    above the eyes (lower down are the shoulders and clothing, also in a tilted head's
    crop); None when too few are left."""
    H, W = image.shape[:2]
    a, b = ibug68.OUTER_EYE_CORNERS
    iod = float(np.linalg.norm(pts[a] - pts[b]))
    face = face_polygon_mask(pts, H) > 0.5 if H == W else None
    eyes = pts[list(ibug68.RIGHT_EYE) + list(ibug68.LEFT_EYE)]
    if face is None or not np.isfinite(iod) or not face.any() or not np.isfinite(eyes).all():
        return None
    distance = cv2.distanceTransform((~face).astype(np.uint8), cv2.DIST_L2, 5)
    far = distance > opts.background_distance * iod
    far[int(np.clip(eyes[:, 1].min(), 0, H)):, :] = False
    if far.mean() < opts.min_background_fraction:
        return None
    pixels = image[far].astype(np.float64)
    if pixels.mean() < 1e-3:
        return None
    return chroma(pixels.mean(0))


@dataclass(frozen=True)
class Illuminant:
    colour: tuple  # RGB chroma, mean 1
    sources: tuple  # which evidence moved it (for the report)


def estimate_illuminant(image_lin: np.ndarray, points: np.ndarray, options: LightOptions) -> Illuminant:
    """The light's colour from a linear-RGB crop and its 68 landmarks (crop pixels): the
    eye whites and (mouth open) the teeth when they are seen, the background's grey world,
    each pulled towards neutral by its trust; neutral without evidence."""
    pts = np.asarray(points, dtype=np.float64)
    evidence, sources = [], []
    whites = _whites(image_lin, pts, (ibug68.RIGHT_EYE, ibug68.LEFT_EYE, ibug68.INNER_LIPS), options)
    if whites is not None:
        evidence.append((whites[0], options.whites_trust))
        sources.append(f"whites({whites[1]} px)")
    background = _background(image_lin, pts, options)
    if background is not None:
        evidence.append((background, options.background_trust))
        sources.append("background")
    colour = np.ones(3)
    total = sum(t for _, t in evidence)
    if total > 0:
        # trust-weighted mean of the sources, then the remaining weight stays neutral
        shift = sum(t * (c - 1.0) for c, t in evidence) / max(total, 1.0)
        colour = chroma(np.clip(1.0 + shift, 1.0 - options.max_cast, 1.0 + options.max_cast))
    return Illuminant(tuple(float(c) for c in colour), tuple(sources))


def illuminant_of(target, options: LightOptions) -> Illuminant:
    """The target's illuminant, computed once per target."""
    cached = getattr(target, "illuminant", None)
    if cached is None:
        cached = estimate_illuminant(target.image_np, target.points, options)
        target.illuminant = cached
    return cached


def _normal_equations(albedo, basis, target, weight):
    A = albedo.t()[:, :, None] * basis[None]  # (3, N, 9)
    Aw = A * weight[None, :, None]
    M = Aw.transpose(1, 2) @ A  # (3, 9, 9)
    b = (Aw * target.t()[:, :, None]).sum(1)  # (3, 9)
    scale = M.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=1e-8)  # (3,)
    return M, b, scale


def solve_free(albedo, basis, target, weight, previous, ridge: float) -> torch.Tensor:
    """argmin_sh sum_p w_p |albedo_p * (basis_p @ sh) - target_p|^2 + ridge |sh - previous|^2, per channel."""
    M, b, scale = _normal_equations(albedo, basis, target, weight)
    eye = torch.eye(9, dtype=M.dtype, device=M.device)
    lam = ridge * scale[:, None, None]
    sh = torch.linalg.solve(M + lam * eye, b[..., None] + lam * previous[0].t()[..., None])[..., 0]
    return sh.t()[None]  # (1, 9, 3)


def solve_constrained(albedo, basis, target, weight, previous, ridge: float, colour, options: LightOptions):
    """sh = shape x colour + deviation: argmin of the data term + ridge |sh - previous|^2 +
    sum_k deviation_weight[band k] |deviation_k|^2 (both x the data's mean diagonal)."""
    M, b, scale = _normal_equations(albedo, basis, target, weight)
    dt, dev = M.dtype, M.device
    eye = torch.eye(9, dtype=dt, device=dev)
    colour = torch.as_tensor(colour, dtype=dt, device=dev)
    band = torch.tensor([options.deviation_weight[k] for k in BANDS], dtype=dt, device=dev)
    shape_prior = torch.tensor([options.shape_weight[k] for k in BANDS], dtype=dt, device=dev)
    H = torch.zeros(36, 36, dtype=dt, device=dev)
    g = torch.zeros(36, dtype=dt, device=dev)
    prev = previous[0].t()  # (3, 9)
    for c in range(3):
        Mc = M[c] + ridge * scale[c] * eye
        gc = b[c] + ridge * scale[c] * prev[c]
        d = slice(9 + 9 * c, 18 + 9 * c)
        H[:9, :9] += colour[c] ** 2 * Mc
        H[:9, d] = colour[c] * Mc
        H[d, :9] = colour[c] * Mc
        H[d, d] = Mc + torch.diag(band * scale[c])
        g[:9] += colour[c] * gc
        g[d] = gc
    H[:9, :9] += torch.diag(shape_prior * scale.mean())
    x = torch.linalg.solve(H, g)
    shape, deviation = x[:9], x[9:].reshape(3, 9).t()  # (9,), (9, 3)
    return (shape[:, None] * colour[None] + deviation)[None]  # (1, 9, 3)


def solve_light(albedo, basis, target_rgb, weight, previous, fit_options, target) -> torch.Tensor:
    """The view's SH light (1, 9, 3) for the pixels' albedo, SH basis and photo colour:
    constrained to the target's illuminant colour (LightOptions), or free."""
    opts = fit_options.light
    if not opts.constrained:
        return solve_free(albedo, basis, target_rgb, weight, previous, fit_options.light_ridge)
    colour = illuminant_of(target, opts).colour
    return solve_constrained(albedo, basis, target_rgb, weight, previous, fit_options.light_ridge, colour, opts)


def dc_chroma(sh) -> tuple:
    """The light's ambient (band 0) colour as chroma, mean 1."""
    sh = np.asarray(sh.detach().cpu() if torch.is_tensor(sh) else sh, dtype=np.float64).reshape(-1, 9, 3)[0]
    return tuple(float(c) for c in chroma(sh[0]))
