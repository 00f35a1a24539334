"""Importing result bundles with the PyPI bpy module: objects, UVs, shape keys, material,
lights, world, camera (reprojection < 1 px), and bad bundles leave the scene unchanged."""

import json
import os

import bpy
import numpy as np
import pytest
from helpers import light_gizmo_points_in_view, project_px, scene_snapshot
from mathutils import Vector


def _import(path, **options):
    return bpy.ops.import_scene.flamefit(filepath=str(path), **options)


def _collection(name):
    return bpy.data.collections[name]


def test_import_creates_editable_objects(empty_scene, synth_bundle_dir):
    assert _import(synth_bundle_dir / "result.json") == {"FINISHED"}
    scene = empty_scene
    mesh_npz = np.load(synth_bundle_dir / "mesh.npz")
    coll = _collection("synthetic_photo")
    kinds = sorted(o.type for o in coll.objects)
    assert kinds == ["CAMERA", "LIGHT", "LIGHT", "MESH"]
    head = next(o for o in coll.objects if o.type == "MESH")
    me = head.data
    V, F = len(mesh_npz["vertices"]), len(mesh_npz["faces"])
    assert (len(me.vertices), len(me.polygons)) == (V, F)
    # axes: (x, y, z) -> (x, -z, y)
    co = np.empty(3 * V, np.float32)
    me.vertices.foreach_get("co", co)
    v = mesh_npz["basis_vertices"] if "basis_vertices" in mesh_npz else mesh_npz["vertices"]
    fitted = np.stack([mesh_npz["vertices"][:, 0], -mesh_npz["vertices"][:, 2], mesh_npz["vertices"][:, 1]], -1)
    centre = (fitted.min(0) + fitted.max(0)) / 2  # the origin sits at the head's centre, at the cursor
    assert np.abs(co.reshape(-1, 3) - (np.stack([v[:, 0], -v[:, 2], v[:, 1]], -1) - centre)).max() < 1e-6
    assert np.allclose(head.location, scene.cursor.location)
    # per-corner UVs and faces in order
    uv = np.empty(2 * 3 * F, np.float32)
    me.uv_layers.active.data.foreach_get("uv", uv)
    assert np.abs(uv.reshape(F, 3, 2) - mesh_npz["uv_coords"][mesh_npz["uv_faces"]]).max() < 1e-6
    loops = np.empty(3 * F, np.int32)
    me.loops.foreach_get("vertex_index", loops)
    assert np.array_equal(loops.reshape(F, 3), mesh_npz["faces"])
    assert all(p.use_smooth for p in me.polygons)
    # shape keys: basis + one per component, deltas in Blender axes, slider ranges
    keys = me.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", "exp_000", "exp_001", "id_000"]
    kco = np.empty(3 * V, np.float32)
    keys["exp_000"].data.foreach_get("co", kco)
    d = mesh_npz["shape_key_deltas"][0]
    assert np.abs((kco - co).reshape(-1, 3) - np.stack([d[:, 0], -d[:, 2], d[:, 1]], -1)).max() < 1e-6
    assert (keys["id_000"].slider_min, keys["id_000"].slider_max) == pytest.approx((-2.5, 2.5))
    values = mesh_npz["shape_key_values"] if "shape_key_values" in mesh_npz else np.zeros(len(keys) - 1)
    assert [k.value for k in keys[1:]] == pytest.approx(values.tolist(), abs=1e-6)  # the fit itself
    # material: Principled BSDF <- albedo image (sRGB)
    mat = me.materials[0]
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    link = bsdf.inputs["Base Color"].links[0]
    img = link.from_node.image
    assert link.from_node.type == "TEX_IMAGE" and img.colorspace_settings.name == "sRGB"
    assert os.path.samefile(bpy.path.abspath(img.filepath), synth_bundle_dir / "albedo.png")
    assert tuple(img.size) == (256, 256)
    # lights + world
    suns = [o for o in coll.objects if o.type == "LIGHT"]
    assert all(o.data.type == "SUN" and o.data.energy > 0 for o in suns)
    assert {o["flamefit_role"] for o in suns} == {"key", "fill"}
    assert scene.world.name == "synthetic_photo_world"
    bg = next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND")
    ambient = [c * bg.inputs["Strength"].default_value for c in bg.inputs["Color"].default_value[:3]]
    assert ambient == pytest.approx(list(scene.world["flamefit_ambient"]), abs=1e-6)
    assert min(ambient) >= 0  # may be ~0 when a wide sun carries the ambient light
    # camera with the photo behind, scene set up like the photo
    cam = next(o for o in coll.objects if o.type == "CAMERA")
    assert scene.camera == cam
    assert (scene.render.resolution_x, scene.render.resolution_y) == (320, 256)
    assert scene.render.pixel_aspect_x == scene.render.pixel_aspect_y == 1
    assert cam.data.show_background_images
    assert os.path.samefile(bpy.path.abspath(cam.data.background_images[0].image.filepath),
                            synth_bundle_dir / "photo.png")  # the bundle's own upright copy
    assert json.loads(coll["flamefit_metrics"])["landmark_error_px"] == 0.7
    assert scene.flamefit.last_result.endswith("result.json")


