"""The "FlameFit" tab in the 3D view's sidebar (N panel)."""

import json
import os

import bpy
from bpy.types import Panel

from ..io import faces
from ..io.options import FIT_OPTIONS, IMPORT_OPTIONS
from . import job_runner
from .preferences import draw_backend_box, draw_progress, wrap_for
from .props import current_faces, fit_photos

STATUS_ROWS = 3  # a running fit's status at the default sidebar width ("Matching the photo's / colours and light (5/7) · / 63/90 · 68% closer")


def format_metrics(metrics: dict) -> list:
    labels = {"landmark_error_px": ("Landmarks", "{:.2f} px"),
              "landmark_error_eye_fraction": ("  of eye dist.", "{:.1%}"),
              "photometric_error": ("Photometric", "{:.4f}"),
              "psnr_db": ("PSNR", "{:.1f} dB")}
    out = []
    for key, value in metrics.items():
        if key == "views" and value == 1:
            continue  # a one-photo result: "Views 1" says nothing
        label, fmt = labels.get(key, (key.replace("_", " ").capitalize(), "{:.4g}"))
        try:
            out.append((label, fmt.format(value)))
        except (ValueError, TypeError):
            continue
    return out


def undone(state) -> bool:
    """Did Ctrl-Z take back the import the status tells of? (The window manager's state is
    not undone with the scene.)"""
    return bool(state.imported) and state.imported not in bpy.data.collections


def draw_faces(layout, context, settings, ready) -> None:
    """Face: Find Faces, then one button per face (the picked one pressed) and the numbered
    picture; a single face needs no choice."""
    col = layout.column(align=True)
    col.label(text="Face")
    if job_runner.is_running("faces"):
        col.label(text=context.window_manager.flamefit.faces_status or "Finding faces…", icon="TIME")
    else:
        row = col.row()
        row.enabled = ready and bool(settings.photo)
        row.operator("flamefit.find_faces", icon="VIEWZOOM")
    listing = current_faces(settings)
    if listing is None:
        return
    for line in wrap_for(context, faces.headline(listing)):
        col.label(text=line)
    if len(listing["faces"]) > 1:
        picked = settings.face_pick if 0 <= settings.face_pick < len(listing["faces"]) else listing["chosen"]
        for face in listing["faces"]:
            text = faces.row(face, listing["photo"]["width"]) + (" (chosen)" if face["index"] == listing["chosen"] else "")
            col.operator("flamefit.pick_face", text=text, depress=face["index"] == picked).index = face["index"]
    image = bpy.data.images.get(faces.PICTURE)
    if image is not None and image.preview is not None and bpy.path.abspath(image.filepath) == settings.faces_picture:
        region = getattr(context, "region", None)
        scale = context.preferences.system.ui_scale if context.preferences else 1.0
        # as wide as the sidebar (template_icon's unit is 20 px)
        units = max(6.0, (region.width - 40 * scale) / (20 * scale)) if region is not None and region.width > 1 else 10.0
        col.template_icon(icon_value=image.preview.icon_id, scale=units)


class FLAMEFIT_PT_main(Panel):
    bl_label = "FlameFit"
    bl_idname = "FLAMEFIT_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlameFit"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.flamefit
        state = context.window_manager.flamefit
        ready = draw_backend_box(layout, context, show_path=False)

        col = layout.column(align=True)
        col.label(text="Photo (or several of one person)")
        row = col.row(align=True)
        row.prop(settings, "photo", text="")
        row.operator("flamefit.choose_photos", text="", icon="DOCUMENTS")
        photos = fit_photos(settings)
        if len(photos) > 1:
            names = ", ".join(os.path.basename(p) for p in photos)
            for i, line in enumerate(wrap_for(context, f"{len(photos)} photos, one head: {names}")):
                col.label(text=line, icon="IMAGE_DATA" if i == 0 else "BLANK1")
        if len(photos) > 1:  # a profile has no detectable points: each photo's own file
            for line in wrap_for(context, "Landmarks (optional; empty: detected)"):
                col.label(text=line)
            for item in settings.photos:
                for line in wrap_for(context, os.path.basename(bpy.path.abspath(item.path))):
                    col.label(text=line, icon="BLANK1")
                col.prop(item, "landmarks", text="")
        else:
            col.label(text="Landmarks (optional)")
            col.prop(settings, "landmarks_file", text="")
        draw_faces(layout, context, settings, ready)
        col = layout.column(align=True)
        for option in FIT_OPTIONS:  # one per row: labels are never cut
            col.prop(settings, option.name)

        running = job_runner.is_running("fit")
        if running:  # Cancel where Fit Photo was: it does not move as the status below wraps
            row = layout.row()
            row.scale_y = 1.4
            row.operator("flamefit.cancel_fit", icon="CANCEL")
            draw_progress(layout, state.progress, state.status or "Fitting…", context, rows=STATUS_ROWS)
        else:
            row = layout.row()
            row.scale_y = 1.4
            row.enabled = ready
            several = len(photos) > 1
            row.operator("flamefit.fit_photo", text=f"Fit {len(photos)} Photos" if several else "Fit Photo", icon="USER")
            if state.status and not undone(state):
                col = layout.column(align=True)
                for line in wrap_for(context, state.status):
                    col.label(text=line)
        stale = state.error_kind == "backend" and ready  # e.g. "not set up" after one was chosen
        if state.error and not running and not stale:
            box = layout.box()
            box.alert = True
            col = box.column(align=True)
            col.label(text="Error", icon="ERROR")
            for line in wrap_for(context, state.error):
                col.label(text=line)


