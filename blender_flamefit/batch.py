"""Headless batch: fit photos with the backend and save one .blend + preview PNG each.

From a checkout:
    blender -b --factory-startup --python-exit-code 1 --python blender_flamefit/batch.py -- PHOTO_OR_DIR OUT_DIR
    blender -b --factory-startup --python-exit-code 1 --python blender_flamefit/batch.py -- --people PEOPLE_DIR OUT_DIR

With the installed add-on (enabled in your preferences, so its settings apply):
    blender -b --python-exit-code 1 --python-expr "import blender_flamefit.batch as b; b.main()" -- PHOTO_OR_DIR OUT_DIR
    (extension in Blender 4.2+: "import bl_ext.user_default.flamefit.batch as b; b.main()")

A folder is fitted by ONE `flamefit batch --json-progress` process (the interpreter start
and the model load are paid once); each photo is imported, saved and rendered here as soon
as the backend reports its bundle, while the backend fits the next one. A single photo is
one `flamefit fit`. Writes OUT_DIR/<name>.blend (images packed), OUT_DIR/<name>.png (Cycles
CPU preview of the head over the photo) and keeps the bundle in OUT_DIR/<name>/ (<name>: the
photo's stem, made unique by the backend; a folder run also writes OUT_DIR/summary.csv).
An existing <name>.blend / <name>.png or bundle is replaced only with --overwrite, and an
input photo never (that photo is refused: choose another OUT_DIR); when every photo would
be refused, the run stops before any work. With --people, PEOPLE_DIR holds one sub-folder of photos per person: each person's photos are
fitted together (one `flamefit fit PHOTO PHOTO ...`: one head, one camera per photo) into
OUT_DIR/<person>.blend, OUT_DIR/<person>.png (seen from the first photo's camera; photos by
name) and the bundle OUT_DIR/<person>/ (<person>: the sub-folder's name), under the same rules;
a bundle folder that would hold an input photo is refused as well. Both files are written under a temporary name
and moved into place, so a crash leaves no half-written file. The backend interpreter comes
from FLAMEFIT_PYTHON, else the add-on preferences. Exit code 1 when any photo failed (the
others are still processed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from array import array

import bpy


def _package():
    """The add-on package, whether this file runs as part of it or as a --python script."""
    if __package__:
        return importlib.import_module(__package__)
    here = os.path.dirname(os.path.abspath(__file__))
    for mod in list(sys.modules.values()):  # an enabled add-on / extension of this same folder
        path = getattr(mod, "__file__", None) or ""
        if os.path.basename(path) == "__init__.py" and os.path.dirname(os.path.abspath(path)) == here:
            return mod
    sys.path.insert(0, os.path.dirname(here))
    return importlib.import_module(os.path.basename(here))


def _sub(pkg, name):
    """A submodule of the add-on package, e.g. _sub(pkg, "io.bundle") (imported on first use)."""
    return importlib.import_module(f"{pkg.__name__}.{name}")


def parse_args(argv, options):
    parser = argparse.ArgumentParser(prog="blender -b --python batch.py --",
                                     description="Fit photos with FlameFit and save .blend files and previews.")
    parser.add_argument("input", help="a photo or a folder of photos (with --people: a folder of sub-folders, "
                                      "one per person)")
    parser.add_argument("--people", action="store_true",
                        help="INPUT holds one sub-folder of photos per person: one head from each person's photos, "
                             "one .blend per person")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples of the preview (default 32)")
    parser.add_argument("--preview-size", type=int, default=512, help="longest side of the preview in pixels")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="backend device (default: preferences)")
    parser.add_argument("--no-preview", action="store_true", help="skip the preview render")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT_DIR/<name>.blend, <name>.png and bundle <name>/ "
                             "(never an input photo)")
    # the fit and import options (io/options.py); a .blend of the batch carries its images
    options.add_arguments(parser, options.FIT_OPTIONS)
    options.add_arguments(parser, options.IMPORT_OPTIONS, defaults={"pack_images": True})
    return parser.parse_args(argv)


def photos_in(path, suffixes):
    """The photos `flamefit batch` fits in a folder (files with a photo suffix, no hidden
    ones, by name), or the one photo."""
    if os.path.isdir(path):
        return sorted(os.path.join(path, f) for f in os.listdir(path) if os.path.splitext(f)[1].lower() in suffixes
                      and not f.startswith(".") and os.path.isfile(os.path.join(path, f)))
    return [path]


def people_in(folder, suffixes) -> list:
    """[(person, [photos])] of a folder of sub-folders, one per person (sub-folders without
    photos and hidden ones are left out), by name."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        photos = photos_in(path, suffixes)
        if photos:
            out.append((name, photos))
    return out


