"""Image stage: the photo, loaded from its path or taken as a loaded Photo."""

from __future__ import annotations

from ..image import Photo, load_photo
from .context import FitContext, Stage


class ImageStage(Stage):
    name = "image"

    def run(self, ctx: FitContext) -> None:
        for view in ctx.views:
            source = view.photo_source
            view.photo = source if isinstance(source, Photo) else load_photo(source)
