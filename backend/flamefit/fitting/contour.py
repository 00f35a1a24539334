"""Jaw-line landmarks that follow the head's yaw, for models whose iBUG-68 embedding
has only static points (the open head, the FLAME extract, any automatic embedding).

A 2D detector puts points 0..16 on the face's outline, which slides over the cheek as
the head turns. DECA's FLAME embedding stores one row of jaw-line points per degree of
yaw; `dynamic_contour` builds the same table by "landmark marching": each jaw
point k has a band of template vertices along the ray from the nose tip through the
point, outward (cheek toward the ear, ears excluded); at yaw y the point is the band's
vertex that reaches furthest outward in the image once the template is turned by y (a
point of the outline). The yaw-0 row is the static embedding itself; points whose ray
is mostly vertical (the chin) stay static. Rows follow DECA's order (0..39, then -1..-39
degrees), so HeadLayer.landmarks and the fitter use the table as they use DECA's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..landmarks import ibug68
from ..models.flame import dynamic_yaw_degrees
from ..models.head_model import HeadModel, LandmarkEmbedding
from ..render.shading import vertex_normals

MAX_YAW = 39
BAND = 0.005  # metres either side of the ray
INSIDE = 0.02  # candidates start this far inside the static point
VERTICAL = 0.8  # |ray.y| above this: the chin, kept static


def dynamic_contour(model: HeadModel) -> LandmarkEmbedding:
    """The model's iBUG-68 embedding with a yaw table (its own when it has one already)."""
    emb = model.landmarks["ibug68"]
    if emb.dynamic_face_idx is not None:
        return emb
    verts = model.v_template.astype(np.float64)
    faces = model.faces
    points = emb.points(verts, faces)
    normals = vertex_normals(torch.as_tensor(verts[None]), torch.as_tensor(faces))[0].numpy()
    centre = points[ibug68.NOSE_TIP, :2]
    ears = np.zeros(len(verts), bool)
    if len(model.regions.get("ears", ())):
        ears[np.asarray(model.regions["ears"])] = True
    z_limit = min(points[0, 2], points[16, 2]) - 0.01  # in front of the ears
    eyes = np.zeros(len(verts), bool)
    for name in ("eyes", "eyeball_left", "eyeball_right", "mouth_interior"):
        if len(model.regions.get(name, ())):
            eyes[np.asarray(model.regions[name])] = True
    # One face per vertex, with the vertex's corner, to express a vertex as (face, bary).
    owner_face = np.full(len(verts), -1)
    owner_corner = np.zeros(len(verts), int)
    for k in range(3):
        owner_face[faces[:, k]] = np.arange(len(faces))
        owner_corner[faces[:, k]] = k
    yaws = dynamic_yaw_degrees(2 * MAX_YAW + 1)
    rows_face = np.repeat(emb.face_idx[None, :17], len(yaws), axis=0).copy()
    rows_bary = np.repeat(emb.bary[None, :17], len(yaws), axis=0).copy()
    for k in ibug68.JAW:
        ray = points[k, :2] - centre
        length = np.linalg.norm(ray)
        if length < 1e-6:
            continue
        ray /= length
        if abs(ray[1]) > VERTICAL:
            continue
        rel = verts[:, :2] - centre
        along = rel @ ray
        across = np.abs(rel[:, 0] * ray[1] - rel[:, 1] * ray[0])
        band = (across < BAND) & (along > length - INSIDE) & (verts[:, 2] > z_limit) & ~ears & ~eyes \
            & (owner_face >= 0) & (normals[:, 2] > -0.5)
        candidates = np.nonzero(band)[0]
        if len(candidates) < 2:
            continue
        for row, yaw in enumerate(yaws):
            if yaw == 0:
                continue
            a = np.radians(yaw)
            rotated_x = np.cos(a) * verts[candidates, 0] + np.sin(a) * verts[candidates, 2]
            rotated = np.stack([rotated_x, verts[candidates, 1]], 1)
            centre_x = np.cos(a) * points[ibug68.NOSE_TIP, 0] + np.sin(a) * points[ibug68.NOSE_TIP, 2]
            reach = (rotated - (centre_x, centre[1])) @ ray
            static_x = np.cos(a) * points[k, 0] + np.sin(a) * points[k, 2]
            static_reach = (np.array([static_x, points[k, 1]]) - (centre_x, centre[1])) @ ray
            best = int(np.argmax(reach))
            if reach[best] <= static_reach:  # the static point is still on the outline
                continue
            v = candidates[best]
            rows_face[row, k] = owner_face[v]
            bary = np.zeros(3, np.float32)
            bary[owner_corner[v]] = 1.0
            rows_bary[row, k] = bary
    return dataclasses.replace(emb, dynamic_face_idx=rows_face.astype(np.int64), dynamic_bary=rows_bary.astype(np.float32),
                               dynamic_yaw_degrees=np.asarray(yaws, np.float32))
