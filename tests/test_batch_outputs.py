"""Issue #17, items 6-9 and the --workers cap (15): what `batch` writes and counts. A
user's own summary.csv is never replaced; an interrupted --overwrite does not pass old
bundles off as refitted; --resume tells photos of the same name apart by their content;
parallel summary writers never collide; --workers is capped at cores and memory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_batch_safety import _summary, _workers
from test_cli_fit import _env, flamefit
from test_cli_safety import FAST, _one_line, _start

from flamefit.app import pool


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, astronaut):
    """Two photos (a.png, b.png) and their bundles from one batch."""
    root = tmp_path_factory.mktemp("fitted")
    photos = root / "in"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(photos / "b.png")
    proc = flamefit("batch", photos, "-o", root / "out", *FAST)
    assert proc.returncode == 0, proc.stderr
    return photos, root / "out"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: (p / "result.json").read_bytes() for p in sorted(out.iterdir()) if p.is_dir()}


# --- 6. a summary.csv that FlameFit did not write is refused up front ------------------------


def test_a_users_own_summary_csv_is_refused_before_anything_is_fitted(fitted, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(fitted[0] / "a.png", photos / "a.png")
    (photos / "summary.csv").write_text("name,grade\nme,A\n")  # `batch . -o .` in the user's folder
    line = _one_line(flamefit("batch", photos, "-o", photos, *FAST))
    assert "summary.csv" in line and "not a FlameFit batch summary" in line
    assert (photos / "summary.csv").read_text() == "name,grade\nme,A\n"
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "summary.csv"]  # nothing fitted

    # A link named summary.csv is the user's too, even to a FlameFit summary.
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").symlink_to(fitted[1] / "summary.csv")
    assert "not a FlameFit batch summary" in _one_line(flamefit("batch", photos, "-o", out, *FAST))
    assert (out / "summary.csv").is_symlink()

    # A summary an earlier batch wrote is replaced as before (the photo here fails up front:
    # its bundle folder holds a user's file, so nothing is fitted).
    (out / "summary.csv").unlink()
    shutil.copy(fitted[1] / "summary.csv", out / "summary.csv")
    (out / "a").mkdir()
    (out / "a" / "notes.txt").write_text("mine")
    proc = flamefit("batch", photos, "-o", out, *FAST)
    assert "1 of 1 photos failed" in _one_line(proc)
    assert _summary(out)["a.png"]["status"] == "failed" and (out / "a" / "notes.txt").read_text() == "mine"


def test_a_summary_csv_saved_during_the_run_is_kept(fitted, tmp_path):
    """summary.csv is checked before the first fit; a file the user saves under that name
    while the batch runs is kept too, and the summary goes to the first free summary-N.csv."""
    out = tmp_path / "out"
    proc = _start("batch", fitted[0], "-o", out, "--json-progress", *FAST)
    try:
        for line in proc.stdout:
            if json.loads(line).get("event") == "photo":  # the first photo is done: the run is under way
                (out / "summary.csv").write_text("name,grade\nme,A\n")
                break
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert (out / "summary.csv").read_text() == "name,grade\nme,A\n"
    rows = _summary(out, name="summary-2.csv")
    assert {r["status"] for r in rows.values()} == {"ok"} and set(rows) == {"a.png", "b.png"}


# --- 7. an interrupted --overwrite counts only bundles it rewrote ------------------------------


def test_an_interrupted_overwrite_does_not_count_the_old_bundles_as_written(fitted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(fitted[1], out)
    before = _result_bytes(out)
    proc = _start("batch", fitted[0], "-o", out, "--overwrite", "--workers", "2", "--json-progress", *FAST)
    try:
        deadline = time.monotonic() + 300
        while len(_workers(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_workers(proc.pid)) == 2, "the batch did not start two workers"
        proc.send_signal(signal.SIGINT)  # before any photo is refitted
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = _one_line(type("P", (), {"returncode": proc.returncode, "stderr": stderr})(), code=130)
    assert stdout == ""  # no photo was done
    assert "no bundle was written this run (2 photo(s) not fitted" in line, line
    assert _result_bytes(out) == before  # the earlier bundles are kept, untouched
    rows = _summary(out)
    assert {r["status"] for r in rows.values()} == {"skipped"}, rows  # listed, not passed off as refitted
    assert all("not refitted" in r["message"] for r in rows.values())


# --- 8. --resume compares the photo's content, not only its name --------------------------------


def test_resume_and_overwrite_leave_the_bundle_of_another_photo_with_the_same_name(fitted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(fitted[1], out)
    before = _result_bytes(out)
    assert json.loads(before["a"])["views"][0]["photo"]["sha256"] == _sha256(fitted[0] / "a.png")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(fitted[0] / "b.png", other / "a.png")  # another photo, named a.png
    for flag in ("--resume", "--overwrite"):
        proc = flamefit("batch", other, "-o", out, flag, *FAST)
        assert "1 of 1 photos failed" in _one_line(proc)
        row = _summary(out)["a.png"]
        assert row["status"] == "failed" and "another photo" in row["message"], row
        assert str(fitted[0] / "a.png") in row["message"]  # names the photo the bundle was fitted to
        assert _result_bytes(out) == before


def test_an_edited_photo_is_refitted_only_with_overwrite(fitted, tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(fitted[0] / "a.png", photos / "a.png")
    out = tmp_path / "out"
    assert flamefit("batch", photos, "-o", out, *FAST).returncode == 0
    shutil.copy(fitted[0] / "b.png", photos / "a.png")  # the user edits the photo in place
    kept = _result_bytes(out)
    proc = flamefit("batch", photos, "-o", out, "--resume", *FAST)
    assert "1 of 1 photos failed" in _one_line(proc)
    assert "earlier version of a.png" in _summary(out)["a.png"]["message"] and _result_bytes(out) == kept
    proc = flamefit("batch", photos, "-o", out, "--overwrite", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "a" / "result.json").read_text())["views"][0]["photo"]["sha256"] == _sha256(photos / "a.png")


# --- 9. parallel summary writers -------------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
from flamefit.app.batch import _row, _write_summary
summary, ready, writes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rows = [_row(f"/photos/{i}.png", f"/out/{i}", "ok") for i in range(50)]
ready.touch()
deadline = time.monotonic() + 60
while len(list(ready.parent.glob("ready-*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.001)  # both writers start together
failures = []
for _ in range(writes):
    try:
        _write_summary(summary, rows)
    except OSError as exc:
        failures.append(type(exc).__name__)
print(len(failures), sorted(set(failures)))
"""