def plain_names(photos) -> dict:
    """photo -> its bundle name where that is the photo's stem (INTERFACE.md: a stem no other
    photo shares); the names the backend makes unique are known once their bundle arrives."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in photos]
    lowered = [s.lower() for s in stems]
    return {p: s for p, s in zip(photos, stems, strict=True) if lowered.count(s.lower()) == 1}


def outputs(args, name: str) -> list:
    """The files this batch writes for bundle `name`."""
    base = os.path.join(args.out_dir, name)
    return [base + ".blend"] + ([] if args.no_preview else [base + ".png"])


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is missing (or a dangling link): not the same file
        return False


def refusal(paths, photos, overwrite: bool, bundle_dir: str = "") -> str:
    """Why these outputs may not be written ('' when they may): an input photo is never
    written over, any other existing file only with --overwrite; a bundle folder (`bundle_dir`,
    the backend replaces only its own) never holds an input photo."""
    if bundle_dir:
        inside = [p for p in photos if os.path.commonpath([os.path.realpath(bundle_dir), os.path.realpath(p)])
                  == os.path.realpath(bundle_dir)]
        if inside:
            return f"its bundle folder {bundle_dir} holds input photos ({os.path.basename(inside[0])}); " \
                   "choose another OUT_DIR"
        paths = [*paths, bundle_dir]
    for path in paths:
        if any(_same_file(path, photo) for photo in photos):
            return f"its output {path} is an input photo, which is never written over; choose another OUT_DIR"
        if os.path.lexists(path) and not overwrite:
            return f"{path} already exists and is not replaced; use --overwrite, or choose another OUT_DIR"
    return ""


def clear_data():
    """Empty the current file (objects, meshes, materials, images, worlds, collections...)."""
    ids = []
    for coll in (bpy.data.objects, bpy.data.meshes, bpy.data.cameras, bpy.data.lights, bpy.data.materials,
                 bpy.data.images, bpy.data.worlds, bpy.data.collections, bpy.data.textures):
        ids.extend(coll)
    if ids:
        bpy.data.batch_remove(ids)
        bpy.context.view_layer.update()  # the view layer's object list must not keep removed objects


def has_oidn() -> bool:
    try:
        import _cycles  # noqa: PLC0415
    except ImportError:
        return False
    return bool(getattr(_cycles, "with_openimagedenoise", False))


def configure_cycles(scene, samples: int) -> None:
    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = samples
    if hasattr(cy, "use_adaptive_sampling"):
        cy.use_adaptive_sampling = True
    oidn = has_oidn()
    cy.use_denoising = oidn  # denoising off where the build lacks it (Debian's 3.4)
    if oidn and hasattr(cy, "denoiser"):
        cy.denoiser = "OPENIMAGEDENOISE"
    scene.render.use_persistent_data = False


def render_preview(scene, photo_image, path: str, longest: int) -> None:
    """Render the head over a transparent film, composite it over the photo, save PNG."""
    r = scene.render
    saved = (r.film_transparent, r.resolution_percentage, r.filepath, r.image_settings.file_format,
             r.image_settings.color_mode)
    W, H = r.resolution_x, r.resolution_y
    pct = max(1, min(100, int(100 * longest / max(W, H))))
    w, h = max(1, W * pct // 100), max(1, H * pct // 100)
    tmp = path + ".render.png"
    try:
        r.film_transparent = True
        r.resolution_percentage = pct
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.filepath = tmp
        bpy.ops.render.render(write_still=True)
    finally:
        (r.film_transparent, r.resolution_percentage, r.filepath, r.image_settings.file_format,
         r.image_settings.color_mode) = saved
    fg_img = bpy.data.images.load(tmp, check_existing=False)
    w, h = fg_img.size
    fg = array("f", bytes(4 * w * h * 4))
    fg_img.pixels.foreach_get(fg)
    bg = array("f", [0.0]) * (w * h * 4)
    if photo_image is not None:
        bg_img = photo_image.copy()
        bg_img.scale(w, h)
        bg_img.pixels.foreach_get(bg)
        bpy.data.images.remove(bg_img)
    else:
        for i in range(w * h):
            bg[4 * i:4 * i + 4] = array("f", (0.25, 0.25, 0.25, 1.0))
    alpha = fg[3::4]
    out = array("f", bg)
    for c in range(3):
        out[c::4] = array("f", (f * a + b * (1.0 - a) for f, b, a in zip(fg[c::4], bg[c::4], alpha, strict=False)))
    out[3::4] = array("f", [1.0]) * (w * h)
    result = bpy.data.images.new("flamefit_preview", w, h, alpha=False)
    result.pixels.foreach_set(out)
    result.filepath_raw = path
    result.file_format = "PNG"
    result.save()
    for img in (result, fg_img):
        bpy.data.images.remove(img)
    os.remove(tmp)


def backend_job(pkg, context, args, python: str):
    """The one backend process: `flamefit batch` for a folder, `flamefit fit` for a photo."""
    bp, prefs_mod, options = _sub(pkg, "io.backend_process"), _sub(pkg, "ui.preferences"), _sub(pkg, "io.options")
    prefs = prefs_mod.get_prefs(context)
    folder = os.path.isdir(args.input)
    target = os.path.abspath(args.input)
    out = args.out_dir if folder else os.path.join(args.out_dir, os.path.splitext(os.path.basename(target))[0])
    argv = bp.backend_command(python, target, out, device=args.device or prefs.device, detector=prefs_mod.detector_flag(prefs),
                              texture_size=prefs.texture_size, model_files=prefs_mod.model_file_flags(prefs),
                              extra=["--overwrite"] if args.overwrite else [], command="batch" if folder else "fit",
                              **bp.fit_flags(**options.as_keywords(args, options.FIT_OPTIONS)))
    return (bp.BatchJob if folder else bp.FitJob)(argv, out, env=bp.child_env())


def person_job(pkg, context, args, python: str, person: str, photos):
    """One `flamefit fit PHOTO PHOTO ... -o OUT_DIR/<person>`: one head from a person's photos."""
    bp, prefs_mod, options = _sub(pkg, "io.backend_process"), _sub(pkg, "ui.preferences"), _sub(pkg, "io.options")
    prefs = prefs_mod.get_prefs(context)
    out = os.path.join(args.out_dir, person)
    argv = bp.backend_command(python, [os.path.abspath(p) for p in photos], out, device=args.device or prefs.device,
                              detector=prefs_mod.detector_flag(prefs), texture_size=prefs.texture_size,
                              model_files=prefs_mod.model_file_flags(prefs),
                              extra=["--overwrite"] if args.overwrite else [],
                              **bp.fit_flags(**options.as_keywords(args, options.FIT_OPTIONS)))
    return bp.FitJob(argv, out, env=bp.child_env())


