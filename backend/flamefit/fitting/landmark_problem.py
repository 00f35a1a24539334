"""The landmark problem the landmark stages share (rigid.py, shape.py): the landmark
residuals of the fit's 68 points, plus the priors' residuals (priors.py), over a packed
float64 parameter vector for Levenberg-Marquardt; and the landmark target, weights and
sigma the photometric stage's landmark term uses too.
"""

from __future__ import annotations

import numpy as np
import torch

from ..landmarks import ibug68
from .context import FitContext
from .geometry import GLOBAL, JAW, NECK, FitState, HeadRig, expression_is_nonnegative, project
from .priors import as_residuals, coefficient_terms, jaw_terms, landmark_weights, neck_terms


def landmark_setup(rig: HeadRig, points_crop: np.ndarray, reliability: np.ndarray, options):
    """reliability: (68,) the detector's per-point weights (0 where a point is missing)."""
    target = torch.nan_to_num(torch.as_tensor(points_crop, dtype=rig.dtype, device=rig.device))
    weights = landmark_weights(reliability, options.contour_weight, rig.device, rig.dtype)
    a, b = ibug68.OUTER_EYE_CORNERS
    sigma = options.landmark_sigma * float(np.linalg.norm(points_crop[a] - points_crop[b]))
    return target, weights, sigma


class LandmarkProblem:
    """Landmark residuals (+ prior residuals) over a packed float64 parameter vector.

    `free` names the parameter blocks being fitted, in order: any of "identity",
    "expression", "global", "neck", "jaw", "translation"; the others keep the state's
    values. Cost 0.5 |r|^2 = the landmark loss + priors of priors.py.
    """

    BLOCKS = ("identity", "expression", "global", "neck", "jaw", "translation")

    def __init__(self, lmodel, state: FitState, camera, target, weights, sigma, options, free, priors: bool,
                 nonneg: bool):
        self.lmodel, self.state, self.camera, self.options = lmodel, state, camera, options
        self.target = target.double()
        self.scale = (weights.double().sqrt() / sigma)[:, None]
        self.free, self.priors, self.nonneg = list(free), priors, nonneg
        sizes = {"identity": state.subject.identity.shape[1], "expression": state.view.expression.shape[1]}
        self.slices, start = {}, 0
        for name in self.free:
            size = sizes.get(name, 3)
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start
        self.row = None

    def pack(self) -> torch.Tensor:
        subject, view = self.state.subject, self.state.view
        values = {"identity": subject.identity[0], "expression": view.expression[0], "global": view.pose[0, GLOBAL],
                  "neck": view.pose[0, NECK], "jaw": view.pose[0, JAW], "translation": view.translation[0]}
        return torch.cat([values[n].detach().double().to(self.lmodel.device) for n in self.free])

    def unpack(self, theta: torch.Tensor):
        B, st = theta.shape[0], self.state
        get = lambda name, default: theta[:, self.slices[name]] if name in self.slices else default.double().expand(B, -1)
        identity = get("identity", st.subject.identity)
        expression = get("expression", st.view.expression)
        pose = st.view.pose.double().expand(B, -1, -1).clone()
        for name, joint in (("global", GLOBAL), ("neck", NECK), ("jaw", JAW)):
            if name in self.slices:
                pose[:, joint] = theta[:, self.slices[name]]
        translation = get("translation", st.view.translation)
        return identity, expression, pose, translation

    def fix_row(self, theta: torch.Tensor) -> None:
        self.row = self.lmodel.contour_row(self.unpack(theta[None])[2])

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        identity, expression, pose, translation = self.unpack(theta)
        points = self.lmodel(identity, expression, pose, translation, row=self.row)
        r = ((project(self.camera, points) - self.target) * self.scale).reshape(theta.shape[0], -1)
        if not self.priors:
            return r
        o = self.options
        parts = [r]
        if "identity" in self.slices:
            parts += as_residuals(coefficient_terms(identity, o.identity_prior))
        if "expression" in self.slices:
            parts += as_residuals(coefficient_terms(expression, o.expression_prior, nonnegative=self.nonneg))
        if "jaw" in self.slices:
            parts += as_residuals(jaw_terms(pose[:, JAW], o))
        if "neck" in self.slices:
            parts += as_residuals(neck_terms(pose[:, NECK], o.neck_prior))
        return torch.cat(parts, dim=1)

    def commit(self, theta: torch.Tensor) -> None:
        identity, expression, pose, translation = self.unpack(theta[None])
        subject, view = self.state.subject, self.state.view
        with torch.no_grad():
            subject.identity[:] = identity.to(subject.identity)
            view.expression[:] = (expression.clamp(min=0) if self.nonneg else expression).to(view.expression)
            view.pose[:] = pose.to(view.pose)
            view.translation[:] = translation.to(view.translation)


def landmark_problem(ctx: FitContext, free, priors=True) -> LandmarkProblem:
    """The landmark residuals of the fit's landmarks for the parameter blocks `free`."""
    lmodel, options = ctx.lmodel, ctx.options
    camera = ctx.view.frame.camera(options.landmark_resolution, lmodel.device, torch.float64)
    target, weights, sigma = landmark_setup(ctx.rig, ctx.points_crop, ctx.view.weights, options)
    return LandmarkProblem(lmodel, ctx.state, camera, target.to(lmodel.device), weights.to(lmodel.device), sigma,
                           options, free, priors, expression_is_nonnegative(ctx.rig))
