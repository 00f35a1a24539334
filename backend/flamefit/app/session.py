"""Setting up a run: torch threads, the device, the settings, and the head model with its
texture space, loaded the same way for `fit`, `batch` (and each of its workers),
`models` and `texture-space build`."""

from __future__ import annotations

import dataclasses
import os
import time

from ..config import PATH_KEYS, Settings, load_settings
from ..errors import FlameFitError

SETTING_KEYS = (*PATH_KEYS, "cache_dir")


def configure_threads(threads: int | None = None) -> None:
    """CPU threads for torch: `threads`, else FLAMEFIT_THREADS, default 1 (the fit's tensors
    are small; extra threads mostly spin, and badly so when the cores are shared)."""
    import torch

    if threads is None:
        value = os.environ.get("FLAMEFIT_THREADS", "1")
        try:
            threads = int(value)
        except ValueError:
            raise FlameFitError(f"FLAMEFIT_THREADS={value!r} is not a number") from None
    torch.set_num_threads(max(1, int(threads)))


def resolve_device(device: str | None):
    from ..fitting import resolve_device as resolve

    return resolve(device)


def settings_from(values: dict) -> Settings:
    """Settings from flag values (key -> value or None; see config.load_settings)."""
    return load_settings({key: values.get(key) for key in SETTING_KEYS})


def with_uv_source(settings: Settings) -> Settings:
    """A FLAME model's UVs come from the UV template, else from the texture space when
    that file carries vt/ft (FLAME_texture.npz, ours), else from nowhere. The open head
    has its own UVs and landmarks, so a UV template or landmark embedding given with it
    would be ignored: refused instead."""
    if settings.flame_model is None:
        for key in ("uv_template", "landmark_embedding"):
            if getattr(settings, key) is not None:
                raise FlameFitError(f"{getattr(settings, key)}: a {key.replace('_', ' ')} applies to a FLAME model "
                                    f"(--model), but none is configured and the open head has its own (set by "
                                    f"{settings.sources.get(key, 'default')}); drop it or pass --model")
        return settings
    if settings.uv_template is not None or settings.texture_space is None:
        return settings
    from ..textures.spaces import texture_space_layout

    _, headers = texture_space_layout(settings.texture_space)  # not a texture space: refused here
    if {"vt", "ft"} <= headers.keys():
        return dataclasses.replace(settings, uv_template=settings.texture_space)
    return settings


def _load_raw(settings: Settings):
    from .. import models

    return models.load_head_model(with_uv_source(settings))


def _prepare(model, settings: Settings):
    from ..fitting import prepare

    return prepare.prepare_model(model, settings.cache_dir)


def load_model(settings: Settings):
    """The head model, complete and read-only for fitting (fitting.prepare_model: landmark
    embedding, UVs, contour)."""
    return _prepare(_load_raw(settings), settings)


def load_model_and_space(settings: Settings):
    """(model, texture space or None) for fitting. The space holds only the components
    the photometric stage fits (load_texture_space); it is checked against the model's
    own UV layout, before prepare_model gives a model without one its generated layout."""
    model = _load_raw(settings)
    space = None
    if settings.texture_space is not None:
        from ..textures.spaces import load_texture_space

        space = load_texture_space(settings.texture_space, model)
    return _prepare(model, settings), space


def load_fit_inputs(settings: Settings):
    """(model, texture space or None, seconds to load them)."""
    start = time.perf_counter()
    model, space = load_model_and_space(settings)
    return model, space, round(time.perf_counter() - start, 3)
