"""FLAME loaders: chumpy-free safe unpickling, model/UV/embedding files, bad input."""

import os
import pickle
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from flamefit.errors import ModelFileError
from flamefit.models.flame import RIGID_ARTICULATION, dynamic_yaw_degrees, inspect_model_file, load_flame
from flamefit.models.head_model import HeadModel
from flamefit.models.safe_pickle import ChumpyExpression, load_npy, load_pickle

EXTRACT = Path(__file__).resolve().parents[2] / "shared/models/flame2023_open_identity60.npz"
NUM_VERTS, NUM_FACES = 40, 60


@contextmanager
def fake_chumpy():
    """A stand-in `chumpy.ch.Ch` so a test can write pickles that name it, like FLAME's."""
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._cache = {"r": {}}

        def __getstate__(self):  # like chumpy: drop caches, keep the value in `x`
            state = dict(self.__dict__)
            del state["_cache"]
            return state

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    package.ch, module.Ch = module, Ch
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def flame_arrays(seed=0, num_components=400):
    rng = np.random.default_rng(seed)
    weights = rng.random((NUM_VERTS, 5))
    regressor = np.zeros((5, NUM_VERTS))
    regressor[np.arange(5), rng.choice(NUM_VERTS, 5, replace=False)] = 1.0
    return {
        "v_template": rng.normal(size=(NUM_VERTS, 3)) * 0.1,
        "f": rng.integers(0, NUM_VERTS, (NUM_FACES, 3)).astype(np.uint32),
        "shapedirs": rng.normal(size=(NUM_VERTS, 3, num_components)) * 1e-3,
        "posedirs": rng.normal(size=(NUM_VERTS, 3, 36)) * 1e-3,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_chumpy_flame(path, arrays, protocol=2):
    with fake_chumpy() as Ch:
        wrapped = {k: Ch(v) if k in ("v_template", "shapedirs", "posedirs", "weights") else v for k, v in arrays.items()}
        path.write_bytes(pickle.dumps(wrapped, protocol=protocol))
    assert b"chumpy.ch" in path.read_bytes() or b"chumpy\n" in path.read_bytes()
    return path


@pytest.fixture
def flame_pkl(tmp_path):
    folder = tmp_path / "FLAME2020"
    folder.mkdir()
    arrays = flame_arrays()
    return write_chumpy_flame(folder / "generic_model.pkl", arrays), arrays


# --- safe unpickling ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", [1, 2])  # 1 and 2 use Python 2 names (copy_reg, __builtin__)
def test_chumpy_pickle_loads_without_chumpy(tmp_path, protocol):
    arrays = flame_arrays()
    path = write_chumpy_flame(tmp_path / "generic_model.pkl", arrays, protocol)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    data = load_pickle(path)
    for key in ("v_template", "shapedirs", "posedirs", "weights", "f", "kintree_table"):
        assert type(data[key]) is np.ndarray
        np.testing.assert_array_equal(data[key], arrays[key])
    assert scipy.sparse.issparse(data["J_regressor"])
    np.testing.assert_array_equal(data["J_regressor"].toarray(), arrays["J_regressor"].toarray())
    assert data["bs_style"] == "lbs"


def test_python2_numpy_pickle(tmp_path):
    # What Python 2 wrote for np.array([1.5, -2, 3.25]): byte strings (SHORT_BINSTRING), numpy.core names.
    data = np.array([1.5, -2.0, 3.25]).tobytes()
    raw = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02U\x01b\x87q\x03Rq\x04"
           b"(K\x01K\x03\x85cnumpy\ndtype\nq\x05U\x02f8K\x00K\x01\x87Rq\x06(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           b"I00\nU\x18" + data + b"tb.")
    (tmp_path / "py2.pkl").write_bytes(raw)
    np.testing.assert_array_equal(load_pickle(tmp_path / "py2.pkl"), [1.5, -2.0, 3.25])


def test_flame_pickle_becomes_head_model(flame_pkl):
    path, arrays = flame_pkl
    model = load_flame(path)
    assert (model.name, model.version) == ("FLAME 2020", "2020")
    assert "non-commercial" in model.licence
    assert (model.num_identity, model.num_expression) == (300, 100)
    np.testing.assert_allclose(model.identity_basis, arrays["shapedirs"][:, :, :300], rtol=1e-6)
    np.testing.assert_allclose(model.expression_basis, arrays["shapedirs"][:, :, 300:], rtol=1e-6)
    np.testing.assert_allclose(model.joint_regressor, arrays["J_regressor"].toarray())  # sparse -> dense
    assert model.faces.dtype == np.int64
    # posedirs (V,3,P) -> (P, V*3) with column v*3+c, as smplx's reshape(-1, P).T.
    v, c, k = 7, 2, 30
    assert model.posedirs.shape == (36, NUM_VERTS * 3)
    assert model.posedirs[k, v * 3 + c] == pytest.approx(arrays["posedirs"][v, c, k])
    assert "articulation" in model.provenance and model.provenance["articulation"] != RIGID_ARTICULATION


def test_chumpy_expression_without_value_is_refused(tmp_path):
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch_ops")

    class add:
        def __init__(self):
            self.a, self.b = 1, 2

    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    module.add = add
    sys.modules.update({"chumpy": package, "chumpy.ch_ops": module})
    try:
        data = pickle.dumps({"v_template": add(), "f": np.zeros((1, 3), np.int64), "J": add()}, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch_ops"]
    (tmp_path / "m.pkl").write_bytes(data)
    # Unpickling succeeds (a value the loader never uses may be an expression)...
    assert isinstance(load_pickle(tmp_path / "m.pkl")["J"], ChumpyExpression)
    # ...but a value the model needs is refused with a clear reason.
    with pytest.raises(ModelFileError, match=r"v_template is a chumpy expression \(chumpy.ch_ops.add\)"):
        load_flame(tmp_path / "m.pkl")


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [SystemCall, EvalCall])
@pytest.mark.parametrize("protocol", [2, 4])
def test_foreign_callable_is_refused_and_never_runs(tmp_path, payload, protocol):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "x": payload(marker)}, protocol=protocol))
    with pytest.raises(ModelFileError, match="refuses to load: the pickle names .*(system|eval)"):
        load_flame(path)
    info = inspect_model_file(path)
    assert any("refuses to load" in p for p in info["problems"])
    assert not marker.exists()


