"""Texture stage: the UV albedo itself, de-lit by the fitted SH light.

For a fixed mesh, camera and light the rendered colour of a pixel is
albedo(uv) * shading, so the albedo minimising the photometric error is, texel by
texel, photo(projection) / shading: the unwrap below is that least-squares solution
(each texel is one unknown), followed by `texture_refine_steps` passes that render the
result, back-project the remaining residual to the texels and add it (Jacobi steps on
the same objective, absorbing resampling differences).

Each texel has a confidence: visible in the photo (z-buffer at the photo's resolution)
x a ramp of the viewing-angle cosine x a ramp inside the photo's border (PHOTO_EDGE).
Texels seen poorly take the colour of their mirror texel (left/right symmetry of the
template), and texels still unknown (back of the head, under the chin) are filled by
pull-push diffusion from their neighbours; then the chart borders are blended on the
surface (textures/seams.py) so no seam shows.

Several photos: each view is unwrapped and refined as above with its own camera and
light, from a crop around the whole head it shows (its landmark crop is centred on the
face), and the views are merged by per-texel confidence (textures/merge.py: colour
matched, feathered, blended) before the mirror and pull-push fills.
"""

from __future__ import annotations

import numpy as np
import torch

from ..image import Crop
from ..render.lighting import sh_basis
from ..render.rasterizer import RasterizationSettings, rasterize_mesh
from ..render.shading import sample_image, vertex_normals
from ..render.uv_raster import gutter_texels, mirror_texels, texel_map, texel_visibility
from ..textures.fill import mirror_fill, pull_push
from ..textures.merge import merge_views
from ..textures.seams import blend_seams
from ..textures.skin import smoothstep
from ..textures.texture_mask import skin_colour, texture_mask
from .context import FitContext, Stage
from .geometry import CameraFrame, FitState
from .photo_target import linear_crop


