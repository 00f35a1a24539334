"""Detectors used only when their packages are installed: face-alignment (FAN) and
MediaPipe face mesh. Neither ever downloads anything from here.

Each returns a list of faces, one dict per face: "box" (x0, y0, x1, y1), "score",
"points" (68,2) with NaN rows where the detector has no such point, and optionally
"dense_points" (N,2). Coordinates follow FlameFit's pixel-centre convention.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import FlameFitError
from . import mesh
from .faces import Face, FaceDetector

# --- face-alignment --------------------------------------------------------------


def _face_alignment_weight_urls(face_alignment) -> list[str]:
    """The URLs FaceAlignment(TWO_D, face_detector='sfd') would fetch, read from the
    installed package so a new release's file names are picked up."""
    import torch
    from face_alignment import api

    version = torch.__version__.split("+")[0]
    version = version.rsplit(".", 2 if "dev" in version else 1)[0]
    urls = getattr(api, "models_urls", {}).get(version, getattr(api, "default_model_urls", {}))
    landmark_url = urls.get("2DFAN-4")
    try:
        from face_alignment.detection.sfd import sfd_detector
        detector_url = sfd_detector.models_urls["s3fd"]
    except (ImportError, AttributeError, KeyError):
        detector_url = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
    return [u for u in (landmark_url, detector_url) if u]


def face_alignment_checkpoint_dir() -> Path:
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints"


def _require_face_alignment():
    try:
        import face_alignment
    except ImportError:
        raise FlameFitError("detector 'face-alignment' is not installed: pip install face-alignment "
                            "(then place its weights as the next error explains), or use --detector dlib") from None
    folder = face_alignment_checkpoint_dir()
    urls = _face_alignment_weight_urls(face_alignment)
    missing = [u for u in urls if not (folder / Path(urlparse(u).path).name).is_file()]
    if missing:
        names = ", ".join(Path(urlparse(u).path).name for u in missing)
        raise FlameFitError(
            f"face-alignment weights missing: {names} must be in {folder} (FlameFit never downloads "
            f"them). On a machine with internet download {' and '.join(missing)} into that folder "
            "(or set TORCH_HOME to a folder whose hub/checkpoints holds them), or use --detector dlib")
    return face_alignment


@functools.lru_cache(maxsize=None)
def _face_alignment_model():
    fa = _require_face_alignment()
    kind = getattr(fa.LandmarksType, "TWO_D", None) or fa.LandmarksType._2D
    return fa.FaceAlignment(kind, device="cpu", face_detector="sfd", flip_input=False)


def face_alignment_faces(image_rgb: np.ndarray) -> list[dict]:
    model = _face_alignment_model()
    landmarks, scores, boxes = model.get_landmarks_from_image(image_rgb, return_bboxes=True)
    faces = []
    for points, box in zip(landmarks or [], boxes or []):
        # FAN's points are pixel indices (as dlib's): shift to pixel centres.
        faces.append({"box": tuple(float(v) for v in box[:4]),
                      "score": float(box[4]) if len(box) > 4 else 1.0,
                      "points": np.asarray(points, dtype=np.float64)[:, :2] + 0.5})
    return faces


class FaceAlignmentDetector(FaceDetector):
    name = "face-alignment"
    summary = "FAN 2D (S3FD boxes); needs its weights already in the torch hub cache (never downloaded)"
    packages = ("face_alignment",)
    install = "pip install face-alignment (then place its weights as the next error explains)"

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        return [Face(box=f["box"], score=f["score"], points=f["points"], stage=self.name)
                for f in face_alignment_faces(image_rgb)]


# --- MediaPipe face mesh alone -------------------------------------------------------


class MediaPipeDetector(FaceDetector):
    """The mesh with its own short-range finder on the whole photo: misses small and
    turned faces (retinaface runs the same mesh on a better crop)."""

    name = "mediapipe"
    summary = "MediaPipe face mesh alone (its own short-range finder); no jaw line"
    packages = (mesh.PACKAGE,)
    install = mesh.INSTALL

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        self.require()
        dense = mesh.mesh_points(image_rgb)
        if dense is None:
            return []
        x0, y0 = dense.min(0)
        x1, y1 = dense.max(0)
        points = mesh.inner_ibug(dense)
        return [Face(box=(float(x0), float(y0), float(x1), float(y1)), score=1.0, points=points,
                     weights=np.isfinite(points).all(1).astype(float), stage=self.name,
                     sources={"mediapipe478": {"points": dense, "weights": np.ones(len(dense))}})]
