"""Repack the UV islands of a mesh cut out of a larger atlas so they fill the texture.

The open head keeps MakeHuman's full-body UVs, where the head uses a few percent of
the image. Islands keep their shape, orientation and relative texel density; they
are placed on shelves (rows or columns, whichever fits larger) at the largest common
scale that fits.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph


def uv_islands(uv_faces: np.ndarray, num_uvs: int) -> np.ndarray:
    """Island label per UV vertex: UV corners linked through shared triangles."""
    rows = uv_faces.reshape(-1)
    cols = np.roll(uv_faces, 1, axis=1).reshape(-1)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_uvs, num_uvs))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def _shelf_layout(sizes: np.ndarray, scale: float, gap: float):
    """Lower-left corners of boxes (N,2) on shelves in the unit square, or None if they don't fit."""
    corners = np.zeros_like(sizes)
    x = y = shelf_height = gap
    for i in np.argsort(-sizes[:, 1], kind="stable"):
        w, h = sizes[i] * scale
        if x + w + gap > 1.0:  # next shelf
            x, y = gap, y + shelf_height + gap
            shelf_height = 0.0
        if x + w + gap > 1.0 or y + h + gap > 1.0:
            return None
        corners[i] = (x, y)
        x += w + gap
        shelf_height = max(shelf_height, h)
    return corners


def quarter_turns_upright(uv_coords: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray,
                          verts: np.ndarray, region_faces: np.ndarray) -> int:
    """Quarter turns (counter-clockwise) that bring the model's up (+Y) to the texture's up
    (+v) for the island holding `region_faces`, judged on that region's corners."""
    uv = uv_coords[uv_faces[region_faces]].reshape(-1, 2)
    xy = verts[faces[region_faces]].reshape(-1, 3)[:, :2]
    uv_of_xy = np.linalg.lstsq(np.c_[xy - xy.mean(0)], uv - uv.mean(0), rcond=None)[0]  # (2,2): uv = xy @ M
    up = uv_of_xy[1]  # where +Y goes in UV
    return int(np.round((np.pi / 2 - np.arctan2(up[1], up[0])) / (np.pi / 2))) % 4


def rotate_island(uv_coords: np.ndarray, uv_faces: np.ndarray, face: int, quarter_turns: int) -> np.ndarray:
    """UVs with the island that holds triangle `face` turned by quarter turns about its centre."""
    labels = uv_islands(uv_faces, len(uv_coords))
    members = labels == labels[uv_faces[face, 0]]
    turned = uv_coords.astype(np.float64).copy()
    centre = turned[members].mean(0)
    for _ in range(quarter_turns % 4):
        rel = turned[members] - centre
        turned[members] = centre + np.c_[-rel[:, 1], rel[:, 0]]
    return turned.astype(uv_coords.dtype)


def pack_uv_islands(uv_coords: np.ndarray, uv_faces: np.ndarray, gap: float = 0.01) -> np.ndarray:
    """New UV coordinates (T,2) with the used islands packed into [0,1]² with `gap` between them."""
    labels = uv_islands(uv_faces, len(uv_coords))
    used = np.unique(labels[uv_faces.reshape(-1)])
    lows = np.array([uv_coords[labels == k].min(0) for k in used])
    sizes = np.array([uv_coords[labels == k].max(0) for k in used]) - lows
    best_scale, corners = 0.0, None
    for axes in ([0, 1], [1, 0]):  # shelves as rows, or as columns
        lo, hi = 0.0, 1.0 / sizes.max()
        for _ in range(40):  # bisection on the common scale
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _shelf_layout(sizes[:, axes], mid, gap) is not None else (lo, mid)
        if lo > best_scale:
            best_scale, corners = lo, _shelf_layout(sizes[:, axes], lo, gap)[:, axes]
    packed = uv_coords.astype(np.float64).copy()
    for k, low, corner in zip(used, lows, corners):
        members = labels == k
        packed[members] = (uv_coords[members] - low) * best_scale + corner
    return packed.astype(uv_coords.dtype)
