"""Reading and validating FlameFit result bundles (INTERFACE.md section 3). No bpy.

`load_bundle(path)` reads everything the importer needs and checks it *before* any
Blender data is created, so a bad bundle leaves the scene unchanged. Every problem is
a `BundleError` with one sentence a user can act on.

The bundle's layout comes from schema.json (the backend's `flamefit/bundle/schema.json`,
shipped in the add-on as io/schema.json). A bundle is data from elsewhere, so nothing in
it is trusted: every file it names must resolve inside its folder, sizes are checked from
the headers before anything is read, and numbers must be finite and in sane ranges.

Schema 3 holds one head and a list of `views` (one per photo: camera, photo, pose, expression,
light). Schemas 1 and 2 are read as the schema-3 shape with one view (`upgraded`), so the
importer sees one shape; every view gets the same checks.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from .npyio import NpyError, read_npz

HERE = os.path.dirname(os.path.abspath(__file__))
# shipped copy (build_addon.py), else the checkout's backend
SCHEMA_PATHS = (os.path.join(HERE, "schema.json"),
                os.path.join(os.path.dirname(os.path.dirname(HERE)), "backend", "flamefit", "bundle", "schema.json"))

REQUIRED_FILES = ("mesh", "albedo")
MESH_REQUIRED = ("vertices", "faces", "uv_coords", "uv_faces")
MAX_RESULT_BYTES = 4 * 2 ** 20  # result.json is ~100 KB; 4 MiB of "{}," parse to ~90 MB of Python objects
MAX_JSON_DEPTH = 32  # result.json nests 4 levels deep
MAX_JSON_NUMBER_CHARS = 100  # a float's repr has at most 24; a longer int overflows a float or costs time
MAX_VERTICES = 1_000_000
MAX_FACES = 2_000_000
MAX_SHAPE_KEYS = 2000
MAX_IMAGE_SIDE = 65536  # Blender's largest render resolution
MAX_IMAGE_PIXELS = 400_000_000  # the backend's decompression-bomb limit
MAX_TEXTURE_SIDE = 8192  # twice the backend's largest (--texture-size 4096); Blender holds 256 MB of it
MAX_NAME_CHARS = 256  # one shape-key name in mesh.npz
MAX_COORDINATE = 100.0  # metres; a head is 0.2 m across
MAX_COEFFICIENT = 1e4  # slider ranges, key values
MAX_VIEWS = 64  # photos of one person (schema.json's max_views); each becomes a camera and a light rig
JAW_KEY_NAMES = ("jawOpenPose", "jawOpen")  # the backend's jaw-joint key (head_model.JAW_KEY)
EYES_KEY = "eyesPose"
SHAPE_KEY_VALUE_LIMIT = 10.0  # Blender's slider range


class BundleError(Exception):
    """A result bundle this add-on cannot import; str(error) is one sentence."""


@lru_cache(maxsize=1)
def schema() -> dict:
    """The bundle schema (plain json, read once)."""
    for path in SCHEMA_PATHS:
        if os.path.isfile(path):
            with open(path, encoding="utf8") as fh:
                return json.load(fh)
    raise BundleError("the add-on is incomplete: its bundle schema (io/schema.json) is missing; reinstall it")


def readable_versions() -> tuple:
    return tuple(schema()["readable_versions"])


def photo_suffixes() -> tuple:
    return tuple(schema()["photo_suffixes"])


def view_files() -> tuple:
    """The files that are a view's own (schema 3's views[k].files; schemas 1-2's photo, overlay, report)."""
    return tuple(key for key, entry in schema()["files"].items() if entry.get("per_view"))


def max_views() -> int:
    return int(schema().get("max_views", MAX_VIEWS))


def _since(entry: dict, version: int) -> bool:
    return entry.get("since", 1) <= version


def mesh_arrays(version: int) -> dict:
    """Array name -> {"dtype", "shape"} of mesh.npz in a bundle of `version` (per-view arrays
    with their leading N axis; the optional ones included: a bundle may lack them)."""
    arrays = schema()["files"]["mesh"]["arrays"]
    return {name: {**spec, "shape": ["N", *spec["shape"]]} if spec.get("per_view") else spec
            for name, spec in arrays.items() if _since(spec, version)}


