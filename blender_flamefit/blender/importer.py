"""Result bundle -> Blender objects (bpy): puts together mesh.py, material.py, camera.py,
lights.py, scene.py and placement.py. The bundle is read and validated first (io/bundle.py), so a bad
bundle raises BundleError before anything is created; a failure while creating removes
whatever was already made, so the scene is left unchanged.

Made for one bundle, in a new collection named after the photo:
- the head mesh (Blender axes: (x, y, z) -> (x, -z, y)) at the 3D cursor, origin at the
  head's centre, per-corner UVs, smooth shading, a neutral Basis shape key plus one key per
  expression / identity component at its fitted value (schema 1: Basis = the fit, keys 0);
- a Principled BSDF material with the albedo texture (sRGB);
- a key sun and a fill sun, and a new world whose colour is the ambient term, fitted to
  the SH lighting (io/sh_math.py explains the approximation); the suns sit outside the
  camera's view, so their viewport lines do not cross the face;
- a camera reproducing the fit's pinhole projection, with the photo as background image;
  it becomes the scene camera and the render size becomes the photo's (each an option;
  `ImportResult.changes` says what changed in the scene).
Earlier results in the scene are left as they are: the new one steps aside until no camera
of either shows the other (placement.py), and its suns light only its own head (light
linking, Blender 4.0+).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import bpy
from mathutils import Vector

from ..io.bundle import Bundle, BundleError, load_bundle
from . import lights as light_rig
from . import placement, views
from .camera import build_camera
from .material import build_material
from .mesh import add_shape_keys, bbox_centre, build_mesh, to_blender_flat
from .scene import (
    free_offset,
    lights_off_in_renders,
    occluders,
    restore_state,
    save_state,
    select_and_frame,
    use_as_scene,
)


@dataclass
class ImportResult:
    collection: object
    head: object
    camera: object
    lights: list
    world: object
    material: object
    bundle: Bundle
    rig: object  # the first view's light rig
    cameras: list = field(default_factory=list)  # one per view; `camera` is the first
    warnings: list = field(default_factory=list)
    changes: list = field(default_factory=list)  # what the import did to the scene, in words


def _free_place(scene, cams, location, half, head, others):
    """(offset along the first camera's right, names in the way at the cursor): nothing in the
    scene hides the head from any of its cameras or shows over their photos, and no earlier
    result's camera sees the new one nor a new camera an earlier result. `cams`: [(camera
    object, CameraSpec)], placed for the head at `location`."""
    right = step_axis([cam_obj for cam_obj, _ in cams])
    looks = []  # (camera position, far points over its photo)
    for cam_obj, spec in cams:
        pos = cam_obj.matrix_world.translation.copy()
        looks.append((pos, _view_points(cam_obj, spec, 3.0 * (pos - location).length)))
    cam_views = [placement.camera_view(cam_obj, scene) for cam_obj, _ in cams]
    drawn = placement.box_segments(location - half, location + half)
    drawn += [s for cam_obj, _ in cams for s in placement.drawn_segments(cam_obj, scene)]

    def blocked(off):
        off = Vector(off)
        lo, hi = location - half + off, location + half + off
        hidden = []
        for pos, seen in looks:
            hidden += [n for n in occluders(scene, lo, hi, pos + off, exclude={head.name},
                                            view_points=[p + off for p in seen]) if n not in hidden]
        moved = [(p + off, q + off) for p, q in drawn]
        for view in cam_views:
            hidden += [n for n in placement.clashes(others, view.moved(off), moved) if n not in hidden]
        return hidden

    return free_offset(blocked, right)


UP = Vector((0.0, 0.0, 1.0))


def step_axis(cam_objs) -> Vector:
    """Where the head steps aside: along the first camera's right, unless another camera looks
    along that line (the profiles of a front photo): stepping along it would keep whatever is
    behind the head in that camera's view at any distance, so then up (beside the default cube
    means above it)."""
    right = (cam_objs[0].matrix_world.to_3x3() @ Vector((1.0, 0.0, 0.0))).normalized()
    looks = [(c.matrix_world.to_3x3() @ Vector((0.0, 0.0, -1.0))).normalized() for c in cam_objs]
    along = max(abs(d.dot(right)) for d in looks)
    return right if along < 0.5 or along <= max(abs(d.dot(UP)) for d in looks) else UP.copy()


def _view_points(cam_obj, camera, depth: float, n: int = 5) -> list:
    """World points `depth` in front of the camera over an n x n grid of its photo: an object
    on a ray to one of them shows in the camera view over the photo."""
    (fx, fy), (cx, cy), (W, H) = camera.focal_px, camera.principal_px, camera.image_size
    points = []
    for i in range(n):
        for j in range(n):
            u, v = W * j / (n - 1), H * i / (n - 1)
            local = Vector(((u - cx) / fx, -(v - cy) / fy, -1.0)) * depth
            points.append(cam_obj.matrix_world @ local)
    return points


# --- the whole import ---------------------------------------------------------------
def import_bundle(context, path, *, faithful_lighting: bool = True, fill_light: bool = True,
                  set_scene: bool = True, set_camera: bool = True, set_render_size: bool = True,
                  set_world: bool = True, standard_view: bool = True, other_lights_off: bool = True,
                  avoid_occluders: bool = True, pack_images: bool = True, select: bool = True,
                  close_neck: bool = False, collection_name: str = "") -> ImportResult:
    """Import one result bundle. Raises BundleError (nothing created) on a bad bundle.

    The head goes to the 3D cursor with its origin at the head's centre (moved sideways when
    `avoid_occluders` and other objects would hide it from its camera); camera and lights keep
    their place relative to it. `set_scene=False` leaves every scene-wide setting alone."""
    bundle = load_bundle(path)
    name = collection_name or bundle.name
    scene = context.scene
    context.view_layer.update()  # earlier results' matrix_world after a script moved them (placement reads it)
    created = []  # (collection of bpy.data, id) for rollback
    old = save_state(scene)
    turned_off = []
    changes = []

    def track(datablock, id_):
        created.append((datablock, id_))
        return id_

    try:
        coll = track(bpy.data.collections, bpy.data.collections.new(name))
        scene.collection.children.link(coll)
        name = coll.name  # Blender may have added a .001 suffix

        posed = to_blender_flat(bundle.mesh["vertices"].data)  # the fitted head, fit's coordinates
        centre = Vector(bbox_centre(posed))
        me, _basis = build_mesh(f"{name}_head", bundle, centre, close_neck)
        track(bpy.data.meshes, me)
        head = track(bpy.data.objects, bpy.data.objects.new(f"{name}_head", me))
        coll.objects.link(head)
        n_keys = add_shape_keys(head, _basis, bundle)

        mat, albedo = build_material(name, bundle.files["albedo"], faithful_lighting)
        track(bpy.data.images, albedo)
        track(bpy.data.materials, mat)
        me.materials.append(mat)

        several = len(bundle.views) > 1
        cams, photos, intrs = [], [], []
        for view in bundle.views:
            cam_name = f"{name}_{view.name}_camera" if several else f"{name}_camera"
            cam, photo, intr = build_camera(cam_name, view)
            track(bpy.data.cameras, cam.data)
            track(bpy.data.objects, cam)
            if photo is not None and photo.users == 1:  # loaded by us (not already in the file)
                track(bpy.data.images, photo)
            coll.objects.link(cam)
            cam["flamefit_view"] = view.index
            cam["flamefit_view_name"] = view.name
            cams.append(cam)
            photos.append(photo)
            intrs.append(intr)
        cam_obj, intr = cams[0], intrs[0]

        # place: head centre at the cursor, cameras relative to it; then moved sideways beside
        # whatever would hide the head and out of every earlier result's camera views
        location = scene.cursor.location.copy()
        half = Vector([(max(posed[c::3]) - min(posed[c::3])) / 2 for c in range(3)])
        rels = [cam.matrix_world.translation - centre for cam in cams]
        cam_rel = rels[0]

        def put_cameras(at):
            for cam, rel in zip(cams, rels, strict=True):
                m = cam.matrix_world.copy()
                m.translation = at + rel
                cam.matrix_world = m

        put_cameras(location)
        others = placement.earlier_results(scene, exclude=coll)
        if avoid_occluders:
            pairs = [(cam, view.camera) for cam, view in zip(cams, bundle.views, strict=True)]
            offset, blockers = _free_place(scene, pairs, location, half, head, others)
            if blockers:
                location += Vector(offset)
                off = Vector(offset)
                way = "sideways" if abs(off.normalized().dot(UP)) < 0.5 else "up" if off.z > 0 else "down"
                how = f"moved {off.length:.2f} m {way}" if off.length else "could not find a free place nearby"
                changes.append(f"{', '.join(blockers[:3])} in the way of its camera: {how}")
        head.location = location
        head["flamefit_centre"] = list(centre)  # fit coordinates (Blender axes) of the origin
        put_cameras(location)

        # per photo: the lights fitted to the normals its camera sees
        rigs = [views.fit_view_rig(bundle, k, fill_light) for k in range(len(bundle.views))]
        rig = rigs[0]
        roles = list(dict.fromkeys(sun.role for r in rigs for sun in r.suns))
        lights = []
        sun_distance = light_rig.sun_distance(cam_rel, half.length)
        for role in roles:
            sun = next(s for r in rigs for s in r.suns if s.role == role)
            lobj = light_rig.make_sun(f"{name}_{role}", sun, target=location, distance=sun_distance)
            track(bpy.data.lights, lobj.data)
            track(bpy.data.objects, lobj)
            coll.objects.link(lobj)
            lights.append(lobj)
        world = track(bpy.data.worlds, light_rig.make_world(f"{name}_world", rig.ambient))

        if faithful_lighting:
            # like the fit's SH model: the head neither shadows nor bounces light onto itself
            for attr in ("visible_shadow", "visible_diffuse"):
                if hasattr(head, attr):
                    setattr(head, attr, False)
        head["flamefit_faithful_lighting"] = bool(faithful_lighting)
        head["flamefit_model"] = bundle.model_name
        head["flamefit_shape_keys"] = n_keys

        coll["flamefit_bundle"] = bundle.folder
        coll["flamefit_result"] = bundle.result_path
        coll["flamefit_metrics"] = json.dumps(bundle.metrics)
        coll["flamefit_light_error"] = float(rig.error)
        coll["flamefit_model"] = bundle.model_name

        receivers = placement.link_lights(lights, head, name)
        if receivers is not None:
            track(bpy.data.collections, receivers)
        elif others:
            changes.append(f"no light linking before Blender 4.0: {', '.join(o.name for o in lights)} "
                           "also light the other results' heads")
        if set_scene:
            changes += use_as_scene(scene, cam_obj, world, intr, set_camera=set_camera,
                                    set_render_size=set_render_size, set_world=set_world,
                                    standard_view=standard_view)
            if other_lights_off:
                mine = {o.name for o in lights} | placement.result_lights(scene)  # each lights its own head
                turned_off = lights_off_in_renders(scene, exclude=mine)
                if turned_off:
                    changes.append(f"off in renders: {', '.join(turned_off[:4])}")
        # each view's suns where nothing they draw in the 3D view (icon, direction and ground
        # lines) shows in any of the result's cameras' views (the first also with the frame the
        # scene now gives it) nor any other result's
        seen_by = [placement.camera_view(cam, scene) for cam in cams] + [placement.scene_view(cam_obj, scene)]
        seen_by += [v for r in others for v in r.views]
        states, unplaced = [], set()
        for view, view_rig, view_intr in zip(bundle.views, rigs, intrs, strict=True):
            suns = {}
            for sun in view_rig.suns:
                toward = Vector(light_rig.to_blender(sun.direction)).normalized()
                where = light_rig.out_of_view_location(location, toward, sun_distance, seen_by)
                if where is None:
                    unplaced.add(f"{name}_{sun.role}")
                    where = location + toward * sun_distance
                suns[sun.role] = views.sun_record(sun, where)
            states.append({"name": view.name, "keys": bundle.view_key_values(view.index), "suns": suns,
                           "ambient": list(view_rig.ambient), "light_error": float(view_rig.error),
                           "resolution": list(view_intr["resolution"]),
                           "pixel_aspect": list(view_intr["pixel_aspect"]),
                           "metrics": view.metrics})
        for lobj in sorted(unplaced):
            changes.append(f"{lobj}: no place found where its lines stay out of the camera view")
        coll[views.VIEWS_PROP] = json.dumps(states)
        coll[views.WORLD_PROP] = world.name
        views.widen_sliders(head, states)
        views.apply_view(scene, coll, 0, set_camera=False, set_render_size=False)
        if several:
            changes.append(f"{len(bundle.views)} photos: one camera each; switch between them in the "
                           "FlameFit panel's Views")
        if pack_images:
            albedo.pack()
            for photo in photos:
                if photo is not None and not photo.packed_file:
                    photo.pack()
            changes.append("albedo and photo packed into the .blend")
        if select:
            select_and_frame(context, head)
    except BundleError:
        _rollback(created, scene, old, turned_off)
        raise
    except Exception as exc:
        _rollback(created, scene, old, turned_off)
        raise BundleError(f"importing {bundle.folder} failed: {exc}") from exc
    coll["flamefit_changes"] = json.dumps(changes)
    return ImportResult(coll, head, cam_obj, lights, world, mat, bundle, rig, cams, list(bundle.warnings), changes)


def _rollback(created, scene, old, turned_off=()) -> None:
    restore_state(scene, old, bpy.data.objects)
    for obj_name in turned_off:
        obj = scene.objects.get(obj_name)
        if obj is not None:
            obj.hide_render = False
    for datablock, id_ in reversed(created):
        try:
            datablock.remove(id_)
        except (ReferenceError, RuntimeError):
            pass


def landmark_points_blender(result: ImportResult):
    """The bundle's landmark points on the imported head, in Blender world space."""
    pts = result.bundle.landmark_points() or []
    mw = result.head.matrix_world
    centre = Vector(result.head.get("flamefit_centre", (0.0, 0.0, 0.0)))
    return [mw @ (Vector(light_rig.to_blender(p)) - centre) for p in pts]