def _sample(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear (H, W, C) image at (N, 2) pixel positions, edge pixels beyond the border."""
    return sample_image(image[None], xy[None], padding="border")[0]


def unwrap_view(ctx: FitContext, k: int, texels, report=lambda i: None):
    """View k's de-lit, refined albedo at the texels (M, 3), its confidence (M,) and the
    detail there (M,: photo pixels per metre of surface). With several views, texels near
    the head's outline in this photo count less (options.texture_silhouette_margin): a
    slightly misplaced outline samples the background there, and another view sees them
    better."""
    rig, state, options = ctx.rig, ctx.state, ctx.options
    view, fitted = ctx.views[k], ctx.state.views[k]
    rgb = view.photo.rgb
    T = int(options.texture_size)
    device, dtype = rig.device, rig.dtype
    verts = rig.vertices(state, view=k)
    frame = _head_frame(view.frame, verts) if len(ctx.views) > 1 else view.frame
    normals = vertex_normals(verts, rig.faces)
    points = texels.points(verts, rig.faces)
    texel_normals = torch.nn.functional.normalize(texels.points(normals, rig.faces), dim=-1)

    R = int(min(options.texture_max_unwrap, max(frame.crop.side, 256)))
    camera = frame.camera(R, device, dtype)
    photo = torch.as_tensor(linear_crop(rgb, frame, R), dtype=dtype, device=device)
    screen = camera.transform_points(points[None])[0]
    frags = rasterize_mesh(camera, verts, rig.faces, RasterizationSettings((R, R), cull_backfaces=True))
    report(2)
    tolerance = 0.004 + 0.002 * screen[:, 2]  # metres: a few mm at portrait distance
    visible = texel_visibility(screen[None], frags, tolerance[None])[0]
    to_camera = torch.nn.functional.normalize(-points, dim=-1)  # camera at the origin
    cosine = (texel_normals * to_camera).sum(-1)
    lo = options.texture_min_cosine
    # Toward the photo's border its colour fades into the fill (PHOTO_EDGE).
    edge = PHOTO_EDGE * view.frame.crop.side
    confidence = visible.to(dtype) * _inside_photo(frame, screen, R, edge) * ((cosine - lo) / (1.5 * lo)).clamp(0, 1)
    if len(ctx.views) > 1:
        # The margin is a share of the landmark crop (the face's size), not of the head's crop.
        margin = options.texture_silhouette_margin * view.frame.crop.side * R / frame.crop.side
        confidence = confidence * _inside_outline(frags.mask[0], screen, margin)

    raw_shading = sh_basis(texel_normals) @ fitted.sh[0]
    shading = raw_shading.clamp(min=options.texture_min_shading)
    # In deep shadow the division amplifies noise: trust such texels less.
    level = raw_shading.mean(-1) / raw_shading.mean(-1)[confidence > 0.5].median().clamp(min=1e-3) \
        if bool((confidence > 0.5).any()) else torch.ones_like(confidence)
    confidence = confidence * (level / options.texture_shadow_level).clamp(0, 1)
    colour = _sample(photo, screen[:, :2])
    albedo = (colour / shading).clamp(0, 1)
    report(3)

    # Refinement: render, back-project the residual, add (masked to confident texels).
    for step in range(options.texture_refine_steps):
        albedo = albedo + confidence[:, None] * _residual_at_texels(
            rig, verts, albedo, texels, fitted.sh, camera, photo, screen, shading, T)
        albedo = albedo.clamp(0, 1)
        report(4 + step)
    detail = float(frame.focal_px[0]) / points[:, 2].abs().clamp(min=1e-3)
    return albedo, confidence, detail


def _head_frame(frame: CameraFrame, verts: torch.Tensor) -> CameraFrame:
    """The photo's frame with a square crop around the landmark crop and the whole head's
    projection: the landmark crop is centred on the face, so a profile's would leave out
    the back of the head and the neck that the photo shows (#19: ~40 % of the surface
    three views see)."""
    xy = frame.camera(None, verts.device, verts.dtype).transform_points(verts)[0, :, :2].cpu().numpy()
    crop = frame.crop
    lo = np.minimum(np.floor(xy.min(0)), (crop.x0, crop.y0)).astype(int)
    hi = np.maximum(np.ceil(xy.max(0)), (crop.x0 + crop.side, crop.y0 + crop.side)).astype(int)
    side = int((hi - lo).max())
    x0, y0 = (lo + hi) // 2 - side // 2
    return CameraFrame(frame.width, frame.height, Crop(int(x0), int(y0), side, crop.size))


def _inside_photo(frame: CameraFrame, screen: torch.Tensor, R: int, edge: float) -> torch.Tensor:
    """(M,) in [0, 1]: 0 where the texel projects outside the photo (a crop past its border
    holds replicated edge pixels, not the surface), rising to 1 (smoothstep) over `edge`
    photo pixels inside its border."""
    crop = frame.crop
    x = screen[:, 0] * (crop.side / R) + crop.x0
    y = screen[:, 1] * (crop.side / R) + crop.y0
    inside = torch.minimum(torch.minimum(x + 0.5, frame.width - 0.5 - x), torch.minimum(y + 0.5, frame.height - 0.5 - y))
    return smoothstep(inside, 0.0, max(edge, 1e-6))


def _inside_outline(mask: torch.Tensor, screen: torch.Tensor, margin: float) -> torch.Tensor:
    """(M,) smoothstep of each texel's distance (pixels) inside the rendered head's outline
    over `margin` pixels."""
    import cv2

    inside = cv2.distanceTransform(mask.cpu().numpy().astype(np.uint8), cv2.DIST_L2, 3)
    R = inside.shape[0]
    x = screen[:, 0].round().long().clamp(0, R - 1).cpu().numpy()
    y = screen[:, 1].round().long().clamp(0, R - 1).cpu().numpy()
    return torch.as_tensor(smoothstep(inside[y, x], 0.0, max(margin, 1e-6)), dtype=screen.dtype, device=screen.device)


def unwrap(ctx: FitContext):
    """(texture (T, T, 3) linear float32 with every texel filled, texel weight (T, T),
    per-texel confidence (N,), confidence from the photos alone (T, T): before the mirror
    and pull-push fills)."""
    rig, options, reporter = ctx.rig, ctx.options, ctx.reporter
    T = int(options.texture_size)
    N = len(ctx.views)
    per_view = 2 + options.texture_refine_steps  # unwrap_view's steps 2 .. 3 + refine steps
    steps = 3 + N * per_view
    report = (lambda i: reporter.step(i, steps)) if reporter is not None else (lambda i: None)
    with torch.no_grad():
        texels = texel_map(rig.model, T, rig.device)
        report(1)
        index = texels.texel_index.cpu().numpy()
        if N == 1:
            albedo, confidence, _ = unwrap_view(ctx, 0, texels, report)
        else:
            # View k's step i is the stage's step i + k x per_view.
            found = [unwrap_view(ctx, k, texels, lambda i, k=k: report(i + k * per_view)) for k in range(N)]
            merged, seen, fill = merge_views([a.cpu().numpy() for a, _, _ in found],
                                             [c.cpu().numpy() for _, c, _ in found],
                                             [d.cpu().numpy() for _, _, d in found], index, T)
            albedo = torch.as_tensor(merged, dtype=rig.dtype, device=rig.device)
            confidence = torch.as_tensor(seen, dtype=rig.dtype, device=rig.device)

        # What is not the face's own colour (background, clothing, hair, teeth on the lips) takes the fill.
        keep = texture_mask(albedo.cpu().numpy(), confidence.cpu().numpy(), rig.model, texels)
        skin = skin_colour(albedo.cpu().numpy(), confidence.cpu().numpy(), rig.model, texels)
        confidence = confidence * torch.as_tensor(keep, dtype=confidence.dtype, device=confidence.device)
        if N > 1:
            fill = fill * keep

        # Symmetry: blend in the mirror texel where this one is poorly seen. Several views:
        # the fills take the feathered confidence, so the seen region fades into them.
        mirror = mirror_texels(rig.model, texels)
        weights = confidence.cpu().numpy() if N == 1 else fill
        filled, total = mirror_fill(albedo.cpu().numpy()[None], weights[None], mirror.cpu().numpy(), strength=1.0)

        texture = np.zeros((T * T, 3), np.float32)
        weight = np.zeros(T * T, np.float32)
        seen_map = np.zeros(T * T, np.float32)
        texture[index] = filled[0]
        weight[index] = total[0]
        seen_map[index] = confidence.cpu().numpy()
        report(steps - 1)
    texture = pull_push(texture.reshape(T, T, 3).transpose(2, 0, 1), weight.reshape(T, T)).transpose(1, 2, 0)
    # Filled and blended on the surface; far from seen texels the fill is the face's skin.
    texture = blend_seams(texture, rig.model, weight.reshape(T, T), reference=skin)
    report(steps)
    return np.clip(texture, 0.0, 1.0), weight.reshape(T, T), confidence, seen_map.reshape(T, T)


def _residual_at_texels(rig, verts, albedo, texels, sh, camera, photo, screen, shading, T):
    """Photo minus render (with this texel albedo), de-lit, sampled at each texel."""
    from ..render.shading import render_rgb

    tex = torch.zeros(T * T, 3, dtype=albedo.dtype, device=albedo.device)
    tex[texels.texel_index] = albedo
    # Bilinear lookups at a chart's border reach into the gutter: there it holds the nearest
    # texel's colour, not black (a darker render would brighten the border at every step).
    tex = tex[_gutter_source(texels, albedo.device)]
    tex = tex.view(1, T, T, 3).permute(0, 3, 1, 2)
    R = photo.shape[0]
    rendering = render_rgb(camera, verts, rig.faces, rig.face_uvs, tex, sh, RasterizationSettings((R, R), cull_backfaces=True))
    residual = (photo.reshape(-1, 3) - torch.zeros_like(photo.reshape(-1, 3)).index_copy(
        0, rendering.fragments.pixel_index, rendering.pixel_rgb))
    covered = torch.zeros(R * R, dtype=albedo.dtype, device=albedo.device)
    covered[rendering.fragments.pixel_index] = 1.0
    residual = (residual * covered[:, None]).view(R, R, 3)
    return _sample(residual, screen[:, :2]) / shading


def _gutter_source(texels, device) -> torch.Tensor:
    """(T * T,) for each texel of the map, itself where covered, else the nearest covered
    texel within GUTTER texels (itself beyond); cached per texel map."""
    from ..models.derived import derived

    def make():
        gutter, source = gutter_texels(texels, GUTTER)
        out = np.arange(texels.size * texels.size)
        out[gutter] = source
        return torch.as_tensor(out, device=device)

    return derived("gutter_source", texels, (str(device),), make, disk=False)


# Fade width at a photo's border, x its landmark crop's side (~4 mm on the face): hair or
# skin the border cuts fades into the fill instead of ending in a line.
PHOTO_EDGE = 0.02
GUTTER = 3  # texels: more than a bilinear lookup at a chart's border reaches


def albedo_texture(state: FitState, size: int) -> np.ndarray:
    """(size, size, 3) texture of the fitted albedo model (no texture stage)."""
    albedo = state.subject.albedo
    if hasattr(albedo, "full_texture"):
        tex = albedo.full_texture(size)
    else:
        tex = torch.nn.functional.interpolate(albedo.texture().detach(), size=(size, size), mode="bilinear",
                                              align_corners=False)
    return tex[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy().astype(np.float32)


def _keep(ctx: FitContext, texture: np.ndarray) -> None:
    ctx.texture = texture
    ctx.state.subject.texture = torch.as_tensor(texture, dtype=ctx.rig.dtype, device=ctx.rig.device).permute(2, 0, 1)[None]


class TextureStage(Stage):
    """The UV albedo itself, de-lit; without this stage, the albedo model's texture."""

    name = "texture"
    option = "texture"

    def run(self, ctx: FitContext) -> None:
        texture, ctx.coverage, _, ctx.seen = unwrap(ctx)
        _keep(ctx, texture)

    def skip(self, ctx: FitContext) -> None:
        _keep(ctx, albedo_texture(ctx.state, int(ctx.options.texture_size)))
