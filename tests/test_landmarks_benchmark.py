"""benchmarks/landmarks.py's AFLW2000-3D scoring: NME over sqrt(w * h) of the annotated box,
and the per-part split (the jaw half on the cheek turned toward the camera, and the far one)
that says where a system's error is."""


import landmarks as bench  # benchmarks/landmarks.py (conftest puts benchmarks/ on the path)
import numpy as np

from flamefit.landmarks.profile import TEMPLATE_MM


def turned_points(yaw_degrees: float) -> np.ndarray:
    """The open head's 68 template points turned by `yaw` and projected orthographically
    (image y down): positive turns the nose toward the image's right."""
    a = np.radians(yaw_degrees)
    x = np.cos(a) * TEMPLATE_MM[:, 0] + np.sin(a) * TEMPLATE_MM[:, 2]
    return np.stack([x + 300.0, 300.0 - TEMPLATE_MM[:, 1]], 1)


def test_near_jaw_half_is_the_cheek_turned_toward_the_camera():
    near, far = bench.near_far_jaw(turned_points(40.0))  # nose to the right: the left cheek faces us
    assert near == list(range(0, 8)) and far == list(range(9, 17))
    near, far = bench.near_far_jaw(turned_points(-40.0))
    assert near == list(range(9, 17)) and far == list(range(0, 8))


def test_aflw_nme_splits_the_jaw_error_by_side():
    gt = turned_points(40.0)
    moved = gt.copy()
    moved[9:17] += (6.0, 0.0)  # only the far jaw half is off
    nme68, inner, offset, (near, far) = bench.aflw_nme(moved, gt)
    size = np.sqrt(np.prod(gt.max(0) - gt.min(0)))
    assert np.isclose(far, 6.0 / size) and near == 0.0 and inner == 0.0 and offset == [0.0, 0.0]
    assert np.isclose(nme68, 8 * 6.0 / 68 / size)
    assert bench.aflw_nme(None, gt) == (None, None, None, None)
