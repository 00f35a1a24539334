"""`flamefit texture-space build PHOTOS_DIR -o SPACE.npz`: an albedo space from photos.

1. Every photo is fitted (the same fitter as `flamefit fit`, `fit_photo_view`), its
   de-lit albedo is unwrapped into UV with a per-texel confidence (textures/unwrap.py),
   and stored at once in the work folder `SPACE.work/` beside the output
   (textures/work.py: one npz per photo, atomically; failures in `failed/`), by the
   worker pool shared with `batch` (app/pool.py). `--resume` skips every photo stored.
2. When all photos are done, textures/build.py turns the stored samples into the space
   (mirror fill, weighted EM-PCA with per-photo gains, smooth fill, resampling), which is
   written in FLAME_texture.npz's layout with metadata and a contact sheet `SPACE.png`.

Nothing a user owns is lost (check_outputs, before any model loads): an existing
SPACE.npz/SPACE.png is replaced only with --overwrite and only when FlameFit wrote it
(its metadata / PNG mark), never an input (a photo, the --texture-space the fits read);
SPACE.work/ is reused only with --resume and never removed. Refreshing a finished build
(photos added) takes both: --resume --overwrite.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..bundle.writer import check_path_text
from ..errors import FlameFitError
from ..fsutil import require_writable
from ..textures.build import BuildOptions, space_from_work, work_settings
from ..textures.contact_sheet import is_contact_sheet, write_contact_sheet
from ..textures.spaces import FORMAT_NAME, save_texture_space
from ..textures.uv_masks import uv_face_core, uv_skin_prior
from ..textures.work import WorkFolder, check_work_dir, photo_id, work_dir_for
from . import pool
from .executors import ExecutorOptions, make_executor
from .jobs import PhotoData, PhotoJob, local_files, read_data, worker_name
from .photos import list_photos, sidecar_landmarks
from .session import configure_threads, load_model

MAX_FACE_PIXELS = 768  # the photo is shrunk so that the fitting crop is at most this wide
FITTER = "flamefit.app.texture_space_build:fit_photo_view"


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


# ----------------------------------------------------------------------------- the fitter


@dataclass
class PhotoView:
    """The fitted head as the camera saw it: what the unwrap needs from a fit."""

    image_linear: np.ndarray  # (H, W, 3) float32 linear RGB in [0, 1]
    vertices: np.ndarray  # (V, 3) fitted mesh, world space
    camera: object  # render.PinholeCamera, in the pixels of image_linear
    sh: np.ndarray  # (9, 3) fitted SH light (renderer convention)
    image_srgb_max: np.ndarray | None = None  # (H, W) max sRGB channel in [0, 1]: clipping
    info: dict = field(default_factory=dict)  # metrics etc., stored with the result


def photo_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(linear RGB float32, max sRGB channel) of a photo file."""
    from ..image import load_photo

    return _arrays(load_photo(path).rgb)


