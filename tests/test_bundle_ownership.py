"""Issue #17 items 3, 5, 13 and 8 (writing), as a user meets them (real bundles, the CLI in
subprocesses): --overwrite deletes only a bundle's own files, the claim lock and the
temporary siblings never touch a user's file, an output name too long for the file
system is refused before fitting, and a bundle records its photo's SHA-256."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_cli_fit import _env, flamefit

from flamefit.bundle import read_result, validate_bundle

FAST = ("--stages", "landmarks", "--texture-size", "64")


def _one_line(proc, code=2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("flamefit:")]
    assert len(ours) == 1, proc.stderr
    return ours[0]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def made_bundle(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("made") / "bundle"
    proc = flamefit("fit", photo, "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def bundle(made_bundle, tmp_path):
    out = tmp_path / "astronaut"
    shutil.copytree(made_bundle, out)
    return out


# --- 3. --overwrite removes only a bundle's own files ------------------------------------------


def test_overwrite_refuses_a_copied_result_json_beside_user_files(photo, made_bundle, tmp_path):
    """The README's own example: a result.json copied into a folder of the user's."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(made_bundle / "result.json", proj)
    (proj / "thesis.txt").write_text("four years")
    shutil.copy(photo, proj / "me.png")
    before = _snapshot(proj)
    line = _one_line(flamefit("fit", proj / "me.png", "-o", proj, "--overwrite", *FAST))
    assert "2 item(s)" in line and "me.png" in line and "thesis.txt" in line
    assert _snapshot(proj) == before


def test_overwrite_and_batch_keep_files_saved_into_a_real_bundle(photo, bundle, tmp_path):
    (bundle / "astro_edited.blend").write_bytes(b"BLENDER my edits")
    (bundle / "renders").mkdir()
    (bundle / "renders" / "front.png").write_bytes(b"a render")
    before = _snapshot(bundle)
    line = _one_line(flamefit("fit", photo, "-o", bundle, "--overwrite", *FAST))
    assert "astro_edited.blend" in line and "renders/" in line
    assert _snapshot(bundle) == before
    # The Blender headless batch passes --overwrite: the same rule holds there.
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(photo, photos / photo.name)
    batch = flamefit("batch", photos, "-o", tmp_path, "--overwrite", *FAST)
    assert batch.returncode == 2 and "Traceback" not in batch.stderr, batch.stderr
    [row] = csv.DictReader((tmp_path / "summary.csv").open(encoding="utf-8"))
    assert row["status"] == "failed" and "astro_edited.blend" in row["message"]
    assert row["seconds"] == ""  # refused before its photo was fitted, not after
    assert _snapshot(bundle) == before
    # Once they are moved out, the bundle is replaced, and nothing foreign is left.
    (bundle / "astro_edited.blend").unlink()
    shutil.rmtree(bundle / "renders")
    assert flamefit("fit", photo, "-o", bundle, "--overwrite", *FAST).returncode == 0
    assert validate_bundle(bundle) == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".astronaut.")]


def test_a_file_saved_while_fitting_keeps_the_old_bundle(photo, bundle):
    before = _snapshot(bundle)
    proc = subprocess.Popen([sys.executable, "-m", "flamefit.cli", "fit", str(photo), "-o", str(bundle),
                             "--overwrite", "--json-progress", *FAST], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        for line in proc.stdout:  # the first event comes after the up-front checks
            if json.loads(line).get("event") == "stage":
                (bundle / "late_notes.txt").write_text("saved while it fitted")
                break
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = _one_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr))
    assert "late_notes.txt" in line
    assert _snapshot(bundle) == {**before, "late_notes.txt": b"saved while it fitted"}
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["astronaut"]


