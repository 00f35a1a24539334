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

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FlameFitError
from .fsutil import file_sha256, require_regular_file

# Larger images are refused rather than decoded (a decompression bomb guard): 400 MP.
MAX_PIXELS = 400_000_000


@dataclass
class Photo:
    path: Path
    rgb: np.ndarray  # (H, W, 3) uint8, sRGB, upright
    sha256: str | None = None  # of the file's bytes (None for a photo made from an array)

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

# Memory: the fit keeps one 8-bit RGB copy of the photo (crops are cut from it); the
# decoder's own buffer is converted into it a band of rows at a time, never as a float
# copy of the whole image, and the detector sees a downscaled copy (detection_copy).
TILE_BYTES = 64 << 20
# Larger decoded buffers are refused too (32-bit float colour, e.g. Radiance .hdr: 200 MP).
MAX_DECODED_BYTES = 2_400_000_000
# The detector runs on a copy with at most this many pixels (48 MP phone photos: 0.58x).
DETECTION_MAX_PIXELS = 16_000_000
HEADER_BYTES = 1 << 16  # header lines read for formats only OpenCV decodes


def load_photo(path) -> Photo:
    """Read a photo as upright 8-bit RGB; FlameFitError with one clear line otherwise.
    The size is read from the header first: too-large images are refused before decoding."""
    path = require_regular_file(path, "photo")  # a FIFO would block forever
    size = _pillow_size(path)
    if size is not None:
        _check_size(path, *size, bytes_per_pixel=4)
        rgb = _load_with_pillow(path)
    else:  # formats only OpenCV knows: their header gives the size, or they are refused
        width, height, bytes_per_pixel = _opencv_only_header(path)
        _check_size(path, width, height, bytes_per_pixel)
        rgb = _load_with_opencv(path)
    if rgb is None:
        raise FlameFitError(f"{path}: not an image FlameFit can read (unknown format or not an image file)")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise FlameFitError(f"{path}: image is only {rgb.shape[1]}x{rgb.shape[0]} pixels")
    return Photo(path=path.resolve(), rgb=np.ascontiguousarray(rgb), sha256=file_sha256(path))


def _check_size(path, width: int, height: int, bytes_per_pixel: int) -> None:
    pixels = int(width) * int(height)
    if pixels > MAX_PIXELS:
        raise FlameFitError(f"{path}: image is too large ({width}x{height} = {pixels / 1e6:.0f} megapixels; "
                            f"FlameFit reads at most {MAX_PIXELS // 1_000_000})")
    if pixels * bytes_per_pixel > MAX_DECODED_BYTES:
        raise FlameFitError(f"{path}: image is too large to decode ({width}x{height} in a "
                            f"{bytes_per_pixel}-byte-per-pixel format needs {pixels * bytes_per_pixel / 1e9:.1f} GB; "
                            f"at most {MAX_DECODED_BYTES / 1e9:.1f} GB)")


