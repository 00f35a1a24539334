"""The head mesh: vertices in Blender axes, triangles, per-corner UVs, smooth shading, and
a Basis shape key plus one key per identity / expression component."""

from __future__ import annotations

import operator
from array import array

import bpy

SHAPE_KEY_LIMIT = 10.0  # Blender's slider range is [-10, 10]


def to_blender_flat(flat):
    """Flat xyz array in model axes -> Blender axes, (x, y, z) -> (x, -z, y)."""
    src = array("f", flat)
    out = array("f", src)
    out[1::3] = array("f", map(operator.neg, src[2::3]))
    out[2::3] = src[1::3]
    return out


def build_mesh(name: str, bundle):
    """A new mesh datablock of the bundle's head; returns (mesh, flat Blender-axes vertices)."""
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


def add_shape_keys(obj, basis_flat, bundle) -> int:
    """Basis + one key per component (value 0 = the fit). Returns the number of keys."""
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
