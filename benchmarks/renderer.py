"""Renderer benchmark on a FLAME-sized mesh (not a test).

    python benchmarks/renderer.py [--device cuda] [--json] [--runs 40] [--sizes 224 256 512]
                                  [--threads N] [--cull-backfaces]

Per resolution: forward (rasterise + interpolate UV and normals + sample a 256^2 texture
+ SH shading), forward+backward (L1 loss to a target image, gradients to vertices,
texture and SH), the same with cached visibility (only barycentrics recomputed, the
fitter's usual step), a floor (one grid_sample forward+backward at the same resolution)
and the peak memory of a fresh subprocess running the full-path forward+backward.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
FLAME_EXTRACT = REPO.parent / "shared" / "models" / "flame2023_open_identity60.npz"

from flamefit.render import PinholeCamera, RasterizationSettings, render_rgb  # noqa: E402


def load_mesh():
    """FLAME topology if the test extract is present, else the open head (4470 vertices,
    8888 faces: FLAME-sized), FlameFit's default model."""
    if FLAME_EXTRACT.exists():
        data = np.load(FLAME_EXTRACT)
        return "FLAME 2023 template", data["v_template"].astype(np.float32), data["faces"].astype(np.int64)
    from flamefit.config import load_settings
    from flamefit.models.open_head import load_open_head

    model = load_open_head(load_settings().cache_dir)
    return "open head (FLAME extract not found)", model.v_template.astype(np.float32), model.faces.astype(np.int64)


def make_scene(size: int, device: str):
    """Pinhole camera 1 m in front of the face, head filling ~90% of the frame height."""
    name, verts_np, faces_np = load_mesh()
    verts = torch.tensor(verts_np, device=device)[None]
    faces = torch.tensor(faces_np, device=device)
    lo, hi = verts[0].amin(0), verts[0].amax(0)
    centre = (lo + hi) / 2
    focal = 0.9 * size / float(hi[1] - lo[1])
    camera = PinholeCamera(torch.full((1,), focal), torch.full((1, 2), size / 2.0), torch.eye(3)[None],
                           torch.tensor([[-centre[0], -centre[1], -1.0]])).to(device)
    # Cylindrical UVs per corner: enough to exercise the texture path.
    u = torch.atan2(verts[0, :, 0], verts[0, :, 2]) / (2 * math.pi) + 0.5
    v = (verts[0, :, 1] - lo[1]) / (hi[1] - lo[1])
    face_uvs = torch.stack((u, v), -1)[faces]
    gen = torch.Generator().manual_seed(0)
    scene = dict(
        camera=camera, verts=verts.clone().requires_grad_(), faces=faces, face_uvs=face_uvs,
        texture=torch.rand(1, 3, 256, 256, generator=gen).to(device).requires_grad_(),
        sh=torch.zeros(1, 9, 3).to(device),
        target=torch.rand(1, size, size, 3, generator=gen).to(device),
    )
    with torch.no_grad():
        scene["sh"][0, 0] = math.sqrt(4 * math.pi)
        scene["sh"][0, 3] = 0.5
    scene["sh"].requires_grad_()
    return name, scene


CULL_BACKFACES = False  # --cull-backfaces: what the fitter uses


def run_forward(scene, size, visibility=None):
    return render_rgb(scene["camera"], scene["verts"], scene["faces"], scene["face_uvs"], scene["texture"],
                      scene["sh"], RasterizationSettings((size, size), cull_backfaces=CULL_BACKFACES), visibility=visibility)


def run_forward_backward(scene, size, visibility=None):
    out = run_forward(scene, size, visibility)
    loss = (out.image - scene["target"]).abs().mean()
    loss.backward()
    return out


def floor_grid_sample(scene, size, grid):
    out = torch.nn.functional.grid_sample(scene["texture"], grid, padding_mode="border", align_corners=False)
    (out - scene["target"].permute(0, 3, 1, 2)).abs().mean().backward()


