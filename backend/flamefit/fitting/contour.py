"""Jaw-line landmarks that follow the head's yaw, for models whose iBUG-68 embedding
has only static points (the open head, the FLAME extract, any automatic embedding).

A 2D detector puts points 0..16 on the face's outline, which slides over the cheek as
the head turns. DECA's FLAME embedding stores one row of jaw-line points per degree of
yaw; `dynamic_contour` builds the same table by "landmark marching": each jaw
point k has a slice of the template: where the surface crosses the vertical plane
through the nose tip and the point, outward of it (cheek toward the ear, ears
excluded); at yaw y the point is the slice's point that reaches furthest outward in
the image once the template is turned by y (a point of the outline). Points on the
slice itself, not the nearest vertices, keep each jaw point on its own line: a 5 mm
band of vertices let points slide along the outline: fitting the hand-annotated jaw
lines of every 3rd AFW face left 3.36 % NME on the jaw with it, 2.80 % with the slices. The yaw-0 row is the static embedding itself; points whose ray is mostly
vertical (the chin) stay static. Rows follow DECA's order (0..39, then -1..-39
degrees), so HeadLayer.landmarks and the fitter use the table as they use DECA's.

The static jaw points (the embedding without a yaw: `landmarks_2d_fixed`) are then moved
to where AFLW2000-3D's convention puts the jaw line: on the 3D surface, a hidden point drawn
where its surface point projects. They come from the model's own geometry:
the template's frontal silhouette along each point's slice, with the surface up to
SURFACE_BEHIND behind the ear-level points allowed (the ramus and the underside of the
jaw, which the yaw table's slices stop short of). The table keeps the old static points as
its yaw-0 row, so the fit and the outline points do not change. When the fitted head is
projected, the jaw points but the chin sit HIDDEN_JAW_DEPTH straight back from their surface
point (`deepen_jaw`): the set's jaw is deeper than any surface point at the same lateral reach.
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
INSIDE = 0.02  # candidates start this far inside the static point
VERTICAL = 0.8  # |ray.y| above this: the chin, kept static
# The surface jaw (landmarks_2d_fixed's hidden points) may lie this far (m) behind the
# static ear-level points 0 and 16 (10, 30 and 50 mm tried on AFLW2000-3D dev photos
# index % 3 == 1: 30 as good as 50, 10 worse; a hyper-parameter like the three below, not a
# statistic of the annotation). This jaw replaces 27 numbers learned from FlameFit's fits of
# those photos (AFLW2000-3D is for research use only: the product must not ship a statistic
# learned from its annotation). benchmarks/landmarks.py --set aflw --every 3 --fit, faces
# found with 3DDFA_V2: fitted NME68 (fixed) 3.09 / 4.84 / 8.18 -> 3.10 / 5.31 / 9.02 %
# (0-30 / 30-60 / 60+); AFW (landmarks_2d, the outline) unchanged: 3.90 / 3.57 / 5.52.
SURFACE_BEHIND = 0.03


# `landmarks_2d_fixed`'s jaw line (fixed_jaw_line), by the fitted |yaw| in degrees. These three
# are hyper-parameters picked among a few values on AFLW2000-3D dev photos (index % 3 == 1),
# not a statistic of its annotation; benchmarks score the other third. The near
# side from the outline below OUTLINE_BELOW_YAW (beyond it the yaw table, to MAX_YAW, no
# longer follows the outline: it made the 60+ band worse, 11.10 -> 11.88 % on the AFLW dev
# photos index % 3 == 1); the far side and the chin move from the outline (frontal) to the
# surface points at FAR_SURFACE_FROM_YAW (0-30: 2.57 % with the surface points from 10
# degrees on, 2.50 % with this blend).
OUTLINE_BELOW_YAW = 60.0
FAR_SURFACE_FROM_YAW = 20.0
# A visible jaw point: this share of the way from the surface point to the outline point.
# The set's visible jaw lies inside dlib's outline (AFLW dev 30-60: dlib's near half 9.5 %
# off); 0.7 vs 1 (index % 3 == 1): 2.50 / 4.59 / 11.03 -> 2.45 / 4.47 / 11.00 %.
VISIBLE_OUTLINE_SHARE = 0.7
# The set's jaw line behaves like an arc deeper than the head's surface at the same lateral
# reach (turned heads put every jaw point too far toward the side turned away: +2..12 % of
# the box on AFLW dev 30-60), which no surface point gives: the jaw points other than the
# chin (7..9) are taken this far (m) straight back in the head's frame from their surface
# point. 10 / 15 / 20 mm, with the chin 6..10, 7..9, 8 or none left in place, picked on AFLW
# dev photos index % 3 != 0 (hyper-parameters, not a statistic of the annotation); on
# index % 3 == 0, both found: fitted NME68 3.10 / 5.31 / 9.02 -> 3.11 / 4.83 / 8.08 %
# (0-30 / 30-60 / 60+; 3.12 / 4.92 / 8.15 with the chin 6..10 left in place).
HIDDEN_JAW_DEPTH = 0.015
CHIN = (7, 8, 9)


def deepen_jaw(points: np.ndarray, head_rotation: np.ndarray) -> np.ndarray:
    """(68, 3) static surface landmarks (camera frame) with the jaw points but the chin
    moved HIDDEN_JAW_DEPTH straight back; head_rotation (3, 3): the head's turn (global and
    neck joints), so the model's back (-z) is head_rotation @ (0, 0, -1)."""
    deeper = np.array(points, dtype=np.float64, copy=True)
    sides = [k for k in ibug68.JAW if k not in CHIN]
    deeper[sides] += HIDDEN_JAW_DEPTH * (np.asarray(head_rotation, np.float64) @ np.array([0.0, 0.0, -1.0]))
    return deeper