def test_head_faces_the_camera_upright(empty_scene, synth_bundle_dir):
    _import(synth_bundle_dir)
    coll = _collection("synthetic_photo")
    head = next(o for o in coll.objects if o.type == "MESH")
    cam = empty_scene.camera
    co = np.array([v.co[:] for v in head.data.vertices])
    top = co[np.argmax(co[:, 2])]
    nose = co[np.argmin(co[:, 1])]  # Blender: the face looks toward -Y
    px = project_px(empty_scene, cam, [Vector(top), Vector(nose)])
    assert px[0, 1] < px[1, 1]  # the top of the head is above the nose in the image
    assert cam.location.y < 0  # the camera is in front of the face


def test_camera_reprojects_landmarks_within_1px(empty_scene, synth_bundle_dir):
    from blender_flamefit.blender import importer

    result = importer.import_bundle(bpy.context, synth_bundle_dir)
    pts = importer.landmark_points_blender(result)
    err = np.linalg.norm(project_px(empty_scene, result.camera, pts) - np.array(result.bundle.landmarks_2d), axis=1)
    print(f"\nsynthetic bundle: landmark reprojection error max {err.max():.2e} px, mean {err.mean():.2e} px")
    assert err.max() < 1.0


@pytest.mark.parametrize("size, principal, focal", [
    ((200, 300), (90.0, 160.0), (500.0, 500.0)),  # portrait: vertical sensor fit
    ((320, 256), (171.3, 121.7), (560.0, 540.0)),  # non-square pixels
])
def test_camera_other_shapes(empty_scene, tmp_path, size, principal, focal):
    import synth_bundle

    from blender_flamefit.blender import importer

    synth_bundle.write_bundle(str(tmp_path / "b"), size=size, principal=principal, focal=focal)
    result = importer.import_bundle(bpy.context, tmp_path / "b")
    err = np.abs(project_px(empty_scene, result.camera, importer.landmark_points_blender(result))
                 - np.array(result.bundle.landmarks_2d)).max()
    assert err < 1.0


def test_flat_landmarks_3d_fallback(empty_scene, tmp_path):
    """Bundles without the embedding arrays use landmarks_3d."""
    import synth_bundle

    from blender_flamefit.blender import importer

    synth_bundle.write_bundle(str(tmp_path / "b"))
    mesh = dict(np.load(tmp_path / "b" / "mesh.npz"))
    del mesh["landmark_face_idx"], mesh["landmark_bary"]
    np.savez(tmp_path / "b" / "mesh.npz", **mesh)
    result = importer.import_bundle(bpy.context, tmp_path / "b")
    err = np.abs(project_px(empty_scene, result.camera, importer.landmark_points_blender(result))
                 - np.array(result.bundle.landmarks_2d)).max()
    assert err < 1.0


