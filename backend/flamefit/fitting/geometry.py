"""The fitted head and its camera: parameters, the posed mesh, landmarks, projection.

Camera (INTERFACE.md section 4): a pinhole at the world origin with R = I, looking down
-Z; the head moves instead (global joint rotation + translation). The focal length is
fixed relative to the photo: f = FOCAL_FACTOR x max(width, height) pixels (a ~70 mm
portrait lens on a full-frame camera), principal point at the image centre. The fit
runs in a square crop; `CameraFrame.camera(resolution)` is that same camera expressed
in a crop resampled to `resolution` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..image import Crop
from ..models.head_model import JOINT_NAMES, HeadLayer, HeadModel
from ..models.lbs import rodrigues
from ..render.cameras import PinholeCamera

FOCAL_FACTOR = 2.0
GLOBAL, NECK, JAW, EYE_LEFT, EYE_RIGHT = range(len(JOINT_NAMES))


@dataclass
class CameraFrame:
    """Original-image intrinsics and the crop the fit works in."""

    width: int
    height: int
    crop: Crop

    @property
    def focal_px(self) -> np.ndarray:
        f = FOCAL_FACTOR * max(self.width, self.height)
        return np.array([f, f], dtype=np.float64)

    @property
    def principal_px(self) -> np.ndarray:
        return np.array([self.width / 2.0, self.height / 2.0])

    def intrinsics(self, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(focal, principal) in the crop resampled to `resolution` (None: the original image)."""
        if resolution is None:
            return self.focal_px, self.principal_px
        s = resolution / self.crop.side
        return self.focal_px * s, (self.principal_px - (self.crop.x0, self.crop.y0)) * s

    def extrinsics(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), t (3,)) world -> camera: the camera stays at the origin (the head moves)."""
        return np.eye(3), np.zeros(3)

    def camera(self, resolution: int | None, device, dtype=torch.float32) -> PinholeCamera:
        focal, principal = self.intrinsics(resolution)
        R, t = self.extrinsics()
        return PinholeCamera(torch.tensor(focal[None], dtype=dtype, device=device),
                             torch.tensor(principal[None], dtype=dtype, device=device),
                             torch.tensor(R[None], dtype=dtype, device=device),
                             torch.tensor(t[None], dtype=dtype, device=device), znear=0.01)

    def to_crop(self, points: np.ndarray, resolution: int) -> np.ndarray:
        return self.crop.resized(resolution).to_crop(points)


@dataclass
class Subject:
    """What every photo of the person shares: the identity and the albedo."""

    identity: torch.Tensor  # (1, S)
    albedo: object = None  # an albedo model (fitting.albedo), set by the photometric stage
    texture: torch.Tensor | None = None  # (1, 3, T, T) linear UV albedo from the texture stage


@dataclass
class View:
    """One photo's own parameters, batch axis of 1: expression, head pose and position
    in that photo's camera, and its SH light."""

    expression: torch.Tensor  # (1, E)
    pose: torch.Tensor  # (1, J, 3) axis-angle: global, neck, jaw, eye_left, eye_right
    translation: torch.Tensor  # (1, 3) metres
    sh: torch.Tensor  # (1, 9, 3)


@dataclass
class FitState:
    """All fitted parameters: one `Subject` and its `views` (the single-photo fit: one).
    Tensors; stages set requires_grad as needed.

    The one-view accessors (identity, expression, pose, translation, sh, albedo,
    texture) read and set the subject's or the only view's fields (a single-photo state
    built by hand, as the tests' synthetic heads). The fit's result holds none of this:
    pipeline._finish copies what its readers need into plain arrays."""

    subject: Subject
    views: list[View]
    history: dict = field(default_factory=dict)  # stage -> list of loss values

    @property
    def view(self) -> View:
        """The view of a single-photo fit."""
        if len(self.views) != 1:
            raise ValueError(f"a fit of {len(self.views)} views has no single view")
        return self.views[0]


def _delegate(owner: str, name: str) -> property:
    def get(self):
        return getattr(getattr(self, owner), name)

    def put(self, value):
        setattr(getattr(self, owner), name, value)

    return property(get, put, doc=f"{owner}.{name}")


for _name in ("identity", "albedo", "texture"):
    setattr(FitState, _name, _delegate("subject", _name))
for _name in ("expression", "pose", "translation", "sh"):
    setattr(FitState, _name, _delegate("view", _name))


