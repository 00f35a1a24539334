"""The build's per-photo stage: the work folder beside the output (one npz per photo,
written under a temporary name and renamed, so an interruption never leaves a partial
result), and the worker processes that fit and unwrap the photos."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from ..errors import FlameFitError

WORK_VERSION = 1  # layout of the per-photo results; a resume needs the same

def work_dir_for(output: Path) -> Path:
    return output.with_name(output.stem + ".work")


def list_photos(photos_dir: Path, exclude=()) -> list[Path]:
    """The photos `flamefit batch` would fit in photos_dir (sorted), minus `exclude`."""
    from ..bundle.batch import list_photos as batch_photos

    exclude = {Path(p).resolve() for p in exclude}
    photos = [p for p in batch_photos(Path(photos_dir)) if p.resolve() not in exclude]
    if not photos:
        raise FlameFitError(f"{photos_dir}: no photos in this folder")
    return photos


def photo_id(photos_dir: Path, photo: Path) -> str:
    """Stable file-name-safe id: the photo's stem + a hash of its path in the folder."""
    rel = photo.relative_to(photos_dir).as_posix()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in photo.stem)[:60]
    return f"{safe}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


# ----------------------------------------------------------------------------- work folder


class WorkFolder:
    """Per-photo results of a build; safe to interrupt at any moment."""

    def __init__(self, root: Path, settings: dict, resume: bool):
        self.root = Path(root)
        self.unwrapped = self.root / "unwrapped"
        self.failed = self.root / "failed"
        settings_file = self.root / "settings.json"
        if self.root.exists() and any(self.root.iterdir()):
            if not resume:
                raise FlameFitError(f"{self.root}: a build was started here before; pass --resume to continue it, "
                                    "or remove the folder to start over")
            if settings_file.exists():
                old = json.loads(settings_file.read_text())
                changed = {k for k in settings if old.get(k) != settings[k]}
                if changed:
                    raise FlameFitError(f"{self.root}: cannot resume, the build settings changed "
                                        f"({', '.join(sorted(changed))}); use the earlier settings or a new output")
        self.unwrapped.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(exist_ok=True)
        for leftover in [*self.unwrapped.glob(".*.tmp*"), *self.failed.glob(".*.tmp*")]:
            leftover.unlink(missing_ok=True)  # from a process killed while writing
        _atomic_write_text(settings_file, json.dumps(settings, indent=2))

    def done(self) -> set[str]:
        names = {p.name[:-4] for p in self.unwrapped.glob("*.npz")}
        return names | {p.name[:-5] for p in self.failed.glob("*.json")}

    def save(self, pid: str, albedo: np.ndarray, confidence: np.ndarray, info: dict) -> None:
        target = self.unwrapped / f"{pid}.npz"
        tmp = target.with_name(f".{pid}.{os.getpid()}.tmp.npz")
        np.savez(tmp, albedo=albedo.astype(np.float16),
                 confidence=np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8),
                 info=np.array(json.dumps(info, default=str)))
        tmp.replace(target)

    def save_failure(self, pid: str, photo: Path, message: str) -> None:
        _atomic_write_text(self.failed / f"{pid}.json", json.dumps({"photo": str(photo), "error": message}))

    def failures(self) -> dict:
        return {json.loads(p.read_text())["photo"]: json.loads(p.read_text())["error"] for p in sorted(self.failed.glob("*.json"))}

    def load_all(self):
        """(ids, X (N, P, 3) float32, W (N, P) float32, infos) of every stored photo."""
        files = sorted(self.unwrapped.glob("*.npz"))
        ids, xs, ws, infos = [], [], [], []
        for f in files:
            with np.load(f, allow_pickle=False) as data:
                albedo = data["albedo"].astype(np.float32)
                xs.append(albedo.reshape(3, -1).T)
                ws.append(data["confidence"].astype(np.float32).reshape(-1) / 255.0)
                infos.append(json.loads(str(data["info"])))
            ids.append(f.name[:-4])
        if not files:
            return ids, np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), infos
        return ids, np.stack(xs), np.stack(ws), infos


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------- worker processes

_WORKER: dict = {}


def _init_worker(state: dict) -> None:
    """Load the head model, UV texel map and fitter once per worker process."""
    import torch

    threads = state.get("threads")
    if threads:
        torch.set_num_threads(threads)
    from ..fitting.uvs import texel_map

    model = state["model"]
    module, name = state["fitter"].split(":")
    _WORKER.clear()
    _WORKER.update(state)
    _WORKER["texels"] = texel_map(model, state["uv_resolution"], "cpu")
    _WORKER["fit"] = getattr(importlib.import_module(module), name)
    space = None
    if state.get("texture_space"):
        from .spaces import load_texture_space

        space = load_texture_space(state["texture_space"], model)
    _WORKER["context"] = {"fit_options": state["fit_options"], "detector": state["detector"], "texture_space": space}


def _process(photo: str, pid: str) -> tuple[str, str, float, str | None]:
    """Fit + unwrap one photo and store the result. Returns (pid, photo, seconds, error)."""
    from .unwrap import unwrap_albedo

    start = time.perf_counter()
    work = _WORKER["work"]
    try:
        view = _WORKER["fit"](Path(photo), _WORKER["model"], _WORKER["context"])
        result = unwrap_albedo(view.image_linear, view.vertices, _WORKER["model"].faces, _WORKER["texels"], view.camera,
                               view.sh, skin_prior=_WORKER["skin_prior"], face_core=_WORKER["face_core"],
                               image_srgb_max=view.image_srgb_max)
    except FlameFitError as exc:
        work.save_failure(pid, Path(photo), str(exc))
        return pid, photo, time.perf_counter() - start, str(exc)
    except Exception as exc:  # noqa: BLE001 - one photo's bug must not stop a long build
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        work.save_failure(pid, Path(photo), message)
        return pid, photo, time.perf_counter() - start, message
    seconds = time.perf_counter() - start
    info = {"photo": photo, "seconds": round(seconds, 3), **(view.info or {})}
    work.save(pid, result.albedo, result.confidence, info)
    return pid, photo, seconds, None


def run_photos(jobs: list[tuple[str, str]], state: dict, workers: int, report) -> float:
    """Process (photo, id) jobs, `workers` processes (1: in this process). Seconds spent."""
    start = time.perf_counter()
    if not jobs:
        return 0.0
    if workers <= 1:
        _init_worker(state)
        for k, (photo, pid) in enumerate(jobs):
            report(k + 1, len(jobs), *_process(photo, pid))
        return time.perf_counter() - start
    import multiprocessing

    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # no fork after torch threads started
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(state,))
    try:
        pending = {pool.submit(_process, photo, pid) for photo, pid in jobs}
        done_count = 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done_count += 1
                report(done_count, len(jobs), *future.result())
    except BrokenProcessPool:
        _stop(pool)
        raise FlameFitError("a worker process died (see the messages above); the photos done so far are kept: "
                            "fix the cause and run again with --resume") from None
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return time.perf_counter() - start


def _stop(pool) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()  # our own workers only; their partial files have temporary names
