"""Evaluation of a finished fit, out of the fitting itself: the metrics of result.json
(metrics.py's figures on the render at metrics.EVAL_RESOLUTION) and the pictures of
overlay.png / report.png (the render, a grey geometry render under a fixed light, the
whole head over a wider window).
"""

from __future__ import annotations

import torch

from ..image import Crop, linear_to_srgb
from . import metrics
from .context import FitContext
from .geometry import CameraFrame
from .masks import face_polygon_mask
from .photo_target import linear_crop, region_weights, render

OVERLAY_RESOLUTION = 512  # the mesh drawn into overlay.png is rendered at most this size


def view_light(rig) -> torch.Tensor:
    """A fixed light for the grey geometry pictures: soft ambient + a key light from the
    upper left of the camera."""
    from ..render.lighting import ambient_light_sh, directional_light_sh

    dev, dt = rig.device, rig.dtype
    sh = ambient_light_sh(torch.tensor([[0.5, 0.5, 0.5]], dtype=dt, device=dev))
    return sh + directional_light_sh(torch.tensor([[-0.4, 0.5, 1.0]], dtype=dt, device=dev),
                                     torch.tensor([[0.7, 0.7, 0.7]], dtype=dt, device=dev))


def evaluate(ctx: FitContext, verts: torch.Tensor, fitted, k: int = 0) -> tuple[dict, dict]:
    """(metrics, pictures) of view k: its fitted mesh `verts` (1, V, 3) and its projected
    landmarks `fitted` (68, 2) original pixels."""
    view, rig, state = ctx.views[k], ctx.rig, ctx.state
    photo, frame, points, valid = view.photo, view.frame, view.points, view.valid
    with torch.no_grad():
        R = min(metrics.EVAL_RESOLUTION, frame.crop.side)
        eval_camera = frame.camera(R, rig.device, rig.dtype)
        rendering = render(rig, verts, state.subject.texture, state.views[k].sh, eval_camera, R)
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
    return result_metrics, {
        "photo": photo_srgb, "render": render_srgb, "grey": linear_to_srgb(grey), "mask": face_mask,
        "foreground": rendering.fragments.mask[0].cpu().numpy(),
        "overlay_grey": linear_to_srgb(overlay_grey), "overlay_foreground": overlay_fg, "overlay_crop": crop_o}
