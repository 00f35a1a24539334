"""Write a result bundle (INTERFACE.md section 3, schema.json), atomically and safely.

- `check_output` runs before any fitting: an existing folder may only be replaced with
  --overwrite and only when it is a FlameFit bundle (reader.is_bundle) holding nothing
  but its own files (reader.foreign_files); the parent must be writable, the name UTF-8
  and short enough for every name FlameFit makes from it (.NAME.tmp-PID, ...) on that
  file system. Without --overwrite the folder is claimed at once (claim.OutputClaim, an
  flock), so of two writers of one folder exactly one proceeds.
- Files go to a temporary sibling `.NAME.tmp-PID` (claim.make_temp_folder), renamed to
  NAME under the claim when complete. With --overwrite the old bundle is checked again
  and moved aside first; if a foreign file is found in it then, it is put back as it was
  and the write refused. After the swap only its own files are deleted (a file that
  appeared later keeps the old folder). Temporary siblings of dead writers are removed
  (claim.remove_stale_siblings). On any error or interrupt the temporary folder (and
  parent folders this run created) is removed, so OUT_DIR either holds a complete
  bundle or is as it was.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import signal
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import __version__
from ..errors import FlameFitError
from ..fsutil import require_writable
from ..image import linear_to_srgb
from ..models.head_model import EYE_JOINTS, JAW_JOINT, JOINT_NAMES, ShapeKeys
from ..textures.texture_mask import mask_png
from .claim import (
    BUNDLE_NAMES,
    MAX_PID,
    TEMP_MARKER,
    OutputClaim,
    free_temp_folder,
    make_temp_folder,
    remove_own_files,
    remove_stale_siblings,
    sibling_paths,
    temp_sibling,
)
from .pictures import overlay_picture, report_picture
from .reader import foreign_files, is_bundle
from .schema import RESULT_FILE, SCHEMA_VERSION, file_names, files_for, view_files_for

# key -> file name (schema.json): the subject's files; each view's (photo, overlay,
# report) are named by view_file_name.
FILES = {key: entry["path"] for key, entry in files_for(SCHEMA_VERSION).items() if key != "photo"}
VIEW_FILES = tuple(view_files_for(SCHEMA_VERSION))
TEXTURE_MASK = file_names("mask")[0]  # optional: written when the texture stage ran
JPEG_SUFFIXES = (".jpg", ".jpeg")
CAMERA_CONVENTION = ("X_cam = R X + t; x = fx X_cam.x / -X_cam.z + cx; y = -fy X_cam.y / -X_cam.z + cy "
                     "(pixels, y down, pixel centres at +0.5)")
LIGHT_CONVENTION = ("see section 4; the normals are in this view's camera frame (the world's for the first view: "
                    "its camera has no rotation)")
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def check_path_text(path, what: str = "path") -> None:
    """Refuse a path that cannot be written into result.json, mesh.obj and summary.csv
    as UTF-8 text (a file name in another encoding), before any work is done."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FlameFitError(f"{text.encode('utf-8', 'backslashreplace').decode()}: the {what} name is not valid "
                            "UTF-8; rename it") from None


@dataclass
class OutputTarget:
    """A checked bundle folder to write: `path` (absolute), its claim (held from the start
    without --overwrite) and the parent folders this run created (removed if it fails)."""

    path: Path
    overwrite: bool
    claim: OutputClaim
    created: list = field(default_factory=list)

    def abandon(self) -> None:
        """Release the claim and remove the (empty) parent folders this run created."""
        self.claim.release()
        for parent in reversed(self.created):
            with suppress(OSError):
                parent.rmdir()
        self.created = []


def check_replaceable(out: Path) -> None:
    """FlameFitError unless `out` is a bundle folder --overwrite may replace (all in it its own)."""
    if out.is_symlink() or not out.is_dir():
        raise FlameFitError(f"{out}: exists and is not a folder; FlameFit replaces only its own result bundles")
    if not is_bundle(out):
        raise FlameFitError(f"{out}: exists and is not a FlameFit result bundle (no valid result.json); "
                            "FlameFit replaces only its own bundles: choose another output folder")
    _refuse_foreign(out, foreign_files(out))


