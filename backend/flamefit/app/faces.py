"""`flamefit faces PHOTO`: the faces of a photo, numbered as `fit --face N` counts them, and the
one a fit would take, without fitting (the Blender add-on shows them so the user can pick).

The listing is detect.find_faces (the same detector, order and choice cues as a fit); the
picture is the photo, downscaled, with each box drawn and numbered and the chosen one marked.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import FlameFitError
from ..fsutil import atomic_write_bytes

PICTURE_SIDE = 1024  # the picture's longer side at most (a preview, not a copy of the photo)
CHOSEN_RGB, OTHER_RGB = (40, 220, 60), (255, 200, 0)


def list_faces(photo_path, detector: str | None = None, picture=None, overwrite: bool = False) -> dict:
    """The faces of the photo (INTERFACE.md section 5); writes the picture when asked."""
    from ..bundle.writer import check_path_text
    from ..image import detection_copy, load_photo
    from ..landmarks.detect import choice_order, choice_reason, find_faces

    target = _picture_target(picture, overwrite) if picture else None  # refused before any work
    check_path_text(Path(photo_path).absolute(), "photo file")
    photo = load_photo(photo_path)
    small, scale = detection_copy(photo.rgb)  # as the fit does (#11.6): boxes in photo pixels below
    found = find_faces(small, detector, photo.path.name, (photo.width, photo.height))
    chosen = choice_order(found.ranked)[0]
    faces = [{"index": i, **c, "box": [round(v / scale, 1) for v in c["box"]]} for i, c in enumerate(found.ranked)]
    listing = {"photo": {"path": str(photo.path), "width": photo.width, "height": photo.height},
               "detector": found.detector, "faces": faces, "chosen": chosen,
               "reason": choice_reason(found.ranked, chosen, None), "summary": summary(faces, chosen),
               "picture": None}
    if target:
        write_picture(photo.rgb, faces, chosen, target)
        listing["picture"] = str(target)
    return listing


def summary(faces: list[dict], chosen: int) -> str:
    """A few words on why the chosen face: what it is best at among the others."""
    if len(faces) == 1:
        return "the only face"
    me, others = faces[chosen], [f for f in faces if f["index"] != chosen]
    words = [word for cue, word in (("size", "largest"), ("sharpness", "sharp"), ("centrality", "central"))
             if me[cue] >= max(f[cue] for f in others)]
    if me["cut"] < min(f["cut"] for f in others):
        words.append("whole")
    return f"the {' '.join(words)} one" if words else "the best total of size, sharpness and place"


def _picture_target(picture, overwrite: bool) -> Path:
    target = Path(picture).expanduser().absolute()
    if target.suffix.lower() != ".png":
        raise FlameFitError(f"--picture {target}: the picture is a PNG; give a name ending in .png")
    if not target.parent.is_dir():
        raise FlameFitError(f"--picture {target}: the folder {target.parent} does not exist")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FlameFitError(f"--picture {target} exists; choose another name or add --overwrite")
    if target.is_dir():
        raise FlameFitError(f"--picture {target} is a folder")
    return target


def write_picture(rgb: np.ndarray, faces: list[dict], chosen: int, target: Path) -> None:
    """The photo at most PICTURE_SIDE px, each box numbered (the chosen one green, thicker,
    its number on a filled tag so it reads even in a small preview), written atomically."""
    H, W = rgb.shape[:2]
    k = min(1.0, PICTURE_SIDE / max(H, W))
    out = cv2.resize(rgb, (max(1, round(W * k)), max(1, round(H * k))), interpolation=cv2.INTER_AREA) if k < 1 \
        else rgb.copy()
    side = max(out.shape[:2])
    # the numbers must read in the add-on's sidebar preview (150-400 px wide): ~6 % of the picture tall
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, side / 400
    for face in faces:
        x0, y0, x1, y1 = (round(v * k) for v in face["box"])
        mine = face["index"] == chosen
        colour, width = (CHOSEN_RGB, max(3, side // 150)) if mine else (OTHER_RGB, max(2, side // 300))
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, width, cv2.LINE_AA)
        text = f"{face['index']}" + (" chosen" if mine else "")
        (tw, th), base = cv2.getTextSize(text, font, font_scale, max(1, width // 2))
        tx, ty = min(max(0, x0), out.shape[1] - tw - 8), y0 - 6 if y0 - th - base - 10 >= 0 else y1 + th + 8
        ty = min(ty, out.shape[0] - base - 2)
        cv2.rectangle(out, (tx, ty - th - 6), (tx + tw + 8, ty + base), colour, -1)
        cv2.putText(out, text, (tx + 4, ty - 2), font, font_scale, (0, 0, 0), max(1, width // 2), cv2.LINE_AA)
    ok, data = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    if not ok:
        raise FlameFitError(f"--picture {target}: OpenCV could not encode the picture")
    atomic_write_bytes(target, data.tobytes())


def listing_lines(listing: dict) -> list[str]:
    """The listing for a person (without --json)."""
    p, n = listing["photo"], len(listing["faces"])
    lines = [f"{n} face{'s' if n != 1 else ''} in {p['path']} ({p['width']}x{p['height']} px, "
             f"detector {listing['detector']}), numbered left to right (fit --face N):"]
    for f in listing["faces"]:
        x0, y0, x1, y1 = f["box"]
        mark = "*" if f["index"] == listing["chosen"] else " "
        lines.append(f"{mark} {f['index']}  box {x0:.0f},{y0:.0f} - {x1:.0f},{y1:.0f}  score {f['detector_score']:.2f}  "
                     f"size {f['size']:.2f} sharpness {f['sharpness']:.2f} centrality {f['centrality']:.2f} "
                     f"cut {f['cut']:.2f}  total {f['total']:.2f}")
    lines.append(f"chosen: {listing['chosen']}, {listing['summary']} ({listing['reason']})")
    if listing["picture"]:
        lines.append(f"picture: {listing['picture']}")
    return lines
