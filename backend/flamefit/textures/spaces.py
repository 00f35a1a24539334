"""Albedo texture spaces: load FLAME's, the BFM-converted one and ours; save ours.

`load_texture_space` gives the fitter's `TextureSpace` (torch, defined here);
`read_texture_space` gives `TextureSpaceData` (numpy, with the UV layout and the
metadata). Both use the fitter's conventions:

- linear RGB albedo in [0, 1] (albedo.png stores sRGB; the renderer multiplies linear
  albedo by SH shading);
- images (3, H, W) with row 0 at the TOP of the texture image, i.e. v = 1 in the
  OBJ-style UVs of the head model (v = 0 at the bottom), as the renderer samples them;
- albedo = mean + sum_k c_k std[k] basis[k] with c ~ N(0, 1). Each basis image has
  unit RMS over its texels, so std[k] is the RMS albedo change of a one-sigma step
  along component k (independent of the resolution).

On disk, three layouts are read (keys are checked, nothing is unpickled):

| file | keys | colour |
| --- | --- | --- |
| FLAME's `FLAME_texture.npz` | `mean` (512,512,3), `tex_dir` (512,512,3,200), `vt`, `ft` | BGR, 0-255, sRGB |
| `FLAME_albedo_from_BFM.npz` (BFM_to_FLAME) | `MU` (512*512*3,), `PC` (512*512*3,199), no vt/ft | BGR, 0-1, sRGB |
| ours (`flamefit texture-space build`) | FLAME's keys + `meta` (JSON) + `explained_variance_ratio` | as `meta["colour"]` says |

In both published files the directions are one-sigma steps (coefficients ~ N(0, 1)):
TF_FLAME's `sample_texture.py` draws them with randn, and BFM_to_FLAME bakes
sqrt(variance) into PC. Rows are image rows (top = v 1). The BFM file has no vt/ft: it
is on FLAME's UV layout (FLAME's head_template_mesh.obj), so only the face count can be
checked. A space is refused when its UV layout (vt[ft]) differs from the model's.
Only the components asked for are read from the file (`load_texture_space`: those the
photometric stage fits), streaming the directions' array without holding all of it.
sRGB-encoded spaces are linearised exactly at the mean and to first order along the
directions (the directions are scaled by d linear / d sRGB at the mean).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..fsutil import atomic_save_npz
from ..image import srgb_to_linear

# Texture-space coefficients the photometric stage fits (the first K). The loaders read
# no more than this from a file (load_texture_space): FLAME's has 200.
TEXTURE_SPACE_COMPONENTS = 50


@dataclass
class TextureSpace:
    """A PCA albedo space as the photometric stage uses it (torch tensors)."""

    mean: torch.Tensor  # (3, H, W) linear RGB in [0, 1]
    basis: torch.Tensor  # (K, 3, H, W)
    std: torch.Tensor  # (K,)
    name: str = "texture space"

    def __post_init__(self):
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32)
        self.basis = torch.as_tensor(self.basis, dtype=torch.float32)
        self.std = torch.as_tensor(self.std, dtype=torch.float32)
        K = self.basis.shape[0]
        if self.mean.dim() != 3 or self.mean.shape[0] != 3 or tuple(self.basis.shape[1:]) != tuple(self.mean.shape) \
                or tuple(self.std.shape) != (K,):
            raise ValueError(f"texture space shapes do not match: mean {tuple(self.mean.shape)}, "
                             f"basis {tuple(self.basis.shape)}, std {tuple(self.std.shape)}")


FORMAT_NAME = "flamefit texture space"
FORMAT_VERSION = 1
UV_TOLERANCE = 2e-3  # max difference of per-corner UVs between two "same" layouts
FLAME_FACE_COUNT = 9976
FLAME_COLOUR = {"order": "BGR", "scale": 255.0, "transfer": "srgb"}  # FLAME_texture.npz (and ours without meta)
BFM_COLOUR = {"order": "BGR", "scale": 1.0, "transfer": "srgb"}  # FLAME_albedo_from_BFM.npz
LAYOUT_KEYS = {"FLAME": ("mean", "tex_dir"), "BFM": ("MU", "PC")}  # layout -> (mean, directions) keys
BUILD_HINT = "build a space for this head model with `flamefit texture-space build PHOTOS_DIR -o SPACE.npz`"


@dataclass
class TextureSpaceData:
    mean: np.ndarray  # (3, H, W) float32, linear RGB [0, 1], row 0 = top (v = 1)
    basis: np.ndarray  # (K, 3, H, W) float32, unit RMS each
    std: np.ndarray  # (K,) float32, prior std of each coefficient
    uv_coords: np.ndarray | None = None  # (T, 2) OBJ convention; None: FLAME's layout assumed
    uv_faces: np.ndarray | None = None  # (F, 3) int64
    meta: dict = field(default_factory=dict)  # kind, source, colour, num_photos, licence...

    @property
    def num_components(self) -> int:
        return int(self.basis.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.mean.shape[1]), int(self.mean.shape[2])

    def albedo(self, coeffs) -> np.ndarray:
        """(3, H, W) albedo for normalised coefficients c (K' <= K,), c ~ N(0, 1)."""
        coeffs = np.asarray(coeffs, np.float32) * self.std[: len(coeffs)]
        return self.mean + np.tensordot(coeffs, self.basis[: len(coeffs)], axes=1)

    def for_fitting(self):
        """The fitter's `TextureSpace` (torch tensors)."""
        kind = self.meta.get("kind", "texture space")
        name = f"{kind} texture space {Path(self.meta['source']).name}" if "source" in self.meta else f"{kind} texture space"
        return TextureSpace(mean=self.mean, basis=self.basis, std=self.std, name=name)

    def truncated(self, components: int) -> "TextureSpaceData":
        k = min(int(components), self.num_components)
        return TextureSpaceData(self.mean, self.basis[:k], self.std[:k], self.uv_coords, self.uv_faces, dict(self.meta))

    def resized(self, size: int | tuple[int, int]) -> "TextureSpaceData":
        """The space resampled to size (H, W) (area-averaged when shrinking)."""
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size == self.size:
            return self
        resized = TextureSpaceData(resize_maps(self.mean[None], size)[0], resize_maps(self.basis, size), self.std,
                                   self.uv_coords, self.uv_faces, dict(self.meta))
        return resized.unit_rms()

    def unit_rms(self) -> "TextureSpaceData":
        """The same space with every basis image rescaled to unit RMS (std compensates)."""
        rms = np.sqrt(np.mean(self.basis.reshape(len(self.basis), -1).astype(np.float64) ** 2, axis=1)).clip(1e-12)
        return TextureSpaceData(self.mean, (self.basis / rms[:, None, None, None]).astype(np.float32),
                                (self.std * rms).astype(np.float32), self.uv_coords, self.uv_faces, dict(self.meta))


# ----------------------------------------------------------------------------- colour


def srgb_to_linear_slope(x: np.ndarray) -> np.ndarray:
    """d srgb_to_linear / dx."""
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, 1 / 12.92,
                    2.4 / 1.055 * ((np.clip(x, 0.04045, None) + 0.055) / 1.055) ** 1.4).astype(np.float32)


