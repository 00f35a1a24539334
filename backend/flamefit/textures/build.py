"""`flamefit texture-space build PHOTOS_DIR -o SPACE.npz`: an albedo space from photos.

1. Every photo is fitted (the same fitter as `flamefit fit`), its de-lit albedo is
   unwrapped into UV with a per-texel confidence (unwrap.py), and the result is stored
   at once as one npz per photo in the work folder `SPACE.work/` beside the output
   (`unwrapped/<id>.npz`; failures in `failed/<id>.json`). Files are written to a
   temporary name and renamed, so an interrupted build loses at most the photos being
   fitted; `--resume` skips every photo already stored (delete `failed/` to retry those).
2. When all photos are done: poorly seen texels are filled from their mirror texels,
   and a weighted EM-PCA (pca.py) gives the mean and K components at the work
   resolution, with each photo's exposure/white-balance gain fitted alongside
   (normalise.py).
3. Texels no photo saw are filled smoothly from the seen ones, the space is resampled
   to the stored size and written in FLAME_texture.npz's layout (spaces.py) with
   metadata, and a contact sheet `SPACE.png` shows it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from . import pca
from .spaces import TextureSpaceData, save_texture_space
from .uv_masks import uv_face_core, uv_skin_prior
from .work import WORK_VERSION, WorkFolder, list_photos, photo_id, run_photos, work_dir_for

MIN_SEEN_FRACTION = 0.2  # photos seeing fewer confident texels than this x the median photo are dropped
MIN_SEEN_TEXELS = 20


@dataclass
class BuildOptions:
    components: int = 50
    workers: int = 1
    resume: bool = False
    uv_resolution: int = 256  # unwrap and PCA resolution
    size: int = 512  # stored resolution
    normalise: str = "white-balance"  # none | exposure | white-balance
    symmetric_fill: float = 0.5  # weight of mirrored texels (0: off)
    licence: str = "not stated (pass --licence)"
    pca_iterations: int = 100
    fitter: str = "flamefit.textures.fit_adapter:fit_photo_view"  # module:function, see fit_adapter
    fit_options: dict = field(default_factory=dict)  # FitOptions fields for the fitter
    detector: str = "dlib"
    texture_space: str | None = None  # a space for the fits' photometric stage (e.g. an earlier build)
    threads_per_worker: int | None = None  # default: cores // workers


@dataclass
class BuildReport:
    output: Path
    contact_sheet: Path
    work_dir: Path
    photos: int
    used: int
    failed: dict
    dropped: list
    fitted_now: int
    fit_seconds: float
    pca_seconds: float
    explained_ratio: np.ndarray


def build_texture_space(photos_dir, output, options: BuildOptions, model, log=print) -> BuildReport:
    """Fit every photo in photos_dir with `model` (a HeadModel; resumable), then the PCA;
    write the space and its contact sheet."""
    from ..fitting.uvs import ensure_uvs

    photos_dir, output = Path(photos_dir), Path(output)
    if output.suffix.lower() != ".npz":
        raise FlameFitError(f"{output}: the texture space is written as .npz; give -o SPACE.npz")
    ensure_uvs(model)  # as the fitter does: a model without UVs gets its generated layout
    photos = list_photos(photos_dir, exclude=[output.with_suffix(".png")])
    ids = [photo_id(photos_dir, p) for p in photos]
    work = WorkFolder(work_dir_for(output), _work_settings(model, options), options.resume)
    done = work.done()
    jobs = [(str(p), pid) for p, pid in zip(photos, ids) if pid not in done]
    log(f"texture-space build: {len(photos)} photos, {len(photos) - len(jobs)} already in {work.root}, "
        f"{len(jobs)} to fit with {options.workers} worker(s)")

    cores = os.cpu_count() or 1
    threads = options.threads_per_worker or max(1, cores // max(1, options.workers))
    state = {"model": model, "work": work, "fitter": options.fitter, "fit_options": dict(options.fit_options),
             "detector": options.detector, "texture_space": options.texture_space,
             "uv_resolution": options.uv_resolution, "threads": threads if options.workers > 1 else None,
             "skin_prior": uv_skin_prior(model, options.uv_resolution),
             "face_core": uv_face_core(model, options.uv_resolution)}

    def report(k, total, pid, photo, seconds, error):
        status = f"failed: {error}" if error else "ok"
        log(f"  [{k}/{total}] {Path(photo).name}: {status} ({seconds:.1f} s)")

    fit_seconds = run_photos(jobs, state, options.workers, report)
    if jobs:
        log(f"fitted {len(jobs)} photos in {fit_seconds:.1f} s ({60 * len(jobs) / max(fit_seconds, 1e-9):.1f} photos/min)")

    start = time.perf_counter()
    space, result, used, dropped = space_from_work(work, model, options, set(ids))
    pca_seconds = time.perf_counter() - start
    failures = work.failures()
    meta = {
        "num_photos": len(used),
        "photos_failed": len(failures),
        "photos_dropped": len(dropped),
        "head_model": {"name": model.name, "version": model.version, "licence": model.licence,
                       "faces": int(len(model.faces)), "uv_coords": int(len(model.uv_coords))},
        "input_licence": options.licence,
        "components": space.num_components,
        "uv_resolution_pca": options.uv_resolution,
        "size": options.size,
        "normalisation": options.normalise,
        "normalisation_note": "per-photo gains (exposure/white balance) divided out: overall skin-tone changes "
                              "proportional to the mean are not in the space" if options.normalise != "none" else "",
        "symmetric_fill": options.symmetric_fill,
        "pca": {"method": "weighted EM-PCA (Srebro & Jaakkola 2003)", "iterations": result.iterations},
        "explained_variance_ratio": [round(float(r), 6) for r in result.explained_ratio],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "flamefit_version": _version(),
    }
    save_texture_space(output, space, meta, explained_variance_ratio=result.explained_ratio)
    from .contact_sheet import write_contact_sheet

    coverage = result.coverage.reshape(options.uv_resolution, options.uv_resolution)
    sheet = write_contact_sheet(output.with_suffix(".png"), space, result.explained_ratio, coverage,
                                title=f"{output.name}: {len(used)} photos, {model.name}, K = {space.num_components}")
    log(f"wrote {output} (K = {space.num_components}, {100 * float(result.explained_ratio.sum()):.1f}% of the "
        f"variance) and {sheet}; PCA {pca_seconds:.1f} s")
    return BuildReport(output=output, contact_sheet=sheet, work_dir=work.root, photos=len(photos), used=len(used),
                       failed=failures, dropped=dropped, fitted_now=len(jobs), fit_seconds=fit_seconds,
                       pca_seconds=pca_seconds, explained_ratio=result.explained_ratio)


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
            from ..fitting.uvs import texel_map
            from .unwrap import mirror_index

            mirror = mirror_index(model, texel_map(model, R, "cpu"))
        X, W = pca.symmetric_fill(X, W, mirror, options.symmetric_fill)
    result = pca.weighted_pca(X, W, options.components, gains=options.normalise, iterations=options.pca_iterations)
    D = X.shape[1] * X.shape[2]
    mean = result.mean.T.reshape(3, R, R)
    # Unit-norm components -> unit-RMS basis images; std = RMS albedo change at one sigma.
    basis = result.components.transpose(0, 2, 1).reshape(-1, 3, R, R) * np.sqrt(D)
    std = result.std / np.sqrt(D)
    unseen = result.coverage.reshape(R, R) <= 1e-3
    mean, basis = _fill_unseen(mean, unseen), _fill_unseen(basis, unseen)
    space = TextureSpaceData(mean.astype(np.float32), basis.astype(np.float32), std.astype(np.float32),
                             np.asarray(model.uv_coords, np.float32), np.asarray(model.uv_faces, np.int64))
    return space.unit_rms().resized(options.size), result


def _fill_unseen(maps: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """Fill unseen texels smoothly from the seen ones (push-pull: weighted averages down a
    pyramid, holes filled from the coarser levels back up): no seams, no streaks."""
    if not unseen.any() or unseen.all():
        return maps
    import torch
    import torch.nn.functional as F

    values = torch.from_numpy(np.ascontiguousarray(maps, np.float32)).reshape(-1, *unseen.shape)[:, None]
    weight = torch.from_numpy((~unseen).astype(np.float32))[None, None]
    levels = []
    while min(weight.shape[-2:]) > 1:
        levels.append((values, weight))
        w = F.avg_pool2d(weight, 2, ceil_mode=True)
        values = F.avg_pool2d(values * weight, 2, ceil_mode=True) / w.clamp(min=1e-8)
        weight = (w > 0).float()
    for finer_values, finer_weight in reversed(levels):
        up = F.interpolate(values, size=finer_values.shape[-2:], mode="bilinear", align_corners=False)
        values = finer_weight * finer_values + (1 - finer_weight) * up
        weight = finer_weight
    return values[:, 0].reshape(maps.shape).numpy()


def _work_settings(model, options: BuildOptions) -> dict:
    """What must not change between a build and its resume (the per-photo results depend on it)."""
    uv_hash = hashlib.sha1(np.ascontiguousarray(model.uv_coords, np.float32).tobytes()
                           + np.ascontiguousarray(model.uv_faces, np.int64).tobytes()).hexdigest()[:16]
    return {"work_version": WORK_VERSION, "head_model": model.name, "head_model_version": model.version,
            "uv_layout": uv_hash, "uv_resolution": options.uv_resolution, "fitter": options.fitter,
            "fit_options": json.loads(json.dumps(options.fit_options, default=str)), "detector": options.detector,
            "texture_space": str(options.texture_space) if options.texture_space else None}


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except ImportError:
        return "unknown"


def build_from_cli(args, settings) -> BuildReport:
    """`flamefit texture-space build` with parsed arguments and resolved settings."""
    import sys

    from ..models import load_head_model

    if args.workers < 1:
        raise FlameFitError(f"--workers {args.workers}: need at least 1")
    if not 2 <= args.components <= 1000:
        raise FlameFitError(f"--components {args.components}: choose between 2 and 1000")
    for flag, value in (("--uv-resolution", args.uv_resolution), ("--size", args.size)):
        if not 16 <= value <= 4096:
            raise FlameFitError(f"{flag} {value}: choose between 16 and 4096")
    list_photos(Path(args.photos).expanduser())  # a bad folder fails before the model loads
    if args.workers == 1:
        from ..cli import configure_threads

        configure_threads()
    model = load_head_model(settings)
    options = BuildOptions(components=args.components, workers=args.workers, resume=args.resume,
                           uv_resolution=args.uv_resolution, size=args.size, normalise=args.normalise,
                           symmetric_fill=args.symmetric_fill, licence=args.licence, detector=args.detector,
                           texture_space=str(settings.texture_space) if settings.texture_space else None)
    return build_texture_space(Path(args.photos).expanduser(), Path(args.output).expanduser().absolute(), options,
                               model, log=lambda *a: print(*a, file=sys.stderr, flush=True))
