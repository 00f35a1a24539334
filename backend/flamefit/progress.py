"""Progress reporting: one callback, two presentations.

The fitter calls `progress(event)` with the dicts of INTERFACE.md section 2:
{"event": "stage", ...}, {"event": "progress", ...}, {"event": "done", ...},
{"event": "error", ...}. `JsonProgress` prints each as one JSON line on stdout (the
Blender add-on reads them); `BarProgress` shows tqdm bars on stderr in a terminal;
`NullProgress` drops them.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Callable

from .errors import FlameFitError

ProgressCallback = Callable[[dict], None]



class NullProgress:
    def __call__(self, event: dict) -> None:
        pass

    def close(self) -> None:
        pass


class JsonProgress:
    """One JSON object per line on `stream` (stdout), flushed at once."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.broken = False

    def __call__(self, event: dict) -> None:
        if self.broken:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.items()}
        try:
            self.stream.write(json.dumps(clean) + "\n")
            self.stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or the reader went away (`| head -1`)
            self.broken = True
            raise FlameFitError("stdout was closed by the program reading --json-progress; stopped") from None

    def close(self) -> None:
        pass


class BarProgress:
    """tqdm bars on stderr, one per stage (silent when stderr is not a terminal)."""

    def __init__(self, stream=None, label: str = ""):
        self.stream = stream or sys.stderr
        self.label = label
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "stage":
            self.close()
            desc = f"{self.label}{event['stage']:<11s}"
            self.bar = tqdm(total=1, desc=desc, file=self.stream, leave=True, disable=None,
                            dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total}{postfix}")
        elif kind == "progress" and self.bar is not None:
            if self.bar.total != event.get("total"):
                self.bar.total = event.get("total")
            self.bar.n = event.get("step", 0)
            loss = event.get("loss")
            if loss is not None:
                self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            self.bar.refresh()
        elif kind in ("done", "error"):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            if self.bar.n < (self.bar.total or 0):  # a stage without steps, or one that stopped early
                self.bar.n = self.bar.total
                self.bar.refresh()
            self.bar.close()
            self.bar = None


class StageReporter:
    """What a fitting stage sees: `step(i, total, loss)`; throttles progress events."""

    def __init__(self, callback: ProgressCallback, stage: str, min_interval_steps: int = 1):
        self.callback = callback
        self.stage = stage
        self.every = max(1, int(min_interval_steps))

    def step(self, step: int, total: int, loss: float | None = None) -> None:
        if step % self.every == 0 or step == total:
            event = {"event": "progress", "stage": self.stage, "step": int(step), "total": int(total)}
            if loss is not None:
                event["loss"] = float(loss)
            self.callback(event)
