"""Running the backend as a child process: launch (no shell), non-blocking progress
reading, cancel / terminate / kill without orphans. No bpy, so plain Python tests it.

`FitJob.step()` is what the modal operator calls on every timer tick: it never blocks,
and returns a `StepResult` saying whether the fit is running, done, failed or cancelled.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

STAGES = ("image", "landmarks", "rigid", "shape", "photometric", "texture", "bundle")
STAGE_WORDS = {"image": "Reading the photo", "landmarks": "Finding the face's landmarks",
               "rigid": "Placing the head", "shape": "Fitting the head to the landmarks",
               "photometric": "Matching the photo's colours and light", "texture": "Taking the skin texture",
               "bundle": "Writing the result"}  # what a user sees for each stage
ENV_PYTHON = "FLAMEFIT_PYTHON"

RUNNING, DONE, FAILED, CANCELLED = "RUNNING", "DONE", "FAILED", "CANCELLED"

_LIVE: set = set()  # processes still running: killed when Python exits


def _kill_all_at_exit():
    for proc in list(_LIVE):
        try:
            proc.kill_now()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_kill_all_at_exit)


def backend_command(python: str, photo, out_dir: str, *, device: str = "auto", detector: str = "",
                    texture_size: int = 0, stages=None, expression: bool = True, model_files=None,
                    extra=None, command: str = "fit") -> list:
    """The argument list of one `flamefit fit PHOTO [PHOTO ...]` run (`photo`: a path, or a list
    of the photos of one person: one head from all of them), or with command="batch" of one
    `flamefit batch PHOTOS_DIR` run (INTERFACE.md section 1)."""
    photos = [photo] if isinstance(photo, (str, os.PathLike)) else list(photo)
    cmd = [python, "-m", "flamefit.cli", command, *map(os.fspath, photos), "-o", out_dir, "--json-progress"]
    if device:
        cmd += ["--device", device]
    if detector:
        cmd += ["--detector", detector]
    if texture_size:
        cmd += ["--texture-size", str(int(texture_size))]
    if stages:
        cmd += ["--stages", ",".join(stages)]
    if not expression:
        cmd.append("--no-expression")
    for flag, path in (model_files or {}).items():
        if path:
            cmd += [flag, path]
    cmd += list(extra or [])
    return cmd


def fit_flags(stage_photometric: bool = True, stage_texture: bool = True, use_expression: bool = True) -> dict:
    """Keywords of backend_command for the fit options (options.FIT_OPTIONS)."""
    stages = ["landmarks"] + (["photometric"] if stage_photometric else []) + (["texture"] if stage_texture else [])
    return dict(stages=stages, expression=use_expression)


def child_env(extra=None) -> dict:
    """The environment for the backend: ours, unbuffered, without Blender's PYTHONHOME."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.update(extra or {})
    return env