def _refuse_foreign(out: Path, foreign: list[str]) -> None:
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FlameFitError(f"{out}: holds {len(foreign)} item(s) FlameFit did not write ({shown}); --overwrite "
                            "replaces a bundle only when everything in it is its own: move them out first")


def _check_name_length(out: Path) -> None:
    """Refuse a name that the names FlameFit makes from it (.NAME.lock, .NAME.tmp-PID, the
    files inside) would make too long for the file system, before any work."""
    ancestor = next(p for p in out.parents if os.path.isdir(p))
    try:
        name_max, path_max = os.pathconf(ancestor, "PC_NAME_MAX"), os.pathconf(ancestor, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer: nothing to check
        return
    for part in out.parent.parts:
        if len(os.fsencode(part)) > name_max:
            raise FlameFitError(f"{out}: the folder name {part[:40]}... is too long: the file system allows "
                                f"{name_max} bytes per name")
    length = len(os.fsencode(out.name))
    extra = max(len(os.fsencode(p.name)) for p in sibling_paths(out)) - length
    if length + extra > name_max:
        raise FlameFitError(f"{out}: the output folder name is too long: {length} bytes, at most {name_max - extra} "
                            f"here (the file system allows {name_max} per name and FlameFit's temporary names "
                            f"beside it, such as .NAME.tmp-PID, add {extra})")
    inner = max(BUNDLE_NAMES | {TEMP_MARKER}, key=len)
    longest = len(os.fsencode(str(temp_sibling(out, "tmp", MAX_PID) / inner)))
    if longest >= path_max:
        raise FlameFitError(f"{out}: the output path is too long: FlameFit's files in it would have paths of "
                            f"{longest} bytes, and the file system allows {path_max - 1}")


def check_output(out_dir, overwrite: bool, claim: bool = True) -> OutputTarget:
    """Check that a bundle may be written at out_dir, before any fitting: an existing folder
    only with --overwrite and only when it is a FlameFit bundle holding only its own files;
    a writable parent; a UTF-8 name short enough for the file system; a lock path that is
    FlameFit's or free. Without --overwrite the folder is claimed at once (another writer
    fails)."""
    out = Path(out_dir).expanduser().absolute()
    check_path_text(out, "output folder")
    _check_name_length(out)  # first: a name too long cannot even be looked up
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FlameFitError(f"{out}: output folder already exists (use --overwrite to replace it)")
        check_replaceable(out)
    require_writable(out.parent, out)
    try:
        created = _make_parents(out)
    except OSError as exc:
        raise FlameFitError(f"{out.parent}: cannot create the folder ({exc.strerror or exc})") from None
    target = OutputTarget(out, overwrite, OutputClaim(out), created)
    try:
        if claim and not overwrite:
            target.claim.take()
            if out.exists():  # written by another process since the check above
                raise FlameFitError(f"{out}: output folder already exists (use --overwrite to replace it)")
        else:
            target.claim.check()  # a lock path that is not ours is refused now, not after the fit
    except BaseException:
        target.abandon()
        raise
    return target


@contextmanager
def _signals_blocked():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _make_parents(path: Path) -> list[Path]:
    created = []
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def write_bundle(result, out_dir, overwrite: bool = False, progress=None, extra_timings: dict | None = None,
                 final: bool = False) -> Path:
    """Write `result` (a fitting.FitResult) as a bundle at out_dir (a path, or the
    OutputTarget of check_output); returns its absolute path. `final`: the process does
    nothing after this write, so once committed, later interrupts are ignored (a complete
    bundle never comes with a failure exit)."""
    def fill(tmp: Path, out: Path) -> None:
        stages = result.stages or ["bundle"]
        if progress is not None:
            progress({"event": "stage", "stage": "bundle", "index": stages.index("bundle") + 1, "count": len(stages)})
        _write_files(result, tmp, out, progress, extra_timings, time.perf_counter())

    return write_folder(out_dir, fill, overwrite, final)


def write_folder(out_dir, fill, overwrite: bool = False, final: bool = False) -> Path:
    """The one way a bundle folder is written (write_bundle; a bundle sent back by a Ray
    worker, app/bundle_transfer.py): out_dir (a path or check_output's OutputTarget) is
    checked, fill(tmp, out) writes the files into a private temporary sibling with
    FlameFit's marker, and under the folder's claim, with signals blocked, it becomes
    out_dir: with --overwrite the old bundle is checked again, moved aside and put back if
    anything foreign appeared in it; on any error or interrupt out_dir is as it was.
    Returns the absolute path."""
    target = out_dir if isinstance(out_dir, OutputTarget) else check_output(out_dir, overwrite, claim=False)
    try:
        return _commit(target, fill, final)
    except BaseException as exc:
        target.abandon()  # the claim and the parent folders this run made
        if isinstance(exc, OSError):
            raise FlameFitError(f"{target.path}: cannot write the bundle ({exc.strerror or exc})") from None
        raise
    finally:
        target.claim.release()


def _commit(target: OutputTarget, fill, final: bool) -> Path:
    out = target.path
    tmp, old = None, temp_sibling(out, "old")
    moved = committed = False
    try:
        remove_stale_siblings(out)
        # `tmp` is known before anything is created there: an interrupt landing inside the
        # mkdir (a signal's Python handler runs between any two steps) is cleaned up below.
        tmp = free_temp_folder(out)
        make_temp_folder(tmp)
        fill(tmp, out)
        with target.claim:  # every writer of `out` commits under its claim
            with _signals_blocked():
                if out.exists() or out.is_symlink():
                    if not target.overwrite:
                        raise FlameFitError(f"{out}: output folder already exists (use --overwrite to replace it)")
                    check_replaceable(out)  # checked again: it may have changed while fitting
                    out.rename(old)
                    moved = True
                    _refuse_foreign(out, foreign_files(old))  # saved between the check and the rename
                (tmp / TEMP_MARKER).unlink()
                tmp.rename(out)
                committed = True
                if moved:
                    remove_own_files(old)  # anything that appeared in it since: kept, with the folder
                if final:
                    for number in _SIGNALS:  # pending ones are dropped when unblocked
                        signal.signal(number, signal.SIG_IGN)
    except BaseException:
        with _signals_blocked():
            if moved and not committed:
                with suppress(OSError):
                    old.rename(out)  # the old bundle back, as it was
            if committed or tmp is not None:
                shutil.rmtree(out if committed else tmp, ignore_errors=True)
            target.abandon()
        raise
    return out


def _write_files(result, tmp: Path, out: Path, progress, extra_timings, start) -> None:
    """The bundle's files of `result` into the temporary folder `tmp` (result.json names `out`)."""
    steps = 6

    def step(i):
        if progress is not None:
            progress({"event": "progress", "stage": "bundle", "step": i, "total": steps})

    write_mesh(result, tmp / FILES["mesh"])
    step(1)
    write_obj(result, tmp / FILES["obj"], tmp / FILES["mtl"])
    for k, view in enumerate(result.views, start=1):
        write_photo(view.photo, tmp / view_file_name("photo", k, view.photo))
    step(2)
    _write_png(tmp / FILES["albedo"], _albedo_u8(result.texture))
    if result.seen is not None:  # where albedo.png holds the photo's colour (textures/texture_mask.py)
        _write_png(tmp / TEXTURE_MASK, np.repeat(mask_png(result.seen)[..., None], 3, axis=2))
    step(3)
    write_params(result, tmp / FILES["params"])
    step(4)
    for k, view in enumerate(result.views, start=1):
        _write_png(tmp / view_file_name("overlay", k), overlay_picture(view))
        _write_png(tmp / view_file_name("report", k), report_picture(result, view))
    step(5)
    timings = dict(extra_timings or {})
    timings.update(result.timings)
    timings["bundle"] = round(time.perf_counter() - start, 3)
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
    result.timings = timings
    (tmp / RESULT_FILE).write_text(json.dumps(result_json(result, out), indent=2, allow_nan=False),
                                   encoding="utf-8")
    step(6)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise FlameFitError(f"{path}: cannot write image")


def photo_name(photo, view: int = 1) -> str:
    """photo.jpg for a JPEG photo (a PNG of a phone photo is ~5x larger), else photo.png
    (view k >= 2: photo-k.jpg / photo-k.png)."""
    png, jpg = file_names("photo", view)
    return jpg if Path(photo.path).suffix.lower() in JPEG_SUFFIXES else png


def view_file_name(key: str, view: int, photo=None) -> str:
    """The name of view `view`'s (1-based) file `key` (photo, overlay, report)."""
    return photo_name(photo, view) if key == "photo" else file_names(key, view)[0]


def write_photo(photo, path: Path) -> None:
    """The upright (EXIF-applied) RGB photo the fit saw: the add-on's camera background."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(path), np.ascontiguousarray(photo.rgb[..., ::-1]), params):
        raise FlameFitError(f"{path}: cannot write image")


def _albedo_u8(texture: np.ndarray) -> np.ndarray:
    return np.clip(np.round(linear_to_srgb(texture) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- arrays


VIEW_KEY = "view{k}Pose"  # view k >= 2's key (1-based k): what the other keys cannot show of its head
TURN_RATIO_LIMIT = 10.0  # Blender's slider range


def _turn_ratio(pose: np.ndarray, ref_pose: np.ndarray, joints) -> float:
    """How much of the reference's turn of `joints` (axis-angle, concatenated) `pose` has: the
    projection of one on the other (0 when the reference did not turn them)."""
    a, b = pose[list(joints)].ravel(), ref_pose[list(joints)].ravel()
    bb = float(b @ b)
    return 0.0 if bb < 1e-10 else float(np.clip(a @ b / bb, -TURN_RATIO_LIMIT, TURN_RATIO_LIMIT))


def view_shape_keys(result) -> tuple[ShapeKeys, np.ndarray]:
    """The first view's keys (result.shape_keys: the fitted head as a neutral Basis + shape
    keys with their fitted values, schema 2; the maths: HeadLayer.shape_keys) plus, per view k >= 2, a key "view{k}Pose", and each view's key
    values (N, K): `basis + values[k] . deltas` is view k's fitted head in the world, exactly.

    View k's values: expression keys its coefficients, the jaw / eyes key the share of the
    first view's turn it has (projection of its axis-angle on the first's), identity keys 0,
    its own view key 1. The view key's delta is the rest: view k's fitted vertices taken
    into the world (inv(world_to_camera_k)) minus what the other keys give. It holds the
    view's neck turn, its jaw's turn off the first view's axis, and the pose-dependent
    correctives; one key per view, because pose is not linear in any key (a neck key
    turned by a slider would not be a turn anyway)."""
    keys, N = result.shape_keys, len(result.views)
    S, E = len(result.identity), len(result.views[0].expression)
    K = len(keys.names)
    values = np.zeros((N, K + N - 1), np.float32)
    values[0, :K] = keys.values
    if N == 1:
        return keys, values
    names = list(keys.names) + [VIEW_KEY.format(k=k) for k in range(2, N + 1)]
    if len(set(names)) != len(names):
        raise RuntimeError(f"shape key names repeat: {names}")
    ref_pose = result.views[0].pose.astype(np.float64)
    deltas = [keys.deltas]
    for k in range(1, N):
        fitted = result.views[k]
        pose = fitted.pose.astype(np.float64)
        row = np.zeros(K, np.float32)
        row[S:S + E] = fitted.expression[:E]
        row[S + E] = _turn_ratio(pose, ref_pose, (JAW_JOINT,))
        if K > S + E + 1:  # the eyes key
            row[S + E + 1] = _turn_ratio(pose, ref_pose, EYE_JOINTS)
        camera_to_world = np.linalg.inv(view_world_to_camera(result, k))
        exact = result.views[k].vertices.astype(np.float64) @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
        deltas.append((exact - keys.vertices(row))[None].astype(np.float32))
        values[k, :K] = row
        values[k, K + k - 1] = 1.0
    ranges = np.concatenate([keys.ranges, np.tile(np.float32([0.0, 1.0]), (N - 1, 1))])
    return ShapeKeys(basis=keys.basis, names=tuple(names), deltas=np.concatenate(deltas), values=values[0],
                     ranges=ranges), values


def write_mesh(result, path: Path) -> None:
    model = result.model
    keys, view_values = view_shape_keys(result)
    np.savez(
        path,
        vertices=result.views[0].vertices.astype(np.float32),
        faces=model.faces.astype(np.int32),
        uv_coords=model.uv_coords.astype(np.float32),
        uv_faces=model.uv_faces.astype(np.int32),
        basis_vertices=keys.basis.astype(np.float32),
        shape_key_names=np.array(keys.names, dtype=str),
        shape_key_deltas=keys.deltas.astype(np.float32),
        shape_key_values=keys.values.astype(np.float32),
        shape_key_ranges=keys.ranges.astype(np.float32).reshape(-1, 2),
        landmark_face_idx=result.views[0].landmark_face_idx.astype(np.int32),
        landmark_bary=result.views[0].landmark_bary.astype(np.float32),
        view_shape_key_values=view_values,
        view_landmark_face_idx=np.stack([v.landmark_face_idx for v in result.views]).astype(np.int32),
        view_landmark_bary=np.stack([v.landmark_bary for v in result.views]).astype(np.float32),
    )


def world_to_camera(frame) -> np.ndarray:
    """(4, 4) world -> camera transform of the fit's camera (fitting.geometry.CameraFrame).
    INTERFACE.md section 4 gives the SH light for WORLD-space normals; the renderer shades
    with CAMERA-space normals. They agree because the fitter's camera has no rotation, so
    a rotated camera is refused here rather than written with its light in the wrong frame
    (rotating 9 SH coefficients with it would need the band-2 rotation matrices)."""
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = frame.extrinsics()
    if not np.allclose(matrix[:3, :3], np.eye(3), atol=1e-9):
        raise RuntimeError("the camera is rotated, but the bundle's SH light is in world space only for a camera "
                           "without rotation (INTERFACE.md section 4)")
    return matrix


def view_world_to_camera(result, k: int) -> np.ndarray:
    """(4, 4) view k's (0-based) camera from the world, the first view's camera frame
    (schema 3): the first view's own camera, else M_k inv(M_1) with M the head's rigid
    transform in each photo's camera."""
    if k == 0:
        return world_to_camera(result.views[0].frame)
    return result.views[k].world_to_camera(result.views[0])


