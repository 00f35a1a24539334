"""The texture-space recipe: stored per-photo samples (work.py) -> an albedo space.

Poorly seen texels are filled from their mirror texels, a weighted EM-PCA (pca.py)
gives the mean and K components at the work resolution with each photo's
exposure/white-balance gain fitted alongside (normalise.py), texels no photo saw are
filled smoothly from the seen ones and on the surface across the UV seams (seams.py),
and the space is resampled to the stored size
(spaces.py writes it in FLAME_texture.npz's layout). The pipeline that fits the photos
and runs this is `flamefit.app.texture_space_build`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import FlameFitError
from . import pca
from .fill import mirror_fill, pull_push
from .seams import blend_seams
from .spaces import TextureSpaceData
from .work import WORK_VERSION, WorkFolder, work_dir_for  # noqa: F401 - work_dir_for: where a build keeps its work

MIN_SEEN_FRACTION = 0.2  # photos seeing fewer confident texels than this x the median photo are dropped
MIN_SEEN_TEXELS = 20


@dataclass
class BuildOptions:
    components: int = 50
    workers: int = 1
    resume: bool = False  # reuse the work folder's stored photos (textures/work.py)
    overwrite: bool = False  # replace an existing SPACE.npz/SPACE.png, only FlameFit's own
    uv_resolution: int = 256  # unwrap and PCA resolution
    size: int = 512  # stored resolution
    normalise: str = "white-balance"  # none | exposure | white-balance
    symmetric_fill: float = 0.5  # weight of mirrored texels (0: off)
    licence: str = "not stated (pass --licence)"
    pca_iterations: int = 100
    fitter: str = "flamefit.app.texture_space_build:fit_photo_view"  # module:function returning a PhotoView
    fit_options: dict = field(default_factory=dict)  # FitOptions fields for the fitter
    detector: str | None = None  # None: landmarks.default_detector()
    texture_space: str | None = None  # a space for the fits' photometric stage (e.g. an earlier build)
    threads_per_worker: int | None = None  # default: cores // workers


def space_from_work(work: WorkFolder, model, options: BuildOptions, wanted: set[str] | None = None):
    """Normalise, fill, PCA and resample the stored per-photo results."""
    ids, X, W, infos = work.load_all()
    keep = [i for i, pid in enumerate(ids) if wanted is None or pid in wanted]
    ids, X, W = [ids[i] for i in keep], X[keep], W[keep]
    seen = (W > 0.5).sum(1) if len(W) else np.zeros(0)
    good = seen >= max(MIN_SEEN_TEXELS, MIN_SEEN_FRACTION * float(np.median(seen)) if len(seen) else 0)
    dropped = [ids[i] for i in np.flatnonzero(~good)]
    ids, X, W = [ids[i] for i in np.flatnonzero(good)], X[good], W[good]
    if len(ids) < 2:
        raise FlameFitError(f"only {len(ids)} photo(s) gave a usable albedo; a texture space needs at least 2 "
                            f"(failed: {len(work.failures())}, too little face seen: {len(dropped)})")
    space, result = space_from_samples(X, W, model, options)
    return space, result, ids, dropped


def space_from_samples(X, W, model, options: BuildOptions, mirror: np.ndarray | None = None):
    """TextureSpaceData (at options.size) + PCAResult from unwrapped samples X (N, R*R, 3), W (N, R*R)."""
    R = options.uv_resolution
    if options.symmetric_fill > 0:
        if mirror is None:
            from ..render.uv_raster import mirror_texels, texel_map

            texels = texel_map(model, R, "cpu")
            mirror = texels.on_map(mirror_texels(model, texels))
        X, W = mirror_fill(X, W, mirror, options.symmetric_fill)
    result = pca.weighted_pca(X, W, options.components, gains=options.normalise, iterations=options.pca_iterations)
    D = X.shape[1] * X.shape[2]
    mean = result.mean.T.reshape(3, R, R)
    # Unit-norm components -> unit-RMS basis images; std = RMS albedo change at one sigma.
    basis = result.components.transpose(0, 2, 1).reshape(-1, 3, R, R) * np.sqrt(D)
    std = result.std / np.sqrt(D)
    unseen = result.coverage.reshape(R, R) <= 1e-3
    mean, basis = _fill_unseen(mean, unseen, model), _fill_unseen(basis, unseen, model)
    space = TextureSpaceData(mean.astype(np.float32), basis.astype(np.float32), std.astype(np.float32),
                             np.asarray(model.uv_coords, np.float32), np.asarray(model.uv_faces, np.int64))
    return space.unit_rms().resized(options.size), result


def _fill_unseen(maps: np.ndarray, unseen: np.ndarray, model) -> np.ndarray:
    """Fill unseen texels smoothly from the seen ones (fill.pull_push), then on the surface
    so that the charts meet at their seams (seams.blend_seams: the texture stage's fill)."""
    if unseen.all():
        return maps
    seen = (~unseen).astype(np.float32)
    filled = pull_push(maps, seen) if unseen.any() else maps
    R = unseen.shape[0]
    stacked = np.ascontiguousarray(filled.reshape(-1, R, R).transpose(1, 2, 0))  # (R, R, maps x channels)
    return blend_seams(stacked, model, seen).transpose(2, 0, 1).reshape(filled.shape)


def work_settings(model, options: BuildOptions) -> dict:
    """What must not change between a build and its resume (the per-photo results depend on it)."""
    uv_hash = hashlib.sha1(np.ascontiguousarray(model.uv_coords, np.float32).tobytes()
                           + np.ascontiguousarray(model.uv_faces, np.int64).tobytes()).hexdigest()[:16]
    return {"work_version": WORK_VERSION, "head_model": model.name, "head_model_version": model.version,
            "uv_layout": uv_hash, "uv_resolution": options.uv_resolution, "fitter": options.fitter,
            "fit_options": json.loads(json.dumps(options.fit_options, default=str)), "detector": options.detector,
            "texture_space": str(options.texture_space) if options.texture_space else None}
