"""bundle.py / npyio.py: plain Python (no bpy, no numpy in the reader)."""

import json
import os
import shutil

import numpy as np
import pytest

from blender_flamefit.io import npyio
from blender_flamefit.io.bundle import SCHEMA_VERSION, BundleError, load_bundle


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(24, dtype=np.int64).reshape(2, 3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    np.arange(6, dtype=">f4").reshape(2, 3),
    np.array(["exp_000", "jaw_open", "ü"]),
    np.array([True, False]),
    np.zeros((0, 3), np.int32),
])
def test_npy_reader_matches_numpy(tmp_path, arr):
    np.savez_compressed(tmp_path / "a.npz", a=arr)
    got = npyio.read_npz(tmp_path / "a.npz")["a"]
    assert got.shape == arr.shape
    assert np.array_equal(np.array(got.tolist(), dtype=arr.dtype).reshape(arr.shape), arr)


def test_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(npyio.NpyError, match="pickle"):
        npyio.read_npz(tmp_path / "o.npz")


def test_load_synthetic_bundle(synth_bundle_dir):
    b = load_bundle(synth_bundle_dir)
    assert b.name == "synthetic_photo"
    assert b.mesh["vertices"].shape[1] == 3
    assert [k[0] for k in b.shape_keys] == ["exp_000", "exp_001", "id_000"]
    assert len(b.sh) == 9 and len(b.landmarks_2d) == 68
    result = json.loads((synth_bundle_dir / "result.json").read_text())
    pts = np.array(b.landmark_points())
    assert np.abs(pts - np.array(result["landmarks_3d"])).max() < 1e-6
    proj = np.array([b.camera.project(p) for p in pts])
    assert np.abs(proj - np.array(result["landmarks_2d"])).max() < 1e-3
    assert load_bundle(synth_bundle_dir / "result.json").folder == b.folder


def _edit(folder, fn):
    path = folder / "result.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breakage, message", [
    (lambda f: _edit(f, lambda d: d.update(schema_version=2)), "schema version 2 is not supported"),
    (lambda f: _edit(f, lambda d: d.pop("schema_version")), "no schema_version"),
    (lambda f: os.remove(f / "albedo.png"), "incomplete: missing albedo.png"),
    (lambda f: os.remove(f / "mesh.npz"), "incomplete: missing mesh.npz"),
    (lambda f: (f / "result.json").write_text("{not json"), "not a readable FlameFit result"),
    (lambda f: (f / "mesh.npz").write_bytes(b"junk"), "cannot read the mesh"),
    (lambda f: _edit(f, lambda d: d["camera"].update(focal_px=[1.0])), "focal_px must be 2 finite numbers"),
    (lambda f: _edit(f, lambda d: d["lights"].update(sh=[[0, 0, 0]] * 4)), "lights.sh must be 9 rows"),
    (lambda f: shutil.rmtree(f), "no FlameFit result"),
])
def test_bad_bundles_give_one_clear_sentence(synth_bundle_dir, breakage, message):
    breakage(synth_bundle_dir)
    with pytest.raises(BundleError) as err:
        load_bundle(synth_bundle_dir)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_inconsistent_mesh_arrays(synth_bundle_dir):
    mesh = dict(np.load(synth_bundle_dir / "mesh.npz"))
    mesh["faces"] = mesh["faces"].copy()
    mesh["faces"][0, 0] = 10 ** 6
    np.savez(synth_bundle_dir / "mesh.npz", **mesh)
    with pytest.raises(BundleError, match="faces index vertices outside"):
        load_bundle(synth_bundle_dir)


def test_missing_photo_is_only_a_warning(tmp_path):
    import synth_bundle

    synth_bundle.write_bundle(str(tmp_path / "b"), photo_path=str(tmp_path / "gone.png"), with_photo=False)
    b = load_bundle(tmp_path / "b")
    assert b.photo_path is None and "gone" in b.warnings[0]
    assert SCHEMA_VERSION == 1
