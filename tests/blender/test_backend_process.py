"""backend_process.py: launching the backend, progress, completion, crash, cancel, no orphans.
Plain Python with the fake backend CLI (no bpy)."""

import json
import os
import sys
import time

import pytest
from testenv import BACKEND_PYTHON, backend_env

from blender_flamefit.io import backend_process as bp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _run(job, timeout=30.0, on_running=None):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        res = job.step()
        seen.extend(res.events)
        if res.state != bp.RUNNING:
            return res, seen
        if on_running:
            on_running(job, res)
        assert time.monotonic() < deadline, "fake backend did not finish"
        time.sleep(0.02)


def _job(tmp_path, mode, **extra):
    photo = tmp_path / "face.png"
    photo.write_bytes(b"\x89PNG fake")
    out = tmp_path / "out"
    env = bp.child_env(backend_env(fake=True, FAKE_FLAMEFIT_MODE=mode, **extra))
    argv = bp.backend_command(str(BACKEND_PYTHON), str(photo), str(out), device="cpu", stages=["landmarks"],
                              expression=False, model_files={"--model": "/x/flame.pkl"})
    return bp.FitJob(argv, str(out), env=env, cancel_grace=1.0)


def test_command_line_is_an_argument_list():
    cmd = bp.backend_command("/py", "/a b/photo.jpg", "/out", device="cuda", detector="dlib", texture_size=512,
                             stages=["landmarks", "texture"], expression=False)
    assert cmd[:5] == ["/py", "-m", "flamefit.cli", "fit", "/a b/photo.jpg"]
    assert "--json-progress" in cmd and "--no-expression" in cmd
    assert cmd[cmd.index("--stages") + 1] == "landmarks,texture"


def test_progress_and_completion(tmp_path):
    job = _job(tmp_path, "ok")
    fractions = []
    res, events = _run(job, on_running=lambda j, r: fractions.append(j.progress.fraction))
    assert res.state == bp.DONE, res.message
    assert res.result_path == str(tmp_path / "out" / "result.json")
    kinds = [e.get("event") for e in events]
    assert "stage" in kinds and "progress" in kinds and kinds[-1] == "done"
    assert fractions == sorted(fractions)  # progress never goes back
    assert job.progress.stage == "bundle" and job.progress.fraction == pytest.approx(1.0)
    assert job.process.proc.returncode == 0


def test_photo_without_a_face_reports_backend_message(tmp_path):
    res, _ = _run(_job(tmp_path, "noface"))
    assert res.state == bp.FAILED
    assert res.message.startswith("no face found in face.png")
    assert not (tmp_path / "out").exists()


def test_crash_reports_last_stderr_line(tmp_path):
    res, _ = _run(_job(tmp_path, "crash"))
    assert res.state == bp.FAILED and res.message == "RuntimeError: fake backend crashed"


def test_killed_backend(tmp_path):
    res, _ = _run(_job(tmp_path, "segv"))
    assert res.state == bp.FAILED and "signal 9" in res.message


@pytest.mark.parametrize("mode", ["hang", "hang-ignore-term"])
def test_cancel_leaves_no_process(tmp_path, mode):
    pidfile = tmp_path / "pids.json"
    job = _job(tmp_path, mode, FAKE_FLAMEFIT_PIDFILE=pidfile)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or job.progress.stage != "photometric":
        assert job.step().state == bp.RUNNING
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pids = json.loads(pidfile.read_text())
    assert _alive(pids["backend"]) and _alive(pids["child"])
    t0 = time.monotonic()
    job.cancel()
    res, _ = _run(job, timeout=15)
    assert res.state == bp.CANCELLED
    if mode == "hang-ignore-term":
        assert time.monotonic() - t0 >= 0.9  # waited for the grace period, then killed
    time.sleep(0.2)
    assert not _alive(pids["backend"]) and not _alive(pids["child"])
    assert not (tmp_path / "out").exists()


def test_missing_interpreter(tmp_path):
    job = bp.FitJob([str(tmp_path / "nope" / "python"), "-m", "flamefit.cli"], str(tmp_path))
    res = job.step()
    assert res.state == bp.FAILED and "cannot start the backend" in res.message


def test_interpreter_without_flamefit(tmp_path):
    photo = tmp_path / "p.png"
    photo.write_bytes(b"x")
    env = bp.child_env({"PYTHONPATH": ""})
    # This test's own interpreter (bpy's venv) has no flamefit; the backend venv does.
    job = bp.FitJob(bp.backend_command(sys.executable, str(photo), str(tmp_path / "o")), str(tmp_path), env=env)
    res, _ = _run(job)
    assert res.state == bp.FAILED and "Set up backend" in res.message


def test_resolve_python_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(bp.ENV_PYTHON, raising=False)
    assert bp.resolve_python("", "") == ("", "the backend is not set up")
    assert bp.resolve_python(str(BACKEND_PYTHON), "")[1] == "preferences"
    assert "does not exist" in bp.resolve_python(str(tmp_path / "x"), "")[1]
    monkeypatch.setenv(bp.ENV_PYTHON, str(BACKEND_PYTHON))
    assert bp.resolve_python(str(tmp_path / "x"), "") == (str(BACKEND_PYTHON), bp.ENV_PYTHON)
    monkeypatch.setenv(bp.ENV_PYTHON, str(tmp_path / "missing"))
    assert "not an executable" in bp.resolve_python("", "")[1]
