"""Scene settings (saved with the .blend) and the window manager's runtime state (not saved).
The import and fit options are made from the tables in io/options.py."""

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

from ..io.options import FIT_OPTIONS, IMPORT_OPTIONS, as_keywords


def _bool_properties(options) -> dict:
    return {o.name: BoolProperty(name=o.label, default=o.default, description=o.description) for o in options}


class ImportOptions:
    """How a result becomes objects: shared by the scene settings (Fit Photo) and File > Import."""

    __annotations__ = _bool_properties(IMPORT_OPTIONS)

    def import_options(self) -> dict:
        return as_keywords(self, IMPORT_OPTIONS)


class FitOptions:
    """What the fit runs (the panel's stage and expression toggles)."""

    __annotations__ = _bool_properties(FIT_OPTIONS)

    def fit_options(self) -> dict:
        return as_keywords(self, FIT_OPTIONS)


def clear_faces(settings) -> None:
    """Forget the face list (another photo: its numbers would mean other faces)."""
    settings.faces_json, settings.faces_photo, settings.faces_picture, settings.face_pick = "", "", "", -1


def current_faces(settings):
    """The face listing of the photo now chosen, or None (none found yet, or another photo's)."""
    from ..io import faces

    photo = bpy.path.abspath(settings.photo) if settings.photo else ""
    return faces.parse(settings.faces_json) if photo and settings.faces_photo == photo else None


def picked_face(settings, photo: str = "") -> int:
    """The --face a fit of `photo` gets: the user's pick among several faces, else -1."""
    listing = current_faces(settings)
    if listing is None or (photo and bpy.path.abspath(photo) != settings.faces_photo):
        return -1
    return settings.face_pick if len(listing["faces"]) > 1 and settings.face_pick < len(listing["faces"]) else -1


def fit_photos(settings) -> list:
    """The photos Fit Photo fits together (absolute paths): the chosen several, else the one."""
    several = [bpy.path.abspath(p.path) for p in settings.photos]
    if len(several) > 1:
        return several
    return [bpy.path.abspath(settings.photo)] if settings.photo else []


def fit_landmarks(settings) -> list:
    """The Landmarks files of the photos fit_photos gives (absolute paths, '' where none): one per
    chosen photo, or the Landmarks field of the one photo."""
    if len(settings.photos) > 1:
        return [bpy.path.abspath(p.landmarks) if p.landmarks else "" for p in settings.photos]
    return [bpy.path.abspath(settings.landmarks_file) if settings.landmarks_file else ""] if settings.photo else []


def _photo_changed(self, context):
    if bpy.path.abspath(self.photo) != self.faces_photo:
        clear_faces(self)
    if self.photos and bpy.path.abspath(self.photo) not in [bpy.path.abspath(p.path) for p in self.photos]:
        self.photos.clear()  # another photo typed in: it alone is fitted


class FlameFitPhoto(PropertyGroup):
    path: StringProperty(name="Photo", subtype="FILE_PATH")
    # this photo's 68 points (a profile: no detector finds them); none: the detector's
    landmarks: StringProperty(name="Landmarks", subtype="FILE_PATH",
                              description="This photo's 68 iBUG points (.pts, .json or .npy) instead of the detector; "
                                          "leave it empty to detect them (a profile needs them)")


class FlameFitSceneSettings(ImportOptions, FitOptions, PropertyGroup):
    photo: StringProperty(name="Photo", subtype="FILE_PATH", description="The photo of one face to fit",
                          update=_photo_changed)
    # Choose Photos: several photos of one person, fitted together into one head (the first is
    # also `photo`); fewer than two: `photo` alone
    photos: CollectionProperty(type=FlameFitPhoto)
    # Find Faces: the backend's listing (INTERFACE.md section 5) of the photo `faces_photo`,
    # its numbered picture, and the face the user picked (-1: the backend's choice)
    faces_json: StringProperty(default="")
    faces_photo: StringProperty(default="", subtype="FILE_PATH")
    faces_picture: StringProperty(default="", subtype="FILE_PATH")
    face_pick: IntProperty(default=-1, min=-1)
    output_dir: StringProperty(name="Results folder", subtype="DIR_PATH",
                               description="Where result bundles go (empty: Blender's user data folder)")
    last_result: StringProperty(name="Last result", subtype="FILE_PATH")
    last_metrics: StringProperty(name="Last metrics", default="")
    last_light_error: FloatProperty(name="Light fit error", default=0.0)
    last_model: StringProperty(name="Head model", default="")
    last_changes: StringProperty(name="Scene changes", default="[]")
    landmarks_file: StringProperty(
        name="Landmarks", subtype="FILE_PATH",
        description="68 iBUG points (.pts, .json or .npy) to use instead of the detector, e.g. when no face is found")


class FlameFitRuntime(PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    imported: StringProperty(default="")  # the collection the status's import made
    error: StringProperty(default="")
    error_kind: StringProperty(default="")  # "backend": shown only while no backend is usable
    faces_status: StringProperty(default="")  # Find Faces while it runs
    setup_running: BoolProperty(default=False)
    setup_failed: BoolProperty(default=False)
    setup_progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    setup_status: StringProperty(default="")
    setup_lines: StringProperty(default="")  # pip's last output lines
    setup_log: StringProperty(default="")  # the set-up's log file


classes = (FlameFitPhoto, FlameFitSceneSettings, FlameFitRuntime)


def register_pointers():
    bpy.types.Scene.flamefit = PointerProperty(type=FlameFitSceneSettings)
    bpy.types.WindowManager.flamefit = PointerProperty(type=FlameFitRuntime)


def unregister_pointers():
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "flamefit"):
            del owner.flamefit
