"""Several photos of one person -> one head (#19).

- Synthetic subjects (benchmarks/subject.py's renderer: known identity, per-view
  expression, pose and light over real photo backgrounds) seen from several sides share
  one identity, recovered better than from the front photo alone, with each view's pose.
- A photo of another person (OpenCV's messi5.jpg beside the astronaut) is refused with
  one line naming it, exit code 2, nothing written; the astronaut's mirror image (the
  same person from the other side) is accepted.
- The texture merge blends views (no step where one view's coverage ends).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import subject  # benchmarks/subject.py (conftest puts benchmarks/ on the path)
import test_fit_photos as photos_tests
from PIL import Image

from flamefit.errors import FlameFitError
from flamefit.fitting import FitOptions, fit_photo, fit_photos
from flamefit.fitting.geometry import yaw_degrees
from flamefit.landmarks import DETECTORS, default_detector
from flamefit.textures.merge import MergeOptions, merge_views

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as the CLI runs (FLAMEFIT_THREADS)


@pytest.fixture(scope="module")
def open_head():
    return photos_tests.prepared_model()


LANDMARKS_ONLY = FitOptions(stages=("landmarks",), texture_size=64)


def test_one_identity_from_several_views_is_nearer_the_truth(open_head):
    face = subject.face_vertices(open_head)
    errors = {}
    for yaws in ((0,), (0, 90, -90)):
        photos, points, truth = subject.make_subject(open_head, 1, yaws)
        result = fit_photos(photos, open_head, LANDMARKS_ONLY, landmarks=points)
        assert len(result.views) == len(yaws)
        assert result.identity.shape == (min(open_head.num_identity, 100),)
        fitted = subject.neutral_vertices(result)
        errors[len(yaws)] = (subject.aligned_error_mm(fitted, truth["neutral"], face),
                             subject.aligned_error_mm(fitted, truth["neutral"]))
        for view, true in zip(result.views, truth["views"]):
            assert view.metrics["landmark_error_px"] < 2.0
            assert abs(view.yaw_degrees - float(yaw_degrees(true["pose"])[0])) < 6
    # The profiles pin the depth of the face: the shared identity is nearer the truth.
    assert errors[3][0] < 0.8 * errors[1][0] and errors[3][0] < 1.2, errors
    assert errors[3][1] < 0.8 * errors[1][1], errors


@pytest.mark.parametrize("seed", [1, 2])
def test_a_single_profile_keeps_a_plausible_head(open_head, seed):
    """One photo at 90 degrees: its eye corners nearly meet, so measured in eye-corner
    distances its points would outweigh the priors and run the identity and expression
    far outside their range (face 2.6 / 6.2 mm off, identity to 8 sd, expression units to 5)."""
    photos, points, truth = subject.make_subject(open_head, seed, (90,))
    result = fit_photos(photos, open_head, LANDMARKS_ONLY, landmarks=points)
    face = subject.face_vertices(open_head)
    assert subject.aligned_error_mm(subject.neutral_vertices(result), truth["neutral"], face) < 2.0
    assert np.abs(result.identity).max() < 2.5  # standard deviations
    assert np.abs(result.views[0].expression).max() <= 1.0  # the open head's units: 0..1
    assert result.views[0].metrics["landmark_error_px"] < 1.5


def test_each_view_has_its_camera_relative_to_the_first(open_head):
    photos, points, truth = subject.make_subject(open_head, 2, (0, 90))
    result = fit_photos(photos, open_head, LANDMARKS_ONLY, landmarks=points)
    reference, side = result.views
    assert np.allclose(reference.world_to_camera(reference), np.eye(4), atol=1e-9)
    relative = side.world_to_camera(reference)
    yaw = math.degrees(math.atan2(relative[0, 2], relative[0, 0]))  # rotation about +Y
    assert abs(yaw - 90) < 8, relative
    # The head's points in view 2's camera = world_to_camera x the same points in the world
    # (view 1's camera), up to what the expression and neck change between the photos.
    moved = reference.landmarks_3d @ relative[:3, :3].T + relative[:3, 3]
    assert np.abs(moved - side.landmarks_3d)[17:].mean() < 0.006  # metres


def test_the_single_photo_fit_is_the_one_view_case(open_head):
    photos, points, _ = subject.make_subject(open_head, 3, (0,))
    one = fit_photo(photos[0], open_head, LANDMARKS_ONLY, landmarks=points[0])
    many = fit_photos(photos, open_head, LANDMARKS_ONLY, landmarks=points)
    assert np.array_equal(one.identity, many.identity)
    assert np.array_equal(one.fitted_2d, many.views[0].fitted_2d) and one.metrics == many.metrics


def _messi():
    path = photos_tests.messi_path()
    if path is None:
        pytest.skip("OpenCV's messi5.jpg (opencv-doc) is not installed")
    return path


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("people")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(folder / "mirrored.png")
    (folder / "messi.jpg").write_bytes(_messi().read_bytes())
    return folder


def test_a_photo_of_another_person_is_refused_by_name(open_head, two_people):
    photos = [two_people / "astronaut.png", two_people / "mirrored.png", two_people / "messi.jpg"]
    with pytest.raises(FlameFitError, match=r"^messi\.jpg: does not show the person in the other photos"):
        fit_photos(photos, open_head, LANDMARKS_ONLY)
    # The same person seen from the other side (the mirror image) is one subject.
    result = fit_photos(photos[:2], open_head, LANDMARKS_ONLY)
    assert [v.name for v in result.views] == ["astronaut", "mirrored"]


def test_the_cli_refuses_it_with_one_line_and_writes_nothing(two_people, tmp_path):
    out = tmp_path / "person"
    proc = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", str(two_people / "astronaut.png"),
                           str(two_people / "messi.jpg"), "-o", str(out), "--stages", "landmarks",
                           "--texture-size", "64"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "backend"), "PATH": "/usr/bin:/bin", "FLAMEFIT_THREADS": "1",
                               "HOME": str(Path.home())})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "messi.jpg: does not show the person" in lines[0], proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _cli_fit(*args):
    return subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", *map(str, args)], capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO / "backend"), "PATH": "/usr/bin:/bin",
                                          "FLAMEFIT_THREADS": "1", "HOME": str(Path.home())})


def test_landmark_files_must_match_the_photos(two_people, tmp_path):
    photos = [two_people / "astronaut.png", two_people / "mirrored.png"]
    proc = _cli_fit(*photos, "--landmarks", two_people / "x.pts", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "1 --landmarks file(s) for 2 photos" in proc.stderr
    assert "(- for a photo whose points the detector finds)" in proc.stderr
    # One per photo, '-' for one of them: a missing file is named before anything is written.
    proc = _cli_fit(*photos, "--landmarks", "-", "--landmarks", tmp_path / "missing.npy", "-o", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"flamefit: error: {tmp_path / 'missing.npy'}: landmark file not found"], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_merge_blends_where_a_view_ends():
    """Two views of a 128 x 128 map: the first sees the left 80 columns, the second the right
    80; their colours differ. Across the overlap the merged albedo changes in small steps
    (feathered weights), not at one column (a switch)."""
    size = 128
    index = np.arange(size * size)
    cols = index % size
    left = (cols < 80).astype(np.float32)
    right = (cols >= 48).astype(np.float32)
    a = np.full((size * size, 3), 0.4, np.float32)
    b = np.full((size * size, 3), 0.6, np.float32)
    ones = np.ones(size * size, np.float32)
    # Colour matched: the second view's exposure is brought to the first's over the overlap.
    albedo, _, _ = merge_views([a, b], [left, right], [ones, ones], index, size)
    assert np.abs(albedo - 0.4).max() < 0.01
    # Without the match (no shared texels counted), the two colours are blended, not switched.
    albedo, confidence, fill = merge_views([a, b], [left, right], [ones, ones], index, size,
                                            MergeOptions(min_overlap=10 ** 9))
    row = albedo.reshape(size, size, 3)[32, :, 0]
    assert np.allclose(row[:40], 0.4, atol=1e-3) and np.allclose(row[88:], 0.6, atol=1e-3)
    assert np.abs(np.diff(row)).max() < 0.2 / 4  # spread over many columns, no jump at one
    assert np.allclose(confidence, np.maximum(left, right)) and np.all(fill == 1)
    # Where no view sees (columns 50-77 here), the fills' weight fades in over several
    # columns instead of ending at the edge of what was seen.
    left, right = (cols < 50).astype(np.float32), (cols >= 78).astype(np.float32)
    _, confidence, fill = merge_views([a, b], [left, right], [ones, ones], index, size)
    row = fill.reshape(size, size)[32]
    assert row[20] == 1 and row[49] < 0.1 and np.all(np.diff(row[20:50]) <= 0) and (row[40:49] > 0.1).sum() >= 3
    assert np.allclose(confidence, np.maximum(left, right))


def test_more_views_texture_more_of_the_head(open_head):
    seen = {}
    for yaws in ((0,), (0, 90, -90)):
        photos, points, _ = subject.make_subject(open_head, 4, yaws)
        result = fit_photos(photos, open_head, FitOptions(stages=("landmarks", "texture"), texture_size=128),
                            landmarks=points)
        seen[len(yaws)] = subject.texels_seen(result)
    # Area-weighted (benchmarks/subject.texels_seen); the scalp is seen by none of them.
    assert seen[3] > 1.5 * seen[1], seen


def test_the_cli_fits_three_photos_with_their_landmark_files(open_head, tmp_path):
    from flamefit.bundle.reader import read_subject, validate_bundle

    photos, points, _ = subject.make_subject(open_head, 7, (0, 90, -90))
    args = []
    for name, photo, pts in zip(("front", "left", "right"), photos, points):
        Image.fromarray(photo.rgb).save(tmp_path / f"{name}.png")
        np.save(tmp_path / f"{name}.npy", pts)
        args += ["--landmarks", str(tmp_path / f"{name}.npy")]
    out = tmp_path / "person"
    proc = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", *(str(tmp_path / f"{n}.png") for n in
                           ("front", "left", "right")), *args, "-o", str(out), "--stages", "landmarks,texture",
                           "--texture-size", "64"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "backend"), "PATH": "/usr/bin:/bin", "FLAMEFIT_THREADS": "1",
                               "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    assert validate_bundle(out) == []
    result = read_subject(out)
    assert [v["name"] for v in result["views"]] == ["front", "left", "right"]
    assert all(v["metrics"]["landmark_error_px"] < 2.0 for v in result["views"])
    assert {"photo-3.png", "overlay-3.png", "report-3.png"} <= {p.name for p in out.iterdir()}


@pytest.mark.skipif(bool(DETECTORS[default_detector()].missing()), reason="no face detector installed")
def test_the_cli_detects_the_photos_given_as_dash(open_head, tmp_path):
    """A front photo and a profile: the profile's points from a file, the front's from the
    detector (`--landmarks -`), one head from both."""
    from flamefit.bundle.reader import read_subject, validate_bundle

    photos, points, _ = subject.make_subject(open_head, 7, (0, 90))
    for name, photo in zip(("front", "left"), photos):
        Image.fromarray(photo.rgb).save(tmp_path / f"{name}.png")
    np.save(tmp_path / "left.npy", points[1])
    out = tmp_path / "person"
    proc = _cli_fit(tmp_path / "front.png", tmp_path / "left.png", "--landmarks", "-", "--landmarks",
                    tmp_path / "left.npy", "-o", out, "--stages", "landmarks", "--texture-size", "64")
    assert proc.returncode == 0, proc.stderr
    assert validate_bundle(out) == []
    views = read_subject(out)["views"]
    assert [v["fit"]["landmarks"]["source"] for v in views] == ["detector", "file"]
    assert views[1]["fit"]["landmarks"]["path"] == str(tmp_path / "left.npy")
    # the detected front lies on the true points: the detector, not the file, placed them
    detected = np.asarray(views[0]["detected_landmarks_2d"], float)
    assert np.linalg.norm(detected[17:] - points[0][17:], axis=1).mean() < 4.0
    assert all(v["metrics"]["landmark_error_px"] < 2.0 for v in views)
