"""Photometric stage: albedo, SH light and geometry so the render matches the photo.

Per step: pose the mesh, rasterise (face ids recomputed every `visibility_every` steps,
only the differentiable barycentrics in between), shade with the albedo and the 9x3 SH
light, and compare with the photo on face-skin pixels (masks.py) with a robust
(Cauchy) loss. The light is linear in the SH coefficients: it is solved in closed form
(weighted least squares, IRLS weights of the robust loss) at every step instead of
being descended. Geometry (identity, expression, pose, translation) and the albedo
parameters take Adam steps, coarse-to-fine over `options.photometric_schedule`.

Several photos are one problem: the loss is the sum of every view's photometric and
landmark terms (each view its own crop, camera, pose, expression and light) plus the
subject's priors once; the identity and the albedo are shared.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..render.lighting import sh_basis
from ..render.shading import interpolate_packed
from .albedo import SmoothAlbedo, TextureSpaceAlbedo, uv_mirror_pairs
from .context import FitContext, Stage
from .geometry import HeadRig, PoseParams, expression_is_nonnegative, project
from .landmark_problem import landmark_setup
from .light import solve_light
from .optim import Adam
from .photo_target import Target, region_weights, render
from .priors import as_loss, coefficient_terms, landmark_loss, pose_terms


def make_albedo(rig: HeadRig, target: Target, options, texture_space=None):
    if texture_space is not None:
        return TextureSpaceAlbedo(texture_space, device=rig.device, dtype=rig.dtype)
    weights = target.mask_np.reshape(-1)
    pixels = target.image_np.reshape(-1, 3)
    if weights.sum() > 10:
        colour = np.median(pixels[weights > 0.5], axis=0)
    else:
        colour = np.array(options.albedo_fallback)
    colour = np.clip(colour / options.albedo_shading_guess, 0.02, 1.0)
    pairs = uv_mirror_pairs(rig.model, options.albedo_resolution) if options.albedo_symmetry > 0 else None
    return SmoothAlbedo(colour, options.albedo_resolution, options.albedo_smoothness, rig.device, rig.dtype,
                        mirror_pairs=pairs, symmetry=options.albedo_symmetry)


def robust(e: torch.Tensor, scale: float) -> torch.Tensor:
    """Cauchy: s^2 log(1 + e / s^2) for squared residuals e."""
    s2 = scale * scale
    return s2 * torch.log1p(e / s2)


class Objective:
    """The photometric loss of one view at one resolution, for the free parameters of the stage.

    evaluate(visibility) poses and renders the mesh (reusing `visibility`'s face ids
    when given), solves the view's SH light in closed form (weights: mask x IRLS weights
    held in `self.irls`), and returns (loss, rendering, robust squared residuals). The
    subject's own priors (identity, albedo) are in the loss of the view with
    `subject_terms` only, so a fit of several views counts them once.
    """

    def __init__(self, rig, state, params, identity, expression, albedo, target, region, options, reliability, nonneg,
                 view: int = 0, subject_terms: bool = True, several: bool = False):
        self.rig, self.state, self.params = rig, state, params
        self.identity, self.expression, self.albedo = identity, expression, albedo
        self.target, self.region, self.options, self.nonneg = target, region, options, nonneg
        self.view, self.subject_terms = view, subject_terms
        self.lmk_target, self.lmk_weights, self.sigma = landmark_setup(rig, target.points, reliability, options, several)
        self.sh = state.views[view].sh.detach().clone()
        self.irls = None
        self.parts = {}

    def evaluate(self, visibility=None):
        o, t = self.options, self.target
        pose = self.params.pose()
        verts = self.rig.vertices(self.state, pose=pose, identity=self.identity, expression=self.expression,
                                  translation=self.params.translation(), view=self.view)
        rendering = render(self.rig, verts, self.albedo.texture(), self.sh, t.camera, t.resolution, visibility=visibility)
        frags = rendering.fragments
        pix = frags.pixel_index
        weight = t.mask[pix]
        if self.region is not None:
            weight = weight * interpolate_packed(frags, self.region)[:, 0].clamp(0, 1)
        observed = t.image[pix]
        with torch.no_grad():
            basis = sh_basis(rendering.pixel_normals)
            irls = self.irls if self.irls is not None and self.irls.shape == weight.shape else torch.ones_like(weight)
            self.sh = solve_light(rendering.pixel_albedo.detach(), basis, observed, weight * irls, self.sh, o, t)
        predicted = rendering.pixel_albedo * (basis @ self.sh[0])
        e = ((predicted - observed) ** 2).sum(-1)
        norm = weight.sum().clamp(min=1.0)
        photo = o.photometric_weight * (weight * robust(e, o.robust_scale)).sum() / norm
        lmk = landmark_loss(project(t.camera, self.rig.landmarks(verts, pose)), self.lmk_target, self.lmk_weights,
                            self.sigma)
        loss = photo + o.photometric_landmark_weight * lmk
        if self.subject_terms:
            loss = loss + as_loss(coefficient_terms(self.identity, o.photometric_identity_prior))
        loss = loss + as_loss(coefficient_terms(self.expression, o.expression_prior, nonnegative=self.nonneg))
        loss = loss + as_loss(pose_terms(pose, o))
        if self.subject_terms:
            loss = loss + self.albedo.prior()
        self.parts = {"photometric": float(photo.detach()), "landmarks": float(lmk.detach())}
        return loss, rendering, e.detach()

    def refresh(self):
        """New visibility and IRLS weights (no gradients); returns the fragments."""
        with torch.no_grad():
            _, rendering, e = self.evaluate(None)
            self.irls = 1.0 / (1.0 + e / self.options.robust_scale ** 2)
        return rendering.fragments


def view_schedule(options, crop_side: int, num_views: int) -> list[tuple[int, int]]:
    """One view's (resolution, iterations) levels. Never upsample the photo: a level finer
    than the crop's own pixels only adds blur. With several views every step sees all of
    them, so each level runs `multi_view_iterations` x its steps."""
    share = 1.0 if num_views == 1 else options.multi_view_iterations
    return [(min(int(r), crop_side), max(1, int(round(n * share)))) for r, n in options.photometric_schedule]


def fit_photometric(ctx: FitContext) -> dict:
    """Run the coarse-to-fine photometric schedule over every view; updates `ctx.state`
    in place.

    Adam, one step per evaluation of the summed loss; face ids and the IRLS weights of
    the light solves are refreshed every `visibility_every` steps, barycentrics every step.
    """
    rig, state, options, reporter = ctx.rig, ctx.state, ctx.options, ctx.reporter
    views, texture_space, N = ctx.views, ctx.texture_space, len(ctx.views)
    schedules = [view_schedule(options, view.frame.crop.side, N) for view in views]
    levels = [[s[level] for s in schedules] for level in range(len(options.photometric_schedule))]
    total = sum(n for n in (level[0][1] for level in levels))
    region = region_weights(rig)
    fit_expression = options.expression and rig.num_expression > 0
    params = [PoseParams(v, fit_jaw=options.expression and rig.has_articulation, fit_neck=rig.has_articulation)
              for v in state.views]
    identity = state.subject.identity.detach().clone().requires_grad_(rig.num_identity > 0)
    expressions = [v.expression.detach().clone().requires_grad_(fit_expression) for v in state.views]
    nonneg = expression_is_nonnegative(rig)

    def target(k, resolution):
        return Target(rig, views[k].frame, views[k].photo.rgb, views[k].points, resolution)

    first = [target(k, schedules[k][0][0]) for k in range(N)]
    albedo = state.subject.albedo if state.subject.albedo is not None else make_albedo(rig, first[0], options,
                                                                                      texture_space)
    state.subject.albedo = albedo
    history = state.history.setdefault("photometric", [])
    optimiser = Adam(_adam_groups(identity, expressions, params, albedo, options, nonneg), betas=options.adam_betas)
    base_lrs = [g["lr"] for g in optimiser.param_groups]
    low = options.lr_final_fraction
    step = 0
    lights = [v.sh.detach().clone() for v in state.views]
    objectives = None
    for level, per_view in enumerate(levels):
        iterations = per_view[0][1]
        objectives = []
        for k, (resolution, _) in enumerate(per_view):
            objective = Objective(rig, state, params[k], identity, expressions[k], albedo,
                                  first[k] if level == 0 else target(k, resolution), region, options,
                                  views[k].weights, nonneg, view=k, subject_terms=k == 0, several=N > 1)
            objective.sh = lights[k]
            objectives.append(objective)
        visibility = [None] * N
        for i in range(iterations):
            if i % options.visibility_every == 0:
                visibility = [objective.refresh() for objective in objectives]
            progress = step / max(total - 1, 1)
            for g, lr in zip(optimiser.param_groups, base_lrs):
                g["lr"] = lr * (low + 0.5 * (1 - low) * (1 + math.cos(math.pi * progress)))
            optimiser.zero_grad()
            loss = None
            for objective, seen in zip(objectives, visibility):
                view_loss = objective.evaluate(seen)[0]
                loss = view_loss if loss is None else loss + view_loss
            loss.backward()
            optimiser.step()
            step += 1
            history.append(float(loss.detach()))
            if reporter is not None:
                reporter.step(step, total, history[-1])
        lights = [objective.sh for objective in objectives]
    with torch.no_grad():
        state.subject.identity[:] = identity
        for k, (view, objective) in enumerate(zip(state.views, objectives)):
            view.expression[:] = expressions[k].clamp(min=0) if nonneg else expressions[k]
            params[k].commit()
            objective.refresh()  # the light for the final geometry
            view.sh = objective.sh.detach()
    parts = {}
    for objective in objectives:
        for key, value in objective.parts.items():
            parts[key] = parts.get(key, 0.0) + value
    return parts


def _adam_groups(identity, expressions, params, albedo, options, nonneg):
    """One group per kind of parameter (every view's in the same group)."""
    groups = [
        {"params": [identity], "lr": options.lr_identity},
        {"params": list(expressions), "lr": options.lr_expression_units if nonneg else options.lr_expression},
        {"params": [t for p in params for t in (p.global_rot, p.neck, p.jaw)], "lr": options.lr_rotation},
        {"params": [p.delta for p in params], "lr": options.lr_translation},
        {"params": albedo.parameters(),
         "lr": options.lr_albedo if isinstance(albedo, SmoothAlbedo) else options.lr_albedo_space},
    ]
    return [g for g in groups if all(p.requires_grad for p in g["params"])]


def light_only(ctx: FitContext) -> None:
    """No photometric stage: an albedo from the first photo's skin colour and each view's
    SH light solved in closed form for the landmark-fitted mesh."""
    rig, state = ctx.rig, ctx.state
    R = ctx.options.light_resolution
    for k, view in enumerate(ctx.views):
        target = Target(rig, view.frame, view.photo.rgb, view.points, R)
        if k == 0:
            state.subject.albedo = make_albedo(rig, target, ctx.options, ctx.texture_space)
        fitted = state.views[k]
        with torch.no_grad():
            verts = rig.vertices(state, view=k)
            rendering = render(rig, verts, state.subject.albedo.texture().detach(), fitted.sh, target.camera, R)
            pix = rendering.fragments.pixel_index
            weight = target.mask[pix]
            if weight.sum() > 10:
                fitted.sh = solve_light(rendering.pixel_albedo, sh_basis(rendering.pixel_normals), target.image[pix],
                                        weight, fitted.sh, ctx.options, target)


class PhotometricStage(Stage):
    """Albedo, SH light and geometry refined on the face-skin pixels."""

    name = "photometric"
    option = "photometric"

    def run(self, ctx: FitContext) -> None:
        fit_photometric(ctx)

    def skip(self, ctx: FitContext) -> None:
        light_only(ctx)
