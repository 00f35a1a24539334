"""`fit_photos` / `fit_photo`: the whole fit of several photos of one person (or one
photo), stage by stage, reporting progress.

    image -> landmarks [-> setup] -> rigid -> shape -> photometric -> texture  (-> bundle, by the writer)

The stages are the objects in PIPELINE (context.py: name, option, run(ctx), skip(ctx)),
all working on one FitContext; `setup` (fit_setup.py: crop, frame, rig, state) and, for
several photos, the same-person check (same_person.py, after rigid) are unreported steps. The metrics and pictures come after, from evaluation.py. Every stage that runs emits {"event": "stage", ...} then
{"event": "progress", ...} through one callback, and its wall time goes into
`FitResult.timings`; `planned_stages` is the list of those that run.

The result is plain data (numpy arrays, Python values): everything its readers (the
bundle writer, the pictures, the texture-space build, the benchmarks) take from the
fitted tensors is computed here, in `_finish`, so a result pickles and its readers need
no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FlameFitError
from ..image import Photo
from ..models.head_model import HeadModel, ShapeKeys
from ..models.lbs import rodrigues
from ..progress import NullProgress, StageReporter
from .albedo import TextureSpaceAlbedo
from .context import FitContext, ViewInput
from .contour import deepen_jaw, fixed_jaw_line
from .evaluation import evaluate
from .fit_setup import FitSetup
from .geometry import GLOBAL, CameraFrame, head_rotation, project, yaw_degrees
from .inputs import LandmarksStage
from .photo_stage import ImageStage
from .photometric import PhotometricStage
from .prepare import is_prepared
from .rigid import RigidStage
from .same_person import SamePersonCheck
from .schedule import FitOptions
from .shape import ShapeStage
from .texture import TextureStage

# The fit, stage by stage (context.py: the Stage protocol). The bundle stage is the writer's.
PIPELINE = (ImageStage(), LandmarksStage(), FitSetup(), RigidStage(), SamePersonCheck(), ShapeStage(), PhotometricStage(),
            TextureStage())
WRITER_STAGE = "bundle"


def planned_stages(options: FitOptions) -> list[str]:
    """The stage names a fit with these options reports, in order."""
    return [stage.name for stage in PIPELINE if stage.reported and stage.runs(options)] + [WRITER_STAGE]


@dataclass
class ViewResult:
    """One photo of a fit: where the head is in it and how well it matches."""

    name: str  # the photo's file stem, unique within the fit ("front", "left", "left-2")
    photo: Photo
    frame: CameraFrame
    detected_2d: np.ndarray  # (68, 2) original pixels (NaN where the detector has none)
    valid: np.ndarray  # (68,) bool
    fitted_2d: np.ndarray  # (68, 2) original pixels, jaw line on the outline (300-W's convention)
    fitted_2d_fixed: np.ndarray  # (68, 2) the static surface points projected, hidden or not (AFLW2000-3D's)
    landmarks_3d: np.ndarray  # (68, 3) this view's camera frame
    landmark_face_idx: np.ndarray  # (68,)
    landmark_bary: np.ndarray  # (68, 3)
    vertices: np.ndarray  # (V, 3) this view's camera frame
    head_to_camera: np.ndarray  # (4, 4) the head's rigid transform (global rotation about the root + translation)
    # This photo's fitted parameters (float32, the fitted components only):
    expression: np.ndarray  # (E',)
    pose: np.ndarray  # (J, 3) axis-angle per joint (models.head_model.JOINT_NAMES: global, neck, jaw, eyes)
    translation: np.ndarray  # (3,) metres
    sh: np.ndarray  # (9, 3) SH light (INTERFACE.md section 4)
    yaw_degrees: float  # the head's turn about +Y (global and neck; geometry.yaw_degrees)
    metrics: dict
    detection: dict
    pictures: dict = field(default_factory=dict)  # arrays for overlay.png / report.png

    def world_to_camera(self, reference: "ViewResult") -> np.ndarray:
        """(4, 4) this view's camera from the world = the reference view's camera frame."""
        return self.head_to_camera @ np.linalg.inv(reference.head_to_camera)


@dataclass
class FitResult:
    """A fitted subject: the shared head and texture, and one ViewResult per photo (the
    first is the reference: its camera frame is the world). The single-photo attributes
    (photo, frame, detected_2d, ..., vertices, detection, pictures) read the first view.

    Plain data only (numpy arrays, Python values), except `model`: the prepared head model
    the fit used (itself numpy arrays, read-only and shared, not copied), which the writer
    needs for the mesh's faces, UVs, component names, licence and provenance."""

    model: HeadModel
    options: FitOptions
    identity: np.ndarray  # (S',) float32: the fitted identity coefficients (the first S' components)
    texture: np.ndarray  # (T, T, 3) linear albedo in UV space (row 0 = top = v 1)
    views: list[ViewResult]
    metrics: dict  # one photo: its metrics; several: the mean over the views, plus "views"
    timings: dict
    shape_keys: ShapeKeys  # the head posed as in the first view as Basis + shape keys (HeadLayer.shape_keys)
    device: str  # where it was fitted ("cpu", "cuda:0")
    history: dict = field(default_factory=dict)  # stage -> its loss values (floats), in order
    texture_space: str | None = None  # the albedo space's name, when the photometric stage fitted one
    albedo_coefficients: np.ndarray | None = None  # (K,) float32 of that space: mean + sum_k c_k std_k basis_k
    stages: list = field(default_factory=list)
    coverage: np.ndarray | None = None  # (T, T) texel weight after the fills (texture stage)
    seen: np.ndarray | None = None  # (T, T) texel confidence from the photos' pixels alone
    same_person: dict | None = None  # several photos: the face-descriptor distances compared (same_person.py)


