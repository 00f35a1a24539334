"""Attribute interpolation, texture sampling, SH-shaded rendering, compositing and masks.

Images are channels-last, (B, H, W, C), like the rasteriser's fragments. UV coordinates
follow OBJ files: u to the right, v UP, origin at the bottom-left of the texture image
(v = 0 is the bottom row of the (Ht, Wt) array, v = 1 the top row).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .lighting import SHLight
from .rasterizer import Fragments, Topology, rasterize_screen, require_finite, topology


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit vertex normals: area-weighted sum of the adjacent face normals.

    Faces counter-clockwise seen from outside give outward normals; isolated vertices
    get a zero normal. Rotating the vertices rotates the normals (so normals of
    camera-space vertices are camera-space normals).
    """
    require_finite(verts=verts)
    B, V, _ = verts.shape
    return _vertex_normals_cn(verts, topology(faces, V, verts.device)).t().reshape(B, V, 3)


def _vertex_normals_cn(verts: torch.Tensor, topo: Topology) -> torch.Tensor:
    """(3, B*V) unit vertex normals, channel-major."""
    B, V, _ = verts.shape
    corner_ids = topo.batched(topo.corners, B, V).reshape(-1)
    coords = verts.reshape(B * V, 3).t()
    p0, p1, p2 = coords.index_select(1, corner_ids).view(3, 3, -1).unbind(1)  # (xyz, B*F) per corner
    (ax, ay, az), (bx, by, bz) = (p1 - p0).unbind(0), (p2 - p0).unbind(0)
    # Written out: torch.linalg.cross along dim 0 is slower on CPU.
    face_normals = torch.stack((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx))  # length 2 * area
    summed = coords.new_zeros(3, B * V).index_add(1, corner_ids, face_normals.repeat(1, 3))
    return _normalize_cn(summed)


def _normalize_cn(vectors: torch.Tensor) -> torch.Tensor:
    """Unit length along dim 0 of a (3, N) tensor; zero vectors stay zero."""
    # Not torch.linalg.vector_norm: along dim 0 it is ~7x slower on CPU.
    return vectors / (vectors * vectors).sum(0).clamp(min=1e-24).sqrt()


