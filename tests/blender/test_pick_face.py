"""#18.4 in Blender: Find Faces runs the real backend's `flamefit faces` in the background, the
panel lists the faces (numbered, the backend's choice marked) with the numbered picture, the
user picks one and Fit Photo passes `--face N`; one face needs no choice; another photo clears
the list."""

import subprocess
import time

import bpy
import pytest
from helpers import Recorder
from testenv import BACKEND_PYTHON, backend_env

TWO_FACES = """
import sys, cv2, numpy as np
from skimage import data
a = data.astronaut()
big = cv2.GaussianBlur(cv2.resize(a, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC), (0, 0), 6)
canvas = np.zeros((big.shape[0], 1000, 3), np.uint8)
canvas[:, :big.shape[1] - 320] = big[:, 320:]
canvas[150:662, 470:982] = a
cv2.imwrite(sys.argv[1], cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
"""


class PanelRecorder(Recorder):
    """Recorder that also keeps the operator buttons' text and state, and the picture."""

    def _child(self, *a, **k):
        return PanelRecorder(self.log)

    box = row = column = split = _child

    def operator(self, idname, text="", icon="NONE", depress=False, **k):
        self.log.append(("operator", idname))
        self.log.append(("button", (idname, text, depress)))
        return type("Props", (), {})()

    def template_icon(self, icon_value=0, scale=1.0):
        self.log.append(("icon", icon_value))

    def buttons(self, idname):
        return [v[1:] for kind, v in self.log if kind == "button" and v[0] == idname]


def panel(addon):
    rec = PanelRecorder()
    addon.ui.panel.FLAMEFIT_PT_main.draw(type("P", (), {"layout": rec})(), bpy.context)
    return rec


@pytest.fixture(scope="module")
def two_faces_png(tmp_path_factory):
    """The sharp astronaut beside a larger blurred copy cut by the left border (the backend's
    choice is the sharp one, face 1)."""
    path = tmp_path_factory.mktemp("faces") / "press.png"
    out = subprocess.run([str(BACKEND_PYTHON), "-c", TWO_FACES, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot write the two-face photo: {out.stderr.strip()[-200:]}")
    return path


@pytest.fixture
def find_faces(addon, empty_scene, real_backend, env_patch, tmp_path, monkeypatch):
    """Find Faces on a photo as the operator does it (start, then ticks until it ends)."""
    env_patch(backend_env(fake=False))
    monkeypatch.setattr(addon.ui.operators, "faces_folder", lambda: str(tmp_path / "faces"))

    def run(photo):
        empty_scene.flamefit.photo = str(photo)
        job, error = addon.ui.operators.start_faces(bpy.context)
        assert job is not None, error
        addon.ui.job_runner.set_active("faces", job)
        deadline = time.monotonic() + 120
        try:
            while (res := addon.ui.operators.faces_step(bpy.context, job)).state == "RUNNING":
                assert "Finding faces" in " ".join(panel(addon).texts())  # the UI goes on drawing meanwhile
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            job.stop()
            addon.ui.job_runner.set_active("faces", None)
        return res

    return run


def fit_argv(addon, photo):
    python = str(BACKEND_PYTHON)
    return addon.ui.operators.fit_command(bpy.context, bpy.path.abspath(str(photo)), "/tmp/out", python)


def test_two_faces_listed_picked_and_passed_to_the_fit(addon, find_faces, two_faces_png):
    res = find_faces(two_faces_png)
    assert res.state == "DONE", res.message
    assert res.message.startswith("2 faces")
    shown = panel(addon)
    text = " ".join(shown.texts())
    assert "2 faces, numbered left to right (chosen: 1, the sharp central whole one)" in text, text
    rows = shown.buttons("flamefit.pick_face")
    assert [r[0].split()[0] for r in rows] == ["0", "1"]
    assert rows[0][0].startswith("0  left") and "blurred" in rows[0][0] and "cut" in rows[0][0]
    assert rows[1][0].startswith("1  right") and rows[1][0].endswith("(chosen)")
    assert [r[1] for r in rows] == [False, True]  # the backend's choice is the pressed one
    # the numbered picture: an Image with the picture's pixels and a full-size preview in the panel
    image = bpy.data.images["FlameFit faces"]
    assert tuple(image.size) == (1000, 819)
    assert bpy.path.abspath(image.filepath) == bpy.context.scene.flamefit.faces_picture
    assert tuple(image.preview.image_size) == (1000, 819)
    assert ("icon", image.preview.icon_id) in shown.log
    # no pick yet: the backend chooses (it falls back to the next face if that one is refused)
    assert "--face" not in fit_argv(addon, two_faces_png)

    assert bpy.ops.flamefit.pick_face(index=0) == {"FINISHED"}
    assert [r[1] for r in panel(addon).buttons("flamefit.pick_face")] == [True, False]
    argv = fit_argv(addon, two_faces_png)
    assert argv[argv.index("--face") + 1] == "0"

    # another photo: the numbers meant that photo's faces
    bpy.context.scene.flamefit.photo = str(two_faces_png.with_name("other.png"))
    assert "--face" not in fit_argv(addon, two_faces_png.with_name("other.png"))
    assert not panel(addon).buttons("flamefit.pick_face")
    assert "faces" not in " ".join(panel(addon).texts()).replace("Find Faces", "")


def test_one_face_needs_no_choice(addon, find_faces, astronaut_png):
    res = find_faces(astronaut_png)
    assert res.state == "DONE", res.message
    shown = panel(addon)
    assert "1 face: nothing to choose" in shown.texts()
    assert not shown.buttons("flamefit.pick_face")
    bpy.context.scene.flamefit.face_pick = 0
    assert "--face" not in fit_argv(addon, astronaut_png)


def test_no_face_is_the_backends_sentence(addon, find_faces, tmp_path):
    import numpy as np
    import synth_bundle

    wall = tmp_path / "wall.png"
    yy, xx = np.mgrid[0:240, 0:320]
    synth_bundle.write_png(str(wall), np.stack([xx % 256, yy % 256, np.full_like(xx, 128)], -1).astype(np.uint8))
    res = find_faces(wall)
    assert res.state == "FAILED" and res.message.startswith("no face found in wall.png")
    error = bpy.context.window_manager.flamefit.error
    assert error.startswith("no face found in wall.png") and "Landmarks file" in error
    assert not panel(addon).buttons("flamefit.pick_face")
