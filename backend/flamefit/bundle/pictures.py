"""overlay.png and report.png: pictures a person can check at a glance (OpenCV drawing)."""

from __future__ import annotations

import cv2
import numpy as np

from ..image import linear_to_srgb

MAX_OVERLAY_SIDE = 2048
DETECTED = (40, 220, 40)  # RGB green
FITTED = (235, 40, 40)  # RGB red
TILE = 256


def _u8(image01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image01 * 255.0), 0, 255).astype(np.uint8)


def _text(image, text, org, scale=0.45, colour=(20, 20, 20), thickness=1):
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def _points(image, points, colour, radius, cross=False):
    for x, y in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c = (int(round(x * 4 - 2)), int(round(y * 4 - 2)))  # 2 fractional bits; -0.5 px: pixel centres
        if cross:
            r = radius * 4
            cv2.line(image, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, 1, cv2.LINE_AA, shift=2)
            cv2.line(image, (c[0] - r, c[1] + r), (c[0] + r, c[1] - r), colour, 1, cv2.LINE_AA, shift=2)
        else:
            cv2.circle(image, c, radius * 4, colour, -1, cv2.LINE_AA, shift=2)


def overlay_picture(result) -> np.ndarray:
    """The photo, the fitted mesh (grey, lit) blended in, detected (green dots) and fitted
    (red crosses) landmarks. At most MAX_OVERLAY_SIDE pixels on the long side. `result`:
    a fitting.ViewResult (or a FitResult: its first view)."""
    photo = result.photo.rgb
    H, W = photo.shape[:2]
    scale = min(1.0, MAX_OVERLAY_SIDE / max(H, W))
    base = photo if scale == 1.0 else cv2.resize(photo, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
    base = base.astype(np.float32) / 255.0
    crop = result.pictures.get("overlay_crop", result.frame.crop)
    grey, fg = result.pictures["overlay_grey"], result.pictures["overlay_foreground"].astype(np.float32)
    side = max(1, int(round(crop.side * scale)))
    x0, y0 = int(round(crop.x0 * scale)), int(round(crop.y0 * scale))
    grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_LINEAR)
    fg = cv2.resize(fg, (side, side), interpolation=cv2.INTER_LINEAR)[..., None] * 0.6
    # Paste the crop window, clipped to the picture.
    bx0, by0 = max(x0, 0), max(y0, 0)
    bx1, by1 = min(x0 + side, base.shape[1]), min(y0 + side, base.shape[0])
    if bx1 > bx0 and by1 > by0:
        sx, sy = bx0 - x0, by0 - y0
        g = grey[sy:sy + by1 - by0, sx:sx + bx1 - bx0]
        a = fg[sy:sy + by1 - by0, sx:sx + bx1 - bx0]
        base[by0:by1, bx0:bx1] = base[by0:by1, bx0:bx1] * (1 - a) + g * a
    out = _u8(base)
    radius = max(1, int(round(max(out.shape[:2]) / 400)))
    zoom_source = out.copy()
    _points(out, result.detected_2d * scale, DETECTED, radius)
    _points(out, result.fitted_2d * scale, FITTED, radius + 1, cross=True)
    face_side = result.frame.crop.side * scale
    if face_side < 0.4 * min(out.shape[:2]):
        _inset(out, zoom_source, result, scale)
    return out


def inset_corner(picture_shape, size: int, face_box) -> tuple[int, int]:
    """Top-left pixel of a size x size inset in the picture corner that covers the least of
    face_box (x0, y0, x1, y1); ties go to the top left, then top right."""
    H, W = picture_shape[:2]
    corners = [(4, 4), (W - size - 4, 4), (4, H - size - 4), (W - size - 4, H - size - 4)]

    def covered(corner):
        x, y = corner
        w = min(x + size, face_box[2]) - max(x, face_box[0])
        h = min(y + size, face_box[3]) - max(y, face_box[1])
        return max(w, 0) * max(h, 0)

    return min(corners, key=covered)


