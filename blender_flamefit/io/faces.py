"""The words the panel shows for `flamefit faces --json` (INTERFACE.md section 5). No bpy."""

from __future__ import annotations

import json

PICTURE = "FlameFit faces"  # the Image holding the numbered picture (not saved: no users)
SHARP = 0.5  # below this sharpness cue a face is called blurred (the backend counts >= 0.45 of the sharpest as sharp)
CUT = 0.05  # more than this share outside the photo: cut


def parse(text: str):
    """The listing stored on the scene, or None (empty or not a listing)."""
    try:
        listing = json.loads(text) if text else None
    except ValueError:
        return None
    ok = isinstance(listing, dict) and isinstance(listing.get("faces"), list) and isinstance(listing.get("chosen"), int)
    return listing if ok else None


def where(face: dict, width: float) -> str:
    """left / centre / right of the photo, by the box's centre: which box is which number."""
    x = (face["box"][0] + face["box"][2]) / 2 / max(width, 1.0)
    return "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"


def row(face: dict, width: float) -> str:
    """One face: its number, where it is, its size and what speaks against it."""
    size = max(face["box"][2] - face["box"][0], face["box"][3] - face["box"][1])
    words = [f"{face['index']}  {where(face, width)}", f"{size:.0f} px"]
    if face.get("sharpness", 1.0) < SHARP:
        words.append("blurred")
    if face.get("cut", 0.0) > CUT:
        words.append(f"cut {face['cut']:.0%}")
    return ", ".join(words)


def headline(listing: dict) -> str:
    """'2 faces (chosen: 1, the sharp central whole one)', or that one face needs no choice."""
    n = len(listing["faces"])
    if n == 1:
        return "1 face: nothing to choose"
    return f"{n} faces, numbered left to right (chosen: {listing['chosen']}, {listing.get('summary', 'the best')})"
