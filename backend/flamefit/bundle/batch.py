"""`flamefit batch PHOTOS_DIR -o OUT_DIR`: one bundle per photo, and a summary.

- bundles are OUT_DIR/<photo stem> (OUT_DIR/<stem>_<ext> when two photos share a stem);
- a failing photo is recorded and the others go on; landmarks are read from a sidecar
  file beside the photo (PHOTO_STEM.pts / .json / .npy) when there is one;
- `--resume` skips photos whose bundle is complete; `--workers N` fits N at a time in
  separate processes (each loads the model once);
- OUT_DIR/summary.csv and a printed table list every photo (ok / failed / skipped);
  the command fails (exit 2) when any photo failed.
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from ..errors import FlameFitError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")
LANDMARK_SUFFIXES = (".pts", ".json", ".npy")
COLUMNS = ("photo", "bundle", "status", "landmark_error_px", "landmark_error_eye_fraction", "psnr_db", "seconds", "message")

_WORKER: dict = {}


def list_photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FlameFitError(f"{folder}: photo folder not found" if not folder.exists() else f"{folder}: not a folder")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
                    and not p.name.startswith("."))
    if not photos:
        raise FlameFitError(f"{folder}: no photos ({', '.join(PHOTO_SUFFIXES)})")
    return photos


def bundle_names(photos: list[Path]) -> dict[Path, str]:
    stems: dict[str, int] = {}
    for p in photos:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in photos}


def sidecar_landmarks(photo: Path):
    for suffix in LANDMARK_SUFFIXES:
        candidate = photo.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _row(photo, bundle, status, result=None, seconds=None, message=""):
    metrics = (result or {}).get("metrics", {})
    return {"photo": str(photo), "bundle": str(bundle), "status": status,
            "landmark_error_px": metrics.get("landmark_error_px", ""),
            "landmark_error_eye_fraction": metrics.get("landmark_error_eye_fraction", ""),
            "psnr_db": metrics.get("psnr_db", ""), "seconds": "" if seconds is None else round(seconds, 2),
            "message": message}


def fit_one(photo: Path, bundle: Path, model, space, options, args_dict: dict) -> dict:
    """Fit one photo and write its bundle; a summary row (never raises FlameFitError)."""
    from ..fitting import fit_photo
    from .writer import write_bundle

    start = time.perf_counter()
    try:
        result = fit_photo(photo, model, options, landmarks=sidecar_landmarks(photo), detector=args_dict["detector"],
                           texture_space=space, device=args_dict["device"])
        write_bundle(result, bundle, overwrite=args_dict["overwrite"])
        return _row(photo, bundle, "ok", {"metrics": result.metrics}, time.perf_counter() - start)
    except FlameFitError as exc:
        return _row(photo, bundle, "failed", seconds=time.perf_counter() - start, message=str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one photo's bug must not stop the batch
        return _row(photo, bundle, "failed", seconds=time.perf_counter() - start,
                    message=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_init(args_dict: dict, options) -> None:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    import torch

    torch.set_num_threads(1)
    from ..cli import load_model_and_space
    from ..config import load_settings

    model, space = load_model_and_space(load_settings(args_dict["settings"]))
    _WORKER.update(model=model, space=space, options=options, args=args_dict)


def _worker_fit(photo: str, bundle: str) -> dict:
    try:
        return fit_one(Path(photo), Path(bundle), _WORKER["model"], _WORKER["space"], _WORKER["options"], _WORKER["args"])
    except KeyboardInterrupt:
        return _row(photo, bundle, "failed", message="interrupted")


def _print_table(rows: list[dict], stream) -> None:
    headers = ("photo", "status", "lmk px", "lmk eye%", "PSNR dB", "s", "message")
    table = [(Path(r["photo"]).name, r["status"], _fmt(r["landmark_error_px"]),
              _fmt(r["landmark_error_eye_fraction"], 100), _fmt(r["psnr_db"]), _fmt(r["seconds"]),
              (r["message"] or "")[:70]) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=stream)
    print("-" * len(line), file=stream)
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)), file=stream)


def _fmt(value, scale=1.0) -> str:
    if value in ("", None):
        return "-"
    return f"{float(value) * scale:.2f}"


def run_batch(args, options) -> None:
    from ..cli import configure_threads, load_fit_inputs
    from ..config import PATH_KEYS
    from ..fitting import resolve_device
    from ..progress import JsonProgress
    from .reader import validate_bundle

    folder = Path(args.photos).expanduser()
    out_dir = Path(args.output).expanduser().absolute()
    photos = list_photos(folder)
    names = bundle_names(photos)
    device = str(resolve_device(args.device))
    if args.workers < 1:
        raise FlameFitError(f"--workers {args.workers}: need at least 1")
    json_out = JsonProgress() if args.json_progress else None
    info = sys.stderr

    rows: dict[Path, dict] = {}
    todo = []
    for photo in photos:
        bundle = out_dir / names[photo]
        if args.resume and bundle.is_dir() and not validate_bundle(bundle, deep=False):
            from .reader import read_result

            rows[photo] = _row(photo, bundle, "skipped", read_result(bundle), message="already done")
        else:
            todo.append((photo, bundle))
    out_dir.mkdir(parents=True, exist_ok=True)
    args_dict = {"detector": args.detector, "device": device, "overwrite": args.overwrite or args.resume,
                 "settings": {key: getattr(args, key, None) for key in (*PATH_KEYS, "cache_dir")}}

    def report(row, done):
        rows[Path(row["photo"])] = row
        if json_out:
            json_out({"event": "photo", "photo": row["photo"], "bundle": row["bundle"], "status": row["status"],
                      "index": done, "count": len(todo), "message": row["message"]})
        else:
            print(f"[{done}/{len(todo)}] {Path(row['photo']).name}: {row['status']}"
                  + (f" ({row['message']})" if row["message"] else f" in {row['seconds']} s"), file=info, flush=True)

    try:
        if todo and args.workers == 1:
            configure_threads()
            model, space, _ = load_fit_inputs(args)
            for i, (photo, bundle) in enumerate(todo, 1):
                report(fit_one(photo, bundle, model, space, options, args_dict), i)
        elif todo:
            _run_pool(todo, args, options, args_dict, report)
    finally:
        ordered = [rows[p] for p in photos if p in rows]
        summary = out_dir / "summary.csv"
        with open(summary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(ordered)
    _print_table(ordered, info if json_out else sys.stdout)
    failed = [r for r in ordered if r["status"] == "failed"]
    if json_out:
        json_out({"event": "done", "summary": str(summary), "ok": sum(r["status"] == "ok" for r in ordered),
                  "failed": len(failed), "skipped": sum(r["status"] == "skipped" for r in ordered)})
    if failed:
        raise FlameFitError(f"{len(failed)} of {len(ordered)} photos failed; see {summary}")


def _run_pool(todo, args, options, args_dict, report) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(args.workers, len(todo)), mp_context=context,
                               initializer=_worker_init, initargs=(args_dict, options))
    futures = {}
    done_count = 0
    try:
        for photo, bundle in todo:
            futures[pool.submit(_worker_fit, str(photo), str(bundle))] = (photo, bundle)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                photo, bundle = futures[future]
                done_count += 1
                try:
                    row = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died
                    row = _row(photo, bundle, "failed", message=f"worker failed: {type(exc).__name__}: {exc}")
                report(row, done_count)
    except KeyboardInterrupt:
        for process in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(process.pid, signal.SIGTERM)  # workers clean up their temporary folders
            except OSError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
