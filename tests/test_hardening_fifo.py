"""#11.8: a FIFO (or any non-regular file) given as the photo, model, UV template, texture
space, landmark embedding or landmarks file is refused up front with one line, rc 2;
opening it would block forever (a test here that hangs is a failure: timeouts)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(args, tmp_path, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFIT_")}
    env.update(FLAMEFIT_THREADS="1", PYTHONPATH=str(REPO / "backend"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               FLAMEFIT_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def one_line_refusal(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "FIFO" in lines[0] and "regular file" in lines[0], result.stderr
    return lines[0]


@pytest.fixture
def fifo(tmp_path):
    def make(name):
        path = tmp_path / name
        os.mkfifo(path)
        return path
    return make


def test_fifo_photo(tmp_path, fifo):
    out = tmp_path / "out"
    one_line_refusal(run(["-m", "flamefit.cli", "fit", str(fifo("photo.png")), "-o", str(out)], tmp_path))
    assert not out.exists()


def test_fifo_model_file(tmp_path, fifo):
    model = fifo("generic_model.pkl")
    one_line_refusal(run(["-m", "flamefit.cli", "model-info", str(model)], tmp_path))
    one_line_refusal(run(["-m", "flamefit.cli", "models", "--model", str(model)], tmp_path))
    one_line_refusal(run(["-m", "flamefit.cli", "model-info", str(fifo("space.npz"))], tmp_path))


@pytest.mark.parametrize("flag,name", [("--texture-space", "FLAME_texture.npz"), ("--uv-template", "head_template_mesh.obj"),
                                       ("--landmark-embedding", "landmark_embedding.npy")])
def test_fifo_beside_a_flame_model(tmp_path, fifo, flame_extract_path, flag, name):
    one_line_refusal(run(["-m", "flamefit.cli", "models", "--model", str(flame_extract_path), flag, str(fifo(name))],
                         tmp_path))


def test_fifo_landmarks_file(tmp_path, fifo):
    code = ("import sys; from flamefit.errors import FlameFitError; from flamefit.landmarks.io import load_landmarks_file\n"
            "try:\n    load_landmarks_file(sys.argv[1])\n"
            "except FlameFitError as exc:\n    print(exc, file=sys.stderr); sys.exit(2)")
    one_line_refusal(run(["-c", code, str(fifo("points.pts"))], tmp_path))
