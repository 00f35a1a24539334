"""The photo as the photometric stage and the evaluation see it: the linear-RGB crop at a
resolution with its landmarks, skin mask and camera (`Target`), the model's face region,
and the render of the head with a texture and an SH light.
"""

from __future__ import annotations

import numpy as np
import torch

from ..image import srgb_to_linear
from ..render.rasterizer import RasterizationSettings
from ..render.shading import render_rgb
from .geometry import CameraFrame, HeadRig
from .masks import photometric_mask


def linear_crop(rgb: np.ndarray, frame: CameraFrame, resolution: int) -> np.ndarray:
    """The crop of an 8-bit sRGB photo at `resolution`, linear RGB float32."""
    return srgb_to_linear(frame.crop.resized(resolution).extract(rgb).astype(np.float32) / 255.0).astype(np.float32)


class Target:
    """The photo crop at one resolution, with its landmarks and skin mask."""

    def __init__(self, rig: HeadRig, frame: CameraFrame, rgb: np.ndarray, points: np.ndarray, resolution: int):
        self.resolution = resolution
        self.points = frame.to_crop(points, resolution)
        self.image_np = linear_crop(rgb, frame, resolution)
        self.mask_np = photometric_mask(self.points, self.image_np)
        dev, dt = rig.device, rig.dtype
        self.image = torch.as_tensor(self.image_np, dtype=dt, device=dev).reshape(-1, 3)
        self.mask = torch.as_tensor(self.mask_np, dtype=dt, device=dev).reshape(-1)
        self.camera = frame.camera(resolution, dev, dt)


def region_weights(rig: HeadRig) -> torch.Tensor | None:
    """(1, V, 1) 1 on the model's "face" region, 0 elsewhere; None when it has none."""
    face = rig.model.regions.get("face")
    if face is None or len(face) == 0:
        return None
    w = torch.zeros(1, rig.model.num_vertices, 1, dtype=rig.dtype, device=rig.device)
    w[0, torch.tensor(face, device=rig.device).long()] = 1.0
    return w


def render(rig: HeadRig, verts, texture, sh, camera, resolution, visibility=None):
    return render_rgb(camera, verts, rig.faces, rig.face_uvs, texture, sh,
                      RasterizationSettings((resolution, resolution), cull_backfaces=True), visibility=visibility)
