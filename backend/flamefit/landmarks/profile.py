"""68 points for a strongly turned face from RetinaFace's five points and the head model.

At 60-90 degrees of yaw the mesh's own face finder sees no face in the upright crop
(53 of the 150 AFLW2000-3D dev photos 60+), and where it does, the mesh and dlib disagree
(18 more): both are frontal-trained. RetinaFace still boxes these faces (scores 0.69 to
1.00) with its five points. Here the open head's neutral 68 points are posed so they
project onto those five (perspective PnP from several yaw guesses, the best kept) and
all 68 are projected: the jaw line as the surface points project (AFLW2000-3D's
convention), hidden ones included. On the 79 AFLW dev photos 30+ that the mesh path
loses this is 11.5 % NME (inner 51: 7.1 %); the mesh path's own points on the faces it
keeps at 60+ are 12.7 %. The points are weak evidence (one mean shape, five cues), so
they get low weights and the fit's photometric stage can move away from them.

RetinaFace also boxes sheets of digits (0.97), chessboards (0.91) and plants (0.79),
which the mesh's finder used to refuse: a face is taken only when dlib's CNN face
detector (MMOD, trained on faces up to profile) finds one in the same upright crop.
On the AFLW dev photos 30+ it finds 76 of the 79; on those non-faces and on the
squirrel, cat and colour-wheel photos, none.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import ibug68

# The open head's (MakeHuman, CC0) neutral iBUG-68 points in mm (x to the model's left,
# y up, z toward the face), from its ibug68 embedding, made left/right symmetric (the
# two sides differed by at most 0.1 mm).
TEMPLATE_MM = np.array([
    (-61.8, 25.5, 20.7), (-61.2, 7.9, 25.5), (-59.1, -9.0, 29.6), (-54.7, -26.3, 28.8), (-49.7, -43.4, 28.1),
    (-40.9, -59.0, 33.9), (-30.0, -72.1, 40.5), (-15.8, -82.0, 47.1), (0.0, -83.8, 52.1), (15.8, -82.0, 47.1),
    (30.0, -72.1, 40.5), (40.9, -59.0, 33.9), (49.7, -43.4, 28.1), (54.7, -26.3, 28.8), (59.1, -9.0, 29.6),
    (61.2, 7.9, 25.5), (61.8, 25.5, 20.7), (-52.4, 33.8, 42.8), (-43.5, 37.8, 54.3), (-33.2, 38.3, 60.7),
    (-22.3, 36.7, 63.1), (-11.1, 33.0, 63.4), (11.1, 33.0, 63.4), (22.3, 36.7, 63.1), (33.2, 38.3, 60.7),
    (43.5, 37.8, 54.3), (52.4, 33.8, 42.8), (0.0, 21.6, 62.5), (0.0, 9.7, 66.4), (0.0, -1.6, 73.7),
    (0.0, -12.0, 79.8), (-12.0, -20.0, 64.9), (-6.6, -22.3, 67.7), (0.0, -23.6, 71.0), (6.6, -22.3, 67.7),
    (12.0, -20.0, 64.9), (-41.1, 21.3, 47.8), (-34.2, 25.0, 53.8), (-25.2, 24.4, 54.3), (-17.5, 19.0, 52.0),
    (-25.4, 16.9, 54.4), (-34.0, 17.1, 53.9), (17.5, 19.0, 52.0), (25.2, 24.4, 54.3), (34.2, 25.0, 53.8),
    (41.1, 21.3, 47.8), (34.0, 17.1, 53.9), (25.4, 16.9, 54.4), (-21.5, -44.5, 59.3), (-13.3, -39.2, 68.3),
    (-5.9, -36.3, 72.2), (0.0, -37.8, 73.1), (5.9, -36.3, 72.2), (13.3, -39.2, 68.3), (21.5, -44.5, 59.3),
    (13.8, -52.6, 64.6), (6.5, -55.5, 67.0), (0.0, -56.1, 67.9), (-6.5, -55.5, 67.0), (-13.8, -52.6, 64.6),
    (-18.4, -44.5, 60.0), (-5.6, -43.5, 66.6), (0.0, -43.9, 66.5), (5.6, -43.5, 66.6), (18.4, -44.5, 60.0),
    (5.9, -45.0, 65.6), (0.0, -45.1, 65.9), (-5.9, -45.0, 65.6),
])
# RetinaFace's five (eye centres image-left then image-right, nose tip, mouth corners) on it.
TEMPLATE_FIVE = np.array([TEMPLATE_MM[list(ibug68.RIGHT_EYE)].mean(0), TEMPLATE_MM[list(ibug68.LEFT_EYE)].mean(0),
                          TEMPLATE_MM[ibug68.NOSE_TIP], TEMPLATE_MM[ibug68.MOUTH_CORNERS[0]],
                          TEMPLATE_MM[ibug68.MOUTH_CORNERS[1]]])
HEAD_MM = 200.0  # about what a RetinaFace box spans on the head, for the starting distance
# PnP from each of these yaws (degrees); from a frontal start alone it often lands on the
# mirror-image pose, which fits five points about as well.
YAW_STARTS = (-80, -50, -20, 0, 20, 50, 80)
# Mean distance of the posed five from RetinaFace's, x box size: AFLW dev 30+ at most
# 0.06, the squirrel 0.05 (refused by the CNN check): a loose sanity bound only.
MAX_FIVE_RESIDUAL = 0.1
# Reliability of these points next to the mesh path's 1 (inner) and 0.3-0.5 (jaw):
# chosen, not tuned: five cues and one mean shape. The fit uses them (priors.landmark_weights:
# inner 0.3, jaw line 0.5 x 0.3), so its priors hold more against these points: on the
# AFLW2000-3D dev photos (--every 3) the 25 posed-template faces at 60+ were fitted 14 degrees
# short of the true |yaw| at full weight (the template itself is 2 degrees over), 5 degrees short now.
WEIGHTS = (0.3, 0.15)  # inner face, jaw line
# Faces the mesh path finds are taken from the posed template instead when the five
# points say they are turned this far (degrees): on AFLW2000-3D dev photos (index % 3 == 1,
# 60+, 46 faces) the mesh path's were fitted 17 degrees short of the true |yaw| on average
# (MediaPipe and dlib flatten a profile) and the five points' PnP yaw is within a few
# degrees of it. Fitted NME68 (fixed) 60+: 11.93 -> 11.10 %; from 55 degrees it also took
# faces at 30-60 and made them worse (5.11 -> 5.29 %).
TEMPLATE_FROM_YAW = 65.0
CV_FROM_MODEL = np.diag([1.0, -1.0, -1.0])  # model y up, z to the camera -> OpenCV y down, z away


def human_face_in(crop: np.ndarray) -> bool:
    """Whether dlib's CNN face detector finds a face around the middle of an upright crop
    (about 0.7 s for the 256 px crop on one core; it runs only when the mesh path fails)."""
    from . import dlib_detector

    side = crop.shape[0]
    for found in dlib_detector._cnn_detector()(np.ascontiguousarray(crop), 0):
        r = found.rect
        centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        if np.all(np.abs(centre - side / 2) < side / 4):
            return True
    return False


def posed_points(five: np.ndarray, box, image_shape) -> tuple[np.ndarray, float, float]:
    """(68,2) template points posed onto RetinaFace's `five` (image pixels), the mean
    distance of the posed five from them (x box size), and the pose's yaw in degrees
    (the fit's sign: positive turns the face toward the image's right; NaN when no pose)."""
    focal = 2.0 * max(image_shape[:2])  # a ~50 degree lens; the pose barely depends on it
    K = np.array([[focal, 0, image_shape[1] / 2], [0, focal, image_shape[0] / 2], [0, 0, 1.0]])
    size = float(max(box[2] - box[0], box[3] - box[1]))
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    z = focal * HEAD_MM / size
    start_t = np.array([(centre[0] - K[0, 2]) * z / focal, (centre[1] - K[1, 2]) * z / focal, z]).reshape(3, 1)
    best = None
    for yaw in YAW_STARTS:
        start_r = cv2.Rodrigues(CV_FROM_MODEL @ cv2.Rodrigues(np.array([0.0, np.radians(yaw), 0.0]))[0])[0]
        ok, rvec, tvec = cv2.solvePnP(TEMPLATE_FIVE, five - 0.5, K, None, start_r, start_t.copy(),
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        facing = (CV_FROM_MODEL @ cv2.Rodrigues(rvec)[0])[2, 2] > -0.3  # not the back of the head
        if not ok or tvec[2, 0] <= 0 or not facing:
            continue
        five_at = cv2.projectPoints(TEMPLATE_FIVE, rvec, tvec, K, None)[0].reshape(-1, 2) + 0.5
        residual = float(np.linalg.norm(five_at - five, axis=1).mean()) / size
        if best is None or residual < best[0]:
            best = (residual, rvec, tvec)
    if best is None:
        return np.full((ibug68.NUM_POINTS, 2), np.nan), np.inf, float("nan")
    residual, rvec, tvec = best
    # The model's forward axis (z) in the model-frame camera: its x over its z is the turn.
    forward = (CV_FROM_MODEL @ cv2.Rodrigues(rvec)[0])[:, 2]
    yaw = float(np.degrees(np.arctan2(forward[0], forward[2])))
    # OpenCV puts pixel centres at integers, FlameFit at +0.5.
    return cv2.projectPoints(TEMPLATE_MM, rvec, tvec, K, None)[0].reshape(-1, 2) + 0.5, residual, yaw


def weights() -> np.ndarray:
    w = np.full(ibug68.NUM_POINTS, WEIGHTS[0])
    w[list(ibug68.JAW)] = WEIGHTS[1]
    return w
