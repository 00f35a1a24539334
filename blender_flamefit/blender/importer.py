"""Result bundle -> Blender objects (bpy): puts together mesh.py, material.py, camera.py,
lights.py and scene.py. The bundle is read and validated first (io/bundle.py), so a bad
bundle raises BundleError before anything is created; a failure while creating removes
whatever was already made, so the scene is left unchanged.

Made for one bundle, in a new collection named after the photo:
- the head mesh (Blender axes: (x, y, z) -> (x, -z, y)), per-corner UVs, smooth shading,
  a Basis shape key plus one key per expression / identity component (value 0 = the fit);
- a Principled BSDF material with the albedo texture (sRGB);
- a key sun and a fill sun, and a new world whose colour is the ambient term, fitted to
  the SH lighting (io/sh_math.py explains the approximation);
- a camera reproducing the fit's pinhole projection, with the photo as background image;
  it becomes the scene camera and the render size becomes the photo's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import bpy
from mathutils import Vector

from ..io.bundle import Bundle, BundleError, load_bundle
from . import lights as light_rig
from .camera import build_camera
from .material import build_material
from .mesh import add_shape_keys, build_mesh
from .scene import restore_state, save_state, use_as_scene


@dataclass
class ImportResult:
    collection: object
    head: object
    camera: object
    lights: list
    world: object
    material: object
    bundle: Bundle
    rig: object
    warnings: list = field(default_factory=list)


# --- the whole import ---------------------------------------------------------------
def import_bundle(context, path, *, faithful_lighting: bool = True, fill_light: bool = True,
                  set_scene: bool = True, standard_view: bool = True, pack_images: bool = False,
                  collection_name: str = "") -> ImportResult:
    """Import one result bundle. Raises BundleError (nothing created) on a bad bundle."""
    bundle = load_bundle(path)
    name = collection_name or bundle.name
    scene = context.scene
    created = []  # (collection of bpy.data, id) for rollback
    old = save_state(scene)

    def track(datablock, id_):
        created.append((datablock, id_))
        return id_

    try:
        coll = track(bpy.data.collections, bpy.data.collections.new(name))
        scene.collection.children.link(coll)
        name = coll.name  # Blender may have added a .001 suffix

        me, verts_bl = build_mesh(f"{name}_head", bundle)
        track(bpy.data.meshes, me)
        head = track(bpy.data.objects, bpy.data.objects.new(f"{name}_head", me))
        coll.objects.link(head)
        n_keys = add_shape_keys(head, verts_bl, bundle)

        mat, albedo = build_material(name, bundle.files["albedo"], faithful_lighting)
        track(bpy.data.images, albedo)
        track(bpy.data.materials, mat)
        me.materials.append(mat)

        cam_obj, photo, intr = build_camera(f"{name}_camera", bundle)
        track(bpy.data.cameras, cam_obj.data)
        track(bpy.data.objects, cam_obj)
        if photo is not None and photo.users == 1:  # loaded by us (not already in the file)
            track(bpy.data.images, photo)
        coll.objects.link(cam_obj)

        # lights fitted to the normals the camera sees
        cam_pos_world = light_rig.from_blender(tuple(cam_obj.matrix_world.translation))
        verts_world = bundle.mesh["vertices"].data
        emphasis = None
        if bundle.landmarks_2d and len(bundle.landmarks_2d) >= 3:
            emphasis = light_rig.face_emphasis(verts_world, bundle.camera.project, bundle.landmarks_2d)
        rig = light_rig.rig_for_mesh(bundle.sh, verts_world, bundle.mesh["faces"].data,
                                     cam_pos_world, fill=fill_light, emphasis=emphasis)
        head_centre = Vector([sum(verts_bl[c::3]) / (len(verts_bl) // 3) for c in range(3)])
        lights = []
        for sun in rig.suns:
            lobj = light_rig.make_sun(f"{name}_{sun.role}", sun, target=head_centre,
                                      distance=max(0.5, (cam_obj.matrix_world.translation - head_centre).length))
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

        if set_scene:
            use_as_scene(scene, cam_obj, world, intr, standard_view=standard_view)
        if pack_images:
            albedo.pack()
            if photo is not None:
                photo.pack()
    except BundleError:
        _rollback(created, scene, old)
        raise
    except Exception as exc:
        _rollback(created, scene, old)
        raise BundleError(f"importing {bundle.folder} failed: {exc}") from exc
    return ImportResult(coll, head, cam_obj, lights, world, mat, bundle, rig, list(bundle.warnings))


def _rollback(created, scene, old) -> None:
    restore_state(scene, old, bpy.data.objects)
    for datablock, id_ in reversed(created):
        try:
            datablock.remove(id_)
        except (ReferenceError, RuntimeError):
            pass


def landmark_points_blender(result: ImportResult):
    """The bundle's landmark points on the imported head, in Blender world space."""
    pts = result.bundle.landmark_points() or []
    mw = result.head.matrix_world
    return [mw @ Vector(light_rig.to_blender(p)) for p in pts]
