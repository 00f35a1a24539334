"""Repack the UV islands of a mesh cut out of a larger atlas so they fill the texture.

The open head keeps MakeHuman's full-body UVs, where the head uses a few percent of
the image. `split_charts` cuts islands into charts (each triangle names its chart:
the face becomes its own chart, so it can get more texels than the scalp);
`pack_uv_islands` places the islands at the largest common scale that fits, each
island keeping its shape and its own relative texel density (`density`: a face chart
at 2.4 gets 2.4x the texels per unit of surface of a density-1 island). Placement is
bitmap-based (each island rasterised on a grid, first fit bottom-left, every quarter
turn tried unless an island is held upright), so small islands fill the hollows that a
bounding-box (shelf) packer leaves empty.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

PACK_GRID = 256  # cells a side of the packing bitmap (1024 texels: 4 texels a cell)


def uv_islands(uv_faces: np.ndarray, num_uvs: int) -> np.ndarray:
    """Island label per UV vertex: UV corners linked through shared triangles."""
    rows = uv_faces.reshape(-1)
    cols = np.roll(uv_faces, 1, axis=1).reshape(-1)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_uvs, num_uvs))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def split_charts(uv_coords: np.ndarray, uv_faces: np.ndarray, chart: np.ndarray):
    """Cut the UV layout so that triangles of different `chart` labels (F,) share no UV
    vertex: a UV vertex used by several charts is copied once per chart. Returns new
    (uv_coords, uv_faces); the coordinates themselves do not move."""
    keys = np.stack([np.repeat(chart, 3), uv_faces.reshape(-1)], 1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return uv_coords[unique[:, 1]].copy(), inverse.reshape(uv_faces.shape).astype(uv_faces.dtype)


def quarter_turns_upright(uv_coords: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray,
                          verts: np.ndarray, region_faces: np.ndarray) -> int:
    """Quarter turns (counter-clockwise) that bring the model's up (+Y) to the texture's up
    (+v) for the island holding `region_faces`, judged on that region's corners."""
    uv = uv_coords[uv_faces[region_faces]].reshape(-1, 2)
    xy = verts[faces[region_faces]].reshape(-1, 3)[:, :2]
    uv_of_xy = np.linalg.lstsq(np.c_[xy - xy.mean(0)], uv - uv.mean(0), rcond=None)[0]  # (2,2): uv = xy @ M
    up = uv_of_xy[1]  # where +Y goes in UV
    return int(np.round((np.pi / 2 - np.arctan2(up[1], up[0])) / (np.pi / 2))) % 4


def _turn(points: np.ndarray, quarter_turns: int) -> np.ndarray:
    """Points (N,2) turned counter-clockwise by quarter turns about the origin."""
    for _ in range(quarter_turns % 4):
        points = np.c_[-points[:, 1], points[:, 0]]
    return points


def rotate_island(uv_coords: np.ndarray, uv_faces: np.ndarray, face: int, quarter_turns: int) -> np.ndarray:
    """UVs with the island that holds triangle `face` turned by quarter turns about its centre."""
    labels = uv_islands(uv_faces, len(uv_coords))
    members = labels == labels[uv_faces[face, 0]]
    turned = uv_coords.astype(np.float64).copy()
    centre = turned[members].mean(0)
    turned[members] = centre + _turn(turned[members] - centre, quarter_turns)
    return turned.astype(uv_coords.dtype)


def _island_mask(triangles: np.ndarray, cells: float, gap: int) -> np.ndarray:
    """Occupancy bitmap (rows = v) of UV triangles (T,3,2) already at the grid's scale and
    starting at (0, 0), every touched cell set, grown by `gap` cells on every side."""
    import cv2

    extent = np.ceil(triangles.reshape(-1, 2).max(0)).astype(int) + 1
    mask = np.zeros((extent[1] + 2 * gap, extent[0] + 2 * gap), np.uint8)
    points = np.round((triangles + gap) * 16).astype(np.int32)
    cv2.fillPoly(mask, list(points), 1, lineType=cv2.LINE_8, shift=4)
    cv2.polylines(mask, list(points), True, 1, lineType=cv2.LINE_8, shift=4)  # thin slivers touch cells too
    if gap:
        mask = cv2.dilate(mask, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))
    return mask


