"""A real bundle (schema 2) read back: the upright photo it carries (#11.14), Basis +
shape keys reproducing the fitted mesh (#12.5), and the reader's rules (schema.json, the
confinement of `files.*`, what counts as a FlameFit bundle)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_cli_fit import flamefit

from flamefit.bundle import read_result, validate_bundle
from flamefit.bundle.reader import bundle_file, is_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("exif")
    raw = np.ascontiguousarray(np.rot90(astronaut[:, 64:448], 1))  # stored turned; EXIF 6 turns it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(folder / "phone.jpg", quality=95, exif=exif)
    out = folder / "bundle"
    proc = flamefit("fit", folder / "phone.jpg", "-o", out, "--stages", "landmarks", "--texture-size", "64")
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_bundle_carries_the_upright_photo(bundle, astronaut):
    result = read_result(bundle)
    view = result["views"][0]
    assert result["schema_version"] == 3 and view["files"]["photo"] == "photo.jpg"
    with Image.open(bundle / "photo.jpg") as photo:
        assert photo.size == (view["photo"]["width"], view["photo"]["height"]) == (384, 512)  # upright W x H
        upright = np.asarray(photo.convert("RGB"), np.float32)
    assert np.abs(upright - astronaut[:, 64:448]).mean() < 6  # the same pixels, JPEG-close
    assert validate_bundle(bundle) == []


def test_basis_and_shape_key_values_give_the_fitted_mesh(bundle):
    with np.load(bundle / "mesh.npz") as mesh:
        rebuilt = mesh["basis_vertices"] + np.tensordot(mesh["shape_key_values"], mesh["shape_key_deltas"], axes=1)
        assert np.abs(rebuilt - mesh["vertices"]).max() < 1e-4  # metres
        assert mesh["shape_key_values"].shape == (len(mesh["shape_key_names"]),)


def test_files_entries_are_confined_to_the_bundle(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    outside = tmp_path / "secret.png"
    outside.write_bytes((copy / "albedo.png").read_bytes())
    (copy / "link.png").symlink_to(outside)
    original = read_result(copy)
    for entry in (str(outside), "../secret.png", "link.png", "", 7):
        result = json.loads(json.dumps(original))
        result["files"]["albedo"] = entry
        (copy / "result.json").write_text(json.dumps(result))
        with pytest.raises(ValueError):
            bundle_file(copy, entry)
        assert validate_bundle(copy) and not is_bundle(copy), entry
    for bad in ({"schema_version": True}, {"schema_version": 4}, {"schema_version": 2}, {"schema_version": 3, "files": {}},
                {"views": []}):
        (copy / "result.json").write_text(json.dumps({**original, **bad}))
        assert not is_bundle(copy), bad
    (copy / "result.json").write_text(json.dumps(original))
    assert is_bundle(copy) and validate_bundle(copy) == []


def test_zoom_inset_goes_to_the_corner_that_hides_least_of_the_face():
    from flamefit.bundle.pictures import inset_corner

    H, W, size = 1000, 2000, 450
    assert inset_corner((H, W), size, (100, 100, 400, 400)) == (W - size - 4, 4)  # face top left: top right
    assert inset_corner((H, W), size, (1500, 50, 1800, 300)) == (4, 4)
    assert inset_corner((H, W), size, (0, 0, W, 480)) == (4, H - size - 4)  # across the top: bottom left
