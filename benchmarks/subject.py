"""Several photos of one person -> one head (#19): how much do more views help?

Synthetic subjects with known identity, per-view expression, texture and light are
rendered with FlameFit's own renderer over real photo backgrounds (skimage.data images),
512 x 512, from 1, 2, 3 and 5 views, and fitted with `fit_photos` (default options):

    views  yaws (degrees)
    1      0
    2      0, +45
    3      0, +90, -90          (front + two profiles)
    5      0, +45, -45, +90, -90

Each view has its own expression, SH light and a small pitch; the fits get the true
iBUG-68 points projected (with 0.7 px noise) as --landmarks, so this measures the fit,
not the detector (no detector finds the 68 points of a 90-degree profile).

Reported per number of views (mean over the subjects):
- face_mm: mean vertex distance (mm) of the fitted neutral face (identity only) to the
  true one on the face region, after similarity alignment on that region;
- head_mm: the same over the whole head (aligned on the whole head);
- texels_seen: share of the head's skin texels (no eyeballs, teeth, mouth interior)
  whose albedo comes from real pixels (texture-stage confidence > 0.2, before the mirror
  and diffusion fills);
- seconds: CPU time of fit_photos in this process (one torch thread; model loaded once
  before). CPU time, not wall time: on a shared machine the wall time of the same fit
  varied 3x between runs; "wall" is printed beside it.

    python benchmarks/subject.py [--subjects 3] [--model FLAME.npz] [--json] [--bound]

--bound fits nothing: it prints the geometric upper bound of texels_seen per number of
views (texels_bound: the true head in the true poses, the share of its skin surface
unoccluded and facing a camera above a few cosines in at least one view, and above the
cosine where the texture stage's confidence passes SEEN_CONFIDENCE).

With --json the last line is {"face_mm": {"1": .., "2": .., "3": .., "5": ..},
"head_mm": {...}, "texels_seen": {...}, "seconds": {...}}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))

import torch  # noqa: E402

SIZE = 512
DISTANCE = 0.75  # metres from the camera to the head
VIEW_SETS = {1: (0,), 2: (0, 45), 3: (0, 90, -90), 5: (0, 45, -45, 90, -90)}
BACKGROUNDS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SEEN_CONFIDENCE = 0.2
LANDMARK_NOISE = float(os.environ.get("SUBJECT_NOISE", 0.7))  # px, per coordinate


def face_vertices(model) -> np.ndarray:
    """The face region, the same rule for every model (tests/test_fit_synthetic.py uses it
    too): the front of the template between the chin and 2 cm above the brows, as wide as
    the jaw-line landmarks (about FLAME's "face" mask without the sides of the head)."""
    from flamefit.render.shading import vertex_normals

    verts = model.v_template.astype(np.float64)
    lm = model.landmarks["ibug68"].points(verts, model.faces)
    normals = vertex_normals(torch.tensor(verts[None], dtype=torch.float32), torch.tensor(model.faces))[0].numpy()
    lo, hi = lm.min(0), lm.max(0)
    inside = (verts[:, 0] > lo[0]) & (verts[:, 0] < hi[0]) & (verts[:, 1] > lo[1]) & (verts[:, 1] < hi[1] + 0.02)
    return np.nonzero(inside & (verts[:, 2] > lo[2] - 0.01) & (normals[:, 2] > 0.2))[0]


def background(name: str, rng) -> np.ndarray:
    """A real photo from skimage.data, as SIZE x SIZE RGB uint8."""
    import cv2
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    image = image[..., :3]
    side = min(image.shape[:2])
    y0 = int(rng.integers(0, image.shape[0] - side + 1))
    x0 = int(rng.integers(0, image.shape[1] - side + 1))
    return cv2.resize(np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side]), (SIZE, SIZE),
                      interpolation=cv2.INTER_AREA)


def subject_texture(rng, size: int = 512) -> torch.Tensor:
    """(1, 3, size, size) linear albedo: a skin colour with blotches at several scales and
    fine spots, so the photometric and texture stages have detail to recover."""
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    up = lambda n, c: torch.nn.functional.interpolate(torch.rand(1, c, n, n, generator=g), size=(size, size),
                                                      mode="bicubic", align_corners=False)
    base = torch.tensor(rng.uniform([0.45, 0.28, 0.2], [0.65, 0.45, 0.36]), dtype=torch.float32).view(1, 3, 1, 1)
    tex = base * (0.8 + 0.4 * up(5, 3)) * (0.9 + 0.2 * up(24, 1)) * (0.93 + 0.14 * up(128, 1))
    return tex.clamp(0.02, 1.0)


