"""Measure how well the imported Blender lights reproduce the fit's SH shading.

Three Cycles renders of the same camera view (low resolution, few samples):
  1. the scene as imported (key + fill suns + world colour, Principled BSDF);
  2. an override material emitting the albedo texture (gives albedo per pixel);
  3. an override material emitting the world-space shading normal (0.5 n + 0.5).
The reference is the backend's model computed in numpy from the same bundle:
albedo * max(0, SH(n)) with n mapped back from Blender to model axes (negative SH values,
where a fit left the light unconstrained, display as black; no light can be negative).
Pixels: the head's, fully covered (alpha = 1); also reported for the face alone (inside
the convex hull of the bundle's 2D landmarks). Renders are saved as float EXR (linear)
and read back with bpy.
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from synth_bundle import sh_shading


def _render_exr(scene, path):
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path, check_existing=False)
    w, h = img.size
    px = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    return px.reshape(h, w, 4)[::-1]  # row 0 = top


def _emission_material(name, build):
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    tree = mat.node_tree
    for node in list(tree.nodes):
        tree.nodes.remove(node)
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    em = tree.nodes.new("ShaderNodeEmission")
    em.inputs["Strength"].default_value = 1.0
    tree.links.new(em.outputs[0], out.inputs["Surface"])
    build(tree, em.inputs["Color"])
    return mat


def convex_hull(points):
    """The add-on's hull (one implementation), as an (N, 2) array for the pixel test below."""
    from blender_flamefit.io.sh_math import convex_hull as addon_convex_hull

    return np.array(addon_convex_hull(np.asarray(points, dtype=float)))


def inside_hull(hull, shape):
    """Boolean (H, W) mask of pixel centres inside a convex polygon (pixel coordinates)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    inside = np.ones(shape, bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=False):
        inside &= (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0]) >= 0
    return inside


def _stats(render, reference, mask):
    diff = (render - reference)[mask]
    ref = reference[mask]
    return dict(rel_rmse=float(np.sqrt((diff ** 2).sum() / max((ref ** 2).sum(), 1e-12))),
                mae=float(np.abs(diff).mean()) if diff.size else 0.0,
                p95=float(np.percentile(np.abs(diff).max(-1), 95)) if diff.size else 0.0,
                bias=float(diff.mean()) if diff.size else 0.0, pixels=int(mask.sum()))


def measure(scene, head, albedo_image, sh, workdir, scale=0.5, samples=128, landmarks_2d=None):
    """Returns dict(rel_rmse, mae, p95, bias, pixels, face={...same on the face}, render,
    reference, mask) over the head pixels."""
    os.makedirs(workdir, exist_ok=True)
    r = scene.render
    saved = (r.engine, r.resolution_percentage, r.film_transparent, r.filepath,
             r.image_settings.file_format, r.image_settings.color_depth, r.filter_size)
    r.engine = "CYCLES"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    scene.cycles.max_bounces = 4
    r.resolution_percentage = int(scale * 100)
    r.film_transparent = True
    r.filter_size = 0.01  # no pixel-filter blur: the passes line up exactly
    r.image_settings.file_format = "OPEN_EXR"
    r.image_settings.color_depth = "32"
    vl = scene.view_layers[0]
    try:
        beauty = _render_exr(scene, os.path.join(workdir, "beauty.exr"))

        def albedo(tree, socket):
            tex = tree.nodes.new("ShaderNodeTexImage")
            tex.image = albedo_image
            tex.interpolation = "Linear"
            tree.links.new(tex.outputs["Color"], socket)

        def normal(tree, socket):
            geo = tree.nodes.new("ShaderNodeNewGeometry")
            vm = tree.nodes.new("ShaderNodeVectorMath")
            vm.operation = "MULTIPLY_ADD"
            vm.inputs[1].default_value = (0.5, 0.5, 0.5)
            vm.inputs[2].default_value = (0.5, 0.5, 0.5)
            tree.links.new(geo.outputs["Normal"], vm.inputs[0])
            tree.links.new(vm.outputs[0], socket)

        passes = {}
        for key, build in (("albedo", albedo), ("normal", normal)):
            mat = _emission_material(f"flamefit_test_{key}", build)
            vl.material_override = mat
            try:
                passes[key] = _render_exr(scene, os.path.join(workdir, f"{key}.exr"))
            finally:
                vl.material_override = None
                bpy.data.materials.remove(mat)
    finally:
        (r.engine, r.resolution_percentage, r.film_transparent, r.filepath,
         r.image_settings.file_format, r.image_settings.color_depth, r.filter_size) = saved

    mask = (beauty[..., 3] > 0.999) & (passes["albedo"][..., 3] > 0.999) & (passes["normal"][..., 3] > 0.999)
    nb = passes["normal"][..., :3] * 2 - 1  # Blender axes
    nb /= np.linalg.norm(nb, axis=-1, keepdims=True) + 1e-12
    n_model = np.stack([nb[..., 0], nb[..., 2], -nb[..., 1]], -1)  # (X, Y, Z) -> (x, y, z) = (X, Z, -Y)
    reference = passes["albedo"][..., :3] * np.clip(sh_shading(n_model, sh), 0, None)
    render = beauty[..., :3]
    out = _stats(render, reference, mask)
    if landmarks_2d is not None:
        face = mask & inside_hull(convex_hull(np.asarray(landmarks_2d) * scale), mask.shape)
        out["face"] = _stats(render, reference, face)
    out.update(render=render, reference=reference, mask=mask)
    return out


def save_side_by_side(path, m):
    """render | reference | |difference| x4 as an sRGB PNG (for looking at)."""
    def srgb(x):
        x = np.clip(x, 0, 1)
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    diff = np.abs(m["render"] - m["reference"]) * 4 * m["mask"][..., None]
    strip = np.concatenate([srgb(m["render"]), srgb(m["reference"]), np.clip(diff, 0, 1)], 1)
    rows, cols = np.nonzero(m["mask"])
    if len(rows):  # crop to the head (all three panels), 2x nearest upscale
        w = m["mask"].shape[1]
        r0, r1 = max(0, rows.min() - 4), rows.max() + 5
        c0, c1 = max(0, cols.min() - 4), min(w, cols.max() + 5)
        strip = np.concatenate([strip[r0:r1, k * w + c0:k * w + c1] for k in range(3)], 1)
        strip = strip.repeat(2, 0).repeat(2, 1)
    from synth_bundle import write_png
    write_png(path, (strip * 255 + 0.5).astype(np.uint8))
