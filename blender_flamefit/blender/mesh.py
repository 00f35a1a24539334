"""The head mesh: vertices in Blender axes, triangles, per-corner UVs, smooth shading, and
a Basis shape key plus one key per identity / expression component.

Schema 2 bundles carry the neutral fitted identity (`basis_vertices`) and each key's fitted
value: the Basis is that neutral face and the keys hold the fitted expression/jaw, so a user
can dial it up, down or off. Schema 1 bundles: the Basis is the fitted mesh, every key 0."""

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


def centred(flat, centre):
    """Flat xyz array minus `centre` (the object's origin goes to the head's centre)."""
    out = array("f", flat)
    for c in range(3):
        out[c::3] = array("f", (v - centre[c] for v in out[c::3]))
    return out


def bbox_centre(flat):
    return [(min(flat[c::3]) + max(flat[c::3])) / 2 for c in range(3)]


def build_mesh(name: str, bundle, centre=(0.0, 0.0, 0.0), close_neck: bool = False):
    """A new mesh datablock of the bundle's head, in Blender axes minus `centre` (the object's
    origin). Its vertices are the shape keys' Basis (schema 2: the neutral face). Returns
    (mesh, flat Basis vertices). close_neck: cap every open border (the neck cut) with one
    face of its own vertices (`close_borders`), for a watertight head."""
    mesh_np = bundle.mesh
    basis = bundle.basis_vertices if bundle.shape_keys else None
    verts = centred(to_blender_flat(basis if basis is not None else mesh_np["vertices"].data), centre)
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
    if close_neck:
        close_borders(me)
    me.validate(clean_customdata=False)
    me.update()
    return me, verts


def close_borders(me) -> int:
    """Cap each closed loop of border edges (the open head's neck cut) with one polygon of
    the loop's own vertices, so the head is watertight; no vertex is added, so shape keys
    and the vertex order stay the bundle's. The cap's corners all take the UV of the
    loop's first vertex (a single colour: the neck's). Returns the polygons added."""
    import bmesh

    bm = bmesh.new()
    bm.from_mesh(me)
    uv = bm.loops.layers.uv.active
    border = [e for e in bm.edges if e.is_boundary]
    before = len(bm.faces)
    added = bmesh.ops.holes_fill(bm, edges=border, sides=0)["faces"]
    for face in added:
        source = next(loop for loop in face.loops[0].vert.link_loops if loop.face not in added)
        for loop in face.loops:
            loop[uv].uv = source[uv].uv
        face.smooth = False  # a flat cut
    bm.normal_update()
    bm.to_mesh(me)
    bm.free()
    return len(me.polygons) - before


def add_shape_keys(obj, basis_flat, bundle) -> int:
    """Basis + one key per component, each at its fitted value (schema 1: 0). Returns the
    number of keys."""
    keys = bundle.shape_keys
    if not keys:
        return 0
    values = bundle.shape_key_values or [0.0] * len(keys)
    obj.shape_key_add(name="Basis", from_mix=False)
    for (key_name, deltas, (lo, hi)), value in zip(keys, values, strict=True):
        kb = obj.shape_key_add(name=key_name, from_mix=False)
        moved = array("f", map(operator.add, basis_flat, to_blender_flat(deltas)))
        kb.data.foreach_set("co", moved)
        lo = max(-SHAPE_KEY_LIMIT, min(SHAPE_KEY_LIMIT, lo))
        hi = max(-SHAPE_KEY_LIMIT, min(SHAPE_KEY_LIMIT, hi))
        if hi <= lo:
            lo, hi = min(lo, -1.0), max(hi, 1.0)
        value = max(-SHAPE_KEY_LIMIT, min(SHAPE_KEY_LIMIT, float(value)))
        lo, hi = min(lo, value), max(hi, value)  # the slider never clamps the fitted value
        kb.slider_min = -SHAPE_KEY_LIMIT
        kb.slider_max = hi
        kb.slider_min = lo
        kb.value = value
    obj.data.shape_keys.name = f"{obj.name}_keys"
    return len(keys)
