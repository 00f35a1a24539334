"""#11.6: decompression bombs. Every format's size is read from its header before any
pixel is decoded (one 400 MP limit, plus a decoded-buffer limit for float formats), the
conversion to 8-bit RGB never makes a float copy of the whole image, and the detector
works on a downscaled copy of a huge photo. The bombs are generated here, small."""

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from flamefit.errors import FlameFitError
from flamefit.image import DETECTION_MAX_PIXELS, MAX_PIXELS, detection_copy, load_photo

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFIT_")}
    return {**env, "FLAMEFIT_THREADS": "1", "PYTHONPATH": str(REPO / "backend")}


def write_png(path, width, height, colour_type, row: bytes):
    """A valid 8-bit PNG whose rows are all `row`, streamed (never the whole image in memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    compressor = zlib.compressobj(1)
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)))
        for _ in range(height):
            data = compressor.compress(b"\x00" + row)
            if data:
                stream.write(chunk(b"IDAT", data))
        stream.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))
    return path


def hdr_header(path, width, height):
    """A Radiance .hdr that claims width x height; 1 kB of pixel data (never decoded)."""
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode() + bytes(1024))
    return path


def test_cli_refuses_a_500_megapixel_hdr_from_its_header(tmp_path):
    bomb = hdr_header(tmp_path / "bomb.hdr", 25000, 20000)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", str(bomb), "-o", str(out)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "too large" in lines[0] and "500 megapixels" in lines[0], run.stderr
    assert not out.exists()


def test_opencv_only_formats_are_sized_from_their_headers(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.random((40, 50, 3)).astype(np.float32)
    for suffix in (".hdr", ".pfm"):  # formats Pillow does not read: decoded by OpenCV
        path = tmp_path / f"small{suffix}"
        assert cv2.imwrite(str(path), colour)
        photo = load_photo(path)
        assert photo.rgb.shape == (40, 50, 3)
        assert np.abs(photo.rgb.astype(int) - np.floor(colour[..., ::-1] * 255)).max() <= 2
    pam = tmp_path / "small.pam"
    assert cv2.imwrite(str(pam), (colour * 255).astype(np.uint8))
    assert load_photo(pam).rgb.shape == (40, 50, 3)

    bombs = {"huge.hdr": hdr_header(tmp_path / "huge.hdr", 30000, 20000),
             "huge.pfm": tmp_path / "huge.pfm", "huge.pam": tmp_path / "huge.pam",
             # Under 400 MP, but 32-bit float RGB: a 3 GB decoder buffer.
             "float250.hdr": hdr_header(tmp_path / "float250.hdr", 12500, 20000)}
    bombs["huge.pfm"].write_bytes(b"PF\n30000 20000\n-1.0\n" + bytes(1024))
    bombs["huge.pam"].write_bytes(b"P7\nWIDTH 30000\nHEIGHT 20000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(1024))
    for name, path in bombs.items():
        with pytest.raises(FlameFitError, match="too large") as info:
            load_photo(path)
        assert "\n" not in str(info.value), name
    unknown = tmp_path / "unknown.img"
    unknown.write_bytes(b"\x00\x01not an image at all" * 100)
    with pytest.raises(FlameFitError, match="not an image FlameFit can read"):
        load_photo(unknown)


def test_png_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    side = int(MAX_PIXELS ** 0.5) + 100
    path = write_png(tmp_path / "bomb.png", side, 4, 0, bytes(side))  # 4 rows, then the header's height:
    data = bytearray(path.read_bytes())
    data[20:24] = struct.pack(">I", side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    with pytest.raises(FlameFitError, match="too large"):
        load_photo(path)


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from flamefit.image import load_photo
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    photo = load_photo(sys.argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024, *photo.rgb[0, 0], *photo.rgb[-1, -1], *photo.rgb.shape)
""")


def test_grey_alpha_png_is_converted_in_uint8_bands(tmp_path):
    """A 50 MP grey+alpha PNG: composited over white in 8-bit bands of rows. The old
    float32 RGBA composite needed ~60 bytes per pixel (> 5 GiB at 399 MP)."""
    side = 7072
    path = write_png(tmp_path / "la.png", side, side, 4, bytes([200, 128]) * side)
    run = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    peak, *values = (int(v) for v in run.stdout.split())
    assert values == [227] * 6 + [side, side, 3]  # round((200*128 + 255*127) / 255)
    # Pillow's own buffer (4 bytes per pixel for LA) + the RGB result (3) + bands.
    assert peak < 9 * side * side, f"{peak / 1e9:.2f} GB for {side * side / 1e6:.0f} MP"


def test_detection_copy_has_at_most_the_detection_pixels():
    big = np.zeros((6000, 8000, 3), np.uint8)
    small, scale = detection_copy(big)
    assert small.shape[0] * small.shape[1] <= DETECTION_MAX_PIXELS
    assert small.shape[1] == round(8000 * scale) and small.shape[0] == pytest.approx(6000 * scale, abs=1)
    photo_sized = np.zeros((3000, 4000, 3), np.uint8)
    assert detection_copy(photo_sized)[0] is photo_sized


DETECT_PROBE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import cv2, numpy as np
    from skimage import data
    from flamefit.image import Photo
    from flamefit.fitting.inputs import find_landmarks
    face = cv2.resize(data.astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((10000, 10000, 3), 128, np.uint8)
    canvas[3000:5048, 5000:7048] = face
    alone = find_landmarks(Photo(Path("face.png"), face))[0]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    points = find_landmarks(Photo(Path("canvas.png"), canvas))[0]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    eyes = np.linalg.norm(alone[36] - alone[45])
    print((after - before) * 1024, np.abs(points - alone - (5000, 3000)).max() / eyes)
""")


def test_a_100_megapixel_photo_is_detected_on_a_downscaled_copy(tmp_path):
    """Points come back in original pixels; the detector never sees the 100 MP image
    (dlib's HOG pyramid on it needs ~1 GB and half a minute)."""
    run = subprocess.run([sys.executable, "-c", DETECT_PROBE], env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    peak, error = (float(v) for v in run.stdout.split())
    assert error < 0.05  # of the eye distance: same face, same place
    assert peak < 400e6, f"{peak / 1e9:.2f} GB"


def test_texture_size_is_bounded_by_what_fits_in_memory(tmp_path, astronaut):
    """The texture stage keeps per-texel arrays: 4096 peaks at 3.8 GB, 8192 needed > 5 GiB."""
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut[..., ::-1])
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", str(photo), "-o", str(out), "--texture-size", "8192"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--texture-size 8192: choose between 16 and 4096" in lines[0], run.stderr
    assert not out.exists()