def view_light(rng, yaw_deg: float) -> torch.Tensor:
    """(1, 9, 3) SH: a warm or cool ambient and a key light from the camera's side."""
    from flamefit.render.lighting import ambient_light_sh, directional_light_sh

    ambient = torch.tensor(rng.uniform(0.45, 0.6, (1, 3)), dtype=torch.float32)
    direction = torch.tensor([[rng.uniform(-0.6, 0.6), rng.uniform(0.1, 0.6), 1.0]], dtype=torch.float32)
    colour = torch.tensor((rng.uniform(0.35, 0.55) * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)]))[None],
                          dtype=torch.float32)
    return ambient_light_sh(ambient) + directional_light_sh(direction, colour)


def make_subject(model, seed: int, yaws, rig=None):
    """A synthetic person seen from `yaws`: (photos [Photo], landmarks [(68, 2)], truth
    dict: identity (1, S), neutral vertices (V, 3), texture, views [{expression, pose,
    translation}])."""
    from flamefit.fitting.geometry import GLOBAL, CameraFrame, HeadRig, initial_state, project
    from flamefit.image import Crop, Photo, linear_to_srgb
    from flamefit.render.rasterizer import RasterizationSettings
    from flamefit.render.shading import render_rgb

    rng = np.random.default_rng(seed)
    rig = rig or HeadRig(model, "cpu", 100, 100)
    state = initial_state(rig, 1)
    n = min(30, rig.num_identity)
    identity = torch.zeros(1, rig.num_identity)
    identity[0, :n] = torch.as_tensor(rng.normal(size=n) * 0.9, dtype=torch.float32)
    state.subject.identity[:] = identity
    texture = subject_texture(rng)
    frame = CameraFrame(SIZE, SIZE, Crop(0, 0, SIZE, SIZE))
    camera = frame.camera(None, "cpu")
    nonneg = bool(model.expression_names)
    photos, points, views = [], [], []
    for k, yaw in enumerate(yaws):
        view = state.views[0]
        view.expression.zero_()
        if rig.num_expression:
            if nonneg:
                units = rng.choice(rig.num_expression, size=4, replace=False)
                view.expression[0, units] = torch.as_tensor(rng.uniform(0.05, 0.35, size=4), dtype=torch.float32)
            else:
                view.expression[0, :10] = torch.as_tensor(rng.normal(size=10) * 0.5, dtype=torch.float32)
        view.pose.zero_()
        view.pose[0, GLOBAL] = torch.tensor([math.radians(rng.uniform(-6, 6)), math.radians(yaw + rng.uniform(-3, 3)),
                                             math.radians(rng.uniform(-3, 3))])
        view.translation.zero_()
        with torch.no_grad():
            verts = rig.vertices(state)
            centre = rig.landmarks(verts, view.pose)[0].mean(0)
            view.translation[0] = torch.tensor([0.0, 0.01, -DISTANCE]) - centre
            verts = rig.vertices(state)
            lmk = project(camera, rig.landmarks(verts, view.pose))[0].double().numpy()
            rendering = render_rgb(camera, verts, rig.faces, rig.face_uvs, texture, view_light(rng, yaw),
                                   RasterizationSettings((SIZE, SIZE), cull_backfaces=True))
        head = rendering.image[0].clamp(0, 1).numpy()
        mask = rendering.fragments.mask[0].numpy()[..., None].astype(np.float32)
        back = background(BACKGROUNDS[(seed + k) % len(BACKGROUNDS)], rng).astype(np.float32) / 255.0
        rgb = np.clip(np.round((linear_to_srgb(head) * mask + back * (1 - mask)) * 255), 0, 255).astype(np.uint8)
        photos.append(Photo(Path(f"subject{seed}_yaw{yaw:+d}.png"), rgb))
        views.append({name: getattr(view, name).detach().clone() for name in ("expression", "pose", "translation")})
        points.append(lmk + rng.normal(scale=LANDMARK_NOISE, size=lmk.shape))
    with torch.no_grad():
        zero = torch.zeros(1, rig.num_expression)
        neutral = rig.layer(identity, zero, torch.zeros_like(state.views[0].pose), torch.zeros(1, 3)).vertices[0]
    return photos, points, {"identity": identity, "neutral": neutral.double().numpy(), "texture": texture, "views": views}


