"""Landmark detection on open test photos (skimage's astronaut) and landmark files."""

import json
import sys
import types

import cv2
import numpy as np
import pytest

from flamefit.errors import FlameFitError
from flamefit.landmarks import Detection, detect_landmarks, ibug68, load_landmarks_file, save_landmarks_file


@pytest.fixture(scope="module")
def found(astronaut) -> Detection:
    return detect_landmarks(astronaut)


def test_astronaut_one_face_68_points_in_box(found):
    assert found.num_faces == 1 and found.face_index == 0
    assert found.points.shape == (68, 2) and np.isfinite(found.points).all() and found.valid.all()
    x0, y0, x1, y1 = found.box
    margin = 0.15 * (x1 - x0)  # dlib's box is tight: the jaw line pokes out a little
    assert (found.points[:, 0] > x0 - margin).all() and (found.points[:, 0] < x1 + margin).all()
    assert (found.points[:, 1] > y0 - margin).all() and (found.points[:, 1] < y1 + margin).all()
    assert 40 < found.inter_ocular < 90


def test_eye_corners_left_right(found):
    p = found.points
    # 36 = outer corner of the subject's right eye = image left.
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
    assert p[list(ibug68.RIGHT_EYE), 0].mean() < p[list(ibug68.LEFT_EYE), 0].mean()
    assert p[list(ibug68.JAW[:8]), 0].mean() < p[ibug68.CHIN, 0] < p[list(ibug68.JAW[9:]), 0].mean()
    assert p[list(ibug68.RIGHT_EYE), 1].mean() < p[ibug68.NOSE_TIP, 1] < p[list(ibug68.OUTER_LIPS), 1].mean()


def test_mirrored_photo_gives_mirrored_points(astronaut, found):
    mirrored = detect_landmarks(np.ascontiguousarray(astronaut[:, ::-1]))
    back = mirrored.points[list(ibug68.MIRROR)]
    back[:, 0] = astronaut.shape[1] - back[:, 0]  # continuous coordinates: x -> W - x
    assert np.linalg.norm(back - found.points, axis=1).mean() < 1.5