@dataclass
class CameraSpec:
    focal_px: tuple  # (fx, fy)
    principal_px: tuple  # (cx, cy)
    image_size: tuple  # (W, H) ints
    world_to_camera: list  # 4x4 row-major

    @property
    def rotation(self):
        return [row[:3] for row in self.world_to_camera[:3]]

    @property
    def translation(self):
        return [row[3] for row in self.world_to_camera[:3]]

    def project(self, point):
        """World point -> (x, y) pixels, y down (INTERFACE.md camera convention)."""
        R, t = self.rotation, self.translation
        xc = [sum(R[i][k] * point[k] for k in range(3)) + t[i] for i in range(3)]
        depth = -xc[2]
        return (self.focal_px[0] * xc[0] / depth + self.principal_px[0],
                -self.focal_px[1] * xc[1] / depth + self.principal_px[1])


@dataclass
class ViewSpec:
    """One photo of the subject: its camera (world = the first view's camera frame), light,
    landmarks and fitted parameters (in its own camera frame), and its files."""
    index: int
    name: str
    camera: CameraSpec
    sh: list  # 9 x [r, g, b], in this view's camera frame
    parameters: dict  # {"expression": [...], "pose": {joint: [3]}, "translation": [3]}
    files: dict  # key -> absolute path inside the folder (only files that exist)
    landmarks_2d: list = None  # [(x, y)] in this view's photo pixels
    metrics: dict = field(default_factory=dict)

    @property
    def photo_path(self):
        """The upright photo the backend fitted (inside the bundle), else None. result.json's
        photo.path is never loaded (INTERFACE.md section 3)."""
        return self.files.get("photo")