def neutral_vertices(result) -> np.ndarray:
    """The fitted identity's neutral head (no expression, no pose), (V, 3)."""
    from flamefit.fitting.geometry import neutral_head

    return neutral_head(result.model, result.identity)


def aligned_error_mm(fitted: np.ndarray, truth: np.ndarray, index=None) -> float:
    from flamefit.fitting.metrics import similarity_align

    a, b = (fitted, truth) if index is None else (fitted[index], truth[index])
    return float(np.linalg.norm(similarity_align(a, b) - b, axis=1).mean() * 1000)


def skin_surface(model, size: int):
    """The head's skin texels (the UV map's texels less eyeballs, teeth, mouth interior and
    overlapping charts: textures.uv_masks.uv_skin_prior) of a size x size map: their flat
    indices (M,) and the surface area each covers (M,: mesh area / UV area of its triangle)."""
    from flamefit.render.uv_raster import texel_map
    from flamefit.textures.uv_masks import uv_skin_prior

    texels = texel_map(model, size, "cpu")
    index = texels.texel_index.numpy()
    skin = uv_skin_prior(model, size).reshape(-1)[index] > 0.5
    corners = np.asarray(model.v_template, np.float64)[np.asarray(model.faces)]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    uv = np.asarray(model.uv_coords, np.float64)[np.asarray(model.uv_faces)]
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return index[skin], (area / np.maximum(uv_area, 1e-12))[texels.face.numpy()][skin]


def texels_seen(result) -> float:
    """Share of the head's skin surface (skin_surface) seen in a photo, each texel weighted
    by the surface area it covers, so the figure does not depend on how much texture a
    layout gives the face."""
    index, per_texel = skin_surface(result.model, result.seen.shape[0])
    seen = result.seen.reshape(-1)[index] > SEEN_CONFIDENCE
    return float((per_texel * seen).sum() / per_texel.sum())