def detection_copy(rgb: np.ndarray, max_pixels: int = DETECTION_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """(copy for the face detector, scale): `rgb` itself (scale 1) when it has at most
    `max_pixels`, else downscaled by `scale` < 1; divide detected points by `scale`."""
    H, W = rgb.shape[:2]
    if H * W <= max_pixels:
        return rgb, 1.0
    scale = (max_pixels / (H * W)) ** 0.5
    size = (max(1, int(W * scale)), max(1, int(H * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), min(size[0] / W, size[1] / H)


def _pillow_size(path: Path):
    """(width, height) from Pillow's header parse (no pixels decoded), None when Pillow
    does not know the format."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # only the header is read here; _check_size decides
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlameFitError(f"{path}: cannot read image ({reason})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _opencv_only_header(path: Path) -> tuple[int, int, int]:
    """(width, height, decoded bytes per pixel) of the formats OpenCV reads and Pillow does
    not (Radiance .hdr, colour .pfm, .pam); anything else is refused unread."""
    with open(path, "rb") as stream:
        head = stream.read(HEADER_BYTES)
    unreadable = FlameFitError(f"{path}: not an image FlameFit can read (unknown format or not an image file)")
    try:
        if head.startswith((b"#?RADIANCE", b"#?RGBE")):
            end = head.find(b"\n\n")  # a blank line ends the header; the resolution line follows
            tokens = head[end + 2:].split(b"\n", 1)[0].split() if end >= 0 else []
            if len(tokens) != 4 or {tokens[0][1:], tokens[2][1:]} != {b"X", b"Y"}:
                raise unreadable
            sizes = {tokens[0][1:]: int(tokens[1]), tokens[2][1:]: int(tokens[3])}
            return sizes[b"X"], sizes[b"Y"], 12  # decoded as 32-bit float RGB
        if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
            width, height = (int(v) for v in head[2:].split()[:2])
            return width, height, 12 if head[:2] == b"PF" else 4
        if head.startswith(b"P7") and head[2:3].isspace():
            fields = dict(line.split(None, 1) for line in head.split(b"ENDHDR")[0].splitlines()[1:]
                          if len(line.split(None, 1)) == 2 and not line.startswith(b"#"))
            depth, maxval = int(fields.get(b"DEPTH", 1)), int(fields.get(b"MAXVAL", 255))
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), depth * (1 if maxval < 256 else 2)
    except (ValueError, KeyError, IndexError):
        raise unreadable from None
    raise unreadable


def _load_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)
                if frames > 1 and image.format in MULTI_FRAME_FORMATS:
                    _warn(f"{path}: {frames} frames (animated or multi-page); only the first is used")
                image.load()
                try:
                    ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
                except Exception:  # a broken EXIF block: keep the pixels as stored
                    pass
                return _to_rgb8(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FlameFitError(f"{path}: image is too large (more than {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        if "truncated" in reason or isinstance(exc, EOFError):
            raise FlameFitError(f"{path}: image file is truncated or damaged ({reason})") from None
        raise FlameFitError(f"{path}: cannot read image ({reason})") from None


INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Formats whose further frames are pictures of their own (animation, pages). Not MPO:
# phone JPEGs carry a preview or depth map as a second frame.
MULTI_FRAME_FORMATS = ("GIF", "PNG", "WEBP", "TIFF")


def _warn(message: str) -> None:
    """A warning the run goes on after: one line on stderr (stdout may be the progress
    stream), like the error lines."""
    if sys.stderr is not None:
        try:
            print("flamefit: warning: " + message.replace("\n", "\\n"), file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # stderr is closed: nobody to tell


def _to_rgb8(image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB, converted a band of rows at a time (the
    only full-size allocation is the result)."""
    width, height = image.size
    top = None
    if image.mode in INTEGER_MODES:
        high = image.getextrema()[1]
        if image.mode == "F":
            top = 1.0 if high <= 1.0 else (255.0 if high <= 255 else 65535.0)
        else:
            top = 255.0 if high <= 255 else 65535.0
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, TILE_BYTES // max(1, width * 16))  # 16: the widest tile (float64 grey, uint16 RGBA)
    for y0 in range(0, height, rows):
        tile = image.crop((0, y0, width, min(height, y0 + rows)))
        tile.info = image.info  # palette transparency
        out[y0:y0 + tile.size[1]] = _tile_to_rgb8(tile, top)  # grey tiles broadcast to 3 channels
    return out


def _tile_to_rgb8(image, top) -> np.ndarray:
    mode = image.mode
    if mode in INTEGER_MODES:
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return grey[..., None]
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "L"):
        return np.asarray(image.convert("L"))[..., None]
    elif mode in ("LA", "La"):
        image = image.convert("LA")
    elif mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode in ("LA", "RGBA"):
        values = np.asarray(image)
        return _over_white(values[..., :-1], values[..., -1:])
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour composited over white with uint8 alpha, rounded: integer maths in
    uint16 (exactly round((c*a + 255*(255-a)) / 255); 255 is odd, so no ties)."""
    alpha = alpha.astype(np.uint16)
    total = colour.astype(np.uint16) * alpha + (255 * (255 - alpha) + 127)
    return (total // 255).astype(np.uint8)


def _load_with_opencv(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    del data
    if image is None:
        return None
    if image.ndim == 2:
        image = image[..., None]
    height, width, channels = image.shape
    is_float = image.dtype in (np.float32, np.float64)
    offset, gain = 0.0, 1.0  # value -> 0..255: (value - offset) * gain
    if is_float:
        gain = 255.0 if image.max() <= 1.0 else 1.0
    elif image.dtype == np.uint16:
        gain = 1 / 257.0
    elif image.dtype != np.uint8:
        offset, high = float(image.min()), float(image.max())
        gain = 255.0 / (high - offset) if high > offset else 1.0
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, TILE_BYTES // max(1, width * channels * 8))
    for y0 in range(0, height, rows):
        tile = np.clip((image[y0:y0 + rows].astype(np.float32) - offset) * gain, 0, 255)
        tile = np.floor(tile) if is_float else np.round(tile)  # float: truncated, as before
        if channels == 4:
            alpha = tile[..., 3:] / 255.0
            tile = np.round(tile[..., :3] * alpha + 255.0 * (1 - alpha))  # over white
        tile = tile.astype(np.uint8)
        out[y0:y0 + rows] = tile[..., 2::-1] if channels >= 3 else tile[..., :1]  # BGR -> RGB; grey -> 3
    return out


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
