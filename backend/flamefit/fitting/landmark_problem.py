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


def landmark_setup(rig: HeadRig, points_crop: np.ndarray, reliability: np.ndarray, options, several: bool = False):
    """reliability: (68,) the detector's per-point weights (0 where a point is missing);
    several: one of several views.

    The residuals' unit is `landmark_sigma` x the eye-corner distance, which vanishes at
    profile, so there it is at least `landmark_sigma_extent` x the landmarks' extent (a
    frontal face's eye-corner distance is ~0.63 x it: unchanged). Without that floor a
    profile's residuals counted ~20x: one photo at 90 degrees outweighed the priors and ran
    the identity to 10 standard deviations (benchmarks/subject.py, one view, 2 px noise:
    face 16 mm off, 1.6 mm with it), and in a fit of several photos the profiles' contours
    decided the shared identity. Several photos take the higher floor, 0.6 (every view's
    points count about the same per pixel: better with a detector's noise); one photo 0.45,
    which leaves the fit of faces turned less than ~45 degrees as it was (AFW)."""
    target = torch.nan_to_num(torch.as_tensor(points_crop, dtype=rig.dtype, device=rig.device))
    weights = landmark_weights(reliability, options.contour_weight, rig.device, rig.dtype)
    a, b = ibug68.OUTER_EYE_CORNERS
    finite = points_crop[np.isfinite(points_crop).all(1)]
    floor = options.landmark_sigma_extent[1 if several else 0]
    scale = max(float(np.linalg.norm(points_crop[a] - points_crop[b])), floor * float(np.ptp(finite, axis=0).max()))
    return target, weights, options.landmark_sigma * scale


class ViewTerms:
    """One view's landmark target in the landmark crop: its camera, target, per-point scale."""

    def __init__(self, index: int, camera, target, weights, sigma):
        self.index, self.camera = index, camera
        self.target = target.double()
        self.scale = (weights.double().sqrt() / sigma)[:, None]


