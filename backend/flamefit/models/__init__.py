"""Head models: FLAME files users bring, or the open head built from MakeHuman assets.

`load_head_model(settings)` is the one entry point the rest of FlameFit uses.
"""

from ..config import Settings
from ..errors import ModelFileError
from .head_model import JOINT_NAMES, HeadLayer, HeadModel, LandmarkEmbedding

__all__ = ["HeadModel", "HeadLayer", "LandmarkEmbedding", "JOINT_NAMES", "load_head_model"]


def load_head_model(settings: Settings) -> HeadModel:
    """The configured FLAME file with its extras, else the open head, as loaded from its
    files (`flamefit.fitting.prepare_model` adds what a fit needs)."""
    if settings.flame_model is not None:
        from .flame import load_flame

        embeddings = [settings.landmark_embedding] if settings.landmark_embedding else []
        model = load_flame(settings.flame_model, uv_path=settings.uv_template, embedding_paths=embeddings)
        if settings.texture_space is not None and model.uv_coords is None:
            # A space without vt/ft (FLAME_albedo_from_BFM.npz) is on FLAME's UV layout; the
            # layout the fitter generates for a model without UVs would misplace it.
            raise ModelFileError(settings.texture_space, "this texture space has no UV layout (vt/ft) and the FLAME "
                                 "model has none: FLAME's UV layout is needed",
                                 "pass FLAME's UV template: --uv-template head_template_mesh.obj")
    else:
        from .open_head import load_open_head

        model = load_open_head(settings.cache_dir)
    return model

