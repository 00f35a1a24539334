"""#17.4: an .npz member compressed with bzip2 or lzma is refused, naming the member and
its compression, before a byte of it is inflated. Python's zipfile inflates such a member
whole on its first read(), whatever sizes the zip declares: the ~2 KB bzip2 bomb built
here inflates to 2.25 GB. Every .npz the backend reads from a user (models, texture spaces,
bundle mesh.npz, texture-space build work files) goes through the one bounded reader.

The bombs are tiny files; the runs that read them have an address-space limit, so code
that inflated them would fail in seconds instead of filling the machine's memory."""

from __future__ import annotations

import bz2
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HEADROOM = 1 << 30  # address space a child may add to what it uses before it reads the bomb
BOMB_BLOCKS = 50  # x 45 MB of zeros: 2.25 GB from under 2 KB


def npy_bytes(array) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


@functools.cache
def _bzip2_block(data: bytes) -> tuple[str, int]:
    """(the bits of the one block bzip2 makes of `data`, that block's CRC)."""
    compressed = bz2.compress(data, 9)
    bits = "".join(f"{byte:08b}" for byte in compressed)
    end = bits.rindex(f"{0x177245385090:048b}")  # end-of-stream marker, then the stream CRC
    return bits[32:end], int(bits[32 + 48:32 + 80], 2)  # after "BZh9": block magic (48 bits), CRC


def bzip2_bomb(head: bytes, zero_blocks: int) -> bytes:
    """A valid bzip2 stream of `head` then zero_blocks x 45,000,000 zero bytes, ~32 bytes a
    block: one compressed block of zeros, repeated (compressing GBs of zeros takes seconds
    per GB; bzip2 blocks are bit strings, each with its CRC, folded into the stream CRC)."""
    blocks = [_bzip2_block(head)] + [_bzip2_block(bytes(45_000_000))] * zero_blocks
    stream_crc = 0
    for _, crc in blocks:
        stream_crc = (((stream_crc << 1) | (stream_crc >> 31)) & 0xFFFFFFFF) ^ crc
    bits = f"{int.from_bytes(b'BZh9', 'big'):032b}" + "".join(b for b, _ in blocks)
    bits += f"{0x177245385090:048b}{stream_crc:032b}"
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The 2.25 GB bzip2 stream of a (3,) float32 .npy; its construction checked on 3 blocks
    (inflated 64 MB at a time: the check stays small)."""
    head = npy_bytes(np.zeros(3, np.float32))
    inflater = bz2.BZ2Decompressor()
    total = len(inflater.decompress(bzip2_bomb(head, 3), 64 << 20))
    while not inflater.eof:
        total += len(inflater.decompress(b"", 64 << 20))
    assert total == len(head) + 3 * 45_000_000
    stream = bzip2_bomb(head, BOMB_BLOCKS)
    assert len(stream) < 2000
    return stream


def write_npz(path, arrays: dict, odd: str | None = None, method=zipfile.ZIP_BZIP2, bomb: bytes | None = None):
    """An .npz of `arrays` as numpy writes it (deflate), except member `odd`: compressed
    with `method`, or, given `bomb` (a bzip2 stream), holding it: the zip then declares
    ~2 KB for a member that inflates to gigabytes."""
    order = sorted(arrays, key=lambda name: name != odd)  # `odd` first: its headers are easy to find
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in order:
            if name == odd and bomb is not None:  # stored as is, then marked bzip2 below
                archive.writestr(f"{name}.npy", bomb, compress_type=zipfile.ZIP_STORED)
            else:
                archive.writestr(f"{name}.npy", npy_bytes(arrays[name]), compress_type=method if name == odd else None)
        central = archive.start_dir
    if bomb is not None:
        data = bytearray(Path(path).read_bytes())
        for offset in (8, central + 10):  # the method field of its local and its central header
            data[offset:offset + 2] = zipfile.ZIP_BZIP2.to_bytes(2, "little")
        Path(path).write_bytes(bytes(data))
    return Path(path)


def limited(code: str, *args, timeout=120) -> subprocess.CompletedProcess:
    """Run Python `code` (sys.argv[1:] = args) with its address space capped at what it has
    mapped after importing flamefit and torch, plus HEADROOM: a bomb inflated fails fast."""
    prologue = ("import resource, sys\n"
                "import flamefit.cli, torch  # what a run maps anyway\n"
                "size = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024\n"
                f"resource.setrlimit(resource.RLIMIT_AS, (size + {HEADROOM}, size + {HEADROOM}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFIT_")}
    env.update(FLAMEFIT_THREADS="1", PYTHONPATH=str(REPO / "backend"))
    return subprocess.run([sys.executable, "-c", prologue + code, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


CLI = "sys.exit(flamefit.cli.main(sys.argv[1:]))"


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("flamefit: error: "), proc.stderr
    return lines[0]


def model_arrays() -> dict:
    return {"v_template": np.zeros((5, 3), np.float32), "f": np.array([[0, 1, 2]], np.int32)}


def test_model_info_refuses_a_bzip2_bomb_at_once(tmp_path, bomb):
    path = write_npz(tmp_path / "bomb.npz", model_arrays(), "v_template", bomb=bomb)
    assert path.stat().st_size < 2500
    line = one_line(limited(CLI, "model-info", path))  # today: 4.7 GB over 16 s
    assert "member v_template.npy: it is compressed with bzip2" in line, line


@pytest.mark.parametrize("method,name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")])
def test_any_member_numpy_does_not_write_is_refused(tmp_path, method, name):
    """Even a small one (numpy writes stored or deflate members only)."""
    path = write_npz(tmp_path / "odd.npz", model_arrays(), "f", method)
    line = one_line(limited(CLI, "model-info", path))
    assert f"member f.npy: it is compressed with {name}" in line, line


def test_a_texture_space_bomb_is_refused_before_it_is_read(tmp_path, bomb, flame_extract_path, astronaut):
    photo = tmp_path / "me.png"
    Image.fromarray(astronaut).save(photo)
    space = write_npz(tmp_path / "space.npz", {"mean": np.zeros((4, 4, 3), np.float32),
                                               "tex_dir": np.zeros((4, 4, 3, 2), np.float32)}, "tex_dir", bomb=bomb)
    out = tmp_path / "out"
    line = one_line(limited(CLI, "fit", photo, "-o", out, "--model", flame_extract_path, "--texture-space", space,
                            "--stages", "landmarks", "--cache-dir", tmp_path / "cache"))  # today: 4.7 GB over 13 s
    assert "member tex_dir.npy: it is compressed with bzip2" in line, line
    assert not out.exists()


REFUSED_IN = """
import json, time
from pathlib import Path
from flamefit.bundle import validate_bundle
from flamefit.errors import FlameFitError
from flamefit.textures.work import WorkFolder
start = time.perf_counter()
try:
%s
    outcome = repr(result)