class FLAMEFIT_PT_options(Panel):
    bl_label = "Import Options"
    bl_parent_id = "FLAMEFIT_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlameFit"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.flamefit
        col = self.layout.column()
        for option in IMPORT_OPTIONS:
            col.prop(settings, option.name)
        col.prop(settings, "output_dir")


class FLAMEFIT_PT_result(Panel):
    bl_label = "Last Result"
    bl_parent_id = "FLAMEFIT_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlameFit"

    @classmethod
    def poll(cls, context):
        return bool(context.scene.flamefit.last_result)

    def draw(self, context):
        settings = context.scene.flamefit
        layout = self.layout
        col = layout.column(align=True)
        for i, line in enumerate(wrap_for(context, settings.last_model) if settings.last_model else []):
            col.label(text=line, icon="USER" if i == 0 else "BLANK1")
        try:
            metrics = json.loads(settings.last_metrics or "{}")
        except ValueError:
            metrics = {}
        for label, value in format_metrics(metrics) + [("Light approx.", f"{settings.last_light_error:.1%}")]:
            row = col.split(factor=0.55)
            row.label(text=label)
            row.label(text=value)
        try:
            changes = json.loads(settings.last_changes or "[]")
        except ValueError:
            changes = []
        if changes:  # what the import did to the scene (each an Import Option)
            box = layout.box()
            col = box.column(align=True)
            col.label(text="Scene changes", icon="SCENE_DATA")
            for change in changes:
                for line in wrap_for(context, "• " + change):
                    col.label(text=line)
        col = layout.column(align=True)
        col.label(text="Bundle", icon="FILE_FOLDER")
        folder = os.path.dirname(bpy.path.abspath(settings.last_result))
        for line in wrap_for(context, folder):
            col.label(text=line)
        row = layout.row(align=True)
        row.operator("wm.path_open", text="Open Folder", icon="FILEBROWSER").filepath = folder
        row.operator("flamefit.import_last", text="Import Again", icon="IMPORT")


class FLAMEFIT_PT_views(Panel):
    """The photos of the selected result: one button each shows that photo's camera, expression and light"""

    bl_label = "Views"
    bl_parent_id = "FLAMEFIT_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlameFit"

    @classmethod
    def poll(cls, context):
        from ..blender import views

        coll = views.scene_result(context)
        return coll is not None and len(views.states(coll)) > 1

    def draw(self, context):
        from ..blender import views

        coll = views.scene_result(context)
        states, active = views.states(coll), views.active_index(coll)
        col = self.layout.column(align=True)
        for line in wrap_for(context, f"{coll.name}: {len(states)} photos"):
            col.label(text=line, icon="OUTLINER_COLLECTION")
        col = self.layout.column(align=True)
        for k, state in enumerate(states):
            error = state.get("metrics", {}).get("landmark_error_px")
            text = state["name"] + (f"  ·  {error:.1f} px" if isinstance(error, (int, float)) else "")
            op = col.operator("flamefit.set_view", text=text, icon="CAMERA_DATA", depress=k == active)
            op.index, op.result = k, coll.name


classes = (FLAMEFIT_PT_main, FLAMEFIT_PT_views, FLAMEFIT_PT_options, FLAMEFIT_PT_result)