# ----------------------------------------------------------------------------- loading


def load_texture_space(path, model=None, components: int | None = None, size: int | None = None):
    """Any supported texture-space file as the fitter's `TextureSpace`
    (see read_texture_space for the arguments). components: None reads as many as the
    photometric stage fits (TEXTURE_SPACE_COMPONENTS), not all of them:
    FLAME_texture.npz's 200 would take ~2 GB."""
    if components is None:
        components = TEXTURE_SPACE_COMPONENTS
    return read_texture_space(path, model, components, size).for_fitting()


def read_texture_space(path, model=None, components: int | None = None, size: int | None = None) -> TextureSpaceData:
    """Any supported texture-space file as TextureSpaceData in the fitter's conventions.

    model: a HeadModel; when given, a space for another UV layout is refused with a
    ModelFileError. components: keep the first K (only those are read from the file;
    None: all). size: resample to size x size.
    """
    from ..models.safe_pickle import load_npz, load_npz_leading

    path = Path(path)
    layout, headers = texture_space_layout(path)
    directions = LAYOUT_KEYS[layout][1]
    stored = int(headers[directions][0][-1])  # components in the file (last axis)
    data = load_npz(path, only={"mean", "MU", "vt", "ft", "meta"})
    data[directions] = load_npz_leading(path, directions, components)
    space = _from_flame_layout(path, data, stored) if layout == "FLAME" else _from_bfm_layout(path, data, stored)
    space.meta["source"] = str(path)
    if model is not None:
        check_uv_layout(space, model, path)
    if size is not None:
        space = space.resized(size)
    return space


