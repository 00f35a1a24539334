"""Reading and validating FlameFit result bundles (INTERFACE.md section 3). No bpy.

`load_bundle(path)` reads everything the importer needs and checks it *before* any
Blender data is created, so a bad bundle leaves the scene unchanged. Every problem is
a `BundleError` with one sentence a user can act on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from .npyio import NpyError, read_npz

SCHEMA_VERSION = 1
REQUIRED_FILES = ("mesh", "albedo")
MESH_KEYS = ("vertices", "faces", "uv_coords", "uv_faces")


class BundleError(Exception):
    """A result bundle this add-on cannot import; str(error) is one sentence."""


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
class Bundle:
    folder: str
    result_path: str
    result: dict
    mesh: dict  # name -> npyio.NdArray
    camera: CameraSpec
    sh: list  # 9 x [r, g, b]
    files: dict  # key -> absolute path (only files that exist)
    warnings: list = field(default_factory=list)

    @property
    def name(self) -> str:
        """The photo's stem (falls back to the bundle folder's name)."""
        photo = self.result.get("photo") or {}
        path = photo.get("path") or ""
        stem = os.path.splitext(os.path.basename(path))[0]
        return stem or os.path.basename(os.path.normpath(self.folder)) or "flamefit"

    @property
    def photo_path(self):
        path = (self.result.get("photo") or {}).get("path")
        return path if path and os.path.isfile(path) else None

    @property
    def metrics(self) -> dict:
        metrics = self.result.get("metrics") or {}
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    @property
    def model_name(self) -> str:
        return str((self.result.get("model") or {}).get("name", "unknown head model"))

    @property
    def landmarks_2d(self):
        pts = self.result.get("landmarks_2d")
        return [tuple(map(float, p)) for p in pts] if pts else None

    @property
    def vertex_count(self) -> int:
        return self.mesh["vertices"].shape[0]

    def vertex(self, i: int):
        return self.mesh["vertices"].row(i)

    def landmark_points(self):
        """World-space landmark points: from the mesh embedding when present, else landmarks_3d."""
        fidx, bary = self.mesh.get("landmark_face_idx"), self.mesh.get("landmark_bary")
        if fidx is not None and bary is not None:
            faces = self.mesh["faces"]
            points = []
            for i in range(fidx.shape[0]):
                tri = faces.row(int(fidx.data[i]))
                b = bary.row(i)
                verts = [self.vertex(int(v)) for v in tri]
                points.append(tuple(sum(b[k] * verts[k][c] for k in range(3)) for c in range(3)))
            return points
        pts = self.result.get("landmarks_3d")
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


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _numbers(value, n, what, path):
    if not isinstance(value, (list, tuple)) or len(value) != n or not _finite(value):
        raise BundleError(f"{path}: {what} must be {n} finite numbers, got {value!r:.80}")
    return tuple(float(v) for v in value)


def resolve_result_path(path) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        path = os.path.join(path, "result.json")
    return path


def read_result_json(path) -> dict:
    path = resolve_result_path(path)
    if not os.path.isfile(path):
        raise BundleError(f"no FlameFit result at {path} (expected a bundle folder or its result.json)")
    try:
        with open(path, encoding="utf8") as fh:
            result = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not a readable FlameFit result ({exc})") from None
    if not isinstance(result, dict):
        raise BundleError(f"{path} is not a FlameFit result (no JSON object)")
    version = result.get("schema_version")
    if version is None:
        raise BundleError(f"{path} has no schema_version; it is not a FlameFit result bundle")
    if version != SCHEMA_VERSION:
        hint = "update the FlameFit add-on" if isinstance(version, int) and version > SCHEMA_VERSION \
            else "re-run the fit with a current backend"
        raise BundleError(f"{path}: result bundle schema version {version!r} is not supported "
                          f"(this add-on reads version {SCHEMA_VERSION}); {hint}")
    return result


def _check_mesh(mesh: dict, path: str) -> None:
    missing = [k for k in MESH_KEYS if k not in mesh]
    if missing:
        raise BundleError(f"{path} lacks the arrays {', '.join(missing)}")

    def shape_is(key, shape):
        arr = mesh[key]
        ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
        if not ok:
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
            raise BundleError(f"{path}: {key} has shape {arr.shape}, expected {want}")
        return arr

    verts = shape_is("vertices", (None, 3))
    faces = shape_is("faces", (None, 3))
    uvs = shape_is("uv_coords", (None, 2))
    uv_faces = shape_is("uv_faces", (faces.shape[0], 3))
    V, T = verts.shape[0], uvs.shape[0]
    if V == 0 or faces.shape[0] == 0:
        raise BundleError(f"{path}: the mesh is empty")
    if not _finite(verts.data):
        raise BundleError(f"{path}: vertices contain NaN or infinite values")
    if min(faces.data) < 0 or max(faces.data) >= V:
        raise BundleError(f"{path}: faces index vertices outside 0..{V - 1}")
    if min(uv_faces.data) < 0 or max(uv_faces.data) >= T:
        raise BundleError(f"{path}: uv_faces index uv_coords outside 0..{T - 1}")
    if "shape_key_deltas" in mesh or "shape_key_names" in mesh:
        if "shape_key_deltas" not in mesh or "shape_key_names" not in mesh:
            raise BundleError(f"{path}: shape_key_names and shape_key_deltas must come together")
        names = shape_is("shape_key_names", (None,))
        K = names.shape[0]
        shape_is("shape_key_deltas", (K, V, 3))
        if "shape_key_ranges" in mesh:
            shape_is("shape_key_ranges", (K, 2))
    if "landmark_face_idx" in mesh or "landmark_bary" in mesh:
        if "landmark_face_idx" not in mesh or "landmark_bary" not in mesh:
            raise BundleError(f"{path}: landmark_face_idx and landmark_bary must come together")
        idx = shape_is("landmark_face_idx", (None,))
        shape_is("landmark_bary", (idx.shape[0], 3))
        if idx.shape[0] and (min(idx.data) < 0 or max(idx.data) >= faces.shape[0]):
            raise BundleError(f"{path}: landmark_face_idx indexes faces outside the mesh")


def _camera(result: dict, path: str) -> CameraSpec:
    cam = result.get("camera")
    if not isinstance(cam, dict):
        raise BundleError(f"{path} has no camera")
    ctype = cam.get("type", "pinhole")
    if ctype != "pinhole":
        raise BundleError(f"{path}: camera type {ctype!r} is not supported (only pinhole)")
    focal = _numbers(cam.get("focal_px"), 2, "camera.focal_px", path)
    principal = _numbers(cam.get("principal_px"), 2, "camera.principal_px", path)
    size = _numbers(cam.get("image_size"), 2, "camera.image_size", path)
    if min(focal) <= 0 or min(size) < 1:
        raise BundleError(f"{path}: camera focal length and image size must be positive")
    w2c = cam.get("world_to_camera")
    if not isinstance(w2c, list) or len(w2c) != 4:
        raise BundleError(f"{path}: camera.world_to_camera must be a 4x4 matrix")
    w2c = [list(_numbers(row, 4, "camera.world_to_camera row", path)) for row in w2c]
    return CameraSpec(focal, principal, (int(round(size[0])), int(round(size[1]))), w2c)


def _sh(result: dict, path: str) -> list:
    sh = (result.get("lights") or {}).get("sh")
    if not isinstance(sh, list) or len(sh) != 9:
        raise BundleError(f"{path}: lights.sh must be 9 rows of [r, g, b]")
    return [list(_numbers(row, 3, "lights.sh row", path)) for row in sh]


def load_bundle(path) -> Bundle:
    """Read and validate a bundle folder (or its result.json). Raises BundleError."""
    result_path = resolve_result_path(path)
    result = read_result_json(result_path)
    folder = os.path.dirname(result_path)
    files_spec = result.get("files")
    if not isinstance(files_spec, dict):
        raise BundleError(f"{result_path} has no 'files' table")
    files = {}
    missing = []
    for key, rel in files_spec.items():
        if not isinstance(rel, str):
            continue
        full = os.path.normpath(os.path.join(folder, rel))
        if os.path.isfile(full):
            files[key] = full
        elif key in REQUIRED_FILES:
            missing.append(rel)
    missing += [f"<{key}>" for key in REQUIRED_FILES if key not in files_spec]
    if missing:
        raise BundleError(f"the result bundle {folder} is incomplete: missing {', '.join(missing)}")
    try:
        mesh = read_npz(files["mesh"])
    except (NpyError, OSError) as exc:
        raise BundleError(f"cannot read the mesh of {folder}: {exc}") from None
    _check_mesh(mesh, files["mesh"])
    bundle = Bundle(folder=folder, result_path=result_path, result=result, mesh=mesh,
                    camera=_camera(result, result_path), sh=_sh(result, result_path), files=files)
    lm2d = result.get("landmarks_2d")
    if lm2d is not None and (not isinstance(lm2d, list) or not all(
            isinstance(p, list) and len(p) == 2 and _finite(p) for p in lm2d)):
        raise BundleError(f"{result_path}: landmarks_2d must be a list of [x, y]")
    photo = (result.get("photo") or {}).get("path")
    if photo and not os.path.isfile(photo):
        bundle.warnings.append(f"the photo {photo} is gone; the camera has no background image")
    return bundle
