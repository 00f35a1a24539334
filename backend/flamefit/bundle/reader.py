"""Read and check a result bundle (tests, `flamefit batch --resume`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .writer import FILES, SCHEMA_VERSION

MESH_KEYS = ("vertices", "faces", "uv_coords", "uv_faces", "shape_key_names", "shape_key_deltas",
             "shape_key_ranges", "landmark_face_idx", "landmark_bary")
PARAM_KEYS = ("identity", "expression", "pose", "translation", "sh", "focal_px", "principal_px", "world_to_camera")
RESULT_KEYS = ("schema_version", "flamefit_version", "model", "photo", "camera", "parameters", "lights",
               "landmarks_2d", "detected_landmarks_2d", "landmarks_3d", "metrics", "timings", "files")


def read_result(bundle) -> dict:
    return json.loads((Path(bundle) / "result.json").read_text())


def validate_bundle(bundle, deep: bool = True) -> list[str]:
    """Problems found in the bundle at `bundle` (empty list: a complete, consistent bundle)."""
    bundle = Path(bundle)
    problems: list[str] = []
    if not bundle.is_dir():
        return [f"{bundle}: not a folder"]
    try:
        result = read_result(bundle)
    except (OSError, ValueError) as exc:
        return [f"result.json unreadable: {exc}"]
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        problems.append(f"result.json lacks {missing}")
    if result.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {result.get('schema_version')} != {SCHEMA_VERSION}")
    for key, name in {**FILES, "mtl": "mesh.mtl"}.items():
        if not (bundle / name).is_file():
            problems.append(f"missing {name}")
    if problems or not deep:
        return problems
    for key in ("landmarks_2d", "detected_landmarks_2d", "landmarks_3d"):
        if len(result[key]) != 68:
            problems.append(f"{key} has {len(result[key])} points, expected 68")
    if len(result["lights"]["sh"]) != 9:
        problems.append("lights.sh is not 9x3")
    try:
        with np.load(bundle / FILES["mesh"], allow_pickle=False) as mesh:
            absent = [k for k in MESH_KEYS if k not in mesh.files]
            if absent:
                problems.append(f"mesh.npz lacks {absent}")
            else:
                V, F = mesh["vertices"].shape[0], mesh["faces"].shape[0]
                K = len(mesh["shape_key_names"])
                if mesh["vertices"].shape != (V, 3) or mesh["faces"].shape != (F, 3) or mesh["uv_faces"].shape != (F, 3):
                    problems.append("mesh.npz vertices/faces/uv_faces have inconsistent shapes")
                if mesh["faces"].max() >= V or mesh["uv_faces"].max() >= len(mesh["uv_coords"]):
                    problems.append("mesh.npz faces index missing vertices or UVs")
                if mesh["shape_key_deltas"].shape != (K, V, 3) or mesh["shape_key_ranges"].shape != (K, 2):
                    problems.append("mesh.npz shape keys have inconsistent shapes")
                if mesh["landmark_face_idx"].shape != (68,) or mesh["landmark_bary"].shape != (68, 3):
                    problems.append("mesh.npz landmark embedding is not 68 points")
                if not np.isfinite(mesh["vertices"]).all():
                    problems.append("mesh.npz vertices hold NaN or infinity")
        with np.load(bundle / FILES["params"], allow_pickle=False) as params:
            absent = [k for k in PARAM_KEYS if k not in params.files]
            if absent:
                problems.append(f"params.npz lacks {absent}")
            elif params["sh"].shape != (9, 3) or params["world_to_camera"].shape != (4, 4):
                problems.append("params.npz sh or world_to_camera has the wrong shape")
    except (OSError, ValueError) as exc:
        problems.append(f"cannot read arrays: {exc}")
    from PIL import Image

    for key in ("albedo", "overlay", "report"):
        try:
            with Image.open(bundle / FILES[key]) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 - any decoding problem is a problem
            problems.append(f"{FILES[key]} unreadable: {exc}")
    return problems