@dataclass
class Bundle:
    folder: str
    result_path: str
    result: dict  # schema 3's shape (schemas 1-2 upgraded in memory); `schema_version` is the file's
    mesh: dict  # name -> npyio.NdArray
    views: list  # ViewSpec, the first is the reference view (the world frame)
    files: dict  # the subject's files: key -> absolute path inside the folder (only files that exist)
    warnings: list = field(default_factory=list)

    @property
    def schema_version(self) -> int:
        return self.result["schema_version"]

    @property
    def camera(self) -> CameraSpec:
        return self.views[0].camera

    @property
    def sh(self) -> list:
        return self.views[0].sh

    @property
    def name(self) -> str:
        """One photo: its stem; several: the bundle folder's name (the person), else the
        first photo's stem."""
        folder = os.path.basename(os.path.normpath(self.folder))
        if len(self.views) > 1 and folder:
            return folder
        return self.views[0].name or folder or "flamefit"

    @property
    def photo_path(self):
        return self.views[0].photo_path

    @property
    def metrics(self) -> dict:
        metrics = self.result.get("metrics")
        if not isinstance(metrics, dict):
            return {}
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v)}

    @property
    def model_name(self) -> str:
        model = self.result.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        return str(name)[:200] if name is not None else "unknown head model"

    @property
    def landmarks_2d(self):
        return self.views[0].landmarks_2d

    @property
    def vertex_count(self) -> int:
        return self.mesh["vertices"].shape[0]

    def vertex(self, i: int):
        return self.mesh["vertices"].row(i)

    @property
    def basis_vertices(self):
        """Flat (V*3) neutral-face vertices the shape keys start from (schema 2), else None
        (schema 1: the keys start from `vertices`, each at value 0)."""
        arr = self.mesh.get("basis_vertices")
        return arr.data if arr is not None else None

    @property
    def shape_key_values(self):
        """The fitted value of each shape key (schema 2), else None (schema 1: all 0)."""
        arr = self.mesh.get("shape_key_values")
        return list(arr.data) if arr is not None else None

    def landmark_embedding(self, k: int = 0):
        """(face index per point, flat barycentric coordinates) of view k's 68 landmarks on the
        mesh (the jaw line follows each view's yaw: `view_landmark_*`, else the first view's),
        or None."""
        fidx, bary = self.mesh.get("view_landmark_face_idx"), self.mesh.get("view_landmark_bary")
        if fidx is not None and bary is not None:
            return fidx.row(k), bary.slab(k)
        fidx, bary = self.mesh.get("landmark_face_idx"), self.mesh.get("landmark_bary")
        return (fidx.data, bary.data) if fidx is not None and bary is not None else None

    def landmark_points(self):
        """World-space landmark points: from the mesh embedding when present, else landmarks_3d."""
        embedding = self.landmark_embedding(0)
        if embedding is not None:
            fidx, bary = embedding
            faces = self.mesh["faces"]
            points = []
            for i in range(len(fidx)):
                tri = faces.row(int(fidx[i]))
                b = bary[3 * i:3 * i + 3]
                verts = [self.vertex(int(v)) for v in tri]
                points.append(tuple(sum(b[k] * verts[k][c] for k in range(3)) for c in range(3)))
            return points
        pts = self.result["views"][0].get("landmarks_3d")
        return [tuple(map(float, p)) for p in pts] if pts else None

    @property
    def shape_keys(self):
        """[(name, flat deltas (V*3), (min, max))] in the file's order."""
        names = self.mesh.get("shape_key_names")
        deltas = self.mesh.get("shape_key_deltas")
        if names is None or deltas is None:
            return []
        ranges = self.mesh.get("shape_key_ranges")
        out = []
        for k in range(names.shape[0]):
            lo, hi = (ranges.row(k) if ranges is not None else (-3.0, 3.0))
            out.append((str(names.data[k]), deltas.slab(k), (float(lo), float(hi))))
        return out

    def view_key_values(self, k: int) -> list:
        """Each shape key's value for view k (view 0: the fitted values).

        Bundles from FlameFit with `view_shape_key_values` give them: with its own key
        "view<k>Pose" the head is view k's fitted head exactly (neck and jaw turn included).
        Older bundles: the keys are the reference view's: expression keys take view k's
        coefficients by name; the jaw (and eyes) key holds the reference view's jaw turn, so
        view k's is shown as that turn scaled by the projection of its axis-angle on it (the
        neck turn is not shown). Identity keys stay 0 (one subject)."""
        names = self.mesh.get("shape_key_names")
        if names is None:
            return []
        stored = self.mesh.get("view_shape_key_values")
        if stored is not None:
            return [float(v) for v in stored.row(k)]
        base = self.shape_key_values or [0.0] * names.shape[0]
        if k == 0:
            return list(base)
        values = list(base)
        view, ref = self.views[k].parameters, self.views[0].parameters
        expression = view.get("expression") or []
        by_name = {n: e for e, n in enumerate(self.result.get("expression_names") or [])}
        for i in range(names.shape[0]):
            name = str(names.data[i])
            e = by_name.get(name)
            if e is None and name.startswith("expression_") and name[11:].isdigit():
                e = int(name[11:])
            if name in JAW_KEY_NAMES and name not in by_name:
                values[i] = _turn_ratio(view["pose"], ref["pose"], ("jaw",))
            elif name == EYES_KEY:
                values[i] = _turn_ratio(view["pose"], ref["pose"], ("eye_left", "eye_right"))
            elif e is not None:
                values[i] = float(expression[e]) if e < len(expression) else 0.0
        return values


def _turn_ratio(pose, ref_pose, joints) -> float:
    """How much of the reference's joint turn (axis-angle, concatenated over `joints`) `pose`
    has: the projection of one on the other; 0 when the reference did not turn them."""
    a = [c for j in joints for c in pose.get(j, (0.0, 0.0, 0.0))]
    b = [c for j in joints for c in ref_pose.get(j, (0.0, 0.0, 0.0))]
    bb = sum(x * x for x in b)
    if bb < 1e-10:
        return 0.0
    return max(-SHAPE_KEY_VALUE_LIMIT, min(SHAPE_KEY_VALUE_LIMIT, sum(x * y for x, y in zip(a, b)) / bb))


# --- checks -------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _finite(values) -> bool:
    return all(_is_number(v) for v in values)


def _numbers(value, n, what, path, limit=1e12):
    if not isinstance(value, (list, tuple)) or len(value) != n or not _finite(value):
        raise BundleError(f"{path}: {what} must be {n} finite numbers, got {str(value)[:80]}")
    if any(abs(v) > limit for v in value):
        raise BundleError(f"{path}: {what} has an absurd value ({str(value)[:80]}; at most ±{limit:g})")
    return tuple(float(v) for v in value)