def texture_space_layout(path) -> tuple[str, dict]:
    """("FLAME" (mean/tex_dir, also ours) or "BFM" (MU/PC), the npz headers) of a
    texture-space file, reading no data; ModelFileError when it is none."""
    from ..models.safe_pickle import npz_headers

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ModelFileError(path, f"unsupported texture-space file type '{path.suffix}'",
                             "expected FLAME_texture.npz, FLAME_albedo_from_BFM.npz or a space built by flamefit")
    headers = npz_headers(path)
    layout = next((name for name, keys in LAYOUT_KEYS.items() if set(keys) <= headers.keys()), None)
    if layout is None:
        raise ModelFileError(path, f"is not a texture space (keys {sorted(headers)})",
                             "expected mean/tex_dir (FLAME_texture.npz) or MU/PC (FLAME_albedo_from_BFM.npz)")
    directions = LAYOUT_KEYS[layout][1]
    if len(headers[directions][0]) < 2:
        raise ModelFileError(path, f"{directions} has shape {headers[directions][0]}, expected (..., K) directions")
    return layout, headers


def describe_texture_space(path) -> dict:
    """What `flamefit model-info` shows of a texture space, from the headers and the
    metadata only (no model: its UV layout can only be checked against one, at load)."""
    from ..models.safe_pickle import load_npz

    path = Path(path)
    layout, headers = texture_space_layout(path)
    mean_shape, dirs_shape = (headers[key][0] for key in LAYOUT_KEYS[layout])
    texels = int(np.prod(mean_shape)) // 3
    if len(mean_shape) >= 3 and mean_shape[-1] == 3:
        size = [int(mean_shape[-3]), int(mean_shape[-2])]
    else:
        size = [int(round(np.sqrt(texels)))] * 2
    components = int(dirs_shape[-1])
    if size[0] * size[1] * 3 != int(np.prod(mean_shape)) or int(np.prod(dirs_shape)) != texels * 3 * components:
        raise ModelFileError(path, f"mean {list(mean_shape)} and directions {list(dirs_shape)} do not describe one "
                                   f"{size[0]}x{size[1]} RGB texture space")
    meta = _meta(path, load_npz(path, only={"meta"}))
    kind = "flamefit" if meta.get("format") == FORMAT_NAME else layout
    colour = meta.get("colour", dict(FLAME_COLOUR if layout == "FLAME" else BFM_COLOUR))
    if {"vt", "ft"} <= headers.keys():
        uv = f"{headers['ft'][0][0]} faces ({headers['vt'][0][0]} UV coordinates) in the file"
    else:
        uv = f"none in the file: FLAME's ({FLAME_FACE_COUNT} faces, head_template_mesh.obj)"
    info = {"kind": kind, "size": size, "components": components, "uv_layout": uv, "colour": colour}
    info.update({k: meta[k] for k in ("head_model", "num_photos", "input_licence") if k in meta})
    return info


def _meta(path, data) -> dict:
    """The JSON metadata of our spaces (data["meta"]); {} when there is none."""
    if "meta" not in data:
        return {}
    try:
        return json.loads(str(data["meta"]))
    except ValueError:
        raise ModelFileError(path, "its 'meta' entry is not JSON") from None


def _from_flame_layout(path, data, stored: int) -> TextureSpaceData:
    tex_dir = np.asarray(data["tex_dir"])
    mean = np.asarray(data["mean"])
    K = tex_dir.shape[-1]  # the components read (read_texture_space's `components`)
    if tex_dir.ndim >= 4:
        H, W = tex_dir.shape[-4], tex_dir.shape[-3]
    else:
        H = W = int(round(np.sqrt(mean.size / 3)))
    if mean.size != H * W * 3 or tex_dir.size != H * W * 3 * K:
        raise ModelFileError(path, f"mean {mean.shape} and tex_dir {tex_dir.shape} do not describe one {H}x{W} RGB texture space")
    meta = _meta(path, data)
    colour = meta.get("colour", dict(FLAME_COLOUR))
    kind = "flamefit" if meta.get("format") == FORMAT_NAME else "FLAME"
    space = _convert(path, mean.reshape(H, W, 3), tex_dir.reshape(H, W, 3, K), colour)
    space.uv_coords, space.uv_faces = _uv_arrays(path, data)
    space.meta = {**meta, "kind": kind, "colour_in_file": colour, "components_in_file": stored}
    return space


