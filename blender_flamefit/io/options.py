"""Options declared once. The scene settings, File > Import and the headless batch all build
their properties / flags from these tables and hand the values on as keywords
(`as_keywords`), so adding an option touches this file and the code that uses it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoolOption:
    name: str  # keyword of the function that consumes it
    label: str
    default: bool
    description: str


# keywords of blender.importer.import_bundle
IMPORT_OPTIONS = (
    BoolOption("faithful_lighting", "Fit-faithful shading", True,
               "Like the fit's SH model, the head casts no shadow and no bounce light on itself "
               "(Cycles ray visibility) and has no specular; untick for self-shadowing"),
    BoolOption("fill_light", "Fill light", True, "Add a second sun when it reduces the lighting error"),
    BoolOption("pack_images", "Pack images", True,
               "Pack the albedo and the photo into the .blend file, so it does not point into the results folder"),
    # where the result goes and what it changes in the scene (the panel lists each change)
    BoolOption("avoid_occluders", "Move beside occluders", True,
               "Place the head at the 3D cursor, moved sideways when other objects (the default cube) "
               "would hide it from its camera; off: exactly at the 3D cursor"),
    BoolOption("set_camera", "Set scene camera", True, "Make the fitted camera the scene camera"),
    BoolOption("set_render_size", "Photo's render size", True, "Set the render size to the photo's"),
    BoolOption("set_world", "Fitted world", True, "Make the world with the fitted ambient light the scene's"),
    BoolOption("standard_view", "Standard view transform", True,
               "Colour management view transform Standard (the fit's colours); off: keep the scene's"),
    BoolOption("other_lights_off", "Other lights off", True,
               "Turn the scene's other lights off in renders, so that only the fitted light falls on the face"),
    BoolOption("close_neck", "Close the neck", False,
               "Cap the open neck with one flat face of its own vertices, for a watertight head (3D printing, "
               "inside/outside tests); off: the mesh is exactly the bundle's"),
)

# what the fit runs (backend_process.fit_flags)
FIT_OPTIONS = (
    BoolOption("stage_photometric", "Photometric", True,
               "Refine shape, expression and light against the photo's pixels"),
    BoolOption("stage_texture", "Texture", True, "Extract the de-lit albedo texture from the photo"),
    BoolOption("use_expression", "Expression", True, "Fit the facial expression (off: neutral face)"),
)


def names(options) -> tuple:
    return tuple(o.name for o in options)


def as_keywords(source, options) -> dict:
    """{name: value} of `options` read from any object with those attributes (a property
    group, an operator, an argparse namespace)."""
    return {o.name: bool(getattr(source, o.name)) for o in options}


def add_arguments(parser, options, defaults=None) -> None:
    """`--name` / `--no-name` flags for a command line (argparse), defaults overridable."""
    import argparse

    defaults = defaults or {}
    for o in options:
        flag = "--" + o.name.replace("_", "-")
        default = defaults.get(o.name, o.default)
        parser.add_argument(flag, dest=o.name, action=argparse.BooleanOptionalAction, default=default,
                            help=o.description + " (default: %(default)s)")