def _arrays(rgb8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from ..image import srgb_to_linear

    rgb = rgb8.astype(np.float32) / 255.0
    return srgb_to_linear(rgb).astype(np.float32), rgb.max(-1)


def fit_photo_view(path: Path, model, context: dict) -> PhotoView:
    """Fit one photo as `flamefit batch` does (same fit_photo, landmark sidecar files, the
    configured texture space), without the texture stage (the build unwraps the albedo
    itself) and without a bundle. context: "fit_options" (FitOptions fields), "detector",
    "texture_space" (a loaded space or None). Tests plug in others (BuildOptions.fitter)."""
    import cv2
    import torch

    from ..fitting import FitOptions, fit_photo
    from ..render import PinholeCamera

    fields = {"stages": ("landmarks", "photometric"), **context.get("fit_options", {})}
    result = fit_photo(path, model, FitOptions(**fields), landmarks=sidecar_landmarks(Path(path)),
                       detector=context.get("detector"), texture_space=context.get("texture_space"),
                       device="cpu")
    rgb = result.photo.rgb
    scale = min(1.0, MAX_FACE_PIXELS / max(1, result.frame.crop.side))
    camera = result.frame.camera(None, "cpu")
    if scale < 1.0:
        size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / result.photo.width, size[1] / result.photo.height
        s = torch.tensor([[sx, sy]], dtype=camera.focal.dtype)
        camera = PinholeCamera(camera.focal * s, camera.principal * s, camera.R, camera.t, znear=camera.znear)
    linear, srgb_max = _arrays(rgb)
    sh = result.views[0].sh
    info = {"metrics": result.metrics, "fit_seconds": round(sum(v for k, v in result.timings.items() if k != "total"), 3),
            "detection": {k: v for k, v in result.detection.items() if k in ("source", "detector", "num_faces")}}
    return PhotoView(linear, result.vertices, camera, sh, srgb_max, info)


# ----------------------------------------------------------------------------- per-photo jobs

_WORKER: dict = {}


def _init_worker(state: dict) -> None:
    """Load the UV texel map, the fitter and the texture space once per worker process
    (in the pool, `state` comes from a file each worker reads itself: app/pool.py)."""
    if state.get("threads"):
        configure_threads(state["threads"])
    from ..render.uv_raster import texel_map

    model = state["model"]
    module, name = state["fitter"].split(":")
    _WORKER.clear()
    _WORKER.update(state)
    _WORKER["texels"] = texel_map(model, state["uv_resolution"], "cpu")
    _WORKER["fit"] = getattr(importlib.import_module(module), name)
    space = None
    if state.get("texture_space"):
        from ..textures.spaces import load_texture_space

        space = load_texture_space(state["texture_space"], model)
    _WORKER["context"] = {"fit_options": state["fit_options"], "detector": state["detector"], "texture_space": space}


def _process(job: PhotoJob, data: PhotoData | None) -> dict:
    """In a worker: fit + unwrap one photo (its bytes in `data` when the worker does not
    share the driver's disk). {"id", "photo", "seconds", "error", "arrays": (albedo,
    confidence, info) or None, "worker"}; the driver stores it (store)."""
    from ..textures.unwrap import unwrap_albedo

    start = time.perf_counter()
    arrays, error = None, None
    try:
        with local_files(job, data) as (photo, _):
            view = _WORKER["fit"](photo, _WORKER["model"], _WORKER["context"])
        result = unwrap_albedo(view.image_linear, view.vertices, _WORKER["model"].faces, _WORKER["texels"], view.camera,
                               view.sh, skin_prior=_WORKER["skin_prior"], face_core=_WORKER["face_core"],
                               image_srgb_max=view.image_srgb_max)
        info = {"photo": job.photo, "seconds": round(time.perf_counter() - start, 3), **(view.info or {})}
        arrays = (result.albedo, result.confidence, info)
    except FlameFitError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one photo's bug must not stop a long build
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return {"id": job.target, "photo": job.photo, "seconds": time.perf_counter() - start, "error": error,
            "arrays": arrays, "worker": worker_name()}


def _process_and_store(job: PhotoJob, data: PhotoData | None) -> dict:
    """In a worker that shares the driver's disk (local): _process, and the result stored
    in the work folder by the worker itself; what is reported (no arrays)."""
    value = _process(job, data)
    store(_WORKER["work"], value)
    return {**value, "arrays": None, "stored": True}


def store(work: WorkFolder, value: dict) -> None:
    """One photo's result into the work folder (atomically, textures/work.py)."""
    if value.get("stored"):
        return
    if value["arrays"] is not None:
        work.save(value["id"], *value["arrays"])
    else:
        work.save_failure(value["id"], Path(value["photo"]), value["error"])


def run_photos(jobs: list[PhotoJob], state: dict, work: WorkFolder, executor, report) -> float:
    """Process the jobs with `executor` (app/executors.py), storing each result as it comes
    back. Seconds spent."""
    start = time.perf_counter()
    count = [0]

    def finished(value):
        store(work, value)
        count[0] += 1
        report(count[0], len(jobs), value["id"], value["photo"], value["seconds"], value["error"])

    def crashed(job, message):
        finished({"id": job.target, "photo": job.photo, "seconds": 0.0, "error": message, "arrays": None})

    if executor.shares_disk:
        state = {**state, "work": work}
    function = _process_and_store if executor.shares_disk else _process
    executor.run(jobs, function, _init_worker, (state,), on_result=lambda job, value: finished(value),
                 on_crash=crashed, payload=read_data)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- outputs


def check_outputs(photos_dir: Path, output: Path, overwrite: bool, resume: bool,
                  texture_space=None) -> tuple[list[Path], list[Path]]:
    """(photos to fit, FlameFit contact sheets found among them and left out), once every
    output is known to lose nothing a user owns; FlameFitError otherwise. Cheap: run
    before the model loads. SPACE.npz/SPACE.png: _check_replaceable; SPACE.work/:
    work.check_work_dir."""
    photos_dir, output = Path(photos_dir), Path(output)
    if output.suffix.lower() != ".npz":
        raise FlameFitError(f"{output}: the texture space is written as .npz; give -o SPACE.npz")
    check_path_text(output.absolute(), "output file")
    require_writable(output.absolute().parent, output)
    listed = list_photos(photos_dir)
    sheets = [p for p in listed if is_contact_sheet(p)]  # an earlier build's output, not a photo
    photos = [p for p in listed if p not in sheets]
    if not photos:
        raise FlameFitError(f"{photos_dir}: no photos, only FlameFit contact sheets ({', '.join(p.name for p in sheets)})")
    inputs = _inputs(photos_dir, photos, texture_space)
    for path in (output, output.with_suffix(".png")):
        _check_replaceable(path, overwrite, inputs)
    check_work_dir(work_dir_for(output), resume)
    return photos, sheets


def _inputs(photos_dir: Path, photos: list[Path], texture_space) -> dict[Path, str]:
    """Every file the build reads -> what it is: no output may be one of them."""
    inputs = {p: f"one of the photos in {photos_dir}" for p in photos}
    if texture_space:
        inputs[Path(texture_space)] = "the texture space the fits use (--texture-space)"
    return inputs


def _check_replaceable(path: Path, overwrite: bool, inputs: dict[Path, str]) -> None:
    """Refuse to write SPACE.npz or SPACE.png at `path` where that would lose a user's
    file: an input (even with --overwrite), a link or anything FlameFit did not write,
    or (without --overwrite) anything at all."""
    if not os.path.lexists(path):
        return
    what = "texture space" if path.suffix.lower() == ".npz" else "contact sheet"
    for other, role in inputs.items():
        if _same_file(path, other):
            raise FlameFitError(f"{path}: is {role}; the build would write its {what} over it: choose another -o "
                                "(--overwrite never replaces an input)")
    ours = is_flamefit_space(path) if what == "texture space" else is_contact_sheet(path)
    if path.is_symlink() or not path.is_file() or not ours:
        raise FlameFitError(f"{path}: exists and is not a {what} FlameFit wrote (the build writes its {what} there); "
                            "FlameFit replaces only its own files: choose another -o")
    if not overwrite:
        raise FlameFitError(f"{path}: already exists (use --overwrite to replace it)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_flamefit_space(path) -> bool:
    """Whether `path` is a texture space FlameFit built (its metadata names our format;
    read through the size-guarded npz reader, no arrays but the metadata)."""
    from ..models.safe_pickle import load_npz

    try:
        meta = json.loads(str(load_npz(path, only={"meta"})["meta"]))
    except Exception:  # noqa: BLE001 - unreadable, no or bad metadata: not ours
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


# ----------------------------------------------------------------------------- the build


def build_texture_space(photos_dir, output, options: BuildOptions, model, log=print,
                        executor: ExecutorOptions | None = None) -> BuildReport:
    """Fit every photo in photos_dir with `model` (a HeadModel; resumable), then the PCA;
    write the space and its contact sheet. `executor`: where the photos are fitted
    (default: options.workers local processes)."""
    from ..fitting import prepare_model

    photos_dir, output = Path(photos_dir), Path(output)
    photos, sheets = check_outputs(photos_dir, output, options.overwrite, options.resume, options.texture_space)
    for sheet in sheets:
        log(f"left out {sheet.name}: a FlameFit contact sheet, not a photo")
    model = prepare_model(model)  # as for a fit; a prepared model is returned as it is
    ids = [photo_id(photos_dir, p) for p in photos]
    executor_options = executor or ExecutorOptions(workers=options.workers)
    runner = make_executor(executor_options)
    runner.prepare()  # Ray: connected before the work folder is made
    work = WorkFolder(work_dir_for(output), work_settings(model, options), options.resume)
    done = work.done()
    jobs = [PhotoJob(photo=str(p), resolved=str(p.resolve()), landmarks=str(sidecar_landmarks(p) or "") or None,
                     target=pid) for p, pid in zip(photos, ids) if pid not in done]
    log(f"texture-space build: {len(photos)} photos, {len(photos) - len(jobs)} already in {work.root}, "
        f"{len(jobs)} to fit with {executor_options.describe()}")

    cores = os.cpu_count() or 1
    threads = options.threads_per_worker or max(1, cores // max(1, options.workers))
    local_one = executor_options.kind == "local" and options.workers <= 1
    state = {"model": model, "fitter": options.fitter, "fit_options": dict(options.fit_options),
             "detector": options.detector, "texture_space": options.texture_space,
             "uv_resolution": options.uv_resolution, "threads": None if local_one else
             (1 if executor_options.kind == "ray" else threads),
             "skin_prior": uv_skin_prior(model, options.uv_resolution),
             "face_core": uv_face_core(model, options.uv_resolution)}

    def report(k, total, pid, photo, seconds, error):
        status = f"failed: {error}" if error else "ok"
        log(f"  [{k}/{total}] {Path(photo).name}: {status} ({seconds:.1f} s)")

    fit_seconds = run_photos(jobs, state, work, runner, report)
    if jobs:
        log(f"fitted {len(jobs)} photos in {fit_seconds:.1f} s ({60 * len(jobs) / max(fit_seconds, 1e-9):.1f} photos/min)")

    start = time.perf_counter()
    space, result, used, dropped = space_from_work(work, model, options, set(ids))
    pca_seconds = time.perf_counter() - start
    failures = work.failures()
    names = dict(zip(ids, (p.name for p in photos)))
    failed = [names[pid] for pid in ids if (work.failed / f"{pid}.json").exists()]
    log(f"{len(used)} of {len(photos)} photos used" +
        (f"; left out: {len(failed)} failed ({_some(failed)}; why: {work.failed})" if failed else "") +
        (f"; {len(dropped)} with too little of the face seen ({_some([names[pid] for pid in dropped])})"
         if dropped else ""))
    # Again just before writing: a build takes hours, and a file may have appeared meanwhile.
    for path in (output, output.with_suffix(".png")):
        _check_replaceable(path, options.overwrite, _inputs(photos_dir, photos, options.texture_space))
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
        "flamefit_version": __version__,
    }
    save_texture_space(output, space, meta, explained_variance_ratio=result.explained_ratio)
    coverage = result.coverage.reshape(options.uv_resolution, options.uv_resolution)
    sheet = write_contact_sheet(output.with_suffix(".png"), space, result.explained_ratio, coverage,
                                title=f"{output.name}: {len(used)} photos, {model.name}, K = {space.num_components}")
    log(f"wrote {output} (K = {space.num_components}, {100 * float(result.explained_ratio.sum()):.1f}% of the "
        f"variance) and {sheet}; PCA {pca_seconds:.1f} s")
    return BuildReport(output=output, contact_sheet=sheet, work_dir=work.root, photos=len(photos), used=len(used),
                       failed=failures, dropped=dropped, fitted_now=len(jobs), fit_seconds=fit_seconds,
                       pca_seconds=pca_seconds, explained_ratio=result.explained_ratio)


def _some(names: list[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass
class BuildRequest:
    photos_dir: Path
    output: Path
    components: int = 50
    workers: int | None = None  # local: processes (default 1); Ray: photos in flight (default 2 per CPU)
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    resume: bool = False
    overwrite: bool = False
    uv_resolution: int = 256
    size: int = 512
    normalise: str = "white-balance"
    symmetric_fill: float = 0.5
    licence: str = "not stated (pass --licence)"
    detector: str | None = None  # None: landmarks.default_detector()
    settings: dict = field(default_factory=dict)


def run_build(request: BuildRequest) -> BuildReport:
    """`flamefit texture-space build` from its request; checks come before the model loads."""
    from .session import settings_from

    if request.workers is not None and request.workers < 1:
        raise FlameFitError(f"--workers {request.workers}: need at least 1")
    if not 2 <= request.components <= 1000:
        raise FlameFitError(f"--components {request.components}: choose between 2 and 1000")
    for flag, value in (("--uv-resolution", request.uv_resolution), ("--size", request.size)):
        if not 16 <= value <= 4096:
            raise FlameFitError(f"{flag} {value}: choose between 16 and 4096")
    photos_dir = Path(request.photos_dir).expanduser()
    output = Path(request.output).expanduser().absolute()
    settings = settings_from(request.settings)
    # A bad folder or an output that would lose a user's file fails before the model loads.
    check_outputs(photos_dir, output, request.overwrite, request.resume, settings.texture_space)
    executor = dataclasses.replace(request.executor, workers=request.workers)
    if executor.kind == "local":  # after the other checks: a note, not an error
        executor.workers = pool.worker_count(request.workers or 1)
    workers = executor.workers or 1
    if workers == 1:
        configure_threads()
    model = load_model(settings)
    options = BuildOptions(components=request.components, workers=workers, resume=request.resume,
                           overwrite=request.overwrite,
                           uv_resolution=request.uv_resolution, size=request.size, normalise=request.normalise,
                           symmetric_fill=request.symmetric_fill, licence=request.licence, detector=request.detector,
                           texture_space=str(settings.texture_space) if settings.texture_space else None)
    return build_texture_space(photos_dir, output, options, model,
                               log=lambda *a: print(*a, file=sys.stderr, flush=True), executor=executor)
