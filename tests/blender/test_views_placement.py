"""A front photo and two profiles imported beside the default cube: every view's camera shows the
head over its own photo, nothing of the cube. In Blender 3.4 (s3 walk-through) the head stepped
2.75 m along the front camera's right, the axis the right profile's camera looks along, so that
camera saw the cube behind the head, over its whole photo."""

import bpy
import pytest
import synth_views
from mathutils import Vector

from blender_flamefit.blender import importer, views

PROFILES = (dict(synth_views.DEFAULT_VIEWS[0], yaw=0.0), dict(synth_views.DEFAULT_VIEWS[1], yaw=90.0),
            dict(synth_views.DEFAULT_VIEWS[2], yaw=-90.0))


@pytest.fixture
def default_cube(empty_scene):
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))
    return bpy.context.active_object


def _first_hits(scene, cam, n=9):
    """The object each of n x n rays through the camera's frame hits first (None: nothing)."""
    deps = bpy.context.evaluated_depsgraph_get()
    mw = cam.matrix_world
    frame = cam.data.view_frame(scene=scene)  # corners, camera space
    xs, ys, z = [v.x for v in frame], [v.y for v in frame], frame[0].z
    hits = []
    for i in range(n):
        for j in range(n):
            local = Vector((min(xs) + (max(xs) - min(xs)) * j / (n - 1), min(ys) + (max(ys) - min(ys)) * i / (n - 1), z))
            origin = mw.translation
            direction = (mw @ local - origin).normalized()
            hit, _, _, _, obj, _ = scene.ray_cast(deps, origin, direction, distance=cam.data.clip_end)
            hits.append(obj.name if hit else None)
    return hits


def test_no_view_shows_the_cube_over_its_photo(default_cube, tmp_path):
    scene = bpy.context.scene
    folder = tmp_path / "person"
    synth_views.write_views_bundle(str(folder), views=PROFILES, photos_dir=str(tmp_path))
    result = importer.import_bundle(bpy.context, folder)
    assert any("Cube in the way of its camera: moved" in c for c in result.changes), result.changes
    for k, cam in enumerate(result.cameras):
        views.apply_view(scene, result.collection, k)  # the view's render size: its photo's frame
        hits = _first_hits(scene, cam)
        assert "Cube" not in hits, (cam.name, hits.count("Cube"))
        assert result.head.name in hits  # and it does show the head
    # the cube is where it was
    assert tuple(default_cube.location) == (0.0, 0.0, 0.0)


def test_one_photo_still_steps_sideways(default_cube, tmp_path):
    folder = tmp_path / "front"
    synth_views.write_views_bundle(str(folder), views=PROFILES[:1], photos_dir=str(tmp_path))
    result = importer.import_bundle(bpy.context, folder)
    cam = result.camera
    right = (cam.matrix_world.to_3x3() @ Vector((1.0, 0.0, 0.0))).normalized()
    moved = result.head.location - bpy.context.scene.cursor.location
    assert moved.length > 0.5 and abs(moved.normalized().dot(right)) > 0.99
    assert any("moved" in c and "sideways" in c for c in result.changes), result.changes
    assert "Cube" not in _first_hits(bpy.context.scene, cam)
