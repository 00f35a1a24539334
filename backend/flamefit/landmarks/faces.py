"""What every face detector returns, and the base class the registry's detectors share.

A detector finds faces (`detect`: boxes with the detector's own confidence, and its
68 iBUG points when it makes them) and, for the face chosen, gives the 68 points
(`landmarks`). Adding a detector: a FaceDetector subclass in its own module, one line
in registry.py.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FlameFitError


def face_size(box) -> float:
    """The longer side of a face box, in pixels: the size rules' and the crops' measure."""
    return float(max(box[2] - box[0], box[3] - box[1]))


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1, continuous pixel coordinates
    score: float  # the detector's own confidence (scales differ between detectors)
    points: np.ndarray | None = None  # (68,2) iBUG points, NaN rows where missing; None: not yet
    weights: np.ndarray | None = None  # (68,) reliability 0..1 of each point; None: all 1
    sources: dict = field(default_factory=dict)  # name -> {"points": (N,2), "weights": (N,)}
    stage: str = ""  # which stage found it, e.g. "dlib-hog-upsample1"
    extra: dict = field(default_factory=dict)  # detector-private data; (N,2) arrays are image points

    def moved(self, scale, offset) -> "Face":
        """This face in another frame: every point p (box corners, points, sources, the
        point arrays in `extra`) becomes (p - offset) * scale, scale per axis or one number."""
        def move(points):
            return None if points is None else (np.asarray(points, dtype=np.float64) - offset) * scale

        corners = move(np.reshape(self.box, (2, 2)))
        return replace(self, box=tuple(float(v) for v in corners.ravel()), points=move(self.points),
                       sources={k: {**v, "points": move(v["points"])} for k, v in self.sources.items()},
                       extra={k: move(v) if isinstance(v, np.ndarray) and v.shape[-1:] == (2,) else v
                              for k, v in self.extra.items()})


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class FaceDetector:
    """Base: subclasses set the class attributes and implement `detect`."""

    name = ""
    summary = ""
    packages: tuple[str, ...] = ()  # importable modules this detector needs
    install = ""  # the command that installs them
    min_score = 0.0  # faces scoring lower are not faces (documented in the README)

    @classmethod
    def missing(cls) -> list[str]:
        """The needed modules that cannot be imported here (found without importing them)."""
        return [p for p in cls.packages if not _findable(p)]

    @classmethod
    def require(cls) -> None:
        missing = cls.missing()
        if missing:
            raise FlameFitError(f"detector '{cls.name}' needs {', '.join(missing)}, which is not installed: "
                                f"{cls.install}; or use --detector dlib")

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def landmarks(self, image_rgb: np.ndarray, face: Face) -> Face:
        """The face from `detect` with its 68 points filled in (detectors whose `detect`
        gives points: as it is). Raises FlameFitError when it is not a plausible human face."""
        if face.points is None:
            raise NotImplementedError(f"detector '{self.name}' gives boxes only: it must define landmarks()")
        return face
