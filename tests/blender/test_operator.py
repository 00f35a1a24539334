"""Fit Photo's step function (the modal operator's work per timer tick) with a fake backend:
progress, completion (imports), backend crash / no face / cancel (nothing imported, no
process left), backend not set up (panel says so and offers Set up backend)."""

import json
import os
import time

import bpy
import pytest
from helpers import Recorder, scene_snapshot
from testenv import backend_env


def _alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


@pytest.fixture
def fit_setup(empty_scene, tmp_path, env_patch, addon):
    import synth_bundle

    photo = tmp_path / "portrait.png"
    synth_bundle.write_png(str(photo), synth_bundle.albedo_texture(64))
    s = empty_scene.flamefit
    s.photo = str(photo)
    s.output_dir = str(tmp_path / "results")

    def start(mode, **extra):
        env_patch(backend_env(fake=True, FAKE_FLAMEFIT_MODE=mode, **extra))
        job, error = addon.ui.operators.start_fit(bpy.context)
        assert job is not None, error
        addon.ui.job_runner.set_active("fit", job)
        return job

    yield start
    job = addon.ui.job_runner.active("fit")
    if job is not None:
        job.stop()
        addon.ui.job_runner.set_active("fit", None)


def _drive(addon, job, timeout=30, on_tick=None):
    deadline = time.monotonic() + timeout
    while True:
        res = addon.ui.operators.fit_step(bpy.context, job)
        if res.state != "RUNNING":
            addon.ui.job_runner.set_active("fit", None)
            return res
        if on_tick:
            on_tick(res)
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _panel_text(addon):
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    return rec


def test_progress_then_completion_imports(addon, fit_setup, tmp_path):
    argv_file = tmp_path / "argv.json"
    job = fit_setup("ok", FAKE_FLAMEFIT_ARGV=argv_file)
    state = bpy.context.window_manager.flamefit
    assert state.running
    seen = []

    def tick(res):
        seen.append((state.progress, state.status))
        assert "Fit Photo" not in str(_panel_text(addon).operators())  # a running fit shows Cancel
    res = _drive(addon, job, on_tick=tick)
    assert res.state == "DONE", res.message
    assert not state.running and state.progress == 1.0 and state.error == ""
    assert state.status.startswith("Imported portrait")
    assert "portrait" in bpy.data.collections
    assert bpy.context.scene.flamefit.last_result == res.result_path
    argv = json.loads(argv_file.read_text())
    assert argv[1:3] == ["fit", str(tmp_path / "portrait.png")] and "--json-progress" in argv
    assert "--stages" in argv and argv[argv.index("--stages") + 1] == "landmarks,photometric,texture"
    progress = [p for p, _ in seen]
    assert progress == sorted(progress)
    # the panel shows the last result's metrics
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_result.draw(type("P", (), {"layout": rec})(), bpy.context)
    assert "Landmarks" in rec.texts() and "0.70 px" in rec.texts()


def test_options_reach_the_command_line(addon, fit_setup, tmp_path):
    s = bpy.context.scene.flamefit
    s.use_expression, s.stage_texture = False, False
    argv_file = tmp_path / "argv.json"
    job = fit_setup("ok", FAKE_FLAMEFIT_ARGV=argv_file)
    _drive(addon, job)
    argv = json.loads(argv_file.read_text())
    assert "--no-expression" in argv and argv[argv.index("--stages") + 1] == "landmarks,photometric"


@pytest.mark.parametrize("mode, message", [
    ("crash", "RuntimeError: fake backend crashed"),
    ("noface", "no face found in portrait.png"),
    ("segv", "killed by signal 9"),
    ("schema-new", "schema version 4 is not supported"),
    ("missing-albedo", "missing albedo.png"),
])
def test_failures_import_nothing(addon, fit_setup, mode, message):
    before = scene_snapshot()
    job = fit_setup(mode)
    res = _drive(addon, job)
    assert res.state == "FAILED" and message in res.message
    state = bpy.context.window_manager.flamefit
    assert message in state.error and not state.running
    assert scene_snapshot() == before
    assert message in " ".join(_panel_text(addon).texts())  # wrapped over lines


