"""Several photos with a profile among them: no detector finds a profile's 68 points, so each chosen
photo has its own Landmarks file in the panel, passed to the backend once per photo in the photos'
order (`flamefit fit a b c --landmarks A --landmarks B --landmarks C`), `-` for a photo without one
(the detector finds its points); none at all when no photo has one.
And an import from the File menu replaces an earlier fit's "Fit failed" in the panel."""

import os

import bpy
import synth_bundle
import synth_views
from helpers import Recorder, finish_fit


def _three_photos(tmp_path, settings):
    photos = [tmp_path / f"{n}.png" for n in ("front", "left", "right")]
    for p in photos:
        synth_bundle.write_png(str(p), synth_bundle.albedo_texture(64))
    assert bpy.ops.flamefit.choose_photos(directory=str(tmp_path) + os.sep,
                                          files=[{"name": p.name} for p in photos]) == {"FINISHED"}
    return photos


def _points(tmp_path, name):
    path = tmp_path / f"{name}.pts"
    rows = "\n".join(f"{100 + i} {200 + i}" for i in range(68))
    path.write_text(f"version: 1\nn_points: 68\n{{\n{rows}\n}}\n")
    return path


def test_each_photo_has_its_landmarks_field(addon, empty_scene, tmp_path):
    s = empty_scene.flamefit
    _three_photos(tmp_path, s)
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    props = [v for kind, v in rec.log if kind == "prop"]
    assert props.count("landmarks") == 3 and "landmarks_file" not in props  # one field per photo
    texts = rec.texts()
    assert [t for t in texts if t in ("front.png", "left.png", "right.png")] == ["front.png", "left.png", "right.png"]
    # one photo again: the one Landmarks field
    s.photo = str(tmp_path / "other.png")
    rec = Recorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    props = [v for kind, v in rec.log if kind == "prop"]
    assert "landmarks" not in props and props.count("landmarks_file") == 1


def test_landmarks_go_to_the_backend_once_per_photo_in_order(addon, empty_scene, tmp_path, env_patch):
    from testenv import backend_env

    env_patch(backend_env(fake=True))
    s = empty_scene.flamefit
    s.output_dir = str(tmp_path / "results")
    photos = _three_photos(tmp_path, s)
    files = [_points(tmp_path, p.stem) for p in photos]
    for item, path in zip(s.photos, files):
        item.landmarks = str(path)
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    argv = job.argv
    assert argv[argv.index("fit") + 1:argv.index("-o")] == [str(p) for p in photos]
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "--landmarks"]
    assert given == [str(f) for f in files] and "--face" not in argv
    assert finish_fit(addon, job, 60).state == "DONE"


def test_a_refused_profile_says_to_give_its_landmarks_file(addon, empty_scene, tmp_path, env_patch):
    """Fit 3 Photos with the detector on a profile: the backend says why ("left.png: no landmark
    source finds this face's points (... at or past profile ...): give them with --landmarks FILE
    (several photos: ...)"); the panel says it in its own words. With the profile's points alone
    (the other photos detected) the same photos fit."""
    from testenv import backend_env

    env_patch(backend_env(fake=True, FAKE_FLAMEFIT_MODE="profile"))
    s = empty_scene.flamefit
    s.output_dir = str(tmp_path / "results")
    photos = _three_photos(tmp_path, s)
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    assert "--landmarks" not in job.argv  # no photo has points: no flag at all
    assert finish_fit(addon, job, 60).state == "FAILED"
    state = bpy.context.window_manager.flamefit
    assert state.error.startswith("left.png: no landmark source finds this face's points (RetinaFace's five "
                                  "points put it at 98 degrees of yaw, at or past profile;"), state.error
    assert state.error.endswith("): give them as a Landmarks file (below the photo)"), state.error
    assert "--landmarks" not in state.error and "several photos" not in state.error
    s.photos[1].landmarks = str(_points(tmp_path, "left"))
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    assert finish_fit(addon, job, 60).state == "DONE" and state.error == ""
    assert [p.name for p in photos] == ["front.png", "left.png", "right.png"]