def write_params(result, path: Path) -> None:
    """identity (S,), then each view's arrays stacked on a leading view axis (schema 3)."""
    N = len(result.views)
    stack = lambda get: np.stack([np.asarray(get(k), dtype=np.float32) for k in range(N)])
    fitted = lambda name: stack(lambda k: getattr(result.views[k], name))
    np.savez(
        path,
        identity=result.identity.astype(np.float32),
        expression=fitted("expression"),
        pose=fitted("pose"),
        translation=fitted("translation"),
        sh=fitted("sh"),
        focal_px=stack(lambda k: result.views[k].frame.intrinsics(None)[0]),
        principal_px=stack(lambda k: result.views[k].frame.intrinsics(None)[1]),
        world_to_camera=stack(lambda k: view_world_to_camera(result, k)),
    )


def write_obj(result, obj_path: Path, mtl_path: Path) -> None:
    model = result.model
    buffer = io.StringIO()
    names = ", ".join(view.photo.path.name for view in result.views)
    buffer.write(f"# FlameFit {__version__}: {model.name} fitted to {names}\n")
    buffer.write(f"mtllib {mtl_path.name}\n")
    np.savetxt(buffer, result.views[0].vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(buffer, model.uv_coords, fmt="vt %.6f %.6f")
    buffer.write("usemtl flamefit_albedo\n")
    corners = np.stack([model.faces + 1, model.uv_faces + 1], axis=-1).reshape(len(model.faces), 6)
    np.savetxt(buffer, corners, fmt="f %d/%d %d/%d %d/%d")
    obj_path.write_text(buffer.getvalue())
    mtl_path.write_text("newmtl flamefit_albedo\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
                        f"map_Kd {FILES['albedo']}\n")


# ----------------------------------------------------------------------------- result.json


def model_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return re.sub(r"^flame_(\d{4})", r"flame\1", slug)


def _rows(array) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(array, dtype=np.float64)]


