"""Issue #11, items 1, 2, 5, 9 and 10, as a user meets them (subprocesses): nothing that
is not a FlameFit bundle is ever replaced, one writer wins an output folder, interrupts
of every kind take one path (exit 130, one line, nothing half-written), and every error
is one line with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from test_cli_fit import _env, assert_clean_failure, flamefit

from flamefit.bundle import validate_bundle
from flamefit.bundle.claim import TEMP_MARKER, temp_marker_text

FAST = ("--stages", "landmarks", "--texture-size", "64")


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


def _one_line(proc, code=2) -> str:
    """The one `flamefit:` line, last on stderr (native libraries' log lines before it,
    e.g. MediaPipe's, are not ours to count)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    ours = [line for line in lines if line.startswith("flamefit:")]
    assert len(ours) == 1 and lines[-1] == ours[0], proc.stderr
    return ours[0]


def _start(*args, stdout=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-m", "flamefit.cli", *map(str, args)], stdout=stdout,
                            stderr=subprocess.PIPE, text=True, env=_env())


# --- 1. only a FlameFit bundle is ever replaced ------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(photo, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "me.png").write_bytes(photo.read_bytes())
    (folder / "notes.txt").write_text("mine")
    line = _one_line(flamefit("fit", folder / "me.png", "-o", folder, "--overwrite", *FAST))
    assert "not a FlameFit result bundle" in line
    assert sorted(p.name for p in folder.iterdir()) == ["me.png", "notes.txt"]
    # A result.json that is not ours does not make a folder replaceable either.
    (folder / "result.json").write_text(json.dumps({"schema_version": True, "files": {}}))
    assert "not a FlameFit result bundle" in _one_line(flamefit("fit", photo, "-o", folder, "--overwrite"))
    assert (folder / "notes.txt").read_text() == "mine"


def test_batch_resume_keeps_a_folder_that_is_not_a_bundle(photo, tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "p.png").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    (out / "p").mkdir(parents=True)
    (out / "p" / "thesis.txt").write_text("four years")
    proc = flamefit("batch", photos, "-o", out, "--resume", *FAST)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (out / "p" / "thesis.txt").read_text() == "four years"
    assert "not a FlameFit bundle" in (out / "summary.csv").read_text()


# --- 2 and 5. one writer wins; stale temporaries of dead writers go ------------------------


def test_two_fits_to_the_same_folder_one_wins_and_stale_temporaries_go(photo, tmp_path):
    out = tmp_path / "same"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".same.tmp-{int(dead.stdout)}"  # a writer SIGKILLed mid-write (its marker first)
    stale.mkdir()
    (stale / TEMP_MARKER).write_text(temp_marker_text(int(dead.stdout)))
    (stale / "mesh.npz").write_bytes(b"half")
    other = tmp_path / ".other.tmp-1"  # not ours to judge: another folder's name
    other.mkdir()
    procs = [_start("fit", photo, "-o", out, *FAST) for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)
    assert "another FlameFit process" in loser[1] or "already exists" in loser[1], loser[1]
    assert validate_bundle(out) == []
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-1", "same"]


# --- 5. interrupts: SIGHUP, and a burst of Ctrl-C while writing -------------------------------


def _interrupt(photo, out: Path, at_stage: str, signals: list[int], gap: float = 0.003):
    proc = _start("fit", photo, "-o", out, "--json-progress", "--texture-size", "256")
    try:
        for line in proc.stdout:
            if json.loads(line).get("stage") == at_stage:
                for number in signals:
                    proc.send_signal(number)
                    time.sleep(gap)
                break
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


def test_sighup_mid_fit_is_an_interrupt(photo, tmp_path):
    out = tmp_path / "out"
    line = assert_clean_failure(_interrupt(photo, out, "shape", [signal.SIGHUP]), out, code=130)
    assert "interrupted" in line


@pytest.mark.parametrize("stage", ["bundle", "photometric"])
def test_a_burst_of_ctrl_c_takes_one_clean_path(photo, tmp_path, stage):
    out = tmp_path / "out"
    proc = _interrupt(photo, out, stage, [signal.SIGINT] * 5)
    line = _one_line(proc, code=130)
    assert "interrupted" in line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


# --- 9. one line, exit code 2 ----------------------------------------------------------------


def test_json_progress_into_a_closed_or_short_pipe(photo, tmp_path):
    out = tmp_path / "out"
    shell = subprocess.run(["bash", "-c", f'"{sys.executable}" -m flamefit.cli fit "{photo}" -o "{out}" --json-progress '
                            '--stages landmarks --texture-size 64 | head -1; exit ${PIPESTATUS[0]}'],
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert json.loads(shell.stdout)["event"] == "stage"
    assert_clean_failure(shell, out, code=2)
    assert "stdout was closed" in _one_line(shell)
    closed = subprocess.run(["bash", "-c", f'"{sys.executable}" -m flamefit.cli fit "{photo}" -o "{out}" '
                             '--json-progress >&-'], capture_output=True, text=True, env=_env(), timeout=300)
    assert "stdout is closed" in _one_line(closed) and not out.exists()


def test_batch_output_onto_a_file_or_an_unwritable_place(photo, tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "p.png").write_bytes(photo.read_bytes())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "not a folder" in _one_line(flamefit("batch", photos, "-o", a_file))
    assert "is a file" in _one_line(flamefit("batch", photos, "-o", a_file / "sub"))
    if os.geteuid() != 0:  # root writes anywhere; /proc refuses even root
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o555)
        assert "not writable" in _one_line(flamefit("batch", photos, "-o", read_only / "out"))
    assert "cannot create" in _one_line(flamefit("batch", photos, "-o", "/proc/flamefit-test/out"))


@pytest.mark.parametrize("command", ["models", "batch", "texture-space"])
@pytest.mark.parametrize("content", ["flame_model = 5", 'flame_model = ["a"]', "cache_dir = 7"])
def test_settings_of_the_wrong_type(tmp_path, photo, command, content):
    settings = tmp_path / "settings.toml"
    settings.write_text(content + "\n")
    args = {"models": ("models",), "batch": ("batch", photo.parent, "-o", tmp_path / "out"),
            "texture-space": ("texture-space", "build", photo.parent, "-o", tmp_path / "space.npz")}[command]
    proc = subprocess.run([sys.executable, "-m", "flamefit.cli", *map(str, args)], capture_output=True, text=True,
                          env={**_env(), "FLAMEFIT_CONFIG": str(settings)}, timeout=300)
    assert "must be a path in quotes" in _one_line(proc)
    assert not (tmp_path / "out").exists() and not (tmp_path / "space.work").exists()


def test_a_photo_name_that_is_not_utf8(photo, tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1, as old cameras and Windows shares write
    with open(name, "wb") as stream:
        stream.write(photo.read_bytes())
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"flamefit.cli", b"fit", name, b"-o", os.fsencode(out)],
                          capture_output=True, env=_env(), timeout=300)
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.decode("utf-8", "replace"))
    assert "not valid UTF-8" in _one_line(proc) and time.perf_counter() - start < 30  # refused before fitting
    assert not out.exists()
    batch = flamefit("batch", tmp_path, "-o", out)
    assert batch.returncode == 2 and "Traceback" not in batch.stderr, batch.stderr
    summary = (out / "summary.csv").read_text(encoding="utf-8")
    assert "not valid UTF-8" in summary and "caf\\udce9.png" in summary


