"""One worker pool for `batch` and `texture-space build`: N spawned processes, each set
up once by `initializer`, running `function(*job)` for a list of jobs.

- Interrupt (Ctrl-C, SIGTERM, SIGHUP in the parent): queued jobs are cancelled, the
  workers are sent SIGTERM (they clean up what they were writing) and joined, killed
  if they do not stop within `STOP_SECONDS`; then the interrupt goes on.
- A worker that dies (SIGKILL, out of memory) breaks a ProcessPoolExecutor: the pool
  is rebuilt. The jobs that were running then are retried alone, one per fresh
  one-worker pool, so a job that kills its worker is reported by itself
  (`on_crash`) and the others go on; the jobs not started yet are resubmitted.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

STOP_SECONDS = 10.0
EXIT_STOPPED = 143  # a worker stopped by its parent (128 + SIGTERM)
_RETRY_AFTER_BREAKS = 2  # a job caught in this many broken pools runs alone next


_IN_JOB = [False]


def worker_signals() -> None:
    """For the workers: the parent decides about Ctrl-C (it reaches the whole process
    group). SIGTERM from the parent ends an idle worker at once and raises
    KeyboardInterrupt in a busy one, so that what it was writing is cleaned up; the
    job wrapper (`job`) then ends the process."""
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
    """Around one job in a worker: an interrupt ends the worker process quietly after
    the job's own clean-up ran."""
    _IN_JOB[0] = True
    try:
        yield
    except KeyboardInterrupt:
        os._exit(EXIT_STOPPED)
    finally:
        _IN_JOB[0] = False


def run_jobs(jobs: list[tuple], function, workers: int, initializer, initargs: tuple, on_result, on_crash) -> None:
    """Run every job; on_result(job, value) as each finishes, on_crash(job, message) for a
    job whose worker died even when it ran alone. Raises what interrupts it."""
    queue = list(jobs)
    alone: list[tuple] = []
    breaks: dict[int, int] = {}
    while queue or alone:
        if alone:
            batch, size, solo = [alone.pop(0)], 1, True
        else:
            batch, queue, size, solo = queue, [], min(workers, len(queue)), False
        pool = _new_pool(size, initializer, initargs)
        try:
            # Workers start during submit (the parent writes each its set-up through a pipe). With
            # the interrupt signals blocked meanwhile, no write is cut short (a worker would die
            # with a traceback), the workers start with them blocked until worker_signals, and the
            # parent takes a pending interrupt right after.
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP, signal.SIGTERM})
            try:
                futures = {pool.submit(function, *job): (i, job) for i, job in enumerate(batch)}
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


def _new_pool(size: int, initializer, initargs) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # no fork after torch threads started
    return ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=initializer, initargs=initargs)


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