def test_grey_rgba_and_upscaled_agree(astronaut, found):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    upscaled = cv2.resize(astronaut, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    for image, scale in ((grey, 1), (grey[..., None], 1), (rgba, 1), (upscaled, 2)):
        other = detect_landmarks(image)
        assert other.num_faces == 1
        assert np.abs(other.points / scale - found.points).max() < 3.0


def test_deterministic(astronaut, found):
    assert np.array_equal(detect_landmarks(astronaut).points, found.points)


@pytest.fixture(scope="module")
def two_faces(astronaut):
    """Astronaut at 80 % on the left, full size on the right."""
    small = cv2.resize(astronaut, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((512, 410 + 512, 3), np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    canvas[:, 410:] = astronaut
    return canvas


def test_two_faces_largest_by_default_index_picks(two_faces, found):
    largest = detect_landmarks(two_faces)
    assert largest.num_faces == 2 and largest.face_index == 1
    assert np.abs(largest.points - (found.points + [410, 0])).max() < 3.0
    left = detect_landmarks(two_faces, face_index=0)
    assert left.face_index == 0 and left.box[2] < 410
    assert np.abs(left.points - found.points * 0.8).max() < 4.0


def test_face_index_out_of_range(two_faces):
    with pytest.raises(FlameFitError, match=r"--face 2 is out of range: found 2 faces, numbered 0\.\.1"):
        detect_landmarks(two_faces, face_index=2, image_name="pair.png")
    with pytest.raises(FlameFitError, match="out of range"):
        detect_landmarks(two_faces, face_index=-1)


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face(kind):
    image = (np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8) if kind == "noise"
             else np.full((96, 96, 3), 128, np.uint8))
    with pytest.raises(FlameFitError, match=rf"no face found in {kind}\.png .*--landmarks FILE"):
        detect_landmarks(image, image_name=f"{kind}.png")


def test_bad_inputs(astronaut):
    with pytest.raises(FlameFitError, match="8-bit"):
        detect_landmarks(astronaut.astype(np.uint16))
    with pytest.raises(FlameFitError, match="grey, RGB or RGBA"):
        detect_landmarks(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(FlameFitError, match="unknown landmark detector 'nope'"):
        detect_landmarks(astronaut, detector="nope")


def test_optional_detectors_explain_what_is_missing(astronaut):
    for name, module in (("face-alignment", "face_alignment"), ("mediapipe", "mediapipe")):
        try:
            __import__(module)
        except ImportError:
            with pytest.raises(FlameFitError, match=f"'{name}' .*not installed: pip install"):
                detect_landmarks(astronaut, detector=name)


@pytest.fixture
def fake_face_alignment(monkeypatch, tmp_path):
    """A stand-in face_alignment package (the real one needs weights from the internet):
    checks which files FlameFit looks for and how it reads the results."""
    import torch

    from flamefit.landmarks import optional_detectors

    base = "https://example.invalid/python-fan/"
    api = types.SimpleNamespace(default_model_urls={"2DFAN-4": base + "2DFAN4-default.zip"}, models_urls={})
    sfd = types.SimpleNamespace(models_urls={"s3fd": base + "s3fd-test.pth"})

    class FaceAlignment:
        def __init__(self, kind, device, face_detector, flip_input):
            assert device == "cpu" and face_detector == "sfd"

        def get_landmarks_from_image(self, image, return_bboxes):
            points = np.tile(np.arange(68, dtype=np.float32)[:, None], (1, 2)) * 3 + 100
            return [points], None, [np.array([90, 80, 200, 190, 0.99])]

    package = types.ModuleType("face_alignment")
    package.api, package.FaceAlignment = api, FaceAlignment
    package.LandmarksType = types.SimpleNamespace(TWO_D=1)
    modules = {"face_alignment": package, "face_alignment.api": api,
               "face_alignment.detection": types.ModuleType("d"), "face_alignment.detection.sfd": types.ModuleType("s"),
               "face_alignment.detection.sfd.sfd_detector": sfd}
    modules["face_alignment.detection.sfd"].sfd_detector = sfd
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    optional_detectors._face_alignment_model.cache_clear()
    yield tmp_path / "hub" / "checkpoints"
    optional_detectors._face_alignment_model.cache_clear()


def test_face_alignment_never_downloads(astronaut, fake_face_alignment):
    with pytest.raises(FlameFitError, match="weights missing: 2DFAN4-default.zip, s3fd-test.pth must be in "
                                            ".*checkpoints .*never downloads"):
        detect_landmarks(astronaut, detector="face-alignment")
    fake_face_alignment.mkdir(parents=True)
    for name in ("2DFAN4-default.zip", "s3fd-test.pth"):
        (fake_face_alignment / name).write_bytes(b"")
    found = detect_landmarks(astronaut, detector="face-alignment")
    assert found.detector == "face-alignment" and found.box == (90, 80, 200, 190)
    assert found.points[0].tolist() == [100.5, 100.5]  # FAN's pixel indices -> pixel centres


def test_index_tables():
    assert sorted(ibug68.MIRROR) == list(range(68))
    assert all(ibug68.MIRROR[ibug68.MIRROR[i]] == i for i in range(68))
    assert ibug68.MIRROR[36] == 45 and ibug68.MIRROR[8] == 8
    assert len(set(ibug68.MEDIAPIPE_FOR_INNER_FACE)) == 51
    inner = dict(zip(ibug68.INNER_FACE, ibug68.MEDIAPIPE_FOR_INNER_FACE))
    assert all(inner[i] == m for i, m in ibug68.MEDIAPIPE_CHECK_PAIRS.items())


# --- files ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pts", ".json", ".npy"])
def test_files_round_trip(tmp_path, found, suffix):
    path = tmp_path / f"points{suffix}"
    save_landmarks_file(path, found.points)
    assert np.array_equal(load_landmarks_file(path), found.points)


def test_hand_written_files(tmp_path):
    points = np.arange(136, dtype=float).reshape(68, 2) / 3
    pts = tmp_path / "ibug.pts"
    pts.write_text("version: 1\nn_points:  68\n{\n" + "\n".join(f"{x:.6f} {y:.6f}" for x, y in points) + "\n}\n")
    assert np.allclose(load_landmarks_file(pts), points, atol=1e-6)
    plain = tmp_path / "list.json"
    plain.write_text(json.dumps(points.tolist()))
    assert np.array_equal(load_landmarks_file(plain), points)
    wrapped = tmp_path / "wrapped.JSON"
    wrapped.write_text(json.dumps({"landmarks": points.tolist(), "image": "me.jpg"}))
    assert np.array_equal(load_landmarks_file(wrapped), points)
    batch = tmp_path / "batch.npy"
    np.save(batch, points[None].astype(np.float32))
    assert np.allclose(load_landmarks_file(batch), points)


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("few.npy", np.zeros((5, 2)), r"expected 68 points of \(x, y\) \(iBUG-68\), got shape \(5, 2\)"),
    ("xyz.npy", np.zeros((68, 3)), r"got shape \(68, 3\)"),
    ("nan.npy", np.full((68, 2), np.nan), r"every landmark is missing \(NaN\)"),
    ("inf.npy", np.full((68, 2), np.inf), "infinity or a half-missing"),
    ("half.json", json.dumps([[1, None]] + [[1, 2]] * 67), "infinity or a half-missing"),
    ("text.npy", "not numpy", "cannot read landmark file"),
    ("bad.json", "{not json", "not valid JSON"),
    ("keys.json", '{"points": []}', "without a 'landmarks' key"),
    ("ragged.json", '[[1, 2], [3]]', r"list of \[x, y\] number pairs"),
    ("words.json", '[["a", "b"]]', r"list of \[x, y\] number pairs"),
    ("short.json", '[[1, 2], [3, 4]]', r"got shape \(2, 2\)"),
    ("nobrace.pts", "version: 1\nn_points: 68\n1 2\n", "not an iBUG .pts file"),
    ("count.pts", "version: 1\nn_points: 68\n{\n1 2\n3 4\n}\n", "n_points: 68 but 2 point lines"),
    ("words.pts", "version: 1\nn_points: 1\n{\nx y\n}\n", "not two numbers"),
    ("points.txt", "1 2", "unknown landmark file type '.txt'"),
])
def test_malformed_files(tmp_path, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(FlameFitError, match=message) as error:
        load_landmarks_file(path)
    assert str(path) in str(error.value)


def test_missing_points_survive_files(tmp_path, found):
    points = found.points.copy()
    points[list(ibug68.JAW)] = np.nan  # as MediaPipe gives them
    for suffix in (".pts", ".json", ".npy"):
        save_landmarks_file(tmp_path / f"p{suffix}", points)
        assert np.array_equal(load_landmarks_file(tmp_path / f"p{suffix}"), points, equal_nan=True)
    (tmp_path / "null.json").write_text(json.dumps([[None, None]] + points[1:].tolist()))
    assert np.isnan(load_landmarks_file(tmp_path / "null.json")[0]).all()


def test_missing_file(tmp_path):
    with pytest.raises(FlameFitError, match="landmark file not found"):
        load_landmarks_file(tmp_path / "absent.pts")


def test_save_rejects_wrong_shape(tmp_path):
    with pytest.raises(FlameFitError, match=r"expected \(68, 2\) points"):
        save_landmarks_file(tmp_path / "p.npy", np.zeros((3, 2)))
