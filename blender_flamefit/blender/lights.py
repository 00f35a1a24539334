"""SH lighting -> editable Blender lights and world (bpy part; the maths is in io/sh_math.py).

Calibration (measured in Cycles 3.4 and 5.0, Lambertian surface of albedo a):
- a world Background of colour W, strength 1, renders a * W on an unoccluded surface;
- a sun of strength S (W/m²) and colour C renders a * C * S / pi * max(0, n·d).
So a fitted sun term P * f(n·d) becomes a sun with strength pi * max(P), colour P / max(P)
and the fitted angular diameter, and the ambient term W becomes the world colour
(strength max(W)). In Cycles 5.0 a wide sun's falloff matches sh_math.cap_falloff within
1% (measured); Blender 3.4 renders wide suns darker, so there all suns stay narrow.
"""

from __future__ import annotations

import math

import bpy
from mathutils import Vector

from ..io import sh_math
from .placement import light_segments


def to_blender(v):
    """World/model axes (Y up, face toward +Z) -> Blender axes (Z up): (x, y, z) -> (x, -z, y)."""
    return (v[0], -v[2], v[1])


def from_blender(v):
    return (v[0], v[2], -v[1])


def _split(colour):
    peak = max(colour)
    if peak <= 0:
        return (1.0, 1.0, 1.0), 0.0
    return tuple(c / peak for c in colour), peak


def make_world(name: str, ambient) -> "bpy.types.World":
    world = bpy.data.worlds.new(name)
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    tree = world.node_tree
    bg = next((n for n in tree.nodes if n.type == "BACKGROUND"), None)
    if bg is None:
        bg = tree.nodes.new("ShaderNodeBackground")
        out = next((n for n in tree.nodes if n.type == "OUTPUT_WORLD"), None) or tree.nodes.new("ShaderNodeOutputWorld")
        tree.links.new(bg.outputs[0], out.inputs[0])
    set_world_ambient(world, ambient)
    return world


def set_world_ambient(world, ambient) -> None:
    """The world's Background colour and strength for the fitted ambient term W."""
    bg = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    colour, strength = _split(ambient)
    bg.inputs["Color"].default_value = (*colour, 1.0)
    bg.inputs["Strength"].default_value = strength
    world.color = colour  # viewport (solid/workbench) world colour
    world["flamefit_ambient"] = list(ambient)


def sun_distance(camera_offset, head_radius: float) -> float:
    """How far from the head a sun would sit on its own direction, beyond the camera."""
    return max(2.0, 2.5 * camera_offset.length, 10.0 * head_radius)


def out_of_view_location(target, toward_light, distance, views, step: float = 0.25, reach: float = 20.0):
    """Where to put a sun whose light comes from `toward_light` (unit, world): the place
    nearest to `target + toward_light * distance` (on its own direction, beyond the camera) from
    which nothing it draws in the 3D view (icon, direction and ground lines: a sun's place does
    not change its light) shows in any of `views` (placement.View). Tries offsets across its
    direction (up to `reach` m) and further out along it; None when none is free."""
    d = Vector(toward_light).normalized()
    e1 = d.orthogonal().normalized()
    e2 = d.cross(e1)
    candidates = []
    for along in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0):
        for k in range(int(reach / step) + 1):
            r = k * step
            for a in range(1 if k == 0 else 16):
                ang = 2.0 * math.pi * a / 16
                off = d * (along * distance) + (e1 * math.cos(ang) + e2 * math.sin(ang)) * r
                candidates.append((off.length, off))
    candidates.sort(key=lambda c: c[0])
    anchor = Vector(target) + d * distance
    for _, off in candidates:
        where = anchor + off
        drawn = light_segments(where, -d)
        if not any(v.sees(p, q) for v in views for p, q in drawn):
            return where
    return None


def sun_settings(sun: "sh_math.Sun") -> tuple:
    """(colour, energy, angle) of the Blender sun for a fitted sun term (the calibration above)."""
    colour, peak = _split(sun.colour)
    return tuple(colour), math.pi * peak, min(math.pi, max(0.0, sun.angle))


def make_sun(name: str, sun: "sh_math.Sun", target=(0.0, 0.0, 0.0), distance: float = 1.0) -> "bpy.types.Object":
    data = bpy.data.lights.new(name, "SUN")
    data.color, data.energy, data.angle = sun_settings(sun)
    obj = bpy.data.objects.new(name, data)
    d = Vector(to_blender(sun.direction)).normalized()
    # a sun shines along its local -Z: point local +Z at the light
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = d.to_track_quat("Z", "Y")
    obj.location = Vector(target) + d * distance
    obj["flamefit_role"] = sun.role
    obj["flamefit_sh_colour"] = list(sun.colour)
    obj["flamefit_angle_deg"] = math.degrees(sun.angle)
    return obj


SOFT_SUNS = bpy.app.version >= (4, 0, 0)  # wide suns render as the cap model (checked in 5.0, not in 3.4)


FACE_EMPHASIS = 4.0  # vertices inside the landmarks' outline weigh this much more


def face_emphasis(vertices_world, project, landmarks_2d, factor=FACE_EMPHASIS):
    """Per-vertex weights: `factor` for vertices projecting inside the convex hull of the 2D
    landmarks (the face, whose pixels the fit's light was estimated from), else 1."""
    hull = sh_math.convex_hull([(x, -y) for x, y in landmarks_2d])  # y down -> y up (CCW test)
    n = len(vertices_world) // 3
    out = []
    for v in range(n):
        try:
            p = project(vertices_world[3 * v:3 * v + 3])
        except ZeroDivisionError:
            out.append(1.0)
            continue
        out.append(factor if sh_math.inside_convex(hull, (p[0], -p[1])) else 1.0)  # y down -> y up
    return out


def rig_for_mesh(sh, vertices_world, faces, camera_position_world=None, fill=True, soft=None,
                 emphasis=None):
    """Fit the light rig to the normals the head shows the camera (sh_math.fit_lights)."""
    view = None
    if camera_position_world is not None:
        n = len(vertices_world) // 3
        centre = [sum(vertices_world[c::3]) / max(1, n) for c in range(3)]
        view = sh_math.normalize([camera_position_world[c] - centre[c] for c in range(3)])
    normals, weights = sh_math.head_normals(vertices_world, faces, view_dir=view, emphasis=emphasis)
    return sh_math.fit_lights(sh, normals, weights, max_suns=2 if fill else 1,
                              soft=SOFT_SUNS if soft is None else soft, view_dir=view)