class LandmarkProblem:
    """Landmark residuals (+ prior residuals) over a packed float64 parameter vector.

    `free` names the parameter blocks being fitted, in order: any of "identity",
    "expression", "global", "neck", "jaw", "translation"; the others keep the state's
    values. "identity" is the subject's (one block, shared); the others are per view, one
    block set for each of `views` (ViewTerms), after the identity. Cost 0.5 |r|^2 = the
    landmark loss of every view + priors of priors.py (the identity's once).

    Residual rows: every view's landmarks, then the identity prior, then each view's
    expression / jaw / neck priors. With several views the Jacobian is block-sparse (a
    view's rows depend on the identity and its own blocks only): `jacobian` takes the
    finite differences view by view.
    """

    BLOCKS = ("identity", "expression", "global", "neck", "jaw", "translation")

    def __init__(self, lmodel, state: FitState, views: list[ViewTerms], options, free, priors: bool, nonneg: bool):
        self.lmodel, self.state, self.views, self.options = lmodel, state, views, options
        self.free, self.priors, self.nonneg = list(free), priors, nonneg
        sizes = {"identity": state.subject.identity.shape[1], "expression": state.views[0].expression.shape[1]}
        self.shared = {}
        self.slices = [{} for _ in views]  # per view: block name -> slice (the identity's included)
        start = 0
        if "identity" in self.free:
            self.shared["identity"] = slice(0, sizes["identity"])
            start = sizes["identity"]
        for k in range(len(views)):
            self.slices[k].update(self.shared)
            for name in self.free:
                if name == "identity":
                    continue
                size = sizes.get(name, 3)
                self.slices[k][name] = slice(start, start + size)
                start += size
        self.size = start
        self.rows = [None] * len(views)

    def _view(self, k: int):
        return self.state.views[self.views[k].index]

    def pack(self) -> torch.Tensor:
        parts = [self.state.subject.identity[0]] if "identity" in self.shared else []
        for k in range(len(self.views)):
            view = self._view(k)
            values = {"expression": view.expression[0], "global": view.pose[0, GLOBAL], "neck": view.pose[0, NECK],
                      "jaw": view.pose[0, JAW], "translation": view.translation[0]}
            parts += [values[n] for n in self.free if n != "identity"]
        return torch.cat([p.detach().double().to(self.lmodel.device) for p in parts])

    def unpack(self, theta: torch.Tensor, k: int = 0):
        """(identity, expression, pose, translation) of view k, batched as theta."""
        B, slices, view = theta.shape[0], self.slices[k], self._view(k)
        get = lambda name, default: theta[:, slices[name]] if name in slices else default.double().expand(B, -1)
        identity = get("identity", self.state.subject.identity)
        expression = get("expression", view.expression)
        pose = view.pose.double().expand(B, -1, -1).clone()
        for name, joint in (("global", GLOBAL), ("neck", NECK), ("jaw", JAW)):
            if name in slices:
                pose[:, joint] = theta[:, slices[name]]
        translation = get("translation", view.translation)
        return identity, expression, pose, translation

    def fix_row(self, theta: torch.Tensor) -> None:
        self.rows = [self.lmodel.contour_row(self.unpack(theta[None], k)[2]) for k in range(len(self.views))]

    def _landmarks(self, theta: torch.Tensor, k: int):
        identity, expression, pose, translation = self.unpack(theta, k)
        terms = self.views[k]
        points = self.lmodel(identity, expression, pose, translation, row=self.rows[k])
        r = ((project(terms.camera, points) - terms.target) * terms.scale).reshape(theta.shape[0], -1)
        return r, identity, expression, pose

    def _view_priors(self, expression, pose, k: int) -> list:
        o, slices, parts = self.options, self.slices[k], []
        if "expression" in slices:
            parts += as_residuals(coefficient_terms(expression, o.expression_prior, nonnegative=self.nonneg))
        if "jaw" in slices:
            parts += as_residuals(jaw_terms(pose[:, JAW], o))
        if "neck" in slices:
            parts += as_residuals(neck_terms(pose[:, NECK], o.neck_prior))
        return parts

    def _identity_prior(self, identity) -> list:
        if self.priors and "identity" in self.shared:
            return as_residuals(coefficient_terms(identity, self.options.identity_prior))
        return []

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        found = [self._landmarks(theta, k) for k in range(len(self.views))]
        parts = [r for r, _, _, _ in found]
        if not self.priors:
            return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        parts += self._identity_prior(found[0][1])
        for k, (_, _, expression, pose) in enumerate(found):
            parts += self._view_priors(expression, pose, k)
        return torch.cat(parts, dim=1)

    def jacobian(self, theta: torch.Tensor, r: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(P, R) forward differences, view by view (the blocks of other views are zero)."""
        J = torch.zeros(theta.shape[0], r.shape[0], dtype=theta.dtype, device=theta.device)
        # Row layout of `residuals`: landmarks of each view, identity prior, each view's priors.
        lmk_rows, prior_rows, row = [], [], 0
        for terms in self.views:
            lmk_rows.append(slice(row, row + terms.target.numel()))
            row += terms.target.numel()
        id_count = sum(p.shape[1] for p in self._identity_prior(self.unpack(theta[None], 0)[0]))
        id_rows = slice(row, row + id_count)
        row += id_count
        for k in range(len(self.views)):
            _, expression, pose, _ = self.unpack(theta[None], k)
            count = sum(p.shape[1] for p in self._view_priors(expression, pose, k)) if self.priors else 0
            prior_rows.append(slice(row, row + count))
            row += count
        for k in range(len(self.views)):
            index = torch.cat([torch.arange(s.start, s.stop, device=theta.device) for s in self.slices[k].values()])
            trial = theta[None].repeat(len(index), 1)
            trial[torch.arange(len(index)), index] += h[index]
            r_view, _, expression, pose = self._landmarks(trial, k)
            J[index, lmk_rows[k]] = (r_view - r[lmk_rows[k]]) / h[index, None]
            if self.priors and prior_rows[k].stop > prior_rows[k].start:
                priors = torch.cat(self._view_priors(expression, pose, k), dim=1)
                J[index, prior_rows[k]] = (priors - r[prior_rows[k]]) / h[index, None]
        if id_count:
            index = torch.arange(self.shared["identity"].start, self.shared["identity"].stop, device=theta.device)
            trial = theta[None].repeat(len(index), 1)
            trial[torch.arange(len(index)), index] += h[index]
            priors = torch.cat(self._identity_prior(trial[:, self.shared["identity"]]), dim=1)
            J[index, id_rows] = (priors - r[id_rows]) / h[index, None]
        return J

    def commit(self, theta: torch.Tensor) -> None:
        subject = self.state.subject
        with torch.no_grad():
            for k in range(len(self.views)):
                identity, expression, pose, translation = self.unpack(theta[None], k)
                view = self._view(k)
                subject.identity[:] = identity.to(subject.identity)
                view.expression[:] = (expression.clamp(min=0) if self.nonneg else expression).to(view.expression)
                view.pose[:] = pose.to(view.pose)
                view.translation[:] = translation.to(view.translation)


def view_terms(ctx: FitContext, k: int) -> ViewTerms:
    """View k's landmark target, weights and camera in the landmark crop."""
    lmodel, options, view = ctx.lmodel, ctx.options, ctx.views[k]
    camera = view.frame.camera(options.landmark_resolution, lmodel.device, torch.float64)
    target, weights, sigma = landmark_setup(ctx.rig, view.points_crop(options.landmark_resolution), view.weights,
                                            options, several=len(ctx.views) > 1)
    return ViewTerms(k, camera, target.to(lmodel.device), weights.to(lmodel.device), sigma)


def landmark_problem(ctx: FitContext, free, priors=True, views: list[int] | None = None) -> LandmarkProblem:
    """The landmark residuals of the fit's landmarks for the parameter blocks `free`, over
    `views` (indices; None: every view) with the identity shared."""
    views = range(len(ctx.views)) if views is None else views
    return LandmarkProblem(ctx.lmodel, ctx.state, [view_terms(ctx, k) for k in views], ctx.options, free, priors,
                           expression_is_nonnegative(ctx.rig))
