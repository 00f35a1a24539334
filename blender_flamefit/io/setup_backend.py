"""Set up backend: a virtual environment with the bundled backend pip-installed. No bpy.

`SetupJob` runs its commands one after another as child processes (never blocking the
caller: `step()` is polled from a modal operator), reports progress from pip's output and
ends with the interpreter path or one error sentence. A marker file written last tells a
complete environment from a half-made one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from .backend_process import CANCELLED, DONE, FAILED, RUNNING, ManagedProcess, StepResult, child_env, venv_python

MIN_PYTHON = (3, 11)
READY_MARKER = "flamefit-ready.json"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the add-on folder


def backend_source_dir() -> str:
    """The backend source: bundled in the add-on zip, else the checkout's backend/."""
    for candidate in (os.path.join(ADDON_DIR, "backend"), os.path.join(os.path.dirname(ADDON_DIR), "backend")):
        if os.path.isfile(os.path.join(candidate, "pyproject.toml")) and \
                os.path.isdir(os.path.join(candidate, "flamefit")):
            return candidate
    return ""


def ready_python(venv_dir: str) -> str:
    """The venv's interpreter when a set-up finished there, else ''."""
    py = venv_python(venv_dir)
    if os.path.isfile(os.path.join(venv_dir, READY_MARKER)) and os.path.isfile(py):
        return py
    return ""


