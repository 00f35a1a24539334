"""Set up backend picks PyTorch by the machine and shows pip's progress and log (io/setup_backend.py
has no bpy, so this runs in the backend venv):  .venv/bin/python -m pytest tests/blender_gui -q

The real install: PyTorch alone from its CPU index (on this machine pip takes the local CPU
wheel from the configured find-links), then the backend with the user's pip configuration."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from blender_flamefit.io import setup_backend  # noqa: E402

BASE_PYTHON = shutil.which("python3.11") or shutil.which("python3")
BACKEND_SRC = os.environ.get("FLAMEFIT_GUI_BACKEND_SRC", str(REPO / "backend"))  # e.g. a clean export


def test_torch_plan_by_machine():
    assert setup_backend.torch_plan("Linux", gpu="") == (setup_backend.TORCH_CPU_INDEX,
                                                         "PyTorch CPU build (no NVIDIA GPU found)")
    index, text = setup_backend.torch_plan("Linux", gpu="GPU 0: NVIDIA H200")
    assert index == "" and "CUDA" in text and "H200" in text  # PyPI's Linux torch is the CUDA build
    assert setup_backend.torch_plan("Darwin", gpu="")[0] == ""
    assert setup_backend.torch_plan("Windows", gpu="GPU 0: NVIDIA")[0].endswith("cu126")
    # this machine
    has_gpu = bool(setup_backend.nvidia_gpu())
    assert (setup_backend.torch_plan()[0] == setup_backend.TORCH_CPU_INDEX) == (not has_gpu)
    assert setup_backend.torch_requirement(str(REPO / "backend")).startswith("torch")


def test_interpreter_check_says_what_is_wrong():
    if BASE_PYTHON is None:
        pytest.skip("no system python3")
    deadline = time.monotonic() + 120
    while (verdict := setup_backend.check_interpreter(BASE_PYTHON))[0] == "checking":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    if verdict[0] == "ok":
        pytest.skip(f"{BASE_PYTHON} has flamefit installed")
    assert verdict[0] == "bad" and "no flamefit backend installed" in verdict[1]
    assert setup_backend.check_interpreter("/no/such/python") == ("bad", "/no/such/python does not exist")


@pytest.mark.skipif(BASE_PYTHON is None, reason="no system python3 to make a venv with")
def test_cpu_torch_then_backend_with_users_pip_config(tmp_path):
    if setup_backend.nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU: the CPU path is not what it would choose")
    plan = setup_backend.torch_plan()
    venv = tmp_path / "data" / "backend-venv"
    # everything for real, with this machine's pip configuration (local wheels), and a new
    # account's empty model cache for the last step
    job = setup_backend.SetupJob(str(venv), BACKEND_SRC, BASE_PYTHON, torch=plan, prepare_model=True,
                                 env=setup_backend.child_env({"XDG_CACHE_HOME": str(tmp_path / "cache")}))
    assert [label for label, _ in job.steps][:2] == ["Creating the virtual environment",
                                                      "Installing PyTorch CPU build"]
    torch_argv = job.steps[1][1]
    assert torch_argv[torch_argv.index("--index-url") + 1] == setup_backend.TORCH_CPU_INDEX
    assert "--no-deps" in torch_argv
    backend_argv = job.steps[2][1]
    assert "--index-url" not in backend_argv and "--extra-index-url" not in backend_argv  # the user's config
    statuses, lines, fractions = [], set(), []
    deadline = time.monotonic() + 900
    while (res := job.step()).state == "RUNNING":
        if not statuses or statuses[-1] != res.message:
            statuses.append(res.message)
        lines.update(job.lines(4))
        fractions.append(job.fraction)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    log = Path(job.log_path).read_text()
    assert res.state == "DONE", res.message + "\n" + log[-3000:]
    assert "PyTorch CPU build (no NVIDIA GPU found)" in res.message
    assert any(s.startswith("Installing PyTorch CPU build") for s in statuses)
    assert any(s.startswith("Preparing the open head (first run only)") for s in statuses)
    assert any((tmp_path / "cache").rglob("*")), "the model cache was not built"
    assert any("torch" in ln.lower() for ln in lines)  # pip's own lines reached the panel feed
    assert fractions == sorted(fractions)
    assert "$ " in log and "== DONE" in log  # every command and its outcome in the log file
    py = setup_backend.ready_python(str(venv))
    out = subprocess.run([py, "-m", "pip", "show", "torch"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version = next(ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("Version:"))
    assert version.endswith("+cpu"), out.stdout  # the CPU build, not PyPI's CUDA one


def test_failure_names_the_log(tmp_path):
    src = tmp_path / "src"
    (src / "flamefit").mkdir(parents=True)
    (src / "flamefit" / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text('[project]\nname = "flamefit"\nversion = "0"\n'
                                        'dependencies = ["surely-not-a-real-package-xyz"]\n')
    job = setup_backend.SetupJob(str(tmp_path / "venv"), str(src), sys.executable,
                                 pip_args=["--no-index", "--no-build-isolation"])
    deadline = time.monotonic() + 300
    while (res := job.step()).state == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert res.state == "FAILED" and f"(full log: {job.log_path})" in res.message
    shown = res.message.split(" failed: ", 1)[1].split(" (full log: ")[0]
    assert shown and shown in Path(job.log_path).read_text()  # the log holds what the panel said, and more
