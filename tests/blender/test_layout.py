"""The add-on's layout (io / blender / ui, like glTF-Blender-IO): io/ needs no bpy, the UI
loads the Blender-object code only when it imports, options are declared once."""

import json
import os
import subprocess
import sys

from testenv import REPO

IO_MODULES = ("npyio", "bundle", "sh_math", "backend_process", "setup_backend", "options")


def test_io_needs_no_bpy():
    """Every io module imports in a Python that has no bpy (and no numpy is needed)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); sys.modules['bpy'] = None; "
            "sys.modules['numpy'] = None; import importlib; "
            f"[importlib.import_module('blender_flamefit.io.' + m) for m in {IO_MODULES!r}]; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('blender_flamefit'))))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout)
    assert {f"blender_flamefit.io.{m}" for m in IO_MODULES} <= set(loaded)
    assert not [m for m in loaded if m.startswith(("blender_flamefit.blender", "blender_flamefit.ui"))]


def test_registering_does_not_load_the_object_builders():
    """Heavy imports inside execute: enabling the add-on loads ui/ and io/ only."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import bpy, blender_flamefit as b; b.register(); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('blender_flamefit.blender.'))))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_options_are_declared_once(addon):
    """The scene settings, File > Import and the batch's flags all come from io/options.py."""
    import argparse

    import bpy

    from blender_flamefit.io import options

    scene_props = addon.ui.props.FlameFitSceneSettings.bl_rna.properties
    import_props = bpy.ops.import_scene.flamefit.get_rna_type().properties
    for option in options.IMPORT_OPTIONS:
        for props in (scene_props, import_props):
            assert props[option.name].default == option.default and props[option.name].name == option.label
    for option in options.FIT_OPTIONS:
        assert scene_props[option.name].default == option.default
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, options.IMPORT_OPTIONS, defaults={"pack_images": True})
    args = parser.parse_args(["--no-fill-light"])
    defaults = {o.name: o.default for o in options.IMPORT_OPTIONS}
    assert options.as_keywords(args, options.IMPORT_OPTIONS) == {**defaults, "fill_light": False, "pack_images": True}
    settings = bpy.context.scene.flamefit
    settings.fill_light = False
    assert settings.import_options() == {**defaults, "fill_light": False}
    settings.fill_light = True