def test_dotted_attribute_of_allowed_class_is_refused(tmp_path):
    # Protocol 4 may name "module" + "attr.attr": numpy.ndarray.tofile must not resolve.
    path = tmp_path / "sneaky.pkl"
    path.write_bytes(b"\x80\x04\x8c\x05numpy\x94\x8c\x0endarray.tofile\x94\x93\x94.")
    with pytest.raises(ModelFileError, match="numpy.ndarray.tofile"):
        load_pickle(path)


def test_truncated_and_empty_pickles(flame_pkl, tmp_path):
    raw = flame_pkl[0].read_bytes()
    for name, content in (("truncated.pkl", raw[: len(raw) // 2]), ("empty.pkl", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match="truncated or corrupt") as info:
            load_flame(tmp_path / name)
        assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="file not found"):
        load_flame(tmp_path / "nowhere.pkl")


def test_npz_model_and_truncated_npz(tmp_path):
    arrays = flame_arrays(num_components=20)
    arrays["J_regressor"] = arrays["J_regressor"].toarray()
    path = tmp_path / "flame2023.npz"
    np.savez(path, **arrays)
    model = load_flame(path)
    assert model.name == "FLAME 2023" and (model.num_identity, model.num_expression) == (20, 0)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_flame(tmp_path / "cut.npz")


def test_npz_with_object_array_goes_through_safe_unpickler(tmp_path):
    marker = tmp_path / "payload_ran"
    payload = np.empty((), dtype=object)
    payload[()] = SystemCall(marker)
    path = tmp_path / "model.npz"
    np.savez(path, v_template=np.zeros((3, 3)), f=np.zeros((1, 3), np.int64), evil=payload)
    with pytest.raises(ModelFileError, match="refuses to load"):
        load_flame(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "filename, name, licence",
    [("flame2023_Open.pkl", "FLAME 2023 Open", "CC-BY-4.0"), ("flame2023_no_jaw.pkl", "FLAME 2023 (no jaw)", "FLAME licence"),
     ("flame2023.pkl", "FLAME 2023", "FLAME licence")],
)
def test_release_from_file_name(tmp_path, filename, name, licence):
    arrays = flame_arrays(num_components=4)
    (tmp_path / filename).write_bytes(pickle.dumps(arrays, protocol=2))
    model = load_flame(tmp_path / filename)
    assert model.name == name and model.licence.startswith(licence)


@pytest.mark.parametrize(
    "extra, split",
    [({"num_betas": np.int64(25)}, (25, 15)), ({"expr_dim": 10}, (30, 10)),
     ({"expressiondirs": np.zeros((NUM_VERTS, 3, 7))}, (40, 7))],
)
def test_shape_split_from_metadata(tmp_path, extra, split):
    arrays = {**flame_arrays(num_components=40), **extra}
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(arrays, protocol=4))
    model = load_flame(tmp_path / "m.pkl")
    assert (model.num_identity, model.num_expression) == split


@pytest.mark.parametrize(
    "change, message",
    [(lambda a: a.update(v_template=np.zeros((10, 3))), "f indexes vertex"),
     (lambda a: a.update(shapedirs=np.zeros((NUM_VERTS, 3))), "shapedirs has shape"),
     (lambda a: a.update(posedirs=np.zeros((NUM_VERTS, 3, 9))), "posedirs has shape"),
     (lambda a: a.update(weights=np.ones((NUM_VERTS, 4)) / 4), "weights has shape"),
     (lambda a: a.update(kintree_table=np.array([[-1, 0, 0, 1, 1], [0, 1, 2, 3, 4]])), "kintree_table parents"),
     (lambda a: a.update(bs_style="dqs"), "bs_style")],
)
def test_wrong_shapes_are_refused(tmp_path, change, message):
    arrays = flame_arrays(num_components=4)
    change(arrays)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(ModelFileError, match=message) as info:
        load_flame(path)
    assert str(path) in str(info.value)


def test_flame_template_with_wrong_vertex_count(tmp_path):
    faces = np.load(EXTRACT)["faces"] if EXTRACT.exists() else np.random.default_rng(0).integers(0, 5023, (9976, 3))
    path = tmp_path / "bad.npz"
    np.savez(path, v_template=np.zeros((100, 3)), f=faces, shapedirs=np.zeros((100, 3, 2)))
    with pytest.raises(ModelFileError, match="v_template has 100 vertices"):
        load_flame(path)


# --- UVs --------------------------------------------------------------------------


def write_obj(path, verts, faces, uvs, uv_faces):
    lines = [f"v {x} {y} {z}" for x, y, z in verts] + [f"vt {u} {v}" for u, v in uvs]
    lines += ["f " + " ".join(f"{a + 1}/{b + 1}" for a, b in zip(f, t)) for f, t in zip(faces, uv_faces)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_uv_template_obj(flame_pkl, tmp_path):
    path, arrays = flame_pkl
    rng = np.random.default_rng(1)
    uvs = rng.random((NUM_VERTS + 7, 2))
    uv_faces = rng.integers(0, len(uvs), (NUM_FACES, 3))
    obj = write_obj(tmp_path / "head_template_mesh.obj", arrays["v_template"], arrays["f"], uvs, uv_faces)
    model = load_flame(path, uv_path=obj)
    np.testing.assert_array_equal(model.uv_faces, uv_faces)
    np.testing.assert_allclose(model.uv_coords, uvs, atol=1e-6)
    # The same triangles listed in another order, each starting at another corner.
    rng_order = np.random.default_rng(9)
    order, shift = rng_order.permutation(NUM_FACES), rng_order.integers(0, 3, NUM_FACES)
    corners = (shift[:, None] + np.arange(3)) % 3
    shuffled = write_obj(tmp_path / "shuffled.obj", arrays["v_template"],
                         np.take_along_axis(arrays["f"][order], corners, 1), uvs, np.take_along_axis(uv_faces[order], corners, 1))
    np.testing.assert_array_equal(load_flame(path, uv_path=shuffled).uv_faces, uv_faces)
    flipped = write_obj(tmp_path / "flipped.obj", arrays["v_template"], arrays["f"][:, ::-1], uvs, uv_faces[:, ::-1])
    with pytest.raises(ModelFileError, match="triangles differ"):
        load_flame(path, uv_path=flipped)
    # The same layout from a texture-space npz (vt/ft, 0-based).
    npz = tmp_path / "FLAME_texture.npz"
    np.savez(npz, vt=uvs, ft=uv_faces, mean=np.zeros((4, 4, 3)))
    np.testing.assert_array_equal(load_flame(path, uv_path=npz).uv_faces, uv_faces)
    assert inspect_model_file(npz)["kind"] == "texture space"


def test_uv_template_for_another_topology_is_refused(flame_pkl, tmp_path):
    path, _ = flame_pkl
    rng = np.random.default_rng(2)
    obj = write_obj(tmp_path / "other.obj", rng.random((10, 3)), rng.integers(0, 10, (4, 3)), rng.random((10, 2)), rng.integers(0, 10, (4, 3)))
    with pytest.raises(ModelFileError, match=rf"UV template is for another topology \(10 vertices\), expected {NUM_VERTS}"):
        load_flame(path, uv_path=obj)
    npz = tmp_path / "tex.npz"
    np.savez(npz, vt=rng.random((10, 2)), ft=rng.integers(0, 10, (4, 3)))
    with pytest.raises(ModelFileError, match="another topology"):
        load_flame(path, uv_path=npz)


def test_obj_reader_keeps_indices_and_refuses_other_polygons(tmp_path):
    """One OBJ reader for FLAME's template and MakeHuman's quads: relative (negative)
    indices resolved, groups per face, a face with the wrong corner count refused."""
    from flamefit.models.obj import read_obj

    path = tmp_path / "mesh.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\ng skin\nf 1/1 2/2 3/3\nf -3/-1 -2/-2 -1/-3\n")
    mesh = read_obj(path, 3, "triangles only")
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(mesh.uv_faces, [[0, 1, 2], [2, 1, 0]])
    assert list(mesh.groups) == ["skin", "skin"] and mesh.uvs.shape == (3, 2)
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 1 2 4 3\n")
    with pytest.raises(ModelFileError, match="line 6: a face with 4 corners; triangles only"):
        read_obj(path, 3, "triangles only")
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert read_obj(path, 3, "triangles only").uvs is None  # no UVs: the caller decides


# --- landmark embeddings ------------------------------------------------------------


def random_embedding(rng, shape, num_faces=NUM_FACES):
    bary = rng.random((*shape, 3))
    return rng.integers(0, num_faces, shape), bary / bary.sum(-1, keepdims=True)


def write_deca_embedding(path, rng, num_faces=NUM_FACES):
    static, dynamic, full = (random_embedding(rng, s, num_faces) for s in ((51,), (79, 17), (1, 68)))
    embedding = {
        "static_lmk_faces_idx": static[0], "static_lmk_bary_coords": static[1],
        # DECA stores the dynamic table as torch tensors: they must load without torch.load's pickle.
        "dynamic_lmk_faces_idx": torch.from_numpy(dynamic[0]), "dynamic_lmk_bary_coords": torch.from_numpy(dynamic[1]),
        "full_lmk_faces_idx": full[0], "full_lmk_bary_coords": full[1],
    }
    np.save(path, embedding, allow_pickle=True)
    return static, dynamic, full


def test_deca_landmark_embedding(flame_pkl, tmp_path):
    path, _ = flame_pkl
    rng = np.random.default_rng(3)
    _, dynamic, full = write_deca_embedding(tmp_path / "landmark_embedding.npy", rng)
    model = load_flame(path, embedding_paths=[tmp_path / "landmark_embedding.npy"])
    emb = model.landmarks["ibug68"]
    np.testing.assert_array_equal(emb.face_idx, full[0][0])
    np.testing.assert_allclose(emb.bary, full[1][0], rtol=1e-6)
    np.testing.assert_array_equal(emb.dynamic_face_idx, dynamic[0])
    assert emb.dynamic_bary.shape == (79, 17, 3) and list(emb.point_ids) == list(range(68))
    # DECA's row order: yaw 0..39 degrees, then -1..-39.
    np.testing.assert_array_equal(emb.dynamic_yaw_degrees, list(range(40)) + list(range(-1, -40, -1)))
    assert inspect_model_file(tmp_path / "landmark_embedding.npy")["kind"] == "landmark embedding"


def test_flame_pytorch_static_and_dynamic_embeddings(flame_pkl, tmp_path):
    path, _ = flame_pkl
    rng = np.random.default_rng(4)
    static, dynamic = random_embedding(rng, (51,)), random_embedding(rng, (79, 17))
    (tmp_path / "flame_static_embedding.pkl").write_bytes(pickle.dumps({"lmk_face_idx": static[0], "lmk_b_coords": static[1]}, protocol=2))
    np.save(tmp_path / "flame_dynamic_embedding.npy", {"lmk_face_idx": dynamic[0], "lmk_b_coords": dynamic[1]}, allow_pickle=True)
    model = load_flame(path, embedding_paths=[tmp_path / "flame_static_embedding.pkl", tmp_path / "flame_dynamic_embedding.npy"])
    emb = model.landmarks["ibug68"]
    assert len(emb.face_idx) == 68
    np.testing.assert_array_equal(emb.face_idx[:17], dynamic[0][0])  # jaw line = yaw-0 row
    np.testing.assert_array_equal(emb.face_idx[17:], static[0])
    assert dynamic_yaw_degrees(79)[0] == 0
    with pytest.raises(ModelFileError, match="only the 51 inner"):
        load_flame(path, embedding_paths=[tmp_path / "flame_static_embedding.pkl"])


def test_mediapipe_embedding_file(flame_pkl, tmp_path):
    path, _ = flame_pkl
    rng = np.random.default_rng(5)
    face_idx, bary = random_embedding(rng, (105,))
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=face_idx, lmk_b_coords=bary, landmark_indices=np.arange(105) * 2)
    model = load_flame(path, embedding_paths=[tmp_path / "mediapipe_landmark_embedding.npz"])
    np.testing.assert_array_equal(model.landmarks["mediapipe"].point_ids, np.arange(105) * 2)


