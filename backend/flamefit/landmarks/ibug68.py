"""The iBUG-68 (300-W / dlib) landmark scheme: index groups and named points.

"Right" and "left" are the SUBJECT's: the subject's right eye is on the IMAGE LEFT
(smaller x), so point 36 (its outer corner) has the smallest x of the eye points in
a frontal photo, and, on a head model facing +Z with +X to the model's left,
lies at negative X.
"""

from __future__ import annotations

NUM_POINTS = 68

JAW = tuple(range(0, 17))  # 0 (image left, subject's right ear) ... 8 chin ... 16
RIGHT_BROW = tuple(range(17, 22))  # subject's right, image left
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))  # 30 = nose tip
NOSE_BASE = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))  # 36 outer corner, 39 inner corner
LEFT_EYE = tuple(range(42, 48))  # 42 inner corner, 45 outer corner
OUTER_LIPS = tuple(range(48, 60))  # 48 and 54 = mouth corners
INNER_LIPS = tuple(range(60, 68))
INNER_FACE = tuple(range(17, 68))  # everything but the jaw-line contour

OUTER_EYE_CORNERS = (36, 45)
INNER_EYE_CORNERS = (39, 42)
NOSE_TIP = 30
MOUTH_CORNERS = (48, 54)
CHIN = 8

# MIRROR[i]: the point that i becomes when the face is mirrored left <-> right.
_PAIRS = ([(i, 16 - i) for i in range(8)]
          + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34)]
          + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
          + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
MIRROR = list(range(NUM_POINTS))
for _a, _b in _PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a
MIRROR = tuple(MIRROR)

# MediaPipe face mesh (468/478 points) id for each inner-face iBUG point 17..67, the map
# used by LatentSync and others. Checked here against dlib on skimage's astronaut: mean
# 1.7 px apart at 60 px inter-ocular distance (eye corners <= 1.6 px, brow outer ends
# ~5 px). MediaPipe has no jaw-line contour in iBUG's sense (the face-oval ids sit up to
# 12 px off), so the jaw 0..16 has no entry.
MEDIAPIPE_FOR_INNER_FACE = (
    71, 63, 105, 66, 107,  # 17-21 right brow
    336, 296, 334, 293, 301,  # 22-26 left brow
    168, 197, 5, 4,  # 27-30 nose bridge
    75, 97, 2, 326, 305,  # 31-35 nose base
    33, 160, 158, 133, 153, 144,  # 36-41 right eye
    362, 385, 387, 263, 373, 380,  # 42-47 left eye
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # 48-59 outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # 60-67 inner lips
)
assert len(MEDIAPIPE_FOR_INNER_FACE) == len(INNER_FACE)
# The brow ids above follow the brow's upper edge; iBUG's brow points lie nearer its middle:
# use the mean of each with the lower-edge id below it (brow error 7.5 -> 5.7 % of the
# eye-corner distance on AFW photos 25-60).
MEDIAPIPE_LOWER_BROW = (46, 53, 52, 65, 55, 285, 295, 282, 283, 276)  # for iBUG 17..26

# Points also in FLAME's 105-point MediaPipe embedding, used to check an automatic iBUG
# embedding: eye corners, nose tip (MediaPipe 1 is not embedded; 4 is just above it),
# mouth corners.
MEDIAPIPE_CHECK_PAIRS = {36: 33, 39: 133, 42: 362, 45: 263, 30: 4, 48: 61, 54: 291}
