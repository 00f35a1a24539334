"""Rigid stage: head rotation and position from the 2D landmarks.

1. Closed form: OpenCV's PnP (Levenberg-Marquardt from a frontal guess at the distance
   the eye-corner spacing implies) of the neutral template's inner-face landmarks
   (iBUG 17..67; the jaw line slides with yaw) to the detected points.
2. Levenberg-Marquardt on the 6 rigid parameters with all 68 points (jaw line
   following yaw).

OpenCV's camera looks down +Z with y down; ours looks down -Z with y up: X_gl = D X_cv
with D = diag(1, -1, -1), so the head's global rotation is R = D R_cv.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..landmarks import ibug68
from .context import FitContext, Stage
from .geometry import GLOBAL, CameraFrame, FitState
from .landmark_problem import landmark_problem
from .optim import levenberg_marquardt

D = np.diag([1.0, -1.0, -1.0])


def _axis_angle(matrix: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.ascontiguousarray(matrix, dtype=np.float64))[0].reshape(3)


def _yaw(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def closed_form_pose(lmodel, state: FitState, frame: CameraFrame, points: np.ndarray, valid: np.ndarray,
                     resolution: int, min_facing: float, view: int = 0, options=None) -> None:
    """Set state.views[view]'s pose[global] and translation from PnP (in place), started
    from a frontal guess. PnP is also started from profile guesses (options.
    rigid_profile_yaws): from the front it can stop near frontal or on the wrong side for
    a profile. A profile solution replaces the frontal one when it reprojects clearly
    better (options.rigid_profile_gain) or when the frontal one is turned away (R[2, 2]
    <= min_facing; a true profile has R[2, 2] ~ 0, so profiles may face down to
    options.rigid_min_facing_profile). A pose turned away or behind the camera with no
    profile solution starts frontal instead."""
    fitted = state.views[view]
    with torch.no_grad():
        rest_pose = torch.zeros_like(fitted.pose).double()
        zero = torch.zeros(1, 3, dtype=torch.float64, device=lmodel.device)
        identity, expression = state.subject.identity.double(), fitted.expression.double()
        model_points = lmodel(identity, expression, rest_pose, zero)[0].cpu().numpy()
        root = lmodel.joints(identity, expression)[0, GLOBAL].cpu().numpy()
    focal, principal = frame.intrinsics(resolution)
    K = np.array([[focal[0], 0, principal[0]], [0, focal[1], principal[1]], [0, 0, 1.0]])
    image_points = points - 0.5  # OpenCV puts pixel centres at integers
    use = np.array([i in ibug68.INNER_FACE for i in range(68)]) & valid
    a, b = ibug68.OUTER_EYE_CORNERS
    model_iod = np.linalg.norm(model_points[a] - model_points[b])
    image_iod = np.linalg.norm(points[a] - points[b])
    distance = focal[0] * model_iod / max(image_iod, 1e-6)
    centre_px = points[use].mean(0)
    centre_model = model_points[use].mean(0)
    target = np.array([(centre_px[0] - principal[0]) * distance / focal[0],
                       (centre_px[1] - principal[1]) * distance / focal[1], distance])
    t_guess = target - D @ centre_model  # frontal (R_cv = D): the model centre lands on the points' centre
    rvec = _axis_angle(D).reshape(3, 1)
    ok, rvec_new, tvec_new = cv2.solvePnP(model_points[use], image_points[use], K, None, rvec.copy(),
                                          t_guess.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                          flags=cv2.SOLVEPNP_ITERATIVE)
    R_cv = cv2.Rodrigues(rvec_new)[0] if ok else D
    t_cv = tvec_new.reshape(3) if ok else t_guess
    R = D @ R_cv
    facing = R[2, 2] > min_facing and t_cv[2] > 0  # face toward the camera, in front of it
    if options is not None:
        reprojection = lambda rv, tv: float(np.linalg.norm(
            cv2.projectPoints(model_points[use], rv, tv, K, None)[0].reshape(-1, 2) - image_points[use], axis=1).mean())
        frontal_error = reprojection(rvec_new, tvec_new) if ok and facing else np.inf
        # The face's height does not shrink with yaw as the eye-corner distance does.
        height = lambda p: np.ptp(p[use][:, 1])
        far = focal[0] * height(model_points) / max(height(points), 1e-6)
        best = None
        for yaw in options.rigid_profile_yaws:
            guess = D @ _yaw(yaw)
            start = np.array([target[0] * far / distance, target[1] * far / distance, far]) - guess @ centre_model
            found, rv, tv = cv2.solvePnP(model_points[use], image_points[use], K, None,
                                         _axis_angle(guess).reshape(3, 1), start.reshape(3, 1),
                                         useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
            if not found or tv[2, 0] <= 0:
                continue
            R_try = D @ cv2.Rodrigues(rv)[0]
            if R_try[2, 2] <= options.rigid_min_facing_profile:
                continue
            error = reprojection(rv, tv)
            if best is None or error < best[0]:
                best = (error, R_try, tv.reshape(3))
        if best is not None and best[0] < options.rigid_profile_gain * frontal_error:
            _, R, t_cv = best
            facing = True
    if not facing:
        R, t_cv = np.eye(3), t_guess
    translation = D @ t_cv + R @ root - root
    fitted.pose[:, GLOBAL] = torch.as_tensor(_axis_angle(R), dtype=fitted.pose.dtype, device=fitted.pose.device)
    fitted.translation[:] = torch.as_tensor(translation, dtype=fitted.translation.dtype, device=fitted.translation.device)


class _ViewShare:
    """A stage reporter for view k of n: its steps are the k-th n-th of the stage's."""

    def __init__(self, reporter, k: int, n: int):
        self.reporter, self.k, self.n = reporter, k, n

    def step(self, step: int, total: int, loss: float | None = None) -> None:
        self.reporter.step(self.k * total + step, self.n * total, loss)


def fit_rigid(ctx: FitContext) -> float:
    """For each view (its own camera, nothing shared yet): closed-form pose, then
    Levenberg-Marquardt on rotation + translation with all 68 points (in the crop at
    options.landmark_resolution). Returns the final cost, summed over the views."""
    state, options, total = ctx.state, ctx.options, 0.0
    for k, view in enumerate(ctx.views):
        resolution = options.landmark_resolution
        closed_form_pose(ctx.lmodel, state, view.frame, view.points_crop(resolution), view.valid, resolution,
                         options.rigid_min_facing, k, options)
        problem = landmark_problem(ctx, ["global", "translation"], priors=False, views=[k])
        reporter = ctx.reporter if len(ctx.views) == 1 or ctx.reporter is None else \
            _ViewShare(ctx.reporter, k, len(ctx.views))
        theta = levenberg_marquardt(problem.residuals, problem.pack(), options.rigid_iterations, reporter,
                                    state.history.setdefault("rigid", []), before_iteration=problem.fix_row)
        problem.commit(theta)
        r = problem.residuals(theta[None])[0]
        total += 0.5 * float(r @ r)
    return total


class RigidStage(Stage):
    name = "rigid"

    def run(self, ctx: FitContext) -> None:
        fit_rigid(ctx)