def fixed_jaw_line(surface: np.ndarray, outline: np.ndarray, yaw_degrees: float) -> np.ndarray:
    """`landmarks_2d_fixed`: (68, 2) `surface` (the static surface points projected) with
    the jaw line moved toward `outline` (the yaw table's points) where AFLW2000-3D's
    convention puts it there. The set draws only hidden jaw points where their surface
    point projects; visible ones lie on the outline, where the two conventions meet.
    The surface jaw sits deep (the ramus, the jaw's underside), so on the near side of a
    turned head it projects past the face's outline: on the AFLW dev photos (index % 3 == 1,
    with the posed template from 65 degrees and the jaw then learned from that set) the near
    jaw was 12.5 % off at 30-60 and the outline 8.0 %; fitted NME68 2.66 / 5.11 / 11.10 ->
    2.45 / 4.47 / 11.00 % (0-30 / 30-60 / 60+; on the scored third, index % 3 == 0, 3.40 /
    5.53 / 9.65 -> 3.09 / 4.92 / 9.58 with cached detections). yaw_degrees: the fit's
    (geometry.yaw_degrees): positive turns the face toward the image's right, bringing points 0..7 (the subject's
    right cheek) toward the camera."""
    fixed = np.array(surface, dtype=np.float64, copy=True)
    if abs(yaw_degrees) >= OUTLINE_BELOW_YAW:
        return fixed
    jaw = list(ibug68.JAW)
    visible = VISIBLE_OUTLINE_SHARE * np.asarray(outline, dtype=np.float64)[jaw] + (1 - VISIBLE_OUTLINE_SHARE) * fixed[jaw]
    near = list(range(0, 8)) if yaw_degrees > 0 else list(range(9, 17))
    rest = [k for k in jaw if k not in near]
    share = max(0.0, 1.0 - abs(yaw_degrees) / FAR_SURFACE_FROM_YAW)
    fixed[near] = visible[near]
    fixed[rest] = share * visible[rest] + (1 - share) * fixed[rest]
    return fixed


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
    ear_level = min(points[0, 2], points[16, 2])
    eyes = np.zeros(len(verts), bool)
    for name in ("eyes", "eyeball_left", "eyeball_right", "mouth_interior"):
        if len(model.regions.get(name, ())):
            eyes[np.asarray(model.regions[name])] = True
    skin = ~ears & ~eyes & (normals[:, 2] > -0.5)
    allowed = skin & (verts[:, 2] > ear_level - 0.01)  # in front of the ears
    deep = skin & (verts[:, 2] > ear_level - SURFACE_BEHIND)  # the surface jaw's
    # Only faces with an allowed edge can cross a slice: select them once for all 17 points.
    near_faces = np.flatnonzero(deep[faces].sum(1) >= 2)
    yaws = dynamic_yaw_degrees(2 * MAX_YAW + 1)
    rows_face = np.repeat(emb.face_idx[None, :17], len(yaws), axis=0).copy()
    rows_bary = np.repeat(emb.bary[None, :17], len(yaws), axis=0).copy()
    face_idx, bary = emb.face_idx.copy(), emb.bary.copy()
    for k in ibug68.JAW:
        ray = points[k, :2] - centre
        length = np.linalg.norm(ray)
        if length < 1e-6:
            continue
        ray /= length
        if abs(ray[1]) > VERTICAL:
            continue
        surface = slice_outward(verts, faces, near_faces, centre, ray, length, deep)
        if surface is not None:  # the frontal silhouette: the slice's point furthest out
            best = int(np.argmax((surface[2][:, :2] - centre) @ ray))
            face_idx[k], bary[k] = surface[0][best], surface[1][best]
        crossings = slice_outward(verts, faces, near_faces, centre, ray, length, allowed)
        if crossings is None:
            continue
        face_ids, slice_bary, crossing = crossings
        for row, yaw in enumerate(yaws):
            if yaw == 0:
                continue
            a = np.radians(yaw)
            rotated_x = np.cos(a) * crossing[:, 0] + np.sin(a) * crossing[:, 2]
            centre_x = np.cos(a) * points[ibug68.NOSE_TIP, 0] + np.sin(a) * points[ibug68.NOSE_TIP, 2]
            reach = (np.stack([rotated_x, crossing[:, 1]], 1) - (centre_x, centre[1])) @ ray
            static_x = np.cos(a) * points[k, 0] + np.sin(a) * points[k, 2]
            static_reach = (np.array([static_x, points[k, 1]]) - (centre_x, centre[1])) @ ray
            best = int(np.argmax(reach))
            if reach[best] <= static_reach:  # the static point is still on the outline
                continue
            rows_face[row, k] = face_ids[best]
            rows_bary[row, k] = slice_bary[best]
    return dataclasses.replace(emb, face_idx=face_idx, bary=bary, dynamic_face_idx=rows_face.astype(np.int64),
                               dynamic_bary=rows_bary.astype(np.float32), dynamic_yaw_degrees=np.asarray(yaws, np.float32))


