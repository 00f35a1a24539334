"""One modal runner for the add-on's background jobs (Fit Photo, Set up backend).

A job is any object with `step() -> StepResult` (never blocking), `cancel()` and `stop()`
(blocking: nothing left running). An operator mixes in `JobOperator` and says how to
start its job and what one tick does; invoke/modal/cancel and the blocking execute for
scripts live here once. At most one job of each kind runs at a time.
"""

from __future__ import annotations

import time

from ..io.backend_process import CANCELLED, DONE, FAILED, RUNNING, StepResult

_ACTIVE: dict = {}  # kind -> running job


def active(kind: str):
    """The running job of this kind, or None."""
    return _ACTIVE.get(kind)


def is_running(kind: str) -> bool:
    return _ACTIVE.get(kind) is not None


def set_active(kind: str, job) -> None:
    _ACTIVE[kind] = job


def stop_all() -> None:
    """Unregister / file load: end every child process now."""
    for kind, job in list(_ACTIVE.items()):
        if job is not None:
            job.stop()
        _ACTIVE[kind] = None


class JobOperator:
    """Mixin for a bpy Operator that runs a job. Subclasses set `job_kind`, `interval`,
    `report_prefix`, `cancel_on_esc` and define `start(context) -> (job, error)` and
    `step(context, job) -> StepResult`; the hooks below default to doing nothing."""

    job_kind = ""
    interval = 0.1  # seconds between ticks
    report_prefix = "FlameFit"
    cancel_on_esc = False

    _timer = None
    _job = None

    # --- hooks ------------------------------------------------------------------------
    def start_failed(self, context, error: str) -> None:
        """The job could not start: show `error` where the user looks."""

    def stopped(self, context) -> None:
        """The job ended abnormally (exception, Blender closed the operator)."""

    def cancelling(self, context) -> None:
        """Esc was pressed; the job is stopping."""

    def done_message(self, context, res: StepResult) -> str:
        return f"{self.report_prefix}: {res.message}"

    # --- Operator API ---------------------------------------------------------------------
    @classmethod
    def poll(cls, context):
        return not is_running(cls.job_kind)

    def invoke(self, context, event):
        job, error = self.start(context)
        if job is None:
            return self._refuse(context, error)
        self._job = job
        set_active(self.job_kind, job)
        wm = context.window_manager
        self._timer = wm.event_timer_add(self.interval, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):  # from scripts: blocking (headless); the UI uses invoke
        job, error = self.start(context)
        if job is None:
            return self._refuse(context, error)
        set_active(self.job_kind, job)
        try:
            while (res := self.step(context, job)).state == RUNNING:
                time.sleep(self.interval)
        finally:
            job.stop()
            set_active(self.job_kind, None)
        return self._report(context, res)

    def modal(self, context, event):
        job = self._job
        try:
            if self.cancel_on_esc and event.type == "ESC" and event.value == "PRESS":
                job.cancel()
                self.cancelling(context)
                return {"RUNNING_MODAL"}
            if event.type != "TIMER":
                return {"PASS_THROUGH"}
            res = self.step(context, job)
        except Exception as exc:  # never leave a process behind
            job.stop()
            self._finish(context)
            self.stopped(context)
            return self._report(context, StepResult(FAILED, str(exc)))
        if res.state == RUNNING:
            return {"PASS_THROUGH"}
        self._finish(context)
        return self._report(context, res)

    def cancel(self, context):  # Blender closes the operator (e.g. file load, quit)
        if self._job is not None:
            self._job.stop()
        self._finish(context)
        self.stopped(context)

    # --- internals ------------------------------------------------------------------------
    def _refuse(self, context, error):
        self.start_failed(context, error)
        self.report({"ERROR"}, f"{self.report_prefix}: {error}")
        return {"CANCELLED"}

    def _finish(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        set_active(self.job_kind, None)

    def _report(self, context, res):
        if res.state == DONE:
            self.report({"INFO"}, self.done_message(context, res))
            return {"FINISHED"}
        self.report({"WARNING"} if res.state == CANCELLED else {"ERROR"}, f"{self.report_prefix}: {res.message}")
        return {"CANCELLED"}
