"""The headless batch (batch.py) never writes over what a user owns (#17.1): an input photo
is never replaced, an existing .blend / preview only with --overwrite (which is the only
time the backend gets --overwrite), and a bundle it cannot read fails that photo with one
line (#17.10). Run as `batch.main()` in Blender 5.0's Python (the PyPI module, in a
subprocess: it empties the file) with the fake backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import synth_bundle
from testenv import FAKE_BACKEND, HERE, REPO, backend_env

# FLAMEFIT_TEST_BATCH_PY: another checkout's batch.py (to show these tests fail on older code)
BATCH_PATH = os.environ.get("FLAMEFIT_TEST_BATCH_PY", str(REPO / "blender_flamefit" / "batch.py"))



def run_batch(tmp_path, *args, env=None):
    """batch.py run as the documented `--python batch.py` script (its own folder is the add-on)."""
    code = (f"import sys, runpy; import bpy; SCRIPT = {BATCH_PATH!r}; sys.argv = [SCRIPT, '--', *sys.argv[1:]]; "
            "runpy.run_path(SCRIPT, run_name='__main__')")
    env = dict(os.environ, **(env or backend_env(fake=True, FAKE_FLAMEFIT_CALLS=tmp_path / "calls.jsonl")))
    return subprocess.run([sys.executable, "-c", code, *map(str, args), "--samples", "1", "--preview-size", "48"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))


def backend_calls(tmp_path) -> list:
    calls = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def errors(proc) -> list:
    return [line for line in proc.stderr.splitlines() if line.startswith("flamefit batch: error:")]


def test_preview_never_replaces_an_input_photo(tmp_path):
    """OUT_DIR = the photo's folder: the preview `<stem>.png` would be the photo itself."""
    photo = tmp_path / "me.png"
    synth_bundle.write_png(str(photo), synth_bundle.albedo_texture(64))
    before = photo.read_bytes()
    for extra in ((), ("--overwrite",)):  # not even when asked to overwrite
        proc = run_batch(tmp_path, photo, tmp_path, *extra)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert errors(proc) == [f"flamefit batch: error: me.png: its output {photo} is an input photo, which is "
                                "never written over; choose another OUT_DIR"], proc.stderr
        assert photo.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["me.png"]  # refused before any work: no backend, no files
    # A folder fitted into itself: its .png photos are refused as they arrive, the others saved.
    photos = tmp_path / "photos"
    photos.mkdir()
    synth_bundle.write_png(str(photos / "a.png"), synth_bundle.albedo_texture(64))
    synth_bundle.write_png(str(photos / "b.jpg.png"), synth_bundle.albedo_texture(48))
    os.rename(photos / "b.jpg.png", photos / "b.jpg")  # PNG bytes; the batch goes by the suffix
    a_before = (photos / "a.png").read_bytes()
    proc = run_batch(tmp_path, photos, photos, "--overwrite")
    assert proc.returncode == 1 and "1 of 2 photos done" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert errors(proc) == [f"flamefit batch: error: a.png: its output {photos / 'a.png'} is an input photo, "
                            "which is never written over; choose another OUT_DIR"], proc.stderr
    assert (photos / "a.png").read_bytes() == a_before and not (photos / "a.blend").exists()
    assert (photos / "b.blend").stat().st_size > 1000 and (photos / "b.png").stat().st_size > 100


def test_existing_outputs_kept_without_overwrite(tmp_path):
    """A second run into the same OUT_DIR keeps the user's edited .blend (one line, nothing
    started); --overwrite replaces it, and only then does the backend get --overwrite."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("anna", "ben"):
        synth_bundle.write_png(str(photos / f"{stem}.png"), synth_bundle.albedo_texture(64))
    out = tmp_path / "out"
    proc = run_batch(tmp_path, photos, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (first,) = backend_calls(tmp_path)
    assert "--overwrite" not in first
    (out / "anna.blend").write_bytes(b"the user's edits")
    kept = {name: (out / name).read_bytes() for name in ("anna.blend", "anna.png", "ben.blend", "ben.png")}

    proc = run_batch(tmp_path, photos, out)
    assert proc.returncode == 1
    assert errors(proc) == [f"flamefit batch: error: anna.png: {out / 'anna.blend'} already exists and is not "
                            "replaced; use --overwrite, or choose another OUT_DIR (and the other 1 photo "
                            "likewise; nothing was done)"], proc.stderr
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert len(backend_calls(tmp_path)) == 1  # the backend was not started

    proc = run_batch(tmp_path, photos, out, "--overwrite")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--overwrite" in backend_calls(tmp_path)[-1]
    assert (out / "anna.blend").read_bytes() != kept["anna.blend"] and (out / "anna.blend").stat().st_size > 1000
    # written under a temporary name and moved into place: nothing else is left behind
    assert sorted(os.listdir(out)) == ["anna", "anna.blend", "anna.png", "ben", "ben.blend", "ben.png"]


# A backend that writes anna's result.json with an integer Python will not parse (> 4300 digits).
HUGE_INT_CLI = f'''
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("fake_cli", {str(FAKE_BACKEND / "flamefit" / "cli.py")!r})
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)
import synth_bundle
write_bundle = synth_bundle.write_bundle

def huge_int_bundle(folder, **kw):
    write_bundle(folder, **kw)
    if os.path.basename(folder) == "anna":
        path = os.path.join(folder, "result.json")
        with open(path) as fh:
            text = fh.read().lstrip()
        with open(path, "w") as fh:
            fh.write('{{"note": ' + "1" * 5000 + ", " + text[1:])

synth_bundle.write_bundle = huge_int_bundle
sys.exit(fake.main())
'''


def test_unreadable_result_fails_that_photo_only(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("anna", "ben"):
        synth_bundle.write_png(str(photos / f"{stem}.png"), synth_bundle.albedo_texture(64))
    backend = tmp_path / "backend"
    (backend / "flamefit").mkdir(parents=True)
    (backend / "flamefit" / "__init__.py").write_text("")
    (backend / "flamefit" / "cli.py").write_text(HUGE_INT_CLI)
    env = backend_env(fake=True)
    env["PYTHONPATH"] = os.pathsep.join([str(backend), str(HERE)])
    out = tmp_path / "out"
    proc = run_batch(tmp_path, photos, out, "--no-preview", env=env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 of 2 photos done" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = errors(proc)
    assert line.startswith("flamefit batch: error: anna.png: ") and len(line) < 400, line
    assert (out / "ben.blend").is_file() and not (out / "anna.blend").exists()
