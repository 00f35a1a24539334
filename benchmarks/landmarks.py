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

--set aflw: the AFLW2000-3D dev set (../shared/aflw2000_dev/, 450 photos, 150 per |yaw|
band 0-30 / 30-60 / 60+; research use only, read its NOTICE.md), scored as the literature
does: NME = mean point error / sqrt(w * h) of the annotated 68-point box, for all 68
points and the inner 51 (17-67), per band. Each photo goes through the product's own
path (the default detector and subject choice, `find_landmarks`; with --fit, `fit_photo`
stages image..shape); a face counts as found when the chosen detection's box matches the
annotated face (the AFW rule above). Rows: FlameFit's detector points, its fitted points
in the fixed convention (`landmarks_2d_fixed`: the set's jaw line follows the 3D
surface) and, for reference, in the outline one (`landmarks_2d`), and the two peers
stored with the set (3DDFA_V2, MediaPipe; NaN = not found), each on all the faces it
found; then FlameFit beside each peer on the faces both found. --degraded also runs
each photo downscaled to 40-50 px between the outer eye corners (the 3D-fit distance,
which a turned head does not shorten) and greyscale, and gives its error / the
full-resolution one on the faces found in both.

    python benchmarks/landmarks.py --set aflw --every 3            # 150 photos, detector only
    python benchmarks/landmarks.py --set aflw --every 3 --fit      # and the fits
    python benchmarks/landmarks.py --set aflw --every 3 --start 1 --fit  # a tuning third
    python benchmarks/landmarks.py --set aflw --every 9 --fit --degraded --json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
DATA = REPO.parent / "shared" / "faces300w_afw"
AFLW_DATA = REPO.parent / "shared" / "aflw2000_dev"
TURNED_OFFSET = 0.25
BANDS = ((0, 30), (30, 60), (60, 91))
DEGRADED_EYE_PX = (40.0, 50.0)


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
    parser.add_argument("--set", choices=("afw", "aflw"), default="afw", help="which annotated photos")
    parser.add_argument("--data", type=Path, help=f"the set's folder (default {DATA} or {AFLW_DATA})")
    parser.add_argument("--detectors", default="retinaface,dlib", help="comma-separated names from DETECTORS")
    parser.add_argument("--limit", type=int, help="first N photos only (AFW: sorted by name; AFLW: after --every)")
    parser.add_argument("--every", type=int, default=1, help="aflw: every Nth photo (3: 50 per band)")
    parser.add_argument("--start", type=int, default=0,
                        help="aflw: from this photo on (with --every 3: 0 = the scored third, 1 and 2 = the tuning thirds)")
    parser.add_argument("--degraded", action="store_true",
                        help="aflw: also run each photo at 40-50 px between the eye corners, greyscale")
    parser.add_argument("--fit", action="store_true", help="also fit each found face (stages image..shape)")
    parser.add_argument("--annotations", action="store_true",
                        help="with --fit: also fit the hand-annotated points (the model's floor)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args()
    if args.set == "aflw":
        args.data = args.data or AFLW_DATA
        return run_aflw(args)
    args.data = args.data or DATA
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


def near_far_jaw(gt):
    """(near, far) jaw-line halves (chin excluded) of annotated points: the near half, on the
    cheek turned toward the camera, lies farther from the nose tip across the image."""
    sides = (list(range(0, 8)), list(range(9, 17)))
    reach = [float(np.abs(gt[side, 0] - gt[30, 0]).mean()) for side in sides]
    return sides if reach[0] >= reach[1] else sides[::-1]


def aflw_nme(points, gt):
    """(NME68, inner-51 NME, the inner points' mean (dx, dy) in pixels, (near, far) jaw-half
    NME): NMEs as fractions, mean point error / sqrt(w * h) of the annotated 68-point box;
    Nones when `points` is None or has a NaN (not found)."""
    if points is None or not np.isfinite(points).all():
        return None, None, None, None
    err = np.linalg.norm(points - gt, axis=1)
    x0, y0, x1, y1 = box_of(gt)
    size = np.sqrt((x1 - x0) * (y1 - y0))
    near, far = near_far_jaw(gt)
    return (float(err.mean() / size), float(err[17:].mean() / size), [round(float(v), 2) for v in (points - gt)[17:].mean(0)],
            (float(err[near].mean() / size), float(err[far].mean() / size)))


def band_of(yaw: float) -> str:
    yaw = min(abs(yaw), 90.0)  # three annotated yaws lie past 90 (-95.5, -117.6, -351.2): the set counts them 60+
    return next(f"{lo}-{hi}" if hi <= 90 else f"{lo}+" for lo, hi in BANDS if lo <= yaw < hi)


def degrade(rgb, eye_3d: float, rng):
    """(greyscale copy at 40-50 px between the outer eye corners, its scale)."""
    import cv2

    scale = min(1.0, rng.uniform(*DEGRADED_EYE_PX) / eye_3d)
    H, W = rgb.shape[:2]
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)), (size[0] / W, size[1] / H)


