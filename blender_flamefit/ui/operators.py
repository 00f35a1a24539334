"""Operators: Find Faces and Fit Photo (modal), Pick Face, Cancel, Import FlameFit result,
Set up backend.

Find Faces, Fit Photo and Set up backend are `job_runner.JobOperator`s: they only say how to start
their job and what one tick does (`fit_step`, `setup_step`), so tests call those directly
(in `blender -b` timers never fire). Building Blender objects is imported when needed.
"""

import json
import os
import shutil
import time

import bpy
from bpy.props import CollectionProperty, IntProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement
from bpy_extras.io_utils import ImportHelper

from ..io import backend_process, faces, setup_backend
from ..io.backend_process import CANCELLED, DONE, FAILED, RUNNING, FacesJob, FitJob, StepResult
from . import job_runner
from .job_runner import JobOperator
from .preferences import (
    default_results_dir,
    detector_flag,
    get_prefs,
    managed_venv_dir,
    model_file_flags,
    resolve_backend,
    user_data_dir,
)
from .props import ImportOptions, clear_faces, fit_landmarks, fit_photos, picked_face

TIMER_STEP = 0.1


# --- helpers --------------------------------------------------------------------------
def _status_bar(context, text):
    ws = getattr(context, "workspace", None)
    if ws is not None:
        try:
            ws.status_text_set(text)
        except (RuntimeError, TypeError):
            pass


def _redraw(context):
    wm = context.window_manager
    for win in getattr(wm, "windows", []):
        screen = win.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES", "STATUSBAR"}:
                area.tag_redraw()


def no_backend(source: str) -> str:
    """Why Fit Photo / Find Faces cannot start: the reason only when it adds something."""
    why = "" if source == backend_process.NOT_SET_UP else f" ({source})"
    return f"FlameFit backend not set up{why}: press Set up backend above"


def record_result(scene, result) -> None:
    """Remember the last import on the scene (the panel shows it)."""
    s = scene.flamefit
    s.last_result = result.bundle.result_path
    s.last_metrics = json.dumps(result.bundle.metrics)
    s.last_light_error = float(result.rig.error)
    s.last_model = result.bundle.model_name
    s.last_changes = json.dumps(result.changes)


def import_result(context, path, options) -> tuple:
    """Import a bundle; (ok, message, the new collection's name). On failure nothing is left
    in the scene."""
    from ..blender.importer import import_bundle
    from ..io.bundle import BundleError

    try:
        result = import_bundle(context, path, **options)
    except BundleError as exc:
        return False, str(exc), ""
    record_result(context.scene, result)
    several = f"{len(result.cameras)} photos (Views below), " if len(result.cameras) > 1 else ""
    note = f"Imported {result.collection.name} ({several}{len(result.bundle.shape_keys)} shape keys, " \
           f"light fit error {result.rig.error:.1%})"
    if result.warnings:
        note += "; " + "; ".join(result.warnings)
    return True, note, result.collection.name


def fit_command(context, photo, out_dir: str, python: str, landmarks=None) -> list:
    """`photo`: one path, or the list of several photos of one person (one head from all).
    `landmarks`: one file per photo ('' for none: the backend detects that photo's points,
    `--landmarks -`); None: the Landmarks field of the one photo."""
    prefs = get_prefs(context)
    s = context.scene.flamefit
    several = not isinstance(photo, str) and len(photo) > 1
    if not isinstance(photo, str) and not several:
        photo = photo[0]
    if landmarks is None:
        landmarks = [] if several else [bpy.path.abspath(s.landmarks_file) if s.landmarks_file else ""]
    face = -1 if several else picked_face(s, photo)  # given points name their face: no --face then
    # once per photo, in order, '-' for those the detector finds; none when every photo is detected
    given = [arg for m in landmarks for arg in ("--landmarks", m or "-")] if any(landmarks) else []
    extra = given or (["--face", str(face)] if face >= 0 else None)
    return backend_process.backend_command(
        python, photo, out_dir, device=prefs.device, detector=detector_flag(prefs),
        texture_size=prefs.texture_size, model_files=model_file_flags(prefs), extra=extra,
        **backend_process.fit_flags(**s.fit_options()))


