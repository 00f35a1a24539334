"""Paths and environments shared by the add-on tests (imported by conftest.py and tests;
not named conftest so that nothing depends on which conftest module Python finds first)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

FAKE_BACKEND = HERE / "fake_backend"
BACKEND_PYTHON = Path(os.environ.get("FLAMEFIT_TEST_BACKEND_PYTHON", REPO / ".venv" / "bin" / "python"))
BLENDER = shutil.which("blender")


def backend_env(fake: bool, **extra) -> dict:
    """Environment that makes the add-on use a backend: the fake CLI or the real one."""
    path = str(FAKE_BACKEND if fake else REPO / "backend")
    env = {"FLAMEFIT_PYTHON": str(BACKEND_PYTHON),
           "PYTHONPATH": os.pathsep.join([path, str(HERE)])}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@functools.lru_cache(maxsize=1)
def real_backend_fit_available() -> bool:
    """True once the real backend's `flamefit fit` exists (it is being written in parallel).
    FLAMEFIT_TEST_NO_REAL_BACKEND=1 pretends it does not (quick runs)."""
    if os.environ.get("FLAMEFIT_TEST_NO_REAL_BACKEND") == "1" or not BACKEND_PYTHON.exists():
        return False
    env = dict(os.environ, PYTHONPATH=str(REPO / "backend"))
    try:
        out = subprocess.run([str(BACKEND_PYTHON), "-m", "flamefit.cli", "fit", "--help"], env=env,
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "--json-progress" in out.stdout


requires_blender34 = pytest.mark.skipif(BLENDER is None, reason="Debian's `blender` is not installed "
                                        "(apt-get install -y blender)")