def texels_bound(model, truth, yaws, min_cosines, size: int = 1024) -> dict:
    """The geometric upper bound of texels_seen for a subject seen from `yaws`: the share
    of the skin surface (same weighting) whose point, on the TRUE head in each view's true
    pose, is inside the photo, unoccluded and faces the camera at a cosine above each of
    `min_cosines` in at least one view -> {min_cosine: share}."""
    from flamefit.fitting.geometry import CameraFrame, HeadRig, initial_state
    from flamefit.image import Crop
    from flamefit.render.rasterizer import RasterizationSettings, rasterize_mesh
    from flamefit.render.shading import vertex_normals
    from flamefit.render.uv_raster import texel_map, texel_visibility

    rig = HeadRig(model, "cpu", 100, 100)
    state = initial_state(rig, 1)
    state.subject.identity[:] = truth["identity"]
    R = 2 * SIZE  # the z-buffer finer than the photo
    camera = CameraFrame(SIZE, SIZE, Crop(0, 0, SIZE, SIZE)).camera(R, "cpu")
    texels = texel_map(model, size, "cpu")
    index, per_texel = skin_surface(model, size)
    position = np.full(size * size, -1)
    position[texels.texel_index.numpy()] = np.arange(len(texels.texel_index))
    rows = position[index]  # the skin texels in the texel list
    best = np.full(len(index), -1.0)
    for k in range(len(yaws)):
        view = state.views[0]
        for name in ("expression", "pose", "translation"):
            getattr(view, name)[:] = truth["views"][k][name]
        with torch.no_grad():
            verts = rig.vertices(state)
            points = texels.points(verts, rig.faces)[rows]
            normals = torch.nn.functional.normalize(texels.points(vertex_normals(verts, rig.faces), rig.faces)[rows], dim=-1)
            screen = camera.transform_points(points[None])[0]
            frags = rasterize_mesh(camera, verts, rig.faces, RasterizationSettings((R, R), cull_backfaces=True))
            visible = texel_visibility(screen[None], frags, (0.004 + 0.002 * screen[:, 2])[None])[0].numpy()
            cosine = (normals * torch.nn.functional.normalize(-points, dim=-1)).sum(-1).numpy()
        best = np.maximum(best, np.where(visible, cosine, -1.0))
    return {c: float((per_texel * (best > c)).sum() / per_texel.sum()) for c in min_cosines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--views", default="1,2,3,5", help="view counts to run (of 1, 2, 3, 5)")
    parser.add_argument("--model", help="FLAME model file (default: the configured model, else the open head)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bound", action="store_true",
                        help="no fits: the geometric upper bound of texels seen (texels_bound) per number of views")
    args = parser.parse_args()
    os.environ.setdefault("FLAMEFIT_THREADS", "1")
    from flamefit.app.session import configure_threads, load_model, settings_from
    from flamefit.fitting import FitOptions, fit_photos

    configure_threads()
    model = load_model(settings_from({"flame_model": args.model}))
    face = face_vertices(model)
    counts = [int(c) for c in args.views.split(",")]
    if args.bound:
        return print_bound(model, counts, args)
    rows = {c: [] for c in counts}
    for seed in range(args.subjects):
        for count in counts:
            photos, points, truth = make_subject(model, seed, VIEW_SETS[count])
            start, wall = time.process_time(), time.perf_counter()
            result = fit_photos(photos, model, FitOptions(), landmarks=points)
            seconds, wall = time.process_time() - start, time.perf_counter() - wall
            fitted = neutral_vertices(result)
            row = {"face_mm": aligned_error_mm(fitted, truth["neutral"], face),
                   "head_mm": aligned_error_mm(fitted, truth["neutral"]), "texels_seen": texels_seen(result),
                   "seconds": seconds}
            rows[count].append(row)
            if not args.json:
                print(f"subject {seed} views {count}: face {row['face_mm']:.2f} mm, head {row['head_mm']:.2f} mm, "
                      f"texels seen {100 * row['texels_seen']:.1f}%, {seconds:.1f} s CPU ({wall:.1f} s wall)",
                      flush=True)
    summary = {key: {str(c): round(float(np.mean([r[key] for r in rows[c]])), 4) for c in counts}
               for key in ("face_mm", "head_mm", "texels_seen", "seconds")}
    if not args.json:
        print(f"\n{model.name}, {args.subjects} subjects, mean per number of views")
        print(f"{'views':>5} {'face mm':>8} {'head mm':>8} {'seen %':>7} {'s':>6}")
        for c in counts:
            print(f"{c:>5} {summary['face_mm'][str(c)]:8.2f} {summary['head_mm'][str(c)]:8.2f} "
                  f"{100 * summary['texels_seen'][str(c)]:7.1f} {summary['seconds'][str(c)]:6.1f}")
    print(json.dumps(summary))
    return 0


def print_bound(model, counts, args) -> int:
    """texels_bound per number of views, mean over the subjects: at cosines 0, 0.1, 0.2, 0.3
    and at the texture stage's own rule (its viewing-angle ramp reaches SEEN_CONFIDENCE)."""
    from flamefit.fitting import FitOptions

    lo = FitOptions().texture_min_cosine
    rule = lo * (1 + 1.5 * SEEN_CONFIDENCE)  # unwrap_view: (cos - lo) / (1.5 lo) > SEEN_CONFIDENCE
    cosines = (0.0, 0.1, 0.2, 0.3, round(rule, 4))
    shares = {c: [] for c in counts}
    for seed in range(args.subjects):
        for count in counts:
            _, _, truth = make_subject(model, seed, VIEW_SETS[count])
            shares[count].append(texels_bound(model, truth, VIEW_SETS[count], cosines))
    summary = {f"cos>{c}": {str(n): round(float(np.mean([s[c] for s in shares[n]])), 4) for n in counts}
               for c in cosines}
    if not args.json:
        print(f"{model.name}, {args.subjects} subjects: skin surface unoccluded and facing a camera in at least "
              f"one view (true geometry), % (cos > {rule:.3f}: the texture stage's confidence > {SEEN_CONFIDENCE})")
        print(f"{'views':>5} " + " ".join(f"{'cos>' + str(c):>10}" for c in cosines))
        for n in counts:
            print(f"{n:>5} " + " ".join(f"{100 * summary['cos>' + str(c)][str(n)]:10.1f}" for c in cosines))
    print(json.dumps({"texels_bound": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
