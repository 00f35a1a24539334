"""Scene-level settings an import changes (camera, world, render size, view transform), and
putting them back when an import is rolled back."""

from __future__ import annotations


def save_state(scene) -> dict:
    r, v = scene.render, scene.view_settings
    return dict(camera=scene.camera, world=scene.world,
                res=(r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y),
                view=(v.view_transform, v.look, v.exposure, v.gamma))


def restore_state(scene, old: dict, objects) -> None:
    """`objects` is bpy.data.objects (the old camera may have been removed meanwhile)."""
    scene.camera = old["camera"] if old["camera"] and old["camera"].name in objects else None
    scene.world = old["world"]
    r, v = scene.render, scene.view_settings
    (r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y) = old["res"]
    (v.view_transform, v.look, v.exposure, v.gamma) = old["view"]


def set_photo_render_size(scene, resolution, pixel_aspect) -> None:
    """The render size of a photo: its pixels at 100 %, with the fit's pixel aspect."""
    r = scene.render
    r.resolution_x, r.resolution_y = resolution
    r.resolution_percentage = 100
    r.pixel_aspect_x, r.pixel_aspect_y = pixel_aspect


def use_as_scene(scene, camera_obj, world, intrinsics, *, set_camera: bool = True, set_render_size: bool = True,
                 set_world: bool = True, standard_view: bool = True) -> list:
    """Make the imported camera and world the scene's, with the photo's render size and the
    Standard view transform, each only when asked. Returns what changed, in words."""
    changes = []
    if set_world:
        scene.world = world
        changes.append(f"world: {world.name}")
    if set_camera:
        scene.camera = camera_obj
        changes.append(f"scene camera: {camera_obj.name}")
    if set_render_size:
        set_photo_render_size(scene, intrinsics["resolution"], intrinsics["pixel_aspect"])
        changes.append(f"render size: {scene.render.resolution_x}×{scene.render.resolution_y} (the photo's)")
    if standard_view:  # the albedo and lights were fitted for a plain sRGB display
        v = scene.view_settings
        if v.view_transform != "Standard":
            changes.append(f"view transform: Standard (was {v.view_transform})")
        v.view_transform = "Standard"
        v.look = "None"
        v.exposure = 0.0
        v.gamma = 1.0
    return changes


# --- where the result goes ------------------------------------------------------------------
SOLID_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


def world_box(obj):
    """(min, max) corners of an object's bounding box in world space."""
    from mathutils import Vector

    pts = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    return [min(p[i] for p in pts) for i in range(3)], [max(p[i] for p in pts) for i in range(3)]


def segment_in_halfspaces(p, q, halfspaces) -> bool:
    """Does any point of the segment p-q lie inside every half-space (n, c), n·x + c >= 0?
    (Liang-Barsky clipping: a box is six half-spaces, a camera's view five.)"""
    t0, t1 = 0.0, 1.0
    for n, c in halfspaces:
        fp = sum(a * b for a, b in zip(n, p)) + c
        fq = sum(a * b for a, b in zip(n, q)) + c
        if fp < 0 and fq < 0:
            return False
        if fp < 0:
            t0 = max(t0, fp / (fp - fq))
        elif fq < 0:
            t1 = min(t1, fp / (fp - fq))
        if t0 > t1:
            return False
    return True


def _box_halfspaces(lo, hi) -> list:
    axes = [tuple(float(i == j) for j in range(3)) for i in range(3)]
    return [(a, -lo[i]) for i, a in enumerate(axes)] + [(tuple(-x for x in a), hi[i]) for i, a in enumerate(axes)]


def occluders(scene, head_lo, head_hi, camera_pos, exclude=(), view_points=()) -> list:
    """Names of visible solid objects that would hide the head (box [head_lo, head_hi]) from a
    camera at `camera_pos`, that the head or the camera would sit inside, or that the camera
    would show over its photo (`view_points`: far points spread over the camera's frame)."""
    corners = [(x, y, z) for x in (head_lo[0], head_hi[0]) for y in (head_lo[1], head_hi[1])
               for z in (head_lo[2], head_hi[2])]
    centre = [(a + b) / 2 for a, b in zip(head_lo, head_hi, strict=True)]
    targets = (*corners, centre, *view_points)
    hits = []
    for obj in scene.objects:
        if obj.type not in SOLID_TYPES or obj.name in exclude or not obj.visible_get():
            continue
        lo, hi = world_box(obj)
        overlap = all(lo[i] <= head_hi[i] and head_lo[i] <= hi[i] for i in range(3))
        box = _box_halfspaces(lo, hi)
        if overlap or any(segment_in_halfspaces(camera_pos, t, box) for t in targets):
            hits.append(obj.name)
    return hits


def free_offset(blocked, direction, step=0.25, tries=160):
    """The smallest offset k*step along `direction` (the camera's right; right first, then left)
    at which `blocked(offset)` (names of what is in the way there) is empty; (offset, names in
    the way at the start). Nowhere free within reach: no offset (the panel says so)."""
    first = blocked((0.0, 0.0, 0.0))
    if not first:
        return (0.0, 0.0, 0.0), []
    for k in range(1, tries + 1):
        for side in (k, -k):
            off = tuple(side * step * d for d in direction)
            if not blocked(off):
                return off, first
    return (0.0, 0.0, 0.0), first


def lights_off_in_renders(scene, exclude) -> list:
    """Turn the scene's other lights off in renders (the fitted lights replace them); their
    names, for the report and the rollback."""
    names = []
    for obj in scene.objects:
        if obj.type == "LIGHT" and obj.name not in exclude and not obj.hide_render:
            obj.hide_render = True
            names.append(obj.name)
    return names


def select_and_frame(context, head) -> None:
    """Make the head the only selected and the active object and frame it in every 3D view
    (windows only: there are none in background mode)."""
    import bpy

    layer = context.view_layer
    for obj in layer.objects:
        if obj.select_get():
            obj.select_set(False)
    head.select_set(True)
    layer.objects.active = head
    if bpy.app.background:
        return
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type != "VIEW_3D":
                continue
            region = next((r for r in area.regions if r.type == "WINDOW"), None)
            if region is None:
                continue
            space = area.spaces.active
            if space.region_3d.view_perspective == "CAMERA":
                continue  # the camera view already shows the head through its camera
            try:
                with context.temp_override(window=window, area=area, region=region):
                    bpy.ops.view3d.view_selected(use_all_regions=False)
            except (RuntimeError, AttributeError, TypeError):
                pass
