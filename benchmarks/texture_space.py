"""Texture-space build throughput (not a test): photos per minute vs --workers.

    python benchmarks/texture_space.py [--photos DIR] [--count 8] [--configs 1x1 1x2 2x1]
                                       [--uv-resolution 256] [--pca-samples 1500] [--json]

Each config is WORKERSxTHREADS (processes x torch threads each). Every config builds a
space from scratch (fit + unwrap every photo, then the PCA) with the real fitter and the
configured head model (default: the open head); photos per minute count the fitting
phase, which is what grows with the number of photos, including the workers' start-up;
"steady" is workers / the median seconds per photo (what a long build approaches). Without --photos, the photos are
the few that packages ship (skimage's astronaut, opencv-doc's messi5.jpg when installed)
and variants of them (mirrored, re-cropped, re-exposed) up to --count.

--pca-samples N also times the final PCA alone on N random partially-seen samples at
--uv-resolution (memory: about 3 x N x res^2 x 12 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))

MESSI = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")


def sample_photos(folder: Path, count: int) -> list[Path]:
    """Bundled photos with faces, and variants of them, as PNGs in folder."""
    import cv2
    from skimage import data

    bases = [("astronaut", data.astronaut())]
    if MESSI.exists():  # the face is small: a crop around it, enlarged 3x
        messi = cv2.imread(str(MESSI))[:, :, ::-1]
        bases.append(("messi5_face", cv2.resize(np.ascontiguousarray(messi[40:200, 170:330]), None, fx=3, fy=3,
                                                interpolation=cv2.INTER_CUBIC)))
    rng = np.random.default_rng(0)
    photos = []
    for i in range(count):
        name, image = bases[i % len(bases)]
        variant = i // len(bases)
        if variant % 2 == 1:
            image = image[:, ::-1]
        if variant >= 2:  # re-crop and re-expose: a different photo for the fitter
            h, w = image.shape[:2]
            dy, dx = rng.integers(0, h // 10), rng.integers(0, w // 10)
            image = image[dy:h - h // 10 + dy, dx:w - w // 10 + dx]
            gain = rng.uniform(0.8, 1.2, 3)
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        path = folder / f"{name}_{variant}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))
        photos.append(path)
    return photos


def run_config(photos_dir: Path, out_dir: Path, workers: int, threads: int, uv_resolution: int, model) -> dict:
    import torch

    from flamefit.app.texture_space_build import build_texture_space
    from flamefit.textures.build import BuildOptions

    os.environ["FLAMEFIT_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    output = out_dir / f"space_w{workers}_t{threads}.npz"
    options = BuildOptions(components=8, workers=workers, threads_per_worker=threads, uv_resolution=uv_resolution,
                           size=uv_resolution)
    start = time.perf_counter()
    report = build_texture_space(photos_dir, output, options, model, log=lambda *a: print(*a, file=sys.stderr))
    total = time.perf_counter() - start
    per_photo = []
    for path in (report.work_dir / "unwrapped").glob("*.npz"):
        with np.load(path) as data:
            per_photo.append(json.loads(str(data["info"]))["seconds"])
    median = float(np.median(per_photo)) if per_photo else float("nan")
    return {"workers": workers, "threads": threads, "photos": report.photos, "fitted": report.fitted_now,
            "failed": len(report.failed), "fit_seconds": round(report.fit_seconds, 1),
            "photos_per_minute": round(60 * report.fitted_now / max(report.fit_seconds, 1e-9), 2),
            "median_seconds_per_photo": round(median, 2),
            "steady_photos_per_minute": round(60 * workers / median, 1),
            "pca_seconds": round(report.pca_seconds, 2), "total_seconds": round(total, 1)}


def time_pca(samples: int, resolution: int, components: int = 50) -> dict:
    from flamefit.textures import pca

    rng = np.random.default_rng(0)
    P = resolution * resolution
    X = rng.uniform(0.2, 0.8, (samples, P, 3)).astype(np.float32)
    cols = np.tile(np.linspace(-1, 1, resolution), resolution)
    W = np.clip(cols[None] * rng.uniform(-3, 3, (samples, 1)) + 1.0, 0, 1).astype(np.float32)
    start = time.perf_counter()
    result = pca.weighted_pca(X, W, components, gains="white-balance", iterations=20, tol=0)
    seconds = time.perf_counter() - start
    return {"samples": samples, "uv_resolution": resolution, "components": components, "iterations": result.iterations,
            "seconds": round(seconds, 1), "seconds_per_iteration": round(seconds / result.iterations, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: bundled photos and variants)")
    parser.add_argument("--count", type=int, default=8, help="number of generated photos (default 8)")
    parser.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"], help="WORKERSxTHREADS")
    parser.add_argument("--uv-resolution", type=int, default=256)
    parser.add_argument("--pca-samples", type=int, default=0, help="also time the PCA on N synthetic samples")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from flamefit.config import load_settings
    from flamefit.fitting import prepare_model
    from flamefit.models import load_head_model

    settings = load_settings()
    model = prepare_model(load_head_model(settings), settings.cache_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos_dir = args.photos
        if photos_dir is None:
            photos_dir = tmp / "photos"
            photos_dir.mkdir()
            sample_photos(photos_dir, args.count)
        for config in args.configs:
            workers, threads = (int(v) for v in config.lower().split("x"))
            out = tmp / f"out_{config}"
            rows.append(run_config(photos_dir, out, workers, threads, args.uv_resolution, model))
            shutil.rmtree(out, ignore_errors=True)
    pca_row = time_pca(args.pca_samples, args.uv_resolution) if args.pca_samples else None
    result = {"cpu_cores": os.cpu_count(), "head_model": model.name, "builds": rows, "pca": pca_row}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{model.name}; {os.cpu_count()} CPU cores")
    print(f"{'workers':>7} {'threads':>7} {'photos':>6} {'failed':>6} {'fit s':>7} {'photos/min':>10} "
          f"{'s/photo (median, per worker)':>28} {'steady photos/min':>17} {'PCA s':>6}")
    for r in rows:
        print(f"{r['workers']:>7} {r['threads']:>7} {r['fitted']:>6} {r['failed']:>6} {r['fit_seconds']:>7} "
              f"{r['photos_per_minute']:>10} {r['median_seconds_per_photo']:>28} {r['steady_photos_per_minute']:>17} "
              f"{r['pca_seconds']:>6}")
    if pca_row:
        print(f"PCA alone: {pca_row['samples']} samples at {pca_row['uv_resolution']}^2, K={pca_row['components']}: "
              f"{pca_row['seconds_per_iteration']} s per EM iteration")


if __name__ == "__main__":
    main()