def test_two_processes_writing_the_summary_never_collide(tmp_path):
    """They shared one temporary name (.summary.csv.tmp): on the old code 80 and 99 of the
    two processes' 400 writes each failed (FileNotFoundError)."""
    summary = tmp_path / "summary.csv"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(summary), str(tmp_path / f"ready-{k}"), "400"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for k in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert [o.split()[0] for o, _ in outputs] == ["0", "0"], outputs
    assert summary.read_text(encoding="utf-8").startswith("photo,bundle,status,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready-0", "ready-1", "summary.csv"]  # no temporaries left


# --- 15. --workers is capped at what cores and memory allow -------------------------------------


def test_workers_are_capped_at_cores_and_memory(tmp_path, capsys):
    assert pool.worker_count(1) == 1 and capsys.readouterr().err == ""
    workers = pool.worker_count(1000)
    cores = len(os.sched_getaffinity(0))
    assert 1 <= workers <= cores
    note = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"flamefit: --workers 1000: using {workers} \({cores} cores, [\d.]+ GB available at "
                        r"~[\d.]+ GB per worker\)", note), note

    # Both commands say it, on one line, before they start (here the first thing each then refuses:
    # a photo whose bundle folder is the user's; a model file that is not one).
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"")
    (tmp_path / "out" / "a").mkdir(parents=True)
    batch = flamefit("batch", photos, "-o", tmp_path / "out", "--workers", "1000", *FAST)
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a zip")
    build = flamefit("texture-space", "build", photos, "-o", tmp_path / "space.npz", "--workers", "1000",
                     "--model", bad)
    for proc in (batch, build):
        assert proc.returncode == 2, proc.stderr
        assert f"flamefit: --workers 1000: using {workers} ({cores} cores" in proc.stderr, proc.stderr
