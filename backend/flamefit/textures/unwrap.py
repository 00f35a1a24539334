"""De-lit albedo of one fitted photo in UV space, with a per-texel confidence.

For every texel of the head model's UV layout: its point and normal on the fitted
mesh, projected into the photo; colour = photo (linear) / SH shading at that normal,
the renderer's model (rendered = albedo x shading, normals in camera space). The
confidence in [0, 1] multiplies

- visibility: the texel is the surface the camera sees there (the triangle rendered at
  its pixel is its own or a neighbour, or lies within a few mm in depth) and it lies
  inside the photo;
- viewing angle: smoothstep of cos(normal, direction to the camera): grazing texels
  are blurred and badly lit;
- shading: texels in deep shadow (shading < 15 % of the face's median) are unreliable;
- clipping: no channel of the photo saturated;
- skin: a skin-like colour (red >= green, red > blue) close to this photo's own skin
  colour over the face core (skin.py, the photometric mask's estimator too): hair,
  beard, glasses, occluders and background get low weight; and a UV prior mask
  (eyeballs, teeth, mouth interior, overlapping UV charts: uv_masks.uv_skin_prior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..render import PinholeCamera, sample_image, sh_shading, vertex_normals
from ..render.uv_raster import TexelMap, rasterize_box, texel_visibility, view_cosine
from .skin import MIN_REFERENCE, skin_colour_weight, skin_hue, smoothstep

MAX_RASTER = 384  # the visibility raster works on the head's box at most this size


def to_map(texels: TexelMap, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """(M, C) values at the texels of a TexelMap -> (C, size, size) image."""
    out = values.new_full((texels.size * texels.size, values.shape[-1]), fill)
    out[texels.texel_index] = values
    return out.T.reshape(values.shape[-1], texels.size, texels.size)


@dataclass
class Unwrapped:
    albedo: np.ndarray  # (3, size, size) float32 linear RGB de-lit albedo (0 where unseen)
    confidence: np.ndarray  # (size, size) float32 in [0, 1]


@torch.no_grad()
def unwrap_albedo(image_linear, verts, faces, texels: TexelMap, camera: PinholeCamera, sh,
                  *, skin_prior: np.ndarray | None = None, face_core: np.ndarray | None = None,
                  image_srgb_max=None, skin_model: bool = True, depth_tolerance: float = 0.002) -> Unwrapped:
    """De-lit UV albedo and confidence of one photo.

    image_linear: (H, W, 3) linear RGB; verts (V, 3) fitted world vertices; faces (F, 3);
    camera: a one-camera PinholeCamera; sh (9, 3). skin_prior: (size, size) UV weights.
    face_core: (size, size) bool, the texels whose colours define the photo's skin colour.
    image_srgb_max: (H, W) max sRGB channel, to down-weight clipped pixels (optional).
    """
    image = torch.as_tensor(np.asarray(image_linear), dtype=torch.float32)
    verts = torch.tensor(np.asarray(verts), dtype=torch.float32)[None]
    faces = torch.tensor(np.asarray(faces), dtype=torch.int64)  # a copy: the model's arrays are read-only
    sh = torch.as_tensor(np.asarray(sh), dtype=torch.float32).reshape(1, 9, 3)
    H, W = image.shape[:2]

    # The texels' points and normals on the fitted mesh.
    points = texels.points(verts, faces)[None]
    normals = torch.nn.functional.normalize(texels.points(vertex_normals(verts, faces), faces), dim=-1)[None]
    cam_normals = torch.nn.functional.normalize(camera.rotate_to_camera(normals), dim=-1)
    screen = camera.transform_points(points)[0]  # (M, 3) x px, y px, depth
    facing = view_cosine(camera, points, normals)[0]

    # Visibility against a raster of the head's bounding box; the tolerance grows by one
    # raster pixel's footprint, and a texel whose triangle neighbours the one seen counts.
    frags, raster_camera = rasterize_box(camera, verts, faces, (H, W), MAX_RASTER)
    raster_screen = raster_camera.transform_points(points)
    footprint = raster_screen[..., 2] / raster_camera.focal[0].mean()
    visible = texel_visibility(raster_screen, frags, depth_tolerance + footprint, texel_faces=texels.face)[0]
    # At least one pixel from the border: bilinear lookups there would blend in black.
    inside = (screen[:, 0] >= 1) & (screen[:, 0] <= W - 1) & (screen[:, 1] >= 1) & (screen[:, 1] <= H - 1)

    colour = sample_image(image[None], screen[None, :, :2])[0]
    shading = sh_shading(cam_normals, sh)[0]
    weight = (visible & inside).float() * smoothstep(facing, 0.15, 0.5)
    luminance = shading.mean(-1)
    reference = luminance[weight > 0.5].median() if bool((weight > 0.5).any()) else luminance.new_tensor(1.0)
    weight = weight * smoothstep(luminance / reference.clamp(min=1e-6), 0.1, 0.25)
    albedo = colour / shading.clamp(min=1e-3)
    if image_srgb_max is not None:
        peak = sample_image(torch.as_tensor(np.asarray(image_srgb_max), dtype=torch.float32)[None, ..., None],
                            screen[None, :, :2])[0, :, 0]
        weight = weight * (1 - smoothstep(peak, 0.94, 0.99))
    weight = weight * (albedo.min(-1).values > 0).float()
    if skin_prior is not None:
        weight = weight * torch.as_tensor(np.asarray(skin_prior), dtype=torch.float32).reshape(-1)[texels.texel_index]
    if skin_model:
        core = None if face_core is None else torch.as_tensor(np.asarray(face_core)).reshape(-1)[texels.texel_index]
        weight = weight * skin_likelihood(albedo, weight, core)
    albedo = torch.where(weight[:, None] > 0, albedo.clamp(0, 2), torch.zeros_like(albedo))
    return Unwrapped(albedo=to_map(texels, albedo).numpy(), confidence=to_map(texels, weight[:, None])[0].numpy())


def skin_likelihood(albedo: torch.Tensor, weight: torch.Tensor, core: torch.Tensor | None = None) -> torch.Tensor:
    """Soft inlier weight of each texel's colour (M, 3): a skin-like hue (skin.skin_hue)
    times closeness to the photo's own skin colour (skin.skin_colour_weight) over the
    trusted texels of the face core (`core`, or all trusted texels)."""
    colours = albedo.detach().cpu().numpy()
    plausible = skin_hue(colours)
    trusted = (weight.detach().cpu().numpy() * plausible) > 0.5
    if core is not None and int((trusted & core.cpu().numpy()).sum()) >= MIN_REFERENCE:
        trusted = trusted & core.cpu().numpy()
    # De-lit albedo: brightness is informative (dark hair) and the spread tight, so both
    # the brightness floor and the tolerance are smaller than for a photo's shaded pixels.
    weight = skin_colour_weight(colours, trusted, brightness=0.05, tolerance=2.5)
    return torch.as_tensor(plausible * weight, device=albedo.device)