def run_people(pkg, context, args, python: str, people, photos, work: str) -> int:
    """Fit each person's photos together (one backend run each, one after the other) and save
    their .blend as it is done. Returns the number of people that failed."""
    bp = _sub(pkg, "io.backend_process")
    failed = 0
    for i, (person, theirs) in enumerate(people, start=1):
        bundle_dir = os.path.join(args.out_dir, person)
        error = refusal(outputs(args, person), photos, args.overwrite, bundle_dir)
        if not error:
            print(f"flamefit batch: {person}: fitting {len(theirs)} photo(s) ({i} of {len(people)})", flush=True)
            job = person_job(pkg, context, args, python, person, theirs)
            last = time.monotonic()
            try:
                while (res := job.step()).state == bp.RUNNING:
                    if time.monotonic() - last > 5.0:
                        print(f"flamefit batch: {person}: {res.message or 'fitting…'}", flush=True)
                        last = time.monotonic()
                    time.sleep(0.1)
            finally:
                job.stop()
            error = "" if res.state == bp.DONE else res.message
        if not error:
            try:
                error = save_blend(pkg, context, bundle_dir, args, photos, work, collection_name=person)
            except Exception as exc:  # noqa: BLE001 - an unreadable bundle or a failed write fails this person only
                error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if error:
            failed += 1
            print(f"flamefit batch: error: {person}: {error}", file=sys.stderr, flush=True)
    return failed