def test_cancel_imports_nothing_and_leaves_no_process(addon, fit_setup, tmp_path):
    before = scene_snapshot()
    pidfile = tmp_path / "pids.json"
    job = fit_setup("hang", FAKE_FLAMEFIT_PIDFILE=pidfile)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or job.progress.stage != "photometric":
        assert addon.ui.operators.fit_step(bpy.context, job).state == "RUNNING"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "flamefit.cancel_fit" in _panel_text(addon).operators()
    pids = json.loads(pidfile.read_text())
    assert bpy.ops.flamefit.cancel_fit() == {"FINISHED"}  # the panel's Cancel button
    res = _drive(addon, job, timeout=15)
    assert res.state == "CANCELLED"
    time.sleep(0.2)
    assert not _alive(pids["backend"]) and not _alive(pids["child"])
    assert scene_snapshot() == before
    assert bpy.context.window_manager.flamefit.status == "Fit cancelled"


def test_blocking_execute_variant(addon, fit_setup, env_patch):
    env_patch(backend_env(fake=True, FAKE_FLAMEFIT_MODE="ok"))
    assert bpy.ops.flamefit.fit_photo("EXEC_DEFAULT") == {"FINISHED"}
    assert "portrait" in bpy.data.collections


def test_backend_not_set_up(addon, empty_scene, monkeypatch, tmp_path):
    monkeypatch.delenv("FLAMEFIT_PYTHON", raising=False)
    monkeypatch.setattr(addon.ui.preferences, "managed_venv_dir", lambda: str(tmp_path / "no-venv"))
    photo = tmp_path / "p.png"
    photo.write_bytes(b"x")
    empty_scene.flamefit.photo = str(photo)
    rec = _panel_text(addon)
    assert "Backend not set up" in rec.texts()
    assert "flamefit.setup_backend" in rec.operators()
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is None and "backend not set up" in error
    before = scene_snapshot()
    with pytest.raises(RuntimeError, match="backend not set up"):
        bpy.ops.flamefit.fit_photo("EXEC_DEFAULT")
    assert scene_snapshot() == before


def test_missing_photo(addon, empty_scene, env_patch):
    env_patch(backend_env(fake=True))
    empty_scene.flamefit.photo = "/no/such/photo.jpg"
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is None and "choose a photo" in error


class _FakeEvent:
    def __init__(self, type, value="NOTHING"):
        self.type, self.value = type, value


def _fake_modal_operator(addon, job):
    """The real modal()/cancel() code (job_runner.JobOperator + the fit's hooks) on a stand-in
    instance (no window in bpy -b)."""
    cls = addon.ui.operators.FLAMEFIT_OT_fit_photo
    reports = []
    own = {k: v for k, v in vars(cls).items() if not k.startswith("__") and not k.startswith("bl_")}
    fake = type("FakeFitOp", (addon.ui.job_runner.JobOperator,),
                {**own, "_timer": None, "_job": job,
                 "report": lambda self, kind, msg: reports.append((set(kind), msg))})()
    return fake, reports


def test_modal_handler_esc_cancels(addon, fit_setup):
    job = fit_setup("hang")
    op, reports = _fake_modal_operator(addon, job)
    ctx = bpy.context
    assert op.modal(ctx, _FakeEvent("MOUSEMOVE")) == {"PASS_THROUGH"}  # the UI keeps working
    assert op.modal(ctx, _FakeEvent("TIMER")) == {"PASS_THROUGH"}
    assert op.modal(ctx, _FakeEvent("ESC", "PRESS")) == {"RUNNING_MODAL"}
    deadline = time.monotonic() + 15
    while (ret := op.modal(ctx, _FakeEvent("TIMER"))) == {"PASS_THROUGH"}:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ret == {"CANCELLED"} and reports[-1] == ({"WARNING"}, "FlameFit: Fit cancelled")
    assert addon.ui.job_runner.active("fit") is None and job.process.proc.poll() is not None


