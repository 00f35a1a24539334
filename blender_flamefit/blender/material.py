"""The skin material: a Principled BSDF fed by the albedo texture (sRGB)."""

from __future__ import annotations

import bpy


def _set_input(node, names, value) -> bool:
    """Set the first existing input among `names` (Principled input names differ by version)."""
    for name in names:
        socket = node.inputs.get(name)
        if socket is not None:
            socket.default_value = value
            return True
    return False


def build_material(name: str, albedo_path: str, faithful: bool):
    """(material, albedo image), both new."""
    image = bpy.data.images.load(albedo_path, check_existing=False)
    image.name = f"{name}_albedo"
    image.colorspace_settings.name = "sRGB"
    mat = bpy.data.materials.new(f"{name}_skin")
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    tree = mat.node_tree
    bsdf = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    out = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"), None)
    if out is None:
        out = tree.nodes.new("ShaderNodeOutputMaterial")
    if bsdf is None:
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        tree.links.new(bsdf.outputs[0], out.inputs["Surface"])
    tex = tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.location = (bsdf.location.x - 320, bsdf.location.y)
    tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    _set_input(bsdf, ("Roughness",), 0.5)
    # The fit's shading is Lambertian: no specular keeps the render equal to the fit.
    _set_input(bsdf, ("Specular IOR Level", "Specular"), 0.0 if faithful else 0.3)
    _set_input(bsdf, ("Metallic",), 0.0)
    mat.diffuse_color = (0.8, 0.65, 0.55, 1.0)  # solid viewport colour
    return mat, image