# --- 5. the claim lock and temporary siblings never touch a user's file -----------------------


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(photo, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".fitS.lock").symlink_to(victim.name)
    line = _one_line(flamefit("fit", photo, "-o", tmp_path / "fitS", *FAST))
    assert "symbolic link" in line
    assert victim.read_text() == "precious" and (tmp_path / ".fitS.lock").is_symlink()
    # --overwrite takes the claim only to commit: refused up front all the same.
    line = _one_line(flamefit("fit", photo, "-o", tmp_path / "fitS", "--overwrite", *FAST))
    assert "symbolic link" in line and victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fitS.lock", "victim.txt"]


def test_a_users_lock_named_file_is_kept_a_flamefit_one_is_reused(photo, tmp_path):
    lock = tmp_path / ".out.lock"
    lock.write_text("my notes")
    assert "not a lock file of FlameFit's" in _one_line(flamefit("fit", photo, "-o", tmp_path / "out", *FAST))
    assert lock.read_text() == "my notes"
    lock.write_text(str(_dead_pid()))  # what a FlameFit writer that was SIGKILLed leaves
    assert flamefit("fit", photo, "-o", tmp_path / "out", *FAST).returncode == 0
    assert not lock.exists() and validate_bundle(tmp_path / "out") == []


def test_user_folders_named_like_temporaries_of_dead_writers_are_kept(photo, made_bundle, tmp_path):
    """(test_cli_safety checks that FlameFit's own stale temporaries do go.)"""
    pid = _dead_pid()
    users_tmp = tmp_path / f".out.tmp-{pid}"
    users_tmp.mkdir()
    (users_tmp / "mine.txt").write_text("keep")
    users_old = tmp_path / f".out.old-{pid}"  # even a copy of a bundle, with the user's file in it
    shutil.copytree(made_bundle, users_old)
    (users_old / "thesis.txt").write_text("keep")
    kept = _snapshot(tmp_path)
    assert flamefit("fit", photo, "-o", tmp_path / "out", *FAST).returncode == 0
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("out")} == kept


def test_atomic_writes_remove_only_their_own_stale_temporaries(tmp_path):
    from flamefit.fsutil import atomic_write_text

    pid = _dead_pid()
    users = tmp_path / f".notes.txt.tmp-{pid}-cafe"  # not the shape FlameFit makes (8 hex digits)
    users.write_text("keep")
    stale = tmp_path / f".notes.txt.tmp-{pid}-0123abcd"
    stale.write_text("half")
    atomic_write_text(tmp_path / "notes.txt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [users.name, "notes.txt"]
    assert users.read_text() == "keep"


# --- 13. a name too long for the file system is refused before any fitting -------------------


def _refused_up_front(photo, out: Path) -> str:
    proc = flamefit("fit", photo, "-o", out, "--json-progress", *FAST)
    events = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    assert "stage" not in events, "it started fitting"
    return _one_line(proc)


@pytest.mark.parametrize("length", [246, 250, 255])
def test_an_output_name_too_long_for_flamefits_own_names(photo, tmp_path, length):
    line = _refused_up_front(photo, tmp_path / ("n" * length))
    assert "too long" in line and str(os.pathconf(tmp_path, "PC_NAME_MAX")) in line
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_too_long_inside_the_temporary_folder(photo, tmp_path):
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    deep, name = tmp_path, "d" * 200
    while len(os.fsencode(str(deep / name))) < path_max - 60:
        deep = deep / name
    os.makedirs(deep)
    out = deep / ("o" * (path_max - 20 - len(os.fsencode(str(deep)))))  # the folder fits; .o.tmp-PID/... does not
    assert len(os.fsencode(str(out / "result.json"))) < path_max
    line = _refused_up_front(photo, out)
    assert "too long" in line and str(path_max - 1) in line
    assert list(deep.iterdir()) == []


# --- 8. a bundle records its photo's SHA-256 --------------------------------------------------


def test_a_bundle_records_the_sha256_of_its_photo(photo, made_bundle):
    expected = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert read_result(made_bundle)["views"][0]["photo"].get("sha256") == expected
    from flamefit.bundle.reader import photo_sha256  # (here: the old code fails on the line above)

    assert photo_sha256(made_bundle) == expected
