"""Write a result bundle (INTERFACE.md section 3), atomically.

Files go to a temporary sibling folder `.NAME.tmp-PID`, which is renamed to NAME when
complete (with --overwrite, an existing NAME is moved aside first and removed after).
On any error or interruption the temporary folder (and any parent folders this call
created) is removed, so OUT_DIR either holds a complete bundle or does not exist.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import __version__
from ..errors import FlameFitError
from ..image import linear_to_srgb
from ..models.head_model import JOINT_NAMES
from ..models.lbs import blend_skinning
from .pictures import overlay_picture, report_picture
from .schema import RESULT_FILE, SCHEMA_VERSION, file_names, files_for

# key -> file name (schema.json); the photo's name depends on the photo (photo_name).
FILES = {key: entry["path"] for key, entry in files_for(SCHEMA_VERSION).items() if key != "photo"}
JPEG_SUFFIXES = (".jpg", ".jpeg")
CAMERA_CONVENTION = ("X_cam = R X + t; x = fx X_cam.x / -X_cam.z + cx; y = -fy X_cam.y / -X_cam.z + cy "
                     "(pixels, y down, pixel centres at +0.5)")
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def check_output(out_dir, overwrite: bool) -> Path:
    """The absolute output path; FlameFitError if it exists and may not be replaced."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FlameFitError(f"{out}: output folder already exists (use --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise FlameFitError(f"{out}: exists and is not a folder")
    return out


@contextmanager
def _signals_blocked():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _make_parents(path: Path) -> list[Path]:
    created = []
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def write_bundle(result, out_dir, overwrite: bool = False, progress=None, extra_timings: dict | None = None) -> Path:
    """Write `result` (a fitting.FitResult) as a bundle at out_dir; returns its absolute path."""
    out = check_output(out_dir, overwrite)
    stages = result.stages or ["bundle"]
    if progress is not None:
        progress({"event": "stage", "stage": "bundle", "index": stages.index("bundle") + 1, "count": len(stages)})
    start = time.perf_counter()
    try:
        return _write(result, out, progress, extra_timings, start)
    except OSError as exc:
        raise FlameFitError(f"{out}: cannot write the bundle ({exc.strerror or exc})") from None


def _write(result, out: Path, progress, extra_timings, start) -> Path:
    created = _make_parents(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    committed = False
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        steps = 6

        def step(i):
            if progress is not None:
                progress({"event": "progress", "stage": "bundle", "step": i, "total": steps})

        write_mesh(result, tmp / FILES["mesh"]); step(1)
        write_obj(result, tmp / FILES["obj"], tmp / FILES["mtl"])
        write_photo(result.photo, tmp / photo_name(result.photo)); step(2)
        _write_png(tmp / FILES["albedo"], _albedo_u8(result.texture)); step(3)
        write_params(result, tmp / FILES["params"]); step(4)
        _write_png(tmp / FILES["overlay"], overlay_picture(result))
        _write_png(tmp / FILES["report"], report_picture(result)); step(5)
        timings = dict(extra_timings or {})
        timings.update(result.timings)
        timings["bundle"] = round(time.perf_counter() - start, 3)
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
        result.timings = timings
        (tmp / RESULT_FILE).write_text(json.dumps(result_json(result, out), indent=2, allow_nan=False),
                                       encoding="utf-8")
        step(6)
        with _signals_blocked():
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            committed = True
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with _signals_blocked():
            shutil.rmtree(out if committed else tmp, ignore_errors=True)
            for parent in reversed(created):
                try:
                    parent.rmdir()
                except OSError:
                    pass
        raise
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise FlameFitError(f"{path}: cannot write image")


def photo_name(photo) -> str:
    """photo.jpg for a JPEG photo (a PNG of a phone photo is ~5x larger), else photo.png."""
    png, jpg = file_names("photo")
    return jpg if Path(photo.path).suffix.lower() in JPEG_SUFFIXES else png


def write_photo(photo, path: Path) -> None:
    """The upright (EXIF-applied) RGB photo the fit saw: the add-on's camera background."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(path), np.ascontiguousarray(photo.rgb[..., ::-1]), params):
        raise FlameFitError(f"{path}: cannot write image")


def _albedo_u8(texture: np.ndarray) -> np.ndarray:
    return np.clip(np.round(linear_to_srgb(texture) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- arrays


def shape_keys(result) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, (K, V, 3) offsets for +1 unit of each fitted coefficient at the fitted pose,
    and (K, 2) slider ranges. The forward is affine in the coefficients at a fixed pose,
    so LBS(rest + basis_k) - LBS(rest) is exact."""
    rig, state, model = result.rig, result.state, result.model
    names, bases, ranges = [], [], []
    S, E = state.identity.shape[1], state.expression.shape[1]
    identity_names = model.identity_names or [f"identity_{k:03d}" for k in range(model.num_identity)]
    expression_names = model.expression_names or [f"expression_{k:03d}" for k in range(model.num_expression)]
    nonneg = bool(model.expression_names)
    for k in range(S):
        names.append(identity_names[k]); bases.append(("identity", k))
        value = float(state.identity[0, k])
        ranges.append([min(-3.0, math.floor(value)), max(3.0, math.ceil(value))])
    for k in range(E):
        names.append(expression_names[k]); bases.append(("expression", k))
        value = float(state.expression[0, k])
        ranges.append([0.0, max(1.0, math.ceil(value))] if nonneg else [min(-3.0, math.floor(value)), max(3.0, math.ceil(value))])
    layer = rig.layer
    V = model.num_vertices
    deltas = np.zeros((len(names), V, 3), np.float32)
    with torch.no_grad():
        rest = layer.shaped(state.identity, state.expression)  # (1, V, 3)
        posed0, _ = blend_skinning(rest, state.pose, layer.joint_regressor, layer.parents, layer.skin_weights, layer.posedirs)
        chunk = 32
        for start in range(0, len(names), chunk):
            part = bases[start:start + chunk]
            offsets = torch.stack([(layer.identity_basis if kind == "identity" else layer.expression_basis)[..., k]
                                   for kind, k in part])
            pose = state.pose.expand(len(part), -1, -1)
            posed, _ = blend_skinning(rest + offsets, pose, layer.joint_regressor, layer.parents, layer.skin_weights,
                                      layer.posedirs)
            deltas[start:start + len(part)] = (posed - posed0).cpu().numpy()
    return names, deltas, np.asarray(ranges, np.float32).reshape(-1, 2)


def basis_and_values(result) -> tuple[np.ndarray, np.ndarray]:
    """Schema 2's `basis_vertices` (the fitted identity, expression 0, at the fitted pose)
    and `shape_key_values` (identity keys 0, expression keys their coefficient), so that
    basis + sum(values[k] * deltas[k]) == vertices (exact: the forward is affine in the
    coefficients at a fixed pose). Interim, until HeadLayer.shape_keys lands (jaw key)."""
    rig, state = result.rig, result.state
    layer = rig.layer
    with torch.no_grad():
        rest = layer.shaped(state.identity, torch.zeros_like(state.expression))
        basis, _ = blend_skinning(rest, state.pose, layer.joint_regressor, layer.parents, layer.skin_weights,
                                  layer.posedirs)
    values = np.concatenate([np.zeros(state.identity.shape[1]), state.expression[0].detach().cpu().numpy()])
    return basis[0].cpu().numpy().astype(np.float32), values.astype(np.float32)


def write_mesh(result, path: Path) -> None:
    model = result.model
    names, deltas, ranges = shape_keys(result)
    basis, values = basis_and_values(result)
    np.savez(
        path,
        basis_vertices=basis,
        shape_key_values=values,
        vertices=result.vertices.astype(np.float32),
        faces=model.faces.astype(np.int32),
        uv_coords=model.uv_coords.astype(np.float32),
        uv_faces=model.uv_faces.astype(np.int32),
        shape_key_names=np.array(names, dtype=str),
        shape_key_deltas=deltas,
        shape_key_ranges=ranges,
        landmark_face_idx=result.landmark_face_idx.astype(np.int32),
        landmark_bary=result.landmark_bary.astype(np.float32),
    )


def world_to_camera(frame) -> np.ndarray:
    """(4, 4) world -> camera transform of the fit's camera (fitting.geometry.CameraFrame).
    INTERFACE.md section 4 gives the SH light for WORLD-space normals; the renderer shades
    with CAMERA-space normals. They agree because the fitter's camera has no rotation, so
    a rotated camera is refused here rather than written with its light in the wrong frame
    (rotating 9 SH coefficients with it would need the band-2 rotation matrices)."""
    camera = frame.camera(None, "cpu", torch.float64)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = camera.R[0].numpy(), camera.t[0].numpy()
    if not np.allclose(matrix[:3, :3], np.eye(3), atol=1e-9):
        raise RuntimeError("the camera is rotated, but the bundle's SH light is in world space only for a camera "
                           "without rotation (INTERFACE.md section 4)")
    return matrix


def write_params(result, path: Path) -> None:
    state = result.state
    focal, principal = result.frame.intrinsics(None)
    np.savez(
        path,
        identity=state.identity[0].cpu().numpy().astype(np.float32),
        expression=state.expression[0].cpu().numpy().astype(np.float32),
        pose=state.pose[0].cpu().numpy().astype(np.float32),
        translation=state.translation[0].cpu().numpy().astype(np.float32),
        sh=state.sh[0].cpu().numpy().astype(np.float32),
        focal_px=focal.astype(np.float32),
        principal_px=principal.astype(np.float32),
        world_to_camera=world_to_camera(result.frame).astype(np.float32),
    )


def write_obj(result, obj_path: Path, mtl_path: Path) -> None:
    model = result.model
    buffer = io.StringIO()
    buffer.write(f"# FlameFit {__version__}: {model.name} fitted to {result.photo.path.name}\n")
    buffer.write(f"mtllib {mtl_path.name}\n")
    np.savetxt(buffer, result.vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(buffer, model.uv_coords, fmt="vt %.6f %.6f")
    buffer.write("usemtl flamefit_albedo\n")
    corners = np.stack([model.faces + 1, model.uv_faces + 1], axis=-1).reshape(len(model.faces), 6)
    np.savetxt(buffer, corners, fmt="f %d/%d %d/%d %d/%d")
    obj_path.write_text(buffer.getvalue())
    mtl_path.write_text("newmtl flamefit_albedo\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
                        f"map_Kd {FILES['albedo']}\n")


# ----------------------------------------------------------------------------- result.json


def model_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return re.sub(r"^flame_(\d{4})", r"flame\1", slug)


def _rows(array) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(array, dtype=np.float64)]


def result_json(result, out: Path) -> dict:
    state, model = result.state, result.model
    focal, principal = result.frame.intrinsics(None)
    expression_names = model.expression_names or [f"expression_{k:03d}" for k in range(model.num_expression)]
    crop = result.frame.crop
    return {
        "schema_version": SCHEMA_VERSION,
        "flamefit_version": __version__,
        "model": {"name": model.name, "version": model.version, "licence": model.licence, "id": model_id(model.name)},
        "photo": {"path": str(result.photo.path), "width": result.photo.width, "height": result.photo.height},
        "camera": {
            "type": "pinhole",
            "focal_px": [float(v) for v in focal],
            "principal_px": [float(v) for v in principal],
            "image_size": [result.photo.width, result.photo.height],
            "world_to_camera": world_to_camera(result.frame).tolist(),
            "convention": CAMERA_CONVENTION,
        },
        "parameters": {
            "identity": [float(v) for v in state.identity[0]],
            "expression": [float(v) for v in state.expression[0]],
            "expression_names": expression_names[: state.expression.shape[1]],
            "pose": {name: [float(v) for v in state.pose[0, j]] for j, name in enumerate(JOINT_NAMES)},
            "translation": [float(v) for v in state.translation[0]],
        },
        "lights": {"sh": _rows(state.sh[0].cpu().numpy()), "convention": "see section 4"},
        "landmarks_2d": _rows(result.fitted_2d),
        "detected_landmarks_2d": _rows(result.detected_2d),
        "landmarks_3d": _rows(result.landmarks_3d),
        "metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.metrics.items()},
        "timings": result.timings,
        "files": {**FILES, "photo": photo_name(result.photo)},
        "fit": {
            "stages": [s for s in result.stages if s != "bundle"],
            "texture_size": int(result.options.texture_size),
            "device": str(result.rig.device),
            "crop": {"x0": crop.x0, "y0": crop.y0, "side": crop.side},
            "landmarks": result.detection,
            "model_provenance": {k: v for k, v in model.provenance.items() if isinstance(v, str)},
        },
    }
