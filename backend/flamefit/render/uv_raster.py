"""Rasterisation in UV space: which triangle covers each texel, and where.

The texture stage uses it to unwrap photo colours into the UV layout: texel -> surface
point (barycentric interpolation of mesh positions/normals) -> camera projection ->
visibility test against the image z-buffer -> photo colour, weighted by the viewing angle.

UV convention (OBJ): u right, v up, origin at the bottom-left of the texture image. Texel
(i, j) of an (Ht, Wt) texture has its centre at u = (j + 0.5) / Wt, v = 1 - (i + 0.5) / Ht.
`uv_faces` must list the triangles in the same order as the mesh `faces` (FLAME's `ft`
and `f` do), so a UV face id is also a mesh face id.
"""

from __future__ import annotations

import torch

from .rasterizer import Fragments, rasterize, require_finite, topology
from .shading import sample_image, vertex_normals


def rasterize_uv(uv_coords: torch.Tensor, uv_faces: torch.Tensor, tex_size: tuple[int, int],
                 priority: torch.Tensor | None = None) -> Fragments:
    """UV fragments: per texel centre the covering face id (-1: none) and barycentrics.

    Each texel is covered at most once: where UV triangles overlap, the one with the
    lowest `priority` (optional, per UV vertex, e.g. minus the distance from the head's
    axis so that outer surfaces own shared texels) wins, then the lowest face id.
    Fragments of batch size 1, with `image_size` = tex_size and barycentrics that are
    affine in UV.
    """
    if not torch.is_tensor(uv_coords) or uv_coords.dim() != 2 or uv_coords.shape[1] != 2:
        raise ValueError(f"uv_coords must have shape (T, 2), got {tuple(getattr(uv_coords, 'shape', ()))}")
    require_finite(uv_coords=uv_coords)
    Ht, Wt = tex_size
    coords = uv_coords.to(torch.float64 if uv_coords.dtype == torch.float64 else torch.float32)
    # Priority is the z-buffer's depth; its tie-break (lowest face id) makes coverage unique.
    depth = torch.zeros_like(coords[:, 0]) if priority is None else priority.to(coords)
    texel_xy = torch.stack((coords[:, 0] * Wt, (1 - coords[:, 1]) * Ht, depth), dim=-1)
    return rasterize(texel_xy[None], uv_faces, (Ht, Wt))


def texel_values(uv_fragments: Fragments, values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Interpolate per mesh-vertex values (B, V, C) at the covered texels -> (B, N, C).

    faces: the mesh's (F, 3) faces (same order as the uv faces). N = covered texels, in
    `uv_fragments.pixel_index` order.
    """
    B, V, C = values.shape
    corners = topology(faces, V, values.device).corners.index_select(1, uv_fragments.pixel_face)  # (3, N)
    gathered = values.index_select(1, corners.reshape(-1)).view(B, 3, -1, C)
    weights = uv_fragments.bary_cn.to(values.dtype)[None, :, :, None]
    return (gathered * weights).sum(1)


def texels_to_texture(uv_fragments: Fragments, values: torch.Tensor, background: float = 0.0) -> torch.Tensor:
    """(B, N, C) per covered texel -> (B, C, Ht, Wt) texture image; `background` elsewhere."""
    B, _, C = values.shape
    Ht, Wt = uv_fragments.image_size
    out = values.new_full((B, C, Ht * Wt), background)
    out = out.index_copy(2, uv_fragments.pixel_index, values.transpose(1, 2))
    return out.view(B, C, Ht, Wt)


def texel_visibility(texel_screen: torch.Tensor, image_fragments: Fragments,
                     depth_tolerance: float = 5e-3) -> torch.Tensor:
    """(B, N) bool: the texel projects into the image onto a foreground pixel whose
    z-buffer depth is within `depth_tolerance` (same units as depth, metres) of its own.

    texel_screen: (B, N, 3) screen (x, y, depth) of the texel surface points, from the
    camera that produced `image_fragments`. The pixel containing the projection is used.
    """
    H, W = image_fragments.image_size
    x, y, depth = texel_screen.detach().unbind(-1)
    col, row = torch.floor(x), torch.floor(y)
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    batch = torch.arange(texel_screen.shape[0], device=texel_screen.device)[:, None]
    flat = (batch * H + row.clamp(0, H - 1).long()) * W + col.clamp(0, W - 1).long()
    face_ids = image_fragments.face_ids.reshape(-1)[flat]
    zbuf = image_fragments.depth.detach().reshape(-1)[flat]
    return inside & (face_ids >= 0) & ((depth - zbuf).abs() <= depth_tolerance)


def view_cosine(camera, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(B, N) cosine between unit world normals and the direction to the camera
    (negative: facing away)."""
    points_cam = camera.world_to_camera(points)
    normals_cam = torch.nn.functional.normalize(camera.rotate_to_camera(normals), dim=-1)
    return (normals_cam * camera.directions_to_camera(points_cam)).sum(-1)


def unwrap_image(camera, verts: torch.Tensor, faces: torch.Tensor, uv_fragments: Fragments,
                 image: torch.Tensor, image_fragments: Fragments, depth_tolerance: float = 5e-3):
    """Photo colours in UV space.

    verts: (B, V, 3) world; image: (B, H, W, C) photo, aligned with `image_fragments`
    (the rasterisation of the same mesh with the same camera).
    Returns (texture (B, C, Ht, Wt), weight (B, 1, Ht, Wt)): weight = visible * max(0, cos
    of the viewing angle), zero on texels no triangle covers.
    """
    positions = texel_values(uv_fragments, verts, faces)
    normals = texel_values(uv_fragments, vertex_normals(verts, faces), faces)
    screen = camera.transform_points(positions)
    visible = texel_visibility(screen, image_fragments, depth_tolerance)
    weight = visible * view_cosine(camera, positions, normals).clamp(min=0)
    colours = sample_image(image, screen[..., :2])
    return texels_to_texture(uv_fragments, colours), texels_to_texture(uv_fragments, weight[..., None])
