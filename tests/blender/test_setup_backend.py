"""Set up backend: a venv in the user data folder with the bundled backend pip-installed,
progress and outcome. Offline here (--no-deps --no-index: the dependencies are the
backend's business); the real set-up downloads PyTorch and friends."""

import os
import subprocess
import time
from pathlib import Path

import bpy
from helpers import Recorder
from testenv import BACKEND_PYTHON

OFFLINE = ["--no-deps", "--no-index", "--no-build-isolation"]


def offline_build_env(tmp_path):
    """Offline stand-in for the downloads: a fresh 3.11 venv has setuptools 65 and no `wheel`,
    and the backend imports torch; lend it the backend venv's site-packages on PYTHONPATH
    (.pth files there, e.g. an editable flamefit, are not processed from PYTHONPATH, so
    flamefit itself must come from the new environment)."""
    site = next((BACKEND_PYTHON.parent.parent / "lib").glob("python3*/site-packages"))
    return {"PYTHONPATH": str(site)}


def test_find_base_python():
    from blender_flamefit.io import setup_backend

    py, why = setup_backend.find_base_python(str(BACKEND_PYTHON))
    assert py == str(BACKEND_PYTHON) and why == ""
    assert setup_backend.python_version(str(BACKEND_PYTHON)) >= (3, 11)
    assert setup_backend.python_version("/no/such/python") is None


def test_setup_creates_a_working_backend_env(addon, empty_scene, tmp_path, monkeypatch):
    ops, prefs = addon.ui.operators, addon.ui.preferences
    venv = tmp_path / "user-data" / "backend-venv"
    monkeypatch.setattr(prefs, "managed_venv_dir", lambda: str(venv))
    monkeypatch.delenv("FLAMEFIT_PYTHON", raising=False)
    assert prefs.resolve_backend(bpy.context)[0] == ""
    backend_src = Path(addon.io.setup_backend.backend_source_dir())
    source_before = sorted(backend_src.rglob("*"))
    job, error = ops.start_setup(bpy.context, venv_dir=str(venv), pip_args=OFFLINE, base_python=str(BACKEND_PYTHON),
                                 env=offline_build_env(tmp_path))
    assert job is not None, error
    state = bpy.context.window_manager.flamefit
    statuses, fractions = set(), []
    deadline = time.monotonic() + 240
    while (res := ops.setup_step(bpy.context, job)).state == "RUNNING":
        statuses.add(state.setup_status.split(":")[0])
        fractions.append(state.setup_progress)
        if len(fractions) == 5:  # the preferences show progress while it runs
            rec = Recorder()
            prefs.draw_setup_status(rec, bpy.context)
            assert rec.log[0][0] in ("progress", "label") and "flamefit.cancel_setup" in rec.operators()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert res.state == "DONE", res.message + "\n" + "\n".join(job.log[-30:])
    assert {"Creating the virtual environment…", "Installing the FlameFit backend"} <= statuses
    assert fractions == sorted(fractions)
    assert not state.setup_running and not state.setup_failed and "Backend ready" in state.setup_status
    python, source = prefs.resolve_backend(bpy.context)
    assert python == str(venv / "bin" / "python") and source == "set-up environment"
    where = subprocess.run([python, "-c", "import flamefit; print(flamefit.__file__)"], capture_output=True,
                           text=True, env=dict(os.environ, **offline_build_env(tmp_path)))
    assert where.stdout.strip().startswith(str(venv)), where.stderr
    # installed from a copy: nothing was written into the backend source
    assert sorted(backend_src.rglob("*")) == source_before


def test_setup_failure_and_cancel(addon, empty_scene, tmp_path):
    from blender_flamefit.io import backend_process as bp
    from blender_flamefit.io import setup_backend

    # pip cannot find the (offline) dependency: a clear outcome, no ready marker
    src = tmp_path / "src"
    (src / "flamefit").mkdir(parents=True)
    (src / "flamefit" / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text('[project]\nname = "flamefit"\nversion = "0"\n'
                                        'dependencies = ["surely-not-a-real-package-xyz"]\n')
    job = setup_backend.SetupJob(str(tmp_path / "venv"), str(src), str(BACKEND_PYTHON),
                                 pip_args=["--no-index", "--no-build-isolation"],
                                 env=bp.child_env(offline_build_env(tmp_path)))
    deadline = time.monotonic() + 240
    while (res := job.step()).state == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert res.state == "FAILED" and res.message.startswith("Installing the FlameFit backend failed: ERROR")
    assert setup_backend.ready_python(str(tmp_path / "venv")) == ""
    # cancel while the venv is being created
    job = setup_backend.SetupJob(str(tmp_path / "venv2"), str(src), str(BACKEND_PYTHON))
    assert job.step().state == "RUNNING"
    job.cancel()
    while (res := job.step()).state == "RUNNING":
        time.sleep(0.05)
    assert res.state == "CANCELLED"
    assert job.process is None or job.process.proc.poll() is not None
    assert setup_backend.ready_python(str(tmp_path / "venv2")) == ""


def test_missing_backend_source(monkeypatch, addon, empty_scene):
    monkeypatch.setattr(addon.io.setup_backend, "backend_source_dir", lambda: "")
    job, error = addon.ui.operators.start_setup(bpy.context, base_python=str(BACKEND_PYTHON))
    assert job is None and "backend source is missing" in error