def test_an_old_backends_refusal_points_to_the_photos_field(addon, empty_scene, tmp_path, env_patch):
    """A backend that still calls a profile "not a human face" (and says nothing of its points):
    the panel adds where to give them; not when that photo had points, nor for one photo."""
    from testenv import backend_env

    env_patch(backend_env(fake=True, FAKE_FLAMEFIT_MODE="profile-old"))
    s = empty_scene.flamefit
    s.output_dir = str(tmp_path / "results")
    _three_photos(tmp_path, s)
    s.photos[2].landmarks = str(_points(tmp_path, "right"))  # the refused left.png has none: '-'
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    assert finish_fit(addon, job, 60).state == "FAILED"
    state = bpy.context.window_manager.flamefit
    assert state.error.startswith("left.png: not a human face: the face mesh finds no face")
    assert state.error.endswith("give them as its Landmarks file (below the photo's name; photos without one "
                                "are detected)"), state.error
    hint = addon.ui.operators.landmarks_hint
    refusal = "b.png: not a human face: ..."
    assert hint(["py", "fit", "a.png", "b.png", "-o", "x"], refusal) != ""
    assert hint(["py", "fit", "a.png", "b.png", "-o", "x", "--landmarks", "-", "--landmarks", "b.pts"], refusal) == ""
    assert hint(["py", "-m", "flamefit.cli", "fit", "b.png", "-o", "x"], refusal) == ""
    assert hint(["py", "fit", "a.png", "b.png", "-o", "x"], "b.png: another person than a.png") == ""


def test_photos_without_landmarks_are_detected(addon, empty_scene, tmp_path, env_patch):
    """Points for the profile only: the others go as `--landmarks -` (the backend detects them),
    one per photo in order; a missing file is refused before anything starts."""
    from testenv import backend_env

    env_patch(backend_env(fake=True))
    s = empty_scene.flamefit
    s.output_dir = str(tmp_path / "results")
    photos = _three_photos(tmp_path, s)
    left = _points(tmp_path, "left")
    s.photos[1].landmarks = str(left)
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is not None, error
    argv = job.argv
    assert argv[argv.index("fit") + 1:argv.index("-o")] == [str(p) for p in photos]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--landmarks"] == ["-", str(left), "-"]
    assert "--face" not in argv
    assert finish_fit(addon, job, 60).state == "DONE"
    before = sorted(os.listdir(tmp_path))
    s.photos[0].landmarks = str(tmp_path / "missing.pts")
    job, error = addon.ui.operators.start_fit(bpy.context)
    assert job is None and error == f"the landmarks file {tmp_path / 'missing.pts'} does not exist"
    assert sorted(os.listdir(tmp_path)) == before  # nothing started, nothing written


def test_an_import_replaces_a_failed_fit_in_the_panel(addon, empty_scene, tmp_path):
    """The File menu's import after a failed fit: the panel says what was imported, not "Fit failed"
    and the old error; Ctrl-Z (the collection gone) takes that line away as after a fit."""
    state = bpy.context.window_manager.flamefit
    state.status, state.error = "Fit failed", "left.png: no face found"
    folder = tmp_path / "person"
    synth_views.write_views_bundle(str(folder), photos_dir=str(tmp_path))
    assert bpy.ops.import_scene.flamefit(filepath=str(folder / "result.json")) == {"FINISHED"}

    def shown():
        rec = Recorder()
        addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
        return " ".join(rec.texts())

    text = shown()
    assert "Fit failed" not in text and "no face found" not in text and "Error" not in text
    assert "Imported person" in text, text
    coll = bpy.data.collections["person"]
    for obj in list(coll.objects):
        bpy.data.objects.remove(obj)
    bpy.data.collections.remove(coll)
    assert "Imported" not in shown()
    # a bundle that cannot be read: its one sentence is the panel's error
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{}")
    try:
        bpy.ops.import_scene.flamefit(filepath=str(tmp_path / "broken" / "result.json"))
    except RuntimeError as exc:  # bpy raises an operator's ERROR report
        assert "not a FlameFit result bundle" in str(exc)
    assert "not a FlameFit result bundle" in state.error and "Error" in shown()


def test_views_count_is_shown_for_several_photos_only(addon, empty_scene, tmp_path):
    """result.json's metrics count the views; "Views 1" under a one-photo result says nothing."""

    def last_result(views, name):
        folder = tmp_path / name
        synth_views.write_views_bundle(str(folder), views, photos_dir=str(tmp_path / f"{name}-photos"))
        assert bpy.ops.import_scene.flamefit(filepath=str(folder / "result.json")) == {"FINISHED"}
        rec = Recorder()
        addon.ui.panel.FLAMEFIT_PT_result.draw(type("P", (), {"layout": rec})(), bpy.context)
        texts = rec.texts()
        return texts[texts.index("Landmarks"):]  # the metrics' rows, label then value

    one = last_result(synth_views.DEFAULT_VIEWS[:1], "one")
    assert "Views" not in one and "PSNR" in one, one
    three = last_result(synth_views.DEFAULT_VIEWS, "three")
    assert three[three.index("Views") + 1] == "3", three