def _place(islands, scale: float, grid: int, gap: int):
    """(quarter turns, lower-left corner in cells) per island, or None when they do not fit."""
    import scipy.signal  # only when building a model: slow to import

    occupied = np.zeros((grid, grid), np.float32)
    # The border counts as occupied ground for the gap: islands keep `gap` cells from it.
    occupied[:gap], occupied[-gap:], occupied[:, :gap], occupied[:, -gap:] = 1, 1, 1, 1
    placed = [None] * len(islands)
    for i in sorted(range(len(islands)), key=lambda i: -islands[i]["area"] * islands[i]["density"] ** 2):
        island = islands[i]
        best = None
        for turns in island["turns"]:
            pts = _turn(island["triangles"].reshape(-1, 2), turns) * island["density"] * scale * grid
            pts = (pts - pts.min(0)).reshape(-1, 3, 2)
            mask = _island_mask(pts, grid, gap)
            h, w = mask.shape
            if h > grid + 2 * gap or w > grid + 2 * gap:
                continue
            padded = np.pad(occupied, gap)  # the island's own gap may overhang the border's
            if h > padded.shape[0] or w > padded.shape[1]:
                continue
            overlap = scipy.signal.fftconvolve(padded, mask[::-1, ::-1].astype(np.float32), mode="valid")
            free = np.argwhere(overlap < 0.5)
            if not len(free):
                continue
            row, col = free[np.lexsort((free[:, 1], free[:, 0]))[0]]  # lowest row, then leftmost
            if best is None or (row, col) < best[0]:
                best = ((row, col), turns, mask, pts)
        if best is None:
            return None
        (row, col), turns, mask, _ = best
        window = occupied[max(row - gap, 0):row - gap + mask.shape[0], max(col - gap, 0):col - gap + mask.shape[1]]
        window += mask[max(gap - row, 0):max(gap - row, 0) + window.shape[0],
                       max(gap - col, 0):max(gap - col, 0) + window.shape[1]]
        placed[i] = (turns, (col, row))
    return placed


def pack_uv_islands(uv_coords: np.ndarray, uv_faces: np.ndarray, gap: float = 0.01, density=None,
                    upright=(), grid: int = PACK_GRID) -> np.ndarray:
    """New UV coordinates (T,2) with the used islands packed into [0,1]², at least `gap`
    (a fraction of the texture) apart and from the border.

    density: {island label (of `uv_islands`): relative texel density} (default 1);
    upright: island labels that keep their orientation (the others may be turned by
    quarter turns where that packs tighter).
    """
    labels = uv_islands(uv_faces, len(uv_coords))
    face_island = labels[uv_faces[:, 0]]
    density = density or {}
    gap_cells = max(1, int(np.ceil(gap * grid)))
    islands = []
    for k in np.unique(face_island):
        triangles = uv_coords[uv_faces[face_island == k]].astype(np.float64)
        edges = triangles[:, 1:] - triangles[:, :1]
        area = 0.5 * np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).sum()
        islands.append({"label": k, "triangles": triangles, "area": area, "density": float(density.get(k, 1.0)),
                        "turns": (0,) if k in upright else (0, 1, 2, 3)})
    total = sum(i["area"] * i["density"] ** 2 for i in islands)
    lo, hi = 0.0, 1.0 / np.sqrt(total)  # the islands' area can at most fill the square
    for _ in range(14):  # bisection on the common scale
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _place(islands, mid, grid, gap_cells) is not None else (lo, mid)
    placed = _place(islands, lo, grid, gap_cells)
    packed = uv_coords.astype(np.float64).copy()
    for island, (turns, corner) in zip(islands, placed):
        members = labels == island["label"]
        pts = _turn(uv_coords[members].astype(np.float64), turns) * island["density"] * lo
        # The bitmap's cells start at the island's lowest triangle corner.
        tri = _turn(island["triangles"].reshape(-1, 2), turns) * island["density"] * lo
        packed[members] = pts - tri.min(0) + np.asarray(corner, np.float64) / grid
    return packed.astype(uv_coords.dtype)
