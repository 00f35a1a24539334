"""UV-space helpers for the texture stage.

- `TexelMap`: which triangle and barycentrics cover each texel of a T x T texture.
- `mirror_texels`: for each texel, the texel at the mirror position (x -> -x) of the
  template, for filling unseen texels from the other side of the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.head_model import HeadModel
from ..render.uv_raster import rasterize_uv

_CACHE: dict = {}


@dataclass
class TexelMap:
    size: int
    texel_index: torch.Tensor  # (N,) flat index i * T + j of each covered texel
    face: torch.Tensor  # (N,) triangle
    bary: torch.Tensor  # (N, 3)
    mask: np.ndarray  # (T, T) bool, covered texels

    def points(self, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(N, 3) surface points of the texels on (1, V, 3) vertices."""
        corners = verts[0][faces[self.face]]  # (N, 3, 3)
        return (corners * self.bary[:, :, None]).sum(1)


def texel_map(model: HeadModel, size: int, device) -> TexelMap:
    """Rasterise the UV layout (outer surfaces win where charts overlap); cached."""
    key = ("texels", id(model), size, str(device))
    if key in _CACHE:
        return _CACHE[key]
    uv = torch.tensor(model.uv_coords, dtype=torch.float32, device=device)
    radius = np.linalg.norm(model.v_template[:, [0, 2]], axis=1)
    # Priority per uv vertex: minus the radius of a model vertex using it (outer wins).
    priority = np.zeros(len(model.uv_coords), dtype=np.float32)
    priority[model.uv_faces.reshape(-1)] = -radius[model.faces.reshape(-1)]
    uv_faces = torch.tensor(model.uv_faces, device=device)
    frags = rasterize_uv(uv, uv_faces, (size, size), priority=torch.as_tensor(priority, device=device) + 10.0)
    bary = frags.pixel_bary.clamp(0, 1)
    bary = bary / bary.sum(-1, keepdim=True).clamp(min=1e-8)
    mask = np.zeros(size * size, dtype=bool)
    mask[frags.pixel_index.cpu().numpy()] = True
    result = TexelMap(size, frags.pixel_index, frags.pixel_face, bary.detach(), mask.reshape(size, size))
    _CACHE[key] = result
    return result


MIRROR_RESOLUTION = 256  # the symmetry map is found at most at this texture size, then looked up


def mirror_texels(model: HeadModel, texels: TexelMap, max_distance: float = 0.004) -> torch.Tensor:
    """(N,) index into the texel list of each texel's mirror image (-1: none); cached.

    The mirror point (x -> -x on the template) of every texel of a coarse map
    (<= MIRROR_RESOLUTION) is found with a k-d tree; a texel of the full map takes the
    mirror UV of its coarse texel (an error below one coarse texel).
    """
    key = ("mirror", id(model), texels.size)
    if key in _CACHE:
        return _CACHE[key].to(texels.face.device)
    from scipy.spatial import cKDTree

    T = texels.size
    M = min(T, MIRROR_RESOLUTION)
    coarse = texels if M == T else texel_map(model, M, "cpu")
    verts = torch.tensor(model.v_template, dtype=torch.float32)
    corners = verts[torch.tensor(model.faces)[coarse.face.cpu()]]
    pts = (corners * coarse.bary.cpu()[:, :, None]).sum(1).numpy()
    distance, nearest = cKDTree(pts).query(pts * np.array([-1.0, 1.0, 1.0]), k=1, distance_upper_bound=max_distance)
    found = np.isfinite(distance)
    index = coarse.texel_index.cpu().numpy()
    # Mirror texel (row, col) per coarse texel, as a (M, M) lookup; -1 where none.
    lookup = np.full((M * M, 2), -1.0)
    target = index[np.where(found, nearest, 0)]
    lookup[index[found]] = np.stack([target[found] // M, target[found] % M], 1)
    lookup = lookup.reshape(M, M, 2)
    fine = texels.texel_index.cpu().numpy()
    row, col = fine // T, fine % T
    mirror_rc = lookup[row * M // T, col * M // T]  # coarse mirror (row, col)
    ok = mirror_rc[:, 0] >= 0
    scale = T / M
    # The centre of the fine texel's offset within its coarse texel, mirrored in u.
    off_r = (row % scale) if scale > 1 else 0
    off_c = (scale - 1 - col % scale) if scale > 1 else 0
    mr = np.clip((mirror_rc[:, 0] * scale + off_r).astype(np.int64), 0, T - 1)
    mc = np.clip((mirror_rc[:, 1] * scale + off_c).astype(np.int64), 0, T - 1)
    position = np.full(T * T, -1, dtype=np.int64)
    position[fine] = np.arange(len(fine))
    result = np.where(ok, position[mr * T + mc], -1)
    result = torch.as_tensor(result, dtype=torch.int64)
    _CACHE[key] = result
    return result.to(texels.face.device)
