"""Differentiable mesh renderer in pure PyTorch (no pytorch3d): cameras, a hard z-buffer
rasteriser with differentiable barycentrics, SH lighting, texture sampling, compositing
and UV-space rasterisation. Conventions and formulas: the README's renderer section."""

from .cameras import OrthographicCamera, PinholeCamera
from .lighting import SH_CONSTANTS, SHLight, ambient_light_sh, directional_light_sh, sh_basis, sh_shading
from .rasterizer import Fragments, RasterizationSettings, rasterize, rasterize_mesh, rasterize_screen, refresh_bary
from .shading import (
    Rendering,
    composite,
    face_region_mask,
    interpolate,
    interpolate_packed,
    render_rgb,
    sample_image,
    sample_texture,
    soft_mask,
    vertex_normals,
)
from .uv_raster import rasterize_uv, texel_values, texel_visibility, texels_to_texture, unwrap_image, view_cosine

__all__ = [
    "Fragments", "OrthographicCamera", "PinholeCamera", "RasterizationSettings", "Rendering", "SH_CONSTANTS",
    "SHLight", "ambient_light_sh",
    "composite", "directional_light_sh", "face_region_mask", "interpolate", "interpolate_packed",
    "rasterize", "rasterize_mesh", "rasterize_screen", "rasterize_uv", "refresh_bary", "render_rgb",
    "sample_image", "sample_texture", "sh_basis", "sh_shading", "soft_mask", "texel_values", "texel_visibility",
    "texels_to_texture", "unwrap_image", "vertex_normals", "view_cosine",
]
