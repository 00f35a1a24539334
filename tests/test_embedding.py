"""Automatic iBUG-68 embedding: renders of the template, dlib, back onto the surface.

On the FLAME 2023 Open extract the result is checked against FLAME's own MediaPipe
embedding at the points both schemes share (eye corners, nose tip, mouth corners).
"""

import dataclasses
import shutil
import time

import numpy as np
import pytest

from flamefit.fitting.contour import dynamic_contour
from flamefit.fitting.embedding import (
    closest_points_on_triangles,
    detector_names,
    embedding_cache_path,
    ibug68_embedding,
    nearest_front_point,
    robust_mean,
)
from flamefit.fitting.embedding_views import View, mesh_components, render_views
from flamefit.fitting.prepare import prepare_model
from flamefit.landmarks import ibug68
from flamefit.models.head_model import JOINT_NAMES, HeadModel, LandmarkEmbedding

MAX_ERROR_MM = 5.0
OVERLAY_COPY = "/tmp/embedding_views.png"  # to look at after a run; never committed


def extract_model(path) -> HeadModel:
    """The extract as a rigid HeadModel: identity basis only, one joint."""
    with np.load(path) as data:
        V, J = len(data["v_template"]), len(JOINT_NAMES)
        skin = np.zeros((V, J), np.float32)
        skin[:, 0] = 1
        mediapipe = LandmarkEmbedding(face_idx=data["lmk_face_idx"].astype(np.int64), bary=data["lmk_b_coords"],
                                      point_ids=data["landmark_indices"].astype(np.int64), source="FLAME")
        return HeadModel(name="FLAME 2023 Open extract", version="2023 Open", licence="CC-BY-4.0",
                         v_template=data["v_template"], faces=data["faces"].astype(np.int64),
                         identity_basis=data["shapedirs"], expression_basis=np.zeros((V, 3, 0), np.float32),
                         joint_regressor=np.full((J, V), 1 / V, np.float32), skin_weights=skin,
                         landmarks={"mediapipe": mediapipe}).validate()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding_cache")


@pytest.fixture(scope="module")
def computed(flame_extract_path, cache_dir):
    model = extract_model(flame_extract_path)
    embedding, report = ibug68_embedding(model, cache_dir)
    shutil.copyfile(report["overlay"], OVERLAY_COPY)
    return model, embedding, report


def test_close_to_flames_mediapipe_embedding(computed):
    _, _, report = computed
    errors = report["mediapipe_check_mm"]
    assert len(errors) == len(ibug68.MEDIAPIPE_CHECK_PAIRS), errors
    print("embedding error vs MediaPipe (mm):", errors)
    assert max(errors.values()) <= MAX_ERROR_MM, errors


def test_every_view_found_and_views_agree(computed):
    model, embedding, report = computed
    assert report["cached"] is False and all(view["detected"] for view in report["views"])
    assert report["spread_mm"]["median"] < 3.0
    assert report["snap_mm_max"] < 2.0
    assert "ibug68" not in model.landmarks  # the model is not changed: prepare_model makes a new one
    assert embedding.face_idx.shape == (68,) and embedding.bary.shape == (68, 3)
    assert np.allclose(embedding.bary.sum(1), 1, atol=1e-5) and (embedding.bary >= -1e-6).all()
    assert np.array_equal(embedding.point_ids, np.arange(68))


def test_inner_face_from_the_fits_detector_jaw_line_from_dlib(computed):
    _, _, report = computed
    inner, jaw = detector_names()
    assert jaw == "dlib"
    assert report["detector"] == (inner if inner == jaw else f"{inner} (jaw line: dlib)")
    # every render was detected; dlib's jaw line is looked for on the frontal one alone (the
    # only view whose jaw line is used), and that view carries the combined detector's name
    assert all(view["detected"] for view in report["views"])
    for view in report["views"]:
        frontal = (view["yaw"], view["pitch"]) == (0, 0)
        assert inner == jaw or ("+ jaw dlib" in view["detector"]) == frontal, view


def test_left_right_and_on_the_skin(computed):
    model, embedding, report = computed
    points = embedding.points(model.v_template, model.faces)
    # iBUG 36 / 0 / 48: the subject's right = the model's -X side.
    assert report["left_right_ok"]
    for right, left in ((36, 45), (39, 42), (0, 16), (48, 54), (17, 26)):
        assert points[right, 0] < 0 < points[left, 0]
    assert points[8, 1] < points[57, 1] < points[30, 1] < points[27, 1]  # chin, lip, nose tip, bridge: upward
    skin = mesh_components(model.num_vertices, model.faces)[model.faces[embedding.face_idx, 0]]
    assert (skin == 0).all()  # on the face, not on an eyeball
    # Symmetrised, then snapped onto a template that is itself 1.2 mm from symmetric (median).
    assert np.median(report["symmetry_mm"]) < 1.0 and max(report["symmetry_mm"]) < 3.0


