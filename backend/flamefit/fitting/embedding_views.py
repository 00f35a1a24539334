"""Synthetic photos of a head model's neutral template, for finding where a 2D landmark
detector's points lie on the surface (see embedding.py).

Each view rotates the template about its bounding-box centre (yaw about +Y: positive
turns the face toward +X, the model's left, i.e. image right; pitch about +X: positive
tilts the face down, nose toward -Y) and shoots it with a pinhole camera on the +Z axis. Along with the
8-bit picture a view keeps, per pixel, the template-space surface point (so a detected
2D point maps straight back to the model), the depth and the facing (normal . view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from ..render import (
    PinholeCamera,
    RasterizationSettings,
    ambient_light_sh,
    directional_light_sh,
    interpolate,
    rasterize_mesh,
    sh_shading,
    vertex_normals,
)

IMAGE_SIZE = 512
CAMERA_DISTANCE = 1.0  # metres: a portrait lens' mild perspective
FILL = 0.9  # share of the image height the model's bounding box takes

# A light skin tone (linear RGB) and eyes with a dark iris: dlib's HOG finds a grey
# plaster head less often, and eyelid points need the eye to look like one.
SKIN = (0.72, 0.47, 0.36)
SCLERA = (0.80, 0.78, 0.75)
IRIS = (0.10, 0.07, 0.05)
IRIS_HALF_ANGLE = math.radians(22)
BACKGROUND = (0.30, 0.33, 0.38)
LIGHT_DIRECTION = (-0.35, 0.45, 1.0)  # toward the light, camera space: upper left, in front


@dataclass
class View:
    yaw: float
    pitch: float
    image: np.ndarray  # (H,W,3) uint8 RGB
    surface: np.ndarray  # (H,W,3) template-space point per pixel (NaN on background)
    depth: np.ndarray  # (H,W) metres from the camera plane (inf on background)
    facing: np.ndarray  # (H,W) cosine between the normal and the direction to the camera
    component: np.ndarray  # (H,W) int mesh component id (-1 on background)
    rotation: np.ndarray  # (3,3) head rotation about `pivot`
    pivot: np.ndarray  # (3,)
    eye: np.ndarray  # (3,) camera centre; it looks down -Z
    focal: float  # pixels

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N,3) template points -> (N,2) pixel positions in this view."""
        cam = (np.asarray(points) - self.pivot) @ self.rotation.T + self.pivot - self.eye
        centre = self.image.shape[1] / 2, self.image.shape[0] / 2
        return np.stack([self.focal * cam[:, 0] / -cam[:, 2] + centre[0],
                         -self.focal * cam[:, 1] / -cam[:, 2] + centre[1]], axis=1)


def mesh_components(num_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Connected-component id per vertex; 0 = the largest (the skin; FLAME's and the open
    head's eyeballs are separate components)."""
    rows = faces.reshape(-1)
    cols = np.roll(faces, 1, axis=1).reshape(-1)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    order = np.argsort(-np.bincount(labels), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels]


def vertex_albedo(verts: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Skin everywhere; on the smaller components (eyeballs) a sclera with a dark iris
    facing +Z."""
    albedo = np.tile(np.array(SKIN, np.float32), (len(verts), 1))
    for comp in range(1, components.max() + 1):
        ids = np.flatnonzero(components == comp)
        centre = verts[ids].mean(0)
        direction = verts[ids] - centre
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
        in_iris = direction[:, 2] > math.cos(IRIS_HALF_ANGLE)
        albedo[ids] = np.where(in_iris[:, None], IRIS, SCLERA)
    return albedo


def rotation(yaw_degrees: float, pitch_degrees: float) -> np.ndarray:
    yaw, pitch = math.radians(yaw_degrees), math.radians(pitch_degrees)
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    return rx @ ry


def _sh_light(batch: int, dtype) -> torch.Tensor:
    ambient = ambient_light_sh(torch.full((batch, 3), 0.35, dtype=dtype))
    direction = torch.tensor([LIGHT_DIRECTION] * batch, dtype=dtype)
    return ambient + directional_light_sh(direction, torch.full((batch, 3), 0.75, dtype=dtype))


def render_views(verts: np.ndarray, faces: np.ndarray, poses, image_size: int = IMAGE_SIZE) -> list[View]:
    """One View per (yaw, pitch) in degrees, all rendered in one batch."""
    verts = np.asarray(verts, np.float64)
    components = mesh_components(len(verts), faces)
    low, high = verts.min(0), verts.max(0)
    pivot = (low + high) / 2
    focal = FILL * image_size * CAMERA_DISTANCE / (high - low)[1]
    # Camera on +Z in front of the pivot, axes aligned with the world's.
    eye = pivot + np.array([0.0, 0.0, high[2] - pivot[2] + CAMERA_DISTANCE])
    rotations = np.stack([rotation(yaw, pitch) for yaw, pitch in poses])
    batch, dtype = len(poses), torch.float64
    posed = torch.as_tensor(np.einsum("bij,vj->bvi", rotations, verts - pivot) + pivot, dtype=dtype)
    faces_t = torch.as_tensor(faces, dtype=torch.int64)
    camera = PinholeCamera(torch.full((batch,), focal, dtype=dtype), torch.full((batch, 2), image_size / 2, dtype=dtype),
                           torch.eye(3, dtype=dtype).expand(batch, 3, 3), torch.as_tensor(-eye, dtype=dtype).expand(batch, 3))
    with torch.no_grad():
        # Back faces culled: through a template's parted lips one would see the inside of
        # the head, and points there would land on the back of the skull.
        fragments = rasterize_mesh(camera, posed, faces_t, RasterizationSettings((image_size, image_size), cull_backfaces=True))
        normals = torch.nn.functional.normalize(interpolate(fragments, vertex_normals(posed, faces_t)), dim=-1, eps=1e-12)
        shading = sh_shading(normals, _sh_light(batch, dtype))
        albedo = interpolate(fragments, torch.as_tensor(vertex_albedo(verts, components), dtype=dtype)[None])
        surface = interpolate(fragments, torch.as_tensor(verts, dtype=dtype)[None]).numpy()
        to_camera = interpolate(fragments, torch.nn.functional.normalize(-camera.world_to_camera(posed), dim=-1)).numpy()
    mask = fragments.mask.numpy()
    linear = np.where(mask[..., None], (albedo * shading).clamp(0, 1).numpy(), np.array(BACKGROUND))
    images = np.round(255 * linear ** (1 / 2.2)).astype(np.uint8)  # sRGB-ish gamma, like a photo
    depth = np.where(mask, fragments.depth.numpy(), np.inf)
    facing = np.where(mask, (normals.numpy() * to_camera).sum(-1) / (np.linalg.norm(to_camera, axis=-1) + 1e-12), 0.0)
    component = np.where(mask, components[faces[:, 0]][fragments.face_ids.numpy()], -1)
    surface = np.where(mask[..., None], surface, np.nan)
    return [View(yaw=yaw, pitch=pitch, image=images[b], surface=surface[b], depth=depth[b], facing=facing[b],
                 component=component[b], rotation=rotations[b], pivot=pivot, eye=eye, focal=focal)
            for b, (yaw, pitch) in enumerate(poses)]
