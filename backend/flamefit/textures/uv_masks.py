"""UV-space masks of a head model for the unwrap: texels that are not skin (eyeballs,
teeth, mouth interior, overlapping UV charts) and the face core whose colours define a
photo's skin colour."""

from __future__ import annotations

import numpy as np

NON_SKIN_REGIONS = ("eyeball", "eyes", "teeth", "tongue", "mouth_interior")


def uv_skin_prior(model, size: int) -> np.ndarray:
    """(size, size) UV weights: 0 on texels of parts that are not skin (eyeballs, teeth,
    mouth interior): the model's named regions, and every small separate piece of the
    mesh (FLAME's eyeballs have no region names); and 0 where charts overlap."""
    import scipy.sparse
    import scipy.sparse.csgraph

    faces = np.asarray(model.faces)
    V = model.num_vertices
    excluded = np.zeros(V, bool)
    for name, idx in getattr(model, "regions", {}).items():
        if any(key in name.lower() for key in NON_SKIN_REGIONS):
            excluded[np.asarray(idx)] = True
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(V, V))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    excluded |= sizes[labels] < 0.25 * sizes.max()
    face_out = excluded[faces].any(1)
    prior = np.where(uv_overlap(model, size), 0.0, 1.0).astype(np.float32)
    if face_out.any():
        import cv2

        corners = np.asarray(model.uv_coords, np.float64)[np.asarray(model.uv_faces)[face_out]]
        pixels = np.stack([corners[..., 0] * size - 0.5, (1 - corners[..., 1]) * size - 0.5], -1)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, list(np.round(pixels * 16).astype(np.int32)), 1, lineType=cv2.LINE_8, shift=4)
        prior[mask > 0] = 0.0
    return prior


def uv_face_core(model, size: int) -> np.ndarray | None:
    """(size, size) bool: texels of the face itself (the model's "face" region, else the
    front of the template between the landmarks), where a photo's skin colour is taken."""
    from ..render.uv_raster import texel_map

    texels = texel_map(model, size, "cpu")
    faces = np.asarray(model.faces)[texels.face.numpy()]
    regions = getattr(model, "regions", {})
    if "face" in regions:
        inside = np.isin(faces, np.asarray(regions["face"])).all(1)
    elif model.landmarks:
        emb = model.landmarks.get("ibug68") or next(iter(model.landmarks.values()))
        points = emb.points(model.v_template, model.faces)
        lo, hi = points.min(0), points.max(0)
        centroid = np.asarray(model.v_template, np.float64)[faces].mean(1)
        inside = ((centroid[:, :2] >= lo[:2]) & (centroid[:, :2] <= hi[:2])).all(1) & (centroid[:, 2] >= lo[2] - 0.01)
    else:
        return None
    out = np.zeros(size * size, bool)
    out[texels.texel_index.numpy()[inside]] = True
    return out.reshape(size, size)


def uv_overlap(model, size: int) -> np.ndarray:
    """(size, size) bool: texels covered by more than one triangle in the UV layout
    (overlapping or folded charts, e.g. a generated layout around the ears), where one
    texel would mix the colours of different surfaces."""
    import torch

    from ..render.rasterizer import rasterize

    uv = torch.tensor(np.asarray(model.uv_coords), dtype=torch.float32)
    screen = torch.stack((uv[:, 0] * size, (1 - uv[:, 1]) * size, torch.zeros_like(uv[:, 0])), -1)[None]
    uv_faces = torch.tensor(np.asarray(model.uv_faces), dtype=torch.int64)
    first = rasterize(screen, uv_faces, (size, size))
    rest = torch.ones(len(uv_faces), dtype=torch.bool)
    rest[first.pixel_face] = False  # faces that own a texel; do the others cover texels too?
    out = np.zeros(size * size, bool)
    if bool(rest.any()):
        second = rasterize(screen, uv_faces[rest], (size, size))
        out[second.pixel_index.numpy()] = True
    return out.reshape(size, size)


def hair_vertices(model) -> np.ndarray:
    """(V,) float {0, 1}: where hair belongs on the head: the model's "scalp" region (top,
    back and sides of the skull above the ears) grown by one ring of triangles into the
    face region, so the hairline's triangles (between the face's vertices and the scalp's)
    count whole, not half (a profile's hair at the temples' hairline: AFW 4400753623 30.3
    -> 36.2 dB); not into the ears and the neck (an earring, a collar behind them). All
    zeros for a model without a "scalp" region."""
    faces = np.asarray(model.faces)
    regions = getattr(model, "regions", {})
    scalp = np.zeros(model.num_vertices)
    scalp[np.asarray(regions.get("scalp", []), int)] = 1.0
    ring = np.zeros(model.num_vertices)
    np.maximum.at(ring, faces.reshape(-1), np.repeat(scalp[faces].max(1), 3))
    ring[np.asarray(regions.get("face", []), int)] += 1.0  # the face's hairline vertices: 2 there
    return np.maximum(scalp, ring > 1.5).astype(np.float64)


def under_jaw_vertices(model, rings: int) -> np.ndarray:
    """(V,) float {0, 1}: the model's "neck" region grown by `rings` rings of triangles
    (into the chin's and jaw's underside, where a front photo holds the chin's shadow on
    the neck). All zeros for a model without a "neck" region."""
    faces = np.asarray(model.faces)
    grown = np.zeros(model.num_vertices)
    grown[np.asarray(getattr(model, "regions", {}).get("neck", []), int)] = 1.0
    for _ in range(rings):
        np.maximum.at(grown, faces.reshape(-1), np.repeat(grown[faces].max(1), 3))
    return grown


JAW_AND_BROWS = list(range(17)) + list(range(26, 16, -1))  # iBUG-68 outline: jaw 0-16, brows 26 back to 17


def uv_face_outline(model, size: int) -> np.ndarray:
    """(size, size) bool: skin texels inside the face outline (the iBUG-68 jaw line and
    brows) seen from the front on the template: the face's share of a texture is
    `uv_face_outline(model, size).mean()`. Needs a prepared model (its embedding)."""
    from ..render.uv_raster import texel_map

    texels = texel_map(model, size, "cpu")
    verts = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces)
    corners = verts[faces[texels.face.numpy()]]
    points = (corners * texels.bary.numpy()[:, :, None]).sum(1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    outline = model.landmarks["ibug68"].points(model.v_template, model.faces)[JAW_AND_BROWS]
    inside = inside_polygon(points[:, :2], outline[:, :2]) & (normals[:, 2] > 0) \
        & (points[:, 2] > outline[:, 2].min() - 0.01)
    out = np.zeros(size * size, bool)
    out[texels.texel_index.numpy()[inside]] = True
    return out.reshape(size, size) & (uv_skin_prior(model, size) > 0)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: points (N,2) inside the closed polygon (K,2), by counting crossings."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    straddles = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return ((straddles & (x < crossing_x)).sum(1) % 2) == 1
