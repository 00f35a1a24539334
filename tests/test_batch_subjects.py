"""Issue #19.1: `flamefit batch --subjects PEOPLE_DIR -o OUT`: one sub-folder of photos per
person, one bundle per person fitted from all of their photos (fit_photos); a folder
without photos is that person's failure; --resume skips done people and refits a person
whose photos changed only with --overwrite."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_fit import flamefit
from test_cli_safety import FAST

from flamefit.bundle import validate_bundle
from flamefit.bundle.reader import fitted_photos


@pytest.fixture
def people(tmp_path, astronaut):
    root = tmp_path / "people"
    for person, photos in {"ann": {"a.png": astronaut, "b.png": astronaut[10:, 5:]},
                           "bob": {"c.png": (astronaut * 0.9).astype(np.uint8)}}.items():
        (root / person).mkdir(parents=True)
        for name, rgb in photos.items():
            Image.fromarray(np.ascontiguousarray(rgb)).save(root / person / name)
    (root / "empty").mkdir()
    return root


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", encoding="utf-8") as stream:
        return {Path(r["photo"]).name: r for r in csv.DictReader(stream)}


def test_one_bundle_per_person_from_all_of_their_photos(people, tmp_path, astronaut):
    out = tmp_path / "out"
    proc = flamefit("batch", "--subjects", people, "-o", out, *FAST)
    assert proc.returncode == 2, proc.stderr  # the empty folder failed; the others were fitted
    rows = _summary(out)
    assert {n: r["status"] for n, r in rows.items()} == {"ann": "ok", "bob": "ok", "empty": "failed"}
    assert "no photos" in rows["empty"]["message"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ann", "bob"]
    for person, names in (("ann", ["a.png", "b.png"]), ("bob", ["c.png"])):
        assert validate_bundle(out / person) == []
        assert [Path(p["path"]).name for p in fitted_photos(out / person)] == names  # every photo a view

    again = flamefit("batch", "--subjects", people, "-o", out, "--resume", *FAST)
    assert {n: r["status"] for n, r in _summary(out).items()} == {"ann": "skipped", "bob": "skipped",
                                                                  "empty": "failed"}, again.stderr
    Image.fromarray(astronaut[:, ::-1]).save(people / "bob" / "d.png")  # bob's photos changed
    before = (out / "bob" / "result.json").read_bytes()
    resumed = flamefit("batch", "--subjects", people, "-o", out, "--resume", *FAST)
    assert "not replaced (use --overwrite" in _summary(out)["bob"]["message"], resumed.stderr
    assert (out / "bob" / "result.json").read_bytes() == before
    (people / "empty").rmdir()
    refit = flamefit("batch", "--subjects", people, "-o", out, "--overwrite", *FAST)
    assert refit.returncode == 0, refit.stderr
    assert [Path(p["path"]).name for p in fitted_photos(out / "bob")] == ["c.png", "d.png"]
