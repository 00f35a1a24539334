"""Several photos must show one person: each photo's face descriptor (dlib's face
recognition network, 128-D, from the 68 landmarks the fit uses) is compared with the
other photos'; a photo farther than `options.same_person_distance` from every other
photo is refused with one line naming it.

The descriptor is trained for frontal-ish faces, so only pairs of views seen within
`options.same_person_max_yaw` of frontal (from the rigid fit) are compared, and a view
without such a partner is not judged (a front photo and two profiles: the profiles are
kept). The threshold and the yaw limit are measured in benchmarks/same_person.py.
Not a stage of its own in the reports: it runs after the rigid fit, before the shape
fit, and only for several photos.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FlameFitError
from .context import FitContext, Stage
from .geometry import yaw_degrees

CHIP_SIZE = 150  # dlib's aligned face chip


def _recogniser():
    from ..landmarks.dlib_detector import _dlib, _model_file

    global _NET
    if _NET is None:
        _NET = _dlib().face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))
    return _NET


_NET = None


def face_descriptor(rgb: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """(128,) descriptor of the face at the 68 `points` (original pixels) of an RGB photo;
    None when too few points are known."""
    from ..landmarks.dlib_detector import _dlib

    dlib = _dlib()
    finite = np.isfinite(points).all(1)
    if finite.sum() < 60:
        return None
    pts = np.where(finite[:, None], points, np.nanmean(points, axis=0))
    lo, hi = pts.min(0), pts.max(0)
    box = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
    chip = dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=CHIP_SIZE, padding=0.25)
    return np.asarray(_recogniser().compute_face_descriptor(chip), dtype=np.float64)


def check_same_person(ctx: FitContext) -> dict:
    """FlameFitError naming the first photo that matches none of the others; else the
    distances found ({"pairs": [[i, j, distance]], "judged": [...]}, for the record)."""
    options, views = ctx.options, ctx.views
    with torch.no_grad():
        yaws = [float(yaw_degrees(v.pose)[0]) for v in ctx.state.views]
    usable = [k for k, y in enumerate(yaws) if abs(y) <= options.same_person_max_yaw]
    if len(usable) < 2:  # nothing to compare (e.g. a front photo and two profiles)
        return {"pairs": [], "yaw_degrees": [round(y, 1) for y in yaws]}
    descriptors = {k: face_descriptor(views[k].photo.rgb, views[k].points) for k in usable}
    usable = [k for k in usable if descriptors[k] is not None]
    pairs = [(i, j, float(np.linalg.norm(descriptors[i] - descriptors[j])))
             for a, i in enumerate(usable) for j in usable[a + 1:]]
    for k in usable:
        own = [d for i, j, d in pairs if k in (i, j)]
        if own and min(own) > options.same_person_distance and len(usable) >= 2:
            # With two judged views either could be the stranger: name the later one.
            if len(usable) == 2 and k == usable[0]:
                continue
            raise FlameFitError(f"{views[k].name}: does not show the person in the other photos (face descriptor "
                                f"distance {min(own):.2f} > {options.same_person_distance}); fit it on its own")
    return {"pairs": [[i, j, round(d, 3)] for i, j, d in pairs], "yaw_degrees": [round(y, 1) for y in yaws]}


class SamePersonCheck(Stage):
    name = "same_person"
    reported = False

    def run(self, ctx: FitContext) -> None:
        if len(ctx.views) > 1 and ctx.options.same_person_distance > 0:
            ctx.same_person = check_same_person(ctx)
