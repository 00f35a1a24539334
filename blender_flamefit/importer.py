"""Result bundle -> Blender objects (bpy). The bundle is read and validated first
(bundle.py), so a bad bundle raises BundleError before anything is created; a failure
while creating removes whatever was already made, so the scene is left unchanged.

Made for one bundle, in a new collection named after the photo:
- the head mesh (Blender axes: (x, y, z) -> (x, -z, y)), per-corner UVs, smooth shading,
  a Basis shape key plus one key per expression / identity component (value 0 = the fit);
- a Principled BSDF material with the albedo texture (sRGB);
- a key sun and a fill sun, and a new world whose colour is the ambient term, fitted to
  the SH lighting (sh_math.py explains the approximation);
- a camera reproducing the fit's pinhole projection, with the photo as background image;
  it becomes the scene camera and the render size becomes the photo's.
"""

from __future__ import annotations

import json
import operator
from array import array
from dataclasses import dataclass, field

import bpy
from mathutils import Matrix, Vector

from . import sh_lights
from .bundle import Bundle, BundleError, load_bundle

SHAPE_KEY_LIMIT = 10.0  # Blender's slider range is [-10, 10]


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


# --- axes -------------------------------------------------------------------------
def to_blender_flat(flat):
    """Flat xyz array in model axes -> Blender axes, (x, y, z) -> (x, -z, y)."""
    src = array("f", flat)
    out = array("f", src)
    out[1::3] = array("f", map(operator.neg, src[2::3]))
    out[2::3] = src[1::3]
    return out


def camera_matrix_world(spec) -> Matrix:
    """Blender camera object matrix: camera-to-world in Blender axes.

    X_cam = R X + t (the camera looks down -Z, +Y up, like a Blender camera), and Blender
    world = B X with B = (x, y, z) -> (x, -z, y), so cam->world = [B R^T | -B R^T t]."""
    R = Matrix(spec.rotation)
    t = Vector(spec.translation)
    # tolerate tiny non-orthogonality from float round trips
    R = R.to_quaternion().to_matrix()
    B = Matrix(((1, 0, 0), (0, 0, -1), (0, 1, 0)))
    rot = B @ R.transposed()
    loc = -(rot @ t)
    m = rot.to_4x4()
    m.translation = loc
    return m


def camera_intrinsics(spec):
    """Blender camera settings for a pinhole with focal_px/principal_px (see module doc of
    Blender's BKE_camera_params_compute_viewplane). Returns a dict of settings."""
    W, H = spec.image_size
    fx, fy = spec.focal_px
    cx, cy = spec.principal_px
    ycor = fx / fy  # pixel_aspect_y / pixel_aspect_x; 1 for square pixels
    if ycor >= 1:
        aspect_x, aspect_y = 1.0, ycor
    else:
        aspect_x, aspect_y = 1.0 / ycor, 1.0
    sensor = 36.0
    if W * aspect_x >= H * aspect_y:
        fit, viewfac = "HORIZONTAL", W
    else:
        fit, viewfac = "VERTICAL", ycor * H
    lens = fx * sensor / viewfac
    return dict(
        sensor_fit=fit, sensor=sensor, lens=lens,
        shift_x=(W / 2 - cx) / viewfac,
        shift_y=(cy - H / 2) * ycor / viewfac,
        resolution=(W, H), pixel_aspect=(aspect_x, aspect_y),
    )


# --- pieces -----------------------------------------------------------------------
def build_mesh(name: str, bundle: Bundle):
    mesh_np = bundle.mesh
    verts = to_blender_flat(mesh_np["vertices"].data)
    faces = mesh_np["faces"].data
    F = mesh_np["faces"].shape[0]
    V = mesh_np["vertices"].shape[0]
    me = bpy.data.meshes.new(name)
    me.vertices.add(V)
    me.vertices.foreach_set("co", verts)
    me.loops.add(3 * F)
    me.loops.foreach_set("vertex_index", array("i", faces))
    me.polygons.add(F)
    me.polygons.foreach_set("loop_start", array("i", range(0, 3 * F, 3)))
    if bpy.app.version < (4, 0, 0):
        me.polygons.foreach_set("loop_total", array("i", [3]) * F)
    # per-corner UVs: uv_coords[uv_faces] in loop order (loop = 3 f + k)
    uv_coords, uv_faces = mesh_np["uv_coords"].data, mesh_np["uv_faces"].data
    uv_flat = array("f", bytes(8 * 3 * F))
    uv_flat[0::2] = array("f", (uv_coords[2 * i] for i in uv_faces))
    uv_flat[1::2] = array("f", (uv_coords[2 * i + 1] for i in uv_faces))
    me.update(calc_edges=True)
    uv_layer = me.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", uv_flat)
    if hasattr(me, "shade_smooth"):
        me.shade_smooth()
    else:
        me.polygons.foreach_set("use_smooth", array("b", [1]) * F)
    me.validate(clean_customdata=False)
    me.update()
    return me, verts