def test_import_is_one_undo_step_and_in_the_import_menu(addon):
    assert "UNDO" in bpy.types.IMPORT_SCENE_OT_flamefit.bl_options
    assert addon.ui.operators.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()


def _break_schema(f):
    data = json.loads((f / "result.json").read_text())
    data["schema_version"] = 7
    (f / "result.json").write_text(json.dumps(data))


@pytest.mark.parametrize("breakage, message", [
    (_break_schema, "schema version 7 is not supported"),
    (lambda f: os.remove(f / "albedo.png"), "missing albedo.png"),
    (lambda f: os.remove(f / "mesh.npz"), "missing mesh.npz"),
    (lambda f: (f / "mesh.npz").write_bytes(b"junk"), "cannot read the mesh"),
])
def test_bad_bundle_leaves_scene_unchanged(empty_scene, synth_bundle_dir, breakage, message):
    bpy.ops.mesh.primitive_cube_add()
    before = scene_snapshot()
    breakage(synth_bundle_dir)
    with pytest.raises(RuntimeError, match=message):
        _import(synth_bundle_dir / "result.json")
    assert scene_snapshot() == before


def test_failure_during_creation_rolls_back(empty_scene, synth_bundle_dir, monkeypatch):
    from blender_flamefit.blender import importer, lights

    bpy.ops.mesh.primitive_cube_add()
    before = scene_snapshot()

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(lights, "make_world", boom)
    with pytest.raises(importer.BundleError, match="simulated failure"):
        importer.import_bundle(bpy.context, synth_bundle_dir)
    assert scene_snapshot() == before


def test_import_twice_gets_unique_names(empty_scene, synth_bundle_dir):
    _import(synth_bundle_dir)
    _import(synth_bundle_dir)
    names = sorted(c.name for c in empty_scene.collection.children)
    assert names == ["synthetic_photo", "synthetic_photo.001"]