def _first_view(name: str) -> property:
    return property(lambda self: getattr(self.views[0], name), doc=f"The first view's {name}.")


for _name in ("photo", "frame", "detected_2d", "valid", "fitted_2d", "fitted_2d_fixed", "landmarks_3d",
              "landmark_face_idx", "landmark_bary", "vertices", "detection", "pictures"):
    setattr(FitResult, _name, _first_view(_name))


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
    """Fit a prepared `model` (prepare_model) to one photo (a path or a loaded Photo):
    the one-view case of fit_photos. Raises FlameFitError on bad input."""
    return fit_photos([photo], model, options, landmarks=[landmarks], detector=detector, face_index=face_index,
                      texture_space=texture_space, device=device, progress=progress)


def fit_photos(photos, model: HeadModel, options: FitOptions | None = None, *, landmarks=None,
               detector: str | None = None, face_index: int | None = None, texture_space=None, device="cpu",
               progress=None) -> FitResult:
    """Fit a prepared `model` to several photos of one person (paths or loaded Photos):
    one identity and albedo, each photo its own camera, pose, expression and light.
    `landmarks`: None, or one entry per photo (a file, (68, 2) points, or None: detect).
    A photo that does not show the person of the others is refused (same_person.py).
    Raises FlameFitError on bad input."""
    if not is_prepared(model):
        raise ValueError("fit_photo needs a prepared head model: flamefit.fitting.prepare_model(model, cache_dir)")
    photos = list(photos)
    if not photos:
        raise FlameFitError("no photo to fit")
    landmarks = [None] * len(photos) if landmarks is None else list(landmarks)
    if len(landmarks) != len(photos):
        raise FlameFitError(f"{len(landmarks)} landmark files for {len(photos)} photos: give one per photo, in order")
    options = options or FitOptions()
    ctx = FitContext(model=model, options=options, device=resolve_device(str(device) if device is not None else None),
                     views=[ViewInput(photo_source=p, landmarks_source=m) for p, m in zip(photos, landmarks)],
                     texture_space=texture_space, detector=detector, face_index=face_index)
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
        result.coverage = ctx.coverage
        result.views[0].pictures["coverage"] = ctx.coverage
    result.seen = ctx.seen
    result.same_person = ctx.same_person
    return result


def view_names(views) -> list[str]:
    """Each photo's file stem, made unique in order ("left", "left-2")."""
    names, used = [], set()
    for view in views:
        stem = view.photo.path.stem or "photo"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def head_transform(ctx: FitContext, k: int) -> np.ndarray:
    """(4, 4) view k's head pose as a rigid map: rotation by the global joint about the
    root joint, then the translation (x_cam = R (x - root) + root + t)."""
    state, fitted = ctx.state, ctx.state.views[k]
    with torch.no_grad():
        root = ctx.lmodel.joints(state.subject.identity.double(), fitted.expression.double())[0, GLOBAL].cpu().numpy()
        R = rodrigues(fitted.pose[:1, GLOBAL].double())[0].cpu().numpy()
    matrix = np.eye(4)
    matrix[:3, :3] = R
    matrix[:3, 3] = root - R @ root + fitted.translation[0].double().cpu().numpy()
    return matrix