def _inset(out, source, result, scale) -> None:
    """A small face gets a zoomed copy (landmarks redrawn) in a corner of the picture, the
    one that hides the least of the face."""
    crop = result.frame.crop
    side = crop.side * scale
    x0, y0 = crop.x0 * scale, crop.y0 * scale
    size = int(min(out.shape[:2]) * 0.45)
    zoom = size / side
    M = np.array([[zoom, 0, -x0 * zoom], [0, zoom, -y0 * zoom]])
    inset = cv2.warpAffine(source, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    to_inset = lambda p: (p * scale - (x0, y0)) * zoom
    r = max(2, size // 120)
    _points(inset, to_inset(result.detected_2d), DETECTED, r)
    _points(inset, to_inset(result.fitted_2d), FITTED, r + 1, cross=True)
    cv2.rectangle(inset, (0, 0), (size - 1, size - 1), (255, 255, 255), 2)
    face = result.fitted_2d * scale
    left, top = inset_corner(out.shape, size, (*face.min(0), *face.max(0)))
    out[top:top + size, left:left + size] = inset
    _text(out, "zoom", (left + 6, top + 18), 0.5, (255, 255, 255), 2)
    _text(out, "zoom", (left + 6, top + 18), 0.5, (20, 20, 20), 1)


def _heat(error: np.ndarray, mask: np.ndarray, limit: float = 0.15) -> np.ndarray:
    value = np.clip(error / limit, 0, 1)
    heat = cv2.applyColorMap(_u8(value), cv2.COLORMAP_JET)[..., ::-1]
    heat = heat.astype(np.float32) / 255.0
    return heat * mask[..., None] + 0.15 * (1 - mask[..., None])


def _curves(history: dict, size=(3 * TILE, TILE)) -> np.ndarray:
    W, H = size
    panel = np.full((H, W, 3), 250, np.uint8)
    stages = [(k, v) for k, v in history.items() if v]
    _text(panel, "loss per evaluation (log scale), by stage", (8, 18), 0.5)
    if not stages:
        return panel
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    left, right, top, bottom = 40, W - 10, 30, H - 22 - 14 * len(stages)
    # Each stage gets a share of the width: its evaluations, but at least 12%.
    shares = np.array([max(len(v), 1) for _, v in stages], dtype=np.float64)
    shares = np.maximum(shares / shares.sum(), 0.12)
    shares = shares / shares.sum() * (right - left)
    x = float(left)
    for i, (name, values) in enumerate(stages):
        v = np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-12))
        lo, hi = v.min(), v.max()
        span = max(hi - lo, 1e-6)
        xs = x + np.linspace(0.0, 1.0, len(v)) * (shares[i] - 6)
        ys = bottom - (v - lo) / span * (bottom - top)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        colour = colours[i % len(colours)]
        cv2.polylines(panel, [pts], False, colour, 2, cv2.LINE_AA)
        _text(panel, f"{name}: {len(values)} evaluations, {values[0]:.4g} -> {values[-1]:.4g}",
              (left, bottom + 18 + 14 * i), 0.4, colour)
        x += shares[i]
    cv2.line(panel, (left, bottom), (right, bottom), (120, 120, 120), 1)
    return panel


def report_picture(result, view=None) -> np.ndarray:
    """Top: photo crop | textured render | lit geometry | error heat map (|render - photo|,
    face mask) of `view` (a fitting.ViewResult; None: the first). Bottom: UV albedo | loss
    curves. Then metrics and timings."""
    view = result.views[0] if view is None else view
    p = view.pictures
    photo, render, grey = p["photo"], p["render"], p["grey"]
    fg = p["foreground"].astype(np.float32)
    error = np.abs(render - photo).mean(-1) * fg
    heat = _heat(error, np.maximum(p["mask"], 0.3 * fg))
    composite = render * fg[..., None] + photo * (1 - fg[..., None])
    tiles = [photo, composite, grey * fg[..., None] + photo * 0.25 * (1 - fg[..., None]), heat]
    top = np.concatenate([_u8(cv2.resize(t.astype(np.float32), (TILE, TILE), interpolation=cv2.INTER_AREA))
                          for t in tiles], axis=1)
    for i, label in enumerate(("photo", "fitted render", "geometry", "|error| (0..0.15)")):
        _text(top, label, (i * TILE + 6, 16), 0.45, (255, 255, 255), 2)
        _text(top, label, (i * TILE + 6, 16), 0.45, (20, 20, 20), 1)
    albedo = _u8(linear_to_srgb(cv2.resize(result.texture, (TILE, TILE), interpolation=cv2.INTER_AREA)))
    _text(albedo, "UV albedo", (6, 16), 0.45, (255, 255, 255), 2)
    _text(albedo, "UV albedo", (6, 16), 0.45, (20, 20, 20), 1)
    bottom = np.concatenate([albedo, _curves(result.history)], axis=1)
    lines = []
    m = view.metrics
    count = len(result.views)
    number = next(k for k, v in enumerate(result.views, start=1) if v is view)
    which = f"  (photo {number} of {count}, one head fitted to all)" if count > 1 else ""
    lines.append(f"{view.photo.path.name}  {view.photo.width}x{view.photo.height}  model: {result.model.name}{which}")
    lines.append(f"landmarks: {m['landmark_error_px']:.2f} px = {100 * m['landmark_error_eye_fraction']:.2f}% of the "
                 f"eye-corner distance   photometric: MAE {m['photometric_error']:.4f}, PSNR {m['psnr_db']:.2f} dB")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    text = np.full((22 * len(lines) + 10, 4 * TILE, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        _text(text, line, (8, 20 + 22 * i), 0.45)
    return np.concatenate([top, bottom, text], axis=0)