def _in_range(arr, lo, hi) -> bool:
    """All values finite and in [lo, hi] (min/max skip NaN, a sum does not)."""
    data = arr.data
    return len(data) == 0 or (math.isfinite(sum(data)) and lo <= min(data) and max(data) <= hi)


def _json_tree_problem(value, limit=MAX_JSON_DEPTH):
    """Why parsed JSON is unusable (too deep; text Blender cannot store), else None."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return "nested too deeply"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth) for k in item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode("utf8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no name or property can hold it
                return "text that is not valid Unicode"
    return None


# json's number hooks: Python's own int() refuses more than 4,300 digits with a ValueError of
# its own, and json reads NaN, Infinity and 1e999 (the backend writes none of them)
def _json_int(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_JSON_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise ValueError(f"a number out of range ({text[:24]})")
    return value


def _json_constant(text: str):
    raise ValueError(f"{text} is not a number")


def resolve_result_path(path) -> str:
    path = os.path.realpath(os.path.abspath(os.fspath(path)))
    if os.path.isdir(path):
        path = os.path.join(path, schema()["result_file"])
    return path


def read_result_json(path) -> dict:
    path = resolve_result_path(path)
    if not os.path.isfile(path):
        raise BundleError(f"no FlameFit result at {path} (expected a bundle folder or its result.json)")
    if os.path.getsize(path) > MAX_RESULT_BYTES:
        raise BundleError(f"{path} is too large to be a FlameFit result ({os.path.getsize(path)} bytes)")
    try:
        with open(path, encoding="utf8") as fh:
            result = json.load(fh, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except (OSError, ValueError) as exc:  # also JSONDecodeError, UnicodeDecodeError and the hooks' errors
        raise BundleError(f"{path} is not a readable FlameFit result ({str(exc)[:120]})") from None
    except (RecursionError, MemoryError):
        raise BundleError(f"{path} is not a FlameFit result (nested too deeply)") from None
    if not isinstance(result, dict):
        raise BundleError(f"{path} is not a FlameFit result (no JSON object)")
    problem = _json_tree_problem(result)
    if problem:
        raise BundleError(f"{path} is not a FlameFit result ({problem})")
    version = result.get("schema_version")
    if version is None:
        raise BundleError(f"{path} has no schema_version; it is not a FlameFit result bundle")
    readable = readable_versions()
    if type(version) is not int or version not in readable:
        newer = type(version) is int and version > max(readable)
        hint = "update the FlameFit add-on" if newer else "re-run the fit with a current backend"
        shown = "/".join(map(str, readable))
        raise BundleError(f"{path}: result bundle schema version {str(version)[:20]} is not supported "
                          f"(this add-on reads version {shown}); {hint}")
    return result


def _confined(folder: str, rel, key: str, path: str) -> str:
    """The absolute path of files.<key> if it stays inside `folder` (which is resolved)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or os.path.isabs(rel) or len(rel) > 255:
        raise BundleError(f"{path}: files.{key} must be a file name inside the bundle folder, "
                          f"got {str(rel)[:80]!r}")
    full = os.path.realpath(os.path.join(folder, rel))
    if os.path.commonpath([folder, full]) != folder or full == folder:
        raise BundleError(f"{path}: files.{key} ({rel[:80]!r}) points outside the bundle folder; refused")
    return full


_DTYPE_KINDS = {"float32": "f", "float64": "f", "int32": "iu", "int64": "iu", "str": "US", "bool": "b"}