def test_embedding_for_another_topology_is_refused(flame_pkl, tmp_path):
    path, _ = flame_pkl
    write_deca_embedding(tmp_path / "landmark_embedding.npy", np.random.default_rng(6), num_faces=9976)
    with pytest.raises(ModelFileError, match="landmark embedding is for another topology"):
        load_flame(path, embedding_paths=[tmp_path / "landmark_embedding.npy"])


def test_embedding_npy_payload_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    np.save(tmp_path / "landmark_embedding.npy", {"static_lmk_faces_idx": SystemCall(marker)}, allow_pickle=True)
    with pytest.raises(ModelFileError, match="refuses to load"):
        load_npy(tmp_path / "landmark_embedding.npy")
    assert not marker.exists()


def test_model_round_trips_through_the_cache(flame_pkl, tmp_path):
    path, _ = flame_pkl
    write_deca_embedding(tmp_path / "landmark_embedding.npy", np.random.default_rng(7))
    model = load_flame(path, embedding_paths=[tmp_path / "landmark_embedding.npy"])
    model.save(tmp_path / "cache.npz")
    again = HeadModel.load_cache(tmp_path / "cache.npz").validate()
    np.testing.assert_array_equal(again.posedirs, model.posedirs)
    np.testing.assert_array_equal(again.landmarks["ibug68"].dynamic_yaw_degrees, model.landmarks["ibug68"].dynamic_yaw_degrees)


