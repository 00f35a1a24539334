"""Time `flamefit fit` end to end on a 512-px photo (skimage's astronaut by default).

Each run is a fresh `python -m flamefit.cli fit` process with the default settings (the
configured head model, all stages, 1024^2 texture), as a user would run it. Reported:
the median wall time of the command (process start to exit, model loading included),
the median CPU time of that process (user + system: steadier than wall time when other
work shares the cores) and, per stage, the median of the timings in result.json.

    python benchmarks/fit.py                  # 5 runs, table
    python benchmarks/fit.py --runs 3 --json  # last line: {"median_s": ..., "stages": {...}, ...}
    python benchmarks/fit.py --device cuda
    python benchmarks/fit.py --backend /tmp/old/backend  # time another checkout's backend
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def astronaut(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--photo", help="photo to fit (default: skimage's astronaut, 512x512)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="FLAME model file (default: the configured model, else the open head)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--backend", default=str(REPO / "backend"), help="the backend folder to time")
    args = parser.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(args.backend).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    work = Path(tempfile.mkdtemp(prefix="flamefit-bench-"))
    try:
        photo = Path(args.photo) if args.photo else astronaut(work)
        extra = ["--model", args.model] if args.model else []
        # One untimed run builds caches (open head, landmark embedding) as a first use would.
        warm = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", str(photo), "-o", str(work / "warm"),
                               "--device", args.device, *extra], env=env, capture_output=True, text=True)
        if warm.returncode != 0:
            print(warm.stderr.strip().splitlines()[-1] if warm.stderr.strip() else "fit failed", file=sys.stderr)
            return 1
        walls, cpus, timings = [], [], []
        for run in range(args.runs):
            out = work / f"run{run}"
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "flamefit.cli", "fit", str(photo), "-o", str(out),
                                   "--device", args.device, *extra], env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            result = json.loads((out / "result.json").read_text())
            timings.append(result["timings"])
            device = result["fit"]["device"]
            if not args.json:
                print(f"run {run + 1}: {walls[-1]:.2f} s wall, {result['timings']['total']:.2f} s in result.json", flush=True)
        stages = {key: round(statistics.median(t[key] for t in timings), 3) for key in timings[0]}
        report = {"median_s": round(statistics.median(walls), 3), "median_cpu_s": round(statistics.median(cpus), 3),
                  "runs": args.runs, "device": device,
                  "photo": str(photo), "wall_s": [round(w, 3) for w in walls], "stages": stages,
                  "metrics": result["metrics"], "model": result["model"]["name"]}
        if args.json:
            print(json.dumps(report))
        else:
            print(f"\n{report['model']} on {device}, {args.runs} runs, median wall {report['median_s']:.2f} s, "
                  f"CPU {report['median_cpu_s']:.2f} s")
            print(f"{'stage':12s} median s")
            for key, value in stages.items():
                print(f"{key:12s} {value:8.3f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
