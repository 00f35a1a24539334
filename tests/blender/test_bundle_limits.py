"""#17 items 4, 10 and 14: hostile bundles the reader (io/bundle.py, io/npyio.py) must refuse
with one sentence, fast and at flat memory, before Blender decodes anything. The bombs are
real files generated here; the risky reads run in a child process under an address-space
limit, so a regression fails with a MemoryError instead of eating the machine."""

import bz2
import io
import json
import resource
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from blender_flamefit.io import npyio
from blender_flamefit.io.bundle import BundleError, load_bundle

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose add-on is under test
CHILD_MEMORY = 128 * 2 ** 20  # address space of the reading child; plain Python needs ~20 MB


# --- builders of hostile files ---------------------------------------------------------
def npy_bytes(arr) -> bytes:
    out = io.BytesIO()
    np.save(out, arr)
    return out.getvalue()


def zip_bytes(members) -> bytes:
    """A zip of (name, method, data size, crc, stored bytes) members, written by hand so the
    declared sizes may differ from what the stored bytes inflate to."""
    body, directory = b"", b""
    for name, method, size, crc, stored in members:
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(stored), size, len(name), 0)
        directory += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, len(body))
        directory += name.encode()
        body += b"PK\x03\x04" + fields + name.encode() + stored
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(directory), len(body), 0)
    return body + directory + b"PK\x05\x06" + end


def bz2_bomb_mesh(folder, inflated: int, member="landmark_face_idx"):
    """Rewrite the bundle's mesh.npz with `member` compressed by bzip2: it declares its true
    size and CRC, but its bzip2 stream goes on with `inflated` zero bytes, which zipfile
    inflates whole on the first read (zipfile truncates the excess, so the array is valid)."""
    arrays = dict(np.load(folder / "mesh.npz"))
    members = []
    for key, arr in arrays.items():
        raw = npy_bytes(arr)
        if key != member:
            members.append((f"{key}.npy", zipfile.ZIP_STORED, len(raw), zlib.crc32(raw), raw))
            continue
        packer = bz2.BZ2Compressor(9)
        stored = packer.compress(raw)
        zeros = bytes(2 ** 24)
        for start in range(0, inflated, len(zeros)):
            stored += packer.compress(zeros[:inflated - start])
        stored += packer.flush()
        members.append((f"{key}.npy", zipfile.ZIP_BZIP2, len(raw), zlib.crc32(raw), stored))
    (folder / "mesh.npz").write_bytes(zip_bytes(members))


def text_array_mesh(folder, member: str, count: int, chars: int = 1):
    """Rewrite mesh.npz with `member` as `count` text elements (deflated zeros: a small file)."""
    arrays = dict(np.load(folder / "mesh.npz"))
    with zipfile.ZipFile(folder / "mesh.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            if key != member:
                zf.writestr(f"{key}.npy", npy_bytes(arr))
        header = npy_bytes(np.zeros((0,), f"<U{chars}"))  # numpy's header for shape (0,) ...
        header = header.replace(b"(0,)", f"({count},)".encode())  # ... declaring `count`
        header = header[:8] + struct.pack("<H", len(header) - 10) + header[10:]
        with zf.open(f"{member}.npy", "w", force_zip64=True) as fh:
            fh.write(header)
            left, zeros = count * 4 * chars, bytes(2 ** 22)
            while left:
                fh.write(zeros[:min(left, len(zeros))])
                left -= min(left, len(zeros))


def tiff_bytes(width: int, height: int) -> bytes:
    """A valid RGB TIFF of width x height: every row a strip pointing at the same deflated row
    of zeros, so 20000 x 20000 pixels (1.2 GB decoded) take ~160 KB."""
    row = zlib.compress(bytes(3 * width), 9)
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
            (273, 4, height, None), (277, 3, 1, 3), (278, 4, 1, 1), (279, 4, height, None), (284, 3, 1, 1)]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    bits_at, offsets_at = data_at, data_at + 6
    counts_at = offsets_at + 4 * height
    row_at = counts_at + 4 * height
    where = {258: bits_at, 273: offsets_at, 279: counts_at}
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = where.get(tag, value)
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and tag != 258
                                                         else struct.pack("<I", value))
    return (b"II*\x00" + struct.pack("<I", ifd_at) + ifd + struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8)
            + struct.pack(f"<{height}I", *([row_at] * height)) + struct.pack(f"<{height}I", *([len(row)] * height))
            + row)


