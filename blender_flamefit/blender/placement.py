"""Several results in one scene: where a new result goes so that no camera of one result shows
anything another result draws in the 3D view (its head, its camera, its suns' icons and lines),
whichever way round. Earlier results are never moved: the new one steps aside."""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
from mathutils import Matrix, Quaternion, Vector

from .scene import segment_in_halfspaces, world_box

SUN_LINE = 20.0  # the 3D view draws a sun's direction line this far along its local -Z
VIEW_MARGIN = 0.1  # of the frame's size on each side: room for an icon (~25 px)


@dataclass
class View:
    """A camera's view as half-spaces (n, c) in camera-local coordinates (inside iff n·p + c >= 0
    for all), and the world -> camera-local matrix."""
    halfspaces: list
    to_camera: Matrix

    def sees(self, p, q) -> bool:
        """Does any point of the world segment p-q fall in this view?"""
        return segment_in_halfspaces(self.to_camera @ p, self.to_camera @ q, self.halfspaces)

    def moved(self, offset) -> View:
        return View(self.halfspaces, self.to_camera @ Matrix.Translation(-Vector(offset)))


@dataclass
class Result:
    """An earlier result in the scene: its cameras' views and the segments its objects draw."""
    name: str
    views: list = field(default_factory=list)
    drawn: list = field(default_factory=list)


def frustum(x0, x1, y0, y1, clip_start, margin=VIEW_MARGIN) -> list:
    """Half-spaces of the view x/s in [x0, x1], y/s in [y0, y1] at depth s = -z, widened by
    `margin` of its size on each side, in front of the near plane."""
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1, y0, y1 = x0 - mx, x1 + mx, y0 - my, y1 + my
    return [(Vector((1.0, 0.0, x0)), 0.0), (Vector((-1.0, 0.0, -x1)), 0.0),
            (Vector((0.0, 1.0, y0)), 0.0), (Vector((0.0, -1.0, -y1)), 0.0),
            (Vector((0.0, 0.0, -1.0)), -clip_start)]


def camera_view(cam_obj, scene) -> View:
    """A FlameFit camera's view is its photo's frame (what it shows with the photo's render size,
    whatever the scene's size is now); any other camera's, the frame the scene gives it."""
    size = cam_obj.get("flamefit_image_size")
    if size is None:
        return scene_view(cam_obj, scene)
    (fx, fy), (cx, cy), (w, h) = cam_obj["flamefit_focal_px"], cam_obj["flamefit_principal_px"], size
    box = (-cx / fx, (w - cx) / fx, -(h - cy) / fy, cy / fy)
    return View(frustum(*box, cam_obj.data.clip_start), cam_obj.matrix_world.inverted())


def scene_view(cam_obj, scene) -> View:
    """The camera's frame as the scene's render size shows it (shift and sensor fit applied)."""
    frame = cam_obj.data.view_frame(scene=scene)  # corners at z = -depth
    xs, ys = [v.x / -v.z for v in frame], [v.y / -v.z for v in frame]
    return View(frustum(min(xs), max(xs), min(ys), max(ys), cam_obj.data.clip_start),
                cam_obj.matrix_world.inverted())


def drawn_segments(obj, scene) -> list:
    """World segments (p, q) covering what the 3D view draws for `obj`: a light's icon, ground
    line to z = 0 and a sun's direction line; a camera's pyramid; a solid's bounding box."""
    mw = obj.matrix_world
    p = mw.translation.copy()
    if obj.type == "LIGHT":
        shine = (mw.to_3x3() @ Vector((0.0, 0.0, -1.0))) if obj.data.type == "SUN" else None
        return light_segments(p, shine)
    if obj.type == "CAMERA":
        corners = [mw @ v for v in obj.data.view_frame(scene=scene)]
        return [(p, c) for c in corners] + [(corners[i], corners[i - 1]) for i in range(4)]
    lo, hi = world_box(obj)
    return box_segments(lo, hi)


def light_segments(location, shine=None) -> list:
    """A light's icon and dashed ground line down to z = 0; a sun's (shining along `shine`, world,
    scaled like the object) also its direction line."""
    ground = location.copy()
    ground.z = 0.0
    segments = [(location, ground)]
    if shine is not None:
        segments.append((location, location + shine * SUN_LINE))
    return segments


def box_segments(lo, hi) -> list:
    """The 12 edges and 4 diagonals of a box: a view that holds any part of the box (bigger than
    the box's gaps) crosses one of them."""
    c = [Vector((x, y, z)) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    edges = [(c[i], c[j]) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]
    return edges + [(c[i], c[7 - i]) for i in range(4)]


def earlier_results(scene, exclude=None) -> list:
    """The FlameFit results (collections an import made) with objects in `scene`."""
    results = []
    for coll in bpy.data.collections:
        if coll == exclude or "flamefit_bundle" not in coll:
            continue
        objects = [o for o in coll.objects if o.name in scene.objects]
        if not objects:
            continue
        views = [camera_view(o, scene) for o in objects if o.type == "CAMERA"]
        drawn = [s for o in objects if o.visible_get() for s in drawn_segments(o, scene)]
        drawn += stored_sun_segments(coll)
        results.append(Result(coll.name, views, drawn))
    return results


def stored_sun_segments(coll) -> list:
    """What a result's suns draw in each of its views (blender/views.py states): switching its
    view moves them there, so a later result keeps out of every one."""
    import json

    from .views import VIEWS_PROP

    try:
        states = json.loads(coll.get(VIEWS_PROP, "[]"))
    except (TypeError, ValueError):
        return []
    segments = []
    for state in states if isinstance(states, list) else []:
        for rec in state.get("suns", {}).values():
            shine = Quaternion(rec["rotation"]) @ Vector((0.0, 0.0, -1.0))
            segments += light_segments(Vector(rec["location"]), shine)
    return segments


def clashes(results, view: View, drawn) -> list:
    """Names of the `results` that the new result's `view` would show, or whose cameras would
    show a segment of `drawn` (the new result's drawing)."""
    return [r.name for r in results
            if any(view.sees(p, q) for p, q in r.drawn) or any(v.sees(p, q) for v in r.views for p, q in drawn)]


def result_lights(scene) -> set:
    """Names of the lights of every FlameFit result in `scene` (each lights its own head)."""
    return {o.name for c in bpy.data.collections if "flamefit_bundle" in c
            for o in c.objects if o.type == "LIGHT" and o.name in scene.objects}


def link_lights(lights, head, name: str):
    """Light linking (Blender 4.0+): the suns light only their own head. Returns the receiver
    collection (not in the scene, like the one Blender's own UI makes), or None where Blender
    has no light linking."""
    if not lights or "light_linking" not in bpy.types.Object.bl_rna.properties:
        return None
    receivers = bpy.data.collections.new(f"{name}_lit")
    receivers.objects.link(head)
    for light in lights:
        light.light_linking.receiver_collection = receivers
    return receivers
