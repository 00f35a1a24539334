"""Who runs the jobs of `batch` and `texture-space build` (issue #21): the plan is the
same (app/jobs.py), the executor is chosen by `--executor local|ray` / `--ray [ADDRESS]`.

Every executor calls `initializer(*initargs)` once per worker process, then
`function(job, data)` for each job, and in the driver `on_result(job, value)` as each
finishes or `on_crash(job, message)` for a job whose worker died every time it was tried.
`data` is None where the worker shares the driver's disk (local), else the PhotoData the
driver read (`payload(job)`, one job at a time as it sends them: Ray). Where
`shares_disk`, the workers write what they make (a bundle, a work-folder entry)
themselves, as they always did; elsewhere they send it back and the driver writes it.

- LocalExecutor(workers): in this process (1 worker) or the worker pool (app/pool.py).
- RayExecutor (app/ray_executor.py): a local Ray runtime or an existing cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import pool


@dataclass
class ExecutorOptions:
    kind: str = "local"  # "local" or "ray"
    workers: int | None = None  # local: processes (default 1); Ray: tasks in flight (default 2 per CPU)
    address: str | None = None  # Ray: None = RAY_ADDRESS or a new local runtime; "local" forces a new one
    retries: int = 2  # Ray: a job whose worker died is tried again this many times

    def describe(self) -> str:
        if self.kind == "ray":
            return f"Ray ({self.address or os.environ.get('RAY_ADDRESS') or 'local runtime'})"
        return f"{self.workers or 1} local worker(s)"


class LocalExecutor:
    shares_disk = True  # its workers write their results themselves

    def __init__(self, workers: int):
        self.workers = workers

    def prepare(self) -> None:
        """Nothing to connect to (RayExecutor connects here, before anything is written)."""

    def run(self, jobs, function, initializer, initargs: tuple, on_result, on_crash, payload=None) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        if self.workers <= 1:
            initializer(*initargs)
            for job in jobs:
                on_result(job, function(job, None))
            return
        pool.run_jobs([(job, None) for job in jobs], function, self.workers, initializer, initargs,
                      on_result=lambda args, value: on_result(args[0], value),
                      on_crash=lambda args, message: on_crash(args[0], message))


def make_executor(options: ExecutorOptions):
    """The executor for the options; a bad choice is FlameFitError (before any work)."""
    if options.kind == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(options)
    return LocalExecutor(options.workers or 1)