def flamefit_points(photo, model, options, gt):
    """FlameFit on one photo: {"found", "error", "detector", "fitted", "outline", "seconds"}
    (points in the photo's pixels, None where not reached)."""
    from flamefit.errors import FlameFitError
    from flamefit.fitting import fit_photo
    from flamefit.fitting.inputs import find_landmarks

    out = {"found": False, "error": None, "detector": None, "fitted": None, "outline": None, "yaw": None}
    start = time.perf_counter()
    try:
        if options is None:
            points, detection = find_landmarks(photo)
        else:
            result = fit_photo(photo, model, options)
            points, detection = result.detected_2d, result.detection
            out["fitted"], out["outline"] = result.fitted_2d_fixed, result.fitted_2d
            out["yaw"] = result.views[0].yaw_degrees
        if match([SimpleNamespace(box=detection["box"])], box_of(gt)) is not None:
            out["found"], out["detector"] = True, points
        else:
            out["error"] = "another face"
            out["fitted"] = out["outline"] = None
    except FlameFitError as error:
        kind = str(error).replace(f"{photo.path.name}: ", "").replace(f" in {photo.path.name}", "")
        out["error"] = re.split(r"[:;(]", kind)[0].strip()  # what kind of failure, without the details
    out["seconds"] = time.perf_counter() - start
    return out


def percent(values):
    return round(100 * float(np.mean(values)), 2) if values else None


def band_table(rows, systems):
    """{band: {system: {"found", "of", "nme68", "inner51", "offset_px"}}}: each system on all
    the faces it found; offset_px: the inner points' mean (dx, dy) from the annotation (a
    convention or annotation bias shows here)."""
    table = {}
    for band in dict.fromkeys(r["band"] for r in rows):
        in_band = [r for r in rows if r["band"] == band]
        table[band] = {}
        for system in systems:
            scored = [r[system] for r in in_band if r[system][0] is not None]
            table[band][system] = {"found": len(scored), "of": len(in_band), "nme68": percent([s[0] for s in scored]),
                                   "inner51": percent([s[1] for s in scored]),
                                   "offset_px": [round(float(v), 2) for v in np.mean([s[2] for s in scored], 0)] if scored else None}
    return table


def side_by_side(rows, ours, theirs):
    """{band: {"n", ours: (nme68, inner51), theirs: (...), "jaw near / far": {ours: (near, far),
    theirs: ...}}} on the faces both found (%): where the error is (the jaw half on the cheek
    turned toward the camera, and the one turned away)."""
    table = {}
    for band in dict.fromkeys(r["band"] for r in rows):
        both = [r for r in rows if r["band"] == band and r[ours][0] is not None and r[theirs][0] is not None]
        table[band] = {"n": len(both), **{key: (percent([r[key][0] for r in both]), percent([r[key][1] for r in both]))
                                          for key in (ours, theirs)},
                       "jaw near / far": {key: (percent([r[key][3][0] for r in both]), percent([r[key][3][1] for r in both]))
                                          for key in (ours, theirs)}}
    return table


def yaw_gaps(rows):
    """{band: mean fitted |yaw| - annotated |yaw|, degrees} over the fitted faces: a fit short
    of a turned head's yaw shows here."""
    gaps = {}
    for band in dict.fromkeys(r["band"] for r in rows):
        values = [abs(r["fitted yaw"]) - abs(r["yaw"]) for r in rows if r["band"] == band and r.get("fitted yaw") is not None]
        gaps[band] = round(float(np.mean(values)), 1) if values else None
    return gaps


