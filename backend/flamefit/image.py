"""Loading photos and cropping around a face.

`load_photo` reads any size and most formats (JPEG, PNG, TIFF, WebP, BMP, ...), applies
the EXIF orientation, and turns grey, grey+alpha, RGBA, palette, CMYK, 16-bit and float
images into 8-bit RGB. Transparent pixels are composited over white. Every failure
(missing, unreadable, truncated, not an image) is a one-line FlameFitError.

`Crop` maps original-image pixels to a square working image (and back): the fit runs in
the crop, everything it reports is in original-image pixels. Pixel convention (the
project's): x right, y down, the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FlameFitError

# Larger images are refused rather than decoded (a decompression bomb guard): 400 MP.
MAX_PIXELS = 400_000_000


@dataclass
class Photo:
    path: Path
    rgb: np.ndarray  # (H, W, 3) uint8, sRGB, upright

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def srgb_to_linear(x):
    """sRGB [0, 1] -> linear [0, 1] (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return np.where(x <= 0.04045, x / 12.92, ((np.clip(x, 0.04045, None) + 0.055) / 1.055) ** 2.4)
    return (x <= 0.04045) * (x / 12.92) + (x > 0.04045) * ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4


def linear_to_srgb(x):
    """linear [0, 1] -> sRGB [0, 1] (numpy or torch); input is clipped to [0, 1]."""
    if isinstance(x, np.ndarray):
        x = np.clip(x, 0.0, 1.0)
        return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.clip(x, 0.0031308, None) ** (1 / 2.4) - 0.055)
    x = x.clamp(0.0, 1.0)
    return (x <= 0.0031308) * (x * 12.92) + (x > 0.0031308) * (1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


# ----------------------------------------------------------------------------- loading


def load_photo(path) -> Photo:
    """Read a photo as upright 8-bit RGB; FlameFitError with one clear line otherwise."""
    path = Path(path)
    if not path.exists():
        raise FlameFitError(f"{path}: photo not found")
    if path.is_dir():
        raise FlameFitError(f"{path}: is a folder, not a photo")
    try:
        rgb = _load_with_pillow(path)
    except _NotRecognised:
        rgb = _load_with_opencv(path)  # e.g. 16-bit colour TIFF, formats Pillow lacks
    if rgb is None:
        raise FlameFitError(f"{path}: not an image FlameFit can read (unknown format or not an image file)")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise FlameFitError(f"{path}: image is only {rgb.shape[1]}x{rgb.shape[0]} pixels")
    return Photo(path=path.resolve(), rgb=np.ascontiguousarray(rgb))


class _NotRecognised(Exception):
    pass


def _load_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                try:
                    image = ImageOps.exif_transpose(image)
                except Exception:  # a broken EXIF block: keep the pixels as stored
                    pass
                return _to_rgb8(image)
    except UnidentifiedImageError:
        raise _NotRecognised from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FlameFitError(f"{path}: image is too large (more than {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        if "truncated" in reason or isinstance(exc, EOFError):
            raise FlameFitError(f"{path}: image file is truncated or damaged ({reason})") from None
        raise FlameFitError(f"{path}: cannot read image ({reason})") from None


def _to_rgb8(image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if values.max(initial=0) <= 1.0 else (255.0 if values.max() <= 255 else 65535.0)
        else:
            top = 255.0 if values.max(initial=0) <= 255 else 65535.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        rgb = rgba[..., :3] * alpha + (1.0 - alpha)  # over white
        return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _load_with_opencv(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        bgr = image[..., :3].astype(np.float32)
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = np.round(bgr * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- cropping


@dataclass(frozen=True)
class Crop:
    """A square window of the original image, resampled to `size` x `size`.

    Original pixel coordinates p map to crop coordinates (p - (x0, y0)) * scale with
    scale = size / side; x0, y0 and side are integers (whole original pixels).
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - (self.x0, self.y0)) * self.scale

    def to_original(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + (self.x0, self.y0)

    def resized(self, size: int) -> "Crop":
        return Crop(self.x0, self.y0, self.side, int(size))

    def extract(self, rgb: np.ndarray, size: int | None = None) -> np.ndarray:
        """The crop of an (H, W, C) image at `size` (default self.size); outside: edge pixels."""
        size = int(size or self.size)
        H, W = rgb.shape[:2]
        x1, y1 = self.x0 + self.side, self.y0 + self.side
        pad = max(0, -self.x0, -self.y0, x1 - W, y1 - H)
        window = rgb[max(self.y0, 0): min(y1, H), max(self.x0, 0): min(x1, W)]
        if pad:
            window = cv2.copyMakeBorder(window, max(0, -self.y0), max(0, y1 - H), max(0, -self.x0),
                                        max(0, x1 - W), cv2.BORDER_REPLICATE)
        interpolation = cv2.INTER_AREA if self.side > size else cv2.INTER_LINEAR
        return cv2.resize(window, (size, size), interpolation=interpolation)


def crop_around(points: np.ndarray, size: int, margin: float = 1.9) -> Crop:
    """A square crop around 68 face landmarks: `margin` times the landmarks' extent,
    shifted up a little so the forehead fits."""
    points = np.asarray(points, dtype=np.float64)
    points = points[np.isfinite(points).all(axis=1)]
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float(max(hi - lo))
    centre = (lo + hi) / 2 - np.array([0.0, 0.12 * extent])
    side = max(8, int(round(margin * extent)))
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    return Crop(x0, y0, side, int(size))
