"""`fit_photo`: the whole fit of one photo, stage by stage, reporting progress.

    image -> landmarks -> rigid -> shape -> photometric -> texture  (-> bundle, by the writer)

Every stage emits {"event": "stage", ...} then {"event": "progress", ...} through one
callback, and its wall time goes into `FitResult.timings`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FlameFitError
from ..image import Crop, Photo, crop_around, linear_to_srgb, load_photo
from ..landmarks import ibug68
from ..models.head_model import HeadModel
from ..progress import NullProgress, StageReporter
from . import metrics
from .geometry import CameraFrame, FitState, HeadRig, initial_state, project
from .landmark_model import LandmarkModel
from .masks import face_polygon_mask
from .photometric import fit_photometric, linear_crop, region_weights, render, solve_sh
from .rigid import fit_rigid
from .schedule import FitOptions
from .shape import fit_shape
from .prepare import is_prepared

MIN_EYE_DISTANCE_PX = 20.0
OVERLAY_RESOLUTION = 512  # the mesh drawn into overlay.png is rendered at most this size


def planned_stages(options: FitOptions) -> list[str]:
    stages = ["image", "landmarks", "rigid"]
    stages += [s for s, key in (("shape", "landmarks"), ("photometric", "photometric"), ("texture", "texture"))
               if options.runs(key)]
    return stages + ["bundle"]


@dataclass
class FitResult:
    photo: Photo
    model: HeadModel
    options: FitOptions
    frame: CameraFrame
    state: FitState
    detected_2d: np.ndarray  # (68, 2) original pixels (NaN where the detector has none)
    valid: np.ndarray  # (68,) bool
    fitted_2d: np.ndarray  # (68, 2) original pixels
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


def find_landmarks(photo: Photo, landmarks=None, detector: str | None = None, face_index=None) -> tuple[np.ndarray, dict]:
    """(68, 2) points in original pixels and a description of where they came from."""
    if landmarks is not None:
        from ..landmarks import load_landmarks_file

        points = np.asarray(load_landmarks_file(landmarks) if isinstance(landmarks, (str, Path)) else landmarks,
                            dtype=np.float64)
        if points.shape != (68, 2):
            raise FlameFitError(f"expected 68 landmarks of (x, y), got shape {points.shape}")
        finite = np.isfinite(points).all(1)
        inside = finite & (points[:, 0] >= -0.5 * photo.width) & (points[:, 0] <= 1.5 * photo.width) \
            & (points[:, 1] >= -0.5 * photo.height) & (points[:, 1] <= 1.5 * photo.height)
        if not inside[finite].all() or finite.sum() < 20:
            raise FlameFitError(f"the landmarks do not lie on {photo.path.name} ({photo.width}x{photo.height} px): "
                                "wrong file, or coordinates for another image size?")
        a, b = ibug68.OUTER_EYE_CORNERS
        eye = float(np.linalg.norm(points[a] - points[b]))
        if not eye >= MIN_EYE_DISTANCE_PX:
            raise FlameFitError(f"the face in {photo.path.name} is too small: {eye:.0f} px between the outer eye "
                                f"corners, at least {MIN_EYE_DISTANCE_PX:.0f} needed")
        return points, {"source": "file" if isinstance(landmarks, (str, Path)) else "given",
                        "path": str(landmarks) if isinstance(landmarks, (str, Path)) else None}
    from ..image import detection_copy
    from ..landmarks import detect_landmarks

    small, scale = detection_copy(photo.rgb)  # a huge photo: detect on a downscaled copy (#11.6)
    found = detect_landmarks(small, detector=detector, face_index=face_index, image_name=photo.path.name)
    return found.points.astype(np.float64) / scale, {"source": "detector", "detector": found.detector,
                                                     "num_faces": found.num_faces, "face_index": found.face_index,
                                                     "box": [float(v) / scale for v in found.box], "score": float(found.score)}


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
    """Fit `model` to one photo (a path or a loaded Photo). Raises FlameFitError on bad input."""
    if not is_prepared(model):
        raise ValueError("fit_photo needs a prepared head model: flamefit.fitting.prepare_model(model, cache_dir)")
    options = options or FitOptions()
    progress = progress or NullProgress()
    device = resolve_device(str(device) if device is not None else None)
    torch.manual_seed(options.seed)
    stages = planned_stages(options)
    run = _Stages(progress, stages)

    # 1. Image
    run.begin("image")
    if not isinstance(photo, Photo):
        photo = load_photo(photo)

    # 2. Landmarks
    run.begin("landmarks")
    points, detection = find_landmarks(photo, landmarks, detector, face_index)
    valid = np.isfinite(points).all(1)
    crop = crop_around(points, options.landmark_resolution, options.crop_margin)
    frame = CameraFrame(photo.width, photo.height, crop)
    rig = HeadRig(model, device, options.identity_components, options.expression_components)
    state = initial_state(rig)
    lmodel = LandmarkModel(model, rig.num_identity, rig.num_expression, device)
    res = options.landmark_resolution
    points_crop = frame.to_crop(points, res)

    # 3. Rigid
    reporter = run.begin("rigid")
    fit_rigid(rig, lmodel, state, frame, points_crop, valid, res, options, reporter)

    # 4. Shape, expression, jaw, neck from the landmarks
    if "shape" in stages:
        reporter = run.begin("shape")
        fit_shape(rig, lmodel, state, frame, points_crop, valid, res, options, reporter)

    # 5. Photometric: albedo, SH light, geometry refined on the face-skin pixels
    if "photometric" in stages:
        reporter = run.begin("photometric")
        fit_photometric(rig, state, frame, photo.rgb, points, valid, options, texture_space, reporter)
    else:
        _light_only(rig, state, frame, photo.rgb, points, options, texture_space)

    # 6. Texture: the UV albedo itself
    T = int(options.texture_size)
    if "texture" in stages:
        from .texture import unwrap

        reporter = run.begin("texture")
        texture, coverage, _ = unwrap(rig, state, frame, photo.rgb, options, reporter)
    else:
        texture = _albedo_texture(state, T)
        coverage = None
    state.texture = torch.as_tensor(texture, dtype=rig.dtype, device=rig.device).permute(2, 0, 1)[None]
    run.end()

    start = time.perf_counter()
    result = _finish(photo, model, options, frame, rig, state, points, valid, texture, detection, run.timings, stages)
    result.timings["evaluation"] = round(time.perf_counter() - start, 3)  # metrics and pictures
    if coverage is not None:
        result.pictures["coverage"] = coverage
    return result


def _albedo_texture(state: FitState, size: int) -> np.ndarray:
    albedo = state.albedo
    if hasattr(albedo, "full_texture"):
        tex = albedo.full_texture(size)
    else:
        tex = torch.nn.functional.interpolate(albedo.texture().detach(), size=(size, size), mode="bilinear",
                                              align_corners=False)
    return tex[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy().astype(np.float32)


def _light_only(rig, state, frame, rgb, points, options, texture_space):
    """No photometric stage: an albedo from the photo's skin colour and the SH light
    solved in closed form for the landmark-fitted mesh."""
    from .photometric import Target, make_albedo
    from ..render.lighting import sh_basis

    target = Target(rig, frame, rgb, points, 128)
    state.albedo = make_albedo(rig, target, options, texture_space)
    with torch.no_grad():
        verts = rig.vertices(state)
        rendering = render(rig, verts, state.albedo.texture().detach(), state.sh, target.camera, 128)
        pix = rendering.fragments.pixel_index
        weight = target.mask[pix]
        if weight.sum() > 10:
            state.sh = solve_sh(rendering.pixel_albedo, sh_basis(rendering.pixel_normals), target.image[pix], weight,
                                state.sh)


def view_light(rig) -> torch.Tensor:
    """A fixed light for the grey geometry pictures: soft ambient + a key light from the
    upper left of the camera."""
    from ..render.lighting import ambient_light_sh, directional_light_sh

    dev, dt = rig.device, rig.dtype
    sh = ambient_light_sh(torch.tensor([[0.5, 0.5, 0.5]], dtype=dt, device=dev))
    return sh + directional_light_sh(torch.tensor([[-0.4, 0.5, 1.0]], dtype=dt, device=dev),
                                     torch.tensor([[0.7, 0.7, 0.7]], dtype=dt, device=dev))


def _finish(photo, model, options, frame, rig, state, points, valid, texture, detection, timings, stages):
    """Original-image landmarks, mesh, metrics and the pictures for the report."""
    with torch.no_grad():
        verts = rig.vertices(state)
        lmk3d = rig.landmarks(verts, state.pose)
        camera = frame.camera(None, rig.device, rig.dtype)
        fitted = project(camera, lmk3d)[0].cpu().double().numpy()
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
        detected_2d=points, valid=valid, fitted_2d=fitted, landmarks_3d=lmk3d[0].cpu().double().numpy(),
        landmark_face_idx=face_idx, landmark_bary=bary, vertices=verts[0].cpu().numpy().astype(np.float32),
        texture=texture, metrics=result_metrics, timings=timings, detection=detection, rig=rig,
        pictures={"photo": photo_srgb, "render": render_srgb, "grey": linear_to_srgb(grey), "mask": face_mask,
                  "foreground": rendering.fragments.mask[0].cpu().numpy(),
                  "overlay_grey": linear_to_srgb(overlay_grey), "overlay_foreground": overlay_fg,
                  "overlay_crop": crop_o},
        stages=stages,
    )
