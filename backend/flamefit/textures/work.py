"""The texture-space build's work folder beside the output: one npz per photo, written
under a temporary name and renamed, so an interruption never leaves a partial result
(the worker processes that fill it: flamefit.app.texture_space_build)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import FlameFitError
from ..fsutil import atomic_save_npz, atomic_write_text

WORK_VERSION = 1  # layout of the per-photo results; a resume needs the same
SETTINGS_FILE = "settings.json"  # written first into every work folder (with unwrapped/: what makes one)


def work_dir_for(output: Path) -> Path:
    return output.with_name(output.stem + ".work")


def photo_id(photos_dir: Path, photo: Path) -> str:
    """Stable file-name-safe id: the photo's stem + a hash of its path in the folder."""
    rel = photo.relative_to(photos_dir).as_posix()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in photo.stem)[:60]
    return f"{safe}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def check_work_dir(root: Path, resume: bool) -> bool:
    """Whether `root` holds a build's work to resume; refused before any fitting: anything
    but a folder; a folder holding anything but a build's work (neither settings.json nor
    unwrapped/), so a user's folder is never written into; a build's work unless --resume.
    An empty folder is used. FlameFit never removes or empties a work folder."""
    root = Path(root)
    if os.path.lexists(root) and not root.is_dir():
        raise FlameFitError(f"{root}: exists and is not a folder (the build keeps its work there); "
                            "move it or choose another -o")
    if not root.is_dir() or not any(root.iterdir()):
        return False
    if not (root / SETTINGS_FILE).is_file() and not (root / "unwrapped").is_dir():
        raise FlameFitError(f"{root}: exists and is not a texture-space build's work folder "
                            f"(neither {SETTINGS_FILE} nor unwrapped/); "
                            "FlameFit writes into no other folder: move it or choose another -o")
    if not resume:
        raise FlameFitError(f"{root}: a build was started here before; pass --resume to continue it, "
                            "or remove the folder to start over (--overwrite never removes it)")
    return True


# ----------------------------------------------------------------------------- work folder


class WorkFolder:
    """Per-photo results of a build; safe to interrupt at any moment."""

    def __init__(self, root: Path, settings: dict, resume: bool):
        self.root = Path(root)
        self.unwrapped = self.root / "unwrapped"
        self.failed = self.root / "failed"
        settings_file = self.root / SETTINGS_FILE
        if check_work_dir(self.root, resume):
            if settings_file.exists():
                old = _read_json(settings_file)
                if not isinstance(old, dict):
                    _damaged(settings_file, "not a JSON object")
                changed = {k for k in settings if old.get(k) != settings[k]}
                if changed:
                    raise FlameFitError(f"{self.root}: cannot resume, the build settings changed "
                                        f"({', '.join(sorted(changed))}); use the earlier settings or a new output")
            self.check()  # a damaged folder is refused before any photo is fitted
        # settings.json first: it marks the folder as a build's (check_work_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(settings_file, json.dumps(settings, indent=2))
        self.unwrapped.mkdir(exist_ok=True)
        self.failed.mkdir(exist_ok=True)
        for leftover in [*self.unwrapped.glob(".*.tmp*"), *self.failed.glob(".*.tmp*")]:
            leftover.unlink(missing_ok=True)  # from a process killed while writing

    def check(self) -> None:
        """Refuse damaged stored results (cheap: zip members, their .npy headers and JSON;
        no arrays decoded), and a zip bomb before hours of fitting."""
        from ..errors import ModelFileError
        from ..models.safe_pickle import npz_headers

        for path in sorted(self.unwrapped.glob("*.npz")):
            try:
                names = set(npz_headers(path))
            except ModelFileError as exc:
                _damaged(path, exc.problem)
            if not {"albedo", "confidence", "info"} <= names:
                _damaged(path, f"holds {sorted(names)}")
        self.failures()

    def done(self) -> set[str]:
        names = {p.name[:-4] for p in self.unwrapped.glob("*.npz")}
        return names | {p.name[:-5] for p in self.failed.glob("*.json")}

    def save(self, pid: str, albedo: np.ndarray, confidence: np.ndarray, info: dict) -> None:
        atomic_save_npz(self.unwrapped / f"{pid}.npz", compressed=False, albedo=albedo.astype(np.float16),
                        confidence=np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8),
                        info=np.array(json.dumps(info, default=str)))

    def save_failure(self, pid: str, photo: Path, message: str) -> None:
        atomic_write_text(self.failed / f"{pid}.json", json.dumps({"photo": str(photo), "error": message}))

    def failures(self) -> dict:
        failures = {}
        for path in sorted(self.failed.glob("*.json")):
            entry = _read_json(path)
            if not isinstance(entry, dict) or not {"photo", "error"} <= entry.keys():
                _damaged(path, "not a failure record")
            failures[entry["photo"]] = entry["error"]
        return failures

    def load_all(self):
        """(ids, X (N, P, 3) float32, W (N, P) float32, infos) of every stored photo."""
        from ..models.safe_pickle import load_npz

        files = sorted(self.unwrapped.glob("*.npz"))
        ids, xs, ws, infos = [], [], [], []
        shape = None  # the first photo's albedo shape: every other must match it
        for f in files:
            try:
                data = load_npz(f, only={"albedo", "confidence", "info"}, allow_pickle=False)  # bounded
                albedo = data["albedo"].astype(np.float32)
                confidence = data["confidence"].astype(np.float32).reshape(-1) / 255.0
                info = json.loads(str(data["info"]))
            except Exception as exc:  # noqa: BLE001 - zip, npy or JSON damage: all one refusal
                _damaged(f, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if albedo.ndim != 3 or albedo.shape[0] != 3 or confidence.size != albedo[0].size or \
                    (shape is not None and albedo.shape != shape):
                _damaged(f, f"albedo {albedo.shape} / confidence {confidence.shape} do not match the others")
            shape = albedo.shape
            xs.append(albedo.reshape(3, -1).T)
            ws.append(confidence)
            infos.append(info)
            ids.append(f.name[:-4])
        if not files:
            return ids, np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), infos
        return ids, np.stack(xs), np.stack(ws), infos


def _damaged(path: Path, problem: str):
    raise FlameFitError(f"{path}: damaged build result ({problem}); delete this file and run again with --resume "
                        "(a photo whose result is deleted is fitted again)")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        _damaged(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

