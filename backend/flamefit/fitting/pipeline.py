"""`fit_photo`: the whole fit of one photo, stage by stage, reporting progress.

    image -> landmarks -> rigid -> shape -> photometric -> texture  (-> bundle, by the writer)

The stages are the objects in PIPELINE (context.py: name, option, run(ctx), skip(ctx)),
all working on one FitContext. Every stage that runs emits {"event": "stage", ...} then
{"event": "progress", ...} through one callback, and its wall time goes into
`FitResult.timings`; `planned_stages` is the list of those that run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FlameFitError
from ..image import Crop, Photo, linear_to_srgb
from ..models.head_model import HeadModel
from ..progress import NullProgress, StageReporter
from . import metrics
from .context import FitContext
from .fit_setup import FitSetup
from .geometry import CameraFrame, FitState, HeadRig, project
from .inputs import ImageStage, LandmarksStage
from .masks import face_polygon_mask
from .photo_target import linear_crop, region_weights, render
from .photometric import PhotometricStage
from .prepare import is_prepared
from .rigid import RigidStage
from .schedule import FitOptions
from .shape import ShapeStage
from .texture import TextureStage

OVERLAY_RESOLUTION = 512  # the mesh drawn into overlay.png is rendered at most this size


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
                     texture_space=texture_space, photo_source=photo, landmarks_source=landmarks, detector=detector,
                     face_index=face_index)
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


def view_light(rig) -> torch.Tensor:
    """A fixed light for the grey geometry pictures: soft ambient + a key light from the
    upper left of the camera."""
    from ..render.lighting import ambient_light_sh, directional_light_sh

    dev, dt = rig.device, rig.dtype
    sh = ambient_light_sh(torch.tensor([[0.5, 0.5, 0.5]], dtype=dt, device=dev))
    return sh + directional_light_sh(torch.tensor([[-0.4, 0.5, 1.0]], dtype=dt, device=dev),
                                     torch.tensor([[0.7, 0.7, 0.7]], dtype=dt, device=dev))


def _finish(ctx: FitContext, timings, stages):
    """Original-image landmarks, mesh, metrics and the pictures for the report."""
    photo, model, options, frame, rig, state = ctx.photo, ctx.model, ctx.options, ctx.frame, ctx.rig, ctx.state
    points, valid, texture, detection = ctx.points, ctx.valid, ctx.texture, ctx.detection
    with torch.no_grad():
        verts = rig.vertices(state)
        lmk3d = rig.landmarks(verts, state.pose)
        camera = frame.camera(None, rig.device, rig.dtype)
        fitted = project(camera, lmk3d)[0].cpu().double().numpy()
        # No yaw: the static embedding, whose jaw points stay on the surface when hidden.
        fitted_fixed = project(camera, rig.layer.landmarks(verts, "ibug68"))[0].cpu().double().numpy()
        face_idx, bary = rig.landmark_embedding_at(state.pose)

        R = min(metrics.EVAL_RESOLUTION, frame.crop.side)
        eval_camera = frame.camera(R, rig.device, rig.dtype)
        rendering = render(rig, verts, state.texture, state.sh, eval_camera, R)
        render_lin = rendering.image[0].clamp(0, 1).cpu().numpy()
        fg = rendering.fragments.mask[0].cpu().numpy()
        region = region_weights(rig)
        if region is not None:
            from ..render.shading import interpolate

            fg = fg & (interpolate(rendering.fragments, region)[0, ..., 0].cpu().numpy() > 0.5)
        grey_albedo = torch.full((1, 3, 4, 4), 0.7, dtype=rig.dtype, device=rig.device)
        view_sh = view_light(rig)
        grey = render(rig, verts, grey_albedo, view_sh, eval_camera, R).image[0].clamp(0, 1).cpu().numpy()
        # The overlay shows the whole head: a window 1.7x the fitting crop, same centre.
        c = frame.crop
        side_o = int(round(c.side * 1.7))
        crop_o = Crop(c.x0 + (c.side - side_o) // 2, c.y0 + (c.side - side_o) // 2, side_o, min(OVERLAY_RESOLUTION, side_o))
        frame_o = CameraFrame(frame.width, frame.height, crop_o)
        lit = render(rig, verts, grey_albedo, view_sh, frame_o.camera(crop_o.size, rig.device, rig.dtype), crop_o.size)
        overlay_grey = lit.image[0].clamp(0, 1).cpu().numpy()
        overlay_fg = lit.fragments.mask[0].cpu().numpy()
    photo_lin = linear_crop(photo.rgb, frame, R)
    points_eval = frame.to_crop(points, R)
    face_mask = face_polygon_mask(points_eval, R) * fg
    render_srgb = linear_to_srgb(render_lin)
    photo_srgb = linear_to_srgb(photo_lin)
    mae, psnr = metrics.image_errors(render_srgb, photo_srgb, face_mask)
    lmk_px, lmk_eye = metrics.landmark_errors(fitted, points, valid)
    result_metrics = {"landmark_error_px": round(lmk_px, 4), "landmark_error_eye_fraction": round(lmk_eye, 5),
                      "photometric_error": round(mae, 5), "psnr_db": round(psnr, 3)}
    timings = dict(timings)
    return FitResult(
        photo=photo, model=model, options=options, frame=frame, state=state.detached(),
        detected_2d=points, valid=valid, fitted_2d=fitted, fitted_2d_fixed=fitted_fixed, landmarks_3d=lmk3d[0].cpu().double().numpy(),
        landmark_face_idx=face_idx, landmark_bary=bary, vertices=verts[0].cpu().numpy().astype(np.float32),
        texture=texture, metrics=result_metrics, timings=timings, detection=detection, rig=rig,
        pictures={"photo": photo_srgb, "render": render_srgb, "grey": linear_to_srgb(grey), "mask": face_mask,
                  "foreground": rendering.fragments.mask[0].cpu().numpy(),
                  "overlay_grey": linear_to_srgb(overlay_grey), "overlay_foreground": overlay_fg,
                  "overlay_crop": crop_o},
        stages=stages,
    )