def initial_state(rig: "HeadRig", num_views: int = 1) -> FitState:
    dev, dt = rig.device, rig.dtype

    def view() -> View:
        sh = torch.zeros(1, 9, 3, dtype=dt, device=dev)
        sh[:, 0] = math.sqrt(4 * math.pi)  # white ambient light: shading 1
        return View(expression=torch.zeros(1, rig.num_expression, dtype=dt, device=dev),
                    pose=torch.zeros(1, len(JOINT_NAMES), 3, dtype=dt, device=dev),
                    translation=torch.zeros(1, 3, dtype=dt, device=dev), sh=sh)

    return FitState(Subject(identity=torch.zeros(1, rig.num_identity, dtype=dt, device=dev)),
                    [view() for _ in range(num_views)])


class HeadRig:
    """A head model on a device, restricted to the components being fitted."""

    def __init__(self, model: HeadModel, device, num_identity: int, num_expression: int, dtype=torch.float32):
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.layer = HeadLayer(model, dtype=dtype).to(self.device)
        self.num_identity = min(num_identity, model.num_identity)
        self.num_expression = min(num_expression, model.num_expression)
        self.faces = self.layer.faces
        self.has_articulation = not np.allclose(model.skin_weights[:, 0], 1.0)
        self.face_uvs = None
        if model.uv_coords is not None:
            self.face_uvs = torch.as_tensor(model.uv_coords[model.uv_faces], dtype=dtype, device=self.device)

    def vertices(self, state: FitState, pose=None, identity=None, expression=None, translation=None,
                 view: int | None = None):
        """(1, V, 3) the posed mesh of `view` (an index of state.views; None: the only view)."""
        v = state.view if view is None else state.views[view]
        identity = state.subject.identity if identity is None else identity
        expression = v.expression if expression is None else expression
        return self.layer(identity, expression, v.pose if pose is None else pose,
                          v.translation if translation is None else translation).vertices

    def landmarks(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(1, 68, 3) iBUG points; the jaw line follows the head's yaw when the embedding can."""
        return self.layer.landmarks(verts, "ibug68", yaw_degrees(pose))

    def landmark_embedding_at(self, pose: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(face_idx (68,), bary (68,3)) of the iBUG points at this pose's yaw."""
        face_idx, bary = self.model.landmarks["ibug68"].at_yaw(yaw_degrees(pose)[:1].detach().cpu().numpy())
        return face_idx[0].copy(), bary[0].copy()


def neutral_head(model: HeadModel, identity: np.ndarray) -> np.ndarray:
    """(V, 3) float64: the head of the identity coefficients `identity` ((S',): the first S'
    components, as FitResult.identity) with no expression, no pose and no translation."""
    with torch.no_grad():
        identity = torch.as_tensor(np.asarray(identity, np.float32))[None]
        return HeadLayer(model)(identity).vertices[0].double().numpy()


def expression_is_nonnegative(rig: HeadRig) -> bool:
    """ARKit-style units (named expression components) are weights in [0, 1]."""
    return bool(rig.model.expression_names)


class PoseParams:
    """Free pose parameters (global, neck, jaw) and a scaled translation offset of one view."""

    def __init__(self, view: View, fit_jaw: bool, fit_neck: bool):
        self.view = view
        self.base_pose = view.pose.detach().clone()
        self.global_rot = view.pose[:, GLOBAL].detach().clone().requires_grad_(True)
        self.neck = view.pose[:, NECK].detach().clone().requires_grad_(fit_neck)
        self.jaw = view.pose[:, JAW].detach().clone().requires_grad_(fit_jaw)
        self.t0 = view.translation.detach().clone()
        self.scale = 0.1 * max(float(-self.t0[0, 2]), 0.1)
        self.delta = torch.zeros_like(self.t0, requires_grad=True)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.global_rot, self.neck, self.jaw, self.delta) if t.requires_grad]

    def pose(self) -> torch.Tensor:
        rows = list(self.base_pose.unbind(1))
        rows[GLOBAL], rows[NECK], rows[JAW] = self.global_rot, self.neck, self.jaw
        return torch.stack(rows, dim=1)

    def translation(self) -> torch.Tensor:
        return self.t0 + self.delta * self.scale

    def commit(self) -> None:
        with torch.no_grad():
            self.view.pose[:] = self.pose()
            self.view.translation[:] = self.translation()


def head_rotation(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) the head's rotation in the camera frame: global∘neck (the neck turns the head)."""
    return rodrigues(pose[:, GLOBAL]) @ rodrigues(pose[:, NECK])


def yaw_degrees(pose: torch.Tensor) -> torch.Tensor:
    """(B,) right-handed rotation about +Y of global∘neck, degrees (DECA's convention)."""
    rot = head_rotation(pose)
    return torch.rad2deg(torch.atan2(-rot[:, 2, 0], torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)))


def project(camera: PinholeCamera, points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) world -> (B, N, 2) pixels of `camera`."""
    return camera.transform_points(points)[..., :2]
