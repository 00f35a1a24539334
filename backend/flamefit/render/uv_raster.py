"""Rasterisation in UV space: which triangle covers each texel, and where.

The texture stage and the texture-space build use it to unwrap photo colours into the
UV layout: texel -> surface point (barycentric interpolation of mesh positions/normals)
-> camera projection -> visibility test against the image z-buffer (`texel_visibility`,
the one such test; `rasterize_box`: a z-buffer over the head's box only) -> photo
colour, weighted by the viewing angle. `TexelMap` /
`texel_map(model, size)`: which triangle and barycentrics cover each texel of a head
model's layout; `mirror_texels`: each texel's mirror texel (x -> -x on the template),
for filling texels seen poorly from the other side of the face.

UV convention (OBJ): u right, v up, origin at the bottom-left of the texture image. Texel
(i, j) of an (Ht, Wt) texture has its centre at u = (j + 0.5) / Wt, v = 1 - (i + 0.5) / Ht.
`uv_faces` must list the triangles in the same order as the mesh `faces` (FLAME's `ft`
and `f` do), so a UV face id is also a mesh face id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.derived import derived
from .cameras import PinholeCamera
from .rasterizer import Fragments, rasterize, rasterize_mesh, require_finite, topology
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


def texel_visibility(texel_screen: torch.Tensor, image_fragments: Fragments, depth_tolerance=5e-3, *,
                     texel_faces: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) bool: the texel is the surface the camera sees at the pixel it projects to.

    texel_screen: (B, N, 3) screen (x, y, depth) of the texel surface points, from the
    camera that produced `image_fragments` (whose rasterisation settings, e.g. culling
    and resolution, are the caller's choice). Visible: inside the image, and at most
    `depth_tolerance` (metres; a number or (B, N)) behind the z-buffer there (a
    background pixel, e.g. at a silhouette edge, hides nothing); or, given texel_faces
    ((N,) the texels' triangles), the triangle seen there is the texel's own or shares a
    vertex with it (thin parts seen edge-on).
    """
    H, W = image_fragments.image_size
    x, y, depth = texel_screen.detach().unbind(-1)
    col, row = torch.floor(x), torch.floor(y)
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    batch = torch.arange(texel_screen.shape[0], device=texel_screen.device)[:, None]
    flat = (batch * H + row.clamp(0, H - 1).long()) * W + col.clamp(0, W - 1).long()
    seen = image_fragments.face_ids.reshape(-1)[flat]
    zbuf = torch.where(seen >= 0, image_fragments.depth.detach().reshape(-1)[flat], torch.full_like(depth, float("inf")))
    visible = depth <= zbuf + depth_tolerance
    if texel_faces is not None:
        faces = image_fragments.faces
        own = faces[texel_faces.to(seen.device)].expand(*seen.shape, 3)
        shared = (own[..., :, None] == faces[seen.clamp(min=0)][..., None, :]).flatten(-2).any(-1)
        visible |= shared & (seen >= 0)
    return inside & visible


def rasterize_box(camera, verts: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int],
                  max_size: int) -> tuple[Fragments, PinholeCamera]:
    """The mesh (1, V, 3) rasterised over its bounding box in the pinhole camera's (H, W)
    image, at most `max_size` pixels a side (a visibility test needs no photo-sized
    z-buffer). Returns the fragments and the camera whose pixels they are (the box's,
    scaled), to project the points that `texel_visibility` tests against them."""
    H, W = image_size
    screen = camera.transform_points(verts)[0]
    lo = screen[:, :2].min(0).values.floor().clamp(min=0)
    hi = torch.minimum(screen[:, :2].max(0).values.ceil(), screen.new_tensor([W, H]))
    box = (hi - lo).clamp(min=1)
    scale = min(1.0, max_size / float(box.max()))
    size = (max(1, int(np.ceil(float(box[1]) * scale))), max(1, int(np.ceil(float(box[0]) * scale))))
    # x' = (x - lo) * scale
    crop = PinholeCamera(camera.focal * scale, (camera.principal - lo) * scale, camera.R, camera.t, znear=camera.znear)
    return rasterize_mesh(crop, verts, faces, size), crop


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


# ----------------------------------------------------------------------------- head-model texel maps


