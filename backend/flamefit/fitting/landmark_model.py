"""The 68 iBUG landmarks as a function of the head's parameters, fast.

The landmark stages need only the ~200 vertices under the landmark triangles, not the
whole mesh. Shaping is affine in the coefficients, so the joints (regressed from the
whole shaped mesh) are J0 + Ji @ identity + Je @ expression with the products
precomputed; skinning then runs on the landmark vertices alone. Float64 and batched,
so the Levenberg-Marquardt solver can take exact finite-difference Jacobians in one
batched call. Same result as HeadLayer + HeadLayer.landmarks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.head_model import JOINT_PARENTS, HeadModel, vertices2landmarks
from ..models.lbs import chain_transforms, rodrigues
from .geometry import yaw_degrees


class LandmarkModel:
    def __init__(self, model: HeadModel, num_identity: int, num_expression: int, device="cpu"):
        dt = torch.float64
        emb = model.landmarks["ibug68"]
        face_sets = [emb.face_idx.reshape(-1)]
        if emb.dynamic_face_idx is not None:
            face_sets.append(emb.dynamic_face_idx.reshape(-1))
        corners = model.faces[np.concatenate(face_sets)]
        sub, inverse = np.unique(corners.reshape(-1), return_inverse=True)
        remap = {int(v): i for i, v in enumerate(sub)}
        t = lambda a: torch.tensor(np.asarray(a), dtype=dt, device=device)
        S, E = num_identity, num_expression
        self.device = torch.device(device)
        self.v_template = t(model.v_template[sub])
        self.identity_basis = t(model.identity_basis[sub][..., :S])
        self.expression_basis = t(model.expression_basis[sub][..., :E])
        J_reg = model.joint_regressor.astype(np.float64)
        self.j0 = t(J_reg @ model.v_template)
        self.j_identity = t(np.einsum("jv,vck->jck", J_reg, model.identity_basis[..., :S]))
        self.j_expression = t(np.einsum("jv,vck->jck", J_reg, model.expression_basis[..., :E]))
        self.skin = t(model.skin_weights[sub])
        self.posedirs = None
        if model.posedirs is not None:
            P = model.posedirs.shape[0]
            self.posedirs = t(model.posedirs.reshape(P, -1, 3)[:, sub].reshape(P, -1))
        self.parents = torch.as_tensor(JOINT_PARENTS)
        # The landmark triangles with corners renumbered into the subset; face k of this
        # table is model face used[k].
        used, local_idx = np.unique(np.concatenate(face_sets), return_inverse=True)
        self.faces = torch.as_tensor(np.vectorize(remap.get)(model.faces[used]), device=device)
        self.face_idx = torch.as_tensor(local_idx[:len(emb.face_idx)], device=device)  # (68,)
        self.bary = t(emb.bary)
        self.dynamic = None
        if emb.dynamic_face_idx is not None:
            dyn_idx = torch.as_tensor(local_idx[len(emb.face_idx):].reshape(emb.dynamic_face_idx.shape), device=device)
            self.dynamic = (dyn_idx, t(emb.dynamic_bary), np.asarray(emb.dynamic_yaw_degrees))

    def joints(self, identity, expression) -> torch.Tensor:
        """(B, J, 3) rest-pose joints of the shaped head."""
        joints = self.j0[None] + torch.einsum("bk,jck->bjc", identity, self.j_identity)
        return joints + torch.einsum("bk,jck->bjc", expression, self.j_expression)

    def contour_row(self, pose: torch.Tensor) -> int | None:
        """Row of the dynamic jaw-line table for this (1, J, 3) pose's yaw."""
        if self.dynamic is None:
            return None
        yaw = float(yaw_degrees(pose[:1].double())[0])
        return int(np.argmin(np.abs(self.dynamic[2] - yaw)))

    def __call__(self, identity, expression, pose, translation, row: int | None = None) -> torch.Tensor:
        """(B, 68, 3) landmarks; `row`: the jaw-line row to use (None: the yaw's own row
        of the first batch element)."""
        B = pose.shape[0]
        rest = self.v_template.expand(B, -1, -1)
        joints = self.j0.expand(B, -1, -1)
        if identity is not None and identity.shape[-1]:
            rest = rest + torch.einsum("bk,vck->bvc", identity, self.identity_basis)
            joints = joints + torch.einsum("bk,jck->bjc", identity, self.j_identity)
        if expression is not None and expression.shape[-1]:
            rest = rest + torch.einsum("bk,vck->bvc", expression, self.expression_basis)
            joints = joints + torch.einsum("bk,jck->bjc", expression, self.j_expression)
        rot = rodrigues(pose)
        if self.posedirs is not None:
            eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
            rest = rest + ((rot[:, 1:] - eye).reshape(B, -1) @ self.posedirs).reshape(B, -1, 3)
        _, transforms = chain_transforms(rot, joints, self.parents)
        per_vertex = torch.einsum("vj,bjmn->bvmn", self.skin, transforms)
        posed = (per_vertex[..., :3, :3] @ rest[..., None])[..., 0] + per_vertex[..., :3, 3]
        posed = posed + translation[:, None]
        face_idx, bary = self.face_idx, self.bary
        if self.dynamic is not None:
            row = self.contour_row(pose) if row is None else row
            face_idx = torch.cat([self.dynamic[0][row], face_idx[17:]])
            bary = torch.cat([self.dynamic[1][row], bary[17:]])
        return vertices2landmarks(posed, self.faces, face_idx, bary)