def interpolate_packed(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation at the foreground pixels -> (N, C) (a channel-major view).

    attributes: per vertex (B or 1, V, C), or per triangle corner (F, 3, C) / (B, F, 3, C)
    (e.g. UVs, which live on their own vertices in FLAME's layout). Hot path: no NaN check.
    """
    corner_values = _corner_values(fragments, attributes)  # (C, 3, N)
    return (corner_values * fragments.bary_cn.to(corner_values.dtype)).sum(1).t()


def interpolate(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation -> (B, H, W, C), zero on background."""
    require_finite(attributes=attributes)
    return fragments.to_image(interpolate_packed(fragments, attributes))


def _corner_values(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """(C, 3, N) attribute values at the corners of each pixel's visible triangle."""
    B, F_ = fragments.batch_size, fragments.faces.shape[0]
    if attributes.dim() == 3 and attributes.shape[1] == fragments.num_verts and attributes.shape[0] in (1, B):
        Ba, V, C = attributes.shape
        ids = fragments.corner_index if Ba > 1 else fragments.corner_verts
        table = attributes.reshape(Ba * V, C)
    else:
        if attributes.dim() == 3 and attributes.shape[:2] == (F_, 3):
            attributes = attributes[None]
        if not (attributes.dim() == 4 and attributes.shape[1:3] == (F_, 3) and attributes.shape[0] in (1, B)):
            raise ValueError(f"attributes must be per vertex (B, {fragments.num_verts}, C) or per corner "
                             f"({F_}, 3, C) / (B, {F_}, 3, C), got {tuple(attributes.shape)}")
        Ba, C = attributes.shape[0], attributes.shape[-1]
        ids = fragments.corner_slots if Ba == 1 else fragments.corner_slots + fragments.pixel_batch * (3 * F_)
        table = attributes.reshape(-1, C)
    # Gathering along dim 1 needs contiguous rows to be fast (no copy if already so).
    return table.t().contiguous().index_select(1, ids.reshape(-1)).view(C, 3, -1)


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """OBJ-style UV (v up, origin bottom-left) -> grid_sample coordinates in [-1, 1]."""
    return torch.stack((uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2), dim=-1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (B or 1, C, Ht, Wt) texture at (B, ..., 2) UVs -> (B, ..., C).

    UV (0, 0) is the bottom-left corner of the texture image, (1, 1) the top-right
    (texel centres at ((j + 0.5) / Wt, 1 - (i + 0.5) / Ht)); outside [0, 1] the border
    texels repeat.
    """
    _check_texture(texture)
    require_finite(texture=texture, uv=uv)
    B = uv.shape[0]
    grid = uv_to_grid(uv).reshape(B, 1, -1, 2).to(texture.dtype)
    texture = texture.expand(B, -1, -1, -1) if texture.shape[0] == 1 else texture
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2).reshape(*uv.shape[:-1], texture.shape[1])


def sample_texture_packed(texture: torch.Tensor, uv: torch.Tensor, pixels_per_image: list[int]) -> torch.Tensor:
    """Texture lookup (N, C) of packed (N, 2) UVs whose batch segments have the given lengths."""
    _check_texture(texture)
    if texture.shape[0] == 1:
        return _sample_cn(texture, uv).t()
    parts = torch.split(uv, pixels_per_image)
    return torch.cat([_sample_cn(texture[b:b + 1], part) for b, part in enumerate(parts)], dim=1).t()


def _sample_cn(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(1, C, Ht, Wt) texture at (N, 2) UVs -> (C, N)."""
    grid = uv_to_grid(uv).to(texture.dtype).view(1, 1, -1, 2)
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(texture.shape[1], -1)


def sample_image(image: torch.Tensor, xy: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear lookup of a (B, H, W, C) image at (B, N, 2) screen positions in pixels -> (B, N, C).

    Uses the screen convention (pixel (i, j) centred at (j + 0.5, i + 0.5)); positions
    outside the image get zeros, or the nearest edge pixel with padding="border".
    """
    H, W = image.shape[1:3]
    grid = torch.stack((xy[..., 0] * (2 / W) - 1, xy[..., 1] * (2 / H) - 1), dim=-1)
    out = F.grid_sample(image.permute(0, 3, 1, 2), grid[:, None].to(image.dtype), mode="bilinear",
                        padding_mode=padding, align_corners=False)
    return out[:, :, 0].transpose(1, 2)


@dataclass(eq=False)
class Rendering:
    """Output of `render_rgb`. Packed (N, C) per foreground pixel; images built on demand."""

    fragments: Fragments
    pixel_albedo: torch.Tensor  # (N, 3) texture colour
    pixel_shading: torch.Tensor  # (N, 3) SH shading factor
    pixel_normals: torch.Tensor  # (N, 3) unit camera-space normals
    pixel_uv: torch.Tensor  # (N, 2)
    screen_verts: torch.Tensor  # (B, V, 3) projected vertices (for the soft mask)

    @cached_property
    def pixel_rgb(self) -> torch.Tensor:
        return self.pixel_albedo * self.pixel_shading

    @cached_property
    def image(self) -> torch.Tensor:
        """(B, H, W, 3) shaded colour, zero on background."""
        return self.fragments.to_image(self.pixel_rgb)

    @cached_property
    def mask(self) -> torch.Tensor:
        """(B, H, W, 1) float foreground mask (1 on the mesh, 0 elsewhere)."""
        return self.fragments.mask[..., None].to(self.pixel_rgb.dtype)

    def soft_mask(self, sigma: float = 0.5) -> torch.Tensor:
        """(B, H, W, 1) mask with differentiable, anti-aliased silhouette edges (see `soft_mask`)."""
        return soft_mask(self.fragments, self.screen_verts, sigma)

    @property
    def albedo(self) -> torch.Tensor:
        return self.fragments.to_image(self.pixel_albedo)

    @property
    def shading(self) -> torch.Tensor:
        return self.fragments.to_image(self.pixel_shading)

    @property
    def normals(self) -> torch.Tensor:
        return self.fragments.to_image(self.pixel_normals)

    @property
    def uv(self) -> torch.Tensor:
        return self.fragments.to_image(self.pixel_uv)


def render_rgb(camera, verts: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor, texture: torch.Tensor,
               light, settings, *, visibility: Fragments | None = None) -> Rendering:
    """Render a textured, SH-lit mesh: colour = texture(uv) * light.diffuse(normal).

    verts: (B, V, 3) world; faces: (F, 3); face_uvs: (F, 3, 2) per-corner UVs
    (= uv_coords[uv_faces]); texture: (B or 1, 3, Ht, Wt); light: an SHLight or its
    (B or 1, 9, 3) coefficients; settings: RasterizationSettings or an (H, W) size.
    visibility: `rendering.fragments` of an earlier call to reuse its face ids (only the
    barycentrics are recomputed; call without it every few steps to refresh visibility).
    """
    light = SHLight.of(light)
    require_finite(face_uvs=face_uvs, texture=texture, sh=light.coefficients)  # verts: by the camera
    topo = topology(faces, verts.shape[1], verts.device)
    verts_cam = camera.world_to_camera(verts)
    screen = camera.project(verts_cam)
    fragments = rasterize_screen(camera, screen, faces, settings, visibility=visibility)
    # Normals of the camera-space mesh are camera-space normals.
    normals = _vertex_normals_cn(verts_cam, topo).t().view(verts.shape)
    pixel_normals = _normalize_cn(interpolate_packed(fragments, normals).t()).t()
    pixel_uv = interpolate_packed(fragments, face_uvs.to(verts.dtype))
    per_image = fragments.pixels_per_image
    return Rendering(
        fragments=fragments,
        pixel_albedo=sample_texture_packed(texture, pixel_uv, per_image),
        pixel_shading=light.diffuse_packed(pixel_normals, per_image),
        pixel_normals=pixel_normals,
        pixel_uv=pixel_uv,
        screen_verts=screen,
    )


def composite(render: torch.Tensor, mask: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """render * mask + photo * (1 - mask); (B, H, W, C) images, (B, H, W, 1) mask."""
    return render * mask + photo * (1 - mask)


def face_region_mask(fragments: Fragments, face_uvs: torch.Tensor, uv_mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 1) mask: a (1 or B, 1, Ht, Wt) UV-space mask image sampled at each pixel's UV.

    Zero on background. Bilinear, so values are fractional along the mask's edges.
    """
    uv = interpolate_packed(fragments, face_uvs)
    return fragments.to_image(sample_texture_packed(uv_mask.to(uv.dtype), uv, fragments.pixels_per_image))


def soft_mask(fragments: Fragments, screen_verts: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """(B, H, W, 1) foreground mask whose silhouette band is soft and differentiable.

    The hard mask has no gradient w.r.t. where the silhouette lies. Here the pixels on
    either side of it (foreground pixels with a background 4-neighbour and background
    pixels with a foreground one) get alpha = sigmoid(d / sigma), d = signed distance in
    pixels from the pixel centre to the nearest edge line of the (neighbouring) visible
    triangle, positive inside. Moving a silhouette edge outward raises the mask's sum, so
    mask losses pull the outline toward the target. Elsewhere the mask is exactly 0 or 1.
    """
    B, H, W = fragments.batch_size, *fragments.image_size
    ids = fragments.face_ids
    padded = F.pad(ids, (1, 1, 1, 1), value=-1)
    neighbours = torch.stack((padded[:, 1:-1, :-2], padded[:, 1:-1, 2:], padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]))
    foreground = ids >= 0
    edge_face = torch.where(foreground, ids, neighbours.amax(0))  # background: a foreground neighbour's face
    band = torch.where(foreground, (neighbours < 0).any(0), edge_face >= 0)
    index = torch.nonzero(band.reshape(-1)).squeeze(1)
    mask = foreground.reshape(-1, 1).to(screen_verts.dtype)
    if index.numel() == 0:
        return mask.view(B, H, W, 1)

    face = edge_face.reshape(-1)[index]
    batch = torch.div(index, H * W, rounding_mode="floor")
    corners = screen_verts[batch[:, None], fragments.faces[face], :2]  # (n, 3, 2)
    row = torch.div(index, W, rounding_mode="floor") % H
    centre = torch.stack((index % W, row), -1).to(corners.dtype)[:, None] + 0.5
    start, end = corners.roll(-1, 1), corners.roll(-2, 1)  # edge k: corner k+1 -> k+2
    edge, to_centre = end - start, centre - start
    cross = edge[..., 0] * to_centre[..., 1] - edge[..., 1] * to_centre[..., 0]
    orientation = torch.sign(_twice_area(corners))[:, None]  # inside: cross * orientation >= 0
    distance = (cross * orientation / edge.norm(dim=-1).clamp(min=1e-12)).amin(-1)
    alpha = torch.sigmoid(distance / sigma)
    return mask.index_put((index,), alpha[:, None]).view(B, H, W, 1)


def _twice_area(corners: torch.Tensor) -> torch.Tensor:
    """Signed twice-area of (n, 3, 2) screen triangles."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def _check_texture(texture: torch.Tensor) -> None:
    if not torch.is_tensor(texture) or texture.dim() != 4:
        raise ValueError(f"texture must have shape (B, C, Ht, Wt), got {tuple(getattr(texture, 'shape', ()))}")
