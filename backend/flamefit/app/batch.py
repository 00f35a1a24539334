"""`flamefit batch PHOTOS_DIR -o OUT_DIR`: one bundle per photo, and a summary.

- bundles are OUT_DIR/<name>, unique per photo (photos.bundle_names; summary.csv
  records which photo went where); a failing photo is recorded and the others go on;
  landmarks come from a sidecar file beside the photo (PHOTO_STEM.pts/.json/.npy);
- an existing OUT_DIR/<name> is only ever replaced when it is a FlameFit bundle of the
  same photo: with --overwrite, or with --resume when it is incomplete (a complete one
  is skipped); anything else there is left alone and the photo reported as failed.
  The same photo means the same name and, for a bundle that records it, the same
  SHA-256 (an a.png from another folder is another photo); an older bundle without a
  hash is matched by name. A photo edited since its bundle was fitted is refitted by
  --overwrite only;
- `--workers N` fits N at a time in separate processes (app.pool: each is sent the
  settings and loads the model once itself, so it can be stopped while starting; a
  worker that dies is replaced and its photo retried alone); N is capped at the cores
  and memory (pool.worker_count);
- OUT_DIR/summary.csv (written atomically under a private temporary name, also when
  interrupted) lists every photo handled and every bundle on disk; only a summary
  FlameFit wrote (our header line) is replaced, anything else named so is refused up
  front; the command fails (exit 2) when any photo failed;
- a bundle counts as written this run only if its result.json is not the one that
  was there before (an interrupted --overwrite keeps the earlier bundles, listed as
  skipped).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import read_result, validate_bundle, write_bundle
from ..bundle.reader import fitted_photos, is_bundle, photo_sha256
from ..bundle.writer import check_path_text, check_replaceable
from ..errors import FlameFitError, Interrupted
from ..fsutil import atomic_write_text, file_sha256, regular_file_problem, require_writable
from . import bundle_transfer as transfer
from . import pool, subjects
from .executors import ExecutorOptions, make_executor
from .jobs import PhotoData, PhotoJob, SubjectJob, local_files, read_data, read_subject_data, worker_name
from .photos import bundle_names, list_photos, sidecar_landmarks
from .session import configure_threads, load_fit_inputs, resolve_device, settings_from

COLUMNS = ("photo", "bundle", "status", "landmark_error_px", "landmark_error_eye_fraction", "psnr_db", "seconds", "message",
           "worker")
OLD_COLUMNS = COLUMNS[:-1]  # summaries written before the `worker` column: ours too
SUMMARY = "summary.csv"


@dataclass
class BatchRequest:
    photos_dir: Path
    output: Path
    fit_options: object  # fitting.FitOptions
    detector: str | None = None  # None: landmarks.default_detector()
    device: str = "auto"
    overwrite: bool = False
    resume: bool = False
    subjects: bool = False  # photos_dir holds one folder of photos per person: one bundle each (app/subjects.py)
    workers: int | None = None  # local: processes (default 1); Ray: photos in flight (default 2 per CPU)
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    settings: dict = field(default_factory=dict)  # flag values for session.settings_from
    progress: object = None  # a JsonProgress for --json-progress, else None (lines on stderr)


def _row(photo, bundle, status, metrics=None, seconds=None, message="", worker=""):
    metrics = metrics or {}
    return {"photo": str(photo), "bundle": str(bundle), "status": status,
            "landmark_error_px": metrics.get("landmark_error_px", ""),
            "landmark_error_eye_fraction": metrics.get("landmark_error_eye_fraction", ""),
            "psnr_db": metrics.get("psnr_db", ""), "seconds": "" if seconds is None else round(seconds, 2),
            "message": message, "worker": worker}


def fit_and_write(job: PhotoJob, data: PhotoData | None) -> dict:
    """In a worker that shares the driver's disk (local): fit one photo and write its
    bundle itself. {"row": summary row, "files": None}."""
    return _fit(job, data, pack=False)


def fit_and_pack(job: PhotoJob, data: PhotoData | None) -> dict:
    """In a worker that may not share the driver's disk (Ray): fit the photo sent in `data`
    and send back its bundle's files, which the driver writes (deliver). {"row", "files"}."""
    return _fit(job, data, pack=True)