# --- reading in a child under a memory limit -------------------------------------------
CHILD = """
import sys, time
sys.modules["bpy"] = None  # the bpy-free io package is all the reader needs
sys.path.insert(0, sys.argv[1])
from blender_flamefit.io.bundle import BundleError, load_bundle
start = time.monotonic()
try:
    bundle = load_bundle(sys.argv[2])
    print("LOADED", bundle.photo_path, bundle.warnings)
except BundleError as exc:
    print("REFUSED", exc)
print("SECONDS", time.monotonic() - start)
"""


def load_in_child(folder, memory=CHILD_MEMORY, timeout=60):
    """(stdout, seconds) of load_bundle(folder) in a child limited to `memory` bytes of address
    space; fails the test on any other outcome (a MemoryError, a traceback, a timeout)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(folder)], capture_output=True, text=True,
                         timeout=timeout, preexec_fn=limit)
    assert out.returncode == 0, f"the reader crashed: {out.stderr.strip()[-400:]}"
    lines = out.stdout.splitlines()
    return lines[0], float(lines[-1].split()[1])


def refused(folder, message):
    with pytest.raises(BundleError) as err:
        load_bundle(folder)
    assert message in str(err.value) and "\n" not in str(err.value)
    return str(err.value)


# --- item 4: only stored or deflated zip members, read through a bounded stream --------------
def test_bzip2_bomb_member_is_refused_before_inflating(synth_bundle_dir):
    bz2_bomb_mesh(synth_bundle_dir, inflated=192 * 2 ** 20)
    assert (synth_bundle_dir / "mesh.npz").stat().st_size < 200_000
    line, seconds = load_in_child(synth_bundle_dir)
    assert line.startswith("REFUSED") and "'landmark_face_idx.npy' is compressed with bzip2" in line, line
    assert seconds < 1.0


def test_lzma_member_is_refused(synth_bundle_dir):
    """Not a bomb, but zipfile inflates lzma whole just the same: no method but numpy's own."""
    arrays = dict(np.load(synth_bundle_dir / "mesh.npz"))
    with zipfile.ZipFile(synth_bundle_dir / "mesh.npz", "w") as zf:
        for key, arr in arrays.items():
            zf.writestr(f"{key}.npy", npy_bytes(arr), zipfile.ZIP_LZMA if key == "faces" else zipfile.ZIP_STORED)
    refused(synth_bundle_dir, "member 'faces.npy' is compressed with lzma")


def test_a_huge_zip_directory_is_refused_before_it_is_parsed(synth_bundle_dir):
    """300 k directory entries (a 14 MB file): zipfile parses and keeps them all (4.6 s,
    180 MB) before the member count can be checked; the end record's directory size is read first."""
    local = zip_bytes([("a", zipfile.ZIP_STORED, 0, 0, b"")])
    entry = local[local.index(b"PK\x01\x02"):local.index(b"PK\x05\x06")]
    directory = entry * 300_000
    end = struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, len(directory), 31, 0)
    (synth_bundle_dir / "mesh.npz").write_bytes(local[:31] + directory + b"PK\x05\x06" + end)
    line, seconds = load_in_child(synth_bundle_dir, memory=64 * 2 ** 20)
    assert line.startswith("REFUSED") and "its zip directory is too large" in line, line
    assert seconds < 1.0


# --- item 10: hostile result.json -----------------------------------------------------------
def _edit_text(folder, fn):
    path = folder / "result.json"
    path.write_text(fn(path.read_text()), encoding="utf8")


def _with(text, fn):
    data = json.loads(text)
    fn(data)
    return json.dumps(data)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[:-1] + ', "x": ' + "7" * 5000 + "}", "an integer of 5000 digits"),  # Python's int() limit
    (lambda t: _with(t, lambda d: d["camera"]["image_size"].__setitem__(0, 10 ** 400)), "an integer of 401 digits"),
    (lambda t: t[:-1] + ', "x": NaN}', "NaN is not a number"),
    (lambda t: t[:-1] + ', "x": -Infinity}', "-Infinity is not a number"),
    (lambda t: t[:-1] + ', "x": 1e999}', "a number out of range (1e999)"),
    (lambda t: t.replace('"path": "', '"path": "\\ud800', 1), "text that is not valid Unicode"),  # a lone surrogate
])
def test_hostile_json_is_one_bundle_error(synth_bundle_dir, edit, message):
    _edit_text(synth_bundle_dir, edit)
    assert "not a" in refused(synth_bundle_dir, message)


