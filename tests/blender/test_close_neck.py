"""Close the neck (issue #20.4): the import option caps the open head's neck cut with one
face of its own vertices, so the head is watertight, with the bundle's vertices and shape
keys unchanged; off (the default), the mesh is exactly the bundle's. On a bundle the real
backend fitted from skimage's astronaut."""

import bpy  # noqa: I001 - bpy first: it provides bmesh
import bmesh
import numpy as np
from blender_flamefit.blender.importer import import_bundle


def _border_edges(me):
    bm = bmesh.new()
    bm.from_mesh(me)
    count = sum(1 for e in bm.edges if e.is_boundary)
    bm.free()
    return count


def test_close_neck_makes_the_head_watertight(empty_scene, real_bundle):
    mesh_npz = np.load(real_bundle / "mesh.npz")
    open_ = import_bundle(bpy.context, str(real_bundle / "result.json"), collection_name="open").head
    closed = import_bundle(bpy.context, str(real_bundle / "result.json"), close_neck=True,
                           collection_name="closed").head
    assert len(open_.data.polygons) == len(mesh_npz["faces"]) and _border_edges(open_.data) > 20  # the neck cut
    assert _border_edges(closed.data) == 0
    assert len(closed.data.vertices) == len(mesh_npz["vertices"])
    assert len(closed.data.polygons) == len(mesh_npz["faces"]) + 1
    keys_open, keys_closed = open_.data.shape_keys.key_blocks, closed.data.shape_keys.key_blocks
    assert [k.name for k in keys_closed] == [k.name for k in keys_open]
    for a, b in zip(keys_open, keys_closed):
        assert np.allclose([v.co[:] for v in a.data], [v.co[:] for v in b.data])
    cap = closed.data.polygons[-1]
    uv = closed.data.uv_layers.active.data
    corners = np.array([uv[i].uv[:] for i in cap.loop_indices])
    assert np.ptp(corners, axis=0).max() == 0 and (0 <= corners).all() and (corners <= 1).all()  # one neck colour
    # outward: the cap's normal points down the neck, away from the head's centre
    centre = np.mean([v.co[:] for v in closed.data.vertices], axis=0)
    assert np.dot(np.array(cap.normal[:]), np.array(cap.center[:]) - centre) > 0
