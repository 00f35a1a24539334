"""`flamefit fit` / `flamefit batch` as a user runs them (subprocesses).

Bad input must end with a non-zero exit code, one clear line on stderr (no traceback)
and no output folder (nor a temporary sibling) left behind; SIGTERM and Ctrl-C mid-fit
likewise (exit code 130).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flamefit.bundle import read_result, validate_bundle

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "backend") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FLAMEFIT_FLAME_MODEL", None)
    return env


def flamefit(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "flamefit.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def assert_clean_failure(proc, out: Path, code=None):
    assert proc.returncode != 0 if code is None else proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines, "no message on stderr"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("flamefit: "), lines[-1]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], list(out.parent.iterdir())
    return lines[-1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    return folder


def test_fit_writes_a_complete_bundle_with_json_progress(photos, tmp_path):
    out = tmp_path / "bundle"
    proc = flamefit("fit", photos / "astronaut.png", "-o", out, "--json-progress", "--stages", "landmarks",
                    "--texture-size", "64")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.strip().splitlines()]  # only JSON on stdout
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["image", "landmarks", "rigid", "shape", "bundle"]
    assert all(e["count"] == len(stages) for e in events if e["event"] == "stage")
    assert any(e["event"] == "progress" and "loss" in e for e in events)
    assert events[-1] == {"event": "done", "bundle": str(out), "result": str(out / "result.json")}
    assert validate_bundle(out) == []
    result = read_result(out)
    assert result["views"][0]["photo"]["width"] == 512 and result["metrics"]["landmark_error_eye_fraction"] < 0.05
    assert set(result["timings"]) >= {"image", "landmarks", "rigid", "shape", "bundle", "total"}
    # An existing folder is kept without --overwrite and replaced with it.
    again = flamefit("fit", photos / "astronaut.png", "-o", out, "--stages", "landmarks")
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert validate_bundle(out) == []


def test_missing_photo(tmp_path):
    out = tmp_path / "out"
    line = assert_clean_failure(flamefit("fit", tmp_path / "nope.jpg", "-o", out), out, code=2)
    assert "not found" in line


def test_text_file_named_jpg(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a photo\n")
    out = tmp_path / "out"
    line = assert_clean_failure(flamefit("fit", fake, "-o", out), out, code=2)
    assert "not an image" in line


def test_truncated_image(tmp_path, astronaut):
    full = tmp_path / "full.jpg"
    Image.fromarray(astronaut).save(full, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    out = tmp_path / "out"
    line = assert_clean_failure(flamefit("fit", cut, "-o", out), out, code=2)
    assert "truncated" in line or "damaged" in line


def test_no_face(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    path = tmp_path / "wall.png"
    Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], -1)).save(path)
    out = tmp_path / "out"
    line = assert_clean_failure(flamefit("fit", path, "-o", out), out, code=2)
    assert "no face" in line


def test_face_too_small(photos, tmp_path):
    from flamefit.landmarks import detect_landmarks

    points = detect_landmarks(np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))).points
    small = tmp_path / "small.npy"
    np.save(small, 256 + (points - 256) * 0.15)  # ~9 px between the eye corners
    out = tmp_path / "out"
    line = assert_clean_failure(flamefit("fit", photos / "astronaut.png", "-o", out, "--landmarks", small), out, code=2)
    assert "too small" in line


def _interrupt_at(photos, tmp_path, sig, stage):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "flamefit.cli", "fit", str(photos / "astronaut.png"), "-o", str(out),
                             "--json-progress", "--texture-size", "256"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("stage") == stage:
                proc.send_signal(sig)
                break
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    line = assert_clean_failure(finished, out, code=130)
    assert "interrupted" in line


def test_sigterm_mid_fit_leaves_nothing(photos, tmp_path):
    _interrupt_at(photos, tmp_path, signal.SIGTERM, "photometric")


def test_sigterm_while_writing_leaves_nothing(photos, tmp_path):
    _interrupt_at(photos, tmp_path, signal.SIGTERM, "bundle")


def test_ctrl_c_mid_fit_leaves_nothing(photos, tmp_path):
    _interrupt_at(photos, tmp_path, signal.SIGINT, "shape")


def test_batch_goes_on_after_a_failure_and_resumes(photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_face.png").write_bytes((photos / "astronaut.png").read_bytes())
    (folder / "b_broken.jpg").write_text("not a photo")
    out = tmp_path / "bundles"
    args = ("batch", folder, "-o", out, "--stages", "landmarks", "--texture-size", "64")
    proc = flamefit(*args)
    assert proc.returncode == 2 and "1 of 2 photos failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    with open(out / "summary.csv") as stream:
        rows = {Path(r["photo"]).name: r for r in csv.DictReader(stream)}
    assert rows["a_face.png"]["status"] == "ok" and rows["b_broken.jpg"]["status"] == "failed"
    assert "not an image" in rows["b_broken.jpg"]["message"]
    assert validate_bundle(out / "a_face") == [] and not (out / "b_broken").exists()
    assert "a_face.png" in proc.stdout and "failed" in proc.stdout  # the printed table

    (folder / "b_broken.jpg").unlink()
    stamp = (out / "a_face" / "result.json").stat().st_mtime_ns
    again = flamefit(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert (out / "a_face" / "result.json").stat().st_mtime_ns == stamp
    with open(out / "summary.csv") as stream:
        assert [r["status"] for r in csv.DictReader(stream)] == ["skipped"]
