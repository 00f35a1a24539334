"""Fitting a head model to a photo, or to several photos of one person (one identity and
texture, each photo its own camera, pose, expression and light): rigid -> shape ->
photometric -> texture.

`model = prepare_model(load_head_model(settings), settings.cache_dir)` once, then
`fit_photo(photo, model, FitOptions(...), ...)` (or `fit_photos([photo, ...], ...)`
for several photos of one person) runs the pipeline (pipeline.py) and
returns a `FitResult`; `flamefit.bundle.write_bundle` writes it to disk.
"""

from ..textures.spaces import TextureSpace
from .pipeline import FitResult, ViewResult, fit_photo, fit_photos, planned_stages, resolve_device
from .prepare import prepare_model
from .schedule import OPTIONAL_STAGES, FitOptions

__all__ = ["FitOptions", "FitResult", "OPTIONAL_STAGES", "TextureSpace", "ViewResult", "fit_photo", "fit_photos",
           "planned_stages", "prepare_model", "resolve_device"]
