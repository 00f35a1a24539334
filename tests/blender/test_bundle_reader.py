"""io/bundle.py and io/npyio.py: plain Python (no bpy, no numpy in the reader). The bombs
are small files generated here; each is refused with one sentence (BundleError)."""

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import synth_bundle

from blender_flamefit.io import npyio
from blender_flamefit.io.bundle import BundleError, image_size, load_bundle, readable_versions, schema


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


def test_schema_is_the_backends():
    assert schema() == synth_bundle.SCHEMA  # from the checkout's backend (the zip ships a copy)
    assert set(readable_versions()) == {1, 2, 3}


@pytest.mark.parametrize("version", [1, 2])
def test_load_synthetic_bundle(tmp_path, version):
    folder = tmp_path / "synthetic_photo_result"
    synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / "synthetic_photo.png"), schema_version=version)
    b = load_bundle(folder)
    assert b.name == "synthetic_photo" and b.schema_version == version
    assert b.mesh["vertices"].shape[1] == 3
    assert [k[0] for k in b.shape_keys] == ["exp_000", "exp_001", "id_000"]
    assert len(b.sh) == 9 and len(b.landmarks_2d) == 68
    result = json.loads((folder / "result.json").read_text())
    pts = np.array(b.landmark_points())
    assert np.abs(pts - np.array(result["landmarks_3d"])).max() < 1e-6
    proj = np.array([b.camera.project(p) for p in pts])
    assert np.abs(proj - np.array(result["landmarks_2d"])).max() < 1e-3
    assert load_bundle(folder / "result.json").folder == b.folder
    if version == 1:  # no photo of its own: photo.path (outside) is never used
        assert b.basis_vertices is None and b.shape_key_values is None and b.photo_path is None
    else:
        assert b.photo_path == str(folder / "photo.png")
        deltas = np.array(b.mesh["shape_key_deltas"].data).reshape(3, -1)
        fitted = np.array(b.basis_vertices) + np.array(b.shape_key_values) @ deltas
        assert np.abs(fitted - np.array(b.mesh["vertices"].data)).max() < 1e-6


