"""The one Wavefront OBJ reader: FLAME's UV template (triangles) and MakeHuman's base
mesh (quads, in `g` groups). Indices are kept exactly as written: a mesh library would
merge or split vertices at UV seams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .safe_pickle import require_regular


@dataclass(frozen=True)
class ObjMesh:
    positions: np.ndarray  # (V, 3) float64
    uvs: np.ndarray | None  # (T, 2) float64; None: no vt lines, or a face corner without one
    faces: np.ndarray  # (F, corners) int64, 0-based
    uv_faces: np.ndarray | None  # (F, corners) int64 into uvs
    groups: np.ndarray  # (F,) str: the `g` group each face is in ("" before the first)


def read_obj(path, corners: int, why: str) -> ObjMesh:
    """Read an OBJ whose faces all have `corners` corners (`why`: the sentence the error
    gives when one does not). Any problem is a ModelFileError naming the file."""
    path = Path(path)
    positions, uvs, faces, uv_faces, groups = [], [], [], [], []
    group = ""
    require_regular(path)  # a FIFO would block open() forever
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for number, line in enumerate(stream, 1):
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "v":
                    positions.append([float(x) for x in parts[1:4]])
                elif parts[0] == "vt":
                    uvs.append([float(x) for x in parts[1:3]])
                elif parts[0] == "g":
                    group = " ".join(parts[1:])
                elif parts[0] == "f":
                    if len(parts) != corners + 1:
                        raise ModelFileError(path, f"line {number}: a face with {len(parts) - 1} corners; {why}")
                    tokens = [corner.split("/") for corner in parts[1:]]
                    faces.append([_index(c[0], len(positions)) for c in tokens])
                    has_uv = all(len(c) > 1 and c[1] for c in tokens)
                    uv_faces.append([_index(c[1], len(uvs)) for c in tokens] if has_uv else None)
                    groups.append(group)
    except FileNotFoundError:
        raise ModelFileError(path, "file not found") from None
    except (OSError, ValueError, IndexError) as exc:
        raise ModelFileError(path, f"is not a readable OBJ file ({type(exc).__name__}: {exc})") from None
    if not positions or not faces:
        raise ModelFileError(path, "is not an OBJ mesh (no v or f lines)")
    with_uvs = bool(uvs) and all(f is not None for f in uv_faces)
    return ObjMesh(np.asarray(positions, np.float64).reshape(-1, 3),
                   np.asarray(uvs, np.float64).reshape(-1, 2) if with_uvs else None,
                   np.asarray(faces, np.int64),
                   np.asarray(uv_faces, np.int64) if with_uvs else None,
                   np.asarray(groups))


def _index(token: str, count_so_far: int) -> int:
    index = int(token)
    return index - 1 if index > 0 else count_so_far + index  # negative: relative
