"""How well the multi-photo fit's same-person check (fitting/same_person.py) separates
one person from another: dlib face-descriptor distances on AFLW2000-3D's photos (ground
truth landmarks), a photo against its own mirror image (the same person seen from the
other side: a yaw difference of twice its yaw) and against the other photos (other
people), by |yaw| band.

    python benchmarks/same_person.py [--faces 120] [--json]

Needs ../shared/aflw2000_dev beside the checkout (or FLAMEFIT_AFLW=DIR). Reports, per threshold, the
share of same-person pairs refused (false refusals) and of other-person pairs accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))


def main() -> int:
    from flamefit.fitting.same_person import face_descriptor
    from flamefit.image import load_photo
    from flamefit.landmarks import ibug68

    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=120)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(os.environ.get("FLAMEFIT_AFLW", REPO.parent / "shared" / "aflw2000_dev"))
    data = np.load(root / "annotations.npz")
    yaw = np.abs(data["pose_deg"][:, 1])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(yaw))[: args.faces]
    own, mirrored, yaws = [], [], []
    for i in order:
        photo = load_photo(root / "images" / f"{data['names'][i]}.jpg")
        points = data["landmarks_2d"][i].astype(np.float64)
        a = face_descriptor(photo.rgb, points)
        flipped = points[list(ibug68.MIRROR)].copy()
        flipped[:, 0] = photo.width - flipped[:, 0]
        b = face_descriptor(np.ascontiguousarray(photo.rgb[:, ::-1]), flipped)
        if a is None or b is None:
            continue
        own.append(a)
        mirrored.append(b)
        yaws.append(float(yaw[i]))
    own, mirrored, yaws = np.array(own), np.array(mirrored), np.array(yaws)
    same = np.linalg.norm(own - mirrored, axis=1)
    other = np.linalg.norm(own[:, None] - own[None], axis=-1)[np.triu_indices(len(own), 1)]
    pair_yaw = np.maximum.outer(yaws, yaws)[np.triu_indices(len(own), 1)]
    report = {"faces": len(own), "bands": {}}
    for lo, hi in ((0, 30), (30, 50), (50, 70), (70, 100)):
        s = same[(yaws >= lo) & (yaws < hi)]
        o = other[(pair_yaw >= lo) & (pair_yaw < hi)]
        report["bands"][f"{lo}-{hi}"] = {
            "same_pairs": len(s), "other_pairs": len(o),
            "same_median": round(float(np.median(s)), 3) if len(s) else None,
            "other_median": round(float(np.median(o)), 3) if len(o) else None,
            **{f"refused_same@{t}": round(float((s > t).mean()), 3) if len(s) else None for t in (0.55, 0.6, 0.65)},
            **{f"accepted_other@{t}": round(float((o <= t).mean()), 4) if len(o) else None for t in (0.55, 0.6, 0.65)}}
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