def interleaved_timings(fns: dict, runs: int, device: str) -> dict:
    """Milliseconds per call of each function, run round-robin so that load from other
    processes on a shared machine hits every measurement alike: {name: [times]}."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times = {name: [] for name in fns}
    for i in range(runs + 3):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= 3:  # warm-up
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


def measure(size: int, device: str, runs: int) -> dict:
    _, scene = make_scene(size, device)
    grid = (torch.rand(1, size, size, 2, device=device) * 2 - 1).requires_grad_()
    cached = run_forward(scene, size).fragments

    def forward():
        with torch.no_grad():
            run_forward(scene, size)

    times = interleaved_timings({
        "fwd": forward,
        "fwd_bwd": lambda: run_forward_backward(scene, size),
        "cached_fwd_bwd": lambda: run_forward_backward(scene, size, cached),
        "floor": lambda: floor_grid_sample(scene, size, grid),
    }, runs, device)
    row = {f"{name}_ms": statistics.median(t) for name, t in times.items()}
    row.update({f"{name}_min_ms": min(t) for name, t in times.items()})
    row["ratio"] = row["fwd_bwd_ms"] / row["floor_ms"]
    row["cached_ratio"] = row["cached_fwd_bwd_ms"] / row["floor_ms"]
    row["foreground"] = len(cached.pixel_index) / size ** 2
    return row


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_child(size: int, device: str) -> None:
    """Runs in a fresh process: peak extra memory of the full-path forward+backward over
    the memory in use once the scene is built (CPU: resident set, CUDA: allocations).
    On CPU this includes torch's one-off lazy initialisations (a few MB)."""
    _, scene = make_scene(size, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib("VmRSS")
        try:  # reset the kernel's peak-RSS counter (Linux); else fall back on ru_maxrss
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        run_forward_backward(scene, size)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        high = _rss_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = (high - base) * 1024
    print(json.dumps({"peak_mb": peak / 2 ** 20}))


def peak_memory(size: int, device: str) -> float:
    command = [sys.executable, __file__, "--peak-child", str(size), "--device", device]
    if CULL_BACKFACES:
        command.append("--cull-backfaces")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 256, 512])
    parser.add_argument("--cull-backfaces", action="store_true", help="render with back-face culling")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--peak-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CULL_BACKFACES
    CULL_BACKFACES = args.cull_backfaces
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child:
        peak_memory_child(args.peak_child, args.device)
        return

    name, scene = make_scene(args.sizes[0], args.device)
    print(f"mesh: {name}, {scene['verts'].shape[1]} verts, {scene['faces'].shape[0]} faces; "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"back-face culling {'on' if CULL_BACKFACES else 'off'}; median of {args.runs} runs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    header = f"{'size':>5} {'fg%':>5} {'fwd ms':>8} {'fwd+bwd':>8} {'cached':>8} {'floor':>7} " \
             f"{'ratio':>6} {'c.ratio':>7} {'peak MB':>8}   (min fwd+bwd / cached / floor)"
    print(header)
    results = {}
    for size in args.sizes:
        row = measure(size, args.device, args.runs if size <= 256 else max(10, args.runs // 3))
        row["peak_mb"] = peak_memory(size, args.device)
        results[str(size)] = {k: round(v, 3) for k, v in row.items()}
        print(f"{size:>5} {100 * row['foreground']:>5.1f} {row['fwd_ms']:>8.2f} {row['fwd_bwd_ms']:>8.2f} "
              f"{row['cached_fwd_bwd_ms']:>8.2f} {row['floor_ms']:>7.2f} {row['ratio']:>6.2f} "
              f"{row['cached_ratio']:>7.2f} {row['peak_mb']:>8.1f}   ({row['fwd_bwd_min_ms']:.2f} / "
              f"{row['cached_fwd_bwd_min_ms']:.2f} / {row['floor_min_ms']:.2f})")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
