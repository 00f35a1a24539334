"""#19.3: the headless batch's folder-per-person mode (--people): one head from each sub-folder's
photos, one .blend per person, under the same output rules as the photo mode (inputs never
written over, --overwrite only for its own files). batch.main() in Blender 5.0's Python (a
subprocess) with the fake backend, which writes a schema-3 bundle for several photos."""

from __future__ import annotations

import os

import bpy
import synth_bundle
from test_headless_batch_outputs import backend_calls, errors, run_batch


def _photos(folder, *names):
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        synth_bundle.write_png(str(folder / name), synth_bundle.albedo_texture(32 + 8 * i))


def _blend_objects(path) -> list:
    with bpy.data.libraries.load(str(path)) as (src, _dst):
        return sorted(src.objects)


def _tree(folder) -> dict:
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def test_one_blend_per_person(tmp_path):
    people = tmp_path / "people"
    _photos(people / "alice", "front.png", "left.png", "right.png")
    _photos(people / "bob", "a.png", "b.png")
    _photos(people / "carol", "only.png")
    (people / "empty").mkdir()
    _photos(people / ".hidden", "x.png")
    inputs = _tree(people)
    out = tmp_path / "out"
    proc = run_batch(tmp_path, "--people", people, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "3 of 3 people done" in proc.stdout
    assert sorted(os.listdir(out)) == ["alice", "alice.blend", "alice.png", "bob", "bob.blend", "bob.png",
                                       "carol", "carol.blend", "carol.png"]
    # one backend run per person, with that person's photos in name order
    calls = [c for c in backend_calls(tmp_path) if c[0] == "fit"]
    assert [[os.path.basename(a) for a in c[1:c.index("-o")]] for c in calls] == \
        [["front.png", "left.png", "right.png"], ["a.png", "b.png"], ["only.png"]]
    assert _blend_objects(out / "alice.blend") == ["alice_fill", "alice_front_camera", "alice_head", "alice_key",
                                                   "alice_left_camera", "alice_right_camera"]
    assert [o for o in _blend_objects(out / "bob.blend") if o.endswith("_camera")] == ["bob_a_camera", "bob_b_camera"]
    assert [o for o in _blend_objects(out / "carol.blend") if o.endswith("_camera")] == ["carol_camera"]
    assert _tree(people) == inputs  # nothing of the inputs changed


def test_people_fitted_into_their_own_folder_are_refused(tmp_path):
    """OUT_DIR = PEOPLE_DIR: each person's bundle folder would be their photo folder."""
    people = tmp_path / "people"
    _photos(people / "alice", "front.png", "left.png")
    _photos(people / "bob", "a.png", "b.png")
    inputs = _tree(people)
    for extra in ((), ("--overwrite",)):
        proc = run_batch(tmp_path, "--people", people, people, *extra)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert errors(proc) == [f"flamefit batch: error: alice: its bundle folder {people / 'alice'} holds input "
                                "photos (front.png); choose another OUT_DIR (and the other 1 person likewise; "
                                "nothing was done)"], proc.stderr
        assert backend_calls(tmp_path) == []
        assert _tree(people) == inputs


def test_existing_outputs_need_overwrite(tmp_path):
    people = tmp_path / "people"
    _photos(people / "alice", "front.png", "left.png")
    _photos(people / "bob", "a.png", "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "alice.blend").write_bytes(b"the user's own file")
    proc = run_batch(tmp_path, "--people", people, out)
    assert proc.returncode == 1 and "1 of 2 people done" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert errors(proc) == [f"flamefit batch: error: alice: {out / 'alice.blend'} already exists and is not "
                            "replaced; use --overwrite, or choose another OUT_DIR"], proc.stderr
    assert (out / "alice.blend").read_bytes() == b"the user's own file"
    assert (out / "bob.blend").exists()
    # --overwrite: the batch replaces them, and only then passes --overwrite to the backend
    proc = run_batch(tmp_path, "--people", people, out, "--overwrite")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "alice_head" in _blend_objects(out / "alice.blend")
    assert all("--overwrite" in c for c in backend_calls(tmp_path)[-2:])


def test_a_folder_of_people_without_the_flag_says_so(tmp_path):
    people = tmp_path / "people"
    _photos(people / "alice", "front.png")
    _photos(people / "bob", "a.png")
    proc = run_batch(tmp_path, people, tmp_path / "out")
    assert proc.returncode == 1
    assert errors(proc) == [f"flamefit batch: error: no photos in {people}; its 2 sub-folders hold photos: add "
                            "--people to fit one head per sub-folder"], proc.stderr
    proc = run_batch(tmp_path, "--people", tmp_path / "nobody", tmp_path / "out")
    assert proc.returncode == 1 and "no such file" in proc.stderr
