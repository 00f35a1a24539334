"""The step between finding the landmarks and fitting them: the crop around the
landmarks, the camera frame, the head rig on the device, the initial state and the fast
landmark model of the landmark stages.

Not a stage of its own in the reports (`reported = False`): its time counts toward the
landmarks stage, as the stage names of INTERFACE.md and bundle/schema.json say.
"""

from __future__ import annotations

from ..image import crop_around
from .context import FitContext, Stage
from .geometry import CameraFrame, HeadRig, initial_state
from .landmark_model import LandmarkModel


def set_up_fit(ctx: FitContext) -> None:
    """Each view's frame, ctx.rig, ctx.state (one view per photo) and ctx.lmodel from the
    views' photos and points."""
    o = ctx.options
    for view in ctx.views:
        crop = crop_around(view.points, o.landmark_resolution, o.crop_margin)
        view.frame = CameraFrame(view.photo.width, view.photo.height, crop)
    ctx.rig = HeadRig(ctx.model, ctx.device, o.identity_components, o.expression_components)
    ctx.state = initial_state(ctx.rig, len(ctx.views))
    ctx.lmodel = LandmarkModel(ctx.model, ctx.rig.num_identity, ctx.rig.num_expression, ctx.device)


class FitSetup(Stage):
    name = "setup"
    reported = False

    def run(self, ctx: FitContext) -> None:
        set_up_fit(ctx)