def _jpeg_with_exif_orientation(path, width, height, orientation=6):
    """A JPEG stored width x height whose EXIF says "rotate 90° to view" (what phones write)."""
    img = bpy.data.images.new("exif_tmp", width, height)
    img.filepath_raw = str(path)
    img.file_format = "JPEG"
    img.save()
    bpy.data.images.remove(img)
    raw = path.read_bytes()
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + \
        (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little") + \
        orientation.to_bytes(2, "little") + b"\x00\x00" + (0).to_bytes(4, "little")
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(raw[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + raw[2:])


def test_exif_rotated_photo_background_is_upright(empty_scene, tmp_path):
    """#11.14: the user's phone photo is stored sideways (EXIF orientation 6); the camera
    background must be the upright photo the backend fitted (the bundle's files.photo)."""
    import synth_bundle

    phone = tmp_path / "phone.jpg"
    _jpeg_with_exif_orientation(phone, 256, 320)  # stored 256x320, seen as 320x256
    synth_bundle.write_bundle(str(tmp_path / "b"), photo_path=str(phone))
    assert _import(tmp_path / "b") == {"FINISHED"}
    cam = empty_scene.camera
    image = cam.data.background_images[0].image
    assert tuple(image.size) == (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (320, 256)
    assert not os.path.samefile(bpy.path.abspath(image.filepath), phone)


def test_refused_bundles_leave_the_scene_unchanged(empty_scene, tmp_path):
    """#11.12/13: the hostile bundles of test_bundle_reader, through File > Import."""
    import synth_bundle

    outside = tmp_path / "secret.png"
    synth_bundle.write_png(str(outside), np.zeros((8, 8, 3), np.uint8))

    def edit(folder, fn):
        data = json.loads((folder / "result.json").read_text())
        fn(data)
        (folder / "result.json").write_text(json.dumps(data))

    def nan_deltas(folder):
        mesh = dict(np.load(folder / "mesh.npz"))
        mesh["shape_key_deltas"] = mesh["shape_key_deltas"].copy()
        mesh["shape_key_deltas"][1, 7, 2] = np.nan
        np.savez(folder / "mesh.npz", **mesh)

    breakages = {
        "absolute albedo": lambda f: edit(f, lambda d: d["files"].update(albedo=str(outside))),
        "parent photo": lambda f: edit(f, lambda d: d["files"].update(photo="../secret.png")),
        "symlinked albedo": lambda f: (os.remove(f / "albedo.png"), os.symlink(outside, f / "albedo.png")),
        "nan deltas": nan_deltas,
        "focal 1e308": lambda f: edit(f, lambda d: d["camera"].update(focal_px=[1e308, 1e308])),
        "image 1e9": lambda f: edit(f, lambda d: d["camera"].update(image_size=[1e9, 1e9])),
        "schema true": lambda f: edit(f, lambda d: d.update(schema_version=True)),
        "deep json": lambda f: (f / "result.json").write_text("[" * 100000 + "]" * 100000),
    }
    bpy.ops.mesh.primitive_cube_add()
    before = scene_snapshot()
    for what, breakage in breakages.items():
        folder = tmp_path / what.replace(" ", "_")
        synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / "p.png"))
        breakage(folder)
        with pytest.raises(RuntimeError) as err:  # the operator's ERROR report
            _import(folder)
        message = str(err.value).strip()
        assert message.startswith("Error: FlameFit: ") and "\n" not in message, (what, message)
        assert scene_snapshot() == before, what



def test_default_cube_stays_out_of_the_camera_view(empty_scene, synth_bundle_dir):
    """#12.1: on the default scene (a 2 m cube at the cursor) the result moves aside until
    the cube is neither in front of the head nor anywhere in the camera's view of the photo."""
    from bpy_extras.object_utils import world_to_camera_view

    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))
    cube = bpy.context.active_object
    assert _import(synth_bundle_dir / "result.json") == {"FINISHED"}
    coll = _collection("synthetic_photo")
    head = next(o for o in coll.objects if o.type == "MESH")
    cam = next(o for o in coll.objects if o.type == "CAMERA")
    assert (head.location - Vector((0.0, 0.0, 0.0))).length > 0.5  # moved beside the cube
    # no point of the cube's surface (sampled densely) in front of the camera falls in its frame
    g = np.linspace(-1, 1, 21)
    a, b = np.meshgrid(g, g)
    surface = []
    for axis in range(3):
        for side in (-1.0, 1.0):
            pts = np.zeros((a.size, 3))
            pts[:, axis] = side
            pts[:, (axis + 1) % 3], pts[:, (axis + 2) % 3] = a.ravel(), b.ravel()
            surface.append(pts)
    seen = 0
    for p in np.concatenate(surface):
        q = world_to_camera_view(empty_scene, cam, cube.matrix_world @ Vector(p))
        seen += bool(q.z > 0 and 0 <= q.x <= 1 and 0 <= q.y <= 1)
    assert seen == 0, f"{seen} points of the cube show in the camera view"


@pytest.mark.parametrize("cube", [False, True], ids=["empty", "default-cube"])
def test_light_gizmos_stay_out_of_the_camera_view(empty_scene, synth_bundle_dir, cube):
    """#12.10: no sun icon, direction line or ground line shows in the camera's view (a sun's
    place does not change its light; test_render_lighting checks the light)."""
    if cube:
        bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))
    assert _import(synth_bundle_dir / "result.json") == {"FINISHED"}
    coll = _collection("synthetic_photo")
    cam = next(o for o in coll.objects if o.type == "CAMERA")
    head = next(o for o in coll.objects if o.type == "MESH")
    suns = [o for o in coll.objects if o.type == "LIGHT"]
    assert len(suns) == 2
    for sun in suns:
        seen = light_gizmo_points_in_view(empty_scene, cam, sun)
        assert not seen, f"{sun.name}: {len(seen)} points of its lines show in the camera view"
        assert (sun.location - head.location).length < 30.0  # near enough to find in the 3D view

