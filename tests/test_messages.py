"""Issue #17, items 11, 12 and 15: what a user reads. Bad settings files, landmark files
and arguments are one line with exit code 2; the no-face message names the photo's own
size; a multi-frame photo says which frame is used; detection prints nothing of its
native libraries; a model in the wrong units is refused by `model-info` and `fit` alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_fit import _env

from flamefit.cli import main
from flamefit.config import load_settings
from flamefit.errors import FlameFitError
from flamefit.image import Photo, load_photo
from flamefit.landmarks import load_landmarks_file


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No user settings file, a private cache, nothing from the caller's FLAMEFIT_*."""
    import os

    for key in [k for k in os.environ if k.startswith("FLAMEFIT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("FLAMEFIT_CACHE_DIR", str(tmp_path / "cache"))


def _one_error_line(capsys, code, expected=2) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected and len(lines) == 1 and lines[0].startswith("flamefit: error: "), (code, err)
    return lines[0]


# --- 11. settings.toml: a byte-order mark is fine, other encodings one line -------------


def test_a_settings_file_with_a_byte_order_mark_is_read(tmp_path):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_bytes(f'\ufeffflame_model = "{settings_file}"\n'.encode())
    assert load_settings(env={"FLAMEFIT_CONFIG": str(settings_file)}).flame_model == settings_file


def test_a_settings_file_that_is_not_utf8_is_one_line(tmp_path, isolated, monkeypatch, capsys):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_bytes('flame_model = "/data/caf\u00e9.pkl"\n'.encode("latin-1"))
    monkeypatch.setenv("FLAMEFIT_CONFIG", str(settings_file))
    line = _one_error_line(capsys, main(["models"]))
    assert "not UTF-8" in line and "byte 0xe9" in line


# --- 12. landmark files: deep nesting, absurd headers, huge files -----------------------


def test_deeply_nested_landmark_json_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FlameFitError, match="nested too deeply"):
        load_landmarks_file(path)


def test_a_landmark_npy_declaring_a_huge_array_is_refused_unread(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**11, 2)})
        f.write(bytes(64))
    with pytest.raises(FlameFitError, match="cannot read landmark file"):
        load_landmarks_file(path)


def test_a_landmark_file_of_megabytes_is_refused_unread(tmp_path):
    path = tmp_path / "big.pts"
    path.write_text("version: 1\nn_points: 68\n{\n" + "1.0 2.0\n" * 300_000 + "}\n")
    with pytest.raises(FlameFitError, match="too large for a landmark file"):
        load_landmarks_file(path)


# --- 15a. argument errors are one line --------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["fit"], "the following arguments are required: PHOTO, -o/--output (see flamefit fit --help)"),
    (["fit", "a.png", "-o", "out", "--texture-size", "big"], "invalid int value: 'big'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: command (see flamefit --help)"),
])
def test_argument_errors_are_one_line(argv, words, capsys):
    line = _one_error_line(capsys, main(argv))
    assert words in line


# --- 15b. no face: the photo's own size, advice that fits a large photo --------------------


def test_no_face_names_the_photo_size_not_the_detection_copy():
    from flamefit.fitting.inputs import find_landmarks

    grey = np.full((6000, 8000, 3), 128, np.uint8)  # 48 MP: detected on a 16 MP copy
    with pytest.raises(FlameFitError) as error:
        find_landmarks(Photo(Path("wall.jpg"), grey))
    message = str(error.value)
    assert "no face found in wall.jpg (8000x6000 px" in message, message
    assert "larger photo" not in message and "crop closer" in message


# --- 15c. animated and multi-page photos say which frame is fitted ------------------------


@pytest.mark.parametrize("suffix", [".gif", ".tiff", ".png", ".webp"])
def test_a_multi_frame_photo_says_only_the_first_frame_is_used(tmp_path, astronaut, suffix, capsys):
    first = Image.fromarray(astronaut)
    path = tmp_path / f"animated{suffix}"
    others = [first.transpose(Image.Transpose.FLIP_LEFT_RIGHT), first.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    first.save(path, save_all=True, append_images=others)
    assert load_photo(path).rgb.shape == astronaut.shape
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"flamefit: warning: {path}: 3 frames (animated or multi-page); only the first is used"]
    first.save(tmp_path / f"still{suffix}")
    load_photo(tmp_path / f"still{suffix}")
    assert capsys.readouterr().err == ""


# --- 15d. detection leaves stderr alone --------------------------------------------------


def test_detection_prints_nothing_of_mediapipe_or_tflite():
    pytest.importorskip("mediapipe")
    probe = ("from skimage import data\nfrom flamefit.landmarks import detect_landmarks\n"
             "print(detect_landmarks(data.astronaut(), detector='retinaface').detector)")
    run = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "retinaface+mediapipe"  # the mesh ran
    assert run.stderr == ""


# --- 15e. a model in the wrong units ------------------------------------------------------


@pytest.fixture
def huge_model(tmp_path, flame_extract_path):
    arrays = dict(np.load(flame_extract_path, allow_pickle=False))
    arrays["v_template"] = arrays["v_template"] * np.float32(1e30)
    path = tmp_path / "huge.npz"
    np.savez(path, **arrays)
    return path


def test_model_info_flags_absurd_coordinates(huge_model, isolated, capsys):
    line = _one_error_line(capsys, main(["model-info", str(huge_model)]))
    assert "v_template reaches 1.87e+29; FlameFit expects metres" in line


def test_fit_with_absurd_coordinates_is_one_short_line(huge_model, isolated, tmp_path, astronaut, capsys):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    code = main(["fit", str(photo), "-o", str(tmp_path / "out"), "--model", str(huge_model), "--stages", "landmarks"])
    line = _one_error_line(capsys, code)
    assert "v_template reaches" in line and len(line) < 200, line
