"""FLAME files users bring: the model (.pkl/.npz), UV layouts, landmark embeddings.

Everything is read through `safe_pickle`, so no file can run code, and no chumpy is
needed. Supported model files: `generic_model.pkl` (FLAME 2017/2019/2020),
`flame2023.pkl`, `flame2023_no_jaw.pkl`, `flame2023_Open.pkl`, `.npz` files with the
same keys, and the test-asset extract (`faces` instead of `f`, no joints/skinning,
MediaPipe embedding in `lmk_*` keys).

Dynamic (yaw-dependent) jaw-line landmarks follow DECA / FLAME_PyTorch: the table has
2n+1 rows (n = 39); row k is for yaw = k degrees when k <= n and yaw = n - k
(i.e. -1 .. -n) when k > n. Yaw is the right-handed rotation about +Y of the
global∘neck rotation (DECA's `rot_mat_to_euler`: atan2(-R[2,0], ...)); positive yaw
turns the face from +Z toward +X, the model's left.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .head_model import JOINT_NAMES, JOINT_PARENTS, HeadModel, LandmarkEmbedding
from .obj import read_obj
from .safe_pickle import ChumpyExpression, load_npy, load_npz, load_pickle, npy_header, npz_headers

FLAME_VERTICES = 5023
FLAME_FACES = 9976
DEFAULT_IDENTITY_COMPONENTS = 300  # FLAME's shapedirs: 300 identity, then expression
NUM_POSE_FEATURES = (len(JOINT_NAMES) - 1) * 9
LICENCE_OPEN = "CC-BY-4.0"
LICENCE_FLAME = "FLAME licence (non-commercial research, see flame.is.tue.mpg.de)"
RIGID_ARTICULATION = "none: the file has no joints/skinning"
IBUG_CONTOUR = 17  # iBUG-68 points 0..16 are the jaw line
TRIANGLES_ONLY = "FLAME's template is all triangles"

# Keys some releases may use to say how many shapedirs components are identity.
IDENTITY_COUNT_KEYS = ("shape_dim", "num_betas", "num_shape", "n_shape", "num_shape_params", "num_identity", "identity_dim")


def _fail(path, problem, hint=""):
    raise ModelFileError(path, problem, hint)


# --- reading files ------------------------------------------------------------------


def read_arrays(path) -> dict:
    """The key -> value dict of a .pkl, .npz or object .npy file, read safely."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        data = load_pickle(path)
    elif suffix == ".npz":
        data = load_npz(path)
    elif suffix == ".npy":
        data = load_npy(path)
    else:
        _fail(path, f"unsupported file type '{suffix}'", "expected .pkl, .npz or .npy")
    if not isinstance(data, dict):
        _fail(path, f"holds a {type(data).__name__}, not a dictionary of arrays")
    return data


def _array(path, data: dict, key: str, dtype) -> np.ndarray:
    """data[key] as a dense numeric array of `dtype`, or a ModelFileError naming the key."""
    value = data[key]
    if isinstance(value, ChumpyExpression):
        _fail(path, f"{key} is a chumpy expression ({value.chumpy_name}) with no stored value",
              "re-export the file with chumpy installed, storing np.array(value)")
    if hasattr(value, "toarray"):  # scipy.sparse (J_regressor)
        value = value.toarray()
    try:
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(f"dtype {array.dtype}")
        return array.astype(dtype)
    except (TypeError, ValueError) as exc:
        _fail(path, f"{key} is not a numeric array ({type(value).__name__}: {exc})")


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _require_shape(path, name, array, expected, what="shape"):
    """`expected` is a tuple with None for any size."""
    ok = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape))
    if not ok:
        shown = "(" + ",".join("K" if e is None else str(e) for e in expected) + ")"
        _fail(path, f"{name} has {what} {tuple(array.shape)}, expected {shown}")


# --- the model ----------------------------------------------------------------------


def load_flame(path, uv_path=None, embedding_paths=()) -> HeadModel:
    """A FLAME model file with optional UVs (.obj or .npz with vt/ft) and landmark
    embeddings (DECA, FLAME_PyTorch or MediaPipe files), validated."""
    path = Path(path)
    data = read_arrays(path)
    model = _model_from_arrays(data, path)
    if "lmk_face_idx" in data and "landmark_indices" in data:  # the extract carries MediaPipe's
        model.landmarks["mediapipe"] = _mediapipe_embedding(data, path, f"FLAME MediaPipe embedding in {path.name}")
        model.provenance["landmarks"] = {"mediapipe": str(path)}
    if uv_path is not None:
        attach_uvs(model, uv_path)
    if embedding_paths:
        attach_landmarks(model, embedding_paths)
    return model.validate(path)


