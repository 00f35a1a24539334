"""Several photos of one person: one head, one camera per photo, and per photo a *view state*
(the head's shape-key values for that photo's expression, jaw and neck, and the light rig fitted
to that photo's SH light). Bundles from current FlameFits give each photo's key values
(`Bundle.view_key_values`: with its own key "view<k>Pose" the head is that photo's fitted head
exactly); older ones get expression and jaw only. `apply_view` switches a result to one of its
views: the scene camera, the render size, the head's keys, the suns and the world's ambient colour.

Why stored states and a switcher rather than one keyframe per photo: a scene's frame and its
camera markers are shared by every result in it, so a second multi-photo result keyed on
frames 1..N would fight the first over the frame and the scene camera (#19.4: results leave
each other alone). A view state touches only its own result's objects (and the scene camera /
render size, which the user asks for by switching). The keys stay plain sliders: the user can
key them on the timeline as they like.

The states are kept on the result's collection as JSON (`flamefit_views`), the active one in
`flamefit_active_view`; objects are found by their custom properties (`flamefit_view` on
cameras, `flamefit_role` on suns, `flamefit_centre` on the head), not by name, so renaming
them does not break the switcher."""

from __future__ import annotations

import json

import bpy
from mathutils import Matrix, Quaternion, Vector

from . import lights as light_rig
from .scene import set_photo_render_size

VIEWS_PROP = "flamefit_views"
ACTIVE_PROP = "flamefit_active_view"
WORLD_PROP = "flamefit_world"
SLIDER_LIMIT = 10.0  # Blender's shape-key slider range


def view_rotation(view, reference) -> Matrix:
    """Rotation from the world (the reference view's frame, fit axes) into view's camera
    frame: the frame its SH light is expressed in."""
    return Matrix(view.camera.rotation) @ Matrix(reference.camera.rotation).transposed()


def camera_position(view) -> Vector:
    """The view's camera centre in world (fit) coordinates: -R^T t."""
    R = Matrix(view.camera.rotation)
    return -(R.transposed() @ Vector(view.camera.translation))


def fit_view_rig(bundle, k: int, fill: bool):
    """The light rig of view k, directions in world (fit) coordinates.

    The SH of view k is in its own camera frame: the head's normals are turned into that
    frame, the rig is fitted there and its suns are turned back."""
    view, ref = bundle.views[k], bundle.views[0]
    Q = view_rotation(view, ref)
    verts = bundle.mesh["vertices"].data
    n = len(verts) // 3
    turned = [0.0] * (3 * n)
    for i in range(n):
        p = Q @ Vector(verts[3 * i:3 * i + 3])
        turned[3 * i:3 * i + 3] = p
    emphasis = None
    if view.landmarks_2d and len(view.landmarks_2d) >= 3:
        emphasis = light_rig.face_emphasis(verts, view.camera.project, view.landmarks_2d)
    rig = light_rig.rig_for_mesh(view.sh, turned, bundle.mesh["faces"].data, tuple(Q @ camera_position(view)),
                                 fill=fill, emphasis=emphasis)
    back = Q.transposed()
    for sun in rig.suns:
        sun.direction = tuple((back @ Vector(sun.direction)).normalized())
    return rig


def sun_record(sun, location) -> dict:
    """What a sun object holds for one view (light_rig.make_sun's settings) and where it sits."""
    d = Vector(light_rig.to_blender(sun.direction)).normalized()
    colour, energy, angle = light_rig.sun_settings(sun)
    return {"rotation": list(d.to_track_quat("Z", "Y")), "location": list(location), "colour": list(colour),
            "energy": energy, "angle": angle, "sh_colour": list(sun.colour)}


def states(coll) -> list:
    """The view states of a result collection ([] for a collection without them)."""
    try:
        return json.loads(coll.get(VIEWS_PROP, "[]"))
    except (TypeError, ValueError):
        return []


def active_index(coll) -> int:
    return int(coll.get(ACTIVE_PROP, 0))


def head_of(coll):
    return next((o for o in coll.objects if o.type == "MESH" and "flamefit_centre" in o), None)


def camera_of(coll, k: int):
    return next((o for o in coll.objects if o.type == "CAMERA" and o.get("flamefit_view", 0) == k), None)


def suns_of(coll) -> dict:
    return {o["flamefit_role"]: o for o in coll.objects if o.type == "LIGHT" and "flamefit_role" in o}


def result_of(obj):
    """The FlameFit result collection `obj` belongs to, else None."""
    if obj is None:
        return None
    return next((c for c in obj.users_collection if VIEWS_PROP in c), None)


def scene_result(context):
    """The result the panel's view switcher acts on: the active object's, else the scene
    camera's."""
    for obj in (context.active_object, context.scene.camera):
        coll = result_of(obj)
        if coll is not None:
            return coll
    return None


def widen_sliders(head, states_) -> None:
    """Each key's slider range holds every view's value (a photo may open the jaw further
    than the reference's range allows)."""
    keys = head.data.shape_keys.key_blocks if head.data.shape_keys else None
    if keys is None:
        return
    for i, block in enumerate(list(keys)[1:]):
        values = [s["keys"][i] for s in states_ if i < len(s["keys"])]
        if values:
            block.slider_min = max(-SLIDER_LIMIT, min(block.slider_min, *values))
            block.slider_max = min(SLIDER_LIMIT, max(block.slider_max, *values))


def apply_view(scene, coll, k: int, *, set_camera: bool = True, set_render_size: bool = True) -> list:
    """Switch result `coll` to its view k; returns what changed, in words. Only the result's own
    objects change, plus (when asked) the scene camera and render size."""
    views = states(coll)
    if not 0 <= k < len(views):
        raise ValueError(f"{coll.name} has no view {k + 1} (it has {len(views)})")
    state = views[k]
    changes = []
    head = head_of(coll)
    keys = head.data.shape_keys.key_blocks if head is not None and head.data.shape_keys else None
    if keys is not None:
        for block, value in zip(list(keys)[1:], state["keys"], strict=False):
            block.value = max(block.slider_min, min(block.slider_max, value))
    for role, sun in suns_of(coll).items():
        rec = state["suns"].get(role)
        if rec is None:  # this photo's light needs fewer suns
            sun.data.energy = 0.0
            continue
        sun.rotation_mode = "QUATERNION"
        sun.rotation_quaternion = Quaternion(rec["rotation"])
        sun.location = Vector(rec["location"])
        sun.data.color = rec["colour"]
        sun.data.energy = rec["energy"]
        sun.data.angle = rec["angle"]
        sun["flamefit_sh_colour"] = rec["sh_colour"]
    world = bpy.data.worlds.get(coll.get(WORLD_PROP, ""))
    if world is not None:
        light_rig.set_world_ambient(world, state["ambient"])
    cam = camera_of(coll, k)
    if set_camera and cam is not None:
        scene.camera = cam
        changes.append(f"scene camera: {cam.name}")
    if set_render_size:
        set_photo_render_size(scene, state["resolution"], state["pixel_aspect"])
    coll[ACTIVE_PROP] = k
    coll["flamefit_light_error"] = float(state.get("light_error", 0.0))
    return changes