def add_shape_keys(obj, basis_flat, bundle: Bundle) -> int:
    keys = bundle.shape_keys
    if not keys:
        return 0
    obj.shape_key_add(name="Basis", from_mix=False)
    for key_name, deltas, (lo, hi) in keys:
        kb = obj.shape_key_add(name=key_name, from_mix=False)
        moved = array("f", map(operator.add, basis_flat, to_blender_flat(deltas)))
        kb.data.foreach_set("co", moved)
        lo = max(-SHAPE_KEY_LIMIT, min(SHAPE_KEY_LIMIT, lo))
        hi = max(-SHAPE_KEY_LIMIT, min(SHAPE_KEY_LIMIT, hi))
        if hi <= lo:
            lo, hi = min(lo, -1.0), max(hi, 1.0)
        kb.slider_min = -SHAPE_KEY_LIMIT
        kb.slider_max = hi
        kb.slider_min = lo
        kb.value = 0.0
    obj.data.shape_keys.name = f"{obj.name}_keys"
    return len(keys)


def _set_input(node, names, value) -> bool:
    """Set the first existing input among `names` (Principled input names differ by version)."""
    for name in names:
        socket = node.inputs.get(name)
        if socket is not None:
            socket.default_value = value
            return True
    return False


def build_material(name: str, albedo_path: str, faithful: bool):
    image = bpy.data.images.load(albedo_path, check_existing=False)
    image.name = f"{name}_albedo"
    image.colorspace_settings.name = "sRGB"
    mat = bpy.data.materials.new(f"{name}_skin")
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    tree = mat.node_tree
    bsdf = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    out = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"), None)
    if out is None:
        out = tree.nodes.new("ShaderNodeOutputMaterial")
    if bsdf is None:
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        tree.links.new(bsdf.outputs[0], out.inputs["Surface"])
    tex = tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.location = (bsdf.location.x - 320, bsdf.location.y)
    tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    _set_input(bsdf, ("Roughness",), 0.5)
    # The fit's shading is Lambertian: no specular keeps the render equal to the fit.
    _set_input(bsdf, ("Specular IOR Level", "Specular"), 0.0 if faithful else 0.3)
    _set_input(bsdf, ("Metallic",), 0.0)
    mat.diffuse_color = (0.8, 0.65, 0.55, 1.0)  # solid viewport colour
    return mat, image


def build_camera(name: str, bundle: Bundle):
    spec = bundle.camera
    intr = camera_intrinsics(spec)
    cam = bpy.data.cameras.new(name)
    cam.type = "PERSP"
    cam.lens_unit = "MILLIMETERS"
    cam.sensor_fit = intr["sensor_fit"]
    cam.sensor_width = intr["sensor"]
    cam.sensor_height = intr["sensor"]
    cam.lens = intr["lens"]
    cam.shift_x = intr["shift_x"]
    cam.shift_y = intr["shift_y"]
    m = camera_matrix_world(spec)
    # near/far around the head
    dist = max(0.05, Vector(spec.translation).length)  # ~ camera to head distance
    cam.clip_start = min(0.01, dist / 20)
    cam.clip_end = max(100.0, dist * 20)
    obj = bpy.data.objects.new(name, cam)
    obj.matrix_world = m
    photo = None
    if bundle.photo_path:
        photo = bpy.data.images.load(bundle.photo_path, check_existing=True)
        bg = cam.background_images.new()
        bg.image = photo
        bg.alpha = 1.0
        bg.display_depth = "BACK"
        bg.frame_method = "STRETCH"
        cam.show_background_images = True
    obj["flamefit_focal_px"] = list(spec.focal_px)
    obj["flamefit_principal_px"] = list(spec.principal_px)
    return obj, photo, intr


