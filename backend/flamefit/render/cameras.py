"""Batched, differentiable cameras mapping world points to screen (x, y, depth).

Frames (fixed project conventions):
- world: metres, Y up, the FLAME face looks toward +Z;
- camera: OpenGL/Blender, camera at the origin looking down -Z, +Y up, +X right;
- screen: pixels, x right, y DOWN, origin at the top-left image corner, pixel (i, j)
  has its centre at (j + 0.5, i + 0.5); depth = -Z_cam (smaller = closer).
"""

from __future__ import annotations

import torch

from .rasterizer import require_finite


def _batched(value, name: str, tail: tuple[int, ...]) -> torch.Tensor:
    value = torch.as_tensor(value)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if value.dim() == len(tail):  # one camera: add the batch axis
        value = value.unsqueeze(0)
    if tuple(value.shape[1:]) != tail:
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, tail))}), got {tuple(value.shape)}")
    return value


class _Camera:
    """Shared part: rigid transform X_cam = R @ X + t and batch bookkeeping."""

    perspective_correct = False  # barycentric interpolation in screen space is exact
    znear: float | None = None  # faces with a vertex at depth <= znear are culled

    def __init__(self, principal, R, t):
        self.principal = _batched(principal, "principal", (2,))
        self.R = _batched(R, "R", (3, 3))
        self.t = _batched(t, "t", (3,))

    def _check(self, named: dict) -> None:
        require_finite(**named)
        sizes = {v.shape[0] for v in named.values()} - {1}
        if len(sizes) > 1:
            raise ValueError(f"camera parameters have mismatched batch sizes: "
                             f"{ {k: v.shape[0] for k, v in named.items()} }")

    @property
    def batch_size(self) -> int:
        return max(self.principal.shape[0], self.R.shape[0], self.t.shape[0], self._own_batch())

    def _own_batch(self) -> int:
        return 1

    def world_to_camera(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world points -> (B, V, 3) camera-space points, X_cam = R @ X + t.

        The result is a view of a (B, 3, V) tensor: per-coordinate rows are faster downstream.
        """
        if not torch.is_tensor(verts) or verts.dim() != 3 or verts.shape[-1] != 3:
            raise ValueError(f"verts must have shape (B, V, 3), got {tuple(getattr(verts, 'shape', ()))}")
        require_finite(verts=verts)
        if self.batch_size not in (1, verts.shape[0]) and verts.shape[0] != 1:
            raise ValueError(f"verts batch {verts.shape[0]} does not match the camera batch {self.batch_size}")
        rows = torch.matmul(self.R.to(verts.dtype), verts.transpose(1, 2)) + self.t.to(verts.dtype)[:, :, None]
        return rows.transpose(1, 2)

    def transform_points(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world points -> (B, V, 3) screen (x px, y px, depth m)."""
        return self.project(self.world_to_camera(verts))

    def rotate_to_camera(self, directions: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world directions (e.g. normals) -> camera-space directions, R @ d."""
        return directions @ self.R.to(directions.dtype).transpose(1, 2)

    def to(self, device=None, dtype=None) -> "_Camera":
        """A copy with every parameter moved/cast (like Tensor.to)."""
        copy = object.__new__(type(self))
        copy.__dict__.update({k: (v.to(device=device, dtype=dtype) if torch.is_tensor(v) else v)
                              for k, v in self.__dict__.items()})
        return copy


class PinholeCamera(_Camera):
    """Perspective camera, intrinsics in pixels.

        X_cam = R @ X + t
        x = fx * X_cam.x / (-X_cam.z) + cx
        y = -fy * X_cam.y / (-X_cam.z) + cy        (image y points down)
        depth = -X_cam.z

    focal: (B,) or (B, 2) = (fx, fy); principal: (B, 2) = (cx, cy); R: (B, 3, 3); t: (B, 3).
    Points at depth <= znear get a clamped divisor (finite, no garbage); the rasteriser
    culls every face touching one, given this camera's `znear`.
    """

    perspective_correct = True

    def __init__(self, focal, principal, R, t, znear: float = 1e-3):
        super().__init__(principal, R, t)
        focal = torch.as_tensor(focal)
        if not focal.is_floating_point():
            focal = focal.to(self.principal.dtype)
        if focal.dim() == 0:
            focal = focal.reshape(1)
        if focal.dim() == 1:
            focal = focal[:, None].expand(-1, 2)
        self.focal = _batched(focal, "focal", (2,))
        if not znear > 0:
            raise ValueError(f"znear must be > 0 for a pinhole camera, got {znear}")
        self.znear = float(znear)
        self._check(dict(focal=self.focal, principal=self.principal, R=self.R, t=self.t))

    def _own_batch(self) -> int:
        return self.focal.shape[0]

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) camera-space points -> (B, V, 3) screen (x px, y px, depth m)."""
        cx, cy, cz = points_cam.transpose(1, 2).unbind(1)
        depth = -cz
        # Clamp only the divisor so points behind the camera stay finite; they are culled later.
        inv_depth = 1.0 / depth.clamp(min=self.znear)
        focal, principal = self.focal.to(cx.dtype), self.principal.to(cx.dtype)
        x = focal[:, 0, None] * cx * inv_depth + principal[:, 0, None]
        y = -focal[:, 1, None] * cy * inv_depth + principal[:, 1, None]
        return torch.stack(torch.broadcast_tensors(x, y, depth), dim=1).transpose(1, 2)

    def directions_to_camera(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Unit vectors from camera-space points toward the camera centre."""
        return torch.nn.functional.normalize(-points_cam, dim=-1)


class OrthographicCamera(_Camera):
    """Weak-perspective (scaled orthographic) camera.

        X_cam = R @ X + t
        x = s * X_cam.x + cx
        y = -s * X_cam.y + cy                       (image y points down)
        depth = -X_cam.z

    scale: (B,) pixels per metre; principal: (B, 2); R: (B, 3, 3); t: (B, 3).
    Depth may be negative (nothing is behind an orthographic camera), so nothing is culled.
    """

    def __init__(self, scale, principal, R, t):
        super().__init__(principal, R, t)
        scale = torch.as_tensor(scale)
        if not scale.is_floating_point():
            scale = scale.to(self.principal.dtype)
        self.scale = scale.reshape(-1)
        self._check(dict(scale=self.scale, principal=self.principal, R=self.R, t=self.t))

    def _own_batch(self) -> int:
        return self.scale.shape[0]

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) camera-space points -> (B, V, 3) screen (x px, y px, depth m)."""
        cx, cy, cz = points_cam.transpose(1, 2).unbind(1)
        scale, principal = self.scale.to(cx.dtype)[:, None], self.principal.to(cx.dtype)
        x = scale * cx + principal[:, 0, None]
        y = -scale * cy + principal[:, 1, None]
        return torch.stack(torch.broadcast_tensors(x, y, -cz), dim=1).transpose(1, 2)

    def directions_to_camera(self, points_cam: torch.Tensor) -> torch.Tensor:
        """The viewing direction is +Z_cam everywhere."""
        out = torch.zeros_like(points_cam)
        out[..., 2] = 1.0
        return out
