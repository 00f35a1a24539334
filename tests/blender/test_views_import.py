"""#19.3: a bundle of several photos of one person (schema 3) imports as one head with one camera
per photo (that photo as its background), and the Views switcher shows each photo's camera,
expression, jaw and light. Schemas 1 and 2 still import (as one view); two results in one
scene leave each other alone."""

import json
import os

import bpy
import numpy as np
import pytest
import synth_bundle
import synth_views
from bpy_extras.object_utils import world_to_camera_view
from helpers import finish_fit, project_px, scene_snapshot
from mathutils import Vector

from blender_flamefit.blender import importer, views
from blender_flamefit.io.bundle import BundleError, load_bundle


@pytest.fixture
def person(tmp_path):
    folder = tmp_path / "person"
    synth_views.write_views_bundle(str(folder), photos_dir=str(tmp_path))
    return folder


def _objects(coll, kind):
    return [o for o in coll.objects if o.type == kind]


def _landmarks_px(scene, head, bundle, k=0):
    """View k's landmark points on the head as Blender evaluates it (keys mixed), projected
    through the scene camera."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = head.evaluated_get(depsgraph).to_mesh()
    co = np.array([v.co[:] for v in mesh.vertices])
    head.evaluated_get(depsgraph).to_mesh_clear()
    faces = np.array(bundle.mesh["faces"].data).reshape(-1, 3)
    fidx, bary = bundle.landmark_embedding(k)
    fidx, bary = np.array(fidx), np.array(bary).reshape(-1, 3)
    pts = [head.matrix_world @ Vector(p) for p in (co[faces[fidx]] * bary[..., None]).sum(1)]
    return project_px(scene, scene.camera, pts)


def test_three_photos_one_head_three_cameras(empty_scene, person):
    result = importer.import_bundle(bpy.context, person)
    coll = result.collection
    assert coll.name == "person"  # several photos: the bundle folder's name
    assert len(_objects(coll, "MESH")) == 1
    cams = _objects(coll, "CAMERA")
    assert sorted(c.name for c in cams) == ["person_front_camera", "person_left_camera", "person_right_camera"]
    assert empty_scene.camera.name == "person_front_camera"
    for cam in cams:
        k = cam["flamefit_view"]
        bg = cam.data.background_images[0].image
        expected = person / ("photo.png" if k == 0 else f"photo-{k + 1}.png")
        assert os.path.samefile(bpy.path.abspath(bg.filepath), expected), (cam.name, bg.filepath)
        assert bg.packed_file is not None  # packed like the single photo
    assert [s["name"] for s in views.states(coll)] == ["front", "left", "right"]
    # one head: one set of shape keys, one material, one pair of suns, one world
    assert len(result.head.data.materials) == 1 and len(_objects(coll, "LIGHT")) == 2
    assert any("3 photos" in c for c in result.changes)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_each_view_shows_its_photo(empty_scene, person, k):
    """After switching to view k, the head (with that photo's expression and jaw) seen through the
    scene camera lands on that photo's landmarks, at that photo's render size."""
    result = importer.import_bundle(bpy.context, person)
    views.apply_view(empty_scene, result.collection, k)
    info = json.loads((person / "result.json").read_text())["views"][k]
    assert empty_scene.camera["flamefit_view"] == k
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == tuple(info["camera"]["image_size"])
    err = np.linalg.norm(_landmarks_px(empty_scene, result.head, result.bundle) - np.array(info["landmarks_2d"]), axis=1)
    print(f"\nview {k}: landmark reprojection max {err.max():.2e} px")
    assert err.max() < 0.05
    keys = [kb.value for kb in result.head.data.shape_keys.key_blocks[1:]]
    expected_jaw = synth_views.DEFAULT_VIEWS[k]["jaw"] / synth_views.DEFAULT_VIEWS[0]["jaw"]
    assert keys == pytest.approx([0.0, *synth_views.DEFAULT_VIEWS[k]["expression"], expected_jaw], abs=1e-5)


KEY_ANGLE_MAX = 15.0  # degrees; measured 1-5 (in the reference frame instead: 37)


def test_switching_views_changes_the_lights(empty_scene, person):
    """Each view's suns come from that photo's SH, which is in that photo's camera frame: the
    third photo's light comes from the other side of its camera (its SH's x term is flipped)."""
    result = importer.import_bundle(bpy.context, person)
    coll = result.collection
    key = next(o for o in _objects(coll, "LIGHT") if o["flamefit_role"] == "key")
    seen = []
    for k in range(3):
        views.apply_view(empty_scene, coll, k)
        toward = key.rotation_quaternion @ Vector((0.0, 0.0, 1.0))  # world, toward the light
        in_camera = empty_scene.camera.matrix_world.to_3x3().inverted() @ toward
        sh = np.array(json.loads((person / "result.json").read_text())["views"][k]["lights"]["sh"])
        linear = sh[1:4].mean(1)  # the SH's (x, y, z) term: where its light comes from, camera frame
        angle = np.degrees(np.arccos(np.dot(linear / np.linalg.norm(linear), tuple(in_camera.normalized()))))
        print(f"\nview {k}: key sun {angle:.1f} degrees from the SH's linear term")
        assert angle < KEY_ANGLE_MAX
        seen.append((tuple(round(c, 4) for c in key.rotation_quaternion), round(key.data.energy, 4),
                     tuple(round(c, 4) for c in result.world.color)))
        assert views.active_index(coll) == k
        assert coll["flamefit_light_error"] == pytest.approx(views.states(coll)[k]["light_error"])
    assert len(set(seen)) == 3  # direction, strength and ambient colour differ per photo
    # back to the first: exactly the import's state
    views.apply_view(empty_scene, coll, 0)
    assert (tuple(round(c, 4) for c in key.rotation_quaternion), round(key.data.energy, 4),
            tuple(round(c, 4) for c in result.world.color)) == seen[0]


def test_view_switcher_operator_and_panel(empty_scene, person):
    from blender_flamefit.ui.panel import FLAMEFIT_PT_views

    result = importer.import_bundle(bpy.context, person)
    assert FLAMEFIT_PT_views.poll(bpy.context)  # the head is the active object
    assert bpy.ops.flamefit.set_view(index=2) == {"FINISHED"}
    assert empty_scene.camera.name == "person_right_camera"
    assert bpy.ops.flamefit.set_view(index=1, result=result.collection.name) == {"FINISHED"}
    assert empty_scene.camera.name == "person_left_camera"
    with pytest.raises(RuntimeError, match="has no view 4"):
        bpy.ops.flamefit.set_view(index=3)
    assert empty_scene.camera.name == "person_left_camera"


def test_views_panel_lists_the_photos(addon, empty_scene, person):
    from helpers import Recorder

    result = importer.import_bundle(bpy.context, person)
    views.apply_view(empty_scene, result.collection, 1)
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_views.draw(type("P", (), {"layout": rec})(), bpy.context)
    assert rec.buttons() == [("flamefit.set_view", "front  ·  0.7 px", False),
                             ("flamefit.set_view", "left  ·  1.7 px", True),
                             ("flamefit.set_view", "right  ·  2.7 px", False)]


def test_fit_several_photos_with_the_panel(addon, empty_scene, tmp_path, env_patch):
    """Choose Photos with three photos -> the panel says so and offers Fit 3 Photos -> one backend
    run with the three -> one head with three cameras (the fake backend writes a schema-3 bundle)."""

    from helpers import Recorder
    from testenv import backend_env

    photos = [tmp_path / f"{n}.png" for n in ("front", "left", "right")]
    for p in photos:
        synth_bundle.write_png(str(p), synth_bundle.albedo_texture(64))
    argv_file = tmp_path / "argv.json"
    env_patch(backend_env(fake=True, FAKE_FLAMEFIT_ARGV=argv_file))
    s = empty_scene.flamefit
    s.output_dir = str(tmp_path / "results")
    directory = str(tmp_path) + os.sep
    assert bpy.ops.flamefit.choose_photos(directory=directory, files=[{"name": p.name} for p in photos]) == {"FINISHED"}
    assert s.photo == str(photos[0]) and [p.path for p in s.photos] == [str(p) for p in photos]
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    assert ("flamefit.fit_photo", "Fit 3 Photos", False) in rec.buttons()
    assert any(t.startswith("3 photos, one head: front.png") for t in rec.texts()), rec.texts()
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    res = finish_fit(addon, job, 60)
    assert res.state == "DONE", res.message
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("fit") + 1:argv.index("-o")] == [str(p) for p in photos]
    coll = bpy.data.collections["front+2"]
    assert sorted(o.name for o in coll.objects if o.type == "CAMERA") == \
        ["front+2_front_camera", "front+2_left_camera", "front+2_right_camera"]
    # typing another photo into the field: that one alone is fitted next
    s.photo = str(tmp_path / "other.png")
    assert len(s.photos) == 0 and addon.ui.props.fit_photos(s) == [str(tmp_path / "other.png")]


def test_one_photo_bundles_import_as_one_view(empty_scene, tmp_path):
    """Schemas 1 and 2 (and a one-view schema 3) import as before: one camera, no switcher."""
    from blender_flamefit.ui.panel import FLAMEFIT_PT_views

    for version in (1, 2):
        folder = tmp_path / f"v{version}"
        synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / f"photo{version}.png"),
                                  schema_version=version)
        result = importer.import_bundle(bpy.context, folder)
        assert result.collection.name == f"photo{version}"
        assert len(_objects(result.collection, "CAMERA")) == 1
        assert [s["name"] for s in views.states(result.collection)] == [f"photo{version}"]
        assert not FLAMEFIT_PT_views.poll(bpy.context)
    folder = tmp_path / "single"
    synth_views.write_views_bundle(str(folder), views=synth_views.DEFAULT_VIEWS[:1], photos_dir=str(tmp_path))
    result = importer.import_bundle(bpy.context, folder)
    assert result.collection.name == "front" and result.camera.name == "front_camera"


def _state(coll) -> dict:
    bpy.context.view_layer.update()  # matrix_world as the user sees it
    out = {}
    for o in coll.objects:
        # 6 digits: Blender recomputes matrix_world from location/rotation at the next update
        out[o.name] = dict(matrix=[tuple(round(x, 6) + 0.0 for x in row) for row in o.matrix_world],
                           hidden=(o.hide_render, o.hide_viewport, o.hide_get()),
                           light=(o.data.energy, tuple(o.data.color)) if o.type == "LIGHT" else None,
                           keys=[k.value for k in o.data.shape_keys.key_blocks]
                           if o.type == "MESH" and o.data.shape_keys else None)
    world = bpy.data.worlds.get(coll.get(views.WORLD_PROP, ""))
    out["world"] = tuple(world.color) if world else None
    out["active"] = views.active_index(coll)
    return out


def _in_view(scene, cam, points):
    for p in points:
        v = world_to_camera_view(scene, cam, Vector(p))
        if v.z > cam.data.clip_start and -0.02 <= v.x <= 1.02 and -0.02 <= v.y <= 1.02:
            return True
    return False


def test_two_people_leave_each_other_alone(empty_scene, tmp_path):
    """A second multi-photo result lands out of every camera of the first (and the other way
    round); importing it and switching its views changes nothing of the first."""
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    synth_views.write_views_bundle(str(a_dir), photos_dir=str(tmp_path / "a_photos"))
    turned = [dict(v, yaw=v["yaw"] + 15.0) for v in synth_views.DEFAULT_VIEWS]
    synth_views.write_views_bundle(str(b_dir), views=turned, photos_dir=str(tmp_path / "b_photos"))
    a = importer.import_bundle(bpy.context, a_dir)
    views.apply_view(empty_scene, a.collection, 1)
    before = _state(a.collection)
    b = importer.import_bundle(bpy.context, b_dir)
    for k in (2, 1, 0):
        views.apply_view(empty_scene, b.collection, k)
        assert _state(a.collection) == before
    bpy.context.view_layer.update()  # matrix_world after the heads' locations were set
    for one, other in ((a, b), (b, a)):
        corners = [other.head.matrix_world @ Vector(c) for c in other.head.bound_box]
        for cam in one.cameras:
            assert not _in_view(empty_scene, cam, corners), f"{other.head.name} shows in {cam.name}"
            for cam_other in other.cameras:
                assert not _in_view(empty_scene, cam, [cam_other.matrix_world.translation]), \
                    f"{cam_other.name} shows in {cam.name}"


def test_a_later_result_avoids_every_view_of_the_suns(empty_scene, tmp_path):
    """The suns of an earlier result move when its view is switched: a later result keeps out of
    the lines they draw in every view, not only the one shown when it was imported."""
    from helpers import light_gizmo_points_in_view

    synth_views.write_views_bundle(str(tmp_path / "alice"), photos_dir=str(tmp_path / "a"))
    synth_views.write_views_bundle(str(tmp_path / "bob"), photos_dir=str(tmp_path / "b"))
    a = importer.import_bundle(bpy.context, tmp_path / "alice")
    b = importer.import_bundle(bpy.context, tmp_path / "bob")
    for k in range(3):
        views.apply_view(empty_scene, a.collection, k, set_camera=False, set_render_size=False)
        bpy.context.view_layer.update()
        for cam in b.cameras:
            views.apply_view(empty_scene, b.collection, cam["flamefit_view"])  # its frame, its render size
            for sun in a.lights:
                seen = light_gizmo_points_in_view(empty_scene, cam, sun)
                assert not seen, f"view {k}: {sun.name}'s lines show in {cam.name} ({len(seen)} points)"


BAD_VIEWS = {
    "not a list": (lambda d: d.update(views={"front": {}}), "has no views"),
    "no views": (lambda d: d.update(views=[]), "has no views"),
    "too many": (lambda d: d.update(views=d["views"] * 22), "66 views; at most 64"),
    "not a table": (lambda d: d["views"].__setitem__(1, [1, 2]), "views[1] is not a table"),
    "huge focal": (lambda d: d["views"][1]["camera"].update(focal_px=[1e300, 560.0]), "views[1]: camera.focal_px"),
    "no rotation": (lambda d: d["views"][1]["camera"]["world_to_camera"][0].__setitem__(0, 3.0),
                    "views[1]: camera.world_to_camera is not a rotation"),
    "short sh": (lambda d: d["views"][2]["lights"].update(sh=[[0, 0, 0]] * 4), "views[2]: lights.sh must be 9 rows"),
    "text expression": (lambda d: d["views"][1]["parameters"].update(expression=["a"]),
                        "views[1]: parameters.expression must be 1 finite numbers"),
    "huge jaw": (lambda d: d["views"][1]["parameters"]["pose"].update(jaw=[1e9, 0, 0]), "views[1]: parameters.pose.jaw"),
    "outside": (lambda d: d["views"][1]["files"].update(photo="../../etc/passwd"), "views[1].photo"),
    "landmarks": (lambda d: d["views"][1].update(landmarks_2d=[[1, 2, 3]]), "views[1]: landmarks_2d must be"),
    "long name": (lambda d: d["views"][1].update(name="x" * 300), "views[1]: name must be text"),
}


@pytest.mark.parametrize("case", sorted(BAD_VIEWS))
def test_bad_views_are_refused_in_one_line(empty_scene, person, case):
    edit, message = BAD_VIEWS[case]
    path = person / "result.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    before = scene_snapshot()
    with pytest.raises(BundleError) as err:
        importer.import_bundle(bpy.context, person)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert scene_snapshot() == before


def _with_view_keys(folder, shift=(0.0, 0.01, 0.0)):
    """Add what the backend writes for exact view states: keys "view2Pose" / "view3Pose" (here a
    rigid shift of the head, in model axes) and view_shape_key_values; returns the values (N, K)."""
    path = folder / "mesh.npz"
    mesh = dict(np.load(path))
    n_views, n_keys = 3, len(mesh["shape_key_names"])
    ref = load_bundle(folder)
    values = np.zeros((n_views, n_keys + 2), np.float32)
    for k in range(n_views):
        values[k, :n_keys] = ref.view_key_values(k)
        values[k, n_keys:] = [k == 1, k == 2]
    values[2, 0] = 0.5  # a value the old rule would not give (identity keys are 0 there)
    offset = np.tile(np.float32(shift), (len(mesh["vertices"]), 1))
    mesh["shape_key_names"] = np.array([*mesh["shape_key_names"], "view2Pose", "view3Pose"])
    mesh["shape_key_deltas"] = np.concatenate([mesh["shape_key_deltas"], offset[None], -offset[None]])
    mesh["shape_key_ranges"] = np.concatenate([mesh["shape_key_ranges"], [[0, 1], [0, 1]]]).astype(np.float32)
    mesh["shape_key_values"] = values[0]
    mesh["view_shape_key_values"] = values
    np.savez(path, **mesh)
    return values


def test_stored_view_key_values_are_used(empty_scene, person):
    """A bundle with view_shape_key_values: switching to view k sets every key to row k (its own
    view key 1), and the head Blender shows is basis + row k . deltas."""
    values = _with_view_keys(person)
    result = importer.import_bundle(bpy.context, person)
    blocks = result.head.data.shape_keys.key_blocks
    basis = np.array([v.co[:] for v in blocks[0].data])
    for k in range(3):
        views.apply_view(empty_scene, result.collection, k)
        assert [kb.value for kb in blocks[1:]] == pytest.approx(values[k].tolist(), abs=1e-6)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        mesh = result.head.evaluated_get(depsgraph).to_mesh()
        shown = np.array([v.co[:] for v in mesh.vertices])
        result.head.evaluated_get(depsgraph).to_mesh_clear()
        expected = basis + sum(values[k][i] * (np.array([v.co[:] for v in kb.data]) - basis)
                               for i, kb in enumerate(blocks[1:]))
        assert np.abs(shown - expected).max() < 1e-6
        shift = (shown - basis).mean(0)  # Blender axes: model y is Blender z
        assert shift[2] == pytest.approx({0: 0.0, 1: 0.01, 2: -0.01}[k], abs=2e-3)


BAD_VIEW_ARRAYS = {
    "rows": (lambda m: m.update(view_shape_key_values=m["view_shape_key_values"][:2]),
             "view_shape_key_values has shape (2, "),
    "nan": (lambda m: m["view_shape_key_values"].__setitem__((1, 0), np.nan), "view_shape_key_values contain NaN"),
    "no keys": (lambda m: [m.pop(n) for n in ("shape_key_names", "shape_key_deltas", "shape_key_ranges",
                                               "shape_key_values", "basis_vertices")],
                "view_shape_key_values without shape keys"),
    "embedding": (lambda m: m.update(view_landmark_face_idx=np.full((3, 68), 10 ** 8, np.int32),
                                     view_landmark_bary=np.full((3, 68, 3), 1 / 3, np.float32)),
                  "view_landmark_face_idx indexes faces outside"),
    "half embedding": (lambda m: m.update(view_landmark_face_idx=np.zeros((3, 68), np.int32)),
                       "view_landmark_face_idx and view_landmark_bary must come together"),
}


@pytest.mark.parametrize("case", sorted(BAD_VIEW_ARRAYS))
def test_bad_view_arrays_are_refused_in_one_line(empty_scene, person, case):
    _with_view_keys(person)
    edit, message = BAD_VIEW_ARRAYS[case]
    mesh = dict(np.load(person / "mesh.npz"))
    edit(mesh)
    np.savez(person / "mesh.npz", **mesh)
    before = scene_snapshot()
    with pytest.raises(BundleError) as err:
        importer.import_bundle(bpy.context, person)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert scene_snapshot() == before


def test_a_views_bad_photo_only_loses_its_background(empty_scene, person):
    (person / "photo-2.png").write_bytes(b"GIF89a not really")
    result = importer.import_bundle(bpy.context, person)
    assert any("view 'left'" in w and "GIF" in w for w in result.warnings), result.warnings
    left = next(c for c in result.cameras if c["flamefit_view"] == 1)
    assert not left.data.background_images
    assert all(c.data.background_images for c in result.cameras if c is not left)


def test_same_name_views_get_unique_names(tmp_path):
    folder = tmp_path / "twins"
    twins = [dict(v, name="front") for v in synth_views.DEFAULT_VIEWS]
    synth_views.write_views_bundle(str(folder), views=twins, photos_dir=str(tmp_path))
    assert [v.name for v in load_bundle(folder).views] == ["front", "front-2", "front-3"]
