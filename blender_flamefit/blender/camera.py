"""The camera reproducing the fit's pinhole projection, with the photo as background image."""

from __future__ import annotations

import bpy
from mathutils import Matrix, Vector


def camera_matrix_world(spec) -> Matrix:
    """Blender camera object matrix: camera-to-world in Blender axes.

    X_cam = R X + t (the camera looks down -Z, +Y up, like a Blender camera), and Blender
    world = B X with B = (x, y, z) -> (x, -z, y), so cam->world = [B R^T | -B R^T t]."""
    R = Matrix(spec.rotation)
    t = Vector(spec.translation)
    # tolerate tiny non-orthogonality from float round trips
    R = R.to_quaternion().to_matrix()
    B = Matrix(((1, 0, 0), (0, 0, -1), (0, 1, 0)))
    rot = B @ R.transposed()
    loc = -(rot @ t)
    m = rot.to_4x4()
    m.translation = loc
    return m


def camera_intrinsics(spec):
    """Blender camera settings for a pinhole with focal_px/principal_px (see module doc of
    Blender's BKE_camera_params_compute_viewplane). Returns a dict of settings."""
    W, H = spec.image_size
    fx, fy = spec.focal_px
    cx, cy = spec.principal_px
    ycor = fx / fy  # pixel_aspect_y / pixel_aspect_x; 1 for square pixels
    if ycor >= 1:
        aspect_x, aspect_y = 1.0, ycor
    else:
        aspect_x, aspect_y = 1.0 / ycor, 1.0
    sensor = 36.0
    if W * aspect_x >= H * aspect_y:
        fit, viewfac = "HORIZONTAL", W
    else:
        fit, viewfac = "VERTICAL", ycor * H
    lens = fx * sensor / viewfac
    return dict(
        sensor_fit=fit, sensor=sensor, lens=lens,
        shift_x=(W / 2 - cx) / viewfac,
        shift_y=(cy - H / 2) * ycor / viewfac,
        resolution=(W, H), pixel_aspect=(aspect_x, aspect_y),
    )


def build_camera(name: str, bundle):
    """(camera object, photo image or None, intrinsics dict). The photo is the bundle's
    upright photo when present (Bundle.photo_path)."""
    spec = bundle.camera
    intr = camera_intrinsics(spec)
    cam = bpy.data.cameras.new(name)
    cam.type = "PERSP"
    cam.lens_unit = "MILLIMETERS"
    cam.sensor_fit = intr["sensor_fit"]
    cam.sensor_width = intr["sensor"]
    cam.sensor_height = intr["sensor"]
    cam.lens = intr["lens"]
    cam.shift_x = intr["shift_x"]
    cam.shift_y = intr["shift_y"]
    m = camera_matrix_world(spec)
    # near/far around the head
    dist = max(0.05, Vector(spec.translation).length)  # ~ camera to head distance
    cam.clip_start = min(0.01, dist / 20)
    cam.clip_end = max(100.0, dist * 20)
    cam.display_size = max(0.05, dist / 3)  # drawn about the head's size, not a 1 m pyramid over it
    obj = bpy.data.objects.new(name, cam)
    obj.matrix_world = m
    photo = None
    if bundle.photo_path:
        photo = bpy.data.images.load(bundle.photo_path, check_existing=True)
        bg = cam.background_images.new()
        bg.image = photo
        bg.alpha = 1.0
        bg.display_depth = "BACK"
        bg.frame_method = "STRETCH"
        cam.show_background_images = True
    obj["flamefit_focal_px"] = list(spec.focal_px)
    obj["flamefit_principal_px"] = list(spec.principal_px)
    obj["flamefit_image_size"] = list(spec.image_size)  # its photo's frame (placement.camera_view)
    return obj, photo, intr