def test_landmarks_3d_must_be_points(synth_bundle_dir):
    """landmarks_3d is read when the mesh has no landmark embedding: checked up front."""
    _edit_text(synth_bundle_dir, lambda t: _with(t, lambda d: d.update(landmarks_3d=[["a", "b", "c"]])))
    refused(synth_bundle_dir, "landmarks_3d must be a list of [x, y, z]")


# --- item 14: images by their content, arrays by their header --------------------------------
def test_a_tiff_named_albedo_png_is_refused(synth_bundle_dir):
    """20000 x 20000 pixels (Blender would decode 1.2 GB of them) in a 160 KB file."""
    (synth_bundle_dir / "albedo.png").write_bytes(tiff_bytes(20000, 20000))
    assert (synth_bundle_dir / "albedo.png").stat().st_size < 200_000
    refused(synth_bundle_dir, "albedo.png is a TIFF image; a FlameFit bundle's images are PNG or JPEG")


@pytest.mark.parametrize("content, found", [
    (tiff_bytes(320, 256), "a TIFF image"),
    (b"BM" + bytes(60), "a BMP image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), "not a readable PNG or JPEG image"),  # no IHDR where it belongs
])
def test_a_photo_that_is_not_png_or_jpeg_is_no_background(synth_bundle_dir, content, found):
    """The photo is optional: the import goes on, without a camera background and saying why."""
    (synth_bundle_dir / "photo.png").write_bytes(content)
    bundle = load_bundle(synth_bundle_dir)
    assert bundle.photo_path is None
    assert found in bundle.warnings[0] and "the camera has no background image" in bundle.warnings[0]


@pytest.mark.parametrize("member, count, message", [
    ("vertices", 60_000_000, "vertices has dtype <U1, expected float32"),
    ("shape_key_names", 60_000_000, "shape_key_names has shape (60000000,), expected (K <= 2000)"),
])
def test_text_arrays_are_refused_from_the_header(synth_bundle_dir, member, count, message):
    """60 M text elements (240 MB declared, a ~250 KB file) would become 60 M Python strings."""
    text_array_mesh(synth_bundle_dir, member, count)
    assert (synth_bundle_dir / "mesh.npz").stat().st_size < 1_000_000
    line, seconds = load_in_child(synth_bundle_dir)
    assert line.startswith("REFUSED") and message in line, line
    assert seconds < 1.0


def test_long_shape_key_names_are_refused(synth_bundle_dir):
    text_array_mesh(synth_bundle_dir, "shape_key_names", 3, chars=100_000)
    refused(synth_bundle_dir, "names of 100000 characters")


def test_fortran_order_is_reordered_at_c_speed(tmp_path):
    """1 M vertices in Fortran order took 6.8 s in a Python loop per element."""
    vertices = np.asfortranarray(np.random.default_rng(0).random((1_000_000, 3), np.float32))
    deltas = np.asfortranarray(np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3))
    names = np.asfortranarray(np.array([["a", "bb"], ["ccc", "d"], ["e", "f"]]))
    np.savez(tmp_path / "f.npz", vertices=vertices, deltas=deltas, names=names)
    start = time.monotonic()
    got = npyio.read_npz(tmp_path / "f.npz")
    assert time.monotonic() - start < 1.5
    assert np.array_equal(np.frombuffer(got["vertices"].data, np.float32).reshape(vertices.shape), vertices)
    assert np.array_equal(np.array(got["deltas"].tolist(), np.float32), deltas)
    assert got["names"].tolist() == names.tolist()


def test_a_fortran_order_bundle_loads_like_the_c_order_one(synth_bundle_dir):
    c_order = load_bundle(synth_bundle_dir)
    arrays = dict(np.load(synth_bundle_dir / "mesh.npz"))
    np.savez(synth_bundle_dir / "mesh.npz", **{k: np.asfortranarray(a) for k, a in arrays.items()})
    assert all(np.load(synth_bundle_dir / "mesh.npz")[k].flags.f_contiguous for k in arrays)
    f_order = load_bundle(synth_bundle_dir)
    assert {k: (a.shape, list(a.data)) for k, a in f_order.mesh.items()} == \
        {k: (a.shape, list(a.data)) for k, a in c_order.mesh.items()}
    # a shape no schema array has, with a reorder of one step per element, is refused
    np.save(synth_bundle_dir / "odd.npy", np.asfortranarray(np.zeros((4,) * 8, np.uint8)))
    with pytest.raises(npyio.NpyError, match="too slow to reorder"):
        npyio.read_npy(synth_bundle_dir / "odd.npy")
