"""`fit_photo`: the whole fit of one photo, stage by stage, reporting progress.

    image -> landmarks [-> setup] -> rigid -> shape -> photometric -> texture  (-> bundle, by the writer)

The stages are the objects in PIPELINE (context.py: name, option, run(ctx), skip(ctx)),
all working on one FitContext; `setup` (fit_setup.py: crop, frame, rig, state) is an
unreported step. The metrics and pictures come after, from evaluation.py. Every stage that runs emits {"event": "stage", ...} then
{"event": "progress", ...} through one callback, and its wall time goes into
`FitResult.timings`; `planned_stages` is the list of those that run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FlameFitError
from ..image import Photo
from ..models.head_model import HeadModel
from ..progress import NullProgress, StageReporter
from .context import FitContext, ViewInput
from .evaluation import evaluate
from .fit_setup import FitSetup
from .geometry import CameraFrame, FitState, HeadRig, project
from .inputs import LandmarksStage
from .photo_stage import ImageStage
from .photometric import PhotometricStage
from .prepare import is_prepared
from .rigid import RigidStage
from .schedule import FitOptions
from .shape import ShapeStage
from .texture import TextureStage

# The fit, stage by stage (context.py: the Stage protocol). The bundle stage is the writer's.
PIPELINE = (ImageStage(), LandmarksStage(), FitSetup(), RigidStage(), ShapeStage(), PhotometricStage(), TextureStage())
WRITER_STAGE = "bundle"


def planned_stages(options: FitOptions) -> list[str]:
    """The stage names a fit with these options reports, in order."""
    return [stage.name for stage in PIPELINE if stage.reported and stage.runs(options)] + [WRITER_STAGE]


@dataclass
class FitResult:
    photo: Photo
    model: HeadModel
    options: FitOptions
    frame: CameraFrame
    state: FitState
    detected_2d: np.ndarray  # (68, 2) original pixels (NaN where the detector has none)
    valid: np.ndarray  # (68,) bool
    fitted_2d: np.ndarray  # (68, 2) original pixels, jaw line on the outline (300-W's convention)
    fitted_2d_fixed: np.ndarray  # (68, 2) the static surface points projected, hidden or not (AFLW2000-3D's)
    landmarks_3d: np.ndarray  # (68, 3) world
    landmark_face_idx: np.ndarray  # (68,)
    landmark_bary: np.ndarray  # (68, 3)
    vertices: np.ndarray  # (V, 3) world
    texture: np.ndarray  # (T, T, 3) linear albedo in UV space (row 0 = top = v 1)
    metrics: dict
    timings: dict
    detection: dict
    rig: HeadRig
    pictures: dict = field(default_factory=dict)  # arrays for overlay.png / report.png
    stages: list = field(default_factory=list)


class _Stages:
    """Stage events and timings."""

    def __init__(self, progress, stages):
        self.progress = progress
        self.stages = stages
        self.timings = {}
        self.current = None
        self.start = None

    def begin(self, name: str) -> StageReporter:
        self.end()
        self.current, self.start = name, time.perf_counter()
        self.progress({"event": "stage", "stage": name, "index": self.stages.index(name) + 1, "count": len(self.stages)})
        return StageReporter(self.progress, name)

    def end(self) -> None:
        if self.current is not None:
            self.timings[self.current] = round(time.perf_counter() - self.start, 3)
            self.current = None


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FlameFitError("--device cuda: no CUDA GPU is available to PyTorch here (use --device cpu or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise FlameFitError(f"unknown device '{device}'; use auto, cpu or cuda")
    return torch.device(device)


def fit_photo(photo, model: HeadModel, options: FitOptions | None = None, *, landmarks=None, detector: str | None = None,
              face_index: int | None = None, texture_space=None, device="cpu", progress=None) -> FitResult:
    """Fit a prepared `model` (prepare_model) to one photo (a path or a loaded Photo),
    running PIPELINE. Raises FlameFitError on bad input."""
    if not is_prepared(model):
        raise ValueError("fit_photo needs a prepared head model: flamefit.fitting.prepare_model(model, cache_dir)")
    options = options or FitOptions()
    ctx = FitContext(model=model, options=options, device=resolve_device(str(device) if device is not None else None),
                     views=[ViewInput(photo_source=photo, landmarks_source=landmarks)], texture_space=texture_space,
                     detector=detector, face_index=face_index)
    torch.manual_seed(options.seed)
    stages = planned_stages(options)
    run = _Stages(progress or NullProgress(), stages)
    for stage in PIPELINE:
        if not stage.reported:
            stage.run(ctx)
        elif stage.runs(options):
            ctx.reporter = run.begin(stage.name)
            stage.run(ctx)
        else:
            stage.skip(ctx)
    run.end()

    start = time.perf_counter()
    result = _finish(ctx, run.timings, stages)
    result.timings["evaluation"] = round(time.perf_counter() - start, 3)  # metrics and pictures
    if ctx.coverage is not None:
        result.pictures["coverage"] = ctx.coverage
    return result


def _finish(ctx: FitContext, timings, stages):
    """The result: original-image landmarks and mesh; metrics and pictures from evaluation.py."""
    model, options, rig, state, texture = ctx.model, ctx.options, ctx.rig, ctx.state, ctx.texture
    photo, frame, points, valid, detection = (ctx.view.photo, ctx.view.frame, ctx.view.points, ctx.view.valid,
                                              ctx.view.detection)
    with torch.no_grad():
        verts = rig.vertices(state)
        lmk3d = rig.landmarks(verts, state.view.pose)
        camera = frame.camera(None, rig.device, rig.dtype)
        fitted = project(camera, lmk3d)[0].cpu().double().numpy()
        # No yaw: the static embedding, whose jaw points stay on the surface when hidden.
        fitted_fixed = project(camera, rig.layer.landmarks(verts, "ibug68"))[0].cpu().double().numpy()
        face_idx, bary = rig.landmark_embedding_at(state.view.pose)

    result_metrics, pictures = evaluate(ctx, verts, fitted)
    timings = dict(timings)
    return FitResult(
        photo=photo, model=model, options=options, frame=frame, state=state.detached(),
        detected_2d=points, valid=valid, fitted_2d=fitted, fitted_2d_fixed=fitted_fixed, landmarks_3d=lmk3d[0].cpu().double().numpy(),
        landmark_face_idx=face_idx, landmark_bary=bary, vertices=verts[0].cpu().numpy().astype(np.float32),
        texture=texture, metrics=result_metrics, timings=timings, detection=detection, rig=rig, pictures=pictures,
        stages=stages,
    )