@dataclass
class TexelMap:
    size: int
    texel_index: torch.Tensor  # (N,) flat index i * T + j of each covered texel
    face: torch.Tensor  # (N,) triangle
    bary: torch.Tensor  # (N, 3)
    mask: np.ndarray  # (T, T) bool, covered texels

    def points(self, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(N, 3) surface points of the texels on (1, V, 3) vertices."""
        corners = faces[self.face]  # (N, 3); summed per corner: no (N, 3, 3) temporary
        return sum(verts[0][corners[:, k]] * self.bary[:, k:k + 1] for k in range(3))

    def to(self, device) -> "TexelMap":
        return TexelMap(self.size, self.texel_index.to(device), self.face.to(device), self.bary.to(device), self.mask)

    def on_map(self, index: torch.Tensor) -> np.ndarray:
        """(size * size,) the same texel-to-texel index (N,) into the texel list (e.g.
        `mirror_texels`), between flat texels of whole maps; -1 where none or uncovered."""
        index = index.cpu().numpy()
        flat = self.texel_index.cpu().numpy()
        out = np.full(self.size * self.size, -1, np.int64)
        out[flat[index >= 0]] = flat[index[index >= 0]]
        return out


def texel_map(model, size: int, device) -> TexelMap:
    """Which triangle covers each texel of a size x size texture of the model's UV layout
    (outer surfaces win where charts overlap); built on the CPU once per model and size
    (models/derived.py: in memory, and on disk with a cache folder)."""
    cpu = derived("texels", model, (size,), lambda: _texel_map(model, size, "cpu"))
    if torch.device(device).type == "cpu":
        return cpu
    return derived("texels-on", model, (size, str(device)), lambda: cpu.to(device), disk=False)


def _texel_map(model, size: int, device) -> TexelMap:
    uv = torch.tensor(model.uv_coords, dtype=torch.float32, device=device)
    radius = np.linalg.norm(model.v_template[:, [0, 2]], axis=1)
    # Priority per uv vertex: minus the radius of a model vertex using it (outer wins).
    priority = np.zeros(len(model.uv_coords), dtype=np.float32)
    priority[model.uv_faces.reshape(-1)] = -radius[model.faces.reshape(-1)]
    uv_faces = torch.tensor(model.uv_faces, device=device)
    frags = rasterize_uv(uv, uv_faces, (size, size), priority=torch.as_tensor(priority, device=device) + 10.0)
    bary = frags.pixel_bary.clamp(0, 1)
    bary = bary / bary.sum(-1, keepdim=True).clamp(min=1e-8)
    mask = np.zeros(size * size, dtype=bool)
    mask[frags.pixel_index.cpu().numpy()] = True
    return TexelMap(size, frags.pixel_index, frags.pixel_face, bary.detach(), mask.reshape(size, size))


def gutter_texels(texels: TexelMap, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(gutter, source): the flat indices of the uncovered texels within `margin` texels of
    the layout's charts, and of the covered texel nearest each (what bilinear lookups at a
    chart's border read there, instead of black)."""
    import cv2  # its distance transform: scipy.ndimage costs ~0.15 s to import per fit

    T = texels.size
    covered = texels.mask.reshape(-1)
    dist, labels = cv2.distanceTransformWithLabels((~covered).reshape(T, T).astype(np.uint8), cv2.DIST_L2, 5,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    dist, labels = dist.reshape(-1), labels.reshape(-1)
    source = np.zeros(labels.max() + 1, np.int64)
    source[labels[covered]] = np.nonzero(covered)[0]  # each covered texel is its own label
    gutter = np.nonzero((dist > 0) & (dist <= margin))[0]
    return gutter, source[labels[gutter]]


MIRROR_RESOLUTION = 256  # the symmetry map is found at most at this texture size, then looked up


def mirror_texels(model, texels: TexelMap, max_distance: float = 0.004) -> torch.Tensor:
    """(N,) index into the texel list of each texel's mirror image (-1: none); cached.

    The mirror point (x -> -x on the template) of every texel of a coarse map
    (<= MIRROR_RESOLUTION) is found with a k-d tree; a texel of the full map takes the
    mirror UV of its coarse texel (an error below one coarse texel).
    """
    return derived("mirror", model, (texels.size, max_distance),
                   lambda: _mirror_texels(model, texels, max_distance)).to(texels.face.device)


def _mirror_texels(model, texels: TexelMap, max_distance: float) -> torch.Tensor:
    from scipy.spatial import cKDTree

    T = texels.size
    M = min(T, MIRROR_RESOLUTION)
    coarse = texels if M == T else texel_map(model, M, "cpu")
    verts = torch.tensor(model.v_template, dtype=torch.float32)
    corners = verts[torch.tensor(model.faces)[coarse.face.cpu()]]
    pts = (corners * coarse.bary.cpu()[:, :, None]).sum(1).numpy()
    distance, nearest = cKDTree(pts).query(pts * np.array([-1.0, 1.0, 1.0]), k=1, distance_upper_bound=max_distance)
    found = np.isfinite(distance)
    index = coarse.texel_index.cpu().numpy()
    # Mirror texel (row, col) per coarse texel, as a (M, M) lookup; -1 where none.
    lookup = np.full((M * M, 2), -1.0)
    target = index[np.where(found, nearest, 0)]
    lookup[index[found]] = np.stack([target[found] // M, target[found] % M], 1)
    lookup = lookup.reshape(M, M, 2)
    fine = texels.texel_index.cpu().numpy()
    row, col = fine // T, fine % T
    mirror_rc = lookup[row * M // T, col * M // T]  # coarse mirror (row, col)
    ok = mirror_rc[:, 0] >= 0
    scale = T / M
    # The centre of the fine texel's offset within its coarse texel, mirrored in u.
    off_r = (row % scale) if scale > 1 else 0
    off_c = (scale - 1 - col % scale) if scale > 1 else 0
    mr = np.clip((mirror_rc[:, 0] * scale + off_r).astype(np.int64), 0, T - 1)
    mc = np.clip((mirror_rc[:, 1] * scale + off_c).astype(np.int64), 0, T - 1)
    position = np.full(T * T, -1, dtype=np.int64)
    position[fine] = np.arange(len(fine))
    result = np.where(ok, position[mr * T + mc], -1)
    return torch.as_tensor(result, dtype=torch.int64)
