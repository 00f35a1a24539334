"""`flamefit batch` on one machine and on Ray (issue #21; not a test):

    python benchmarks/batch_scale.py [--photos 16] [--fast] [--repeats 1] [--queue 200] [--json]

1. The same photos fitted four times from scratch: the local pool (`--workers` = the
   cores), Ray on this machine (`--ray`: a local runtime that the command starts, all
   cores), Ray on this machine started beforehand (`ray start --head --num-cpus 2`), and a
   two-node Ray cluster started here (`ray start --head --num-cpus 1` + `ray start
   --address ... --num-cpus 1`, app/ray_cluster.py). Photos per minute count the whole command (start-up,
   model loads, fits, writes) and also the command's own figure (from its first job);
   the Ray overhead per photo is (Ray's wall - the pool's) / photos. The two-node run
   lists the nodes its summary.csv names.
2. The driver's own cost per photo: writing one packed bundle (bundle_transfer.write_files),
   the rate a driver can take in results at.
3. Driver memory with --queue photos queued: the executor streams the photos' bytes
   (bounded tasks in flight); peak RSS of a driver sending 20 and --queue photos of ~3 MB
   each through the Ray executor (a job that only returns the bytes' length) must be flat.
4. An estimate for 70,000 photos on N nodes of C cores from the measured per-photo cost.

On a machine shared with other work, Linux's autogroup scheduling gives every session an
equal CPU share: each command runs in a session of its own, but the two-node cluster is two
sessions (one per `ray start`), so under load it gets more of the machine than one command.

Photos: skimage's astronaut (and opencv-doc's messi5.jpg) and variants of them
(benchmarks/texture_space.sample_photos). --fast fits landmarks only (~0.8 s a photo);
the default is the full fit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FAST = ["--stages", "landmarks", "--texture-size", "64"]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "backend") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("FLAMEFIT_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return {**env, **(extra or {})}


def run_batch(photos: Path, out: Path, flags: list[str], env_extra: dict | None = None) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flamefit.cli", "batch", str(photos), "-o", str(out),
                           "--json-progress", *flags], capture_output=True, text=True, env=_env(env_extra),
                          start_new_session=True)  # its own CPU share under autogroup scheduling, as a Ray node has
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch {' '.join(flags)} failed: {done.stderr.strip()[-500:]}")
    final = json.loads(done.stdout.strip().splitlines()[-1])
    with open(out / "summary.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    nodes = sorted({r["worker"].rsplit(":", 1)[0] for r in rows})
    fit = sorted(float(r["seconds"]) for r in rows if r["seconds"])
    return {"photos": len(rows), "wall_s": round(wall, 2), "photos_per_minute": round(60 * len(rows) / wall, 2),
            "command_photos_per_minute": final.get("photos_per_minute"), "workers": len({r["worker"] for r in rows}),
            "nodes": [n[:12] for n in nodes], "median_fit_s": round(fit[len(fit) // 2], 3) if fit else None}


def driver_write_seconds(bundle: Path, repeats: int = 10) -> dict:
    """Seconds to write one packed bundle (the driver's share of every photo)."""
    from flamefit.app.bundle_transfer import write_files

    files = {p.name: p.read_bytes() for p in bundle.iterdir()}
    folder = Path(tempfile.mkdtemp(prefix="ffwrite"))
    try:
        start = time.perf_counter()
        for k in range(repeats):
            write_files(files, folder / f"b{k}")
        seconds = (time.perf_counter() - start) / repeats
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"bundle_mb": round(sum(map(len, files.values())) / 2**20, 2), "write_s": round(seconds, 4),
            "writes_per_minute": round(60 / seconds, 1)}


MEMORY_PROBE = r"""
import os, resource, sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from flamefit.app.executors import ExecutorOptions
from flamefit.app.jobs import PhotoJob, read_data
from flamefit.app.ray_executor import RayExecutor

def size(job, data):
    return len(data.photo)

def rss():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    kb = lambda key: int(status.get(key, "0 kB").split()[0]) * 1024
    return kb("RssAnon"), kb("RssFile") + kb("RssShmem")

import threading, time
peak = [0, 0]
def sample():
    while True:
        anon, mapped = rss()
        peak[0], peak[1] = max(peak[0], anon), max(peak[1], mapped)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

photos = sorted(Path(sys.argv[1]).iterdir())[: int(sys.argv[2])]
jobs = (PhotoJob(photo=str(p), resolved=str(p), landmarks=None, target=p.name) for p in photos)  # a generator
total = [0]
RayExecutor(ExecutorOptions(kind="ray")).run(jobs, size, print, ("",), on_result=lambda j, v: total.__setitem__(0, total[0] + v),
                                             on_crash=lambda j, m: sys.exit(m), payload=read_data)
print(total[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, *peak)
"""


