"""One worker pool for `batch` and `texture-space build`: N spawned processes, each set
up once by `initializer`, running `function(*job)` for a list of jobs.

- Set-up: `initializer` and `initargs` are pickled once into a private file; a new
  worker is sent only that file's path (a few bytes down its start-up pipe, so starting
  a worker never waits for it) and loads the file itself, after its signal handlers are
  in place. A worker can thus be stopped at any time, also while it is still starting
  or loading the model. A set-up that fails raises its error from the first job, so the
  command fails with that one line, as it would with one worker.

- Interrupt (Ctrl-C, SIGTERM, SIGHUP in the parent): queued jobs are cancelled, the
  workers are sent SIGTERM (they clean up what they were writing) and joined, killed
  if they do not stop within `STOP_SECONDS`; then the interrupt goes on.
- A worker that dies (SIGKILL, out of memory) breaks a ProcessPoolExecutor: the pool
  is rebuilt. The jobs that were running then are retried alone, one per fresh
  one-worker pool, so a job that kills its worker is reported by itself
  (`on_crash`) and the others go on; the jobs not started yet are resubmitted.
- `worker_count(N)`: the --workers both commands use, capped at the cores and at the
  memory available for that many workers (each loads the model and fits on its own).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from ..errors import FlameFitError

STOP_SECONDS = 10.0
EXIT_STOPPED = 143  # a worker stopped by its parent (128 + SIGTERM)
_RETRY_AFTER_BREAKS = 2  # a job caught in this many broken pools runs alone next
# What one worker may need: peak RSS measured with ru_maxrss on the 2-core test machine
# (default model and stages): a `batch` worker 0.99 GB on a 512x512 photo, 1.05 GB on a
# 4000x4000 one; a `texture-space build` worker 0.61 GB. With some headroom:
WORKER_PEAK_BYTES = int(1.1 * 2**30)


def worker_count(requested: int) -> int:
    """The workers to start for `--workers requested` (>= 1, checked up front by the caller):
    at most one per core (each fits on one thread) and as many as the available memory
    holds, at least 1. A line on stderr says when fewer than asked are used, so call it
    after the other checks (an error stays the only line)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    available = _available_memory()
    by_memory = requested if available is None else max(1, available // WORKER_PEAK_BYTES)
    workers = min(requested, cores, by_memory)
    if workers < requested:
        memory = "" if available is None else \
            f", {available / 2**30:.1f} GB available at ~{WORKER_PEAK_BYTES / 2**30:.1f} GB per worker"
        print(f"flamefit: --workers {requested}: using {workers} ({cores} cores{memory})", file=sys.stderr, flush=True)
    return workers


def _available_memory() -> int | None:
    """Bytes of memory available for new processes (Linux: MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages: an underestimate
    except (AttributeError, ValueError, OSError):
        return None


_IN_JOB = [False]
_SETUP_ERROR: list[Exception] = []
_SETUP_PREFIX = "flamefit-pool-"


def worker_signals() -> None:
    """For the workers: the parent decides about Ctrl-C (it reaches the whole process
    group). SIGTERM from the parent ends an idle worker at once and raises
    KeyboardInterrupt in a busy one (in a job or its set-up), so that what it was writing
    is cleaned up; `job` then ends the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A parent killed outright (SIGKILL) cannot stop its workers: they notice and stop."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # as if stopped by the parent: a busy worker cleans up


def _on_term(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up must not be interrupted
    if not _IN_JOB[0]:
        os._exit(EXIT_STOPPED)
    raise KeyboardInterrupt


@contextmanager
def job():
    """Around a worker's set-up and each of its jobs: an interrupt ends the worker
    process quietly after their own clean-up ran."""
    _IN_JOB[0] = True
    try:
        yield
    except KeyboardInterrupt:
        os._exit(EXIT_STOPPED)
    finally:
        _IN_JOB[0] = False


def _start_worker(setup: str) -> None:
    """A new worker: its signals first (SIGTERM stays blocked, as in the parent when it
    started this process, until here), then its set-up, read from the file."""
    worker_signals()
    with job():
        try:
            with open(setup, "rb") as stream:
                initializer, initargs = pickle.load(stream)  # our own file, written by the parent
            initializer(*initargs)
        except Exception as exc:  # noqa: BLE001 - reported by the first job, not as a dying worker
            _SETUP_ERROR.append(exc)


def _run(function, *args):
    if _SETUP_ERROR:
        error = _SETUP_ERROR[0]  # sent back as a plain error: a subclass may not unpickle in the parent
        if isinstance(error, FlameFitError):
            raise FlameFitError(str(error)) from error
        raise RuntimeError(f"a worker's set-up failed: {type(error).__name__}: {error}") from error
    with job():
        return function(*args)


def _remove_stale_setups() -> None:
    """Set-up folders of parents killed outright (SIGKILL) go once their process is gone."""
    for stale in Path(tempfile.gettempdir()).glob(f"{_SETUP_PREFIX}*-*"):
        pid = stale.name[len(_SETUP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def run_jobs(jobs: list[tuple], function, workers: int, initializer, initargs: tuple, on_result, on_crash) -> None:
    """Run every job; on_result(job, value) as each finishes, on_crash(job, message) for a
    job whose worker died even when it ran alone. Raises what interrupts it, and a
    worker's set-up error."""
    _remove_stale_setups()
    folder = Path(tempfile.mkdtemp(prefix=f"{_SETUP_PREFIX}{os.getpid()}-"))  # private (0700)
    try:
        setup = folder / "setup.pickle"
        with open(setup, "wb") as stream:
            pickle.dump((initializer, initargs), stream, protocol=pickle.HIGHEST_PROTOCOL)
        _run_jobs(jobs, function, workers, str(setup), on_result, on_crash)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_jobs(jobs: list[tuple], function, workers: int, setup: str, on_result, on_crash) -> None:
    queue = list(jobs)
    alone: list[tuple] = []
    breaks: dict[int, int] = {}
    while queue or alone:
        if alone:
            batch, size, solo = [alone.pop(0)], 1, True
        else:
            batch, queue, size, solo = queue, [], min(workers, len(queue)), False
        pool = _new_pool(size, setup)
        try:
            # Workers start during submit: the parent writes each a few bytes through a pipe. With
            # the interrupt signals blocked for these milliseconds, no write is cut short (a worker
            # would die with a traceback), the workers start with them blocked until
            # worker_signals (their first step), and the parent takes a pending interrupt right after.
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP, signal.SIGTERM})
            try:
                futures = {pool.submit(_run, function, *job): (i, job) for i, job in enumerate(batch)}
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            pending = set(futures)
            running: set = set()
            broken = False
            while pending:
                running |= {f for f in pending if f.running()}
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    _, job = futures[future]
                    try:
                        value = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    on_result(job, value)
                running -= finished
                if broken:
                    break
            if broken:
                lost = [futures[f] for f in futures if not f.done() or _is_broken(f)]
                for _, job in lost:
                    key = id(job)
                    breaks[key] = breaks.get(key, 0) + 1
                    was_running = any(futures[f][1] is job for f in running)
                    if solo:
                        on_crash(job, "the worker process died while fitting it (killed, or out of memory)")
                    elif was_running or breaks[key] >= _RETRY_AFTER_BREAKS:
                        alone.append(job)
                    else:
                        queue.append(job)
                _stop(pool)
                continue
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)


def _is_broken(future) -> bool:
    return future.done() and not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)


def _new_pool(size: int, setup: str) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # no fork after torch threads started
    return ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=_start_worker, initargs=(setup,))


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued jobs and stop the workers (SIGTERM, then SIGKILL after STOP_SECONDS)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown clears it
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