def save_blend(pkg, context, bundle_dir: str, args, photos, work: str, collection_name: str = "") -> str:
    """Import one bundle into an emptied file, save OUT_DIR/<name>.blend and the preview
    (written in `work`, then moved into place). Returns '' or an error sentence.
    `collection_name`: the result's name (default: the photo's stem, or the bundle folder's)."""
    options, bundle = _sub(pkg, "io.options"), _sub(pkg, "io.bundle")
    name = os.path.basename(os.path.normpath(bundle_dir))
    refused = refusal(outputs(args, name), photos, args.overwrite)
    if refused:
        return refused
    clear_data()
    scene = context.scene
    try:
        result = _sub(pkg, "blender.importer").import_bundle(
            context, bundle_dir, collection_name=collection_name, **options.as_keywords(args, options.IMPORT_OPTIONS))
    except bundle.BundleError as exc:
        return str(exc)
    _sub(pkg, "ui.operators").record_result(scene, result)
    configure_cycles(scene, args.samples)
    files = outputs(args, name)
    staged = [os.path.join(work, os.path.basename(path)) for path in files]
    bpy.ops.wm.save_as_mainfile(filepath=staged[0], check_existing=False, copy=True)
    if not args.no_preview:
        photo_img = result.camera.data.background_images[0].image if result.camera.data.background_images else None
        render_preview(scene, photo_img, staged[1], args.preview_size)
    for tmp, path in zip(staged, files, strict=True):
        os.replace(tmp, path)
    print(f"flamefit batch: {name}: wrote {', '.join(files)} (light fit error {result.rig.error:.1%}, "
          f"metrics {result.bundle.metrics})", flush=True)
    return ""


