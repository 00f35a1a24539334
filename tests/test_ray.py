"""Issue #21: `batch` and `texture-space build` on a Ray cluster of two one-CPU nodes
started on this machine (`ray start --head` + `ray start --address`, app/ray_cluster.py);
skipped with the reason when Ray is not installed or cannot start here. Both nodes fit
photos; a worker killed mid-fit costs a retry and its photo is written once; Ctrl-C
leaves summary.csv true and --resume fits only what is missing; a texture space built on
Ray equals the local pool's."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_fit import _env
from test_cli_safety import FAST

from flamefit.bundle import read_result, validate_bundle

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "flamefit[ray]")')

from flamefit.app.ray_cluster import ClusterError, LocalCluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    try:
        with LocalCluster(nodes=2, cpus_per_node=1) as running:
            yield running
    except ClusterError as exc:
        pytest.skip(f"Ray cannot start a local cluster here: {exc}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    """Four different photos of one face (mirrored, darker, cropped), for the fits and the PCA."""
    folder = tmp_path_factory.mktemp("ray_photos")
    variants = {"a": astronaut, "b": astronaut[:, ::-1], "c": (astronaut * 0.8).astype(np.uint8),
                "d": astronaut[20:, 10:]}
    for name, rgb in variants.items():
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / f"{name}.png")
    return folder


def _cli(cluster, *args, **kw):
    env = {**_env(), **{k: v for k, v in cluster.env.items() if k.startswith("RAY_")}}
    return subprocess.Popen([sys.executable, "-m", "flamefit.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _fitting_workers() -> list[int]:
    """Ray worker processes running a fit right now (Ray titles them by the task's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::flamefit_fit"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _events(proc, on_event=None, timeout=600):
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if on_event:
                on_event(events[-1])
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return events, stderr


def test_four_photos_are_fitted_on_both_nodes(cluster, photos, tmp_path):
    out = tmp_path / "out"
    proc = _cli(cluster, "batch", photos, "-o", out, "--ray", cluster.address, "--json-progress", *FAST)
    events, stderr = _events(proc)
    assert proc.returncode == 0, stderr
    rows = _summary(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    nodes = {r["worker"].rsplit(":", 1)[0] for r in rows}
    assert len(nodes) == 2, rows  # `<ray node id>:<pid>`: both nodes fitted photos
    assert {n["NodeID"] for n in _nodes(cluster)} == nodes
    for r in rows:
        bundle = Path(r["bundle"])
        assert validate_bundle(bundle) == []
        assert read_result(bundle)["views"][0]["photo"]["path"] == str(Path(r["photo"]).resolve())  # the driver's
    assert events[-1]["event"] == "done" and events[-1]["photos_per_minute"] > 0


def _nodes(cluster) -> list[dict]:
    probe = "import json, ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(json.dumps(ray.nodes()))"
    done = subprocess.run([sys.executable, "-c", probe, cluster.address], capture_output=True, text=True,
                          env=cluster.env, timeout=120)
    return [n for n in json.loads(done.stdout) if n["Alive"]]


def test_a_worker_killed_mid_fit_costs_a_retry_and_its_photo_is_written_once(cluster, photos, tmp_path):
    out = tmp_path / "out"
    proc = _cli(cluster, "batch", photos, "-o", out, "--ray", cluster.address, "--json-progress", *FAST)
    killed = []
    deadline = time.monotonic() + 300
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        running = _fitting_workers()  # the first photos: a worker is loading the model or fitting
        if running:
            os.kill(running[0], signal.SIGKILL)
            killed.append(running[0])
        time.sleep(0.05)
    events, stderr = _events(proc)
    assert killed, "no Ray worker was seen fitting"
    assert proc.returncode == 0, stderr
    photos_done = [e["photo"] for e in events if e["event"] == "photo"]
    assert sorted(photos_done) == sorted(str(p) for p in photos.glob("*.png"))  # each once: none lost, none twice
    rows = _summary(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert all(str(killed[0]) != r["worker"].rsplit(":", 1)[1] for r in rows)  # its photo was fitted elsewhere
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c", "d", "summary.csv"]  # no temporaries left


def test_ctrl_c_leaves_a_true_summary_and_resume_fits_only_the_rest(cluster, photos, tmp_path):
    out = tmp_path / "out"
    proc = _cli(cluster, "batch", photos, "-o", out, "--ray", cluster.address, "--workers", "2", "--json-progress",
                *FAST)
    _, stderr = _events(proc, lambda e: e["event"] == "photo" and proc.send_signal(signal.SIGINT))
    assert proc.returncode == 130, stderr
    written = {r["bundle"] for r in _summary(out) if r["status"] == "ok"}
    on_disk = {str(p) for p in out.iterdir() if p.is_dir() and validate_bundle(p, deep=False) == []}
    assert written == on_disk and written  # summary.csv lists exactly the bundles on disk
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary or lock left behind
    time.sleep(2.0)
    assert _fitting_workers() == []  # the outstanding tasks were cancelled

    proc = _cli(cluster, "batch", photos, "-o", out, "--ray", cluster.address, "--resume", "--json-progress", *FAST)
    events, stderr = _events(proc)
    assert proc.returncode == 0, stderr
    fitted = {e["bundle"] for e in events if e["event"] == "photo"}
    assert fitted == {str(out / n) for n in "abcd"} - written  # only what was missing
    rows = _summary(out)
    assert {r["bundle"]: r["status"] for r in rows} == {str(out / n): "skipped" if str(out / n) in written else "ok"
                                                        for n in "abcd"}


def test_a_texture_space_built_on_ray_equals_the_local_pools(cluster, photos, tmp_path):
    """The same four photos, fitted by two local processes and by the two Ray nodes."""
    spaces = {}
    for name, where in (("local", ["--workers", "2"]), ("ray", ["--ray", cluster.address])):
        spaces[name] = tmp_path / f"{name}.npz"
        proc = _cli(cluster, "texture-space", "build", photos, "-o", spaces[name], "--components", "2",
                    "--uv-resolution", "64", "--size", "64", *where)
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr
    local, remote = np.load(spaces["local"]), np.load(spaces["ray"])
    assert set(local.files) == set(remote.files)
    for key in local.files:
        if local[key].dtype.kind in "fc":
            np.testing.assert_allclose(remote[key], local[key], rtol=1e-4, atol=1e-4, err_msg=key)
        elif key != "meta":  # the metadata holds the creation time
            np.testing.assert_array_equal(remote[key], local[key], err_msg=key)


def test_an_unreachable_cluster_is_one_line_and_nothing_is_written(photos, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "flamefit.cli", "batch", str(photos), "-o", str(out), "--ray",
                           "127.0.0.1:1", *FAST], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "flamefit: error: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused); "
        "is `ray start --head` running there?"]
    assert not out.exists()