def _from_bfm_layout(path, data, stored: int) -> TextureSpaceData:
    mu = np.asarray(data["MU"]).reshape(-1)
    pc = np.asarray(data["PC"])
    pc = pc.reshape(mu.size, -1) if pc.size % max(mu.size, 1) == 0 else pc
    side = int(round(np.sqrt(mu.size / 3)))
    if side * side * 3 != mu.size or pc.shape[0] != mu.size:
        raise ModelFileError(path, f"MU {data['MU'].shape} and PC {data['PC'].shape} are not a square RGB texture space")
    K = pc.shape[1]
    colour = dict(BFM_COLOUR)
    space = _convert(path, mu.reshape(side, side, 3), pc.reshape(side, side, 3, K), colour)
    space.uv_coords, space.uv_faces = _uv_arrays(path, data)
    space.meta = {"kind": "BFM", "colour_in_file": colour, "components_in_file": stored,
                  "uv_layout": "from the file" if space.uv_coords is not None else "FLAME's (the file has no vt/ft)"}
    return space


def _convert(path, mean_hw3, dirs_hw3k, colour) -> TextureSpaceData:
    """File colour (order, scale, transfer) -> linear RGB (3,H,W) mean, unit-RMS basis, std.
    Works through the directions a few at a time (FLAME's 200 are 600 MB)."""
    order = str(colour.get("order", "BGR")).upper()
    scale = float(colour.get("scale", 255.0))
    transfer = str(colour.get("transfer", "srgb")).lower()
    if order not in ("RGB", "BGR") or transfer not in ("srgb", "linear") or not scale > 0:
        raise ModelFileError(path, f"unknown colour convention {colour}")
    flip = [2, 1, 0] if order == "BGR" else [0, 1, 2]
    mean = np.transpose(np.asarray(mean_hw3, np.float32)[..., flip], (2, 0, 1)) / scale
    if not np.isfinite(mean).all():
        raise ModelFileError(path, "the texture space's mean holds NaN or infinity")
    slope = None
    if transfer == "srgb":
        slope = srgb_to_linear_slope(np.clip(mean, 0, 1))
        mean = srgb_to_linear(np.clip(mean, 0, 1))
    K = dirs_hw3k.shape[-1]
    basis = np.empty((K, 3, *mean.shape[1:]), np.float32)
    rms = np.empty(K, np.float64)
    for start in range(0, K, 16):
        chunk = np.asarray(dirs_hw3k[..., start:start + 16], np.float32)[:, :, flip, :]
        dirs = np.transpose(chunk, (3, 2, 0, 1)) / scale  # (k, 3, H, W)
        if not np.isfinite(dirs).all():
            raise ModelFileError(path, "the texture space's directions hold NaN or infinity")
        if slope is not None:
            dirs *= slope[None]
        rms[start:start + len(dirs)] = np.sqrt(np.mean(dirs.reshape(len(dirs), -1).astype(np.float64) ** 2, axis=1))
        basis[start:start + len(dirs)] = dirs / np.maximum(rms[start:start + len(dirs)], 1e-12)[:, None, None, None]
    return TextureSpaceData(mean=mean.astype(np.float32), basis=basis, std=np.maximum(rms, 1e-12).astype(np.float32))


def _uv_arrays(path, data):
    if "vt" not in data or "ft" not in data:
        return None, None
    vt = np.asarray(data["vt"], np.float32)
    ft = np.asarray(data["ft"]).astype(np.int64)
    if vt.ndim != 2 or vt.shape[1] != 2 or ft.ndim != 2 or ft.shape[1] != 3:
        raise ModelFileError(path, f"vt {vt.shape} / ft {ft.shape} are not a UV layout (T,2)/(F,3)")
    if ft.size and ft.min() == 1 and ft.max() == len(vt):  # 1-based, OBJ style
        ft = ft - 1
    if ft.size and (ft.min() < 0 or ft.max() >= len(vt)):
        raise ModelFileError(path, "ft indexes UV coordinates that do not exist")
    return vt, ft