def run(pkg, context, args, python: str, photos, work: str) -> int:
    """Fit everything with one backend process, saving each photo as its bundle arrives
    (its files staged in `work`). Returns the number of photos that failed."""
    bp = _sub(pkg, "io.backend_process")
    count = len(photos)
    job = backend_job(pkg, context, args, python)
    saved = failed = 0

    def finished(photo, bundle_dir, error):
        nonlocal saved, failed
        if not error:
            try:
                error = save_blend(pkg, context, bundle_dir, args, photos, work)
            except Exception as exc:  # noqa: BLE001 - an unreadable bundle or a failed write fails this photo only
                error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if error:
            failed += 1
            print(f"flamefit batch: error: {os.path.basename(photo)}: {error}", file=sys.stderr, flush=True)
        else:
            saved += 1

    last = time.monotonic()
    try:
        while True:
            res = job.step()
            for event in res.events:
                if event.get("event") == "photo":
                    ok = event.get("status") in ("ok", "skipped")
                    finished(str(event.get("photo", "")), str(event.get("bundle", "")),
                             "" if ok else str(event.get("message") or "the fit failed"))
            if res.state != bp.RUNNING:
                break
            if time.monotonic() - last > 5.0:
                print(f"flamefit batch: fitting… ({saved + failed} of {count} done)", flush=True)
                last = time.monotonic()
            time.sleep(0.1)
    finally:
        job.stop()
    if isinstance(job, bp.BatchJob):
        if res.state != bp.DONE:  # the backend stopped before the end: the rest failed with it
            print(f"flamefit batch: error: {res.message}", file=sys.stderr, flush=True)
            failed = max(failed, count - saved)
    else:
        finished(args.input, job.out_dir, "" if res.state == bp.DONE else res.message)
    return failed


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    pkg = _package()
    args = parse_args(argv, _sub(pkg, "io.options"))
    if not hasattr(bpy.types.Scene, "flamefit"):
        pkg.register()
    context = bpy.context
    python, source = _sub(pkg, "ui.preferences").resolve_backend(context)
    if not python:
        print(f"flamefit batch: error: {source}; set FLAMEFIT_PYTHON or the add-on preferences", file=sys.stderr)
        sys.exit(1)
    args.out_dir = os.path.abspath(args.out_dir)  # Blender saves .blend files to absolute paths only
    suffixes = _sub(pkg, "io.bundle").photo_suffixes()
    if not os.path.isdir(args.input) and not os.path.isfile(args.input):
        print(f"flamefit batch: error: {args.input}: no such file", file=sys.stderr)
        sys.exit(1)
    if args.people:
        if not os.path.isdir(args.input):
            print(f"flamefit batch: error: {args.input}: --people needs a folder of sub-folders, one per person",
                  file=sys.stderr)
            sys.exit(1)
        people = people_in(args.input, suffixes)
        photos = [p for _, theirs in people for p in theirs]
        if not people:
            print(f"flamefit batch: error: no sub-folder of {args.input} holds photos (--people: one sub-folder "
                  "of photos per person)", file=sys.stderr)
            sys.exit(1)
        refused = [f"{person}: {why}" for person, _ in people
                   if (why := refusal(outputs(args, person), photos, args.overwrite, os.path.join(args.out_dir, person)))]
        count, unit = len(people), "people"
    else:
        photos = photos_in(args.input, suffixes)
        if not photos:
            folders = people_in(args.input, suffixes) if os.path.isdir(args.input) else []
            hint = f"; its {len(folders)} sub-folders hold photos: add --people to fit one head per sub-folder" \
                if folders else ""
            print(f"flamefit batch: error: no photos in {args.input}{hint}", file=sys.stderr)
            sys.exit(1)
        # Refuse before any work when no photo could be saved (the others are refused as they arrive).
        names = plain_names(photos)
        refused = [f"{os.path.basename(p)}: {why}" for p, name in names.items()
                   if (why := refusal(outputs(args, name), photos, args.overwrite))]
        count, unit = len(photos), "photos"
    if len(refused) == count:
        n = len(refused) - 1
        singular, plural = ("person", "people") if args.people else ("photo", "photos")
        others = f" (and the other {n} {plural if n > 1 else singular} likewise; nothing was done)" if n else ""
        print(f"flamefit batch: error: {refused[0]}{others}", file=sys.stderr)
        sys.exit(1)
    try:
        os.makedirs(args.out_dir, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".flamefit-batch-", dir=args.out_dir)  # ours alone: files are staged here
    except OSError as exc:
        print(f"flamefit batch: error: {args.out_dir}: cannot write there ({exc.strerror or exc})", file=sys.stderr)
        sys.exit(1)
    print(f"flamefit batch: fitting {count} {'people' if args.people else 'photo(s)'} from {args.input} with {python}",
          flush=True)
    try:
        if args.people:
            failed = run_people(pkg, context, args, python, people, photos, work)
        else:
            failed = run(pkg, context, args, python, photos, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"flamefit batch: {count - failed} of {count} {unit} done", flush=True)
    if failed:
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