def _mesh_header_check(version: int):
    """check(key, header) for read_npz: refuses a mesh.npz member from its .npy header, before
    any data is read, unless it has the schema's dtype and shape within the import limits
    (text decodes to one Python object per element: 64 M of them take gigabytes)."""
    specs = mesh_arrays(version)
    limits = {"V": MAX_VERTICES, "F": MAX_FACES, "K": MAX_SHAPE_KEYS, "N": max_views()}

    def check(key, head):
        spec = specs[key]
        if head.kind[0] not in _DTYPE_KINDS.get(spec["dtype"], ""):
            raise NpyError(f"{key} has dtype {head.order}{head.kind}, expected {spec['dtype']}")
        want = spec["shape"]
        fits = len(head.shape) == len(want) and all(
            got == dim if isinstance(dim, int) else got <= limits.get(dim, got)
            for dim, got in zip(want, head.shape, strict=False))
        if not fits:
            shown = ", ".join(f"{d} <= {limits[d]}" if d in limits else str(d) for d in want)
            raise NpyError(f"{key} has shape {head.shape}, expected ({shown})")
        if head.kind[0] in "US" and int(head.kind[1:]) > MAX_NAME_CHARS:
            raise NpyError(f"{key} holds names of {head.kind[1:]} characters (at most {MAX_NAME_CHARS})")

    return check


def _check_mesh(mesh: dict, path: str, version: int, views: int = 1) -> None:
    missing = [k for k in MESH_REQUIRED if k not in mesh]
    if missing:
        raise BundleError(f"{path} lacks the arrays {', '.join(missing)}")
    for pair in (("shape_key_names", "shape_key_deltas"), ("landmark_face_idx", "landmark_bary"),
                 ("view_landmark_face_idx", "view_landmark_bary")):
        if (pair[0] in mesh) != (pair[1] in mesh):
            raise BundleError(f"{path}: {pair[0]} and {pair[1]} must come together")
    if "view_shape_key_values" in mesh and "shape_key_names" not in mesh:
        raise BundleError(f"{path}: view_shape_key_values without shape keys")
    # shapes and dtypes from the schema; symbols (V, F, T, K, N views) must agree across arrays
    sizes = {"N": views}
    specs = mesh_arrays(version)
    for name in [n for n in specs if n in mesh]:
        arr, spec = mesh[name], specs[name]
        kinds = _DTYPE_KINDS.get(spec["dtype"], "")
        if arr.dtype[0] not in kinds:
            raise BundleError(f"{path}: {name} has dtype {arr.dtype}, expected {spec['dtype']}")
        want = spec["shape"]
        ok = arr.ndim == len(want)
        for dim, got in zip(want, arr.shape, strict=False):
            if isinstance(dim, int):
                ok = ok and dim == got
            else:
                ok = ok and sizes.setdefault(dim, got) == got
        if not ok:
            shown = "(" + ", ".join(str(sizes.get(d, d)) for d in want) + ")"
            raise BundleError(f"{path}: {name} has shape {arr.shape}, expected {shown}")
    V, F, T = mesh["vertices"].shape[0], mesh["faces"].shape[0], mesh["uv_coords"].shape[0]
    K = sizes.get("K", 0)
    if V == 0 or F == 0 or T == 0:
        raise BundleError(f"{path}: the mesh is empty")
    if V > MAX_VERTICES or F > MAX_FACES or K > MAX_SHAPE_KEYS:
        raise BundleError(f"{path}: a mesh of {V} vertices, {F} faces and {K} shape keys is too large to import")
    ranges = {"vertices": MAX_COORDINATE, "basis_vertices": MAX_COORDINATE, "shape_key_deltas": MAX_COORDINATE,
              "uv_coords": 16.0, "shape_key_ranges": MAX_COEFFICIENT, "shape_key_values": MAX_COEFFICIENT,
              "view_shape_key_values": MAX_COEFFICIENT}
    for name, limit in ranges.items():
        if name in mesh and not _in_range(mesh[name], -limit, limit):
            raise BundleError(f"{path}: {name} contain NaN, infinite or out-of-range values (beyond ±{limit:g})")
    for name in ("landmark_bary", "view_landmark_bary"):
        if name in mesh and not _in_range(mesh[name], -0.01, 1.01):
            raise BundleError(f"{path}: {name} contain NaN or values outside [0, 1]")
    if not _in_range(mesh["faces"], 0, V - 1):
        raise BundleError(f"{path}: faces index vertices outside 0..{V - 1}")
    if not _in_range(mesh["uv_faces"], 0, T - 1):
        raise BundleError(f"{path}: uv_faces index uv_coords outside 0..{T - 1}")
    for name in ("landmark_face_idx", "view_landmark_face_idx"):
        if name in mesh and not _in_range(mesh[name], 0, F - 1):
            raise BundleError(f"{path}: {name} indexes faces outside the mesh")


