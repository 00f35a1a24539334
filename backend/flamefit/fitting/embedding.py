"""An iBUG-68 landmark embedding for a head model that has none, found automatically.

The neutral template is rendered from a few head poses (embedding_views.py), the 2D
detector runs on each render, and every detected point is mapped back to the surface
point seen at that pixel. Per landmark, the views agree on the mean of those template
points that lie near their medoid, which is then snapped onto the skin surface
(triangle + barycentrics).

- Inner-face points (17..67) use every view where the point is seen well: not at a
  grazing angle and not next to a depth jump (occlusion or silhouette edge).
- Jaw-line points (0..16) are a contour, not a fixed surface point: they come from the
  frontal view only, taken on the nearest front surface (the detector puts them on the
  occluding edge, where a ray may just miss the cheek).

The inner face comes from the default detector (the one that gives the fit its targets,
so targets and embedding share its conventions) and the jaw line from dlib's own HOG box:
fitting every 3rd AFW face's hand annotations with the open head leaves 2.02 % NME with
the default detector's inner points vs 2.10 % with dlib's (brows 2.6 vs 3.1 %), but the
default detector's jaw line lands worse on renders.

`ibug68_embedding(model, cache_dir)` caches the result beside the model, keyed by a
hash of v_template and faces, so it is computed once per model; `prepare_model` (in
prepare.py) puts it into the prepared model. It lives in the fitting layer, not in
models/, because it runs the landmark detector and the renderer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from ..fsutil import atomic_save_npz, file_lock
from ..landmarks import default_detector, detect_landmarks, ibug68
from ..models.head_model import HeadModel, LandmarkEmbedding
from .embedding_views import View, mesh_components, render_views

EMBEDDING_VERSION = 4  # bump when the method or its detector changes: old cache entries are ignored
VIEW_POSES = ((0, 0), (-20, 0), (-10, 0), (10, 0), (20, 0), (0, -10), (0, 10))  # (yaw, pitch) degrees
FRONTAL = (0, 0)
MIN_FACING = 0.3  # cosine: below this the surface is seen edge-on and the hit is unreliable
MAX_DEPTH_JUMP = 0.01  # metres within a few pixels: an occlusion or silhouette edge
EDGE_WINDOW = 2  # pixels either side checked for depth jumps
JAW_DETECTOR = "dlib"
JAW_SEARCH = 8  # pixels around a jaw point searched for the front surface
INLIER_RADIUS = 0.008  # metres: views agreeing with the medoid within this are averaged


# --- mapping one detected point to the surface ---------------------------------------


def _window(view: View, x: float, y: float, radius: int):
    """Rows/columns of the pixels within `radius` of the pixel holding (x, y)."""
    H, W = view.depth.shape
    i, j = int(np.floor(y)), int(np.floor(x))
    return slice(max(i - radius, 0), min(i + radius + 1, H)), slice(max(j - radius, 0), min(j + radius + 1, W))


def surface_point(view: View, x: float, y: float) -> np.ndarray | None:
    """Template point seen at (x, y): bilinear between the 4 nearest pixel centres when
    they all lie on the skin, else the pixel holding (x, y). None if that is background."""
    H, W = view.depth.shape
    j0, i0 = int(np.floor(x - 0.5)), int(np.floor(y - 0.5))
    if 0 <= i0 and i0 + 1 < H and 0 <= j0 and j0 + 1 < W:
        quad = view.surface[i0:i0 + 2, j0:j0 + 2]
        if np.isfinite(quad).all() and (view.component[i0:i0 + 2, j0:j0 + 2] == 0).all():
            fx, fy = x - 0.5 - j0, y - 0.5 - i0
            top = quad[0, 0] * (1 - fx) + quad[0, 1] * fx
            bottom = quad[1, 0] * (1 - fx) + quad[1, 1] * fx
            return top * (1 - fy) + bottom * fy
    i, j = int(np.floor(y)), int(np.floor(x))
    if 0 <= i < H and 0 <= j < W and np.isfinite(view.surface[i, j]).all():
        return view.surface[i, j]
    return None


def seen_well(view: View, x: float, y: float) -> bool:
    """On the surface, not edge-on, and no depth jump nearby (background pixels, such
    as a gap between parted lips, do not count: the facing test catches silhouettes)."""
    H, W = view.depth.shape
    i, j = int(np.floor(y)), int(np.floor(x))
    if not (0 <= i < H and 0 <= j < W and np.isfinite(view.depth[i, j])):
        return False
    rows, cols = _window(view, x, y, EDGE_WINDOW)
    depth = view.depth[rows, cols]
    depth = depth[np.isfinite(depth)]
    return depth.max() - depth.min() < MAX_DEPTH_JUMP and view.facing[i, j] >= MIN_FACING


def nearest_front_point(view: View, x: float, y: float) -> np.ndarray | None:
    """The front-most surface near (x, y), at the pixel closest to it: for jaw-line points
    (the detector puts them on an occluding edge) and points that miss the surface."""
    rows, cols = _window(view, x, y, JAW_SEARCH)
    depth = view.depth[rows, cols]
    if not np.isfinite(depth).any():
        return None
    front = depth <= depth.min() + MAX_DEPTH_JUMP
    ii, jj = np.nonzero(front)
    d2 = (jj + cols.start + 0.5 - x) ** 2 + (ii + rows.start + 0.5 - y) ** 2
    k = int(np.argmin(d2))
    i, j = ii[k] + rows.start, jj[k] + cols.start
    if (i, j) == (int(np.floor(y)), int(np.floor(x))):  # on the front surface already: sub-pixel position
        return surface_point(view, x, y)
    # (x, y) is in a gap (e.g. between the lips): the surface seen there lies behind.
    return view.surface[i, j]


# --- snapping to the skin --------------------------------------------------------------


def closest_points_on_triangles(points: np.ndarray, triangles: np.ndarray):
    """For each point (P,3), the closest triangle (T,3,3) index and barycentrics."""
    a, b, c = (triangles[None, :, k] for k in range(3))
    p = points[:, None]
    ab, ac, ap = b - a, c - a, p - a
    # Project onto the triangle's plane, then clamp to it (Ericson, Real-Time Collision
    # Detection 5.1.5, in a vectorised form: solve, then fix the regions outside).
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    bary = np.stack([1 - v - w, v, w], -1)
    inside = (bary >= 0).all(-1)
    best = np.where(inside, np.linalg.norm(p - (bary[..., :1] * a + bary[..., 1:2] * b + bary[..., 2:] * c), axis=-1), np.inf)
    # Outside: the closest point is on one of the three edges.
    corners = (a, b, c)
    for k in range(3):
        s, e = corners[k], corners[(k + 1) % 3]
        t = np.clip(((p - s) * (e - s)).sum(-1) / np.maximum(((e - s) ** 2).sum(-1), 1e-30), 0, 1)
        dist = np.linalg.norm(p - (s + t[..., None] * (e - s)), axis=-1)
        edge_bary = np.zeros_like(bary)
        edge_bary[..., k] = 1 - t
        edge_bary[..., (k + 1) % 3] = t
        better = ~inside & (dist < best)
        best = np.where(better, dist, best)
        bary = np.where(better[..., None], edge_bary, bary)
    nearest = np.argmin(best, axis=1)
    rows = np.arange(len(points))
    return nearest, bary[rows, nearest], best[rows, nearest]


def snap_to_surface(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, face_ids: np.ndarray):
    """(P,3) points -> face index into `faces` (among face_ids) and barycentrics."""
    local, bary, dist = closest_points_on_triangles(points, verts[faces[face_ids]])
    return face_ids[local], bary.astype(np.float32), dist


# --- the embedding -------------------------------------------------------------------


def _views_report(views, detections) -> list[dict]:
    report = []
    for view, found in zip(views, detections):
        entry = {"yaw": view.yaw, "pitch": view.pitch, "detected": not isinstance(found, str)}
        if isinstance(found, str):
            entry["error"] = found
        else:
            entry.update(detector=found.detector, score=round(found.score, 3),
                         inter_ocular_px=round(found.inter_ocular, 1))
        report.append(entry)
    return report


def _candidates(views, detections):
    """Template points per landmark from the views where it is reliable, and per view
    which of its 68 points were used. A landmark seen well in no view (e.g. inner lips
    on the gap of parted lips) falls back to the front surface nearest to it."""
    jaw = set(ibug68.JAW)
    per_point: list[list[np.ndarray]] = [[] for _ in range(ibug68.NUM_POINTS)]
    fallback: list[list[np.ndarray]] = [[] for _ in range(ibug68.NUM_POINTS)]
    used = np.zeros((len(views), ibug68.NUM_POINTS), bool)
    fallback_used = np.zeros_like(used)
    frontal = next((k for k, v in enumerate(views) if (v.yaw, v.pitch) == FRONTAL and not isinstance(detections[k], str)), None)
    for k, (view, found) in enumerate(zip(views, detections)):
        if isinstance(found, str):
            continue
        for n, (x, y) in enumerate(found.points):
            if not np.isfinite([x, y]).all():  # MediaPipe has no jaw line
                continue
            if n in jaw:
                if k == frontal and (point := nearest_front_point(view, x, y)) is not None:
                    per_point[n].append(point)
                    used[k, n] = True
            elif seen_well(view, x, y) and (point := surface_point(view, x, y)) is not None:
                per_point[n].append(point)
                used[k, n] = True
            elif (point := nearest_front_point(view, x, y)) is not None:
                fallback[n].append(point)
                fallback_used[k, n] = True
    unreliable = [n for n in range(ibug68.NUM_POINTS) if not per_point[n] and fallback[n]]
    for n in unreliable:
        per_point[n] = fallback[n]
        used[:, n] = fallback_used[:, n]
    return per_point, used, unreliable


def robust_mean(points: np.ndarray):
    """Mean of the points within INLIER_RADIUS of their medoid (so a view that hit the
    wrong surface cannot drag it), the largest inlier distance to it, the outlier count."""
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    medoid = points[np.argmin(distances.sum(1))]
    inliers = points[np.linalg.norm(points - medoid, axis=1) <= INLIER_RADIUS]
    mean = inliers.mean(0)
    return mean, float(np.linalg.norm(inliers - mean, axis=1).max()), len(points) - len(inliers)


def mediapipe_check(model: HeadModel, embedding: LandmarkEmbedding) -> dict:
    """Distance (mm) between our points and FLAME's MediaPipe embedding's matching points."""
    mediapipe = model.landmarks.get("mediapipe")
    if mediapipe is None or mediapipe.point_ids is None:
        return {}
    ours = embedding.points(model.v_template, model.faces)
    theirs = mediapipe.points(model.v_template, model.faces)
    where = {int(pid): k for k, pid in enumerate(mediapipe.point_ids)}
    return {f"ibug{i}-mediapipe{m}": round(1000 * float(np.linalg.norm(ours[i] - theirs[where[m]])), 2)
            for i, m in ibug68.MEDIAPIPE_CHECK_PAIRS.items() if m in where}


def mirrored_partners(points: np.ndarray) -> np.ndarray:
    """(68,3): each point's left/right partner mirrored across the points' own middle
    plane (x = const); equal to the points themselves for a symmetric face."""
    middle = (points[:, 0] + points[list(ibug68.MIRROR), 0]).mean() / 2
    return points[list(ibug68.MIRROR)] * np.array([-1, 1, 1]) + np.array([2 * middle, 0, 0])


def symmetry_error_mm(points: np.ndarray) -> list[float]:
    """Per point, how far its mirrored partner lands from it: ~0 for a symmetric face."""
    return [round(1000 * float(d), 2) for d in np.linalg.norm(mirrored_partners(points) - points, axis=1)]


def symmetrised(points: np.ndarray) -> np.ndarray:
    """Each point averaged with its mirrored partner: a face's landmarks are symmetric
    even where the detector's are not (dlib's jaw line on the open head's frontal render
    put points 0 and 16 4.8 mm out of mirror position)."""
    return (points + mirrored_partners(points)) / 2


def detector_names(detector: str | None = None) -> tuple[str, str]:
    """(inner-face detector, jaw-line detector) for an embedding; see the module doc."""
    return detector or default_detector(), JAW_DETECTOR


def _detect(view: View, name: str):
    try:
        return detect_landmarks(view.image, detector=name, image_name=f"render yaw {view.yaw} pitch {view.pitch}")
    except FlameFitError as exc:
        return str(exc)


def _with_jaw(inner, jaw):
    """The inner detection with its jaw line 0..16 taken from `jaw` (NaN where it has none)."""
    if isinstance(inner, str):
        return inner
    points = inner.points.copy()
    points[list(ibug68.JAW)] = np.nan if isinstance(jaw, str) else jaw.points[list(ibug68.JAW)]
    return dataclasses.replace(inner, points=points, detector=f"{inner.detector} + jaw {getattr(jaw, 'detector', '-')}")


def compute_ibug68_embedding(model: HeadModel, detector: str | None = None, overlay_path=None):
    """(LandmarkEmbedding, report) for the model's neutral template; see the module doc.

    detector: the inner face's detector (default: the default detector).
    overlay_path: if given, a PNG of the renders with the detected points (green: used,
    red: discarded) and, last, the frontal render with the final embedding (yellow).
    """
    inner_name, jaw_name = detector_names(detector)
    verts = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces, np.int64)
    views = render_views(verts, faces, VIEW_POSES)
    detections = []
    for view in views:
        inner = _detect(view, inner_name)
        if jaw_name != inner_name:  # the jaw line comes from the frontal view only (_candidates)
            frontal = (view.yaw, view.pitch) == FRONTAL
            inner = _with_jaw(inner, _detect(view, jaw_name) if frontal else "jaw line: frontal view only")
        detections.append(inner)
    detector = inner_name if jaw_name == inner_name else f"{inner_name} (jaw line: {jaw_name})"
    per_point, used, unreliable = _candidates(views, detections)
    missing = [n for n, pts in enumerate(per_point) if not pts]
    if missing:
        raise FlameFitError(
            f"could not place {len(missing)} of the 68 iBUG landmarks (e.g. {missing[:3]}) on {model.name}: the "
            f"{detector} detector found the "
            f"face in {sum(not isinstance(d, str) for d in detections)} of {len(views)} renders of the template; "
            "give an embedding file (landmark_embedding setting) instead")

    consensus, spread, outliers = zip(*(robust_mean(np.stack(pts)) for pts in per_point))
    consensus = symmetrised(np.stack(consensus))
    spread = [1000 * s for s in spread]
    skin_faces = np.flatnonzero(mesh_components(len(verts), faces)[faces[:, 0]] == 0)
    face_idx, bary, snap = snap_to_surface(consensus, verts, faces, skin_faces)
    embedding = LandmarkEmbedding(face_idx=face_idx.astype(np.int64), bary=bary,
                                  point_ids=np.arange(ibug68.NUM_POINTS, dtype=np.int64),
                                  source=f"computed by FlameFit from {detector} detections on renders of the template")
    points = embedding.points(verts, faces)
    right, left = ibug68.OUTER_EYE_CORNERS
    report = {
        "model": model.name,
        "detector": detector,
        "views": _views_report(views, detections),
        "views_per_point": [len(pts) for pts in per_point],
        "points_without_a_clear_view": unreliable,
        "outlier_views_per_point": list(outliers),
        "spread_mm": {"median": round(float(np.median(spread)), 2), "max": round(float(np.max(spread)), 2),
                      "per_point": [round(s, 2) for s in spread]},
        "snap_mm_max": round(1000 * float(snap.max()), 2),
        # iBUG 36 is the subject's right eye: the model's -X side.
        "left_right_ok": bool(points[right, 0] < 0 < points[left, 0]),
        "symmetry_mm": symmetry_error_mm(points),
        "mediapipe_check_mm": mediapipe_check(model, embedding),
    }
    if overlay_path is not None:
        from .embedding_overlay import save_overlay
        save_overlay(overlay_path, views, detections, used, points)
    return embedding, report


# --- cache ---------------------------------------------------------------------------


def embedding_cache_key(model: HeadModel, detector: str | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(model.v_template, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(model.faces, dtype=np.int64).tobytes())
    digest.update(f"ibug68 v{EMBEDDING_VERSION} {'+'.join(detector_names(detector))}".encode())
    return digest.hexdigest()[:24]


def embedding_cache_path(model: HeadModel, cache_dir, detector: str | None = None) -> Path:
    return Path(cache_dir) / f"ibug68_embedding_{embedding_cache_key(model, detector)}.npz"


def _read_cache(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            embedding = LandmarkEmbedding(face_idx=data["face_idx"], bary=data["bary"], point_ids=data["point_ids"],
                                          source=str(data["source"]))
            report = json.loads(str(data["report"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # unreadable: compute again
    return embedding, report


def _usable_cache(path: Path, model: HeadModel):
    cached = _read_cache(path) if path.exists() else None
    return cached if cached is not None and cached[0].face_idx.max(initial=-1) < len(model.faces) else None


def ibug68_embedding(model: HeadModel, cache_dir, detector: str | None = None):
    """The model's iBUG-68 embedding: its own if it has one, else the cached automatic
    one, else computed now (several seconds) and cached, with a PNG of the renders and
    points beside it (report["overlay"]) to check it by eye. The model is not changed.
    Returns (embedding, report); report["cached"] says whether it came from the cache
    ({"cached": None} when the model had its own)."""
    if "ibug68" in model.landmarks:
        return model.landmarks["ibug68"], {"cached": None}
    path = embedding_cache_path(model, cache_dir, detector)
    cached = _usable_cache(path, model)
    if cached is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(f".{path.name}.lock")):  # parallel first runs compute it once
            cached = _usable_cache(path, model)
            if cached is None:
                overlay = path.with_suffix(".png")
                embedding, report = compute_ibug68_embedding(model, detector, overlay_path=overlay)
                report["overlay"] = str(overlay)
                atomic_save_npz(path, face_idx=embedding.face_idx, bary=embedding.bary, point_ids=embedding.point_ids,
                                source=np.array(embedding.source), report=np.array(json.dumps(report)))
                report["cached"] = False
    if cached is not None:
        embedding, report = cached
        report["cached"] = True
    return embedding, report
