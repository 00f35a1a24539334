"""bpy helpers shared by the add-on tests."""

from __future__ import annotations

import time

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector


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


def finish_fit(addon, job, timeout: float):
    """Step a started fit job (as the panel's timer does) until it ends; its last result."""
    deadline = time.monotonic() + timeout
    while (res := addon.ui.operators.fit_step(bpy.context, job)).state == "RUNNING":
        assert time.monotonic() < deadline, f"the fit did not end within {timeout:.0f} s"
        time.sleep(0.05)
    return res


def project_px(scene, camera, points):
    """Blender's own projection of world points to pixels (x right, y down)."""
    W = scene.render.resolution_x * scene.render.resolution_percentage / 100
    H = scene.render.resolution_y * scene.render.resolution_percentage / 100
    uv = np.array([tuple(world_to_camera_view(scene, camera, p))[:2] for p in points])
    return np.stack([uv[:, 0] * W, (1 - uv[:, 1]) * H], -1)


SUN_LINE = 20.0  # Blender draws a sun's direction line 20 units along its local -Z (overlay code)


def light_gizmo_points_in_view(scene, camera, light, n=400):
    """Points of what the 3D view draws for `light` (its icon at the location, a sun's
    direction line, the ground line down to z = 0), sampled every 1/n of each line, that
    fall inside the camera's frame in front of it (bpy_extras' projection)."""
    mw = light.matrix_world
    p = mw.translation.copy()
    ends = [p.copy()]
    ends[0].z = 0.0  # the dashed ground line
    if light.data.type == "SUN":
        ends.append(mw @ Vector((0.0, 0.0, -SUN_LINE)))
    seen = []
    for q in ends:
        for t in np.linspace(0.0, 1.0, n + 1):
            x = p.lerp(q, float(t))
            v = world_to_camera_view(scene, camera, x)
            if v.z > camera.data.clip_start and 0.0 <= v.x <= 1.0 and 0.0 <= v.y <= 1.0:
                seen.append(tuple(x))
    return seen


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
        self.log.append(("button", (idname, text, bool(k.get("depress", False)))))

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

    def buttons(self):
        """(operator idname, text, pressed) of every operator button."""
        return [v for kind, v in self.log if kind == "button"]
