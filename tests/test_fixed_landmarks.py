"""Both landmark conventions (#18.2): `landmarks_2d` puts the jaw line on the visible
outline (300-W's convention, what detectors output); `landmarks_2d_fixed` projects the
static surface points, hidden or not (AFLW2000-3D's). On a turned head the two differ on
the side turned away, where the fixed points lie inside the face's silhouette; points
17-67 are the same. The bundle carries both, and readers take bundles with and without
the new key."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flamefit.bundle import read_result, validate_bundle
from flamefit.bundle.writer import write_bundle
from flamefit.config import load_settings
from flamefit.fitting import FitOptions, fit_photo, prepare_model
from flamefit.fitting.geometry import CameraFrame, HeadRig, initial_state, project
from flamefit.image import Crop, Photo, linear_to_srgb, load_photo
from flamefit.landmarks import ibug68
from flamefit.models import load_head_model
from flamefit.render.lighting import ambient_light_sh, directional_light_sh
from flamefit.render.rasterizer import RasterizationSettings
from flamefit.render.shading import render_rgb

REPO = Path(__file__).resolve().parents[1]
AFLW = REPO.parent / "shared" / "aflw2000_dev"
SIZE = 256
YAW = 50.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    settings = load_settings({})
    return prepare_model(load_head_model(settings), settings.cache_dir)


@pytest.fixture(scope="module")
def turned(model, tmp_path_factory):
    """A render of the head at 50 degrees of yaw fitted to its own outline points:
    (FitResult, the render's silhouette (H, W) bool)."""
    rig = HeadRig(model, "cpu", 100, 100)
    state = initial_state(rig)
    state.pose[0, 0] = torch.tensor([0.0, math.radians(YAW), 0.0])
    state.translation[0] = torch.tensor([0.0, 0.0, -0.6])
    camera = CameraFrame(SIZE, SIZE, Crop(0, 0, SIZE, SIZE)).camera(SIZE, "cpu")
    sh = ambient_light_sh(torch.tensor([[0.5, 0.5, 0.5]])) + directional_light_sh(
        torch.tensor([[0.3, 0.4, 0.9]]), torch.tensor([[0.6, 0.6, 0.6]]))
    albedo = torch.tensor([0.55, 0.4, 0.32]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    with torch.no_grad():
        verts = rig.vertices(state)
        r = render_rgb(camera, verts, rig.faces, rig.face_uvs, albedo, sh,
                       RasterizationSettings((SIZE, SIZE), cull_backfaces=True))
        outline = project(camera, rig.landmarks(verts, state.pose))[0].double().numpy()
    image = r.image[0] * r.mask[0] + 0.3 * (1 - r.mask[0])
    rgb = (linear_to_srgb(image.numpy()) * 255 + 0.5).astype(np.uint8)
    photo = Photo(tmp_path_factory.mktemp("turned") / "turned.png", rgb)
    result = fit_photo(photo, model, FitOptions(stages=("landmarks",), texture_size=64), landmarks=outline)
    return result, r.mask[0, ..., 0].numpy() > 0.5


def far_jaw(points) -> list[int]:
    """The jaw points on the side the nose turns toward (the cheek turned away), chin excluded."""
    eyes = (points[36] + points[45]) / 2
    return list(range(9, 17)) if points[ibug68.NOSE_TIP, 0] > eyes[0] else list(range(0, 8))


def test_fixed_points_differ_on_the_hidden_jaw_and_lie_inside_the_silhouette(turned):
    result, silhouette = turned
    fixed, outline = result.fitted_2d_fixed, result.fitted_2d
    assert np.array_equal(fixed[17:], outline[17:])  # the inner face: one convention
    far = np.array(far_jaw(outline))
    moved = far[np.linalg.norm(fixed[far] - outline[far], axis=1) > 3.0]  # pixels, in a 256-px render
    assert len(moved) >= 4, np.linalg.norm(fixed[far] - outline[far], axis=1)
    # The fixed points are on the hidden cheek: inside the head's silhouette (with a margin),
    # behind the outline as seen from the side the head turns to.
    inner = cv2.erode(silhouette.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    x, y = np.floor(fixed[moved]).astype(int).T
    assert inner[y, x].all(), fixed[moved]
    turn = np.sign(outline[ibug68.NOSE_TIP, 0] - (outline[36, 0] + outline[45, 0]) / 2)
    assert (turn * (fixed[moved, 0] - outline[moved, 0]) < -2.0).all(), (fixed[moved], outline[moved])


def test_the_bundle_carries_both_and_readers_take_it_with_and_without(turned, tmp_path):
    sys.path.insert(0, str(REPO))
    from blender_flamefit.io.bundle import load_bundle

    result, _ = turned
    out = write_bundle(result, tmp_path / "bundle")
    saved = read_result(out)
    view = saved["views"][0]  # schema 3: the photo's landmarks are its view's
    assert np.allclose(view["landmarks_2d_fixed"], result.fitted_2d_fixed)
    assert np.allclose(view["landmarks_2d"], result.fitted_2d)
    assert validate_bundle(out) == []
    assert load_bundle(out).landmarks_2d
    view["landmarks_2d_fixed"] = view["landmarks_2d_fixed"][:67]  # the deep check covers it too
    (out / "result.json").write_text(json.dumps(saved))
    assert validate_bundle(out) == ["views[0] landmarks_2d_fixed has 67 points, expected 68"]
    del view["landmarks_2d_fixed"]  # optional, as for a bundle written before the key existed
    (out / "result.json").write_text(json.dumps(saved))
    assert validate_bundle(out) == []
    assert load_bundle(out).landmarks_2d


def test_fixed_jaw_is_nearer_aflw_truth_on_a_turned_photo(model):
    """AFLW2000-3D's jaw line follows the 3D surface: on a photo at 45 degrees of yaw the
    fitted fixed points are nearer its annotation there than the outline ones (a 45-degree
    photo: 38 px against 42 px on the far jaw today, both far off; the fit, not the
    convention, is what #18.3 works on)."""
    if not (AFLW / "annotations.npz").is_file():
        pytest.skip(f"AFLW2000-3D dev set not found at {AFLW}")
    data = np.load(AFLW / "annotations.npz")
    i = int(np.flatnonzero(data["names"] == "image03873")[0])  # yaw -44.9
    truth = data["landmarks_2d"][i].astype(np.float64) + 0.5  # pixel indices -> centres
    result = fit_photo(load_photo(AFLW / "images" / "image03873.jpg"), model, FitOptions(stages=("landmarks",)))
    far = far_jaw(truth)
    fixed = np.linalg.norm(result.fitted_2d_fixed[far] - truth[far], axis=1).mean()
    outline = np.linalg.norm(result.fitted_2d[far] - truth[far], axis=1).mean()
    assert fixed < outline, (fixed, outline)


def test_fixed_jaw_follows_aflw_annotation_not_the_frontal_outline(model):
    """The static jaw points sit where AFLW2000-3D's annotators put the jaw line (the ramus
    and the underside of the jaw), not on the frontal outline: on turned photos that were
    not used to place them (index % 3 == 2, 30-60 degrees) the fitted fixed jaw is nearer
    the annotation than the yaw-0 outline points of the same fit (before, both were the
    same points). On all 50 such photos NME68 went from 6.88 to 5.54 %; on these twelve
    the jaw is 12.5 % of the face box off against 15.7 %."""
    if not (AFLW / "annotations.npz").is_file():
        pytest.skip(f"AFLW2000-3D dev set not found at {AFLW}")
    data = np.load(AFLW / "annotations.npz")
    turned = [i for i in range(2, len(data["names"]), 3) if 30 <= abs(data["pose_deg"][i, 1]) < 60][:12]
    fixed_err, frontal_err = [], []
    for i in turned:
        name = str(data["names"][i])
        truth = data["landmarks_2d"][i].astype(np.float64) + 0.5
        result = fit_photo(load_photo(AFLW / "images" / f"{name}.jpg"), model, FitOptions(stages=("landmarks",)))
        with torch.no_grad():
            verts = torch.as_tensor(result.vertices)[None]
            frontal = result.rig.layer.landmarks(verts, "ibug68", torch.zeros(1))  # the yaw-0 row
            frontal = project(result.frame.camera(None, "cpu"), frontal)[0].double().numpy()
        box = np.sqrt(np.prod(truth.max(0) - truth.min(0)))
        fixed_err.append(np.linalg.norm(result.fitted_2d_fixed[:17] - truth[:17], axis=1).mean() / box)
        frontal_err.append(np.linalg.norm(frontal[:17] - truth[:17], axis=1).mean() / box)
    assert np.mean(fixed_err) < 0.85 * np.mean(frontal_err), (fixed_err, frontal_err)
