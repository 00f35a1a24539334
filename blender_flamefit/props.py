"""Scene settings (saved with the .blend) and the window manager's runtime state (not saved)."""

import bpy
from bpy.props import BoolProperty, FloatProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup


class ImportOptions:
    """How a result becomes objects: shared by the scene settings (Fit Photo) and File > Import."""

    faithful_lighting: BoolProperty(
        name="Fit-faithful shading", default=True,
        description="Like the fit's SH model, the head casts no shadow and no bounce light on itself "
                    "(Cycles ray visibility) and has no specular; untick for self-shadowing")
    fill_light: BoolProperty(name="Fill light", default=True,
                             description="Add a second sun when it reduces the lighting error")
    pack_images: BoolProperty(name="Pack images", default=False,
                              description="Pack the albedo and the photo into the .blend file")

    def import_options(self) -> dict:
        return dict(faithful_lighting=self.faithful_lighting, fill_light=self.fill_light,
                    pack_images=self.pack_images)


class FlameFitSceneSettings(ImportOptions, PropertyGroup):
    photo: StringProperty(name="Photo", subtype="FILE_PATH", description="The photo of one face to fit")
    stage_photometric: BoolProperty(name="Photometric", default=True,
                                    description="Refine shape, expression and light against the photo's pixels")
    stage_texture: BoolProperty(name="Texture", default=True,
                                description="Extract the de-lit albedo texture from the photo")
    use_expression: BoolProperty(name="Expression", default=True,
                                 description="Fit the facial expression (off: neutral face)")
    output_dir: StringProperty(name="Results folder", subtype="DIR_PATH",
                               description="Where result bundles go (empty: Blender's user data folder)")
    last_result: StringProperty(name="Last result", subtype="FILE_PATH")
    last_metrics: StringProperty(name="Last metrics", default="")
    last_light_error: FloatProperty(name="Light fit error", default=0.0)
    last_model: StringProperty(name="Head model", default="")


class FlameFitRuntime(PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    error: StringProperty(default="")
    setup_running: BoolProperty(default=False)
    setup_failed: BoolProperty(default=False)
    setup_progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    setup_status: StringProperty(default="")


classes = (FlameFitSceneSettings, FlameFitRuntime)


def register_pointers():
    bpy.types.Scene.flamefit = PointerProperty(type=FlameFitSceneSettings)
    bpy.types.WindowManager.flamefit = PointerProperty(type=FlameFitRuntime)


def unregister_pointers():
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "flamefit"):
            del owner.flamefit
