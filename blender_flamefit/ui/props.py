"""Scene settings (saved with the .blend) and the window manager's runtime state (not saved).
The import and fit options are made from the tables in io/options.py."""

import bpy
from bpy.props import BoolProperty, FloatProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

from ..io.options import FIT_OPTIONS, IMPORT_OPTIONS, as_keywords


def _bool_properties(options) -> dict:
    return {o.name: BoolProperty(name=o.label, default=o.default, description=o.description) for o in options}


class ImportOptions:
    """How a result becomes objects: shared by the scene settings (Fit Photo) and File > Import."""

    __annotations__ = _bool_properties(IMPORT_OPTIONS)

    def import_options(self) -> dict:
        return as_keywords(self, IMPORT_OPTIONS)


class FitOptions:
    """What the fit runs (the panel's stage and expression toggles)."""

    __annotations__ = _bool_properties(FIT_OPTIONS)

    def fit_options(self) -> dict:
        return as_keywords(self, FIT_OPTIONS)


class FlameFitSceneSettings(ImportOptions, FitOptions, PropertyGroup):
    photo: StringProperty(name="Photo", subtype="FILE_PATH", description="The photo of one face to fit")
    output_dir: StringProperty(name="Results folder", subtype="DIR_PATH",
                               description="Where result bundles go (empty: Blender's user data folder)")
    last_result: StringProperty(name="Last result", subtype="FILE_PATH")
    last_metrics: StringProperty(name="Last metrics", default="")
    last_light_error: FloatProperty(name="Light fit error", default=0.0)
    last_model: StringProperty(name="Head model", default="")
    last_changes: StringProperty(name="Scene changes", default="[]")
    landmarks_file: StringProperty(
        name="Landmarks", subtype="FILE_PATH",
        description="68 iBUG points (.pts, .json or .npy) to use instead of the detector, e.g. when no face is found")


class FlameFitRuntime(PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    imported: StringProperty(default="")  # the collection the status's import made
    error: StringProperty(default="")
    error_kind: StringProperty(default="")  # "backend": shown only while no backend is usable
    setup_running: BoolProperty(default=False)
    setup_failed: BoolProperty(default=False)
    setup_progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    setup_status: StringProperty(default="")
    setup_lines: StringProperty(default="")  # pip's last output lines
    setup_log: StringProperty(default="")  # the set-up's log file


classes = (FlameFitSceneSettings, FlameFitRuntime)


def register_pointers():
    bpy.types.Scene.flamefit = PointerProperty(type=FlameFitSceneSettings)
    bpy.types.WindowManager.flamefit = PointerProperty(type=FlameFitRuntime)


def unregister_pointers():
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "flamefit"):
            del owner.flamefit