except FlameFitError as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start}))
"""


def outcome(code: str, *args) -> str:
    """The `result` that `code` sets (repr) or the FlameFitError it raises, run in a limited
    child; it must take under a second."""
    proc = limited(REFUSED_IN % textwrap.indent(code, "    "), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["seconds"] < 1, found
    return found["outcome"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("bundle")
    Image.fromarray(astronaut).save(folder / "me.png")
    env = {**os.environ, "PYTHONPATH": str(REPO / "backend"), "FLAMEFIT_THREADS": "1"}
    env.pop("FLAMEFIT_FLAME_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", folder / "me.png", "-o", folder / "out",
                           "--stages", "landmarks", "--texture-size", "64"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder / "out"


@pytest.mark.parametrize("as_bomb", [False, True], ids=["small", "bomb"])
def test_the_bundle_validator_refuses_a_bzip2_mesh_member(bundle, tmp_path, bomb, as_bomb):
    """Small: today accepted as a valid bundle. Bomb: today 4.7 GB, then a traceback."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with np.load(bundle / "mesh.npz") as mesh:  # FlameFit's own file: deflate
        arrays = {name: mesh[name] for name in mesh.files}
    write_npz(copy / "mesh.npz", arrays, "vertices", bomb=bomb if as_bomb else None)
    problems = outcome("result = validate_bundle(sys.argv[1])", copy)
    assert "cannot read mesh.npz" in problems and "member vertices.npy: it is compressed with bzip2" in problems


def work_arrays() -> dict:
    return {"albedo": np.zeros((3, 4, 4), np.float16), "confidence": np.zeros(16, np.uint8), "info": np.array("{}")}


def test_a_build_work_file_with_a_bzip2_member_is_refused(tmp_path, bomb):
    """On --resume before any photo is fitted (today: accepted), and when the results are
    read for the PCA (today: the bomb inflated)."""
    root = tmp_path / "space.work"
    (root / "unwrapped").mkdir(parents=True)
    (root / "settings.json").write_text("{}")
    work_file = write_npz(root / "unwrapped" / "a-00000000.npz", work_arrays(), "albedo", bomb=bomb)
    resumed = outcome("result = WorkFolder(sys.argv[1], {}, resume=True)", root)
    assert "damaged build result (refuses to read member albedo.npy: it is compressed with bzip2" in resumed
    fresh = tmp_path / "fresh.work"
    loaded = outcome("folder = WorkFolder(sys.argv[1], {}, resume=False)\n"
                     "Path(sys.argv[2]).rename(folder.unwrapped / 'a-00000000.npz')\n"
                     "result = folder.load_all()", fresh, work_file)
    assert "albedo.npy: it is compressed with bzip2" in loaded, loaded


def test_a_huge_zip_directory_is_refused_from_its_end_record(tmp_path):
    """300 k directory entries (a 15 MB file): zipfile would parse and keep them all (4.6 s,
    180 MB) before the member count is checked; the end record's directory size comes first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.npy", b"")
    data = buffer.getvalue()
    start, end = data.index(b"PK\x01\x02"), data.index(b"PK\x05\x06")
    directory = data[start:end] * 300_000
    record = (b"PK\x05\x06" + (0).to_bytes(4, "little") + (0xFFFF).to_bytes(2, "little") * 2
              + len(directory).to_bytes(4, "little") + start.to_bytes(4, "little") + b"\x00\x00")
    path = tmp_path / "many.npz"
    path.write_bytes(data[:start] + directory + record)
    line = one_line(limited(CLI, "model-info", path))
    assert f"zip directory of {len(directory):,} bytes" in line, line
