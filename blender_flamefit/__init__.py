"""FlameFit for Blender: fit a FLAME (or open MakeHuman-based) head to photos of one person with the
FlameFit backend and import the result as editable objects.

The add-on never imports torch or the backend: it runs `PYTHON -m flamefit.cli fit` as a
child process and reads the result bundle (see INTERFACE.md). Split like glTF-Blender-IO:
io/ (no bpy: bundle format, backend process, maths), blender/ (one module per Blender data
kind, and the importer), ui/ (operators, panel, preferences, properties). Relative imports
only, so the same folder works as a legacy add-on (Blender 3.4+) and as an extension (4.2+).
"""

bl_info = {
    "name": "FlameFit",
    "author": "FlameFit developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > FlameFit; File > Import > FlameFit result (.json)",
    "description": "Fit a FLAME head to one or several photos of a person; import mesh, shape keys, albedo, lights and camera",
    "doc_url": "",
    "category": "Import-Export",
}

# dependency order: io, then blender, then ui ("Reload Scripts" re-imports them in this order)
_MODULES = ("io.npyio", "io.options", "io.sh_math", "io.bundle", "io.backend_process", "io.faces", "io.setup_backend",
            "blender.mesh", "blender.material", "blender.camera", "blender.scene", "blender.placement", "blender.lights",
            "blender.views", "blender.importer", "ui.job_runner", "ui.props", "ui.preferences", "ui.operators", "ui.panel")

if "bpy" in locals():  # "Reload Scripts": re-import the submodules
    import importlib
    import sys

    for _name in _MODULES:
        if f"{__name__}.{_name}" in sys.modules:
            importlib.reload(sys.modules[f"{__name__}.{_name}"])

try:
    import bpy
except ImportError:  # plain Python (tests, tools): only the bpy-free io package is usable
    bpy = None

if bpy is not None:
    from . import blender, io, ui  # noqa: F401
    from .ui import job_runner, operators, panel, preferences, props

    _classes = (*props.classes, *preferences.classes, *operators.classes, *panel.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    props.register_pointers()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    job_runner.stop_all()  # no child process outlives the add-on
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    props.unregister_pointers()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