def test_modal_handler_completes(addon, fit_setup):
    job = fit_setup("ok")
    op, reports = _fake_modal_operator(addon, job)
    deadline = time.monotonic() + 30
    while (ret := op.modal(bpy.context, _FakeEvent("TIMER"))) == {"PASS_THROUGH"}:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ret == {"FINISHED"} and reports[-1][0] == {"INFO"} and "Imported portrait" in reports[-1][1]


def test_operator_cancel_callback_stops_the_backend(addon, fit_setup):
    job = fit_setup("hang")
    op, _ = _fake_modal_operator(addon, job)
    op.modal(bpy.context, _FakeEvent("TIMER"))
    op.cancel(bpy.context)  # what Blender calls when it ends the modal operator (file load, quit)
    assert job.process.proc.poll() is not None and addon.ui.job_runner.active("fit") is None


def test_preferences_draw(addon, monkeypatch):
    from types import SimpleNamespace

    prefs = SimpleNamespace(layout=Recorder(), **vars(addon.ui.preferences.get_prefs()))
    monkeypatch.delenv("FLAMEFIT_PYTHON", raising=False)
    monkeypatch.setattr(addon.ui.preferences, "managed_venv_dir", lambda: "/nonexistent/venv")
    addon.ui.preferences.FlameFitPreferences.draw(prefs, bpy.context)
    rec = prefs.layout
    assert "Backend not set up" in rec.texts()
    # #12.10: one Set up backend button, and no button to the preferences we are in
    assert rec.operators().count("flamefit.setup_backend") == 1
    assert "preferences.addon_show" not in rec.operators()
    shown = [v for kind, v in rec.log if kind == "prop"]
    for name in ("python_path", "flame_model", "texture_space", "uv_template", "landmark_embedding", "device",
                 "detector", "texture_size", "base_python"):
        assert name in shown


def test_panel_offers_set_up_once(addon, monkeypatch):
    """The N-panel without a backend: one Set up backend button and a way to the preferences."""
    monkeypatch.delenv("FLAMEFIT_PYTHON", raising=False)
    monkeypatch.setattr(addon.ui.preferences, "managed_venv_dir", lambda: "/nonexistent/venv")
    rec = Recorder()
    addon.ui.preferences.draw_backend_box(rec, bpy.context, show_path=False)
    assert rec.operators().count("flamefit.setup_backend") == 1


def test_tooltips_are_one_clean_line(addon):
    """#12.10: no tooltip (operator, panel, property or enum item) has a line break, an
    indent or doubled spaces (a multi-line docstring would give each)."""
    import importlib

    bad = []
    for name in ("ui.operators", "ui.panel", "ui.preferences", "ui.props"):
        for cls in importlib.import_module(f"{addon.__name__}.{name}").classes:
            rna = cls.bl_rna
            if issubclass(cls, bpy.types.Operator):  # its tooltip: the registered operator type's
                group, _, op = cls.bl_idname.partition(".")
                rna = getattr(getattr(bpy.ops, group), op).get_rna_type()
            texts = [(cls.__name__, rna.description), (cls.__name__, cls.__doc__)]
            for prop in rna.properties:
                texts.append((f"{cls.__name__}.{prop.identifier}", prop.description))
                if prop.type == "ENUM":
                    texts += [(f"{cls.__name__}.{prop.identifier}.{i.identifier}", i.description)
                              for i in prop.enum_items]
            bad += [(where, text) for where, text in texts
                    if text and (text != text.strip() or "\n" in text or "  " in text or "\t" in text)]
    assert not bad

