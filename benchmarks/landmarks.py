"""Face recall and 68-point landmark error on hand-annotated photos (300-W AFW).

Data: ../shared/faces300w_afw/ beside the checkout (185 photos, 337 faces with
hand-corrected iBUG-68 points; research use only, never copied into the repo: read its
NOTICE.md). For each detector: the share of annotated faces it finds (a detected box
whose centre lies in the face's point box, with IoU > 0.3), and the NME of its own 68
points: mean point-to-point error / the annotated outer-eye-corner distance (36-45).
With --fit, each found face is also fitted (`fit_photo`, stages image..shape; the
photometric stage moves landmarks by < 0.1 %) and the fitted model's 68 projected
points are scored the same way. A face is "turned" when its annotated nose tip (30) lies
more than 25 % of the eye-corner distance from the eye line's midpoint, measured along
that line (57 of AFW's 337 faces).

    python benchmarks/landmarks.py                          # all photos, retinaface and dlib
    python benchmarks/landmarks.py --limit 40 --fit --json  # first 40 photos, with fits
    python benchmarks/landmarks.py --fit --annotations      # also fit the hand points themselves

--annotations also fits each found face to its own hand-annotated points: what is left is
the head model's floor (its shape space, priors and landmark embedding), which no
detector can get under.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
DATA = REPO.parent / "shared" / "faces300w_afw"
TURNED_OFFSET = 0.25


def box_of(points):
    return (*points.min(0), *points.max(0))


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def is_turned(gt):
    a, b = gt[36], gt[45]
    axis = (b - a) / np.linalg.norm(b - a)
    return abs(float(np.dot(gt[30] - (a + b) / 2, axis))) / np.linalg.norm(b - a) > TURNED_OFFSET


def nme(points, gt):
    """Mean error over the 68 points / outer-eye-corner distance; NaN points count as missing."""
    err = np.linalg.norm(points - gt, axis=1)
    return float(np.nanmean(err) / np.linalg.norm(gt[36] - gt[45]))


def match(faces, gt_box):
    best, best_iou = None, 0.3
    for index, face in enumerate(faces):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        overlap = iou(face.box, gt_box)
        if gt_box[0] <= cx <= gt_box[2] and gt_box[1] <= cy <= gt_box[3] and overlap > best_iou:
            best, best_iou = index, overlap
    return best


def summarise(rows, key):
    out = {}
    for group, keep in (("all", lambda r: True), ("frontal", lambda r: not r["turned"]), ("turned", lambda r: r["turned"])):
        values = [r[key] for r in rows if keep(r) and r.get(key) is not None]
        out[group] = {"mean": round(100 * float(np.mean(values)), 2) if values else None,
                      "median": round(100 * float(np.median(values)), 2) if values else None, "n": len(values)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--detectors", default="retinaface,dlib", help="comma-separated names from DETECTORS")
    parser.add_argument("--limit", type=int, help="first N photos only (sorted by name)")
    parser.add_argument("--fit", action="store_true", help="also fit each found face (stages image..shape)")
    parser.add_argument("--annotations", action="store_true",
                        help="with --fit: also fit the hand-annotated points (the model's floor)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args()
    if not (args.data / "landmarks.json").is_file():
        print(f"benchmark data not found: {args.data}/landmarks.json", file=sys.stderr)
        return 2

    import cv2
    import torch

    from flamefit.errors import FlameFitError
    from flamefit.landmarks import DETECTORS

    torch.set_num_threads(1)
    annotations = json.loads((args.data / "landmarks.json").read_text())["faces"]
    names = sorted(annotations)[:args.limit]
    model = options = None
    if args.fit:
        from flamefit.config import load_settings
        from flamefit.fitting import FitOptions, fit_photo, prepare_model
        from flamefit.image import load_photo
        from flamefit.models import load_head_model

        settings = load_settings({})
        model = prepare_model(load_head_model(settings), settings.cache_dir)
        options = FitOptions(stages=("landmarks",))
    report = {"data": str(args.data), "photos": len(names), "faces": sum(len(annotations[n]) for n in names),
              "turned_rule": f"|nose tip offset along the eye line| > {TURNED_OFFSET} x eye-corner distance",
              "detectors": {}}
    for name in args.detectors.split(","):
        finder = DETECTORS[name]()
        rows, seconds, fit_seconds = [], [], []
        for photo_name in names:
            bgr = cv2.imread(str(args.data / photo_name))
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            start = time.perf_counter()
            faces = sorted((f for f in finder.detect(rgb) if f.score >= finder.min_score),
                           key=lambda f: (f.box[0] + f.box[2]) / 2)
            elapsed = time.perf_counter() - start
            photo = load_photo(args.data / photo_name) if args.fit else None
            for gt in annotations[photo_name]:
                gt = np.asarray(gt, dtype=np.float64) + 0.5  # annotations: 0-based pixel indices
                row = {"photo": photo_name, "turned": is_turned(gt), "found": False, "detector_nme": None,
                       "fitted_nme": None, "refused": None}
                index = match(faces, box_of(gt))
                if index is not None:
                    row["found"] = True
                    start = time.perf_counter()
                    try:
                        face = finder.landmarks(rgb, faces[index])
                        row["detector_nme"] = nme(face.points, gt)
                        row["weighted"] = face.weights is not None
                    except FlameFitError as error:
                        row["refused"] = str(error)
                    elapsed += time.perf_counter() - start
                    if args.fit and row["refused"] is None:
                        start = time.perf_counter()
                        try:
                            result = fit_photo(photo, model, options, detector=name, face_index=index)
                            row["fitted_nme"] = nme(result.fitted_2d, gt)
                        except FlameFitError as error:
                            row["fit_error"] = str(error)
                        fit_seconds.append(time.perf_counter() - start)
                        if args.annotations:
                            result = fit_photo(photo, model, options, landmarks=gt)
                            row["annotation_fitted_nme"] = nme(result.fitted_2d, gt)
                rows.append(row)
            seconds.append(elapsed)
        turned = [r for r in rows if r["turned"]]
        entry = {"found": sum(r["found"] for r in rows), "faces": len(rows),
                 "turned_found": sum(r["found"] for r in turned), "turned": len(turned),
                 "refused": sum(r["refused"] is not None for r in rows),
                 "detector_nme": summarise(rows, "detector_nme"),
                 "median_s_per_photo": round(statistics.median(seconds), 3)}
        if args.fit:
            entry["fitted_nme"] = summarise(rows, "fitted_nme")
            if args.annotations:
                entry["annotation_fitted_nme"] = summarise(rows, "annotation_fitted_nme")
            entry["median_fit_s"] = round(statistics.median(fit_seconds), 2) if fit_seconds else None
        report["detectors"][name] = entry
        if not args.json:
            print(f"{name}: found {entry['found']}/{entry['faces']} (turned {entry['turned_found']}/{entry['turned']}), "
                  f"refused {entry['refused']}, detector NME % {entry['detector_nme']}, "
                  + (f"fitted NME % {entry['fitted_nme']}, " if args.fit else "")
                  + (f"annotations fitted NME % {entry['annotation_fitted_nme']}, " if args.annotations else "")
                  + f"median {entry['median_s_per_photo']} s/photo", flush=True)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