def _photo_entry(photo) -> dict:
    """result.json's `photo`: where it was, its size, and (when known) the SHA-256 of the
    file's bytes, which says which photo this is when a name alone does not."""
    entry = {"path": str(photo.path), "width": photo.width, "height": photo.height}
    if photo.sha256 is not None:
        entry["sha256"] = photo.sha256
    return entry


def _view_json(result, k: int) -> dict:
    """result.json's views[k] (schema 3)."""
    view = result.views[k]
    focal, principal = view.frame.intrinsics(None)
    crop = view.frame.crop
    return {
        "name": view.name,
        "photo": _photo_entry(view.photo),
        "camera": {
            "type": "pinhole",
            "focal_px": [float(v) for v in focal],
            "principal_px": [float(v) for v in principal],
            "image_size": [view.photo.width, view.photo.height],
            "world_to_camera": view_world_to_camera(result, k).tolist(),
            "convention": CAMERA_CONVENTION,
        },
        "parameters": {
            "expression": [float(v) for v in view.expression],
            "pose": {name: [float(v) for v in view.pose[j]] for j, name in enumerate(JOINT_NAMES)},
            "translation": [float(v) for v in view.translation],
        },
        "lights": {"sh": _rows(view.sh), "convention": LIGHT_CONVENTION},
        "landmarks_2d": _rows(view.fitted_2d),
        "landmarks_2d_fixed": _rows(view.fitted_2d_fixed),
        "detected_landmarks_2d": _rows(view.detected_2d),
        "landmarks_3d": _rows(view.landmarks_3d),
        "metrics": _finite(view.metrics),
        "fit": {"crop": {"x0": crop.x0, "y0": crop.y0, "side": crop.side}, "landmarks": view.detection},
        "files": {key: view_file_name(key, k + 1, view.photo) for key in VIEW_FILES},
    }


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def result_json(result, out: Path) -> dict:
    """result.json (schema 3): the subject (identity, files, fit, summary metrics) and its views."""
    model = result.model
    expression_names = model.expression_names or [f"expression_{k:03d}" for k in range(model.num_expression)]
    metrics = _finite(result.metrics)
    metrics["views"] = len(result.views)
    return {
        "schema_version": SCHEMA_VERSION,
        "flamefit_version": __version__,
        "model": {"name": model.name, "version": model.version, "licence": model.licence, "id": model_id(model.name)},
        "parameters": {"identity": [float(v) for v in result.identity]},
        "expression_names": expression_names[: len(result.views[0].expression)],
        "metrics": metrics,
        "timings": result.timings,
        "files": {**FILES, **({"mask": TEXTURE_MASK} if result.seen is not None else {})},
        "fit": {
            "stages": [s for s in result.stages if s != "bundle"],
            "texture_size": int(result.options.texture_size),
            "device": result.device,
            "model_provenance": {k: v for k, v in model.provenance.items() if isinstance(v, str)},
            **({"same_person": result.same_person} if getattr(result, "same_person", None) else {}),
        },
        "views": [_view_json(result, k) for k in range(len(result.views))],
    }
