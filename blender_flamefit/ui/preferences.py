"""Add-on preferences: backend interpreter (or Set up backend), model files, device,
detector, texture size. `FLAMEFIT_PYTHON` in the environment overrides the interpreter."""

import os
from types import SimpleNamespace

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences

from ..io import backend_process, setup_backend

# the add-on package (this is its ui subpackage): "blender_flamefit" (legacy add-on) or
# "bl_ext.<repo>.<id>" (extension)
ADDON_ID = __package__.rpartition(".")[0]

MODEL_FLAGS = (
    ("flame_model", "--model"),
    ("texture_space", "--texture-space"),
    ("uv_template", "--uv-template"),
    ("landmark_embedding", "--landmark-embedding"),
)

DEVICES = [("auto", "Auto", "CUDA when available, else the CPU"),
           ("cpu", "CPU", "Always fit on the CPU"),
           ("cuda", "CUDA", "Fit on the NVIDIA GPU (fails when there is none)")]
DETECTORS = [("", "Backend default", "Let the backend choose (dlib)"),
             ("dlib", "dlib", "dlib 68-point detector (installed with the backend)"),
             ("face-alignment", "face-alignment", "FAN detector (optional backend extra)"),
             ("mediapipe", "MediaPipe", "MediaPipe face mesh (optional backend extra)")]


def user_data_dir(create: bool = True) -> str:
    """Where the add-on keeps its backend environment and results."""
    if ADDON_ID.startswith("bl_ext.") and hasattr(bpy.utils, "extension_path_user"):
        return bpy.utils.extension_path_user(ADDON_ID, create=create)
    path = bpy.utils.user_resource("DATAFILES", path="flamefit", create=create)
    return path


def managed_venv_dir() -> str:
    return os.path.join(user_data_dir(), "backend-venv")


def default_results_dir() -> str:
    return os.path.join(user_data_dir(), "results")


class FlameFitPreferences(AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend interpreter", subtype="FILE_PATH",
        description="Python with the flamefit backend installed (empty: the environment made by "
                    "Set up backend). The FLAMEFIT_PYTHON environment variable overrides this")
    flame_model: StringProperty(name="FLAME model", subtype="FILE_PATH",
                                description="FLAME .pkl/.npz (empty: the open MakeHuman-based head)")
    texture_space: StringProperty(name="Texture space", subtype="FILE_PATH",
                                  description="Albedo PCA space (.npz), optional")
    uv_template: StringProperty(name="UV template", subtype="FILE_PATH",
                                description="FLAME head_template_mesh.obj or a texture-space .npz with vt/ft")
    landmark_embedding: StringProperty(name="Landmark embedding", subtype="FILE_PATH",
                                       description="DECA landmark_embedding.npy or similar, optional")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    detector: EnumProperty(name="Detector", items=DETECTORS, default="")
    texture_size: IntProperty(name="Texture resolution", default=1024, min=64, max=8192,
                              description="Size of the albedo texture in pixels")
    base_python: StringProperty(
        name="Base Python (3.11+)", subtype="FILE_PATH",
        description="Python used to create the backend environment (empty: found automatically)")
    cpu_only_torch: BoolProperty(
        name="CPU-only PyTorch", default=False,
        description="Install PyTorch's small CPU build (no CUDA) when setting up the backend")

    def draw(self, context):
        layout = self.layout
        draw_backend_box(layout, context, show_path=False)
        col = layout.column()
        col.prop(self, "python_path")
        box = layout.box()
        box.label(text="Set up backend", icon="CONSOLE")
        box.prop(self, "base_python")
        box.prop(self, "cpu_only_torch")
        draw_setup_status(box, context)
        col = layout.column(heading="Model files")
        for key, _flag in MODEL_FLAGS:
            col.prop(self, key)
        row = layout.row()
        row.prop(self, "device")
        row.prop(self, "detector")
        layout.prop(self, "texture_size")


def get_prefs(context=None):
    """The add-on preferences, or defaults when the package runs unregistered as an add-on
    (e.g. batch.py from a checkout)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID) if context and context.preferences else None
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return SimpleNamespace(python_path="", flame_model="", texture_space="", uv_template="",
                           landmark_embedding="", device="auto", detector="", texture_size=1024,
                           base_python="", cpu_only_torch=False)


def resolve_backend(context=None):
    """(interpreter path or '', where it came from or why there is none)."""
    prefs = get_prefs(context)
    managed = setup_backend.ready_python(managed_venv_dir())
    return backend_process.resolve_python(bpy.path.abspath(prefs.python_path) if prefs.python_path else "",
                                          managed)


def model_file_flags(prefs) -> dict:
    return {flag: bpy.path.abspath(getattr(prefs, key)) for key, flag in MODEL_FLAGS if getattr(prefs, key)}


def draw_backend_box(layout, context, show_path=True):
    python, source = resolve_backend(context)
    box = layout.box()
    if python:
        row = box.row()
        row.label(text=f"Backend: {source}", icon="CHECKMARK")
        if show_path:
            box.label(text=python)
    else:
        col = box.column()
        col.alert = True
        col.label(text="Backend not set up", icon="ERROR")
        col.label(text=source[:1].upper() + source[1:])
        row = box.row()
        row.operator("flamefit.setup_backend", icon="IMPORT")
        if context.preferences is not None and hasattr(bpy.ops.preferences, "addon_show"):
            row.operator("preferences.addon_show", text="Preferences", icon="PREFERENCES").module = ADDON_ID
    return bool(python)


def draw_setup_status(layout, context):
    state = context.window_manager.flamefit
    if state.setup_running:
        draw_progress(layout, state.setup_progress, state.setup_status or "Setting up…")
        layout.operator("flamefit.cancel_setup", icon="CANCEL")
    else:
        layout.operator("flamefit.setup_backend", icon="IMPORT")
        if state.setup_status:
            col = layout.column()
            col.alert = state.setup_failed
            for line in wrap(state.setup_status, 70):
                col.label(text=line)


def draw_progress(layout, fraction, text):
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=fraction, type="BAR", text=text)
    else:
        layout.label(text=f"{text}  [{int(fraction * 100)}%]")


def wrap(text, width=40):
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines or [""]


classes = (FlameFitPreferences,)
