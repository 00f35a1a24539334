"""Contact sheet of a texture space: the mean, mean +/- 2 sigma of the first components,
how much each texel was seen, and the explained-variance curve (PIL only). The tiles
show the part of the UV map the photos saw; never-seen texels are faded. The PNG carries
a text chunk (MARK) so that `texture-space build --overwrite` can tell a sheet it wrote
from a user's picture of the same name, which it never replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ..fsutil import atomic_write
from ..image import linear_to_srgb
from .spaces import TextureSpaceData

TILE = 200
PAD = 8
LABEL = 22
BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
BAR = (90, 130, 200)
CURVE = (210, 80, 60)
MARK = ("Software", "FlameFit texture-space contact sheet")  # PNG text chunk: key, value


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


class _View:
    """The part of the UV map that holds data (the seen texels' bounding box, square,
    with a margin), and the never-seen texels, which are drawn faded."""

    def __init__(self, coverage: np.ndarray | None, size: tuple[int, int]):
        H, W = size
        self.box = (0.0, 0.0, 1.0, 1.0)  # top, left, bottom, right as fractions
        self.unseen = None
        if coverage is None or not (coverage > 0).any():
            return
        seen = np.asarray(coverage) > 0
        h, w = seen.shape
        # The largest well-seen UV island (the face); stray islands do not widen the box.
        from scipy import ndimage

        labels, count = ndimage.label(coverage >= 0.2 * float(np.max(coverage)))
        sizes = ndimage.sum_labels(coverage, labels, index=np.arange(1, count + 1))
        rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
        top, bottom, left, right = rows.min() / h, (rows.max() + 1) / h, cols.min() / w, (cols.max() + 1) / w
        side = min(1.0, 1.1 * max(bottom - top, right - left))
        cy, cx = (top + bottom) / 2, (left + right) / 2
        top, left = np.clip(cy - side / 2, 0, 1 - side), np.clip(cx - side / 2, 0, 1 - side)
        self.box = (top, left, top + side, left + side)
        self.unseen = np.asarray(Image.fromarray(seen.astype(np.uint8) * 255).resize((W, H), Image.BILINEAR)) < 128

    def crop(self, image: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        top, left, bottom, right = self.box
        return image[int(top * H):max(int(top * H) + 1, int(round(bottom * H))),
                     int(left * W):max(int(left * W) + 1, int(round(right * W)))]

    def tile(self, albedo_linear: np.ndarray) -> Image.Image:
        """(3, H, W) linear albedo -> TILE x TILE sRGB image (row 0 = top = v 1)."""
        rgb = linear_to_srgb(np.clip(albedo_linear, 0, 1)).transpose(1, 2, 0)
        if self.unseen is not None:
            rgb = np.where(self.unseen[..., None], 0.3 * rgb + 0.7 * np.array(BACKGROUND) / 255, rgb)
        rgb = (self.crop(rgb) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(rgb).resize((TILE, TILE), Image.LANCZOS)

    def heat(self, values: np.ndarray) -> Image.Image:
        """(h, w) values >= 0 -> a dark-to-yellow heat map tile."""
        v = self.crop(values / max(float(values.max()), 1e-12))
        rgb = np.stack([np.clip(1.5 * v, 0, 1), np.clip(1.5 * v - 0.5, 0, 1), 0.35 * (v <= 0)], -1)
        return Image.fromarray((rgb * 255).astype(np.uint8)).resize((TILE, TILE), Image.NEAREST)


def variance_plot(ratio: np.ndarray, width: int, height: int) -> Image.Image:
    """Bars: explained variance per component; line: cumulative (both in % of the total)."""
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(13)
    left, right, top, bottom = 46, 12, 26, 34
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.text((left, 4), "explained variance: per component (bars), cumulative (line)", fill=INK, font=font)
    draw.rectangle((x0, y0, x1, y1), outline=INK)
    for pct in (0, 25, 50, 75, 100):
        y = y1 - (y1 - y0) * pct / 100
        draw.line((x0 - 4, y, x0, y), fill=INK)
        draw.text((4, y - 7), f"{pct}%", fill=INK, font=font)
        if 0 < pct < 100:
            draw.line((x0 + 1, y, x1 - 1, y), fill=(225, 225, 225))
    n = len(ratio)
    if n:
        step = (x1 - x0) / n
        for k, r in enumerate(ratio):
            bx = x0 + k * step
            draw.rectangle((bx + 0.15 * step, y1 - (y1 - y0) * float(r), bx + 0.85 * step, y1), fill=BAR)
        cumulative = np.cumsum(ratio)
        points = [(x0 + (k + 0.5) * step, y1 - (y1 - y0) * float(c)) for k, c in enumerate(cumulative)]
        if len(points) > 1:
            draw.line(points, fill=CURVE, width=2)
        for p in points:
            draw.ellipse((p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2), fill=CURVE)
        for k in sorted({0, n - 1, *range(4, n, max(5, n // 8 // 5 * 5 or 5))}):
            draw.text((x0 + (k + 0.5) * step - 4, y1 + 4), str(k + 1), fill=INK, font=font)
        draw.text((x1 - 150, y1 + 18), f"component (K = {n})", fill=INK, font=font)
        draw.text((width - right - 110, 4), f"total {100 * float(cumulative[-1]):.1f}%", fill=CURVE, font=font)
    return img


def write_contact_sheet(path, space: TextureSpaceData, explained_ratio: np.ndarray | None = None,
                        coverage: np.ndarray | None = None, title: str = "", components: int = 5) -> Path:
    n = min(components, space.num_components)
    cols = 1 + n
    width = PAD + cols * (TILE + PAD)
    plot_h = 230
    height = 34 + 2 * (LABEL + TILE + PAD) + plot_h + PAD
    sheet = Image.new("RGB", (max(width, 640), height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    draw.text((PAD, 8), title or "texture space", fill=INK, font=_font(16))

    def place(tile, col, row, label):
        x = PAD + col * (TILE + PAD)
        y = 34 + row * (LABEL + TILE + PAD)
        draw.text((x, y + 2), label, fill=INK, font=font)
        sheet.paste(tile, (x, y + LABEL))

    view = _View(coverage, space.size)
    place(view.tile(space.mean), 0, 0, "mean")
    if coverage is not None:
        place(view.heat(np.asarray(coverage, np.float32)), 0, 1, "coverage (sum of weights)")
    for k in range(n):
        step = 2.0 * float(space.std[k]) * space.basis[k]
        pct = f" ({100 * float(explained_ratio[k]):.1f}%)" if explained_ratio is not None else ""
        place(view.tile(space.mean + step), 1 + k, 0, f"PC{k + 1} +2 sd{pct}")
        place(view.tile(space.mean - step), 1 + k, 1, f"PC{k + 1} -2 sd")
    if explained_ratio is not None:
        plot = variance_plot(np.asarray(explained_ratio, np.float64), sheet.width - 2 * PAD, plot_h)
        sheet.paste(plot, (PAD, height - plot_h - PAD))
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_text(*MARK)
    with atomic_write(path) as stream:  # the old sheet stays whole until the new one is
        sheet.save(stream, format="PNG", pnginfo=info)
    return path


def is_contact_sheet(path) -> bool:
    """Whether `path` is a contact sheet FlameFit wrote (a PNG with MARK; only the
    header chunks are read, no pixels)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get(MARK[0]) == MARK[1]
    except Exception:  # noqa: BLE001 - unreadable, not an image, too large: not our sheet
        return False