@pytest.mark.parametrize("yaw", [-30, 30])
def test_jaw_line_at_a_yaw_is_on_the_outline_and_on_its_own_slice(computed, yaw):
    """The yaw table's jaw points, on a render of the template turned by `yaw`: on the side
    turned away they lie on the outline (a silhouette or depth jump), and every moved
    point stays in the vertical plane through the nose tip and its static point."""
    import scipy.ndimage

    model, embedding, _ = computed
    contour = dynamic_contour(dataclasses.replace(model, landmarks={**model.landmarks, "ibug68": embedding}))
    verts = model.v_template.astype(np.float64)
    static = embedding.points(verts, model.faces)
    face_idx, bary = contour.at_yaw([yaw])
    turned = LandmarkEmbedding(face_idx=face_idx[0], bary=bary[0]).points(verts, model.faces)
    moved = np.flatnonzero(np.linalg.norm(turned - static, axis=1) > 1e-4)
    assert set(moved) <= set(ibug68.JAW)
    for k in moved:
        ray = static[k, :2] - static[ibug68.NOSE_TIP, :2]
        u, d = ray / np.linalg.norm(ray), turned[k, :2] - static[ibug68.NOSE_TIP, :2]
        assert abs(u[0] * d[1] - u[1] * d[0]) < 1e-4, k  # metres off its slice

    view = render_views(verts, model.faces, [(yaw, 0)])[0]
    pixels = view.project(turned)
    nose_x = pixels[ibug68.NOSE_TIP, 0]
    away = [k for k in moved if np.sign(pixels[k, 0] - nose_x) == np.sign(nose_x - pixels[27, 0])]
    assert len(away) >= 5
    depth = np.where(np.isfinite(view.depth), view.depth, 1e3)
    jump = scipy.ndimage.maximum_filter(depth, 3) - scipy.ndimage.minimum_filter(depth, 3) > 0.01
    distance = scipy.ndimage.distance_transform_edt(~jump)
    for k in away:
        x, y = pixels[k]
        assert distance[int(y), int(x)] <= 2.0, (k, distance[int(y), int(x)])  # pixels, 512 px render


def test_surface_jaw_is_the_frontal_silhouette_on_its_slice(computed):
    """landmarks_2d_fixed's jaw comes from the model's own geometry: each moved point stays
    on its slice, lies on the outline of a frontal render (the ramus and the jaw's
    underside, behind the static points but not on the ears) and reaches further out."""
    import scipy.ndimage

    from flamefit.fitting.contour import SURFACE_BEHIND

    model, embedding, _ = computed
    contour = dynamic_contour(dataclasses.replace(model, landmarks={**model.landmarks, "ibug68": embedding}))
    verts = model.v_template.astype(np.float64)
    static = embedding.points(verts, model.faces)
    surface = contour.points(verts, model.faces)
    assert np.array_equal(contour.face_idx[17:], embedding.face_idx[17:])
    moved = np.flatnonzero(np.linalg.norm(surface - static, axis=1) > 1e-4)
    assert set(moved) <= set(ibug68.JAW) and len(moved) >= 10
    nose = static[ibug68.NOSE_TIP, :2]
    for k in moved:
        u = (static[k, :2] - nose) / np.linalg.norm(static[k, :2] - nose)
        d = surface[k, :2] - nose
        assert abs(u[0] * d[1] - u[1] * d[0]) < 1e-4, k  # metres off its slice
        assert d @ u > (static[k, :2] - nose) @ u, k  # further out than the static point
    ear_level = min(static[0, 2], static[16, 2])
    assert (surface[moved, 2] < static[moved, 2] - 0.01).all()  # deeper: jaw angle, ramus
    assert (surface[moved, 2] > ear_level - SURFACE_BEHIND - 1e-6).all()

    view = render_views(verts, model.faces, [(0, 0)])[0]
    background = ~np.isfinite(view.depth)
    # On the head's outline: within 2 px (512 px render) of the background or of a depth
    # jump (where an ear hides the cheek behind it).
    depth = np.where(background, 1e3, view.depth)
    jump = scipy.ndimage.maximum_filter(depth, 3) - scipy.ndimage.minimum_filter(depth, 3) > 0.01
    distance = scipy.ndimage.distance_transform_edt(~jump)
    for k, (x, y) in zip(moved, view.project(surface[moved])):
        assert distance[int(y), int(x)] <= 2.0, (k, distance[int(y), int(x)])


