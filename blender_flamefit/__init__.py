"""FlameFit for Blender: fit a FLAME (or open MakeHuman-based) head to one photo with the
FlameFit backend and import the result as editable objects.

The add-on never imports torch or the backend: it runs `PYTHON -m flamefit.cli fit` as a
child process and reads the result bundle (see INTERFACE.md). Relative imports only, so
the same folder works as a legacy add-on (Blender 3.4+) and as an extension (4.2+).
"""

bl_info = {
    "name": "FlameFit",
    "author": "FlameFit developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > FlameFit; File > Import > FlameFit result (.json)",
    "description": "Fit a FLAME head to one photo; import mesh, shape keys, albedo, lights and camera",
    "doc_url": "",
    "category": "Import-Export",
}

if "bpy" in locals():  # "Reload Scripts": re-import the submodules
    import importlib

    for _name in ("npyio", "bundle", "sh_math", "backend_process", "setup_backend", "sh_lights", "importer",
                  "props", "preferences", "operators", "panel"):
        if _name in locals():
            importlib.reload(locals()[_name])

try:
    import bpy
except ImportError:  # plain Python (tests, tools): only the bpy-free modules are usable
    bpy = None

if bpy is not None:
    from . import (backend_process, bundle, importer, npyio, operators, panel, preferences, props,  # noqa: F401
                   setup_backend, sh_lights, sh_math)

    _classes = (*props.classes, *preferences.classes, *operators.classes, *panel.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    props.register_pointers()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    operators.stop_all()  # no child process outlives the add-on
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    props.unregister_pointers()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
