"""FlameFit backend: head models -> renderer -> fitting stages -> result bundle.

Never imports bpy; the Blender add-on talks to it only through the `flamefit`
command line, its JSON progress stream and the result bundle on disk.
"""

__version__ = "0.1.0"
