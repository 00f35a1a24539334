"""The "FlameFit" tab in the 3D view's sidebar (N panel)."""

import json

from bpy.types import Panel

from ..io.options import FIT_OPTIONS, IMPORT_OPTIONS
from . import job_runner
from .preferences import draw_backend_box, draw_progress, wrap


def format_metrics(metrics: dict) -> list:
    labels = {"landmark_error_px": ("Landmark error", "{:.2f} px"),
              "landmark_error_eye_fraction": ("  (eye distance)", "{:.1%}"),
              "photometric_error": ("Photometric error", "{:.4f}"),
              "psnr_db": ("PSNR", "{:.1f} dB")}
    out = []
    for key, value in metrics.items():
        label, fmt = labels.get(key, (key.replace("_", " ").capitalize(), "{:.4g}"))
        try:
            out.append((label, fmt.format(value)))
        except (ValueError, TypeError):
            continue
    return out


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

        layout.prop(settings, "photo")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.label(text="Stages:")
        for option in FIT_OPTIONS:
            if option.name.startswith("stage_"):
                row.prop(settings, option.name, toggle=True)
            else:
                col.prop(settings, option.name)

        running = job_runner.is_running("fit")
        if running:
            draw_progress(layout, state.progress, state.status or "Fitting…")
            layout.operator("flamefit.cancel_fit", icon="CANCEL")
        else:
            row = layout.row()
            row.scale_y = 1.4
            row.enabled = ready
            row.operator("flamefit.fit_photo", icon="USER")
            if state.status:
                for line in wrap(state.status, 38):
                    layout.label(text=line)
        if state.error and not running:
            box = layout.box()
            box.alert = True
            box.label(text="Error", icon="ERROR")
            for line in wrap(state.error, 38):
                box.label(text=line)


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
        if settings.last_model:
            col.label(text=settings.last_model, icon="USER")
        try:
            metrics = json.loads(settings.last_metrics or "{}")
        except ValueError:
            metrics = {}
        for label, value in format_metrics(metrics):
            row = col.row()
            row.label(text=label)
            row.label(text=value)
        row = col.row()
        row.label(text="Light approximation")
        row.label(text=f"{settings.last_light_error:.1%}")
        layout.operator("flamefit.import_last", icon="IMPORT")


classes = (FLAMEFIT_PT_main, FLAMEFIT_PT_options, FLAMEFIT_PT_result)