def _model_from_arrays(data: dict, path: Path) -> HeadModel:
    if "v_template" not in data or not ({"f", "faces"} & data.keys()):
        _fail(path, "is not a FLAME model (no v_template and f)", f"keys: {sorted(map(str, data))}")
    v_template = _array(path, data, "v_template", np.float32)
    _require_shape(path, "v_template", v_template, (None, 3))
    num_vertices = len(v_template)
    faces = _array(path, data, "f" if "f" in data else "faces", np.int64)
    _require_shape(path, "f", faces, (None, 3))
    if faces.size == 0 or faces.min() < 0:
        _fail(path, "f is empty or holds negative vertex indices")
    if faces.max() >= num_vertices:
        _fail(path, f"f indexes vertex {faces.max()} but v_template has {num_vertices} vertices (arrays of different models?)")
    shapedirs = _array(path, data, "shapedirs", np.float32) if "shapedirs" in data else np.zeros((num_vertices, 3, 0), np.float32)
    _require_shape(path, "shapedirs", shapedirs, (num_vertices, 3, None))
    identity, expression, split_note = split_shape_space(data, shapedirs, path)

    name, version, licence, release_note = guess_release(path, data)
    provenance = {"file": str(path), "release": release_note, "shape_space": split_note}
    if ("J_regressor" in data) != ("weights" in data):
        _fail(path, "has only one of J_regressor and weights; skinning needs both")
    if "J_regressor" in data:
        joint_regressor, skin_weights, posedirs = _articulation(data, path, num_vertices)
        provenance["articulation"] = "FLAME joints and skinning" + (", pose correctives" if posedirs is not None else ", no pose correctives")
    else:
        # Rigid: everything follows the global joint, placed at the centroid.
        joint_regressor = np.full((len(JOINT_NAMES), num_vertices), 1.0 / num_vertices, dtype=np.float32)
        skin_weights = np.zeros((num_vertices, len(JOINT_NAMES)), dtype=np.float32)
        skin_weights[:, 0] = 1.0
        posedirs = None
        provenance["articulation"] = RIGID_ARTICULATION
    return HeadModel(
        name=name, version=version, licence=licence, v_template=v_template, faces=faces,
        identity_basis=identity, expression_basis=expression, joint_regressor=joint_regressor,
        skin_weights=skin_weights, posedirs=posedirs, provenance=provenance,
    )


def _int_value(value) -> int | None:
    array = np.asarray(value)
    if array.size == 1 and np.issubdtype(array.dtype, np.integer):
        return int(array.reshape(()))
    return None


def _declared_count(data: dict, matches) -> int | None:
    """The first integer scalar among the keys `matches` accepts."""
    for key, value in data.items():
        if matches(str(key)) and _int_value(value) is not None:
            return _int_value(value)
    return None


def split_shape_space(data: dict, shapedirs: np.ndarray, path):
    """(identity, expression, note): FLAME stores both in shapedirs, 300 + 100, unless
    the file says otherwise (a count key or a separate expression basis)."""
    num_vertices, _, total = shapedirs.shape
    for key, value in data.items():
        if "expr" in str(key).lower() and isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[:2] == (num_vertices, 3):
            note = f"{total} identity components in shapedirs, {value.shape[2]} expression in {key}"
            return shapedirs, value.astype(np.float32), note
    identity_count = _declared_count(data, lambda key: key in IDENTITY_COUNT_KEYS)
    expression_count = _declared_count(data, lambda key: "expr" in key.lower())
    if identity_count is not None or expression_count is not None:
        identity_count = total - expression_count if identity_count is None else identity_count
        expression_count = total - identity_count if expression_count is None else expression_count
        note = f"split given by the file: {identity_count} identity + {expression_count} expression"
    elif total >= 400:
        identity_count, expression_count = DEFAULT_IDENTITY_COMPONENTS, total - DEFAULT_IDENTITY_COMPONENTS
        note = f"FLAME layout: {identity_count} identity + {expression_count} expression"
    else:
        identity_count, expression_count = total, 0
        note = f"{total} components, all identity (fewer than FLAME's 400)"
    if min(identity_count, expression_count) < 0 or identity_count + expression_count > total:
        _fail(path, f"shapedirs has {total} components, but the file declares "
                    f"{identity_count} identity + {expression_count} expression")
    identity = np.ascontiguousarray(shapedirs[:, :, :identity_count])
    expression = np.ascontiguousarray(shapedirs[:, :, identity_count:identity_count + expression_count])
    return identity, expression, note


