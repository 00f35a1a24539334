"""bpy helpers shared by the add-on tests."""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view


def scene_snapshot(scene=None) -> dict:
    """Everything an import could add or change."""
    scene = scene or bpy.context.scene
    r = scene.render
    return dict(
        data={name: sorted(i.name for i in getattr(bpy.data, name))
              for name in ("objects", "meshes", "materials", "images", "cameras", "lights", "worlds",
                           "collections", "shape_keys")},
        camera=scene.camera.name if scene.camera else None,
        world=scene.world.name if scene.world else None,
        render=(r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y),
        view=scene.view_settings.view_transform,
        children=sorted(c.name for c in scene.collection.children),
        last=scene.flamefit.last_result if hasattr(scene, "flamefit") else None,
    )


def project_px(scene, camera, points):
    """Blender's own projection of world points to pixels (x right, y down)."""
    W = scene.render.resolution_x * scene.render.resolution_percentage / 100
    H = scene.render.resolution_y * scene.render.resolution_percentage / 100
    uv = np.array([tuple(world_to_camera_view(scene, camera, p))[:2] for p in points])
    return np.stack([uv[:, 0] * W, (1 - uv[:, 1]) * H], -1)


class Recorder:
    """A stand-in for UILayout that records what a draw() function shows."""

    def __init__(self, log=None):
        self.log = [] if log is None else log
        self.alert = self.enabled = self.active = False
        self.scale_y = 1.0

    def _child(self, *a, **k):
        return Recorder(self.log)

    box = row = column = split = _child

    def label(self, text="", icon="NONE", **k):
        self.log.append(("label", text))

    def operator(self, idname, text="", icon="NONE", **k):
        self.log.append(("operator", idname))

        class Props:
            pass
        return Props()

    def prop(self, data, name, **k):
        self.log.append(("prop", name))

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", text))

    def texts(self):
        return [v for kind, v in self.log if kind == "label"]

    def operators(self):
        return [v for kind, v in self.log if kind == "operator"]
