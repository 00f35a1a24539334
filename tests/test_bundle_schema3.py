"""Result bundle schema 3 (#19, notes/s2/schema3.md): one subject, several views.

- A fit of two synthetic photos is written, validated and read back: one identity, per
  view its photo, camera (view 1's is the world), parameters, light, landmarks, metrics
  and files (photo-2 / overlay-2 / report-2), params.npz stacked on a view axis.
- Ownership: every view's files are the bundle's own; a user's file is foreign; a
  result.json naming a user's file as a view file does not make it ours.
- Schemas 1 and 2 still read: the same bundle rewritten in the older layouts validates
  and reads (read_subject) as one view with the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import subject  # benchmarks/subject.py (conftest puts benchmarks/ on the path)
import test_fit_photos as photos_tests

from flamefit.bundle import write_bundle
from flamefit.bundle.claim import BUNDLE_NAMES
from flamefit.bundle.reader import (
    foreign_files,
    is_bundle,
    own_files,
    photo_sha256,
    photo_sha256s,
    read_result,
    read_subject,
    validate_bundle,
)
from flamefit.bundle.writer import check_replaceable
from flamefit.fitting import FitOptions, fit_photos
from flamefit.image import Photo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted():
    model = photos_tests.prepared_model()
    photos, points, _ = subject.make_subject(model, 5, (0, 45))
    photos = [Photo(Path("/photos/front.png"), photos[0].rgb), Photo(Path("/elsewhere/front.png"), photos[1].rgb)]
    return fit_photos(photos, model, FitOptions(stages=("landmarks", "texture"), texture_size=64), landmarks=points)


@pytest.fixture
def bundle(fitted, tmp_path):
    return write_bundle(fitted, tmp_path / "person")


def test_schema_3_round_trip(fitted, bundle):
    assert validate_bundle(bundle) == []
    result = read_result(bundle)
    assert result["schema_version"] == 3 and read_subject(bundle) is not None
    assert result["parameters"] == {"identity": pytest.approx(fitted.identity.tolist())}
    assert result["metrics"]["views"] == 2 and "photo" not in result and "camera" not in result
    views = result["views"]
    assert [v["name"] for v in views] == ["front", "front-2"]  # stems made unique, in the photos' order
    assert views[0]["files"] == {"photo": "photo.png", "overlay": "overlay.png", "report": "report.png"}
    assert views[1]["files"] == {"photo": "photo-2.png", "overlay": "overlay-2.png", "report": "report-2.png"}
    assert np.allclose(views[0]["camera"]["world_to_camera"], np.eye(4))
    for k, view in enumerate(views):
        assert view["photo"]["path"] == str(fitted.views[k].photo.path)
        assert np.allclose(view["parameters"]["expression"], fitted.views[k].expression)
        assert np.allclose(view["lights"]["sh"], fitted.views[k].sh)
        assert np.allclose(view["landmarks_2d"], fitted.views[k].fitted_2d)
        assert view["metrics"] == fitted.views[k].metrics
        assert (bundle / view["files"]["photo"]).is_file() and (bundle / view["files"]["report"]).is_file()
    params = np.load(bundle / "params.npz")
    assert params["identity"].shape == fitted.identity.shape
    assert params["expression"].shape[0] == params["pose"].shape[0] == params["sh"].shape[0] == 2
    assert np.allclose(params["world_to_camera"][1], views[1]["camera"]["world_to_camera"], atol=1e-6)
    # The mesh is the head posed as in view 1 (its camera = the world).
    mesh = np.load(bundle / "mesh.npz")
    assert np.allclose(mesh["vertices"], fitted.views[0].vertices)


def test_each_views_head_is_its_key_values(fitted, bundle):
    """mesh.npz's view_shape_key_values: basis + values[k] . deltas is view k's fitted head taken
    into the world (its neck and jaw turn included, through its own key "view2Pose"), and
    view_landmark_* put view k's landmarks (jaw line at its yaw) on it: through view k's
    camera they are its landmarks_2d."""
    mesh, result = np.load(bundle / "mesh.npz"), read_result(bundle)
    names, values = list(mesh["shape_key_names"]), mesh["view_shape_key_values"]
    assert names[-1] == "view2Pose" and values.shape == (2, len(names))
    assert np.array_equal(values[0], mesh["shape_key_values"]) and values[0, -1] == 0 and values[1, -1] == 1
    assert np.allclose(mesh["shape_key_ranges"][-1], [0, 1])
    view_delta = np.abs(mesh["shape_key_deltas"][-1]).max()
    assert view_delta > 1e-4  # the 45 degree view's neck/jaw is not the first view's: the key holds something
    for k, view in enumerate(result["views"]):
        head = mesh["basis_vertices"] + np.tensordot(values[k].astype(np.float64), mesh["shape_key_deltas"], 1)
        w2c = np.array(view["camera"]["world_to_camera"])
        in_camera = head @ w2c[:3, :3].T + w2c[:3, 3]
        assert np.abs(in_camera - fitted.views[k].vertices).max() < 1e-5  # metres: float32 rounding
        points = (in_camera[mesh["faces"][mesh["view_landmark_face_idx"][k]]] * mesh["view_landmark_bary"][k][..., None]).sum(1)
        (fx, fy), (cx, cy) = view["camera"]["focal_px"], view["camera"]["principal_px"]
        px = np.stack([fx * points[:, 0] / -points[:, 2] + cx, -fy * points[:, 1] / -points[:, 2] + cy], axis=1)
        assert np.abs(px - np.array(view["landmarks_2d"])).max() < 0.01


def test_every_views_files_are_the_bundles_own(bundle):
    result = read_result(bundle)
    assert {"photo-2.png", "overlay-2.png", "report-2.png", "photo.png"} <= own_files(result)
    assert foreign_files(bundle) == [] and is_bundle(bundle)
    check_replaceable(bundle)  # --overwrite may replace it
    (bundle / "notes.txt").write_text("mine")
    assert foreign_files(bundle) == ["notes.txt"]
    # A result.json claiming a user's file as a view's file does not make it ours.
    result["views"][1]["files"]["overlay"] = "notes.txt"
    (bundle / "result.json").write_text(json.dumps(result))
    assert "notes.txt" not in own_files(result) and not is_bundle(bundle)
    assert {"photo-64.jpg", "report-2.png"} <= BUNDLE_NAMES and "photo-65.jpg" not in BUNDLE_NAMES


def test_the_photos_digests_are_per_view(fitted, bundle):
    assert photo_sha256s(bundle) == [None, None]  # photos given as arrays: no file to hash
    assert photo_sha256(bundle) is None


def as_schema_2(bundle: Path, version: int = 2) -> dict:
    """Rewrite a one-view schema-3 bundle in the schema-2 (or 1) layout, as FlameFit
    wrote it before; returns the new result.json."""
    result = read_result(bundle)
    view = result["views"][0]
    old = {"schema_version": version, "flamefit_version": result["flamefit_version"], "model": result["model"],
           "photo": view["photo"], "camera": view["camera"],
           "parameters": {"identity": result["parameters"]["identity"], **view["parameters"],
                          "expression_names": result["expression_names"]},
           "lights": view["lights"], "landmarks_2d": view["landmarks_2d"],
           "landmarks_2d_fixed": view["landmarks_2d_fixed"], "detected_landmarks_2d": view["detected_landmarks_2d"],
           "landmarks_3d": view["landmarks_3d"], "metrics": view["metrics"], "timings": result["timings"],
           "files": {**result["files"], **view["files"]},
           "fit": {**result["fit"], **view["fit"]}}
    params = dict(np.load(bundle / "params.npz"))
    np.savez(bundle / "params.npz", **{k: (v if k == "identity" else v[0]) for k, v in params.items()})
    if version == 1:
        for key in ("mtl", "photo"):
            (bundle / old["files"].pop(key)).unlink()
    (bundle / "result.json").write_text(json.dumps(old))
    return old


@pytest.mark.parametrize("version", [1, 2])
def test_schemas_1_and_2_still_read_as_one_view(tmp_path, version):
    model = photos_tests.prepared_model()
    photos, points, _ = subject.make_subject(model, 6, (0,))
    one = fit_photos(photos, model, FitOptions(stages=("landmarks",), texture_size=32), landmarks=points)
    bundle = write_bundle(one, tmp_path / "old")
    new = read_result(bundle)
    old = as_schema_2(bundle, version)
    assert validate_bundle(bundle) == [] and is_bundle(bundle) and foreign_files(bundle) == []
    read = read_subject(bundle)
    assert read["schema_version"] == version and len(read["views"]) == 1
    view = read["views"][0]
    assert view["photo"] == old["photo"] and view["camera"] == old["camera"]
    assert view["parameters"] == new["views"][0]["parameters"]
    assert read["parameters"] == new["parameters"] and read["expression_names"] == new["expression_names"]
    assert view["files"] == {k: v for k, v in new["views"][0]["files"].items() if version == 2 or k != "photo"}
    assert view["landmarks_2d"] == new["views"][0]["landmarks_2d"] and view["fit"] == new["views"][0]["fit"]
    # A schema-2 bundle with a view axis in params.npz is not one of ours.
    params = dict(np.load(bundle / "params.npz"))
    np.savez(bundle / "params.npz", **{k: (v if k == "identity" else v[None]) for k, v in params.items()})
    assert validate_bundle(bundle)


def test_optional_mesh_arrays_are_checked_when_present(bundle):
    """The per-view arrays of mesh.npz are optional (bundles of earlier FlameFits lack them:
    still valid), but when present they must have one row per view."""
    mesh = dict(np.load(bundle / "mesh.npz"))
    without = {name: array for name, array in mesh.items() if not name.startswith("view_")}
    np.savez(bundle / "mesh.npz", **without)
    assert validate_bundle(bundle) == []
    np.savez(bundle / "mesh.npz", **{**mesh, "view_shape_key_values": mesh["view_shape_key_values"][:1]})
    problems = validate_bundle(bundle)
    assert len(problems) == 1 and "view_shape_key_values has shape (1," in problems[0], problems