def _articulation(data: dict, path, num_vertices: int):
    num_joints = len(JOINT_NAMES)
    joint_regressor = _array(path, data, "J_regressor", np.float32)
    _require_shape(path, "J_regressor", joint_regressor, (num_joints, num_vertices))
    skin_weights = _array(path, data, "weights", np.float32)
    _require_shape(path, "weights", skin_weights, (num_vertices, num_joints))
    if not np.allclose(skin_weights.sum(1), 1.0, atol=1e-3):
        _fail(path, "weights rows do not sum to 1")
    if "kintree_table" in data:
        table = _array(path, data, "kintree_table", np.int64)
        _require_shape(path, "kintree_table", table, (2, num_joints))
        if not np.array_equal(table[0, 1:], JOINT_PARENTS[1:]):
            _fail(path, f"kintree_table parents {table[0].tolist()} differ from FLAME's {JOINT_PARENTS.tolist()}")
    for key, expected in (("bs_style", "lbs"), ("bs_type", "lrotmin")):
        if key in data and _text(data[key]) != expected:
            _fail(path, f"{key} is '{_text(data[key])}'; FlameFit implements FLAME's '{expected}'")
    posedirs = None
    if "posedirs" in data:
        raw = _array(path, data, "posedirs", np.float32)
        if raw.shape == (NUM_POSE_FEATURES, num_vertices * 3):
            posedirs = raw
        else:
            _require_shape(path, "posedirs", raw, (num_vertices, 3, NUM_POSE_FEATURES))
            # (V,3,P) -> (P, V*3), column v*3+c: pose_feature @ posedirs gives per-vertex xyz (as smplx).
            posedirs = np.ascontiguousarray(raw.reshape(-1, NUM_POSE_FEATURES).T)
    return joint_regressor, skin_weights, posedirs


def guess_release(path: Path, data: dict):
    """(name, version, licence, how it was guessed) from the file name and keys."""
    name = path.name.lower()
    where = f"{path.parent.name}/{path.name}".lower()
    stated = " ".join(_text(data[k]) for k in ("license", "licence", "LICENSE") if k in data).lower()
    if "cc-by" in stated or "cc by" in stated or ("2023" in where and "open" in name):
        return "FLAME 2023 Open", "2023", LICENCE_OPEN, f"FLAME 2023 Open, from the file name {path.name}"
    if "2023" in where:
        if re.search(r"no[_\- ]?jaw", name):
            return "FLAME 2023 (no jaw)", "2023", LICENCE_FLAME, f"from the file name {path.name}"
        return "FLAME 2023", "2023", LICENCE_FLAME, f"from the file name {path.name}"
    year = re.search(r"(2017|2019|2020)", where)
    if year:
        return f"FLAME {year.group(1)}", year.group(1), LICENCE_FLAME, f"from the path {where}"
    return "FLAME", "unknown", LICENCE_FLAME, f"release not recognised from {path.name} (2017-2020 files are all generic_model.pkl)"


# --- UVs ----------------------------------------------------------------------------


def attach_uvs(model: HeadModel, uv_path) -> None:
    uv_coords, uv_faces = load_uv_layout(uv_path, model.num_vertices, model.faces)
    model.uv_coords, model.uv_faces = uv_coords, uv_faces
    model.provenance["uv"] = str(uv_path)


