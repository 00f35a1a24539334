"""68-point (iBUG) face landmarks from one photo.

Coordinates: pixels, x right, y down, origin at the image's top-left corner, pixel
(i, j) centred at (j + 0.5, i + 0.5): the renderer's screen frame.

Several faces: they are numbered left to right by the centre of their box
(face_index 0 = leftmost); without face_index the one a person would mean is fitted:
the highest `total` of simple cues (size, sharpness, centrality, detector score, and
how much of it the border cuts off; see `rank_faces`).

Small faces: a face whose box is under LANDMARK_FACE_PX is landmarked on an enlarged copy
of the region around it, and the points mapped back; only faces under MIN_FACE_PX are
refused (too few pixels for any detector).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import FlameFitError
from . import ibug68
from .faces import Face, face_size
from .registry import DETECTORS, default_detector

# Face size = the longer side of the detector's box (at profile the eye corners are close
# together however big the face is). Frontal faces: about 0.45 x it between the outer eye
# corners.
# Smaller faces are refused: detectors rarely find them, and their points are poor. On 25
# AFW faces reduced to a box of 16 / 20 / 24 / 30 px RetinaFace found 1 / 8 / 20 / 22, their
# points 8.1 / 4.5 / 4.5 / 3.9 % of the eye distance off (full size: 3.0 %). Landmarks from
# a file: the same rule on their extent (a little under a detector box's size).
MIN_FACE_PX = 20.0
# Smaller faces are enlarged to this before landmarking (~28 px between the eyes). Not more:
# the default detector resamples its own crop, so enlarging a face it already reads changes
# its points only by interpolation (AFW detector NME 3.62 % at 64 and at 160), and on the
# astronaut's 120 px face enlarging to 160 cost 0.4 dB of PSNR (28.8 -> 28.4 dB).
LANDMARK_FACE_PX = 64.0
REGION_SCALE = 3.0  # the enlarged region: this x the face size, around it (any roll fits)
# Detectors search a reduced copy of a large photo (RetinaFace: 1280 px), so there a crop
# around a small face helps; in a small photo only more pixels on the face do.
NO_FACE_HINT = (f"try a more frontal photo, or one with more pixels on the face (at least {MIN_FACE_PX:.0f} px "
                "tall; in a large photo, crop closer to it), or give the points with --landmarks FILE")


@dataclass
class Detection:
    points: np.ndarray  # (68,2) float64; NaN rows where the detector has no such point
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (continuous pixel coordinates)
    score: float  # the detector's own confidence (scales differ between detectors)
    num_faces: int  # faces found in the image (at or above the detector's min_score)
    face_index: int  # this face's place in the left-to-right order
    detector: str  # which stage found it: "retinaface+mediapipe", "dlib-hog", "dlib-cnn", ...
    dense_points: np.ndarray | None = None  # MediaPipe's (478,2) face mesh, when used
    weights: np.ndarray | None = None  # (68,) reliability 0..1 per point (0 where NaN)
    sources: dict = field(default_factory=dict)  # extra landmark sets: name -> {"points", "weights"}
    enlarged: float = 1.0  # the face was landmarked on a copy enlarged this much (small faces)
    choice: dict = field(default_factory=dict)  # why this face: {"reason", "candidates": [cues per face]}

    def __post_init__(self):
        if self.weights is None:
            self.weights = np.ones(len(self.points))
        self.weights = np.where(self.valid, np.asarray(self.weights, dtype=np.float64), 0.0)

    @property
    def valid(self) -> np.ndarray:
        """(68,) bool: the points this detector provides (MediaPipe alone: no jaw line)."""
        return np.isfinite(self.points).all(axis=1)

    @property
    def inter_ocular(self) -> float:
        """Distance between the outer eye corners 36 and 45, in pixels."""
        a, b = ibug68.OUTER_EYE_CORNERS
        return float(np.linalg.norm(self.points[a] - self.points[b]))


def as_detector_image(image: np.ndarray, image_name: str = "image") -> np.ndarray:
    """uint8 grey (H,W) or RGB (H,W,3), C-contiguous; RGBA loses its alpha."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise FlameFitError(f"{image_name}: expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or min(image.shape[:2]) < 1:
        raise FlameFitError(f"{image_name}: expected a grey, RGB or RGBA image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2)) if image.ndim == 2 else image



def check_face_size(size: float, image_name: str) -> None:
    """FlameFitError naming the real limit and fix when a face is below MIN_FACE_PX."""
    if not size >= MIN_FACE_PX:
        raise FlameFitError(
            f"the face in {image_name} is too small: {size:.0f} px tall, at least {MIN_FACE_PX:.0f} needed "
            f"(about {0.45 * MIN_FACE_PX:.0f} px between the outer eye corners); so few pixels hold too little "
            "detail for any landmark detector, and cropping or enlarging this photo adds none: use a photo with "
            "more pixels on the face (the original file rather than a reduced copy, or a closer shot), "
            "or give the points with --landmarks FILE")


# ----------------------------------------------------------------------------- which face

# total = sum of weight x cue, each cue 0..1 (cut: the share of the face outside the photo).
CHOICE_WEIGHTS = {"size": 1.0, "sharpness": 0.5, "centrality": 0.25, "score": 0.25, "cut": -1.0}
SHARPNESS_SIDE = 64  # px: faces are compared at one size, so blur counts relative to the face
# Faces in focus differ in texture (beard, make-up): on AFW's 123 photos with several faces
# 90 % of the largest faces have at least 0.45 of the sharpest face's Laplacian variance.
# Up to that they all count as sharp (cue 1); below it, blur lowers the cue.
SHARP_ENOUGH = 0.45
# Width / height of a whole face's box, per detector (RetinaFace: median of 524 uncut AFW
# boxes, p10 0.66); dlib's boxes are square.
BOX_ASPECT = {"retinaface": 0.75}
BORDER_SHARE = 0.05  # a box this close to the photo's edge (x its size) touches it


def _sharpness(grey: np.ndarray, box) -> float:
    """Variance of the Laplacian of the face box resampled to SHARPNESS_SIDE px."""
    H, W = grey.shape
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(W, int(np.ceil(box[2]))), min(H, int(np.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    patch = cv2.resize(grey[y0:y1, x0:x1], (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(patch.astype(np.float64), cv2.CV_64F).var())


def _cut(box, width: int, height: int, aspect: float) -> float:
    """Share of the face outside the photo, for a box at or over the photo's edge: the box
    inside the photo over a whole face's box (the box widened or heightened to width /
    height = aspect; detectors clip some boxes at the edge)."""
    w, h = box[2] - box[0], box[3] - box[1]
    near = BORDER_SHARE * max(w, h)
    if min(box[0], box[1], width - box[2], height - box[3]) > near:
        return 0.0
    inside = (min(box[2], width) - max(box[0], 0)) * (min(box[3], height) - max(box[1], 0))
    return float(np.clip(1 - inside / (max(w, aspect * h) * max(h, w / aspect)), 0.0, 1.0))


def rank_faces(image: np.ndarray, faces: list[Face], detector: str = "") -> list[dict]:
    """Per face (in the given order): its box, the cues (0..1) and their weighted total."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    H, W = grey.shape
    sizes = [face_size(f.box) for f in faces]
    sharp = [_sharpness(grey, f.box) for f in faces]
    best_score = max(f.score for f in faces)
    half_diagonal = np.hypot(W, H) / 2
    ranked = []
    for face, size, sharpness in zip(faces, sizes, sharp):
        centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
        cues = {"size": size / max(sizes), "sharpness": min(1.0, sharpness / max(max(sharp), 1e-9) / SHARP_ENOUGH),
                "centrality": 1 - float(np.linalg.norm(centre - (W / 2, H / 2))) / half_diagonal,
                "score": face.score / best_score if best_score > 0 else 1.0, "cut": _cut(face.box, W, H, BOX_ASPECT.get(detector, 1.0))}
        total = sum(CHOICE_WEIGHTS[k] * v for k, v in cues.items())
        ranked.append({"box": [round(float(v), 1) for v in face.box], "detector_score": round(float(face.score), 3),
                       **{k: round(float(v), 3) for k, v in cues.items()}, "total": round(float(total), 3)})
    return ranked


def choice_reason(ranked: list[dict], chosen: int, face_index: int | None) -> str:
    if face_index is not None:
        return f"--face {face_index} (faces numbered left to right)"
    if len(ranked) == 1:
        return "the only face found"
    largest = max(range(len(ranked)), key=lambda i: (ranked[i]["size"], -i))
    formula = " ".join(f"{'-' if w < 0 else '+'} {abs(w):g} {k}" for k, w in CHOICE_WEIGHTS.items()).lstrip("+ ")
    reason = f"the highest total = {formula}, of {len(ranked)} faces"
    if largest != chosen:
        a, b = ranked[largest], ranked[chosen]
        worse = [f"{k} {a[k]:.2f} vs {b[k]:.2f}" for k in ("sharpness", "centrality", "score")
                 if a[k] < b[k] - 0.1] + ([f"cut by the border ({a['cut']:.0%})"] if a["cut"] > b["cut"] + 0.1 else [])
        reason += f"; the largest, face {largest}, is worse in: {', '.join(worse) or 'the sum'}"
    return reason


def choice_order(ranked: list[dict]) -> list[int]:
    """Face indices, the one a person means first: highest total (ties: the leftmost)."""
    return sorted(range(len(ranked)), key=lambda i: (-ranked[i]["total"], i))


@dataclass
class FoundFaces:
    faces: list[Face]  # left to right by box centre, scoring at least the detector's min_score
    ranked: list[dict]  # rank_faces of them, same order
    detector: str
    finder: object  # the FaceDetector instance (landmarks for a chosen face)
    rgb: np.ndarray  # the image as the detector saw it


def find_faces(image_rgb: np.ndarray, detector: str | None = None, image_name: str = "image",
               photo_size: tuple[int, int] | None = None) -> FoundFaces:
    """Every face the detector finds, numbered left to right, with the choice cues (no
    landmarks: `flamefit faces` lists them, `detect_landmarks` fits one). FlameFitError when
    there is none (see detect_landmarks for the arguments)."""
    name = detector or default_detector()
    if name not in DETECTORS:
        raise FlameFitError(f"unknown landmark detector '{name}'; choose one of {', '.join(DETECTORS)}")
    finder = DETECTORS[name]()
    image = as_detector_image(image_rgb, image_name)
    rgb = _as_rgb(image)
    found = finder.detect(rgb)
    weak = [f for f in found if f.score < finder.min_score]
    faces = sorted((f for f in found if f.score >= finder.min_score), key=lambda f: (f.box[0] + f.box[2]) / 2)
    if not faces:
        best = f" (best candidate scored {max(f.score for f in weak):.2f}, below the {finder.min_score} needed)" \
            if weak else ""
        width, height = photo_size or (image.shape[1], image.shape[0])
        raise FlameFitError(f"no face found in {image_name} ({width}x{height} px, "
                            f"detector {name}){best}: {NO_FACE_HINT}")
    return FoundFaces(faces=faces, ranked=rank_faces(image, faces, name), detector=name, finder=finder, rgb=rgb)


# ----------------------------------------------------------------------------- landmarks


def landmarks_at_size(finder, rgb: np.ndarray, face: Face) -> tuple[Face, float]:
    """finder.landmarks on the face, and the enlargement: a face under LANDMARK_FACE_PX is
    landmarked on the region around it (REGION_SCALE x its size) enlarged to that size,
    and its points mapped back."""
    size = face_size(face.box)
    if size >= LANDMARK_FACE_PX:
        return finder.landmarks(rgb, face), 1.0
    H, W = rgb.shape[:2]
    centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    x0, y0 = np.maximum(0, np.floor(centre - REGION_SCALE * size / 2)).astype(int)
    x1, y1 = np.minimum((W, H), np.ceil(centre + REGION_SCALE * size / 2)).astype(int)
    factor = LANDMARK_FACE_PX / size
    region = cv2.resize(rgb[y0:y1, x0:x1], (round((x1 - x0) * factor), round((y1 - y0) * factor)),
                        interpolation=cv2.INTER_CUBIC)
    # cv2.resize scales continuous coordinates (pixel centres included) by new / old size.
    scale = np.array([region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)])
    found = finder.landmarks(np.ascontiguousarray(region), face.moved(scale, (x0, y0)))
    return found.moved(1 / scale, -np.array([x0, y0]) * scale), factor


def detect_landmarks(image_rgb: np.ndarray, detector: str | None = None, face_index: int | None = None,
                     image_name: str = "image", photo_size: tuple[int, int] | None = None) -> Detection:
    """Find one face's 68 iBUG points.

    image_rgb: uint8 (H,W,3) RGB, (H,W,4) RGBA or (H,W) grey. detector: a name in
    DETECTORS, default `default_detector()` (retinaface when its packages are installed,
    else dlib). face_index: which face, counted left to right by box centre; default the
    highest `rank_faces` total (the next when that one is not a human face). Faces scoring
    below the detector's min_score are not counted. Raises FlameFitError when no face is
    found, the index is out of range or the face is under MIN_FACE_PX. photo_size: (width,
    height) of the photo when `image_rgb` is a downscaled copy of it (image.detection_copy),
    for messages.
    """
    found = find_faces(image_rgb, detector, image_name, photo_size)
    faces, ranked, finder, rgb = found.faces, found.ranked, found.finder, found.rgb
    if face_index is not None and not 0 <= face_index < len(faces):
        raise FlameFitError(f"{image_name}: --face {face_index} is out of range: found {len(faces)} "
                            f"face{'s' if len(faces) != 1 else ''}, numbered 0..{len(faces) - 1} left to right")
    order = [face_index] if face_index is not None else choice_order(ranked)  # a chosen index is tried alone
    refusal = None
    for index in order:
        check_face_size(face_size(faces[index].box), image_name)
        try:
            face, enlarged = landmarks_at_size(finder, rgb, faces[index])
        except FlameFitError as error:  # e.g. an animal's face
            refusal = refusal or error
            continue
        return Detection(points=np.asarray(face.points, dtype=np.float64), box=faces[index].box, score=face.score,
                         num_faces=len(faces), face_index=index, detector=face.stage or found.detector,
                         dense_points=face.sources.get("mediapipe478", {}).get("points"),
                         weights=face.weights, sources=face.sources,
                         enlarged=enlarged, choice={"reason": choice_reason(ranked, index, face_index), "candidates": ranked})
    raise FlameFitError(f"{image_name}: {refusal}")