def start_fit(context, photo="", env=None):
    """Validate the inputs and start the backend (one photo, or the several chosen photos of one
    person: one head). Returns (job, '') or (None, error)."""
    s = context.scene.flamefit
    state = context.window_manager.flamefit
    state.error, state.error_kind = "", ""  # a new action: the last error no longer applies
    state.imported = ""
    if photo:
        photos = [bpy.path.abspath(p) for p in ([photo] if isinstance(photo, str) else photo)]
    else:
        photos = fit_photos(s)
    if not photos or not photos[0]:
        return None, "choose a photo first (not found: none)"
    for path in photos:
        if not os.path.isfile(path):
            return None, f"choose a photo first (not found: {path})"
    if len(set(photos)) < len(photos):
        return None, "the same photo is chosen twice; choose each photo once"
    # each photo's own Landmarks file (the one field for one photo); a photo without one is detected
    landmarks = fit_landmarks(s) if photos == fit_photos(s) else [""] * len(photos)
    for path in landmarks:
        if path and not os.path.isfile(path):
            return None, f"the landmarks file {path} does not exist"
    python, source = resolve_backend(context)
    if not python:
        state.error_kind = "backend"  # disappears once a backend is usable
        return None, no_backend(source)
    base = bpy.path.abspath(s.output_dir) if s.output_dir else default_results_dir()
    stem = os.path.splitext(os.path.basename(photos[0]))[0] or "photo"
    if len(photos) > 1:
        stem += f"+{len(photos) - 1}"  # front+2: the first photo and two more
    out_dir = os.path.join(base, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while os.path.exists(out_dir):
        n += 1
        out_dir = os.path.join(base, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    os.makedirs(base, exist_ok=True)
    job = FitJob(fit_command(context, photos if len(photos) > 1 else photos[0], out_dir, python, landmarks), out_dir,
                 env=backend_process.child_env(env))
    if job.finished is not None:
        return None, job.finished.message
    job.collection_name = stem if len(photos) > 1 else ""  # one photo: its stem (Bundle.name)
    state.running, state.progress, state.error = True, 0.0, ""
    state.status = "Starting the backend…" if len(photos) == 1 else f"Starting the backend for {len(photos)} photos…"
    return job, ""


SLOW_START_S = 4.0  # after this long without a stage, say what the backend is doing


def running_status(job: FitJob, message: str) -> str:
    if job.cancelled:
        return "Cancelling…"  # not overwritten by the progress lines still arriving
    if not job.progress.stage and job.elapsed > SLOW_START_S:
        return f"Starting the backend; a first fit also prepares the open head (once) · {job.elapsed:.0f} s"
    return message


def remove_result(out_dir: str) -> bool:
    """A cancelled fit leaves nothing: remove the bundle folder this fit created (when the
    backend got as far as writing it)."""
    if out_dir and os.path.isdir(out_dir) and os.path.basename(out_dir):
        shutil.rmtree(out_dir, ignore_errors=True)
        return True
    return False


def in_panel_words(message: str) -> str:
    """A backend message as the panel says it: the panel has a field for what the backend
    calls --landmarks FILE."""
    return message.replace(f" {SEVERAL_LANDMARKS}", "") \
        .replace("with --landmarks FILE", "as a Landmarks file (below the photo)") \
        .replace("pass --landmarks FILE", "give a Landmarks file (below the photo)")


# how the backend's refusal of a profile says to give its points with several photos; the panel
# has a field per photo and passes '-' itself
SEVERAL_LANDMARKS = "(several photos: one per photo, in order, - for those the detector finds)"


def fit_step(context, job: FitJob) -> StepResult:
    """One tick of Fit Photo: read progress, update the panel/status bar; on success import
    the bundle (one undo step), on failure or cancel import nothing."""
    state = context.window_manager.flamefit
    res = job.step()
    if res.state == RUNNING:
        state.progress = job.progress.fraction
        state.status = running_status(job, res.message)
        _status_bar(context, f"FlameFit: {state.status}" if job.cancelled else
                    f"FlameFit: {state.status} ({int(100 * state.progress)}%) — Esc to cancel")
        _redraw(context)
        return res
    state.running = False
    _status_bar(context, None)
    if job.cancelled and res.state != FAILED:  # cancelled, even if the bundle got written
        res = StepResult(CANCELLED, "Fit cancelled")
    if res.state == DONE:
        state.progress = 1.0
        options = context.scene.flamefit.import_options()
        if getattr(job, "collection_name", ""):
            options["collection_name"] = job.collection_name
        ok, message, state.imported = import_result(context, res.result_path, options)
        if ok:  # the status goes when Ctrl-Z takes the import back (panel.undone)
            try:
                bpy.ops.ed.undo_push(message="Import FlameFit result")
            except RuntimeError:  # no undo stack (background mode)
                pass
            state.status, state.error = f"{message} in {job.elapsed:.0f} s", ""
        else:
            res = StepResult(FAILED, message)
            state.status, state.error = "Fit finished but the import failed", message
    elif res.state == CANCELLED:
        removed = remove_result(job.out_dir)
        state.status, state.error = "Fit cancelled" + ("; its result folder was removed" if removed else ""), ""
    else:
        state.status = "Fit failed"
        state.error = in_panel_words(res.message) + landmarks_hint(job.argv, res.message)
    _redraw(context)
    return res


NO_POINTS = ("not a human face", "no face found")  # what the backend says when it finds no 68 points


def landmarks_hint(argv, message: str) -> str:
    """Several photos, one of them detected and refused for its face with a message that does not
    say to give its points (e.g. "not a human face" for a strongly turned head): point to its
    Landmarks field."""
    try:
        photos = argv[argv.index("fit") + 1:argv.index("-o")]
    except ValueError:
        return ""
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--landmarks"] or ["-"] * len(photos)
    refused = [m for p, m in zip(photos, given) if message.startswith(f"{os.path.basename(p)}: ")]
    if len(photos) < 2 or refused != ["-"] or "--landmarks" in message or not any(w in message for w in NO_POINTS):
        return ""  # one photo, a photo with points, or a message that already says to give them
    return (". A profile or a strongly turned head: no detector finds its 68 points; give them as its "
            "Landmarks file (below the photo's name; photos without one are detected)")


# --- Fit Photo ----------------------------------------------------------------------------
class FLAMEFIT_OT_fit_photo(JobOperator, Operator):
    """Fit the head model to the photo with the FlameFit backend, then import the result"""

    bl_idname = "flamefit.fit_photo"
    bl_label = "Fit Photo"
    bl_options = {"REGISTER"}

    job_kind = "fit"
    interval = TIMER_STEP
    cancel_on_esc = True

    def start(self, context):
        return start_fit(context)

    def step(self, context, job):
        return fit_step(context, job)

    def start_failed(self, context, error):
        context.window_manager.flamefit.error = error

    def stopped(self, context):
        context.window_manager.flamefit.running = False
        _status_bar(context, None)

    def cancelling(self, context):
        context.window_manager.flamefit.status = "Cancelling…"

    def done_message(self, context, res):
        return context.window_manager.flamefit.status


class FLAMEFIT_OT_cancel_fit(Operator):
    """Stop the running fit (nothing is imported)"""

    bl_idname = "flamefit.cancel_fit"
    bl_label = "Cancel Fit"

    @classmethod
    def poll(cls, context):
        return job_runner.is_running("fit")

    def execute(self, context):
        job_runner.active("fit").cancel()
        context.window_manager.flamefit.status = "Cancelling…"
        return {"FINISHED"}


def bundle_photo_suffixes() -> tuple:
    from ..io.bundle import BundleError, photo_suffixes

    try:
        return photo_suffixes()
    except BundleError:
        return (".jpg", ".jpeg", ".png")


class FLAMEFIT_OT_choose_photos(Operator, ImportHelper):
    """Choose one photo, or several photos of one person (Shift/Ctrl-click): Fit Photo then fits one head to all of them"""

    bl_idname = "flamefit.choose_photos"
    bl_label = "Choose Photos"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default=";".join(f"*{x}" for x in bundle_photo_suffixes()), options={"HIDDEN"})
    files: CollectionProperty(type=OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        names = [f.name for f in self.files if f.name] or [os.path.basename(self.filepath)]
        folder = self.directory or os.path.dirname(self.filepath)
        paths = [os.path.join(folder, n) for n in names if n]
        missing = [p for p in paths if not os.path.isfile(p)]
        if not paths or missing:
            self.report({"ERROR"}, f"FlameFit: not a photo file: {(missing or [folder])[0]}")
            return {"CANCELLED"}
        set_photos(context.scene.flamefit, paths)
        return {"FINISHED"}


def set_photos(settings, paths) -> None:
    """Fit these photos next: the first is the Photo field; two or more are fitted together."""
    settings.photos.clear()
    if len(paths) > 1:
        for path in paths:
            settings.photos.add().path = path
    settings.photo = paths[0]


# --- Find Faces / Pick Face -------------------------------------------------------------------


def faces_folder() -> str:
    return os.path.join(user_data_dir(), "faces")


def start_faces(context, env=None):
    """Start `flamefit faces PHOTO --json --picture ...`. Returns (job, '') or (None, error)."""
    s = context.scene.flamefit
    state = context.window_manager.flamefit
    state.error, state.error_kind = "", ""
    photo = bpy.path.abspath(s.photo)
    if not s.photo or not os.path.isfile(photo):
        return None, f"choose a photo first (not found: {photo or 'none'})"
    python, source = resolve_backend(context)
    if not python:
        state.error_kind = "backend"
        return None, no_backend(source)
    folder = faces_folder()
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(photo))[0] or "photo"
    picture, n = os.path.join(folder, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.png"), 1
    while os.path.exists(picture):  # a new name each time: Blender caches images by path
        n += 1
        picture = os.path.join(folder, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.png")
    job = FacesJob(backend_process.faces_command(python, photo, picture, detector_flag(get_prefs(context))),
                   picture, env=backend_process.child_env(env))
    if job.finished is not None:
        return None, job.finished.message
    job.photo = photo
    state.faces_status = "Finding faces…"
    return job, ""


def faces_step(context, job: FacesJob) -> StepResult:
    """One tick of Find Faces; when it is done the panel lists the faces and shows the picture."""
    s = context.scene.flamefit
    state = context.window_manager.flamefit
    res = job.step()
    if res.state == RUNNING:
        state.faces_status = f"Finding faces… {job.elapsed:.0f} s"
        _redraw(context)
        return res
    state.faces_status = ""
    old_picture = s.faces_picture
    if res.state == DONE:
        clear_faces(s)
        s.faces_json, s.faces_photo = json.dumps(job.listing), job.photo
        s.faces_picture = job.listing.get("picture") or ""
        show_picture(s.faces_picture)
        res = StepResult(DONE, faces.headline(job.listing))
    elif res.state == FAILED:
        clear_faces(s)
        state.error = in_panel_words(res.message)
    if old_picture and old_picture != s.faces_picture and os.path.dirname(old_picture) == faces_folder():
        try:  # only our own earlier picture
            os.remove(old_picture)
        except OSError:
            pass
    _redraw(context)
    return res


def show_picture(path: str):
    """Load the numbered picture into the Image faces.PICTURE, its preview at full size (Blender's
    own preview is 128 px: the numbers would not read). None when there is no picture."""
    image = bpy.data.images.get(faces.PICTURE)
    if not path or not os.path.isfile(path):
        return None
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = faces.PICTURE
    else:
        image.filepath = path
        image.reload()
    try:
        from array import array

        width, height = image.size
        pixels = array("f", bytes(16 * width * height))
        image.pixels.foreach_get(pixels)
        preview = image.preview_ensure()
        preview.image_size = (width, height)
        preview.image_pixels_float.foreach_set(pixels)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        pass  # no preview (an old or background Blender): the Image is still there to view
    return image


class FLAMEFIT_OT_find_faces(JobOperator, Operator):
    """Find the faces in the photo (numbered left to right) so you can pick the one to fit"""

    bl_idname = "flamefit.find_faces"
    bl_label = "Find Faces"
    bl_options = {"REGISTER"}

    job_kind = "faces"
    interval = TIMER_STEP
    cancel_on_esc = True
    report_prefix = "FlameFit faces"

    def start(self, context):
        return start_faces(context)

    def step(self, context, job):
        return faces_step(context, job)

    def start_failed(self, context, error):
        context.window_manager.flamefit.error = error

    def stopped(self, context):
        context.window_manager.flamefit.faces_status = ""


class FLAMEFIT_OT_pick_face(Operator):
    """Fit this face (numbered left to right, as in the picture)"""

    bl_idname = "flamefit.pick_face"
    bl_label = "Pick Face"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Face", default=-1, min=-1)

    def execute(self, context):
        context.scene.flamefit.face_pick = self.index
        return {"FINISHED"}


# --- Import ---------------------------------------------------------------------------------
class IMPORT_SCENE_OT_flamefit(ImportOptions, Operator, ImportHelper):
    """Import a FlameFit result bundle (result.json): head with shape keys, material, lights, camera"""

    bl_idname = "import_scene.flamefit"
    bl_label = "Import FlameFit Result"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        ok, message, name = import_result(context, self.filepath, self.import_options())
        show_import(context, ok, message, name)
        if not ok:
            self.report({"ERROR"}, f"FlameFit: {message}")
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}


def show_import(context, ok: bool, message: str, name: str) -> None:
    """An import is the user's next action: the panel says what it did (gone again with Ctrl-Z)
    instead of an earlier fit's "Fit failed" and its error."""
    state = context.window_manager.flamefit
    if job_runner.is_running("fit"):
        return  # the panel shows the running fit
    state.error_kind = ""
    if ok:
        state.status, state.imported, state.error = message, name, ""
    else:
        state.status, state.imported, state.error = "", "", message


def menu_import(self, context):
    self.layout.operator(IMPORT_SCENE_OT_flamefit.bl_idname, text="FlameFit result (.json)")


class FLAMEFIT_OT_import_last(Operator):
    """Import the last fitted result again"""

    bl_idname = "flamefit.import_last"
    bl_label = "Import Again"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return bool(context.scene.flamefit.last_result)

    def execute(self, context):
        ok, message, name = import_result(context, context.scene.flamefit.last_result,
                                          context.scene.flamefit.import_options())
        show_import(context, ok, message, name)
        self.report({"INFO"} if ok else {"ERROR"}, message)
        return {"FINISHED"} if ok else {"CANCELLED"}


# --- Views (several photos of one person) -----------------------------------------------------
class FLAMEFIT_OT_set_view(Operator):
    """Show this photo: its camera becomes the scene camera, the head takes its expression and the lights its light"""

    bl_idname = "flamefit.set_view"
    bl_label = "Show Photo"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="View", default=0, min=0)
    result: StringProperty(name="Result", default="", description="The result's collection (empty: the active one)")

    def execute(self, context):
        from ..blender import views

        coll = bpy.data.collections.get(self.result) if self.result else views.scene_result(context)
        if coll is None or views.VIEWS_PROP not in coll:
            self.report({"ERROR"}, "FlameFit: select a FlameFit result first")
            return {"CANCELLED"}
        try:
            views.apply_view(context.scene, coll, self.index)
        except ValueError as exc:
            self.report({"ERROR"}, f"FlameFit: {exc}")
            return {"CANCELLED"}
        return {"FINISHED"}


# --- Set up backend ------------------------------------------------------------------------
def torch_choice(prefs):
    """The torch_plan for Set up backend: by the machine, or as the preferences say."""
    build = getattr(prefs, "torch_build", "AUTO")
    if build == "CPU":
        return setup_backend.TORCH_CPU_INDEX, "PyTorch CPU build (chosen in the preferences)"
    if build == "DEFAULT":
        return None
    return setup_backend.torch_plan()


def start_setup(context, venv_dir: str = "", pip_args=(), base_python: str = "", env=None, torch="machine",
                prepare_model=None):
    """Start Set up backend. `torch`: "machine" = torch_choice(prefs), None = no separate torch
    step, or a torch_plan pair; extra `pip_args` (tests' offline installs) default to neither a
    torch step nor the model preparation."""
    prefs = get_prefs(context)
    if torch == "machine":
        torch = None if pip_args else torch_choice(prefs)
    if prepare_model is None:
        prepare_model = not pip_args
    base, why = setup_backend.find_base_python(base_python or bpy.path.abspath(prefs.base_python or ""))
    if not base:
        return None, why
    source = setup_backend.backend_source_dir()
    if not source:
        return None, "the backend source is missing from the add-on; reinstall the add-on zip"
    job = setup_backend.SetupJob(venv_dir or managed_venv_dir(), source, base, pip_args=pip_args,
                                 torch=torch, prepare_model=prepare_model,
                                 env=backend_process.child_env(env) if env else None)
    if job.finished is not None:
        return None, job.finished.message
    state = context.window_manager.flamefit
    state.setup_running, state.setup_failed, state.setup_progress = True, False, 0.0
    state.setup_status = f"Preparing… ({job.torch_choice})" if job.torch_choice else "Preparing…"
    state.setup_lines, state.setup_log = "", job.log_path
    return job, ""


def setup_step(context, job) -> StepResult:
    state = context.window_manager.flamefit
    res = job.step()
    state.setup_lines = "\n".join(job.lines(4))  # pip's own last lines, streamed to the panels
    if res.state == RUNNING:
        state.setup_progress = job.fraction
        state.setup_status = res.message
    else:
        state.setup_running = False
        state.setup_progress = 1.0 if res.state == DONE else state.setup_progress
        state.setup_failed = res.state != DONE
        state.setup_status = res.message
    _redraw(context)
    return res


class FLAMEFIT_OT_setup_backend(JobOperator, Operator):
    """Install the bundled FlameFit backend with PyTorch into a new Python environment in Blender's user data folder (needs the internet, takes minutes)"""

    bl_idname = "flamefit.setup_backend"
    bl_label = "Set up backend"

    job_kind = "setup"
    interval = 0.25
    report_prefix = "FlameFit set-up"

    def start(self, context):
        return start_setup(context)

    def step(self, context, job):
        return setup_step(context, job)

    def start_failed(self, context, error):
        state = context.window_manager.flamefit
        state.setup_status, state.setup_failed = error, True

    def stopped(self, context):
        context.window_manager.flamefit.setup_running = False


class FLAMEFIT_OT_cancel_setup(Operator):
    """Stop setting up the backend"""

    bl_idname = "flamefit.cancel_setup"
    bl_label = "Cancel Set-up"

    @classmethod
    def poll(cls, context):
        return job_runner.is_running("setup")

    def execute(self, context):
        job_runner.active("setup").cancel()
        return {"FINISHED"}


classes = (FLAMEFIT_OT_choose_photos, FLAMEFIT_OT_find_faces, FLAMEFIT_OT_pick_face, FLAMEFIT_OT_fit_photo, FLAMEFIT_OT_cancel_fit,
           IMPORT_SCENE_OT_flamefit, FLAMEFIT_OT_import_last, FLAMEFIT_OT_set_view, FLAMEFIT_OT_setup_backend, FLAMEFIT_OT_cancel_setup)
