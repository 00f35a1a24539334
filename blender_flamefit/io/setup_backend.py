"""Set up backend: a virtual environment with the bundled backend pip-installed. No bpy.

`SetupJob` runs its commands one after another as child processes (never blocking the
caller: `step()` is polled from a modal operator), reports progress from pip's output
(`lines()`: the last lines, for the panel), writes every line to a log file, and ends with
the interpreter path or one error sentence (with the log's path). A marker file written
last tells a complete environment from a half-made one.

PyTorch is chosen by the machine (`torch_plan`): NVIDIA GPU -> the default build (CUDA), none
-> the CPU build, macOS -> the default build. A CPU build is installed alone first, from
PyTorch's CPU index given as --index-url for that one command only; the backend and all other
dependencies then install with the user's own pip configuration (index, mirrors, certs).
"""

from __future__ import annotations

import json
import os
import platform
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
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu126"  # PyPI's Windows torch is CPU-only
LOG_NAME = "setup-log.txt"
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

def nvidia_gpu() -> str:
    """The first NVIDIA GPU's name ('' when there is none or no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0].split(" (UUID")[0]
        except (OSError, subprocess.SubprocessError):
            pass
    if os.path.isfile("/proc/driver/nvidia/version"):
        return "NVIDIA GPU"
    return ""


def torch_plan(system: str = "", gpu=None) -> tuple:
    """(index URL for a torch-only install or '' for the user's own index, what was chosen)."""
    system = system or platform.system()
    if system == "Darwin":
        return "", "PyTorch for macOS (default build)"
    gpu = nvidia_gpu() if gpu is None else gpu
    if gpu:
        index = TORCH_CUDA_INDEX_WINDOWS if system == "Windows" else ""
        return index, f"PyTorch with CUDA ({gpu} found)"
    return TORCH_CPU_INDEX, "PyTorch CPU build (no NVIDIA GPU found)"


def torch_requirement(backend_src: str) -> str:
    """The backend's torch requirement (e.g. 'torch>=2.4') from its pyproject.toml."""
    try:
        with open(os.path.join(backend_src, "pyproject.toml"), encoding="utf8") as fh:
            text = fh.read()
    except OSError:
        return "torch"
    m = re.search(r'["\'](torch\s*[<>=!~][^"\']*|torch)["\']', text)
    return m.group(1).replace(" ", "") if m else "torch"


_CHECKED: dict = {}  # (python, mtime) -> (ok, message); filled by a background thread


def check_interpreter(python: str) -> tuple:
    """Is `python` a FlameFit backend? Runs `python -m flamefit.cli --version` once per
    interpreter (cached; in a thread, so a panel never waits). ('ok'|'bad'|'checking', text)."""
    import threading

    try:
        key = (python, os.path.getmtime(python))
    except OSError:
        return "bad", f"{python} does not exist"
    found = _CHECKED.get(key)
    if found is not None:
        return found
    _CHECKED[key] = ("checking", "checking the backend…")

    def run():
        try:
            out = subprocess.run([python, "-m", "flamefit.cli", "--version"], capture_output=True, text=True,
                                 timeout=120, env=child_env())
            text = (out.stdout or out.stderr).strip().splitlines()
            if out.returncode == 0 and text and text[-1].startswith("flamefit"):
                _CHECKED[key] = ("ok", text[-1])
            elif "No module named" in (out.stderr or ""):
                _CHECKED[key] = ("bad", f"{python} has no flamefit backend installed (pip install ./backend, "
                                        "or clear the path and use Set up backend)")
            else:
                last = (out.stderr or out.stdout or "").strip().splitlines()
                _CHECKED[key] = ("bad", f"{python} -m flamefit.cli --version failed: "
                                        f"{last[-1] if last else f'exit code {out.returncode}'}")
        except (OSError, subprocess.SubprocessError) as exc:
            _CHECKED[key] = ("bad", f"{python} could not run: {exc}")

    threading.Thread(target=run, daemon=True).start()
    return _CHECKED[key]


def pip_doing(verb: str, rest: str) -> str:
    """What a pip line says, short enough for the status (pip's own lines are shown under it):
    "Processing /opt/wheels/scipy-1.17.1-cp311-...whl" -> "Processing scipy 1.17.1",
    "Installing collected packages: a, b, c" -> "Installing 3 packages"."""
    verb = verb.rstrip(":")
    if verb in ("Installing collected packages", "Successfully installed"):
        count = len([p for p in re.split(r"[,\s]+", rest) if p])
        return f"{'Installing' if verb.startswith('Installing') else 'Installed'} {count} package{'s' * (count != 1)}"
    what = rest.split()[0] if rest.split() else ""
    name = what.rstrip("/").rsplit("/", 1)[-1]  # a path or URL: its file
    wheel = re.match(r"([A-Za-z0-9_.]+)-(\d[^-]*)-.*\.whl$|([A-Za-z0-9_.-]+?)-(\d[^-]*)\.(?:tar\.gz|zip)$", name)
    if wheel:
        name = " ".join(g for g in wheel.groups() if g)
    return f"{verb} {name[:40]}".strip()


class SetupJob:
    """Create `venv_dir` and pip-install the backend into it, step by step."""

    def __init__(self, venv_dir: str, backend_src: str, base_python: str, *, pip_args=(),
                 torch=None, prepare_model: bool = False, log_path: str = "", env=None):
        """`torch`: None = no separate PyTorch step (the backend's install brings it), else a
        `torch_plan()` pair; `prepare_model`: build the head model cache last (first-run cost)."""
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
        self.progress = None  # (done, total) of pip's current download, when it says
        self.step_started = time.monotonic()
        self.torch_choice = torch[1] if torch else ""
        self.log_path = log_path or os.path.join(os.path.dirname(self.venv_dir), LOG_NAME)
        self._log_file = None
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
        self.torch_step_env = None
        if torch and torch[0]:
            # torch alone, from its own index for this one command (no deps: those come from the
            # user's index in the next step; no config file: its extra indexes could offer a CUDA torch)
            self.steps.append((f"Installing {torch[1].split(' (')[0]}",
                               pip + ["--no-deps", "--index-url", torch[0], torch_requirement(backend_src)]))
            self.torch_step_env = dict(self.env, PIP_CONFIG_FILE=os.devnull)
            self.torch_step_env.pop("PIP_EXTRA_INDEX_URL", None)
            self.torch_step_env.pop("PIP_INDEX_URL", None)
        self.steps.append(("Installing the FlameFit backend", pip + self.pip_args + ["__SOURCE__"]))
        nodeps = os.path.join(backend_src, "requirements-nodeps.txt")
        if os.path.isfile(nodeps):  # the face detectors whose declared deps would clash (see the file)
            self.steps.append(("Installing the face detectors", pip + self.pip_args + ["--no-deps", "-r", nodeps]))
        self.steps.append(("Checking the backend", [self.python, "-m", "flamefit.cli", "--version"]))
        if prepare_model:
            self.steps.append(("Preparing the open head (first run only)", [self.python, "-m", "flamefit.cli", "models"]))
        self.index = -1
        self.version_line = ""

    @property
    def fraction(self) -> float:
        if not self.steps:
            return 1.0
        inner = 0.0
        if self.process is not None:
            inner = min(0.9, self.collected / 25.0)
            if self.progress and self.progress[1]:
                inner = max(inner, 0.9 * self.progress[0] / self.progress[1])
        return max(0.0, min(1.0, (max(0, self.index) + inner) / len(self.steps)))

    def _start_next(self) -> None:
        self.index += 1
        label, argv = self.steps[self.index]
        if "__SOURCE__" in argv:  # build from a copy: pip must not write into the add-on folder
            src = os.path.join(self._tmp, "backend")
            shutil.copytree(self.backend_src, src, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info", "build", "dist"))
            argv = [src if a == "__SOURCE__" else a for a in argv]
        if "--progress-bar" in argv and self._pip_has_raw_progress():
            argv = [("raw" if a == "off" and argv[i - 1] == "--progress-bar" else a) for i, a in enumerate(argv)]
        self.status = label + "…"
        self.collected = 0
        self.progress = None
        self.step_started = time.monotonic()
        self._append("$ " + " ".join(argv))
        env = self.torch_step_env if (self.torch_step_env and "--index-url" in argv) else self.env
        self.process = ManagedProcess(argv, env=env)

    def _pip_has_raw_progress(self) -> bool:
        """pip 24.1+ prints 'Progress N of M' lines with --progress-bar raw (older ones refuse it)."""
        if getattr(self, "_raw", None) is None:
            try:
                out = subprocess.run([self.python, "-m", "pip", "--version"], capture_output=True, text=True,
                                     timeout=30, env=self.env)
                major, minor = (int(x) for x in out.stdout.split()[1].split(".")[:2])
                self._raw = (major, minor) >= (24, 1)
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                self._raw = False
        return self._raw

    def _append(self, line: str) -> None:
        """One line to the in-memory log and the log file."""
        self.log.append(line)
        try:
            if self._log_file is None:
                os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
                self._log_file = open(self.log_path, "w", encoding="utf8")
            self._log_file.write(line.rstrip("\n") + "\n")
            self._log_file.flush()
        except OSError:
            pass

    def lines(self, n: int = 4) -> list:
        """The last `n` output lines worth showing (pip's progress, errors), newest last."""
        shown = [ln.strip() for ln in self.log if ln.strip() and not ln.startswith("$ ")]
        return shown[-n:]

    def status_text(self) -> str:
        """The status with the step's elapsed time, so a long download still shows life."""
        took = time.monotonic() - self.step_started
        text = self.status
        if self.progress and self.progress[1]:
            done, total = self.progress
            text += f" {done / 1e6:.0f}/{total / 1e6:.0f} MB"
        return f"{text} ({took:.0f} s)" if took >= 2 else text

    def _read(self) -> None:
        for line in self.process.read_lines():
            text = line.strip()
            m = re.match(r"Progress (\d+) of (\d+)", text)  # pip --progress-bar raw
            if m:
                self.progress = (int(m.group(1)), int(m.group(2)))
                continue
            self._append(line)
            m = re.match(r"(Collecting|Downloading|Building wheel for|Installing collected packages:|"
                         r"Successfully installed|Requirement already satisfied:|Processing)\s*(.*)", text)
            if m:
                if m.group(1) in ("Collecting", "Requirement already satisfied:", "Processing"):
                    self.collected += 1
                self.status = f"{self.steps[self.index][0]}: {pip_doing(m.group(1), m.group(2))}"
            if self.steps[self.index][0] == "Checking the backend" and text.startswith("flamefit"):
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
                return StepResult(RUNNING, self.status_text())
            self._read()
            self.process.kill_now()
            for line in self.process.stderr:
                self._append(line)
            if self.cancelled:
                return self._finish(StepResult(CANCELLED, "Set-up cancelled; the environment is incomplete"))
            if code != 0:
                err = [ln.strip() for ln in self.process.stderr if ln.strip()]
                useful = [ln for ln in err if not ln.startswith(("hint:", "note:", "╰", "│"))] or err
                pick = next((ln for ln in reversed(useful) if ln.startswith(("ERROR", "error:"))),
                            next((ln for ln in reversed(useful) if "Error" in ln), useful[-1] if useful else ""))
                return self._finish(StepResult(FAILED, f"{self.steps[self.index][0]} failed: "
                                                       f"{pick or f'exit code {code}'} (full log: {self.log_path})"))
            self.process = None
            if self.index == len(self.steps) - 1:
                with open(os.path.join(self.venv_dir, READY_MARKER), "w") as fh:
                    json.dump({"python": self.python, "backend": self.version_line, "torch": self.torch_choice,
                               "created": time.strftime("%Y-%m-%d %H:%M:%S")}, fh)
                took = time.monotonic() - self.started
                chose = f", {self.torch_choice}" if self.torch_choice else ""
                return self._finish(StepResult(DONE, f"Backend ready ({self.version_line or 'flamefit'}{chose}, "
                                                     f"{took:.0f} s): {self.python}", result_path=self.python))
            self._start_next()
            return StepResult(RUNNING, self.status_text())
        except OSError as exc:
            return self._finish(StepResult(FAILED, f"{self.status.rstrip('…')} failed: {exc}"))

    def _finish(self, result: StepResult) -> StepResult:
        self.finished = result
        self._append(f"== {result.state}: {result.message}")
        if self._log_file is not None:
            self._log_file.close()
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