def run_aflw(args) -> int:
    if not (args.data / "annotations.npz").is_file():
        print(f"benchmark data not found: {args.data}/annotations.npz", file=sys.stderr)
        return 2
    import torch

    from flamefit.image import Photo, load_photo

    torch.set_num_threads(1)
    data = np.load(args.data / "annotations.npz")
    picked = np.arange(len(data["names"]))[args.start::args.every][:args.limit]
    model = options = None
    if args.fit:
        from flamefit.config import load_settings
        from flamefit.fitting import FitOptions, prepare_model
        from flamefit.models import load_head_model

        settings = load_settings({})
        model = prepare_model(load_head_model(settings), settings.cache_dir)
        options = FitOptions(stages=("landmarks",))
    # The set's points are integer pixel indices: +0.5 puts them (and the peers stored
    # beside them) in FlameFit's convention, where a pixel's centre is at +0.5.
    truth = data["landmarks_2d"].astype(np.float64) + 0.5
    peers = {"3ddfa_v2": data["peer_3ddfa_v2"].astype(np.float64) + 0.5,
             "mediapipe": data["peer_mediapipe"].astype(np.float64) + 0.5}
    variants = ("full", "degraded") if args.degraded else ("full",)
    rows, seconds, errors = [], {v: [] for v in variants}, {v: {} for v in variants}
    rng = np.random.default_rng(0)
    for i in picked:
        name, gt = str(data["names"][i]), truth[i]
        row = {"photo": name, "yaw": round(float(data["pose_deg"][i, 1]), 1),
               "band": band_of(float(data["pose_deg"][i, 1]))}
        for peer, points in peers.items():
            row[peer] = aflw_nme(points[i], gt)
        photo = load_photo(args.data / "images" / f"{name}.jpg")
        for variant in variants:
            scale = (1.0, 1.0)
            if variant == "degraded":
                fit3d = data["landmarks_3dfit"][i]
                rgb, scale = degrade(photo.rgb, float(np.linalg.norm(fit3d[36] - fit3d[45])), rng)
                photo_v = Photo(path=photo.path, rgb=rgb)
            else:
                photo_v = photo
            gt_v = gt * scale  # continuous pixel coordinates scale about the image corner
            out = flamefit_points(photo_v, model, options, gt_v)
            seconds[variant].append(out["seconds"])
            if out["error"]:
                errors[variant][out["error"]] = errors[variant].get(out["error"], 0) + 1
            suffix = "" if variant == "full" else " degraded"
            row["flamefit detector" + suffix] = aflw_nme(out["detector"], gt_v)
            if args.fit:
                row["flamefit fitted" + suffix] = aflw_nme(out["fitted"], gt_v)
                row["flamefit fitted outline" + suffix] = aflw_nme(out["outline"], gt_v)
                if variant == "full" and out["fitted"] is not None:
                    row["fitted yaw"] = round(out["yaw"], 1)  # the set's yaw has the opposite sign
        rows.append(row)
        if not args.json:
            print(f"{name} yaw {row['yaw']:6.1f}: " + ", ".join(
                f"{k} {100 * v[0]:.2f}" for k, v in row.items() if isinstance(v, tuple) and v[0] is not None), flush=True)
    ours = "flamefit fitted" if args.fit else "flamefit detector"
    systems = ["flamefit detector"] + (["flamefit fitted", "flamefit fitted outline"] if args.fit else []) + list(peers)
    report = {"data": str(args.data), "set": "aflw", "photos": len(rows), "every": args.every, "start": args.start,
              "metric": "mean point error / sqrt(w*h) of the annotated 68-point box, %",
              "bands": band_table(rows, systems),
              "both_found": {peer: side_by_side(rows, ours, peer) for peer in peers},
              "flamefit_failures": errors,
              **({"fitted_yaw_gap_deg": yaw_gaps(rows)} if args.fit else {}),
              "median_s_per_photo": {v: round(statistics.median(seconds[v]), 3) for v in variants}}
    if args.degraded:
        report["degraded"] = band_table(rows, [s + " degraded" for s in systems if s.startswith("flamefit")])
        report["degraded_vs_full"] = {s: side_by_side(rows, s, s + " degraded") for s in systems if s.startswith("flamefit")}
    if args.json:
        report["rows"] = rows
        print(json.dumps(report))
    else:
        print_aflw(report)
    return 0


def print_aflw(report) -> None:
    bands = list(report["bands"])
    cells = lambda table, system, key: " / ".join(str(table[b][system][key]) for b in bands)
    print(f"\nAFLW2000-3D dev, {report['photos']} photos, NME % ({report['metric']})")
    print(f"| system | found {' / '.join(bands)} | NME68 | inner 51 | inner offset px |\n| --- | --- | --- | --- | --- |")
    for system in report["bands"][bands[0]]:
        print(f"| {system} | {cells(report['bands'], system, 'found')} of "
              f"{' / '.join(str(report['bands'][b][system]['of']) for b in bands)} | "
              f"{cells(report['bands'], system, 'nme68')} | {cells(report['bands'], system, 'inner51')} | "
              f"{cells(report['bands'], system, 'offset_px')} |")
    for peer, table in report["both_found"].items():
        ours = next(k for k in table[bands[0]] if k not in ("n", peer))
        print(f"on the faces both found ({' / '.join(str(table[b]['n']) for b in bands)}): NME68 {ours} "
              f"{' / '.join(str(table[b][ours][0]) for b in bands)} vs {peer} {' / '.join(str(table[b][peer][0]) for b in bands)}; "
              f"inner 51 {' / '.join(str(table[b][ours][1]) for b in bands)} vs {' / '.join(str(table[b][peer][1]) for b in bands)}; "
              f"jaw half near / far: " + " vs ".join(" / ".join("({}, {})".format(*table[b]["jaw near / far"][key]) for b in bands)
                                                    for key in (ours, peer)))
    if report.get("fitted_yaw_gap_deg"):
        print(f"fitted |yaw| - annotated |yaw| (degrees): {' / '.join(str(report['fitted_yaw_gap_deg'][b]) for b in bands)}")
    for system, table in report.get("degraded_vs_full", {}).items():
        print(f"{system} degraded vs full on the faces found in both ({' / '.join(str(table[b]['n']) for b in bands)}): "
              f"NME68 {' / '.join(str(table[b][system + ' degraded'][0]) for b in bands)} vs "
              f"{' / '.join(str(table[b][system][0]) for b in bands)}")
    print(f"FlameFit failures: {report['flamefit_failures']}; median s/photo {report['median_s_per_photo']}")


if __name__ == "__main__":
    sys.exit(main())
