"""Add-on tests: run with the PyPI `bpy` module (.venv-blender) and, where installed,
Debian's `blender` 3.4 in subprocesses. Independent of the backend's tests/conftest.py:
    .venv-blender/bin/python -m pytest tests/blender -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import synth_bundle  # noqa: E402
from testenv import BACKEND_PYTHON, backend_env, real_backend_fit_available  # noqa: E402,F401


@pytest.fixture(scope="session")
def real_backend():
    """Skips the test until the real backend's `flamefit fit` works."""
    if not real_backend_fit_available():
        pytest.skip("the backend's `flamefit fit` is not available yet")
    return BACKEND_PYTHON


@pytest.fixture
def env_patch(monkeypatch):
    """Apply a backend_env() dict to os.environ for the test."""
    def apply(env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return apply


@pytest.fixture(scope="session")
def addon():
    """The add-on package registered once in this bpy session."""
    import bpy  # noqa: F401

    import blender_flamefit

    blender_flamefit.register()
    yield blender_flamefit
    blender_flamefit.unregister()


@pytest.fixture
def empty_scene(addon):
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    state = bpy.context.window_manager.flamefit
    state.status = state.error = ""
    state.running = False
    yield bpy.context.scene


@pytest.fixture
def synth_bundle_dir(tmp_path):
    folder = tmp_path / "synthetic_photo_result"
    synth_bundle.write_bundle(str(folder), photo_path=str(tmp_path / "synthetic_photo.png"))
    return folder


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory):
    """skimage's astronaut (public domain) as a PNG, written with the backend's venv."""
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    code = ("import sys; from skimage import data; from PIL import Image; "
            "Image.fromarray(data.astronaut()).save(sys.argv[1])")
    out = subprocess.run([str(BACKEND_PYTHON), "-c", code, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot write the astronaut photo: {out.stderr.strip()[-200:]}")
    return path


@pytest.fixture(scope="session")
def real_bundle(real_backend, astronaut_png, tmp_path_factory):
    """A bundle the real backend produced in this test run from the astronaut photo."""
    from blender_flamefit.io import backend_process as bp

    out = tmp_path_factory.mktemp("real") / "astronaut"
    env = bp.child_env(backend_env(fake=False))
    argv = bp.backend_command(str(BACKEND_PYTHON), str(astronaut_png), str(out), device="cpu",
                              texture_size=int(os.environ.get("FLAMEFIT_TEST_TEXTURE", "256")))
    job = bp.FitJob(argv, str(out), env=env)
    import time

    deadline = time.monotonic() + float(os.environ.get("FLAMEFIT_TEST_FIT_TIMEOUT", "900"))
    while (res := job.step()).state == bp.RUNNING:
        if time.monotonic() > deadline:
            job.stop()
            pytest.fail("the real backend fit took too long")
        time.sleep(0.2)
    job.stop()
    assert res.state == bp.DONE, f"real backend fit failed: {res.message}"
    return Path(res.result_path).parent
