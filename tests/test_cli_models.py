"""`flamefit models` / `model-info` and the settings precedence, run as a user would."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from flamefit.config import load_settings
from flamefit.errors import FlameFitError


def run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO / "backend"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "flamefit.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def isolated_env(tmp_path):
    """No user settings file, a private cache, nothing from the caller's FLAMEFIT_*."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FLAMEFIT_CACHE_DIR": str(tmp_path / "cache")}
    for key in [k for k in os.environ if k.startswith("FLAMEFIT_")]:
        env[key] = ""
    return env


def test_models_defaults_to_the_open_head(isolated_env):
    result = run_cli("models", "--json", env_extra=isolated_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["head_model"]["name"].startswith("open head")
    assert "CC0" in report["head_model"]["licence"]
    assert "ibug68" in report["head_model"]["landmarks"]
    assert report["settings"]["cache_dir"]["from"].startswith("environment variable")


def test_models_with_the_flame_extract(isolated_env, flame_extract_path):
    result = run_cli("models", "--json", "--model", flame_extract_path, env_extra=isolated_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["head_model"]["name"] == "FLAME 2023 Open"
    assert report["head_model"]["vertices"] == 5023
    assert report["settings"]["flame_model"]["from"] == "command-line flag --model"


def test_precedence_flag_over_env_over_file(tmp_path, flame_extract_path):
    other = tmp_path / "other.npz"
    other.write_bytes(b"")
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f'flame_model = "{other}"\ntexture_space = "{other}"\n')
    env = {"FLAMEFIT_CONFIG": str(settings_file)}
    from_file = load_settings(env=env)
    assert from_file.flame_model == other and "settings file" in from_file.sources["flame_model"]
    from_env = load_settings(env={**env, "FLAMEFIT_FLAME_MODEL": str(flame_extract_path)})
    assert from_env.flame_model == flame_extract_path
    assert from_env.texture_space == other  # untouched keys keep the file's value
    from_flag = load_settings({"flame_model": other}, env={**env, "FLAMEFIT_FLAME_MODEL": str(flame_extract_path)})
    assert from_flag.flame_model == other


@pytest.mark.parametrize("content, message", [
    ("flame_model = [unclosed", "not valid TOML"),
    ('flame_modle = "/x.pkl"', "unknown settings"),
])
def test_bad_settings_file_is_a_clear_error(tmp_path, content, message):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(content)
    with pytest.raises(FlameFitError, match=message):
        load_settings(env={"FLAMEFIT_CONFIG": str(settings_file)})


def test_missing_model_file_says_where_to_get_it(isolated_env, tmp_path):
    result = run_cli("models", "--model", tmp_path / "flame2023.pkl", env_extra=isolated_env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "not found" in lines[0] and "flame.is.tue.mpg.de" in lines[0] and "--model" in lines[0]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_wrong_shaped_model_is_refused_and_writes_nothing(isolated_env, tmp_path, flame_extract_path):
    bad = tmp_path / "flame_bad.npz"
    faces = np.load(flame_extract_path)["faces"]  # FLAME's topology on a 100-vertex template
    np.savez(bad, v_template=np.zeros((100, 3), np.float32), f=faces,
             shapedirs=np.zeros((100, 3, 10), np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("models", "--model", bad, env_extra=isolated_env)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_model_info_reads_without_running_code(tmp_path, flame_extract_path):
    result = run_cli("model-info", flame_extract_path)
    assert result.returncode == 0, result.stderr
    assert "FLAME model" in result.stdout and "(5023, 3)" in result.stdout
    text_file = tmp_path / "notes.pkl"
    text_file.write_text("not a pickle")
    result = run_cli("model-info", text_file)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