def _edit(folder, fn):
    path = folder / "result.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _refused(folder, message):
    with pytest.raises(BundleError) as err:
        load_bundle(folder)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("breakage, message", [
    (lambda f: _edit(f, lambda d: d.update(schema_version=4)), "schema version 4 is not supported"),
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
    _refused(synth_bundle_dir, message)


def test_inconsistent_mesh_arrays(synth_bundle_dir):
    mesh = dict(np.load(synth_bundle_dir / "mesh.npz"))
    mesh["faces"] = mesh["faces"].copy()
    mesh["faces"][0, 0] = 10 ** 6
    np.savez(synth_bundle_dir / "mesh.npz", **mesh)
    _refused(synth_bundle_dir, "faces index vertices outside")


def test_missing_photo_is_only_a_warning(tmp_path):
    synth_bundle.write_bundle(str(tmp_path / "b"), photo_path=str(tmp_path / "gone.png"), with_photo=False)
    b = load_bundle(tmp_path / "b")
    assert b.photo_path is None and "no photo" in b.warnings[0]


# --- #11.12: every file stays inside the bundle folder ------------------------------------
def _outside_png(folder):
    path = folder.parent / "secret.png"
    synth_bundle.write_png(str(path), np.zeros((8, 8, 3), np.uint8))
    return path


@pytest.mark.parametrize("key", ["albedo", "overlay", "photo"])
def test_absolute_and_parent_paths_are_refused(synth_bundle_dir, key):
    outside = _outside_png(synth_bundle_dir)
    _edit(synth_bundle_dir, lambda d: d["files"].update({key: str(outside)}))
    _refused(synth_bundle_dir, f"files.{key}")
    _edit(synth_bundle_dir, lambda d: d["files"].update({key: "../secret.png"}))
    _refused(synth_bundle_dir, "points outside the bundle folder")


def test_symlinks_out_of_the_bundle_are_refused(synth_bundle_dir):
    outside = _outside_png(synth_bundle_dir)
    os.remove(synth_bundle_dir / "photo.png")
    os.symlink(outside, synth_bundle_dir / "photo.png")
    _refused(synth_bundle_dir, "files.photo ('photo.png') points outside the bundle folder")
    # a link inside the folder is fine, and so is a symlinked bundle folder
    os.remove(synth_bundle_dir / "photo.png")
    shutil.copy(synth_bundle_dir / "overlay.png", synth_bundle_dir / "real.png")
    os.symlink("real.png", synth_bundle_dir / "photo.png")
    os.symlink(synth_bundle_dir, synth_bundle_dir.parent / "link")
    b = load_bundle(synth_bundle_dir.parent / "link")
    assert b.photo_path == str(synth_bundle_dir / "real.png")


def test_photo_path_in_json_is_never_loaded(tmp_path):
    """result.json's photo.path names any file on disk: the reader uses files.photo only."""
    synth_bundle.write_bundle(str(tmp_path / "b"), photo_path=str(tmp_path / "elsewhere.png"))
    b = load_bundle(tmp_path / "b")
    assert b.photo_path == str(tmp_path / "b" / "photo.png")
    _edit(tmp_path / "b", lambda d: d["files"].pop("photo"))
    assert load_bundle(tmp_path / "b").photo_path is None


def test_fifo_is_not_a_file(synth_bundle_dir):
    os.remove(synth_bundle_dir / "albedo.png")
    os.mkfifo(synth_bundle_dir / "albedo.png")
    _refused(synth_bundle_dir, "incomplete: missing albedo.png")


# --- #11.13: malformed arrays, bombs, absurd numbers ----------------------------------------
def _npy_with_header(header: str, body: bytes = b"") -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def _replace_member(folder, name, raw):
    src = dict(np.load(folder / "mesh.npz"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, arr in src.items():
            if key != name:
                out = io.BytesIO()
                np.save(out, arr)
                zf.writestr(f"{key}.npy", out.getvalue())
        zf.writestr(f"{name}.npy", raw)
    (folder / "mesh.npz").write_bytes(buf.getvalue())


@pytest.mark.parametrize("header", [
    "{'descr': '', 'fortran_order': False, 'shape': (2, 3)}",
    "{'descr': '<Uabc', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': '<i4', 'fortran_order': False, 'shape': ('a', 3)}",
    "{'descr': '<i4', 'fortran_order': False, 'shape': (-1, 3)}",
    "{'descr': '<i4', 'fortran_order': 'no', 'shape': (2, 3)}",
    "{'descr': '<i4', 'fortran_order': False}",
    "[" * 5000 + "]" * 5000,
])
def test_malformed_npy_headers(synth_bundle_dir, header):
    _replace_member(synth_bundle_dir, "faces", _npy_with_header(header, bytes(24)))
    _refused(synth_bundle_dir, "cannot read the mesh")


def test_zip_bombed_mesh_is_refused_from_the_headers(synth_bundle_dir):
    """300 MiB of zeros in a ~300 KB member: refused from the declared sizes, before inflating."""
    V = int(np.load(synth_bundle_dir / "mesh.npz")["vertices"].shape[0])
    K = 300 * 2 ** 20 // (12 * V)
    src = dict(np.load(synth_bundle_dir / "mesh.npz"))
    with zipfile.ZipFile(synth_bundle_dir / "mesh.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in src.items():
            if key != "shape_key_deltas":
                out = io.BytesIO()
                np.save(out, arr)
                zf.writestr(f"{key}.npy", out.getvalue())
        header = _npy_with_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({K}, {V}, 3)}}")
        with zf.open("shape_key_deltas.npy", "w", force_zip64=True) as fh:
            fh.write(header)
            chunk = bytes(2 ** 22)
            left = K * V * 12
            while left:
                fh.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
    assert (synth_bundle_dir / "mesh.npz").stat().st_size < 2 * 2 ** 20
    _refused(synth_bundle_dir, "MiB allowed")


def test_header_and_zip_directory_must_agree(synth_bundle_dir):
    """A member whose header declares more data than the member holds (a lying size)."""
    _replace_member(synth_bundle_dir, "faces", _npy_with_header(
        "{'descr': '<i4', 'fortran_order': False, 'shape': (100000000, 3)}", bytes(24)))
    _refused(synth_bundle_dir, "declares 1200000000 bytes")


def test_deep_json_nesting(synth_bundle_dir):
    text = (synth_bundle_dir / "result.json").read_text()
    (synth_bundle_dir / "result.json").write_text(text[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}")
    _refused(synth_bundle_dir, "nested too deeply")
    (synth_bundle_dir / "result.json").write_text(text[:-1] + ', "x": ' + "[" * 200 + "]" * 200 + "}")
    _refused(synth_bundle_dir, "nested too deeply")


def _set_array(folder, name, fn):
    mesh = dict(np.load(folder / "mesh.npz"))
    mesh[name] = mesh[name].copy()
    fn(mesh[name])
    np.savez(folder / "mesh.npz", **mesh)


@pytest.mark.parametrize("name, value", [
    ("shape_key_deltas", np.nan), ("shape_key_deltas", np.inf), ("uv_coords", np.inf), ("uv_coords", np.nan),
    ("landmark_bary", np.nan), ("landmark_bary", 7.0), ("vertices", 1e30), ("basis_vertices", np.nan),
    ("shape_key_values", np.inf), ("shape_key_ranges", np.nan),
])
def test_non_finite_arrays(synth_bundle_dir, name, value):
    _set_array(synth_bundle_dir, name, lambda a: a.reshape(-1).__setitem__(5 % a.size, value))
    _refused(synth_bundle_dir, name)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["camera"].update(focal_px=[1e308, 1e308]), "camera.focal_px has an absurd value"),
    (lambda d: d["camera"].update(focal_px=[3e5, 3e5]), "focal length"),
    (lambda d: d["camera"].update(focal_px=[0.5, 0.5]), "focal length"),
    (lambda d: d["camera"].update(image_size=[1e9, 1e9]), "image size"),
    (lambda d: d["camera"].update(image_size=[70000, 10]), "image size"),
    (lambda d: d["camera"].update(principal_px=[1e7, 5]), "principal point"),
    (lambda d: d["camera"]["world_to_camera"][0].__setitem__(0, 50.0), "not a rotation"),
    (lambda d: d.update(schema_version=True), "schema version True is not supported"),
    (lambda d: d.update(schema_version=2.0), "schema version 2.0 is not supported"),
    (lambda d: d["lights"]["sh"][0].__setitem__(0, 1e300), "lights.sh row"),
    (lambda d: d["files"].update(mesh=7), "files.mesh must be a file name"),
])
def test_absurd_numbers(synth_bundle_dir, edit, message):
    _edit(synth_bundle_dir, edit)
    _refused(synth_bundle_dir, message)


def test_huge_albedo_header_is_refused(synth_bundle_dir):
    raw = bytearray((synth_bundle_dir / "albedo.png").read_bytes())
    raw[16:24] = (100000).to_bytes(4, "big") * 2  # IHDR width, height
    (synth_bundle_dir / "albedo.png").write_bytes(bytes(raw))
    _refused(synth_bundle_dir, "100000x100000 pixels is refused")


def test_a_photo_of_another_size_is_not_the_background(synth_bundle_dir):
    synth_bundle.write_png(str(synth_bundle_dir / "photo.png"), np.zeros((320, 256, 3), np.uint8))  # sideways
    b = load_bundle(synth_bundle_dir)
    assert b.photo_path is None and "256x320" in b.warnings[0]


def test_image_size_reads_png_and_jpeg_headers(tmp_path):
    synth_bundle.write_png(str(tmp_path / "a.png"), np.zeros((7, 11, 3), np.uint8))
    assert image_size(str(tmp_path / "a.png")) == (11, 7)
    jpeg = tmp_path / "a.jpg"
    # SOI, an APP0 segment, then a baseline frame header of 13 x 5 pixels
    jpeg.write_bytes(b"\xff\xd8" + b"\xff\xe0\x00\x04\x00\x00" + b"\xff\xc0\x00\x0b\x08\x00\x05\x00\x0d\x01\x01\x11\x00")
    assert image_size(str(jpeg)) == (13, 5)
    assert image_size(str(tmp_path / "none.png")) is None


def test_npy_header_parser_never_raises_other_errors():
    for text in ["{", "{'descr': 5, 'fortran_order': False, 'shape': ()}", "1e999", "{'descr': '<f4'} " * 3,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (True, 3)}", "()" * 4000]:
        with pytest.raises(npyio.NpyError):
            npyio.parse_header(_npy_with_header(text), "x")
