"""Hard z-buffer rasteriser with differentiable barycentrics, in pure PyTorch.

Two stages, like pytorch3d's hard rasteriser:

1. Visibility (no autograd, discrete, vectorised, no Python loop over triangles or
   pixels): triangles are expanded into the pixel rows of their bounding boxes, each row
   into the exact run of pixel centres inside the triangle (scanline spans), and a
   z-buffer keeps the nearest candidate per pixel with one `scatter_reduce(amin)` on an
   int64 key = (depth bits << 32) | face id. Equal depths go to the lowest face id, so
   the result is deterministic and does not depend on thread scheduling.
2. Barycentrics (autograd): for the visible face of each foreground pixel the barycentric
   coordinates of the pixel centre are recomputed from the gathered screen vertices, so
   gradients flow to vertex positions while face ids stay fixed. `refresh_bary` repeats
   only this stage, reusing the visibility of an earlier call.

Screen space: pixels, x right, y down, pixel (i, j) centred at (j + 0.5, i + 0.5);
depth = -Z_cam, smaller = closer.

Layout: everything downstream works on the packed list of the N foreground pixels.
Packed arrays are shaped (N, C) but stored channel-major, i.e. they are transposed views
of contiguous (C, N) tensors, because per-channel rows make the elementwise work several
times faster on CPU; `.t()` gives the contiguous (C, N) tensor back for free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import torch

_NO_HIT = torch.iinfo(torch.int64).max
_FACE_BITS = 0xFFFFFFFF
# Triangles with |2 * area| below this (px^2) have no interior worth sampling.
_MIN_AREA2 = 1e-8
# Most candidate pixels processed at once: bounds memory for huge triangles.
_CHUNK_CANDIDATES = 1 << 21


def require_finite(**named) -> None:
    """Raise ValueError naming every floating tensor argument that holds NaN or inf."""
    tensors = {k: v for k, v in named.items() if torch.is_tensor(v) and v.is_floating_point()}
    if not tensors:
        return
    # A sum is non-finite iff an element is (or the sum overflows, never for sane float32/64
    # inputs): one cheap pass per tensor. Half precision would overflow: test elements.
    flags = torch.stack([~torch.isfinite(v.detach().sum()) if v.element_size() >= 4 else ~torch.isfinite(v).all()
                         for v in tensors.values()])
    if bool(flags.any()):  # one device sync for all arguments
        bad = [k for k, flag in zip(tensors, flags.tolist()) if flag]
        raise ValueError(f"non-finite values (NaN or inf) in argument(s): {', '.join(bad)}")


def check_faces(faces, num_verts: int, name: str = "faces") -> torch.Tensor:
    """Validate an (F, 3) index tensor and return it as int64."""
    faces = torch.as_tensor(faces)
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name} must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {faces.dtype}")
    faces = faces.long()
    if faces.numel() and bool(((faces < 0) | (faces >= num_verts)).any()):
        raise ValueError(f"{name} holds vertex indices outside [0, {num_verts})")
    return faces


class Topology:
    """Index tensors derived from a face list (validated int64 (F, 3) on one device)."""

    def __init__(self, faces: torch.Tensor):
        self.faces = faces
        self.corners = faces.t().contiguous()  # (3, F): corner k of every face
        # Edge k joins corners k+1 -> k+2; its end points in canonical order (lower id first).
        start, end = self.corners.roll(-1, 0), self.corners.roll(-2, 0)
        self.edge_first, self.edge_second = torch.minimum(start, end), torch.maximum(start, end)
        self.edge_direction = torch.sign(end - start).float()  # +1: corner order is canonical

    def batched(self, ids: torch.Tensor, batch_size: int, num_verts: int) -> torch.Tensor:
        """(3, F) vertex ids -> (3, B*F) ids into the flattened (B*V) vertices."""
        if batch_size == 1:
            return ids
        offsets = num_verts * torch.arange(batch_size, device=ids.device)
        return (ids[:, None, :] + offsets[None, :, None]).reshape(3, -1)


_TOPOLOGIES: dict[int, tuple] = {}  # id(faces) -> (faces, version, device, Topology, max id)


def topology(faces, num_verts: int, device) -> Topology:
    """Validated Topology of `faces`, cached per faces tensor (pass the same int64 tensor
    every step to skip the validation and set-up)."""
    if torch.is_tensor(faces):
        hit = _TOPOLOGIES.get(id(faces))
        if hit is not None and hit[0] is faces and hit[1] == faces._version and hit[2] == torch.device(device):
            if hit[4] >= num_verts:
                raise ValueError(f"faces holds vertex indices outside [0, {num_verts})")
            return hit[3]
    checked = check_faces(faces, num_verts).to(device)
    topo = Topology(checked)
    if torch.is_tensor(faces):
        if len(_TOPOLOGIES) >= 8:
            _TOPOLOGIES.pop(next(iter(_TOPOLOGIES)))
        max_id = int(checked.max()) if checked.numel() else -1
        _TOPOLOGIES[id(faces)] = (faces, faces._version, torch.device(device), topo, max_id)
    return topo


@dataclass(frozen=True)
class RasterizationSettings:
    """How a mesh is rasterised (as pytorch3d's): the image size (H, W) and the culling.

    The camera says whether interpolation is perspective-correct and where its near
    plane is (camera.znear); `znear` here overrides it. Entry points that take settings
    also take a plain (H, W) size, meaning the defaults.
    """

    image_size: tuple[int, int]
    cull_backfaces: bool = False  # drop triangles seen from behind (clockwise on screen)
    znear: float | None = None

    @classmethod
    def of(cls, settings) -> "RasterizationSettings":
        return settings if isinstance(settings, cls) else cls(image_size=_check_image_size(settings))


_CACHED = ("pixel_batch", "pixel_centres", "corner_verts", "corner_slots", "corner_index", "face_ids")


@dataclass(frozen=True, eq=False)
class Fragments:
    """Rasteriser output, packed per foreground pixel and sorted by flat pixel index.
    Immutable (the discrete caches below are computed once); `detach()` and
    `refresh_bary` return new Fragments sharing the visibility.

    pixel_index: (N,) int64, flat index b * H * W + i * W + j of each foreground pixel
    pixel_face:  (N,) int64, index into `faces` of the visible triangle
    bary_cn:     (3, N) barycentrics of the pixel centres (perspective-correct for a
                 pinhole camera), differentiable w.r.t. the screen vertices
    pixel_depth: (N,) depth (-Z_cam) at the pixel centres, differentiable
    pixels_per_image: N split by batch element (pixel_index is batch-major)
    """

    image_size: tuple[int, int]
    batch_size: int
    num_verts: int
    topology: Topology
    perspective_correct: bool
    pixel_index: torch.Tensor
    pixel_face: torch.Tensor
    bary_cn: torch.Tensor
    pixel_depth: torch.Tensor
    pixels_per_image: list[int]

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 faces that were rasterised."""
        return self.topology.faces

    def _replace(self, **changes) -> "Fragments":
        new = dataclasses.replace(self, **changes)
        for name in _CACHED:  # same pixels, same faces: reuse the discrete caches
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def detach(self) -> "Fragments":
        """The same fragments without the autograd graph (barycentrics and depth)."""
        return self._replace(bary_cn=self.bary_cn.detach(), pixel_depth=self.pixel_depth.detach())

    @property
    def num_pixels(self) -> int:
        return self.batch_size * self.image_size[0] * self.image_size[1]

    @property
    def pixel_bary(self) -> torch.Tensor:
        """(N, 3) barycentrics (a view of bary_cn)."""
        return self.bary_cn.t()

    @cached_property
    def pixel_batch(self) -> torch.Tensor:
        """(N,) batch element of each foreground pixel."""
        if self.batch_size == 1:
            return torch.zeros_like(self.pixel_index)
        H, W = self.image_size
        return torch.div(self.pixel_index, H * W, rounding_mode="floor")

    @cached_property
    def pixel_centres(self) -> torch.Tensor:
        """(2, N) screen x and y of each foreground pixel centre."""
        H, W = self.image_size
        # Float arithmetic (exact below 2^24 pixels per image) is much faster than int64 div/mod.
        index = self.pixel_index if self.batch_size == 1 else self.pixel_index % (H * W)
        index = index.to(torch.float64 if H * W >= 1 << 24 else torch.float32)
        row = torch.floor((index + 0.5) / W)
        return torch.stack((index - row * W, row)).to(self.bary_cn.dtype) + 0.5

    @cached_property
    def corner_verts(self) -> torch.Tensor:
        """(3, N) vertex ids (into V) of the visible triangle's corners."""
        return torch.stack([corner.index_select(0, self.pixel_face) for corner in self.topology.corners])

    @cached_property
    def corner_slots(self) -> torch.Tensor:
        """(3, N) indices 3 * face + corner into per-corner (F * 3) attribute lists."""
        return self.pixel_face * 3 + torch.arange(3, device=self.pixel_face.device)[:, None]

    @cached_property
    def corner_index(self) -> torch.Tensor:
        """(3, N) corner vertex ids into the flattened (B * V) vertex list."""
        if self.batch_size == 1:
            return self.corner_verts
        return self.corner_verts + self.pixel_batch * self.num_verts

    def to_image(self, values: torch.Tensor, background: float = 0.0) -> torch.Tensor:
        """Scatter packed (N, C) values into a contiguous (B, H, W, C) image (differentiable)."""
        H, W = self.image_size
        out = values.new_full((self.num_pixels, values.shape[-1]), background)
        return out.index_copy(0, self.pixel_index, values).view(self.batch_size, H, W, -1)

    @cached_property
    def face_ids(self) -> torch.Tensor:
        """(B, H, W) int64 visible face per pixel, -1 on background."""
        H, W = self.image_size
        ids = torch.full((self.num_pixels,), -1, dtype=torch.int64, device=self.pixel_index.device)
        ids[self.pixel_index] = self.pixel_face
        return ids.view(self.batch_size, H, W)

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True on foreground."""
        return self.face_ids >= 0

    @property
    def bary(self) -> torch.Tensor:
        """(B, H, W, 3) barycentrics, zero on background."""
        return self.to_image(self.pixel_bary)

    @property
    def depth(self) -> torch.Tensor:
        """(B, H, W) depth, zero on background (see `mask`)."""
        return self.to_image(self.pixel_depth[:, None])[..., 0]


# ----------------------------------------------------------------------------- public API


def rasterize(
    screen_verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    *,
    perspective_correct: bool = False,
    znear: float | None = None,
    cull_backfaces: bool = False,
    face_ids: torch.Tensor | None = None,
) -> Fragments:
    """Rasterise (B, V, 3) screen vertices (x px, y px, depth) into Fragments.

    perspective_correct: interpolate as for a pinhole camera (1/depth is affine on the
        screen); also culls faces with a vertex at depth <= max(znear, 0).
    znear: cull every face with a vertex at depth <= znear (None: no depth culling
        unless perspective_correct). Pass `camera.znear`, or use `rasterize_mesh`.
    cull_backfaces: drop triangles that are clockwise on screen, i.e. seen from behind
        (faces are counter-clockwise seen from outside). Default: z-buffer only.
    face_ids: (B, H, W) visible face per pixel from an earlier call; skips the visibility
        stage and only recomputes the differentiable barycentrics.
    """
    H, W = _check_image_size(image_size)
    screen_verts = _check_screen_verts(screen_verts)
    topo = topology(faces, screen_verts.shape[1], screen_verts.device)
    faces = topo.faces
    B = screen_verts.shape[0]

    if face_ids is None:
        with torch.no_grad():
            zbuf = _zbuffer(screen_verts.detach(), topo, H, W, perspective_correct, znear, cull_backfaces)
        pixel_index = torch.nonzero(zbuf != _NO_HIT).squeeze(1)
        pixel_face = zbuf.index_select(0, pixel_index) & _FACE_BITS
    else:
        if tuple(face_ids.shape) != (B, H, W):
            raise ValueError(f"face_ids must have shape {(B, H, W)}, got {tuple(face_ids.shape)}")
        ids = face_ids.reshape(-1).to(screen_verts.device)
        if bool((ids >= faces.shape[0]).any()):
            raise ValueError("face_ids refer to faces that do not exist in `faces`")
        pixel_index = torch.nonzero(ids >= 0).squeeze(1)
        pixel_face = ids.index_select(0, pixel_index)

    if B == 1:
        per_image = [pixel_index.shape[0]]
    else:
        per_image = torch.bincount(torch.div(pixel_index, H * W, rounding_mode="floor"), minlength=B).tolist()
    frags = Fragments(
        image_size=(H, W), batch_size=B, num_verts=screen_verts.shape[1], topology=topo,
        perspective_correct=perspective_correct, pixel_index=pixel_index, pixel_face=pixel_face,
        bary_cn=screen_verts.new_zeros(3, 0), pixel_depth=screen_verts.new_zeros(0),
        pixels_per_image=per_image,
    )
    return refresh_bary(frags, screen_verts)


def refresh_bary(fragments: Fragments, screen_verts: torch.Tensor) -> Fragments:
    """Fragments with the same visibility and barycentrics/depth recomputed (autograd).

    The cheap path between visibility updates while vertices move a little. A pixel
    whose face has moved away gets barycentrics extrapolated linearly (outside [0, 1]);
    re-run `rasterize` every few steps.
    """
    screen_verts = _check_screen_verts(screen_verts)
    if tuple(screen_verts.shape[:2]) != (fragments.batch_size, fragments.num_verts):
        raise ValueError(f"screen_verts shape {tuple(screen_verts.shape)} does not match the fragments "
                         f"(B={fragments.batch_size}, V={fragments.num_verts})")
    bary_cn, pixel_depth = _barycentrics(fragments, screen_verts)
    return fragments._replace(bary_cn=bary_cn, pixel_depth=pixel_depth)


def rasterize_mesh(camera, verts: torch.Tensor, faces: torch.Tensor, settings, *,
                   visibility: Fragments | None = None) -> Fragments:
    """Project world vertices with `camera` and rasterise them.

    settings: RasterizationSettings, or an (H, W) size for the defaults.
    visibility: Fragments of an earlier call; if given, only barycentrics are recomputed.
    """
    return rasterize_screen(camera, camera.transform_points(verts), faces, settings, visibility=visibility)


def rasterize_screen(camera, screen: torch.Tensor, faces: torch.Tensor, settings, *,
                     visibility: Fragments | None = None) -> Fragments:
    """`rasterize_mesh` for vertices already projected with `camera` (screen space)."""
    if visibility is not None:
        return refresh_bary(visibility, screen)
    settings = RasterizationSettings.of(settings)
    return rasterize(screen, faces, settings.image_size, perspective_correct=camera.perspective_correct,
                     znear=camera.znear if settings.znear is None else settings.znear,
                     cull_backfaces=settings.cull_backfaces)


# ----------------------------------------------------------------------------- checks


def _check_image_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    H, W = (int(s) for s in image_size)
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {image_size}")
    return H, W


def _check_screen_verts(screen_verts: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(screen_verts) or screen_verts.dim() != 3 or screen_verts.shape[-1] != 3:
        shape = tuple(screen_verts.shape) if torch.is_tensor(screen_verts) else type(screen_verts)
        raise ValueError(f"screen_verts must be a (B, V, 3) tensor, got {shape}")
    if not screen_verts.is_floating_point():
        raise ValueError(f"screen_verts must be floating point, got {screen_verts.dtype}")
    require_finite(screen_verts=screen_verts)
    return screen_verts


# ----------------------------------------------------------------------------- barycentrics


def _barycentrics(frags: Fragments, screen_verts: torch.Tensor):
    """Differentiable (3, N) barycentrics and (N,) depth of the foreground pixel centres."""
    B, V, _ = screen_verts.shape
    coords = screen_verts.reshape(B * V, 3).t()
    corners = coords.index_select(1, frags.corner_index.reshape(-1)).view(3, 3, -1)  # [xyz, corner, N]
    centres = frags.pixel_centres.to(screen_verts.dtype)
    return _PixelBarycentrics.apply(corners, centres, frags.perspective_correct)


def _next(rows: torch.Tensor) -> torch.Tensor:
    """Rows k+1 (mod 3) of a (3, N) tensor (roll is much faster than fancy indexing)."""
    return rows.roll(-1, 0)


def _prev(rows: torch.Tensor) -> torch.Tensor:
    """Rows k-1 (mod 3) of a (3, N) tensor."""
    return rows.roll(1, 0)


class _PixelBarycentrics(torch.autograd.Function):
    """Barycentrics of pixel centres from gathered corners, with a hand-written backward.

    Same maths as autograd would differentiate, in a third of the tensor operations
    (this runs on every pixel of every step). Inputs: corners (3 [x, y, depth], 3, N),
    centres (2, N). Outputs: bary (3, N), depth (N,).

        w_k = cross(v_k+1 - p, v_k+2 - p)      (twice the area of the sub-triangle)
        b_k = w_k / sum(w)                     (screen-space barycentrics)
        perspective: t_k = b_k / z_k, S = sum(t), bary = t / S, depth = 1 / S
        otherwise:   bary = b, depth = sum(b * z)
    """

    @staticmethod
    def forward(ctx, corners, centres, perspective_correct):
        x, y, z = corners[0] - centres[0], corners[1] - centres[1], corners[2]
        w = _next(x) * _prev(y) - _next(y) * _prev(x)
        area = w.sum(0)
        area += area == 0  # a stale (cached) face may have collapsed: avoid 0/0
        b = w / area
        if perspective_correct:
            t = b / z.clamp(min=1e-12)
            inv_depth = t.sum(0)
            bary, depth = t / inv_depth, 1.0 / inv_depth
            ctx.save_for_backward(x, y, z, area, b, t, inv_depth, bary)
        else:
            bary, depth = b, (b * z).sum(0)
            ctx.save_for_backward(x, y, z, area, b)
        ctx.perspective_correct = perspective_correct
        return bary, depth

    @staticmethod
    def backward(ctx, grad_bary, grad_depth):
        if ctx.perspective_correct:
            x, y, z, area, b, t, inv_depth, bary = ctx.saved_tensors
            # bary = t / S and depth = 1 / S with S = sum(t).
            grad_t = (grad_bary - (grad_bary * bary).sum(0) - grad_depth / inv_depth) / inv_depth
            grad_b = grad_t / z
            grad_z = -grad_t * t / z
        else:
            x, y, z, area, b = ctx.saved_tensors
            grad_b = grad_bary + grad_depth * z
            grad_z = grad_depth * b
        grad_w = (grad_b - (grad_b * b).sum(0)) / area  # b = w / sum(w)
        # w_k = x_k+1 y_k-1 - y_k+1 x_k-1 (indices mod 3)
        grad_x = _prev(grad_w) * _next(y) - _next(grad_w) * _prev(y)
        grad_y = _next(grad_w) * _prev(x) - _prev(grad_w) * _next(x)
        return torch.stack((grad_x, grad_y, grad_z)), None, None


# ----------------------------------------------------------------------------- visibility
#
# Scanline spans: triangles -> pixel rows (one per row of the bounding box) -> the exact
# run of pixel centres inside the triangle on that row -> one z-buffer candidate per
# covered pixel. Each edge's crossing x(y) = xa + slope * (y - ya) is computed from the
# edge's two vertices in a canonical order (lower vertex id first), so two triangles
# sharing an edge get the bit-identical crossing; one uses it as a left bound, the other
# as a right bound, both inclusive, so no pixel centre on a shared edge is ever missed
# (the z-buffer resolves pixels claimed twice). Cost is proportional to the rows plus the
# covered pixels, not to the bounding-box area.


def _zbuffer(screen, topo: Topology, H, W, perspective_correct, znear, cull_backfaces) -> torch.Tensor:
    """(B*H*W,) int64 z-buffer keys, (depth bits << 32) | face id, _NO_HIT where empty."""
    B = screen.shape[0]
    zbuf = torch.full((B * H * W,), _NO_HIT, dtype=torch.int64, device=screen.device)
    if topo.faces.shape[0] == 0:
        return zbuf
    table = _triangle_table(screen, topo, H, W, perspective_correct, znear, cull_backfaces)
    if table is None:
        return zbuf
    floats, ints, box_area = table
    for tri in _chunks(box_area, _CHUNK_CANDIDATES):  # bounds memory for huge triangles
        spans = _row_spans(floats[:, tri], [i[tri] for i in ints], W)
        for run in _chunks(spans[0], _CHUNK_CANDIDATES):
            _splat_spans(zbuf, [s[..., run] for s in spans])
    return zbuf


# Rows of the per-triangle table (float32: gathers and row arithmetic are much faster).
_XA, _YA, _SLOPE = 0, 3, 6  # + edge k: crossing x(y) = xa + slope * (y - ya)
_LEFT, _RIGHT = 9, 12  # + edge k: 0 if edge k bounds the span on that side, else -_FAR / +_FAR
_FAR = 1e30
_PLANE = 15  # key0, x0, y0, a, b: depth key = key0 + a (x - x0) + b (y - y0)
_ROW0, _COL0, _COL1, _ROWS = 20, 21, 22, 23  # bounding box (pixel indices, clamped to the image)


def _triangle_table(screen, topo: Topology, H, W, perspective_correct, znear, cull_backfaces):
    """Per-triangle set-up, or None if no triangle is drawn.

    Returns (floats (24, B*F) float32, ints = (first pixel of the image, face id) each
    (B*F,) int64, box_area (B*F,) = candidate count bound, 0 for culled triangles).
    """
    B, V = screen.shape[:2]
    F = topo.faces.shape[0]
    corner_ids = topo.batched(topo.corners, B, V).reshape(-1)
    coords = screen.reshape(B * V, 3).t().float().contiguous()  # (3, B*V) rows: fast 1-D gathers
    x, y, z = coords.index_select(1, corner_ids).view(3, 3, -1)  # each (3 corners, B*F)
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])

    valid = area2.abs() > _MIN_AREA2
    near = max(0.0, znear if znear is not None else 0.0) if perspective_correct else znear
    if near is not None:
        valid &= z.amin(0) > near
    if cull_backfaces:
        valid &= area2 < 0  # image y points down: outward-CCW faces are clockwise on screen

    # Pixel centres inside the bounding box: j + 0.5 in [xmin, xmax], i + 0.5 in [ymin, ymax].
    lo = torch.stack((x.amin(0), y.amin(0))).clamp_(-1, max(H, W) + 1)
    hi = torch.stack((x.amax(0), y.amax(0))).clamp_(-1, max(H, W) + 1)
    limit = torch.tensor([[W - 1], [H - 1]], dtype=x.dtype, device=x.device)
    first = torch.ceil(lo - 0.5).clamp_(min=0)
    last = torch.minimum(torch.floor(hi - 0.5), limit)
    size = (last - first + 1).clamp_(min=0)
    rows = size[1] * valid
    box_area = (rows * size[0]).long()
    if not bool(box_area.any()):
        return None

    # Edge k joins corners s = k+1 and e = k+2. Its end points are read in canonical order
    # a -> b (lower vertex id first), so triangles sharing the edge compute bit-identical
    # crossings.
    id_a = topo.batched(topo.edge_first, B, V).reshape(-1)
    id_b = topo.batched(topo.edge_second, B, V).reshape(-1)
    xa, ya = coords[0].index_select(0, id_a).view(3, -1), coords[1].index_select(0, id_a).view(3, -1)
    xb, yb = coords[0].index_select(0, id_b).view(3, -1), coords[1].index_select(0, id_b).view(3, -1)
    rise = yb - ya
    slope = (xb - xa) / (rise + (rise == 0))  # horizontal edges bound no span: the box rows stop there
    # Inside is where orient * cross(e - s, p - s) >= 0 (y down): on a row, an edge rising
    # from s to e (times orient) keeps x >= crossing (left bound), a falling one keeps
    # x <= crossing (right bound). Other edges get an offset of -/+_FAR (cheaper than
    # torch.where or infinities on CPU).
    direction = topo.edge_direction.repeat(1, B)  # +1: s -> e is a -> b
    side = torch.sign(rise * direction * torch.sign(area2))
    left = (side + 1) * -_FAR  # side -1 (left bound): 0
    right = (1 - side) * _FAR  # side +1 (right bound): 0

    # Depth key: depth (orthographic) or -1/depth (perspective: affine on the screen), both
    # increasing with distance, shifted to >= 1 so that float bits sort like the values.
    key = -1.0 / z if perspective_correct else z
    key = key - torch.where(valid, key.amin(0), torch.inf).min() + 1.0
    dx1, dx2, dy1, dy2 = x[1] - x[0], x[2] - x[0], y[1] - y[0], y[2] - y[0]
    dk1, dk2 = key[1] - key[0], key[2] - key[0]
    plane = torch.stack((key[0], x[0], y[0], (dk1 * dy2 - dk2 * dy1) / area2, (dk2 * dx1 - dk1 * dx2) / area2))
    box = torch.stack((first[1], first[0], last[0], rows))

    floats = torch.cat((xa, ya, slope, left, right, plane, box))
    device = topo.faces.device
    image_start = torch.arange(B, device=device).repeat_interleave(F) * (H * W)
    face_id = torch.arange(F, device=device).repeat(B)
    return floats, (image_start, face_id), box_area


def _row_spans(floats, ints, W):
    """Pixel rows of the triangles -> (count, first pixel, face id, [depth key at the
    first pixel, depth-key step per pixel]) per row; count 0 where the row misses."""
    rows = floats[_ROWS].long()
    owner = _segment_ids(rows)
    t = floats.index_select(1, owner)
    first_row = (torch.cumsum(rows, 0) - rows).index_select(0, owner)
    row = t[_ROW0] + (torch.arange(owner.shape[0], device=owner.device) - first_row)
    py = row + 0.5

    crossing = t[_XA:_XA + 3] + t[_SLOPE:_SLOPE + 3] * (py - t[_YA:_YA + 3])  # (3 edges, R)
    left = (crossing + t[_LEFT:_LEFT + 3]).amax(0)
    right = (crossing + t[_RIGHT:_RIGHT + 3]).amin(0)
    col0 = torch.maximum(torch.ceil(left - 0.5), t[_COL0])  # inclusive: j + 0.5 >= left
    col1 = torch.minimum(torch.floor(right - 0.5), t[_COL1])  # inclusive: j + 0.5 <= right
    count = (col1 - col0 + 1).clamp(min=0).long()

    key0, x0, y0, slope_x, slope_y = t[_PLANE:_PLANE + 5]
    depth0 = key0 + slope_x * (col0 + 0.5 - x0) + slope_y * (py - y0)
    # 1-D gathers: index_select along dim 1 of int64 tensors is very slow on CPU.
    image_start, face_id = ints
    pixel0 = image_start.index_select(0, owner) + row.long() * W + col0.long()
    return count, pixel0, face_id.index_select(0, owner), torch.stack((depth0, slope_x))


def _segment_ids(counts: torch.Tensor) -> torch.Tensor:
    """[0] * counts[0] + [1] * counts[1] + ... (like repeat_interleave, faster on CPU)."""
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if ends.numel() else 0
    marks = torch.zeros(total + 1, dtype=torch.int64, device=counts.device)
    marks.index_add_(0, ends, torch.ones_like(ends))
    return torch.cumsum(marks[:-1], 0)


def _splat_spans(zbuf, spans) -> None:
    """Expand row spans into pixels and keep the nearest candidate per pixel."""
    count, pixel0, face, depth = spans
    owner = _segment_ids(count)
    local = torch.arange(owner.shape[0], device=owner.device) - (torch.cumsum(count, 0) - count).index_select(0, owner)
    depth0, step = depth.index_select(1, owner)
    depth_key = depth0 + step * local.float()
    key = (depth_key.view(torch.int32).long() << 32) | face.index_select(0, owner)
    zbuf.scatter_reduce_(0, pixel0.index_select(0, owner) + local, key, reduce="amin")


def _chunks(sizes: torch.Tensor, budget: int):
    """Consecutive slices of items whose sizes sum to at most ~budget (one item may exceed it)."""
    ends = torch.cumsum(sizes, 0)
    if ends.numel() == 0 or int(ends[-1]) <= budget:
        yield slice(0, sizes.shape[0])
        return
    group = torch.div(ends - 1, budget, rounding_mode="floor")
    bounds = torch.nonzero(torch.diff(group, prepend=group[:1] - 1)).squeeze(1).tolist()
    bounds.append(sizes.shape[0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield slice(lo, hi)