def check_uv_layout(space: TextureSpaceData, model, path="texture space", tol: float = UV_TOLERANCE) -> None:
    """Refuse a space whose UV layout is not the model's (ModelFileError)."""
    name = getattr(model, "name", "the head model")
    uv_coords, uv_faces = getattr(model, "uv_coords", None), getattr(model, "uv_faces", None)
    if uv_coords is None and space.uv_faces is not None:
        from ..models.uv_layout import uv_layout

        uv_coords, uv_faces = uv_layout(model)  # what prepare_model gives a model that has none
    if uv_coords is None or uv_faces is None:
        raise ModelFileError(path, f"cannot use a texture space: {name} has no UV layout",
                             "pass --uv-template head_template_mesh.obj, or a texture space with vt/ft as the UV template")
    faces = len(uv_faces)
    if space.uv_faces is None:  # BFM conversion: FLAME's layout by construction
        if faces != FLAME_FACE_COUNT:
            raise ModelFileError(path, f"texture space is on FLAME's UV layout ({FLAME_FACE_COUNT} faces) but {name} "
                                       f"has {faces} faces", BUILD_HINT)
        return
    if len(space.uv_faces) != faces:
        raise ModelFileError(path, f"texture space was built for another UV layout ({len(space.uv_faces)} faces; "
                                   f"{name} has {faces})", BUILD_HINT)
    ours = np.asarray(uv_coords, np.float32)[np.asarray(uv_faces)]
    theirs = space.uv_coords[space.uv_faces]
    diff = float(np.abs(ours - theirs).max()) if faces else 0.0
    if diff > tol:
        raise ModelFileError(path, f"texture space was built for another UV layout (UV corners differ by up to "
                                   f"{diff:.3g} from {name}'s)", BUILD_HINT)


# ----------------------------------------------------------------------------- saving


def save_texture_space(path, space: TextureSpaceData, meta: dict | None = None,
                       explained_variance_ratio: np.ndarray | None = None) -> Path:
    """Write `space` in FLAME_texture.npz's layout (mean (H,W,3), tex_dir (H,W,3,K) of
    one-sigma steps, vt, ft), BGR x 255 like FLAME's file but LINEAR, and say so in meta."""
    path = Path(path)
    colour = {"order": "BGR", "scale": 255.0, "transfer": "linear",
              "note": "linear RGB albedo x 255 in BGR order; the directions are one-sigma steps (coefficients ~ N(0,1))"}
    info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **(meta or {}), "colour": colour}
    mean = np.transpose(space.mean, (1, 2, 0))[..., ::-1] * 255.0
    dirs = space.basis * space.std[:, None, None, None]
    tex_dir = np.transpose(dirs, (2, 3, 1, 0))[:, :, ::-1, :] * 255.0
    arrays = {"mean": np.ascontiguousarray(mean, np.float32), "tex_dir": np.ascontiguousarray(tex_dir, np.float32),
              "meta": np.array(json.dumps(info, default=_json_default))}
    if space.uv_coords is not None:
        arrays["vt"] = np.asarray(space.uv_coords, np.float32)
        arrays["ft"] = np.asarray(space.uv_faces, np.int32)
    if explained_variance_ratio is not None:
        arrays["explained_variance_ratio"] = np.asarray(explained_variance_ratio, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, compressed=False, **arrays)  # a private temporary: parallel builds never share one
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- resampling


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, h, w): bilinear, antialiased when shrinking."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(maps), 16):  # bounded memory for 200-component spaces
        chunk = torch.from_numpy(np.ascontiguousarray(maps[start:start + 16], np.float32))
        shrink = size[0] < chunk.shape[-2] or size[1] < chunk.shape[-1]
        out.append(F.interpolate(chunk, size=size, mode="bilinear", align_corners=False, antialias=shrink).numpy())
    return np.concatenate(out) if out else np.zeros((0, maps.shape[1], *size), np.float32)