def load_uv_layout(path, num_vertices: int, faces: np.ndarray):
    """(uv_coords (T,2) float32, uv_faces (F,3) int64) from head_template_mesh.obj or
    an .npz with vt/ft (FLAME_texture.npz), checked against the model's topology."""
    path = Path(path)
    if path.suffix.lower() == ".obj":
        mesh = read_obj(path, 3, TRIANGLES_ONLY)
        uv_coords = None if mesh.uvs is None else mesh.uvs.astype(np.float32)
        face_vertices, uv_faces, positions = mesh.faces, mesh.uv_faces, mesh.positions
        if uv_coords is None:
            _fail(path, "has no UV coordinates (no vt lines, or f lines without /vt)")
        if len(positions) != num_vertices:
            _fail(path, f"UV template is for another topology ({len(positions)} vertices), expected {num_vertices}")
        if len(face_vertices) != len(faces):
            _fail(path, f"UV template is for another topology ({len(face_vertices)} faces), expected {len(faces)}")
        if not np.array_equal(face_vertices, faces):
            uv_faces = _reorder_uv_faces(path, face_vertices, uv_faces, faces)
    elif path.suffix.lower() == ".npz":
        arrays = load_npz(path, only=("vt", "ft"))
        if "vt" not in arrays or "ft" not in arrays:
            _fail(path, "has no vt/ft arrays (not a texture space with a UV layout)")
        uv_coords = np.asarray(arrays["vt"], dtype=np.float32)
        uv_faces = np.asarray(arrays["ft"]).astype(np.int64)
        _require_shape(path, "vt", uv_coords, (None, 2))
        if uv_faces.shape != faces.shape:
            _fail(path, f"UV layout is for another topology ({len(uv_faces)} faces), expected {len(faces)}")
        if uv_faces.min() == 1 and uv_faces.max() == len(uv_coords):  # 1-based, OBJ style
            uv_faces = uv_faces - 1
    else:
        _fail(path, f"unsupported UV file type '{path.suffix}'", "expected head_template_mesh.obj or an .npz with vt/ft")
    if uv_faces.min() < 0 or uv_faces.max() >= len(uv_coords):
        _fail(path, "UV faces index UV coordinates that do not exist")
    if not np.isfinite(uv_coords).all():
        _fail(path, "UV coordinates hold NaN or infinity")
    return uv_coords, uv_faces


def _canonical_corners(triangles):
    """Rotate each triangle (keeping its winding) so its smallest vertex comes first;
    returns the rotated triangles and the column order used."""
    order = (np.argmin(triangles, axis=1)[:, None] + np.arange(3)) % 3
    return np.take_along_axis(triangles, order, axis=1), order


def _reorder_uv_faces(path, obj_faces, obj_uv_faces, faces):
    """uv_faces for the model's triangle order when the OBJ lists the same triangles in
    another order or starting corner."""
    obj_canonical, obj_order = _canonical_corners(obj_faces)
    obj_uv_canonical = np.take_along_axis(obj_uv_faces, obj_order, axis=1)
    row_of = {tuple(tri): row for row, tri in enumerate(obj_canonical.tolist())}
    model_canonical, model_order = _canonical_corners(faces)
    rows = [row_of.get(tuple(tri)) for tri in model_canonical.tolist()]
    if any(row is None for row in rows):
        _fail(path, "UV template's triangles differ from the model's (same counts, different triangles or winding)")
    uv_faces = np.empty_like(faces)
    np.put_along_axis(uv_faces, model_order, obj_uv_canonical[rows], axis=1)
    return uv_faces


# --- landmark embeddings ------------------------------------------------------------


def _embedding_arrays(path, data, face_key, bary_key, num_points=None):
    face_idx = _array(path, data, face_key, np.int64)
    bary = _array(path, data, bary_key, np.float32)
    if num_points is not None:
        face_idx, bary = face_idx.reshape(-1), bary.reshape(-1, 3)
    if bary.shape != (*face_idx.shape, 3):
        _fail(path, f"{bary_key} has shape {bary.shape}, expected {(*face_idx.shape, 3)} to match {face_key}")
    if num_points is not None and len(face_idx) != num_points:
        _fail(path, f"{face_key} has {len(face_idx)} points, expected {num_points}")
    if not np.isfinite(bary).all():
        _fail(path, f"{bary_key} holds NaN or infinity")
    return face_idx, bary


def dynamic_yaw_degrees(num_rows: int) -> np.ndarray:
    """DECA / FLAME_PyTorch row order: 0..n then -1..-n degrees (see module docstring)."""
    n = (num_rows - 1) // 2
    rows = np.arange(num_rows)
    return np.where(rows <= n, rows, n - rows).astype(np.float32)


def _mediapipe_embedding(data, path, source) -> LandmarkEmbedding:
    face_idx, bary = _embedding_arrays(path, data, "lmk_face_idx", "lmk_b_coords", num_points=len(np.asarray(data["lmk_face_idx"]).reshape(-1)))
    point_ids = _array(path, data, "landmark_indices", np.int64).reshape(-1)
    if len(point_ids) != len(face_idx):
        _fail(path, f"landmark_indices has {len(point_ids)} ids for {len(face_idx)} points")
    return LandmarkEmbedding(face_idx=face_idx, bary=bary, point_ids=point_ids, source=source)