def _camera(cam, path: str) -> CameraSpec:
    """`path`: where the camera is, for the message ("result.json" or "result.json views[2]")."""
    if not isinstance(cam, dict):
        raise BundleError(f"{path} has no camera")
    ctype = cam.get("type", "pinhole")
    if ctype != "pinhole":
        raise BundleError(f"{path}: camera type {str(ctype)[:40]!r} is not supported (only pinhole)")
    focal = _numbers(cam.get("focal_px"), 2, "camera.focal_px", path)
    principal = _numbers(cam.get("principal_px"), 2, "camera.principal_px", path)
    size = _numbers(cam.get("image_size"), 2, "camera.image_size", path)
    W, H = int(round(size[0])), int(round(size[1]))
    if min(W, H) < 1 or max(W, H) > MAX_IMAGE_SIDE or W * H > MAX_IMAGE_PIXELS:
        raise BundleError(f"{path}: camera image size {W}x{H} is not a photo size (1 to {MAX_IMAGE_SIDE} "
                          f"pixels a side, at most {MAX_IMAGE_PIXELS // 10 ** 6} megapixels)")
    side = max(W, H)
    # from a ~170 degree to a ~0.6 degree field of view: anything else is not a camera that saw a face
    if not all(0.05 * side <= f <= 100 * side for f in focal) or max(focal) > 20 * min(focal):
        raise BundleError(f"{path}: camera focal length {focal[0]:.4g}x{focal[1]:.4g} px is absurd for a "
                          f"{W}x{H} photo")
    if not (-W <= principal[0] <= 2 * W and -H <= principal[1] <= 2 * H):
        raise BundleError(f"{path}: camera principal point {principal} is far outside the {W}x{H} photo")
    w2c = cam.get("world_to_camera")
    if not isinstance(w2c, list) or len(w2c) != 4:
        raise BundleError(f"{path}: camera.world_to_camera must be a 4x4 matrix")
    w2c = [list(_numbers(row, 4, "camera.world_to_camera row", path, limit=1e4)) for row in w2c]
    R = [row[:3] for row in w2c[:3]]
    ortho = max(abs(sum(R[k][i] * R[k][j] for k in range(3)) - (i == j)) for i in range(3) for j in range(3))
    if ortho > 1e-3 or w2c[3] != [0.0, 0.0, 0.0, 1.0]:
        raise BundleError(f"{path}: camera.world_to_camera is not a rotation and a translation")
    return CameraSpec(focal, principal, (W, H), w2c)


def _sh(lights, path: str) -> list:
    sh = lights.get("sh") if isinstance(lights, dict) else None
    if not isinstance(sh, list) or len(sh) != 9:
        raise BundleError(f"{path}: lights.sh must be 9 rows of [r, g, b]")
    return [list(_numbers(row, 3, "lights.sh row", path, limit=1e4)) for row in sh]


