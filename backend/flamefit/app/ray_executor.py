"""Run the jobs on Ray (issue #21; `pip install "flamefit[ray]"`): a local runtime, or an
existing cluster (`--ray ADDRESS` or RAY_ADDRESS).

- Each job is one Ray task of one CPU. The set-up (the settings, or the prepared model of
  a texture-space build) is put into Ray's object store once; a worker process runs it
  once, the first time it gets a job of this run (Ray reuses its worker processes), so
  the model is loaded once per worker. Head model and detector weights come from the
  package installed on the node, not from the driver's files.
- Streaming: at most `in_flight` tasks are out at a time (default two per CPU of the
  cluster); the driver reads a photo's bytes only when it sends its job, so its memory
  does not grow with the number of photos queued.
- Faults: a task whose worker process died (killed, out of memory, node lost) is run
  again by Ray, at most `retries` more times, on whichever worker is free; after that it
  is reported as failed with Ray's reason. A job's result is written once, by the driver,
  when its task returns: a retried photo is never written twice.
- Ctrl-C (or SIGTERM) on the driver cancels every outstanding task (force: its worker
  process is killed) and ends the runtime it started; what was written stays listed.
"""

from __future__ import annotations

import logging
import os
import uuid

from ..errors import FlameFitError
from . import jobs

_SETUP: dict = {}  # in a Ray worker process: the run whose set-up it ran


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FlameFitError('--ray needs Ray, an optional extra: pip install "flamefit[ray]"') from None
    return ray


def _remote_call(run: str, setup: list, function, job, data):
    """In a Ray worker: the run's set-up once, then the job. `setup` is [ObjectRef] (in a
    list, so Ray does not fetch it for every task). Returns ("ok", value) or ("setup", message)."""
    import ray

    if _SETUP.get("run") != run:
        jobs.NODE[0] = ray.get_runtime_context().get_node_id()
        initializer, initargs = ray.get(setup[0])
        try:
            initializer(*initargs)
        except FlameFitError as exc:
            return "setup", str(exc)
        except Exception as exc:  # noqa: BLE001 - the command's one line, as with the local pool
            return "setup", f"a worker's set-up failed: {type(exc).__name__}: {exc}"
        _SETUP["run"] = run
    return "ok", function(job, data)


class RayExecutor:
    shares_disk = False  # the workers send their results back; the driver writes them

    def __init__(self, options):
        self.options = options
        self.ray = None
        _import_ray()  # a missing extra is refused before any work

    def prepare(self) -> None:
        """Connect now (before the command writes anything): a cluster that cannot be reached
        is one line and nothing changed."""
        if self.ray is None:
            self.ray = self.connect()

    def connect(self):
        """ray.init for the options: the address given, else RAY_ADDRESS, else a new local
        runtime with `workers` CPUs (all cores by default). One line if Ray cannot start."""
        ray = _import_ray()
        address = self.options.address or os.environ.get("RAY_ADDRESS") or None
        if address == "local":
            address = None
        if address and address != "auto":
            _check_reachable(address)  # Ray's own client retries for minutes, printing as it goes
        kwargs = {"address": address, "include_dashboard": False, "log_to_driver": False,
                  "logging_level": logging.ERROR, "configure_logging": True}
        if address is None:
            kwargs["num_cpus"] = self.options.workers or os.cpu_count() or 1
        _messages_to_stderr(ray)
        try:
            ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray's own errors, one line
            where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FlameFitError(f"cannot start {where}: {first}") from None
        return ray

    def run(self, jobs, function, initializer, initargs: tuple, on_result, on_crash, payload=None) -> None:
        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:
            return
        self.prepare()
        ray = self.ray
        pending: dict = {}
        try:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            in_flight = self.options.workers or 2 * cpus
            remote = ray.remote(_remote_call).options(num_cpus=1, max_retries=self.options.retries,
                                                      retry_exceptions=False, name="flamefit_fit")
            setup = [ray.put((initializer, initargs))]
            run = uuid.uuid4().hex
            queue = _chain(first, jobs)
            while True:
                for job in queue:
                    try:
                        data = payload(job) if payload else None
                    except FlameFitError as exc:
                        on_crash(job, str(exc))
                    else:
                        pending[remote.remote(run, setup, function, job, data)] = job
                        del data  # the object store holds it now, not the driver
                    if len(pending) >= in_flight:
                        break
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        kind, value = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the function itself raised (a bug)
                        on_crash(job, _first_line(exc))
                        continue
                    except ray.exceptions.RayError as exc:  # its worker died each time it was tried
                        tries = self.options.retries + 1
                        on_crash(job, f"the worker process died while fitting it, {tries} time(s) "
                                      f"(killed, out of memory or node lost): {_first_line(exc)}")
                        continue
                    if kind == "setup":
                        raise FlameFitError(value)
                    on_result(job, value)
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
            raise
        finally:
            ray.shutdown()  # a runtime this run started ends; a cluster is only disconnected from
            self.ray = None


def _messages_to_stderr(ray) -> None:
    """Ray prints the cluster's messages to the driver ("(raylet) A worker died ...") on
    stdout, which --json-progress keeps for its JSON lines: they go to stderr instead."""
    module = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(module, "print_to_stdstream", None)
    if original is None or getattr(original, "flamefit", False):
        return

    def to_stderr(data, *args, **kwargs):
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr.flamefit = True
    module.print_to_stdstream = to_stderr


def _check_reachable(address: str, seconds: float = 10.0) -> None:
    """FlameFitError unless HOST:PORT (a `ray://HOST:PORT` too) accepts a connection."""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise FlameFitError(f"--ray {address}: give the cluster's address as HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise FlameFitError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is `ray start "
                            "--head` running there?") from None


def _chain(first, rest):
    yield first
    yield from rest


def _first_line(exc) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Traceback", "ray::")):
            return line.strip()[:300]
    return type(exc).__name__