def read_embedding_file(path) -> dict:
    """Parts found in one embedding file: any of 'ibug68' (LandmarkEmbedding),
    'static51' and 'dynamic' ((face_idx, bary) pairs), 'mediapipe' (LandmarkEmbedding)."""
    path = Path(path)
    data = read_arrays(path)
    parts = {}
    if "static_lmk_faces_idx" in data:  # DECA's landmark_embedding.npy
        parts["static51"] = _embedding_arrays(path, data, "static_lmk_faces_idx", "static_lmk_bary_coords", 51)
        if "dynamic_lmk_faces_idx" in data:
            parts["dynamic"] = _embedding_arrays(path, data, "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
        if "full_lmk_faces_idx" in data:  # DECA's own 68 static points
            parts["full68"] = _embedding_arrays(path, data, "full_lmk_faces_idx", "full_lmk_bary_coords", 68)
        parts["source"] = f"DECA {path.name}"
    elif "lmk_face_idx" in data and "landmark_indices" in data:
        parts["mediapipe"] = _mediapipe_embedding(data, path, f"FLAME MediaPipe embedding {path.name}")
    elif "lmk_face_idx" in data and "lmk_b_coords" in data:
        ndim = np.asarray(data["lmk_face_idx"]).ndim
        if ndim == 2:  # FLAME_PyTorch flame_dynamic_embedding.npy
            parts["dynamic"] = _embedding_arrays(path, data, "lmk_face_idx", "lmk_b_coords")
        else:
            count = np.asarray(data["lmk_face_idx"]).size
            if count not in (51, 68):
                _fail(path, f"holds {count} landmarks; expected an iBUG embedding of 51 or 68 points")
            parts["static51" if count == 51 else "full68"] = _embedding_arrays(path, data, "lmk_face_idx", "lmk_b_coords", count)
        parts["source"] = f"FLAME_PyTorch {path.name}"
    else:
        _fail(path, "is not a landmark embedding FlameFit knows", f"keys: {sorted(map(str, data))}")
    if "dynamic" in parts:
        face_idx = parts["dynamic"][0]
        if face_idx.ndim != 2 or face_idx.shape[1] != IBUG_CONTOUR or face_idx.shape[0] % 2 == 0:
            _fail(path, f"dynamic embedding has shape {face_idx.shape}, expected (2n+1 yaw rows, {IBUG_CONTOUR})")
    return parts


def attach_landmarks(model: HeadModel, paths) -> None:
    """Read embedding files and add model.landmarks['ibug68'] / ['mediapipe']."""
    paths = [Path(p) for p in paths]
    static51 = full68 = dynamic = None
    sources = []
    for path in paths:
        parts = read_embedding_file(path)
        _check_topology(path, parts, len(model.faces))
        static51 = parts.get("static51", static51)
        full68 = parts.get("full68", full68)
        dynamic = parts.get("dynamic", dynamic)
        if "mediapipe" in parts:
            model.landmarks["mediapipe"] = parts["mediapipe"]
        sources.append(parts.get("source", Path(path).name))
        model.provenance.setdefault("landmarks", {})[Path(path).name] = str(path)
    if full68 is None and static51 is not None:
        if dynamic is None:
            _fail(paths[0], "has only the 51 inner iBUG landmarks", "also pass the dynamic (jaw-line) embedding, flame_dynamic_embedding.npy")
        # The 17 jaw-line points at rest are the dynamic table's yaw-0 row (row 0).
        full68 = (np.concatenate([dynamic[0][0], static51[0]]), np.concatenate([dynamic[1][0], static51[1]]))
    if full68 is not None:
        model.landmarks["ibug68"] = LandmarkEmbedding(
            face_idx=full68[0], bary=full68[1], point_ids=np.arange(68),
            dynamic_face_idx=None if dynamic is None else dynamic[0],
            dynamic_bary=None if dynamic is None else dynamic[1],
            dynamic_yaw_degrees=None if dynamic is None else dynamic_yaw_degrees(len(dynamic[0])),
            source=" + ".join(s for s in sources if "MediaPipe" not in s),
        )
    elif dynamic is not None:
        _fail(paths[0], "has only the dynamic jaw-line landmarks", "also pass the static embedding, flame_static_embedding.pkl")


def _check_topology(path, parts, num_faces):
    for key, value in parts.items():
        if key == "source":
            continue
        face_idx = value.face_idx if isinstance(value, LandmarkEmbedding) else value[0]
        if face_idx.size == 0:
            _fail(path, f"landmark embedding '{key}' is empty")
        if face_idx.min() < 0 or face_idx.max() >= num_faces:
            _fail(path, f"landmark embedding is for another topology (it uses face {face_idx.max()}, the model has {num_faces} faces)")


# --- model-info ---------------------------------------------------------------------


def _describe(value) -> dict:
    if hasattr(value, "toarray"):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "storage": f"sparse {value.format}"}
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, ChumpyExpression):
        return {"type": repr(value)}
    if isinstance(value, (str, bytes, int, float)):
        return {"value": _text(value), "type": type(value).__name__}
    return {"type": type(value).__name__}