def _parameters(params, path: str) -> dict:
    """A view's expression, joint turns and translation (finite, bounded); missing parts are
    empty / zero (schema 1 bundles may lack them)."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BundleError(f"{path}: parameters must be a table")
    expression = params.get("expression") or []
    if not isinstance(expression, list) or len(expression) > MAX_SHAPE_KEYS:
        raise BundleError(f"{path}: parameters.expression must be a list of at most {MAX_SHAPE_KEYS} numbers")
    expression = list(_numbers(expression, len(expression), "parameters.expression", path, limit=MAX_COEFFICIENT))
    pose = params.get("pose") or {}
    if not isinstance(pose, dict) or len(pose) > 64:
        raise BundleError(f"{path}: parameters.pose must be a table of joint turns")
    pose = {str(j)[:40]: _numbers(v, 3, f"parameters.pose.{str(j)[:40]}", path, limit=2 * math.pi)
            for j, v in pose.items()}
    translation = params.get("translation")
    translation = _numbers(translation, 3, "parameters.translation", path, limit=MAX_COORDINATE) \
        if translation is not None else (0.0, 0.0, 0.0)
    return {"expression": expression, "pose": pose, "translation": translation}


def _points(value, n: int, what: str, path: str):
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 10000 or not all(
            isinstance(p, list) and len(p) == n and _finite(p) for p in value):
        shown = "[x, y]" if n == 2 else "[x, y, z]"
        raise BundleError(f"{path}: {what} must be a list of {shown}")
    return [tuple(float(c) for c in p) for p in value]


VIEW_KEYS = ("photo", "camera", "lights", "landmarks_2d", "landmarks_2d_fixed", "detected_landmarks_2d",
             "landmarks_3d", "metrics", "fit")


def upgraded(result: dict) -> dict:
    """A schema 1 or 2 result.json in schema 3's shape (one view; the file's version kept in
    schema_version). A schema 3 result is returned as it is."""
    if result.get("schema_version", 3) >= 3:
        return result
    out = {k: v for k, v in result.items() if k not in VIEW_KEYS or k in ("metrics", "fit")}  # both levels
    params = result.get("parameters") if isinstance(result.get("parameters"), dict) else {}
    out["parameters"] = {"identity": params.get("identity", [])}
    out["expression_names"] = params.get("expression_names", [])
    view = {k: result[k] for k in VIEW_KEYS if k in result}
    view["parameters"] = {k: params[k] for k in ("expression", "pose", "translation") if k in params}
    photo = result.get("photo")
    path = photo.get("path") if isinstance(photo, dict) else None
    view["name"] = os.path.splitext(os.path.basename(path))[0] if isinstance(path, str) else ""
    files = result.get("files")
    if isinstance(files, dict):
        out["files"] = {k: v for k, v in files.items() if k not in view_files()}
        view["files"] = {k: v for k, v in files.items() if k in view_files()}
    out["views"] = [view]
    return out


def _views(result: dict, folder: str, path: str) -> list:
    """Every view checked like schema 2's one photo: camera, light, landmarks, parameters, files."""
    views = result.get("views")
    if not isinstance(views, list) or not views:
        raise BundleError(f"{path} has no views (one per photo)")
    if len(views) > max_views():
        raise BundleError(f"{path} has {len(views)} views; at most {max_views()} photos of one person are imported")
    out, names = [], set()
    legacy = result["schema_version"] < 3  # one view: messages name the fields as the file has them
    for k, view in enumerate(views):
        where = path if legacy else f"{path} views[{k}]"
        if not isinstance(view, dict):
            raise BundleError(f"{where} is not a table")
        name = view.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise BundleError(f"{where}: name must be text of at most {MAX_NAME_CHARS} characters")
        name = name or f"view-{k + 1}"
        while name in names:  # Blender objects are named after views
            name += f"-{k + 1}"
        names.add(name)
        lights = view.get("lights")
        sh = _sh(lights if isinstance(lights, dict) else {}, where)
        camera = _camera(view.get("camera"), where)
        landmarks = _points(view.get("landmarks_2d"), 2, "landmarks_2d", where)
        _points(view.get("landmarks_3d"), 3, "landmarks_3d", where)
        params = _parameters(view.get("parameters"), where)
        files_spec = view.get("files") or {}
        if not isinstance(files_spec, dict) or len(files_spec) > 16:
            raise BundleError(f"{where}: files must be a table of file names")
        files = {}
        for key, rel in files_spec.items():
            full = _confined(folder, rel, str(key)[:40] if legacy else f"views[{k}].{str(key)[:40]}", path)
            if os.path.isfile(full):
                files[key] = full
        metrics = view.get("metrics")
        metrics = {m: v for m, v in metrics.items() if _is_number(v)} if isinstance(metrics, dict) else {}
        out.append(ViewSpec(k, name, camera, sh, params, files, landmarks, metrics))
    return out


def _check_photo(view: ViewSpec, warnings: list, several: bool) -> None:
    """The photo is optional: a missing, unreadable or mis-sized one is dropped with a warning."""
    which = f"view {view.name!r}: " if several else ""
    photo = view.files.get("photo")
    if photo is None:
        warnings.append(f"{which}the bundle has no photo of its own; the camera has no background image")
        return
    try:
        w, h = checked_image_size(photo)
        W, H = view.camera.image_size
        problem = None if (w, h) == (W, H) else f"the bundle's photo is {w}x{h} but the camera saw {W}x{H}"
    except BundleError as exc:
        problem = str(exc)
    if problem:
        view.files.pop("photo")
        warnings.append(f"{which}{problem}; the camera has no background image")