# --- the whole import ---------------------------------------------------------------
def import_bundle(context, path, *, faithful_lighting: bool = True, fill_light: bool = True,
                  set_scene: bool = True, standard_view: bool = True, pack_images: bool = False,
                  collection_name: str = "") -> ImportResult:
    """Import one result bundle. Raises BundleError (nothing created) on a bad bundle."""
    bundle = load_bundle(path)
    name = collection_name or bundle.name
    scene = context.scene
    created = []  # (collection of bpy.data, id) for rollback
    old = dict(camera=scene.camera, world=scene.world,
               res=(scene.render.resolution_x, scene.render.resolution_y,
                    scene.render.resolution_percentage, scene.render.pixel_aspect_x,
                    scene.render.pixel_aspect_y),
               view=(scene.view_settings.view_transform, scene.view_settings.look,
                     scene.view_settings.exposure, scene.view_settings.gamma))

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
        cam_pos_world = sh_lights.from_blender(tuple(cam_obj.matrix_world.translation))
        verts_world = bundle.mesh["vertices"].data
        emphasis = None
        if bundle.landmarks_2d and len(bundle.landmarks_2d) >= 3:
            emphasis = sh_lights.face_emphasis(verts_world, bundle.camera.project, bundle.landmarks_2d)
        rig = sh_lights.rig_for_mesh(bundle.sh, verts_world, bundle.mesh["faces"].data,
                                     cam_pos_world, fill=fill_light, emphasis=emphasis)
        head_centre = Vector([sum(verts_bl[c::3]) / (len(verts_bl) // 3) for c in range(3)])
        lights = []
        for sun in rig.suns:
            lobj = sh_lights.make_sun(f"{name}_{sun.role}", sun, target=head_centre,
                                      distance=max(0.5, (cam_obj.matrix_world.translation - head_centre).length))
            track(bpy.data.lights, lobj.data)
            track(bpy.data.objects, lobj)
            coll.objects.link(lobj)
            lights.append(lobj)
        world = track(bpy.data.worlds, sh_lights.make_world(f"{name}_world", rig.ambient))

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
            scene.world = world
            scene.camera = cam_obj
            r = scene.render
            r.resolution_x, r.resolution_y = intr["resolution"]
            r.resolution_percentage = 100
            r.pixel_aspect_x, r.pixel_aspect_y = intr["pixel_aspect"]
            if standard_view:
                scene.view_settings.view_transform = "Standard"
                scene.view_settings.look = "None"
                scene.view_settings.exposure = 0.0
                scene.view_settings.gamma = 1.0
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
    scene.camera = old["camera"] if old["camera"] and old["camera"].name in bpy.data.objects else None
    scene.world = old["world"]
    r = scene.render
    (r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y) = old["res"]
    v = scene.view_settings
    (v.view_transform, v.look, v.exposure, v.gamma) = old["view"]
    for datablock, id_ in reversed(created):
        try:
            datablock.remove(id_)
        except (ReferenceError, RuntimeError):
            pass


def landmark_points_blender(result: ImportResult):
    """The bundle's landmark points on the imported head, in Blender world space."""
    pts = result.bundle.landmark_points() or []
    mw = result.head.matrix_world
    return [mw @ Vector(sh_lights.to_blender(p)) for p in pts]


def format_metrics(metrics: dict) -> list:
    labels = {"landmark_error_px": ("Landmark error", "{:.2f} px"),
              "landmark_error_eye_fraction": ("  (eye distance)", "{:.1%}"),
              "photometric_error": ("Photometric error", "{:.4f}"),
              "psnr_db": ("PSNR", "{:.1f} dB")}
    out = []
    for key, value in metrics.items():
        label, fmt = labels.get(key, (key.replace("_", " ").capitalize(), "{:.4g}"))
        try:
            out.append((label, fmt.format(value)))
        except (ValueError, TypeError):
            continue
    return out