def test_a_newline_in_a_path_stays_on_one_line(tmp_path):
    out = tmp_path / "out"
    line = _one_line(flamefit("fit", tmp_path / "two\nlines.jpg", "-o", out))
    assert "two\\nlines.jpg" in line


def test_corrupt_texture_space_work_folder_on_resume(photo, tmp_path):
    work = tmp_path / "space.work"
    (work / "unwrapped").mkdir(parents=True)
    (work / "settings.json").write_text("{not json")
    proc = flamefit("texture-space", "build", photo.parent, "-o", tmp_path / "space.npz", "--resume")
    assert "damaged build result" in _one_line(proc)
    (work / "settings.json").unlink()
    (work / "unwrapped" / "x-00000000.npz").write_bytes(b"PK\x03\x04 not a zip")
    (work / "failed").mkdir()
    (work / "failed" / "y-00000000.json").write_text("[1, 2]")
    proc = flamefit("texture-space", "build", photo.parent, "-o", tmp_path / "space.npz", "--resume")
    assert "damaged build result" in _one_line(proc)


# --- 10. options the open head cannot use are refused ---------------------------------------


@pytest.mark.parametrize("flag", ["--landmark-embedding", "--uv-template"])
def test_open_head_refuses_flame_only_files(photo, tmp_path, flag):
    unreadable = tmp_path / "extra.npy"
    unreadable.write_bytes(b"not an array")
    out = tmp_path / "out"
    line = _one_line(flamefit("fit", photo, "-o", out, flag, unreadable, *FAST))
    assert "applies to a FLAME model" in line and not out.exists()