def _guess_kind(keys) -> str:
    keys = set(map(str, keys))
    if "v_template" in keys and keys & {"f", "faces"}:
        return "FLAME model"
    texture_keys = keys & {"mean", "tex_dir", "MU", "PC"}
    if {"mean", "tex_dir"} <= keys or {"MU", "PC"} <= keys or ({"vt", "ft"} <= keys and texture_keys):
        return "texture space"  # with or without vt/ft (FLAME_albedo_from_BFM.npz has none)
    if {"vt", "ft"} <= keys:
        return "UV layout"
    if keys & {"static_lmk_faces_idx", "lmk_face_idx"}:
        return "landmark embedding"
    return "unknown"


def inspect_model_file(path) -> dict:
    """What a model/UV/embedding/texture file is, its keys with shapes and dtypes, and
    validation problems. Reads through the safe unpickler; never writes anything."""
    path = Path(path)
    info = {"path": str(path), "kind": "unknown", "keys": {}, "problems": []}
    suffix = path.suffix.lower()
    try:
        if suffix == ".obj":
            info.update(_inspect_obj(path))
            return info
        if suffix == ".npz":
            info["format"] = "npz"
            info["keys"] = {k: {"shape": list(s), "dtype": str(d)} for k, (s, d) in npz_headers(path).items()}
        elif suffix == ".npy" and not npy_header(path)[1].hasobject:
            shape, dtype = npy_header(path)
            info["format"] = "npy"
            info["keys"] = {"(array)": {"shape": list(shape), "dtype": str(dtype)}}
        else:
            info["format"] = "pickle" if suffix != ".npy" else "npy (pickled object)"
            data = read_arrays(path)
            info["keys"] = {str(k): _describe(v) for k, v in data.items()}
        info["kind"] = _guess_kind(info["keys"])
        info.update(_validate_kind(path, info["kind"], info["keys"]))
    except ModelFileError as exc:
        info["problems"].append(exc.problem + (f" ({exc.hint})" if exc.hint else ""))
    if info["kind"] == "unknown" and not info["problems"]:
        info["problems"].append("not a FLAME model, UV, texture-space or landmark-embedding file")
    return info


def _validate_kind(path, kind, keys) -> dict:
    out = {"problems": []}
    if kind == "FLAME model":
        model = load_flame(path)
        out["model"] = {**model.summary(), "articulation": model.provenance.get("articulation")}
    elif kind == "landmark embedding":
        parts = read_embedding_file(path)
        _check_topology(path, parts, FLAME_FACES)
        out["landmarks"] = {k: (len(v.face_idx) if isinstance(v, LandmarkEmbedding) else list(v[0].shape))
                            for k, v in parts.items() if k != "source"}
    elif kind == "UV layout":
        ft_shape = keys["ft"].get("shape")
        if ft_shape != [FLAME_FACES, 3]:
            out["problems"].append(f"ft has shape {ft_shape}, FLAME's topology needs [{FLAME_FACES}, 3]")
    return out


def _inspect_obj(path) -> dict:
    mesh = read_obj(path, 3, TRIANGLES_ONLY)
    positions, uvs, faces = mesh.positions, mesh.uvs, mesh.faces
    info = {"format": "obj", "kind": "UV template" if uvs is not None else "mesh without UVs",
            "keys": {"v": {"shape": list(positions.shape)}, "vt": {"shape": [0, 2] if uvs is None else list(uvs.shape)},
                     "f": {"shape": list(faces.shape)}}, "problems": []}
    if (len(positions), len(faces)) != (FLAME_VERTICES, FLAME_FACES):
        info["problems"].append(f"topology has {len(positions)} vertices / {len(faces)} faces; FLAME's is {FLAME_VERTICES} / {FLAME_FACES}")
    if uvs is None:
        info["problems"].append("no UV coordinates")
    return info
