"""A head you can orbit and relight (#20): the fitted light's colour, the albedo, the face's
share of the texture, seams, and the back of the head against the cheeks.

Synthetic (known truth): the open head with a known albedo (benchmarks/subject.py's skin,
plus white eyeballs so the photo has eye whites, as a real one does) rendered with
FlameFit's own renderer under a known SH light over a real photo (skimage.data), 512 x 512,
front view, fitted with the default options and the true iBUG-68 points (0.7 px noise):

    white    grey ambient + a grey key from the camera's side
    warm     the same x (1.12, 1.00, 0.86)   (chroma: RGB / mean)
    cool     the same x (0.88, 0.98, 1.14)
    side     grey ambient + an orange key from the side (80 degrees off the view)
    shadow   a grey key from the same side, 4x the ambient: the far cheek in deep shade

Reported: the light's chroma error (max over channels of |fitted DC chroma / true - 1|, %)
and the face albedo's ΔE2000 (skimage.color.deltaE_ciede2000) against the truth: of the
face's mean colour (inside the jaw line and brows; the fitted albedo scaled by one gain
first: albedo x light's brightness is all a photo shows), the median per texel, and of
the worse cheek's median colour (the cheek discs below; shade the light does not explain
stays in that cheek's albedo).

Real photos (default options, the landmark detector): skimage's astronaut, OpenCV's
messi5.jpg enlarged 2x (Lanczos), and every Nth AFW photo of ../shared/faces300w_afw (beside the checkout)
when present. Reported per photo:
- chroma: the fitted light's DC chroma, max |channel / mean - 1|;
- imported: the same for what the Blender add-on makes of the light (its world colour and
  suns: blender_flamefit/io/sh_math.py's fit_lights on the head's normals seen from the
  camera, the face weighted up, as blender/views.fit_view_rig does), the worst of them;
- face %: share of the texels inside the jaw line and brows (textures.uv_masks.uv_face_outline);
- seam: median and 90th percentile of the colour step across UV chart borders (max channel
  |difference| of the sRGB albedo between a border texel and the nearest texel of another
  chart within 2 mm on the surface: textures.seams.seam_pairs);
- back / sides ΔE: ΔE2000 of the albedo's median colour on the back of the head and on the
  sides (above the jaw) against the cheeks' (what a white light shows); "filled b/s": the
  same over the texels that hold the fill only (the photo's weight < 0.05), the fill's own
  colour: where the photo showed hair on the scalp it stays (texture_mask.py), and the
  first measure counts it;
- PSNR of the front view (the fit's own metric) and the fit's CPU seconds.

    python benchmarks/appearance.py [--afw-every 25] [--json]

With --json the last line is {"synthetic": {name: {...}}, "photos": {name: {...}}, "targets": {...}}.
A measure the backend in use lacks (an older checkout: no seams, no face outline) is null.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
sys.path.insert(0, str(REPO / "benchmarks"))

import subject  # noqa: E402  (make_subject, background, ...: the synthetic subjects' pieces)
import torch  # noqa: E402

AFW = REPO.parent / "shared" / "faces300w_afw"
MESSI = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
FACE_EMPHASIS = 4.0  # blender_flamefit/blender/lights.FACE_EMPHASIS (that module needs bpy)
SCLERA = np.array([0.75, 0.68, 0.64])  # a lit eye white's albedo, slightly yellowish like a real one
LIGHTS = {  # name: (key direction toward the light, camera frame: +z to the camera; key chroma; tint of all;
    #                 the ambient's share of the light, the key's is the rest)
    "white": ((0.3, 0.35, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0.55),
    "warm": ((0.3, 0.35, 1.0), (1.0, 1.0, 1.0), (1.12, 1.0, 0.86), 0.55),
    "cool": ((0.3, 0.35, 1.0), (1.0, 1.0, 1.0), (0.88, 0.98, 1.14), 0.55),
    "side": ((0.98, 0.1, 0.17), (1.25, 0.95, 0.8), (1.0, 1.0, 1.0), 0.55),
    "shadow": ((0.98, 0.1, 0.17), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0.2),  # one cheek in deep shade
}
TARGETS = {"synthetic_chroma_pct": 5.0, "synthetic_delta_e": 5.0, "astronaut_imported": 0.10,
           "back_sides_delta_e": 5.0, "face_share": 0.25, "psnr_drop_db": 0.3}


def chroma(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.float64)
    return rgb / max(float(rgb.mean()), 1e-9)


def dc_chroma(sh) -> np.ndarray:
    """The ambient colour's chroma of an SH light (a tensor or a fit's (9, 3) array)."""
    sh = sh.detach().cpu() if torch.is_tensor(sh) else sh
    return chroma(np.asarray(sh, np.float64).reshape(-1, 9, 3)[0, 0])


def known_light(name: str) -> torch.Tensor:
    from flamefit.render.lighting import ambient_light_sh, directional_light_sh

    direction, key, tint, share = LIGHTS[name]
    tint = np.asarray(tint) / np.mean(tint)
    ambient = torch.tensor((share * tint)[None], dtype=torch.float32)
    colour = torch.tensor(((1 - share) * np.asarray(key) * tint)[None], dtype=torch.float32)
    return ambient_light_sh(ambient) + directional_light_sh(torch.tensor([direction], dtype=torch.float32), colour)


def with_eye_whites(model, texture: torch.Tensor) -> torch.Tensor:
    """The subject's albedo with the eyeballs' texels painted sclera white."""
    import cv2

    size = texture.shape[-1]
    eye = np.zeros(model.num_vertices, bool)
    for name, idx in model.regions.items():
        if name.startswith("eyeball"):
            eye[np.asarray(idx)] = True
    faces = eye[np.asarray(model.faces)].all(1)
    corners = np.asarray(model.uv_coords, np.float64)[np.asarray(model.uv_faces)[faces]]
    pixels = np.stack([corners[..., 0] * size - 0.5, (1 - corners[..., 1]) * size - 0.5], -1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, list(np.round(pixels * 16).astype(np.int32)), 1, shift=4)
    mask = torch.from_numpy(mask > 0)
    out = texture.clone()
    out[0, :, mask] = torch.tensor(SCLERA, dtype=torch.float32)[:, None]
    return out


def surface_points(model, size: int):
    """Per covered texel: flat index, surface point, unit normal on the template, triangle."""
    from flamefit.render.uv_raster import texel_map

    texels = texel_map(model, size, "cpu")
    corners = np.asarray(model.v_template, np.float64)[np.asarray(model.faces)[texels.face.numpy()]]
    points = (corners * texels.bary.numpy()[:, :, None]).sum(1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return texels.texel_index.numpy(), points, normals, texels.face.numpy()


def face_outline(model, size: int) -> np.ndarray | None:
    try:
        from flamefit.textures.uv_masks import uv_face_outline
    except ImportError:  # an older backend
        return None
    return uv_face_outline(model, size)


def regions(model, size: int) -> dict:
    """Flat texel indices of the cheeks, the back of the head and its sides (skin only, no ears)."""
    from flamefit.textures.uv_masks import uv_skin_prior

    index, points, normals, face = surface_points(model, size)
    ears = np.zeros(model.num_vertices, bool)
    ears[np.asarray(getattr(model, "regions", {}).get("ears", []), int)] = True
    skin = (uv_skin_prior(model, size).reshape(-1)[index] > 0.5) & ~ears[np.asarray(model.faces)[face]].any(1)
    lm = model.landmarks["ibug68"].points(model.v_template, model.faces)
    chin, brow = lm[8, 1], lm[17:27, 1].mean()
    cheeks = np.zeros(len(index), bool)
    for jaw, nose in ((3, 31), (13, 35)):
        centre = 0.5 * (lm[jaw] + lm[nose])
        cheeks |= np.linalg.norm(points[:, :2] - centre[:2], axis=1) < 0.012  # seen from the front
    above_jaw = (points[:, 1] > lm[2, 1]) & (points[:, 1] < brow + 0.05)
    back = (normals[:, 2] < -0.6) & (points[:, 1] > chin) & skin
    sides = (np.abs(normals[:, 0]) > 0.8) & (points[:, 2] < lm[:, 2].min() - 0.02) & above_jaw & skin
    return {"cheeks": index[cheeks & (normals[:, 2] > 0.3) & (points[:, 2] > 0) & skin], "back": index[back], "sides": index[sides]}


def srgb(linear: np.ndarray) -> np.ndarray:
    from flamefit.image import linear_to_srgb

    return np.clip(linear_to_srgb(np.clip(linear, 0, 1)), 0, 1)


def delta_e(a_srgb, b_srgb) -> np.ndarray:
    from skimage.color import deltaE_ciede2000, rgb2lab

    return deltaE_ciede2000(rgb2lab(np.asarray(a_srgb, np.float64).reshape(-1, 1, 3)),
                            rgb2lab(np.asarray(b_srgb, np.float64).reshape(-1, 1, 3))).reshape(-1)


def sh_math():
    """The add-on's SH-to-lights maths (plain Python, no bpy), loaded from its file."""
    spec = importlib.util.spec_from_file_location("sh_math", REPO / "blender_flamefit" / "io" / "sh_math.py")
    module = sys.modules["sh_math"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def imported_chroma(result) -> dict:
    """What the add-on imports for this light (blender/views.fit_view_rig with Blender 4+'s soft
    suns): world and suns, their chroma's worst channel."""
    maths = sh_math()
    view = result.views[0]
    verts = np.asarray(view.vertices, np.float64)
    view_dir = maths.normalize(list(-verts.mean(0)))  # the camera sits at the origin of its frame
    # the face (inside the landmarks' outline as the camera sees it) weighs 4x, as the add-on's
    # face_emphasis does; a pinhole projection's x/z, y/z is the photo up to an affine map
    seen = lambda p: (float(p[0] / p[2]), float(p[1] / p[2]))  # noqa: E731
    hull = maths.convex_hull([seen(p) for p in np.asarray(view.landmarks_3d, np.float64)])
    emphasis = [FACE_EMPHASIS if maths.inside_convex(hull, seen(p)) else 1.0 for p in verts]
    faces = np.asarray(result.model.faces).reshape(-1).tolist()
    try:
        normals, weights = maths.head_normals(verts.reshape(-1).tolist(), faces, view_dir=view_dir, emphasis=emphasis)
    except TypeError:  # an older add-on: no emphasis
        normals, weights = maths.head_normals(verts.reshape(-1).tolist(), faces, view_dir=view_dir)
    sh = np.asarray(result.views[0].sh, np.float64).reshape(9, 3).tolist()
    try:
        rig = maths.fit_lights(sh, normals, weights, max_suns=2, view_dir=view_dir)
    except TypeError:  # an older add-on: no view_dir
        rig = maths.fit_lights(sh, normals, weights, max_suns=2)
    colours = {"world": rig.ambient, **{f"sun{k}_{s.role}": s.colour for k, s in enumerate(rig.suns)}}
    off = {k: float(np.abs(chroma(c) - 1).max()) if max(c) > 1e-6 else 0.0 for k, c in colours.items()}
    return {"worst": max(off.values()), **{k: round(v, 4) for k, v in off.items()}}


def seam_score(result) -> tuple | None:
    try:
        from flamefit.textures.seams import seam_pairs
    except ImportError:  # an older backend
        return None
    size = result.texture.shape[0]
    a, b = seam_pairs(result.model, size)
    flat = srgb(result.texture).reshape(-1, 3)
    step = np.abs(flat[a] - flat[b]).max(1)
    return float(np.median(step)), float(np.percentile(step, 90))


FILLED = 0.05  # a texel whose photo weight (result.seen) is below this holds the fill


def appearance(result, areas) -> dict:
    """ΔE2000 of the back's and the sides' median colour against the cheeks': over all their
    texels (the target's measure: where the photo showed hair there, it counts), and over
    the texels that hold the fill only ("_filled": the fill's own colour; None when fewer
    than 50 or no seen map)."""
    flat = srgb(result.texture).reshape(-1, 3)
    cheeks = np.median(flat[areas["cheeks"]], axis=0)
    out = {name: float(delta_e(np.median(flat[areas[name]], axis=0), cheeks)[0]) for name in ("back", "sides")}
    seen = None if getattr(result, "seen", None) is None else np.asarray(result.seen).reshape(-1)
    for name in ("back", "sides"):
        filled = None if seen is None else areas[name][seen[areas[name]] < FILLED]
        out[f"{name}_filled"] = None if filled is None or len(filled) < 50 else \
            float(delta_e(np.median(flat[filled], axis=0), cheeks)[0])
    return out


def real_photos(every: int):
    """(name, RGB uint8): astronaut, messi5 2x, every `every`th AFW photo."""
    import cv2
    from skimage import data

    yield "astronaut", data.astronaut()
    if MESSI.exists():
        messi = cv2.cvtColor(cv2.imread(str(MESSI)), cv2.COLOR_BGR2RGB)
        yield "messi5_2x", cv2.resize(messi, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    if AFW.is_dir() and every > 0:
        for path in sorted(p for p in AFW.iterdir() if p.suffix.lower() in (".jpg", ".png"))[::every]:
            yield f"afw_{path.stem}", cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def known_subject(model, seed: int, light: str):
    """subject.make_subject's front view, with eye whites in the albedo and the known light."""
    texture_of, light_of = subject.subject_texture, subject.view_light
    # make_subject draws its albedo and light itself: give it ours for this call
    subject.subject_texture = lambda rng, size=512: with_eye_whites(model, texture_of(rng, size))
    subject.view_light = lambda rng, yaw: known_light(light)
    try:
        return subject.make_subject(model, seed, (0,))
    finally:
        subject.subject_texture, subject.view_light = texture_of, light_of


def cheek_error(fitted, truth, gain, model, size) -> float:
    """The worse cheek's ΔE2000: of the median fitted colour (x gain) on each cheek's disc
    (`regions`) against the truth's there; a cheek in shade that the light did not explain
    comes back darker."""
    index, points, _, _ = surface_points(model, size)
    side = dict(zip(index.tolist(), points[:, 0] > 0))
    cheeks = regions(model, size)["cheeks"]
    right = np.array([side[i] for i in cheeks.tolist()])
    return max(float(delta_e(srgb(gain * np.median(fitted[half], 0)), srgb(np.median(truth[half], 0)))[0])
               for half in (cheeks[right], cheeks[~right]))


def run_synthetic(model, options, names) -> dict:
    from flamefit.fitting import fit_photos

    rows = {}
    for k, name in enumerate(names):
        photos, points, truth = known_subject(model, 100 + k, name)
        start = time.process_time()
        result = fit_photos(photos, model, options, landmarks=points)
        seconds = time.process_time() - start
        size = result.texture.shape[0]
        truth_tex = torch.nn.functional.interpolate(truth["texture"], size=(size, size), mode="area")[0]
        truth_tex = truth_tex.permute(1, 2, 0).numpy().reshape(-1, 3)
        outline = face_outline(model, size)
        if outline is None:  # an older backend: the face region's front texels
            index, _, normals, _ = surface_points(model, size)
            outline = np.zeros(size * size, bool)
            outline[index[normals[:, 2] > 0.5]] = True
        face = np.nonzero(outline.reshape(-1))[0]
        fitted = result.texture.reshape(-1, 3)[face].astype(np.float64)
        true = truth_tex[face].astype(np.float64)
        gain = float((fitted * true).sum() / max((fitted * fitted).sum(), 1e-12))
        light = float(np.abs(dc_chroma(result.views[0].sh) / dc_chroma(known_light(name)) - 1).max())
        rows[name] = {"chroma_err_pct": round(100 * light, 2),
                      "delta_e_mean": round(float(delta_e(srgb(gain * fitted.mean(0)), srgb(true.mean(0)))[0]), 2),
                      "delta_e_texel_median": round(float(np.median(delta_e(srgb(gain * fitted), srgb(true)))), 2),
                      "delta_e_cheeks": round(cheek_error(result.texture.reshape(-1, 3), truth_tex, gain, model, size), 2),
                      "gain": round(gain, 3), "psnr_db": result.metrics.get("psnr_db"), "seconds": round(seconds, 1)}
    return rows


def run_photos(model, options, every: int) -> dict:
    from flamefit.fitting import fit_photos
    from flamefit.image import Photo

    rows, areas = {}, None
    for name, rgb in real_photos(every):
        start = time.process_time()
        try:
            result = fit_photos([Photo(Path(f"{name}.png"), rgb)], model, options)
        except Exception as error:  # noqa: BLE001  (a photo without a face: say so, go on)
            rows[name] = {"error": str(error).splitlines()[0]}
            continue
        seconds = time.process_time() - start
        size = result.texture.shape[0]
        if areas is None or areas[0] != size:
            areas = (size, regions(model, size))
        outline = face_outline(model, size)
        seam = seam_score(result)
        rows[name] = {"chroma": round(float(np.abs(dc_chroma(result.views[0].sh) - 1).max()), 4),
                      "imported": imported_chroma(result),
                      "face_share": None if outline is None else round(float(outline.mean()), 4),
                      "seam_median": None if seam is None else round(seam[0], 4),
                      "seam_p90": None if seam is None else round(seam[1], 4),
                      **{f"{k}_delta_e": None if v is None else round(v, 2)
                         for k, v in appearance(result, areas[1]).items()},
                      "psnr_db": result.metrics.get("psnr_db"), "seconds": round(seconds, 1)}
    return rows


def targets(synthetic: dict, photos: dict, psnr_before: dict | None) -> dict:
    ok = {}
    if synthetic:
        ok["synthetic light chroma within 5 %"] = all(r["chroma_err_pct"] <= TARGETS["synthetic_chroma_pct"]
                                                      for r in synthetic.values())
        ok["synthetic face albedo ΔE2000 <= 5"] = all(r["delta_e_mean"] <= TARGETS["synthetic_delta_e"]
                                                      for r in synthetic.values())
    fitted = {k: r for k, r in photos.items() if "error" not in r}
    if "astronaut" in fitted:
        ok["astronaut imported world + suns within 10 % of grey"] = \
            fitted["astronaut"]["imported"]["worst"] <= TARGETS["astronaut_imported"]
    if fitted:
        ok["back and sides within ΔE2000 5 of the cheeks"] = all(
            max(r["back_delta_e"], r["sides_delta_e"]) <= TARGETS["back_sides_delta_e"] for r in fitted.values())
        shares = [r["face_share"] for r in fitted.values() if r["face_share"] is not None]
        if shares:
            ok["face share >= 25 %"] = min(shares) >= TARGETS["face_share"]
    if psnr_before:
        for label, names in psnr_groups(fitted, psnr_before).items():
            drop = np.mean([psnr_before[k] for k in names]) - np.mean([fitted[k]["psnr_db"] for k in names])
            ok[f"PSNR {label} no lower than before by > 0.3 dB"] = bool(drop <= TARGETS["psnr_drop_db"])
    return ok


def psnr_groups(fitted: dict, psnr_before: dict) -> dict:
    """#20's PSNR target is on the astronaut and on the AFW mean (the photos both runs fitted)."""
    common = [k for k in fitted if psnr_before.get(k) is not None]
    groups = {"astronaut": [k for k in common if k == "astronaut"],
              "AFW mean": [k for k in common if k.startswith("afw_")]}
    return {label: names for label, names in groups.items() if names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--afw-every", type=int, default=25, help="every Nth AFW photo (0: none)")
    parser.add_argument("--synthetic", default=",".join(LIGHTS), help="synthetic lights to run (comma list, or none)")
    parser.add_argument("--no-photos", action="store_true", help="synthetic renders only")
    parser.add_argument("--texture-size", type=int, help="texture size (default: the fit's default)")
    parser.add_argument("--before", help="a JSON file this benchmark wrote for another checkout: PSNR compared")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.synthetic.split(",") if n and n != "none"]
    if any(n not in LIGHTS for n in names):
        print(f"--synthetic: one of {', '.join(LIGHTS)} (got {args.synthetic})", file=sys.stderr)
        return 2
    before = None
    if args.before:
        try:
            before = {k: r.get("psnr_db") for k, r in json.loads(Path(args.before).read_text().splitlines()[-1])
                      ["photos"].items()}
        except (OSError, ValueError, KeyError, IndexError) as error:
            print(f"--before {args.before}: not this benchmark's JSON ({error})", file=sys.stderr)
            return 2
    os.environ.setdefault("FLAMEFIT_THREADS", "1")
    from flamefit.app.session import configure_threads, load_model, settings_from
    from flamefit.fitting import FitOptions

    configure_threads()
    model = load_model(settings_from({}))
    options = FitOptions() if args.texture_size is None else FitOptions(texture_size=args.texture_size)
    synthetic = run_synthetic(model, options, names)
    photos = {} if args.no_photos else run_photos(model, options, args.afw_every)
    met = targets(synthetic, photos, before)
    if not args.json:
        print(f"{model.name}; synthetic renders (512 px, true landmarks), fitted light and face albedo vs the truth")
        print(f"{'light':8s} {'chroma err %':>12s} {'ΔE mean':>8s} {'ΔE texel':>9s} {'ΔE cheek':>9s} {'PSNR':>6s} "
              f"{'s':>5s}")
        for name, r in synthetic.items():
            print(f"{name:8s} {r['chroma_err_pct']:12.2f} {r['delta_e_mean']:8.2f} {r['delta_e_texel_median']:9.2f} "
                  f"{r['delta_e_cheeks']:9.2f} {r['psnr_db']:6.2f} {r['seconds']:5.1f}")
        print("\nreal photos (chroma: max |channel/mean - 1|; seam: colour step across UV borders)")
        print(f"{'photo':22s} {'light':>6s} {'import':>6s} {'face %':>6s} {'seam med/p90':>13s} "
              f"{'ΔE back':>7s} {'ΔE side':>7s} {'filled b/s':>11s} {'PSNR':>6s} {'before':>6s} {'s':>5s}")
        for name, r in photos.items():
            if "error" in r:
                print(f"{name:22s} {r['error']}")
                continue
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            seam = "-" if r["seam_median"] is None else f"{r['seam_median']:.3f}/{r['seam_p90']:.3f}"
            print(f"{name:22s} {min(r['chroma'], 99):6.3f} {min(r['imported']['worst'], 99):6.3f} "
                  f"{fmt(None if r['face_share'] is None else 100 * r['face_share'], '6.1f')} {seam:>13s} "
                  f"{r['back_delta_e']:7.2f} {r['sides_delta_e']:7.2f} "
                  f"{fmt(r.get('back_filled_delta_e'), '5.2f'):>5s}/{fmt(r.get('sides_filled_delta_e'), '5.2f'):<5s} "
                  f"{r['psnr_db']:6.2f} "
                  f"{fmt((before or {}).get(name), '6.2f')} {r['seconds']:5.1f}")
        if before:
            for label, names in psnr_groups({k: r for k, r in photos.items() if "error" not in r}, before).items():
                print(f"PSNR {label}: {np.mean([before[k] for k in names]):.2f} dB before, "
                      f"{np.mean([photos[k]['psnr_db'] for k in names]):.2f} dB now ({len(names)} photos)")
        print()
        for target, good in met.items():
            print(f"{'met    ' if good else 'NOT met'}  {target}")
    print(json.dumps({"model": model.name, "synthetic": synthetic, "photos": photos, "targets": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