class ManagedProcess:
    """A child process in its own process group whose stdout/stderr lines are read by
    two daemon threads, so the caller only ever polls (never blocks)."""

    def __init__(self, argv, env=None, cwd=None, stderr_keep: int = 200):
        self.argv = list(argv)
        kwargs = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      env=env, cwd=cwd, bufsize=1, text=True, encoding="utf-8", errors="replace")
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: signals reach its children
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        self.proc = subprocess.Popen(self.argv, **kwargs)  # no shell
        self.lines: queue.Queue = queue.Queue()
        self.stderr: deque = deque(maxlen=stderr_keep)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._term_sent_at = None
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, stream, which):
        try:
            for line in stream:
                line = line.rstrip("\r\n")
                if which == "out":
                    self.lines.put(line)
                else:
                    self.stderr.append(line)
                    self.lines.put(None)  # wake-up marker only
        except (OSError, ValueError):
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def read_lines(self) -> list:
        """stdout lines that arrived since the last call (non-blocking)."""
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is not None:
                out.append(line)

    def poll(self):
        """Exit code, or None while running. After an exit, waits (briefly) for the pipes
        to drain so that no output is lost."""
        code = self.proc.poll()
        if code is not None:
            for t in self._threads:
                t.join(timeout=2.0)
            _LIVE.discard(self)
        return code

    def last_error_line(self) -> str:
        for line in reversed(self.stderr):
            if line.strip():
                return line.strip()
        return ""

    # --- stopping -----------------------------------------------------------------
    def _signal_group(self, sig) -> None:
        if self.proc.poll() is not None:
            return
        if os.name == "posix":
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        elif sig == getattr(signal, "SIGKILL", None) or sig is None:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            try:
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            except (OSError, ValueError):
                self.proc.terminate()

    def terminate(self) -> None:
        """Ask the process (group) to stop: SIGTERM (the backend then removes partial output)."""
        if self._term_sent_at is None:
            self._term_sent_at = time.monotonic()
        self._signal_group(signal.SIGTERM if os.name == "posix" else signal.SIGINT)

    def kill(self) -> None:
        self._signal_group(getattr(signal, "SIGKILL", None))

    def escalate(self, grace: float) -> None:
        """Non-blocking: after `terminate`, SIGKILL once `grace` seconds have passed."""
        if self._term_sent_at is not None and time.monotonic() - self._term_sent_at > grace:
            self.kill()

    def kill_now(self, grace: float = 3.0) -> int:
        """Blocking stop (unregister, interpreter exit): terminate, wait, kill, reap."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait(timeout=5)
        if os.name == "posix":  # any grandchild that outlived its parent
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _LIVE.discard(self)
        return self.proc.returncode


@dataclass
class Progress:
    stage: str = ""
    stage_index: int = 0
    stage_count: int = len(STAGES)
    step: int = 0
    total: int = 0
    loss: float | None = None
    first_loss: float | None = None  # the stage's first: how much closer the fit has got
    zero_based: bool = False

    @property
    def fraction(self) -> float:
        if not self.stage:
            return 0.0
        count = max(1, self.stage_count)
        index = self.stage_index if self.zero_based else self.stage_index - 1
        inner = self.step / self.total if self.total else 0.0
        return max(0.0, min(1.0, (index + min(1.0, inner)) / count))

    def text(self) -> str:
        if not self.stage:
            return "Starting the backend…"
        parts = [STAGE_WORDS.get(self.stage, self.stage.capitalize())]
        if self.stage_index:
            shown = self.stage_index + 1 if self.zero_based else self.stage_index
            parts[0] += f" ({shown}/{self.stage_count})"
        if self.total:
            parts.append(f"{self.step}/{self.total}")
        # a loss's value means nothing to a user; how much closer the fit got since the stage began does
        first, now = self.first_loss, self.loss
        if first and now is not None and first > 0 and now < first * 0.99:
            parts.append(f"{(first - now) / first:.0%} closer")
        return " · ".join(parts)


@dataclass
class StepResult:
    state: str  # RUNNING, DONE, FAILED, CANCELLED
    message: str = ""
    result_path: str = ""
    events: list = field(default_factory=list)


class FitJob:
    """One backend fit: start it, call `step()` periodically, `cancel()` to stop."""

    def __init__(self, argv, out_dir: str, env=None, cancel_grace: float = 5.0):
        self.argv = list(argv)
        self.out_dir = out_dir
        self.progress = Progress()
        self.cancel_grace = cancel_grace
        self.cancelled = False
        self.error_event = ""
        self.done_event: dict | None = None
        self.started = time.monotonic()
        self.finished: StepResult | None = None
        self.log: deque = deque(maxlen=500)
        try:
            self.process = ManagedProcess(self.argv, env=env)
        except OSError as exc:
            self.process = None
            self.finished = StepResult(FAILED, f"cannot start the backend {self.argv[0]!r}: {exc.strerror or exc}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def cancel(self) -> None:
        if self.finished is None and self.process is not None:
            self.cancelled = True
            self.process.terminate()

    def _handle_line(self, line: str, events: list) -> None:
        self.log.append(line)
        try:
            event = json.loads(line)
        except ValueError:
            return  # not ours: ignored
        if not isinstance(event, dict):
            return
        events.append(event)
        kind = event.get("event")
        p = self.progress
        if kind == "stage":
            p.stage = str(event.get("stage", ""))
            index = event.get("index")
            if isinstance(index, int):
                if index == 0:
                    p.zero_based = True
                p.stage_index = index
            elif p.stage in STAGES:
                p.stage_index = STAGES.index(p.stage) + 1
            if isinstance(event.get("count"), int) and event["count"] > 0:
                p.stage_count = event["count"]
            p.step, p.total, p.loss, p.first_loss = 0, 0, None, None
        elif kind == "progress":
            if event.get("stage") and event["stage"] != p.stage:
                p.stage, p.first_loss = str(event["stage"]), None
            if isinstance(event.get("step"), (int, float)):
                p.step = int(event["step"])
            if isinstance(event.get("total"), (int, float)):
                p.total = int(event["total"])
            loss = event.get("loss")
            p.loss = float(loss) if isinstance(loss, (int, float)) else None
            if p.first_loss is None:
                p.first_loss = p.loss
        elif kind == "done":
            self.done_event = event
        elif kind == "error":
            self.error_event = str(event.get("message", "")).strip()

    def step(self) -> StepResult:
        """Read what arrived, update progress, report the state. Never blocks for long."""
        if self.finished is not None:
            return self.finished
        events: list = []
        for line in self.process.read_lines():
            self._handle_line(line, events)
        code = self.process.poll()
        if code is None:
            if self.cancelled:
                self.process.escalate(self.cancel_grace)
            return StepResult(RUNNING, self.progress.text(), events=events)
        for line in self.process.read_lines():  # whatever the pipes still held
            self._handle_line(line, events)
        self.process.kill_now()  # reap leftovers of the group, if any
        self.finished = self._outcome(code)
        self.finished.events = events
        return self.finished

    def _outcome(self, code: int) -> StepResult:
        if self.cancelled:
            return StepResult(CANCELLED, "Fit cancelled")
        if code == 0:
            result = ""
            if self.done_event:
                result = str(self.done_event.get("result") or "")
                if not result and self.done_event.get("bundle"):
                    result = os.path.join(str(self.done_event["bundle"]), "result.json")
            if not result:
                result = os.path.join(self.out_dir, "result.json")
            if os.path.isfile(result):
                return StepResult(DONE, "Fit finished", result_path=result)
            return StepResult(FAILED, f"the backend finished but wrote no result at {result}")
        message = self.error_event or self.process.last_error_line()
        if not message:
            message = f"the backend stopped with exit code {code}"
            if code < 0:
                message = f"the backend was killed by signal {-code}"
        if "No module named flamefit" in message or "No module named 'flamefit'" in message:
            message = ("the backend interpreter has no flamefit package installed; "
                       "use Set up backend in the FlameFit preferences")
        return StepResult(FAILED, message)

    def stop(self) -> None:
        """Blocking: make sure nothing is left running (unregister, errors)."""
        if self.process is not None:
            self.cancelled = self.cancelled or self.finished is None
            self.process.kill_now()


class BatchJob(FitJob):
    """One `flamefit batch --json-progress` run: every finished photo arrives as a "photo"
    event (`photos` holds them all, `StepResult.events` the new ones); DONE once the batch
    reported its summary, even when some photos failed (their events say why)."""

    def __init__(self, argv, out_dir: str, env=None, cancel_grace: float = 5.0):
        self._events: list = []
        super().__init__(argv, out_dir, env=env, cancel_grace=cancel_grace)

    @property
    def photos(self) -> list:
        return [e for e in self._events if e.get("event") == "photo"]

    def _handle_line(self, line: str, events: list) -> None:
        before = len(events)
        super()._handle_line(line, events)
        self._events.extend(events[before:])

    def _outcome(self, code: int) -> StepResult:
        if self.cancelled:
            return StepResult(CANCELLED, "Batch cancelled")
        if self.done_event is not None and "summary" in self.done_event:
            d = self.done_event
            return StepResult(DONE, f"{d.get('ok', 0)} fitted, {d.get('failed', 0)} failed, "
                                    f"{d.get('skipped', 0)} skipped", result_path=str(d["summary"]))
        return super()._outcome(code) if code != 0 else \
            StepResult(FAILED, "the backend batch ended without its summary")


def faces_command(python: str, photo: str, picture: str, detector: str = "") -> list:
    """The argument list of one `flamefit faces PHOTO --json --picture OUT.png` run
    (INTERFACE.md section 5)."""
    return [python, "-m", "flamefit.cli", "faces", photo, "--json", "--picture", picture] + \
        (["--detector", detector] if detector else [])


class FacesJob(FitJob):
    """One `flamefit faces` run: DONE with `listing` (the command's JSON object) once the
    backend exits; no progress stream, so the status is only how long it has taken."""

    listing = None

    def _handle_line(self, line: str, events: list) -> None:
        before = len(events)
        super()._handle_line(line, events)
        if len(events) > before and isinstance(events[-1].get("faces"), list):
            self.listing = events[-1]

    def _outcome(self, code: int) -> StepResult:
        if self.cancelled:
            return StepResult(CANCELLED, "Finding faces cancelled")
        if code == 0 and self.listing is not None:
            return StepResult(DONE, f"{len(self.listing['faces'])} faces found")
        res = super()._outcome(code) if code != 0 else StepResult(FAILED, "the backend listed no faces")
        prefix = "flamefit: error: "  # no --json-progress here: the message is stderr's one line
        res.message = res.message[len(prefix):] if res.message.startswith(prefix) else res.message
        return res


NOT_SET_UP = "the backend is not set up"


def resolve_python(preference_path: str = "", managed_python: str = "") -> tuple:
    """(interpreter, where it came from) by precedence: FLAMEFIT_PYTHON, the preference
    path, the venv made by Set up backend. ('', reason) when none is usable."""
    env = os.environ.get(ENV_PYTHON, "").strip()
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env, ENV_PYTHON
        return "", f"{ENV_PYTHON}={env} is not an executable file"
    if preference_path:
        path = os.path.abspath(os.path.expanduser(preference_path))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, "preferences"
        return "", f"the backend interpreter {path} does not exist"
    if managed_python and os.path.isfile(managed_python):
        return managed_python, "set-up environment"
    return "", NOT_SET_UP


def venv_python(venv_dir: str) -> str:
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def main(argv=None) -> int:  # pragma: no cover - manual testing helper
    """`python backend_process.py PYTHON PHOTO OUT_DIR`: run one fit and print progress."""
    argv = argv or sys.argv[1:]
    job = FitJob(backend_command(argv[0], argv[1], argv[2]), argv[2], env=child_env())
    while True:
        res = job.step()
        print(res.state, res.message)
        if res.state != RUNNING:
            return 0 if res.state == DONE else 1
        time.sleep(0.5)