def python_version(python: str, timeout: float = 10.0):
    """(major, minor) of an interpreter that has the venv module, else None."""
    try:
        out = subprocess.run([python, "-c", "import sys, venv, ensurepip; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=timeout, env=child_env())
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        major, minor = map(int, out.stdout.split()[:2])
    except ValueError:
        return None
    return major, minor


def find_base_python(preferred: str = "") -> tuple:
    """(python, '') of a Python >= 3.11 with venv, or ('', why not)."""
    candidates = []
    if preferred:
        candidates.append(preferred)
    exe = sys.executable or ""
    if "python" in os.path.basename(exe).lower():  # Blender's own Python (not the blender binary)
        candidates.append(exe)
    names = ["python3.13", "python3.12", "python3.11", "python3", "python"]
    if os.name == "nt":
        names = ["py", *names]
    for name in names:
        found = shutil.which(name)
        if found:
            candidates.append(found)
    tried = []
    for cand in dict.fromkeys(candidates):
        version = python_version(cand)
        tried.append(f"{cand} ({'.'.join(map(str, version)) if version else 'unusable'})")
        if version and version >= MIN_PYTHON:
            return cand, ""
    why = "no Python 3.11 or newer with the venv module was found"
    if tried:
        why += " (tried " + ", ".join(tried) + ")"
    return "", why + "; install one or set Base Python in the preferences"


class SetupJob:
    """Create `venv_dir` and pip-install the backend into it, step by step."""

    def __init__(self, venv_dir: str, backend_src: str, base_python: str, *, pip_args=(),
                 cpu_only_torch: bool = False, env=None):
        self.venv_dir = os.path.abspath(venv_dir)
        self.backend_src = backend_src
        self.base_python = base_python
        self.python = venv_python(self.venv_dir)
        self.env = env or child_env()
        self.pip_args = list(pip_args)
        self.started = time.monotonic()
        self.cancelled = False
        self.finished: StepResult | None = None
        self.process: ManagedProcess | None = None
        self.status = "Preparing…"
        self.log: list = []
        self.collected = 0
        self._tmp = tempfile.mkdtemp(prefix="flamefit-setup-")
        self.steps = []
        if not backend_src:
            self.finished = StepResult(FAILED, "the backend source is missing from the add-on; reinstall it")
            return
        if not base_python:
            self.finished = StepResult(FAILED, "no base Python given")
            return
        marker = os.path.join(self.venv_dir, READY_MARKER)
        if os.path.exists(marker):
            os.remove(marker)
        if not os.path.isfile(self.python):
            self.steps.append(("Creating the virtual environment", [base_python, "-m", "venv", self.venv_dir]))
        pip = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off"]
        if cpu_only_torch:
            self.steps.append(("Installing PyTorch (CPU)", pip + ["torch", "--index-url", TORCH_CPU_INDEX]))
        self.steps.append(("Installing the FlameFit backend", pip + self.pip_args + ["__SOURCE__"]))
        self.steps.append(("Checking the backend", [self.python, "-m", "flamefit.cli", "--version"]))
        self.index = -1
        self.version_line = ""

    @property
    def fraction(self) -> float:
        if not self.steps:
            return 1.0
        inner = min(0.9, self.collected / 25.0) if self.process is not None else 0.0
        return max(0.0, min(1.0, (max(0, self.index) + inner) / len(self.steps)))

    def _start_next(self) -> None:
        self.index += 1
        label, argv = self.steps[self.index]
        if "__SOURCE__" in argv:  # build from a copy: pip must not write into the add-on folder
            src = os.path.join(self._tmp, "backend")
            shutil.copytree(self.backend_src, src, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info", "build", "dist"))
            argv = [src if a == "__SOURCE__" else a for a in argv]
        self.status = label + "…"
        self.collected = 0
        self.log.append("$ " + " ".join(argv))
        self.process = ManagedProcess(argv, env=self.env)

    def _read(self) -> None:
        for line in self.process.read_lines():
            self.log.append(line)
            text = line.strip()
            m = re.match(r"(Collecting|Downloading|Building wheel for|Installing collected packages:|"
                         r"Successfully installed|Requirement already satisfied:|Processing)\s*(.*)", text)
            if m:
                if m.group(1) in ("Collecting", "Requirement already satisfied:", "Processing"):
                    self.collected += 1
                self.status = f"{self.steps[self.index][0]}: {m.group(1).rstrip(':')} {m.group(2)[:60]}".strip()
            if self.index == len(self.steps) - 1 and text.startswith("flamefit"):
                self.version_line = text

    def step(self) -> StepResult:
        if self.finished is not None:
            return self.finished
        try:
            if self.process is None:
                self._start_next()
            self._read()
            code = self.process.poll()
            if code is None:
                if self.cancelled:
                    self.process.escalate(5.0)
                return StepResult(RUNNING, self.status)
            self._read()
            self.process.kill_now()
            self.log.extend(self.process.stderr)
            if self.cancelled:
                return self._finish(StepResult(CANCELLED, "Set-up cancelled; the environment is incomplete"))
            if code != 0:
                err = [ln.strip() for ln in self.process.stderr if ln.strip()]
                pick = next((ln for ln in reversed(err) if ln.startswith("ERROR")), err[-1] if err else "")
                return self._finish(StepResult(FAILED, f"{self.steps[self.index][0]} failed: "
                                                       f"{pick or f'exit code {code}'}"))
            self.process = None
            if self.index == len(self.steps) - 1:
                with open(os.path.join(self.venv_dir, READY_MARKER), "w") as fh:
                    json.dump({"python": self.python, "backend": self.version_line,
                               "created": time.strftime("%Y-%m-%d %H:%M:%S")}, fh)
                took = time.monotonic() - self.started
                return self._finish(StepResult(DONE, f"Backend ready ({self.version_line or 'flamefit'}, "
                                                     f"{took:.0f} s): {self.python}", result_path=self.python))
            self._start_next()
            return StepResult(RUNNING, self.status)
        except OSError as exc:
            return self._finish(StepResult(FAILED, f"{self.status.rstrip('…')} failed: {exc}"))

    def _finish(self, result: StepResult) -> StepResult:
        self.finished = result
        shutil.rmtree(self._tmp, ignore_errors=True)
        return result

    def cancel(self) -> None:
        if self.finished is None:
            self.cancelled = True
            if self.process is not None:
                self.process.terminate()
            else:
                self._finish(StepResult(CANCELLED, "Set-up cancelled"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill_now()
        if self.finished is None:
            self._finish(StepResult(CANCELLED, "Set-up stopped"))
