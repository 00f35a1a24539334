"""68-point landmark files: .pts (iBUG), .json, .npy.

Coordinates are read and written as they are, in FlameFit's convention (pixel (i, j)
centred at (j + 0.5, i + 0.5)). The 300-W annotations count from 1 (Matlab); that
half-pixel difference does not matter for fitting. A point given as NaN (JSON: null
or NaN) is missing, as MediaPipe's jaw line is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from ..fsutil import require_regular_file
from .ibug68 import NUM_POINTS

FORMATS = (".pts", ".json", ".npy")
# 68 points take under 4 KB in any of the formats; a larger file is not a landmark file,
# and is refused before it is read (and parsed) whole.
MAX_FILE_BYTES = 1 << 20


def _parse_pts(text: str, path: Path) -> np.ndarray:
    """version: 1 / n_points: 68 / { / x y lines / }"""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        start, end = lines.index("{"), lines.index("}")
    except ValueError:
        raise FlameFitError(f"{path}: not an iBUG .pts file (expected 'version: 1', 'n_points: 68', "
                            "then the points between '{' and '}')") from None
    header = dict(line.split(":", 1) for line in lines[:start] if ":" in line)
    try:
        points = np.array([[float(v) for v in line.split()] for line in lines[start + 1:end]])
    except ValueError as exc:
        raise FlameFitError(f"{path}: a point line is not two numbers ({exc})") from None
    declared = header.get("n_points", "").strip()
    if declared and declared.isdigit() and int(declared) != len(points):
        raise FlameFitError(f"{path}: header says n_points: {declared} but {len(points)} point lines follow")
    return points


def _parse_json(text: str, path: Path) -> np.ndarray:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlameFitError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise FlameFitError(f"{path}: JSON nested too deeply for a landmark file (expected a list of "
                            "[x, y] pairs)") from None
    if isinstance(data, dict):
        if "landmarks" not in data:
            raise FlameFitError(f"{path}: JSON object without a 'landmarks' key (expected a list of "
                                "[x, y] pairs or {\"landmarks\": [[x, y], ...]})")
        data = data["landmarks"]
    try:
        return np.array(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise FlameFitError(f"{path}: landmarks must be a list of [x, y] number pairs") from None


def load_landmarks_file(path) -> np.ndarray:
    """(68,2) float64 points (NaN rows: missing) from a .pts, .json or .npy file;
    FlameFitError otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise FlameFitError(f"{path}: unknown landmark file type '{suffix}'; use one of {', '.join(FORMATS)}")
    require_regular_file(path, "landmark file")  # a FIFO would block forever
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FlameFitError(f"{path}: {size / 1e6:.1f} MB is too large for a landmark file "
                                f"(68 points take a few KB; at most {MAX_FILE_BYTES >> 20} MB)")
        if suffix == ".npy":
            # Mapped, not read: a header may declare terabytes, and a map larger than the
            # (at most 1 MB) file is refused before anything is allocated.
            points = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
        else:
            text = path.read_text(encoding="utf-8")
            points = _parse_pts(text, path) if suffix == ".pts" else _parse_json(text, path)
    except FileNotFoundError:
        raise FlameFitError(f"{path}: landmark file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FlameFitError(f"{path}: cannot read landmark file ({exc})") from None
    points = np.asarray(points)
    if points.dtype.kind not in "iuf":
        raise FlameFitError(f"{path}: landmarks must be numbers, got {points.dtype}")
    points = points.astype(np.float64).squeeze()
    if points.shape != (NUM_POINTS, 2):
        raise FlameFitError(f"{path}: expected {NUM_POINTS} points of (x, y) (iBUG-68), got shape {points.shape}")
    missing = np.isnan(points)
    if np.isinf(points).any() or (missing.any(axis=1) != missing.all(axis=1)).any():
        raise FlameFitError(f"{path}: landmarks hold infinity or a half-missing (x, y) pair")
    if missing.all():
        raise FlameFitError(f"{path}: every landmark is missing (NaN)")
    return points


def save_landmarks_file(path, points: np.ndarray) -> None:
    """Write (68,2) points as .pts, .json ({"landmarks": ...}) or .npy, by suffix."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (NUM_POINTS, 2):
        raise FlameFitError(f"expected ({NUM_POINTS}, 2) points to save, got {points.shape}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, points)
    elif suffix == ".json":
        rows = [[None if np.isnan(v) else float(v) for v in row] for row in points]  # null: valid JSON
        path.write_text(json.dumps({"landmarks": rows}))
    elif suffix == ".pts":
        body = "\n".join(f"{float(x)!r} {float(y)!r}" for x, y in points)
        path.write_text(f"version: 1\nn_points: {NUM_POINTS}\n{{\n{body}\n}}\n")
    else:
        raise FlameFitError(f"{path}: unknown landmark file type '{suffix}'; use one of {', '.join(FORMATS)}")
