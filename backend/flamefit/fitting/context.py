"""What the fitting stages share: one `FitContext` per fit, and the `Stage` protocol.

A stage is an object with a `name` (one of INTERFACE.md section 2's stage names), an
`option` (the `--stages` name that switches it on; None: it always runs), `run(ctx)`,
and `skip(ctx)`: what the later stages need from it when it does not run. The
pipeline (pipeline.py) is the list of stages; stage events, progress totals and
timings come from that list. Adding a stage: its module, one entry in
`pipeline.PIPELINE` and its name in bundle/schema.json's "stages".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..image import Photo
from ..models.head_model import HeadModel
from ..progress import StageReporter
from .geometry import CameraFrame, FitState, HeadRig
from .schedule import FitOptions


@dataclass
class ViewInput:
    """One photo of the fit and what the stages found in it (set in stage order); its
    fitted parameters are the matching `FitState.views` entry."""

    photo_source: object = None  # what fit_photo(s) was given: a path or a Photo
    landmarks_source: object = None  # a landmarks file, (68, 2) points, or None: detect
    # image
    photo: Photo | None = None
    # landmarks
    points: np.ndarray | None = None  # (68, 2) original pixels, NaN where the detector has none
    valid: np.ndarray | None = None  # (68,) bool
    weights: np.ndarray | None = None  # (68,) the detector's reliability per point, 0 where missing
    detection: dict = field(default_factory=dict)
    frame: CameraFrame | None = None  # the crop around the landmarks and the camera (fit_setup.py)

    @property
    def name(self) -> str:
        """The photo's file name, for messages."""
        return self.photo.path.name if self.photo is not None else str(self.photo_source)

    def points_crop(self, resolution: int) -> np.ndarray:
        """The landmarks in the crop at `resolution`."""
        return self.frame.to_crop(self.points, resolution)


@dataclass
class FitContext:
    """The inputs of one fit and what the stages have found so far (set in stage order)."""

    model: HeadModel  # prepared (fitting.prepare_model): read-only
    options: FitOptions
    device: torch.device
    views: list[ViewInput] = field(default_factory=list)  # the photos (single-photo fit: one)
    texture_space: object = None  # a textures TextureSpace, or None
    detector: str = "dlib"
    face_index: int | None = None
    reporter: StageReporter | None = None  # the running stage's progress
    rig: HeadRig | None = None
    lmodel: object = None  # landmark_model.LandmarkModel
    state: FitState | None = None
    # texture
    texture: np.ndarray | None = None  # (T, T, 3) linear UV albedo
    coverage: np.ndarray | None = None  # (T, T) texel confidence (texture stage only)
    seen: np.ndarray | None = None  # (T, T) confidence from real pixels, before the mirror/diffusion fill
    same_person: dict | None = None  # several photos: the face-descriptor distances (same_person.py)

    @property
    def view(self) -> ViewInput:
        """The photo of a single-photo fit."""
        if len(self.views) != 1:
            raise ValueError(f"a fit of {len(self.views)} photos has no single view")
        return self.views[0]


class Stage:
    """Base of the fitting stages (see the module docstring)."""

    name: str = ""
    option: str | None = None
    reported: bool = True  # False: an internal step, no stage event, timed with the stage before it

    def runs(self, options: FitOptions) -> bool:
        return self.option is None or options.runs(self.option)

    def run(self, ctx: FitContext) -> None:
        raise NotImplementedError

    def skip(self, ctx: FitContext) -> None:
        """Called instead of run() when the stage is switched off."""