def _view_result(ctx: FitContext, k: int, name: str) -> ViewResult:
    rig, state, view = ctx.rig, ctx.state, ctx.views[k]
    fitted_view = state.views[k]
    pose = fitted_view.pose
    with torch.no_grad():
        verts = rig.vertices(state, view=k)
        lmk3d = rig.landmarks(verts, pose)
        camera = view.frame.camera(None, rig.device, rig.dtype)
        fitted = project(camera, lmk3d)[0].cpu().double().numpy()
        # No yaw: the static embedding, whose jaw points stay where they are when hidden (just
        # behind the surface: contour.deepen_jaw); the visible jaw points toward the outline
        # (AFLW2000-3D's convention, contour.py).
        static = rig.layer.landmarks(verts, "ibug68")[0].cpu().double().numpy()
        turn = head_rotation(pose.double())[0].cpu().numpy()
        fitted_fixed = project(camera, torch.as_tensor(deepen_jaw(static, turn)[None], dtype=verts.dtype,
                                                       device=verts.device))[0].cpu().double().numpy()
        yaw = float(yaw_degrees(pose)[0])
        fitted_fixed = fixed_jaw_line(fitted_fixed, fitted, yaw)
        face_idx, bary = rig.landmark_embedding_at(pose)
    view_metrics, pictures = evaluate(ctx, verts, fitted, k)
    return ViewResult(name=name, photo=view.photo, frame=view.frame, detected_2d=view.points, valid=view.valid,
                      fitted_2d=fitted, fitted_2d_fixed=fitted_fixed, landmarks_3d=lmk3d[0].cpu().double().numpy(),
                      landmark_face_idx=face_idx, landmark_bary=bary,
                      vertices=verts[0].cpu().numpy().astype(np.float32), head_to_camera=head_transform(ctx, k),
                      expression=_array(fitted_view.expression[0]), pose=_array(pose[0]),
                      translation=_array(fitted_view.translation[0]), sh=_array(fitted_view.sh[0]), yaw_degrees=yaw,
                      metrics=view_metrics, detection=view.detection, pictures=pictures)


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A fitted parameter as a float32 numpy copy."""
    return tensor.detach().cpu().numpy().astype(np.float32, copy=True)


def subject_metrics(views: list[ViewResult]) -> dict:
    """One view: its metrics. Several: each figure's mean over the views, and "views": N."""
    if len(views) == 1:
        return dict(views[0].metrics)
    out = {}
    for key in views[0].metrics:
        values = [v.metrics[key] for v in views if v.metrics.get(key) is not None and np.isfinite(v.metrics[key])]
        out[key] = round(float(np.mean(values)), 5) if values else float("nan")
    out["views"] = len(views)
    return out


def _finish(ctx: FitContext, timings, stages):
    """The result, as plain arrays: each view's parameters, original-image landmarks, mesh,
    metrics and pictures (evaluation.py); the subject's identity, albedo, texture and its
    head as shape keys (the bundle's mesh.npz)."""
    names = view_names(ctx.views)
    views = [_view_result(ctx, k, name) for k, name in enumerate(names)]
    state, first = ctx.state, ctx.state.views[0]
    with torch.no_grad():
        keys = ctx.rig.layer.shape_keys(state.subject.identity, first.expression, first.pose, first.translation)
    albedo = state.subject.albedo
    space = isinstance(albedo, TextureSpaceAlbedo)
    return FitResult(model=ctx.model, options=ctx.options, identity=_array(state.subject.identity[0]),
                     texture=ctx.texture, views=views, metrics=subject_metrics(views), timings=dict(timings),
                     shape_keys=keys, device=str(ctx.rig.device),
                     history={stage: [float(v) for v in values] for stage, values in state.history.items()},
                     texture_space=albedo.space.name if space else None,
                     albedo_coefficients=_array(albedo.coeffs[0]) if space else None, stages=stages)