def test_cache_is_reused(computed, cache_dir):
    model, embedding, _ = computed
    path = embedding_cache_path(model, cache_dir)
    stamp = path.stat().st_mtime_ns
    fresh = HeadModel(**{**model.__dict__, "landmarks": {"mediapipe": model.landmarks["mediapipe"]}})
    start = time.perf_counter()
    again, report = ibug68_embedding(fresh, cache_dir)
    assert time.perf_counter() - start < 1.0
    assert report["cached"] is True and path.stat().st_mtime_ns == stamp
    assert np.array_equal(again.face_idx, embedding.face_idx) and np.array_equal(again.bary, embedding.bary)
    prepared = prepare_model(fresh, cache_dir)
    ready = prepared.landmarks["ibug68"]
    # The inner face as cached; the jaw moved to the surface jaw of landmarks_2d_fixed (the
    # template's frontal silhouette, contour.dynamic_contour), the cached outline jaw kept as
    # the yaw table's yaw-0 row.
    assert np.array_equal(ready.face_idx[17:], embedding.face_idx[17:]) and "ibug68" not in fresh.landmarks
    assert np.array_equal(ready.dynamic_face_idx[0], embedding.face_idx[:17])
    assert prepared.is_read_only and prepared.landmarks["ibug68"].dynamic_face_idx is not None and prepared.has_uvs


def test_model_with_its_own_embedding_is_left_alone(computed, cache_dir):
    model, _, _ = computed
    own = LandmarkEmbedding(face_idx=np.zeros(68, np.int64), bary=np.full((68, 3), 1 / 3, np.float32), source="file")
    other = HeadModel(**{**model.__dict__, "landmarks": {"ibug68": own}})
    assert ibug68_embedding(other, cache_dir) == (own, {"cached": None})


# --- pieces that need no model file -------------------------------------------------


def test_closest_points_on_triangles():
    triangles = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 0, 5], [1, 0, 5], [0, 1, 5]]], float)
    points = np.array([[0.2, 0.2, 1.0], [2.0, -1.0, 0.0], [0.1, 0.1, 4.0]])
    index, bary, distance = closest_points_on_triangles(points, triangles)
    assert index.tolist() == [0, 0, 1]
    assert np.allclose(bary[0], [0.6, 0.2, 0.2]) and np.isclose(distance[0], 1.0)
    assert np.allclose(bary[1], [0, 1, 0]) and np.isclose(distance[1], np.sqrt(2))  # the corner (1, 0, 0)
    assert np.allclose(bary[2], [0.8, 0.1, 0.1]) and np.isclose(distance[2], 1.0)


def test_robust_mean_ignores_a_wrong_surface_hit():
    hits = np.array([[0, 0, 0], [0.001, 0, 0], [0, 0.001, 0], [0, 0, -0.1]])
    mean, spread, outliers = robust_mean(hits)
    assert outliers == 1 and np.allclose(mean, [0.001 / 3, 0.001 / 3, 0]) and spread < 0.001


def test_a_point_in_a_gap_goes_to_the_front_surface_beside_it():
    # Lips 1 m from the camera with a 2-pixel gap (rows 9, 10) through which the mouth's
    # inside is seen 5 cm further back. A detected inner-lip point in the gap, closer to
    # the upper lip's pixel centres than one pixel, must land on the lip, not inside.
    depth = np.ones((20, 20))
    depth[9:11] = 1.05
    ii, jj = np.mgrid[:20, :20]
    surface = np.stack([jj * 0.001, -ii * 0.001, -depth], -1)
    view = View(yaw=0, pitch=0, image=np.zeros((20, 20, 3), np.uint8), surface=surface, depth=depth,
                facing=np.ones((20, 20)), component=np.zeros((20, 20), int), rotation=np.eye(3),
                pivot=np.zeros(3), eye=np.zeros(3), focal=100.0)
    lip = nearest_front_point(view, 10.4, 9.2)
    assert lip[2] == -1.0 and np.allclose(lip[:2], [0.010, -0.008])  # pixel (row 8, column 10)
    assert nearest_front_point(view, 10.4, 7.7)[2] == -1.0  # on the lip already: stays there


def test_mesh_components_largest_first():
    faces = np.array([[0, 1, 2], [3, 4, 5], [5, 4, 6]])
    assert mesh_components(7, faces).tolist() == [1, 1, 1, 0, 0, 0, 0]
