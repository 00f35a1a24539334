"""#11.7: the safe unpickler is bounded (objects as expanded, nesting depth, declared
array sizes inside .npy/.npz) and allow-listed functions cannot be changed by a pickle.
The bombs are generated here, small (the zip bomb is 5 MB on disk)."""

import copyreg
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flamefit.errors import ModelFileError
from flamefit.models.safe_pickle import MAX_DEPTH, MAX_READ_BYTES, load_npy, load_npz, load_pickle

REPO = Path(__file__).resolve().parents[1]


def flamefit(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFIT_")}
    env.update(FLAMEFIT_THREADS="1", PYTHONPATH=str(REPO / "backend"))
    return subprocess.run([sys.executable, "-m", "flamefit.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def shared_lists_bomb(levels=40):
    """A few hundred bytes that expand to 2**levels lists if followed naively."""
    nested = []
    for _ in range(levels):
        nested = [nested, nested]
    return pickle.dumps({"v_template": nested, "f": [[0, 1, 2]]}, protocol=2)


def test_shared_nested_lists_are_refused_not_expanded(tmp_path):
    bomb = tmp_path / "generic_model.pkl"
    bomb.write_bytes(shared_lists_bomb())
    assert bomb.stat().st_size < 1000
    for args in (("model-info", str(bomb)), ("models", "--model", str(bomb), "--cache-dir", str(tmp_path / "c"))):
        run = flamefit(*args, timeout=120)  # today: > 3 GB and no end
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "expands to more than" in lines[0], run.stderr


def test_sharing_that_stays_small_still_loads(tmp_path):
    row = [1.0, 2.0, 3.0]
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"v_template": [row] * 1000}, protocol=2))
    assert np.asarray(load_pickle(path)["v_template"]).shape == (1000, 3)


def test_deep_nesting_is_refused_in_one_line(tmp_path):
    nested = []
    for _ in range(MAX_DEPTH + 50):
        nested = [nested]
    path = tmp_path / "deep.pkl"
    path.write_bytes(pickle.dumps({"x": nested}, protocol=2))
    with pytest.raises(ModelFileError, match=f"more than {MAX_DEPTH} deep"):
        load_pickle(path)


def npy_header(shape, descr="<f4"):
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def npy_bytes(array):
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def test_npz_zip_bomb_is_refused_from_its_headers(tmp_path):
    """5 MB on disk, 1 GiB + declared (and really compressed) in v_template."""
    rows = MAX_READ_BYTES // 12 + 1000
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("v_template.npy", "w", force_zip64=True) as member:
            member.write(npy_header((rows, 3)))
            zeros, left = bytes(16 << 20), rows * 12
            while left:
                member.write(zeros[:min(left, len(zeros))])
                left -= min(left, len(zeros))
        archive.writestr("f.npy", npy_bytes(np.array([[0, 1, 2]])))
    assert bomb.stat().st_size < 8e6
    run = flamefit("model-info", str(bomb), timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "declares an array of shape" in lines[0], run.stderr


def test_declared_sizes_must_match_the_data(tmp_path):
    """A header claiming more data than the file holds fails before the allocation."""
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("v_template.npy", npy_header((10_000_000, 3)) + bytes(1200))
    with pytest.raises(ModelFileError, match="declares 120000000 bytes of data, the file holds 1200"):
        load_npz(lying)
    huge = tmp_path / "huge.npy"
    huge.write_bytes(npy_header((1 << 40, 1 << 20)) + bytes(64))
    with pytest.raises(ModelFileError, match="declares an array of shape"):
        load_npy(huge)


def _build_on_global(module, name, attribute="__name__", value="hacked"):
    """GLOBAL module.name, then BUILD with slot state {attribute: value} (a setattr)."""
    text = lambda s: b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N}" + text(attribute) + text(value)
            + b"s\x86b.")


@pytest.mark.parametrize("module,name", [("copyreg", "_reconstructor"), ("numpy.core.numeric", "_frombuffer"),
                                         ("_codecs", "encode")])
def test_a_pickle_cannot_change_an_allow_listed_function(tmp_path, module, name):
    path = tmp_path / "mutate.pkl"
    path.write_bytes(_build_on_global(module, name))
    with pytest.raises(ModelFileError, match=f"tries to modify {module}.{name}"):
        load_pickle(path)
    assert copyreg._reconstructor.__name__ == "_reconstructor"
    from numpy._core import numeric

    assert numeric._frombuffer.__name__ == "_frombuffer"


def test_numpy_ndarray_cannot_be_called_directly(tmp_path):
    """np.ndarray((10**10,)) would hand out 80 GB of uninitialised memory."""
    path = tmp_path / "alloc.pkl"
    path.write_bytes(b"\x80\x02cnumpy\nndarray\n\x8a\x05\x00\xe4\x0bT\x02\x85\x85R.")
    with pytest.raises(ModelFileError, match=r"names numpy\.ndarray \(called directly\)"):
        load_pickle(path)


def test_an_npy_of_another_format_version_is_named_in_one_line(tmp_path):
    """numpy's 3.0 header (utf-8 field names) has no public reader: the message says which
    version, not an AttributeError from a private numpy function."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    data = bytearray(buffer.getvalue())
    data[6] = 3  # the major version byte after b"\x93NUMPY"
    (tmp_path / "v3.npy").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"format version 3\.0 is not read") as info:
        load_npy(tmp_path / "v3.npy")
    assert "\n" not in str(info.value)