def _fit(job: PhotoJob | SubjectJob, data, pack: bool) -> dict:
    """One photo's fit (a person's photos' for a SubjectJob, `data` then one PhotoData per
    photo); an error is that photo's (person's) failure."""
    from ..fitting import fit_photos
    from ..image import load_photo

    w = _WORKER
    start = time.perf_counter()
    files = None
    try:
        views = job.views if isinstance(job, SubjectJob) else (job,)
        if data is None:
            sent = (None,) * len(views)
        else:
            sent = data if isinstance(job, SubjectJob) else (data,)
        with ExitStack() as stack:
            local = [stack.enter_context(local_files(v, d)) for v, d in zip(views, sent)]
            photos = []
            for view, d, (path, _) in zip(views, sent, local):
                photo = load_photo(path)
                if d is not None:  # the copy stands for the driver's file: its path goes into the bundle
                    photo = dataclasses.replace(photo, path=Path(view.resolved))
                photos.append(photo)
            result = fit_photos(photos, w["model"], w["options"], landmarks=[lm for _, lm in local],
                                detector=w["detector"], texture_space=w["space"], device=w["device"])
            for fitted, view in zip(result.views, views):
                if data is not None and "path" in (fitted.detection or {}):  # the sidecar as the driver names it
                    fitted.detection = {**fitted.detection, "path": view.landmarks}
            if pack:
                files = transfer.pack(result)
            else:
                write_bundle(result, job.target, overwrite=job.overwrite)
        row = _row(job.photo, job.target, "ok", result.metrics, time.perf_counter() - start)
    except FlameFitError as exc:
        row = _row(job.photo, job.target, "failed", seconds=time.perf_counter() - start, message=str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one photo's bug must not stop the batch
        row = _row(job.photo, job.target, "failed", seconds=time.perf_counter() - start,
                   message=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    row["worker"] = worker_name()
    return {"row": row, "files": files}


def deliver(job: PhotoJob, value: dict) -> dict:
    """In the driver: write the bundle a worker sent back (if any) under the writer's rules;
    the photo's summary row."""
    row = value["row"]
    if value["files"] is not None:
        try:
            transfer.write_files(value["files"], job.target, overwrite=job.overwrite)
        except FlameFitError as exc:
            row = {**row, "status": "failed", "message": str(exc)}
    return row


_WORKER: dict = {}


def worker_init(state: dict) -> None:
    """A worker's set-up (also the driver's with one local worker): its threads, and the
    model loaded once, by the worker itself from the settings (a cache read; built once
    under a lock on a fresh cache; on Ray from the package installed on the node)."""
    configure_threads(state.get("threads"))
    model, space = load_fit_inputs(settings_from(state["settings"]))[:2]
    _WORKER.update(state, model=model, space=space)


def _printable(text) -> str:
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _plan(photos, names, out_dir: Path, request: BatchRequest, rows: dict) -> list[tuple[Path, Path, bool]]:
    """(photo, bundle, overwrite) to fit; rows for photos skipped or refused up front.
    With --subjects the "photos" are the people's folders (app/subjects.py)."""
    todo = []
    for photo in photos:
        bundle = out_dir / names[photo]
        try:
            check_path_text(photo, "photo file")
        except FlameFitError as exc:
            rows[photo] = _row(photo, bundle, "failed", message=str(exc))
            continue
        if not (bundle.exists() or bundle.is_symlink()):
            todo.append((photo, bundle, False))
            continue
        if not is_bundle(bundle):
            rows[photo] = _row(photo, bundle, "failed", message=f"{bundle} exists and is not a FlameFit bundle; "
                               "not replaced (move it away or choose another output folder)")
            continue
        try:
            owner, fitted = subjects.owner(photo, bundle) if request.subjects else _owner(photo, bundle)
        except FlameFitError as exc:  # a person's folder without photos
            rows[photo] = _row(photo, bundle, "failed", message=str(exc))
            continue
        except OSError as exc:
            rows[photo] = _row(photo, bundle, "failed", message=f"{photo}: cannot read the photo "
                               f"({exc.strerror or exc})")
            continue
        if owner == "other":
            rows[photo] = _row(photo, bundle, "failed", message=f"{bundle} holds the bundle of another photo "
                               f"({fitted}); not replaced")
            continue
        if owner in ("edited", "changed") and not request.overwrite:
            what = f"an earlier version of {photo.name}" if owner == "edited" else f"other photos ({fitted})"
            rows[photo] = _row(photo, bundle, "failed", message=f"{bundle} was fitted to {what}; not replaced "
                               "(use --overwrite to refit it)")
            continue
        if owner == "same" and request.resume and not validate_bundle(bundle, deep=False):
            rows[photo] = _row(photo, bundle, "skipped", read_result(bundle).get("metrics"), message="already done")
        elif request.resume or request.overwrite:
            try:  # a bundle holding the user's files is refused now, not after its photo is fitted
                check_replaceable(bundle)
            except FlameFitError as exc:
                rows[photo] = _row(photo, bundle, "failed", message=str(exc))
                continue
            todo.append((photo, bundle, True))  # an incomplete bundle of ours (resume), or asked to (overwrite)
        else:
            rows[photo] = _row(photo, bundle, "failed", message=f"{bundle}: output folder already exists "
                               "(use --resume to skip done photos or --overwrite to replace them)")
    return todo


def _owner(photo: Path, bundle: Path) -> tuple[str, str]:
    """Whose bundle this is, and the photo it names: "same" (this photo's), "edited" (this
    very file, changed since it was fitted) or "other". A bundle records its photo's path
    and SHA-256, so an a.png from another folder is another photo; one written before
    the hash was recorded is matched by the file name alone, as it always was."""
    recorded = (fitted_photos(bundle) or [{}])[0]  # any schema; a subject bundle's first photo
    fitted = Path(str(recorded.get("path", "")))
    if fitted.name != photo.name:
        return "other", fitted.name
    digest = photo_sha256(bundle)
    if digest is None or digest == file_sha256(photo):
        return "same", str(fitted)
    return ("edited" if fitted == photo.resolve() else "other"), str(fitted)


def _result_identity(bundle: Path):
    """Which result.json is in `bundle` (a rewritten bundle has a new file), None if none."""
    try:
        info = (bundle / "result.json").stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns


def _output_folder(output) -> Path:
    out_dir = Path(output).expanduser().absolute()
    check_path_text(out_dir, "output folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise FlameFitError(f"{out_dir}: exists and is not a folder")
    require_writable(out_dir, out_dir)
    summary = out_dir / SUMMARY
    if (summary.exists() or summary.is_symlink()) and not _is_our_summary(summary):
        raise FlameFitError(f"{summary}: exists and is not a FlameFit batch summary; not replaced "
                            "(move it away or choose another output folder)")
    return out_dir


def _is_our_summary(path: Path) -> bool:
    """A summary.csv this command wrote: a regular file (not a link) starting with our header line."""
    if path.is_symlink() or regular_file_problem(path):
        return False
    headers = {",".join(columns).encode() for columns in (COLUMNS, OLD_COLUMNS)}
    try:
        with open(path, "rb") as stream:
            first = stream.read(max(map(len, headers)) + 3).split(b"\n")[0]
    except OSError:
        return False
    return first.rstrip(b"\r") in headers


def _summary_target(out_dir: Path) -> Path:
    """OUT/summary.csv, or, when a file FlameFit did not write appeared there during the run
    (it was checked before the first fit), the first free OUT/summary-N.csv: the user's file
    is kept."""
    path, n = out_dir / SUMMARY, 1
    while (path.exists() or path.is_symlink()) and not _is_our_summary(path):
        n += 1
        path = out_dir / f"summary-{n}.csv"
    return path


def _write_summary(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, _printable(buffer.getvalue()))  # a private temporary: parallel writers never collide


def run_batch(request: BatchRequest) -> dict:
    """Fit every photo of request.photos_dir; the counts. FlameFitError when any failed,
    Interrupted (with what was written) when stopped."""
    folder = Path(request.photos_dir).expanduser()
    if request.workers is not None and request.workers < 1:
        raise FlameFitError(f"--workers {request.workers}: need at least 1")
    out_dir = _output_folder(request.output)
    if request.subjects:
        photos = subjects.list_people(folder, exclude=[out_dir])
        names = subjects.people_names(photos)
    else:
        photos = list_photos(folder)
        names = bundle_names(photos)
    device = str(resolve_device(request.device))
    settings_from(request.settings)  # bad settings fail before anything is written
    executor_options = dataclasses.replace(request.executor, workers=request.workers)
    if executor_options.kind == "local":  # after the other checks: a note, not an error
        executor_options.workers = pool.worker_count(request.workers or 1)
    executor = make_executor(executor_options)
    json_out = request.progress
    info = sys.stderr

    rows: dict[Path, dict] = {}
    planned = _plan(photos, names, out_dir, request, rows)
    before = {bundle: _result_identity(bundle) for _, bundle, _ in planned}
    if planned:
        executor.prepare()  # Ray: connected before anything is written
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlameFitError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    todo = []
    for p, b, o in planned:
        if not request.subjects:
            todo.append(PhotoJob(photo=str(p), resolved=str(p.resolve()), target=str(b), overwrite=o,
                                 landmarks=str(sidecar_landmarks(p)) if sidecar_landmarks(p) else None))
            continue
        try:
            todo.append(subjects.subject_job(p, b, o))
        except FlameFitError as exc:  # a person's folder without photos: that person's failure
            rows[p] = _row(p, b, "failed", message=str(exc))
    planned = [(p, b, o) for p, b, o in planned if p not in rows]
    by_bundle = {str(bundle): photo for photo, bundle, _ in planned}
    done = [0]
    start = time.perf_counter()

    def report(row):
        done[0] += 1
        rows[by_bundle[row["bundle"]]] = row
        if json_out:
            json_out({"event": "photo", "photo": row["photo"], "bundle": row["bundle"], "status": row["status"],
                      "index": done[0], "count": len(todo), "message": row["message"], "worker": row["worker"]})
        else:
            print(_printable(f"[{done[0]}/{len(todo)}] {Path(row['photo']).name}: {row['status']}"
                             + (f" ({row['message']})" if row["message"] else f" in {row['seconds']} s")),
                  file=info, flush=True)

    state = {"settings": request.settings, "options": request.fit_options, "detector": request.detector,
             "device": device, "threads": None if executor_options.kind == "local" and executor_options.workers == 1
             else 1}
    interrupted = False
    try:
        function = fit_and_write if executor.shares_disk else fit_and_pack
        executor.run(todo, function, worker_init, (state,), on_result=lambda job, value: report(deliver(job, value)),
                     on_crash=lambda job, message: report(_row(job.photo, job.target, "failed", message=message)),
                     payload=read_subject_data if request.subjects else read_data)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # What is on disk decides: a bundle finished while stopping is listed as written; one
        # whose result.json is still the one from before (--overwrite) was kept, not refitted.
        for photo, bundle, _ in planned:
            if photo not in rows and is_bundle(bundle) and not validate_bundle(bundle, deep=False):
                rewritten = _result_identity(bundle) != before[bundle]
                rows[photo] = _row(photo, bundle, "ok" if rewritten else "skipped", read_result(bundle).get("metrics"),
                                   message="finished while stopping" if rewritten else
                                   "not refitted (interrupted); the earlier bundle is kept")
        ordered = [rows[p] for p in photos if p in rows]
        summary = _summary_target(out_dir)
        _write_summary(summary, ordered)
    seconds = time.perf_counter() - start
    counts = {status: sum(r["status"] == status for r in ordered) for status in ("ok", "failed", "skipped")}
    if interrupted:
        left = sum(rows.get(p, {}).get("status", "skipped") == "skipped" for p, _, _ in planned)  # kept or not reached
        written = counts["ok"]
        raise Interrupted(f"interrupted; {written} bundle(s) written this run, {left} photo(s) not fitted, "
                          f"listed in {summary}: run again with --resume to continue" if written else
                          f"interrupted; no bundle was written this run ({left} photo(s) not fitted; {summary})")
    _print_table(ordered, info if json_out else sys.stdout)
    fitted = sum(bool(r["status"] != "skipped" and r.get("worker")) for r in ordered)
    rate = 60 * fitted / seconds if fitted and seconds > 0 else 0.0
    if fitted and not json_out:
        unit = "people" if request.subjects else "photos"
        print(f"{fitted} {unit} fitted in {seconds:.1f} s: {rate:.1f} {unit}/minute "
              f"({executor_options.describe()})", file=info, flush=True)
    if json_out:
        json_out({"event": "done", "summary": str(summary), **counts, "photos_per_minute": round(rate, 2)})
    if counts["failed"]:
        raise FlameFitError(f"{counts['failed']} of {len(ordered)} photos failed; see {summary}")
    return counts


def _print_table(rows: list[dict], stream) -> None:
    headers = ("photo", "status", "lmk px", "lmk eye%", "PSNR dB", "s", "message")
    table = [(_printable(Path(r["photo"]).name), r["status"], _fmt(r["landmark_error_px"]),
              _fmt(r["landmark_error_eye_fraction"], 100), _fmt(r["psnr_db"]), _fmt(r["seconds"]),
              _printable(r["message"] or "")[:70]) for r in rows]
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