def driver_memory(count: int) -> dict:
    """Peak RSS of a driver streaming 20, count/2 and `count` photos of ~3 MB through Ray,
    split (sampled every 20 ms) into its private (anonymous) memory and the mapped files:
    libraries and the pages of Ray's shared object store it wrote the photos into (RSS
    counts those too; the store is capped and reused)."""
    import numpy as np

    folder = Path(tempfile.mkdtemp(prefix="ffqueue"))
    try:
        rng = np.random.default_rng(0)
        for k in range(count):
            (folder / f"p{k:04d}.png").write_bytes(rng.bytes(3 * 2**20))  # read as bytes only, never decoded
        peaks = []
        for n in (20, count // 2, count):
            done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(folder), str(n), str(REPO / "backend")],
                                  capture_output=True, text=True, env=_env(), timeout=900)
            if done.returncode != 0:
                raise SystemExit(f"memory probe failed: {done.stderr.strip()[-500:]}")
            sent, peak, anon, mapped = map(int, done.stdout.split()[-4:])
            peaks.append({"photos": n, "mb_sent": round(sent / 2**20), "driver_peak_rss_mb": round(peak / 2**20),
                          "peak_private_mb": round(anon / 2**20), "peak_mapped_mb": round(mapped / 2**20)})
        return {"runs": peaks, "private_growth_mb": peaks[-1]["peak_private_mb"] - peaks[0]["peak_private_mb"],
                "peak_growth_last_half_mb": peaks[-1]["driver_peak_rss_mb"] - peaks[1]["driver_peak_rss_mb"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def estimate(per_photo_s: float, write_s: float, photos: int = 70_000) -> list[dict]:
    """Hours for `photos` on N nodes of C cores: the fits spread over N x C workers, and
    never faster than one driver writes the bundles."""
    rows = []
    for nodes, cores in ((1, 2), (1, 16), (4, 16), (16, 16), (64, 16)):
        fit_h = photos * per_photo_s / (nodes * cores) / 3600
        write_h = photos * write_s / 3600
        rows.append({"nodes": nodes, "cores_per_node": cores, "hours": round(max(fit_h, write_h), 2),
                     "bound": "driver writes" if write_h > fit_h else "fitting"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--fast", action="store_true", help="landmarks only (the full fit otherwise)")
    parser.add_argument("--queue", type=int, default=200, help="photos queued for the driver-memory check")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind, interleaved; the median is shown")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from texture_space import sample_photos

    from flamefit.app.ray_cluster import LocalCluster

    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="ffscale"))
    flags = FAST if args.fast else []
    try:
        photos = work / "photos"
        photos.mkdir()
        sample_photos(photos, args.photos)
        report = {"photos": args.photos, "cores": cores, "fit": "landmarks only" if args.fast else "full"}
        tries: dict[str, list] = {"local pool": [], "ray local runtime": [], "ray 1 node started before": [],
                                  "ray 2 local nodes": []}
        for k in range(args.repeats):  # interleaved: a busy spell of a shared machine hits every kind alike
            tries["local pool"].append(run_batch(photos, work / f"pool{k}", [*flags, "--workers", str(cores)]))
            tries["ray local runtime"].append(run_batch(photos, work / f"ray{k}", [*flags, "--ray"]))
            # `ray start` beforehand: the runtime's start-up is not the command's (as on a cluster)
            with LocalCluster(nodes=1, cpus_per_node=cores) as one:
                env = {k: v for k, v in one.env.items() if k.startswith("RAY_")}
                tries["ray 1 node started before"].append(run_batch(photos, work / f"one{k}",
                                                                    [*flags, "--ray", one.address], env))
            with LocalCluster(nodes=2, cpus_per_node=max(1, cores // 2)) as two:
                env = {k: v for k, v in two.env.items() if k.startswith("RAY_")}
                tries["ray 2 local nodes"].append(run_batch(photos, work / f"cluster{k}",
                                                            [*flags, "--ray", two.address], env))
        runs = {name: {**sorted(t, key=lambda r: r["wall_s"])[len(t) // 2], "walls_s": [r["wall_s"] for r in t]}
                for name, t in tries.items()}  # the median run of each
        report["runs"] = runs
        pool = runs["local pool"]
        for name in ("ray local runtime", "ray 1 node started before", "ray 2 local nodes"):
            run = runs[name]
            run["overhead_per_photo_s"] = round((run["wall_s"] - pool["wall_s"]) / args.photos, 3)
            run["vs_pool"] = round(run["photos_per_minute"] / pool["photos_per_minute"], 3)
        report["driver_write"] = driver_write_seconds(next(p for p in (work / "pool0").iterdir() if p.is_dir()))
        report["driver_memory"] = driver_memory(args.queue)
        per_photo = 60 / pool["photos_per_minute"] * cores  # one core's seconds per photo, start-up included
        report["per_photo_core_s"] = round(per_photo, 2)
        report["estimate_70000"] = estimate(per_photo, report["driver_write"]["write_s"])
        report["rusage_children_peak_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.photos} photos, {report['fit']} fit, {cores} cores")
    print(f"{'run':26} {'wall s':>8} {'photos/min':>11} {'(command)':>10} {'vs pool':>8} {'overhead s/photo':>17}  nodes")
    for name, run in runs.items():
        print(f"{name:26} {run['wall_s']:8.1f} {run['photos_per_minute']:11.1f} {run['command_photos_per_minute']:10.1f} "
              f"{run.get('vs_pool', 1.0):8.2f} {run.get('overhead_per_photo_s', 0.0):17.3f}  {', '.join(run['nodes'])}")
    w, m = report["driver_write"], report["driver_memory"]
    print(f"driver: {w['write_s'] * 1000:.0f} ms to write a {w['bundle_mb']} MB bundle ({w['writes_per_minute']:.0f}/min)")
    for run in m["runs"]:
        print(f"driver, {run['photos']} photos ({run['mb_sent']} MB sent): peak RSS {run['driver_peak_rss_mb']} MB, "
              f"(peaks: {run['peak_private_mb']} MB private, {run['peak_mapped_mb']} MB mapped files and object store)")
    for row in report["estimate_70000"]:
        print(f"70,000 photos on {row['nodes']} x {row['cores_per_node']} cores: {row['hours']} h ({row['bound']})")


if __name__ == "__main__":
    main()
