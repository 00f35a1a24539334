"""Albedo texture spaces: load FLAME's, the BFM-converted one and ours for the fitter
(spaces.py), and build one from a folder of photos (build.py: fit, unwrap.py, pca.py,
normalise.py, contact_sheet.py). Formats and the recipe: textures/README.md."""

from .spaces import TextureSpaceData, check_uv_layout, load_texture_space, read_texture_space, save_texture_space

__all__ = ["TextureSpaceData", "check_uv_layout", "load_texture_space", "read_texture_space", "save_texture_space"]
