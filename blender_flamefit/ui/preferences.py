"""Add-on preferences: backend interpreter (or Set up backend), model files, device,
detector, texture size. `FLAMEFIT_PYTHON` in the environment overrides the interpreter."""

import os
from types import SimpleNamespace

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
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
# No empty identifier: Blender draws an item with "" as a heading that cannot be picked.
DETECTORS = [("DEFAULT", "Backend default", "Let the backend choose its best installed detector"),
             ("dlib", "dlib", "dlib 68-point detector (installed with the backend)"),
             ("face-alignment", "face-alignment", "FAN detector (optional backend extra)"),
             ("mediapipe", "MediaPipe", "MediaPipe face mesh (optional backend extra)")]
TORCH_BUILDS = [("AUTO", "By this machine", "NVIDIA GPU found: the CUDA build; none: the small CPU build; "
                 "macOS: the default build"),
                ("CPU", "CPU build", "PyTorch's small CPU build (no CUDA)"),
                ("DEFAULT", "Your pip index", "Whatever torch your pip configuration installs")]


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
    detector: EnumProperty(name="Detector", items=DETECTORS, default="DEFAULT")
    texture_size: IntProperty(name="Texture resolution", default=1024, min=64, max=4096,  # the backend refuses more (memory: ~3.8 GB at 4096)
                              description="Size of the albedo texture in pixels")
    base_python: StringProperty(
        name="Base Python (3.11+)", subtype="FILE_PATH",
        description="Python used to create the backend environment (empty: found automatically)")
    torch_build: EnumProperty(name="PyTorch", items=TORCH_BUILDS, default="AUTO",
                              description="Which PyTorch Set up backend installs")

    def draw(self, context):
        layout = self.layout
        draw_backend_box(layout, context, show_path=True, in_preferences=True)
        col = layout.column()
        col.prop(self, "python_path")
        box = layout.box()
        box.label(text="Set up backend", icon="CONSOLE")
        box.prop(self, "base_python")
        box.prop(self, "torch_build")
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
                           landmark_embedding="", device="auto", detector="DEFAULT", texture_size=1024,
                           base_python="", torch_build="AUTO")


SOURCES = {"FLAMEFIT_PYTHON": "FLAMEFIT_PYTHON", "preferences": "interpreter in preferences",
           "set-up environment": "set-up environment"}


def resolve_backend(context=None, check: bool = True):
    """(interpreter path or '', where it came from or why there is none). A chosen interpreter
    is checked once (`flamefit.cli --version`, cached, in the background): one without the
    backend gives '' and what is wrong; while the check runs it counts as usable."""
    prefs = get_prefs(context)
    managed = setup_backend.ready_python(managed_venv_dir())
    python, source = backend_process.resolve_python(
        bpy.path.abspath(prefs.python_path) if prefs.python_path else "", managed)
    if python and check:
        verdict, text = setup_backend.check_interpreter(python)
        if verdict == "bad":
            return "", text
        if verdict == "checking":
            _redraw_when_checked(python)
    return python, source


def _redraw_when_checked(python):
    """Redraw the panels once the background check of `python` has an answer."""
    def poll():
        verdict, _ = setup_backend.check_interpreter(python)
        if verdict == "checking":
            return 0.5
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type in {"VIEW_3D", "PREFERENCES"}:
                    area.tag_redraw()
        return None

    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=0.5)


def detector_flag(prefs) -> str:
    """The --detector value ('' = the backend's default)."""
    return "" if prefs.detector in ("", "DEFAULT") else prefs.detector


def model_file_flags(prefs) -> dict:
    return {flag: bpy.path.abspath(getattr(prefs, key)) for key, flag in MODEL_FLAGS if getattr(prefs, key)}


def draw_backend_box(layout, context, show_path=True, in_preferences=False):
    """Backend state; in the panel also the one Set up backend button (and its progress) and
    a link to the preferences. Returns whether a backend is usable."""
    python, source = resolve_backend(context)
    box = layout.box()
    state = context.window_manager.flamefit
    if python:
        box.label(text="Backend ready", icon="CHECKMARK")
        col = box.column(align=True)
        for line in wrap_for(context, f"from {SOURCES.get(source, source)}"):
            col.label(text=line)
        if show_path:
            for line in wrap_for(context, python):
                col.label(text=line)
    else:
        col = box.column(align=True)
        col.alert = not state.setup_running
        col.label(text="Backend not set up", icon="ERROR")
        reason = "" if source == backend_process.NOT_SET_UP else source[:1].upper() + source[1:]
        if not reason and not state.setup_running:  # the header says it already: say what to do
            reason = "Set up backend installs it (a few minutes); or choose a Backend interpreter in Preferences"
        for line in wrap_for(context, reason) if reason else []:
            col.label(text=line)
        if not in_preferences:
            draw_setup_status(box, context)
            if context.preferences is not None and hasattr(bpy.ops.preferences, "addon_show"):
                box.operator("preferences.addon_show", text="Preferences", icon="PREFERENCES").module = ADDON_ID
    return bool(python)