def slice_outward(verts, faces, near_faces, centre, ray, length, allowed):
    """(face index, barycentrics, 3D point) where jaw point k's slice (the vertical plane
    through the nose tip `centre` along `ray`) crosses `allowed` surface outward of the
    static point (`length` from the centre, less INSIDE); None below two crossings."""
    face_ids, bary, crossing = plane_crossings(verts, faces[near_faces], centre, ray, allowed)
    outward = (crossing[:, :2] - centre) @ ray > length - INSIDE
    if outward.sum() < 2:
        return None
    return near_faces[face_ids[outward]], bary[outward], crossing[outward]


def plane_crossings(verts: np.ndarray, faces: np.ndarray, centre, ray, allowed: np.ndarray):
    """Where the mesh's edges cross the vertical plane through `centre` (x, y) along `ray`
    (unit x, y): (face index, barycentrics, 3D point) per crossing, on edges whose two
    vertices are both `allowed`."""
    side = (verts[:, :2] - centre) @ np.array([-ray[1], ray[0]])
    face_ids, barys, points = [], [], []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        va, vb = faces[:, a], faces[:, b]
        cross = (side[va] * side[vb] < 0) & allowed[va] & allowed[vb]
        t = side[va[cross]] / (side[va[cross]] - side[vb[cross]])
        bary = np.zeros((len(t), 3), np.float32)
        bary[:, a], bary[:, b] = 1 - t, t
        face_ids.append(np.nonzero(cross)[0])
        barys.append(bary)
        points.append(verts[va[cross]] + t[:, None] * (verts[vb[cross]] - verts[va[cross]]))
    return np.concatenate(face_ids), np.concatenate(barys), np.concatenate(points)
