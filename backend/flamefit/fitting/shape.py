"""Shape stage: identity, expression, jaw, neck and the rigid pose from the landmarks.

Levenberg-Marquardt on all of them at once (a few hundred parameters; the landmarks
come from `LandmarkModel`, so an exact finite-difference Jacobian is one batched call),
with the priors of `priors.py` (the problem itself: landmark_problem.py); the jaw-line
points follow the head's yaw.
"""

from __future__ import annotations

from .context import FitContext, Stage
from .landmark_problem import landmark_problem
from .optim import levenberg_marquardt


def fit_shape(ctx: FitContext) -> float:
    """Levenberg-Marquardt on identity, expression, jaw, neck, global rotation and
    translation from the landmarks, with the priors: one problem over every view, the
    identity shared, each view's expression, jaw, neck and rigid pose its own."""
    rig, state, options = ctx.rig, ctx.state, ctx.options
    free = ["identity"] if rig.num_identity > 0 else []
    if options.expression and rig.num_expression > 0:
        free.append("expression")
    free.append("global")
    if rig.has_articulation:
        free.append("neck")
        if options.expression:
            free.append("jaw")
    free.append("translation")
    problem = landmark_problem(ctx, free)  # every view, the identity shared
    theta = levenberg_marquardt(problem.residuals, problem.pack(), options.shape_iterations, ctx.reporter,
                                state.history.setdefault("shape", []), before_iteration=problem.fix_row,
                                jacobian=problem.jacobian if len(ctx.views) > 1 else None)
    problem.commit(theta)
    r = problem.residuals(theta[None])[0]
    return 0.5 * float(r @ r)


class ShapeStage(Stage):
    name = "shape"
    option = "landmarks"  # `--stages landmarks`

    def run(self, ctx: FitContext) -> None:
        fit_shape(ctx)