# Blender decodes an image by its content, whatever its name says: these are the formats it
# reads, by their first bytes, so a refusal can name what a file really is
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8", "JPEG"), (b"II*\x00", "TIFF"),
                (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"v/1\x01", "OpenEXR"), (b"#?", "Radiance HDR"),
                (b"SDPX", "DPX"), (b"XPDS", "DPX"), (b"\x80*_\xd7", "Cineon"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
                (b"\xffO\xffQ", "JPEG 2000"), (b"DDS ", "DDS"), (b"8BPS", "PSD"), (b"GIF8", "GIF"),
                (b"\x01\xda", "SGI"))
_JPEG_FRAMES = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


def image_format(path: str) -> str:
    """The image format of a file by its first bytes ("PNG", "JPEG", "TIFF", ...), else ""."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return ""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _IMAGE_MAGIC if head.startswith(magic)), "")


def image_size(path: str):
    """(width, height) from a PNG or JPEG header (by content, not name), else None (other
    formats, unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if not head.startswith(b"\xff\xd8"):
                return None
            fh.seek(2)
            for _ in range(1000):  # JPEG markers up to the frame header
                marker = fh.read(2)
                for _ in range(64):  # fill bytes before a marker
                    if marker[1:] != b"\xff":
                        break
                    marker = marker[1:] + fh.read(1)
                if len(marker) < 2 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):  # end, scan data
                    return None
                if marker[1] == 0x01 or 0xD0 <= marker[1] <= 0xD7:  # markers without a length
                    continue
                (length,) = struct.unpack(">H", fh.read(2))
                if marker[1] in _JPEG_FRAMES:
                    h, w = struct.unpack(">HH", fh.read(5)[1:5])
                    return w, h
                fh.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        return None
    return None


def checked_image_size(path: str) -> tuple:
    """(width, height) of a PNG or JPEG, the only formats a bundle holds; any other image is
    refused with its format named, before Blender decodes it (its header would go unread)."""
    size = image_size(path)
    if size is None:
        kind = image_format(path)
        found = f"a {kind} image" if kind and kind not in ("PNG", "JPEG") else "not a readable PNG or JPEG image"
        raise BundleError(f"{path} is {found}; a FlameFit bundle's images are PNG or JPEG")
    return size


def load_bundle(path) -> Bundle:
    """Read and validate a bundle folder (or its result.json). Raises BundleError."""
    result_path = resolve_result_path(path)
    result = upgraded(read_result_json(result_path))
    version = result["schema_version"]
    folder = os.path.dirname(result_path)
    files_spec = result.get("files")
    if not isinstance(files_spec, dict):
        raise BundleError(f"{result_path} has no 'files' table")
    files, missing = {}, []
    for key, rel in files_spec.items():
        full = _confined(folder, rel, str(key)[:40], result_path)
        if os.path.isfile(full):  # regular files only (no FIFO, device, folder)
            files[key] = full
        elif key in REQUIRED_FILES:
            missing.append(rel)
    missing += [f"<{key}>" for key in REQUIRED_FILES if key not in files_spec]
    if missing:
        raise BundleError(f"the result bundle {folder} is incomplete: missing {', '.join(missing)}")
    views = _views(result, folder, result_path)
    texture = checked_image_size(files["albedo"])
    if not (1 <= min(texture) and max(texture) <= MAX_TEXTURE_SIDE):
        raise BundleError(f"{files['albedo']}: an albedo of {texture[0]}x{texture[1]} pixels is refused "
                          f"(at most {MAX_TEXTURE_SIDE} a side)")
    try:
        mesh = read_npz(files["mesh"], names=set(mesh_arrays(version)), check=_mesh_header_check(version))
    except (NpyError, OSError) as exc:
        raise BundleError(f"cannot read the mesh of {folder}: {exc}") from None
    _check_mesh(mesh, files["mesh"], version, len(views))
    bundle = Bundle(folder=folder, result_path=result_path, result=result, mesh=mesh, views=views, files=files)
    for view in views:
        _check_photo(view, bundle.warnings, len(views) > 1)
    return bundle
