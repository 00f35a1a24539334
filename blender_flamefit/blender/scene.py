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


def use_as_scene(scene, camera_obj, world, intrinsics, standard_view: bool = True) -> None:
    """Make the imported camera and world the scene's, with the photo's render size."""
    scene.world = world
    scene.camera = camera_obj
    r = scene.render
    r.resolution_x, r.resolution_y = intrinsics["resolution"]
    r.resolution_percentage = 100
    r.pixel_aspect_x, r.pixel_aspect_y = intrinsics["pixel_aspect"]
    if standard_view:  # the albedo and lights were fitted for a plain sRGB display
        v = scene.view_settings
        v.view_transform = "Standard"
        v.look = "None"
        v.exposure = 0.0
        v.gamma = 1.0
