"""A Ray cluster of several nodes on this machine, as the README's cluster recipe makes
one (`ray start --head` + `ray start --address`), for the Ray tests and
benchmarks/batch_scale.py. Every node is a `ray start --block` process in a session of
its own, so stopping the cluster ends exactly the processes it started (never
`ray stop`, which ends every Ray process of the user)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

START_SECONDS = 90.0
STOP_SECONDS = 10.0  # then the nodes' sessions are killed


class ClusterError(RuntimeError):
    """Ray could not start here (the tests skip with this reason)."""


class LocalCluster:
    def __init__(self, nodes: int = 2, cpus_per_node: int = 1):
        self.nodes, self.cpus = nodes, cpus_per_node
        self.processes: list[subprocess.Popen] = []
        self.folder: Path | None = None
        self.address = ""
        # A token left in ~/.ray by an earlier local runtime would switch the head to token
        # authentication while the other nodes connect without one: off for this private cluster.
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        ray = Path(sys.executable).with_name("ray")
        if not ray.exists():
            raise ClusterError(f"no `ray` command beside {sys.executable} (pip install 'flamefit[ray]')")
        self.folder = Path(tempfile.mkdtemp(prefix="ffray"))  # short: Ray's socket paths must fit 107 bytes
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        host = socket.gethostbyname(socket.gethostname())
        self.address = f"{host}:{port}"
        common = ["--block", "--num-cpus", str(self.cpus), "--disable-usage-stats"]
        self._start([ray, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                     "--temp-dir", str(self.folder), *common], "head")
        self._wait(1)
        for k in range(1, self.nodes):
            self._start([ray, "start", "--address", self.address, *common], f"node{k}")
        self._wait(self.nodes)

    def _start(self, command, name: str) -> None:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.processes.append(subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))
        log.close()

    def _wait(self, nodes: int) -> None:
        """Until `nodes` nodes are alive (asked from a separate process: the caller's own
        Ray connection, if any, stays its own)."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + START_SECONDS
        last = ""
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise ClusterError(f"`ray start` ended with code {dead[0].returncode}: {self._log_tail()}")
            done = subprocess.run([sys.executable, "-c", probe, self.address], capture_output=True, text=True,
                                  env=self.env, timeout=120)
            if done.stdout.strip() == str(nodes):
                return
            last = (done.stderr.strip().splitlines() or [done.stdout.strip()])[-1]
            time.sleep(1.0)
        raise ClusterError(f"the Ray cluster did not start {nodes} node(s) in {START_SECONDS:.0f} s: {last}")

    def _log_tail(self) -> str:
        lines = []
        for log in sorted(self.folder.glob("*.log")):
            lines += log.read_text(errors="replace").strip().splitlines()[-2:]
        return " | ".join(lines)[-500:]

    def stop(self) -> None:
        for process in reversed(self.processes):  # the nodes, then the head
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # what is left of its session
        self.processes = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

