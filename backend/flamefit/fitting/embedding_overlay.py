"""A contact sheet of the embedding renders, to check the automatic embedding by eye."""

from __future__ import annotations

import cv2
import numpy as np

USED = (0, 220, 0)
DISCARDED = (255, 40, 40)
FINAL = (255, 230, 0)
COLUMNS = 4


def _label(image, text):
    cv2.putText(image, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def save_overlay(path, views, detections, used, final_points) -> None:
    """Each view with its detected points (green: used, red: not used), then the frontal
    view with the final embedded points projected (yellow, numbered)."""
    tiles = []
    for view, found, view_used in zip(views, detections, used):
        tile = view.image.copy()
        if isinstance(found, str):
            _label(tile, f"yaw {view.yaw} pitch {view.pitch}: no face")
        else:
            for (x, y), ok in zip(found.points, view_used):
                if not np.isfinite([x, y]).all():  # a point this view has none of (e.g. the jaw line)
                    continue
                cv2.circle(tile, (int(round(x - 0.5)), int(round(y - 0.5))), 2, USED if ok else DISCARDED, -1, cv2.LINE_AA)
            _label(tile, f"yaw {view.yaw} pitch {view.pitch} {found.detector}")
        tiles.append(tile)
    frontal = views[0]
    tile = frontal.image.copy()
    for n, (x, y) in enumerate(frontal.project(final_points)):
        cv2.circle(tile, (int(round(x - 0.5)), int(round(y - 0.5))), 2, FINAL, -1, cv2.LINE_AA)
        cv2.putText(tile, str(n), (int(x) + 3, int(y) - 3), cv2.FONT_HERSHEY_PLAIN, 0.7, FINAL, 1)
    _label(tile, "final embedding (frontal)")
    tiles.append(tile)
    while len(tiles) % COLUMNS:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + COLUMNS], axis=1) for r in range(0, len(tiles), COLUMNS)]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])