def draw_setup_status(layout, context):
    state = context.window_manager.flamefit
    if state.setup_running:
        draw_progress(layout, state.setup_progress, state.setup_status or "Setting up…", context)
        col = layout.column(align=True)
        for line in state.setup_lines.splitlines()[-3:]:  # one row each: Cancel stays in sight
            col.label(text=cut_for(context, line))
        layout.operator("flamefit.cancel_setup", icon="CANCEL")
    else:
        layout.operator("flamefit.setup_backend", icon="IMPORT")
        if state.setup_status:
            col = layout.column(align=True)
            col.alert = state.setup_failed
            for line in wrap_for(context, state.setup_status):
                col.label(text=line)


def draw_progress(layout, fraction, text, context=None, rows=0):
    """The progress and its status; `rows`: at least that many status rows (blank ones below),
    so the panel keeps its height while the status wraps into fewer or more rows (Blender 3.4
    was seen drawing the next panel's header over the status's last row for seconds after it grew)."""
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=fraction, type="BAR", text=f"{int(fraction * 100)}%")
    else:
        layout.label(text=f"{int(fraction * 100)}% done")
    col = layout.column(align=True)
    lines = wrap_for(context, text) if context is not None else wrap(text)
    for line in lines + [""] * (rows - len(lines)):
        col.label(text=line)


def text_width_px(text: str, context) -> float:
    """The width of `text` in the UI's label font, in pixels."""
    import blf

    prefs = context.preferences
    scale = prefs.system.ui_scale if prefs is not None else 1.0
    points = prefs.ui_styles[0].widget.points if prefs is not None else 11  # labels use the widget font
    try:
        blf.size(0, points * scale)
    except TypeError:  # Blender < 3.4 wants a dpi
        blf.size(0, int(points), int(72 * scale))
    return 1.1 * blf.dimensions(0, text)[0]  # a margin: Blender's own label layout is a bit wider


def _measure(context):
    """(width of a text, room for one label row): pixels in the current region, else characters
    (38 where there is no region to measure)."""
    region = getattr(context, "region", None) if context is not None else None
    if region is None or region.width <= 1 or bpy.app.background:
        return len, 38
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    room = region.width - 72 * scale  # panel margins, a box's border, the tab strip, the ellipsis
    return (lambda t: text_width_px(t, context)), room


def wrap_for(context, text: str) -> list:
    """`text` split into label rows that fit the current region's width (Blender 3.4 has no
    wrapping label)."""
    measure, room = _measure(context)
    return wrap(text, room, measure)


def cut_for(context, text: str) -> str:
    """`text` cut to one label row, with an ellipsis: a line whose start says what it is (pip's
    "Successfully installed ..." would wrap into dozens of rows)."""
    measure, room = _measure(context)
    return cut(text, room, measure)


BREAKS = "/\\"  # a path breaks after a separator, never inside a name


def _longest(text, room, measure, tail="") -> int:
    """The longest prefix length of `text` that fits `room` with `tail` after it (at least 1)."""
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if measure(text[:mid] + tail) <= room else (lo, mid - 1)
    return lo


def cut(text, room=40, measure=len) -> str:
    if measure(text) <= room:
        return text
    return text[:_longest(text, room, measure, "…")].rstrip() + "…"


def wrap(text, room=40, measure=len) -> list:
    """Words to rows of at most `room` (in `measure` units); a word too long for a row (a path)
    is split after its last separator that fits, else where it must."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and measure(trial) > room and measure(word) <= room:
            lines.append(line)
            line = word
        else:
            line = trial
        while measure(line) > room and len(line) > 8:
            fits = _longest(line, room, measure)
            at = max(line.rfind(c, 0, fits) for c in BREAKS) + 1
            at = at if at > fits // 3 else fits
            lines.append(line[:at].rstrip())
            line = line[at:]
    if line:
        lines.append(line)
    return lines or [""]


classes = (FlameFitPreferences,)
