"""What the texture-space build needs from a fit of one photo, and how it gets it.

`PhotoView` is the fitted head as the camera saw it: the photo in linear RGB, the
fitted mesh (world space), the camera and the SH light. `fit_photo_view` runs
FlameFit's fitter exactly as `flamefit batch` does for each photo (same `fit_photo`,
landmark sidecar files beside the photo, the configured texture space), without the
texture stage (the build unwraps the albedo itself) and without writing a bundle.
Tests plug in other functions with the same signature (BuildOptions.fitter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..render import PinholeCamera

MAX_FACE_PIXELS = 768  # the photo is shrunk so that the fitting crop is at most this wide


@dataclass
class PhotoView:
    image_linear: np.ndarray  # (H, W, 3) float32 linear RGB in [0, 1]
    vertices: np.ndarray  # (V, 3) fitted mesh, world space
    camera: PinholeCamera  # one camera, in the pixels of image_linear
    sh: np.ndarray  # (9, 3) fitted SH light (renderer convention)
    image_srgb_max: np.ndarray | None = None  # (H, W) max sRGB channel in [0, 1]: clipping
    info: dict = field(default_factory=dict)  # metrics etc., stored with the result


def photo_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(linear RGB float32, max sRGB channel) of a photo file."""
    from ..image import load_photo

    return _arrays(load_photo(path).rgb)


def _arrays(rgb8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from ..image import srgb_to_linear

    rgb = rgb8.astype(np.float32) / 255.0
    return srgb_to_linear(rgb).astype(np.float32), rgb.max(-1)


def fit_photo_view(path: Path, model, context: dict) -> PhotoView:
    """Fit one photo with FlameFit's fitter. context: "fit_options" (FitOptions fields),
    "detector", "texture_space" (a loaded space or None)."""
    import cv2
    import torch

    from ..bundle.batch import sidecar_landmarks
    from ..fitting import FitOptions, fit_photo

    fields = {"stages": ("landmarks", "photometric"), **context.get("fit_options", {})}
    result = fit_photo(path, model, FitOptions(**fields), landmarks=sidecar_landmarks(Path(path)),
                       detector=context.get("detector", "dlib"), texture_space=context.get("texture_space"),
                       device="cpu")
    rgb = result.photo.rgb
    scale = min(1.0, MAX_FACE_PIXELS / max(1, result.frame.crop.side))
    camera = result.frame.camera(None, "cpu")
    if scale < 1.0:
        size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / result.photo.width, size[1] / result.photo.height
        s = torch.tensor([[sx, sy]], dtype=camera.focal.dtype)
        camera = PinholeCamera(camera.focal * s, camera.principal * s, camera.R, camera.t, znear=camera.znear)
    linear, srgb_max = _arrays(rgb)
    sh = result.state.sh[0].detach().cpu().numpy()
    info = {"metrics": result.metrics, "fit_seconds": round(sum(v for k, v in result.timings.items() if k != "total"), 3),
            "detection": {k: v for k, v in result.detection.items() if k in ("source", "detector", "num_faces")}}
    return PhotoView(linear, result.vertices, camera, sh, srgb_max, info)