def test_inspect_describes_without_loading_data(flame_pkl, tmp_path):
    path, _ = flame_pkl
    info = inspect_model_file(path)
    assert info["kind"] == "FLAME model" and not info["problems"]
    assert info["keys"]["shapedirs"]["shape"] == [NUM_VERTS, 3, 400]
    assert info["keys"]["J_regressor"]["storage"] == "sparse csc"
    (tmp_path / "notes.npz").write_bytes(b"not a zip")
    assert "truncated or corrupt" in inspect_model_file(tmp_path / "notes.npz")["problems"][0]
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    assert inspect_model_file(tmp_path / "empty.npz")["kind"] == "unknown"


# --- the real FLAME 2023 Open extract -------------------------------------------------


@pytest.fixture(scope="module")
def extract_model():
    if not EXTRACT.exists():
        pytest.skip(f"FLAME 2023 Open extract not found at {EXTRACT}")
    return load_flame(EXTRACT)


def test_extract_loads_as_rigid_flame_2023_open(extract_model):
    model = extract_model
    assert (model.num_vertices, len(model.faces), model.num_identity, model.num_expression) == (5023, 9976, 60, 0)
    assert model.name == "FLAME 2023 Open" and model.licence == "CC-BY-4.0"
    assert model.provenance["articulation"] == RIGID_ARTICULATION
    assert (model.skin_weights[:, 0] == 1).all() and model.posedirs is None
    assert inspect_model_file(EXTRACT)["kind"] == "FLAME model"


