"""#19.4: several results in one scene. Each lands in its own collection, out of every other
result's camera view (its head, camera and sun drawings, both ways round), its suns light only
its own head where Blender has light linking, and nothing of an earlier result changes."""

import bpy
import numpy as np
import pytest
import synth_bundle
from bpy_extras.object_utils import world_to_camera_view
from helpers import light_gizmo_points_in_view
from mathutils import Vector

BUNDLES = (dict(yaw=9.0, pitch=-6.0), dict(yaw=-25.0, pitch=4.0, sh=np.array(synth_bundle.SH_DEFAULT) * 0.8),
           dict(yaw=30.0, pitch=-10.0))


def _import(path, **options):
    assert bpy.ops.import_scene.flamefit(filepath=str(path), **options) == {"FINISHED"}
    return bpy.context.scene.collection.children[-1]


def _objects(coll, kind):
    return [o for o in coll.objects if o.type == kind]


def _state(coll) -> dict:
    """Everything of a result the user could see change: names, places, visibility, lights, materials."""
    out = {}
    for o in coll.objects:
        out[o.name] = dict(
            matrix=[tuple(round(x, 9) for x in row) for row in o.matrix_world],
            hidden=(o.hide_render, o.hide_viewport, o.hide_get()),
            collections=sorted(c.name for c in o.users_collection),
            materials=[s.material.name if s.material else None for s in o.material_slots],
            light=(o.data.energy, tuple(o.data.color), o.data.angle) if o.type == "LIGHT" else None,
            camera=(o.data.lens, o.data.shift_x, o.data.shift_y) if o.type == "CAMERA" else None,
            receivers=_receivers(o))
    return out


def _receivers(light):
    linking = getattr(light, "light_linking", None)
    if light.type != "LIGHT" or linking is None or linking.receiver_collection is None:
        return None
    return sorted(o.name for o in linking.receiver_collection.objects)


def _camera_drawing(scene, cam, n=60):
    """Points along what the 3D view draws for a camera: apex to its frame's corners, and the frame."""
    mw = cam.matrix_world
    corners = [mw @ v for v in cam.data.view_frame(scene=scene)]
    apex = mw.translation
    lines = [(apex, c) for c in corners] + [(corners[i], corners[i - 1]) for i in range(4)]
    return [a.lerp(b, float(t)) for a, b in lines for t in np.linspace(0, 1, n + 1)]


def _in_view(scene, cam, points):
    seen = []
    for p in points:
        v = world_to_camera_view(scene, cam, Vector(p))
        if v.z > cam.data.clip_start and -0.02 <= v.x <= 1.02 and -0.02 <= v.y <= 1.02:
            seen.append(tuple(p))
    return seen


@pytest.mark.parametrize("cube", [False, True], ids=["empty", "default-cube"])
def test_results_stay_out_of_each_others_view(empty_scene, tmp_path, cube):
    scene = empty_scene
    if cube:
        bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))
    colls, before = [], []
    for i, kw in enumerate(BUNDLES):
        folder = tmp_path / f"person{i}"
        synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / f"person{i}.png"), **kw)
        states = [_state(c) for c in colls]
        colls.append(_import(folder / "result.json"))
        # nothing of an earlier result changed: places, visibility, suns on, materials, names
        assert [_state(c) for c in colls[:-1]] == states
        before.append(states)
    assert [c.name for c in colls] == ["person0", "person1", "person2"]
    for a in colls:
        cam_a = _objects(a, "CAMERA")[0]
        for b in colls:
            if a is b:
                continue
            head_b = _objects(b, "MESH")[0]
            verts = [head_b.matrix_world @ v.co for v in head_b.data.vertices]
            assert not _in_view(scene, cam_a, verts), f"{head_b.name} shows in {cam_a.name}'s view"
            for sun in _objects(b, "LIGHT"):
                seen = light_gizmo_points_in_view(scene, cam_a, sun)
                assert not seen, f"{sun.name}'s lines show in {cam_a.name}'s view ({len(seen)} points)"
            cam_b = _objects(b, "CAMERA")[0]
            assert not _in_view(scene, cam_a, _camera_drawing(scene, cam_b)), \
                f"{cam_b.name} shows in {cam_a.name}'s view"
    for c in colls:  # every result's suns stay on in renders
        assert all(not s.hide_render for s in _objects(c, "LIGHT"))


@pytest.mark.skipif("light_linking" not in bpy.types.Object.bl_rna.properties, reason="light linking: Blender 4.0+")
def test_suns_light_only_their_own_head(empty_scene, tmp_path):
    colls = []
    for i, kw in enumerate(BUNDLES[:2]):
        folder = tmp_path / f"person{i}"
        synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / f"person{i}.png"), **kw)
        colls.append(_import(folder / "result.json"))
    for c in colls:
        head = _objects(c, "MESH")[0]
        for sun in _objects(c, "LIGHT"):
            assert _receivers(sun) == [head.name]
            receivers = sun.light_linking.receiver_collection
            assert [c.light_linking.link_state for c in receivers.collection_objects] == ["INCLUDE"]

