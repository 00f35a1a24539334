"""Head models: FLAME files users bring, or the open head built from MakeHuman assets.

`load_head_model(settings)` is the one entry point the rest of FlameFit uses.
"""

from ..config import Settings
from .head_model import JOINT_NAMES, HeadLayer, HeadModel, LandmarkEmbedding

__all__ = ["HeadModel", "HeadLayer", "LandmarkEmbedding", "JOINT_NAMES", "load_head_model"]


def load_head_model(settings: Settings, with_ibug68: bool = True) -> HeadModel:
    """The configured FLAME file with its extras, else the open head; with an iBUG-68
    landmark embedding (computed once and cached when the model brings none)."""
    if settings.flame_model is not None:
        from .flame import load_flame

        uv_path = settings.uv_template or settings.texture_space
        embeddings = [settings.landmark_embedding] if settings.landmark_embedding else []
        model = load_flame(settings.flame_model, uv_path=uv_path, embedding_paths=embeddings)
    else:
        from .open_head import load_open_head

        model = load_open_head(settings.cache_dir)
    if with_ibug68 and "ibug68" not in model.landmarks:
        from .embedding import ensure_ibug68_embedding

        ensure_ibug68_embedding(model, settings.cache_dir)
    return model