def test_extract_mediapipe_landmarks_lie_on_the_face(extract_model):
    model = extract_model
    emb = model.landmarks["mediapipe"]
    assert len(emb.face_idx) == 105
    points = emb.points(model.v_template, model.faces)
    verts = model.v_template
    ids = list(emb.point_ids)
    # On the front half of the head, mostly in front of the median vertex, inside the head's box.
    assert (points[:, 2] > (verts[:, 2].min() + verts[:, 2].max()) / 2).all()
    assert np.median(points[:, 2]) > np.median(verts[:, 2])
    assert (points >= verts.min(0)).all() and (points <= verts.max(0)).all()
    nose_tip = ids.index(1) if 1 in ids else ids.index(4)
    assert np.argmax(points[:, 2]) == nose_tip
    for right, left in ((33, 263), (133, 362), (61, 291)):  # eye corners, mouth corners
        r, lft = points[ids.index(right)], points[ids.index(left)]
        assert r[0] < 0 < lft[0]  # +X is the model's left
        assert abs(lft[0] + r[0]) < 0.005 and abs(lft[1] - r[1]) < 0.005


def test_flame_with_bfm_space_takes_uvs_from_the_template_only(flame_extract_path, tmp_path):
    """FLAME_albedo_from_BFM.npz has no vt/ft: it is on FLAME's UV layout, which only the
    UV template can give a FLAME model; the texture space gives UVs only when it has them."""
    from flamefit.app.session import with_uv_source
    from flamefit.config import Settings
    from flamefit.models import load_head_model
    from flamefit.textures.spaces import read_texture_space

    rng = np.random.default_rng(0)
    bfm = tmp_path / "FLAME_albedo_from_BFM.npz"
    np.savez(bfm, MU=rng.random(8 * 8 * 3), PC=rng.normal(0, 0.01, (8 * 8 * 3, 4)))
    with pytest.raises(ModelFileError, match=r"no UV layout .*--uv-template head_template_mesh\.obj"):
        load_head_model(with_uv_source(Settings(flame_model=flame_extract_path, texture_space=bfm)))

    extract = np.load(flame_extract_path)
    verts, faces = extract["v_template"], extract["faces"]
    uvs = (verts[:, :2] - verts[:, :2].min(0)) / np.ptp(verts[:, :2], 0)
    obj = write_obj(tmp_path / "head_template_mesh.obj", verts, faces, uvs, faces)
    model = load_head_model(with_uv_source(Settings(flame_model=flame_extract_path, uv_template=obj,
                                                      texture_space=bfm)))
    assert model.provenance["uv"] == str(obj) and len(model.uv_faces) == 9976
    assert read_texture_space(bfm, model).num_components == 4  # FLAME's layout: accepted

    flame_space = tmp_path / "FLAME_texture.npz"  # with vt/ft: the UVs come from it
    np.savez(flame_space, mean=np.zeros((8, 8, 3)), tex_dir=np.zeros((8, 8, 3, 2)), vt=uvs, ft=faces)
    model = load_head_model(with_uv_source(Settings(flame_model=flame_extract_path, texture_space=flame_space)))
    assert model.provenance["uv"] == str(flame_space)
