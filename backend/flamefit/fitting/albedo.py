"""Albedo models for the photometric stage (linear RGB, UV space).

- `TextureSpace(mean (3,H,W), basis (K,3,H,W), std (K,))`: a PCA albedo space
  (e.g. FLAME's or BFM's converted to FLAME's UVs); `flamefit.textures` produces one
  from `--texture-space`. Albedo = mean + sum_k c_k std_k basis_k, c ~ N(0, 1).
- `SmoothAlbedo`: when no space is given, a low-resolution map (32^2, bilinear:
  smooth) initialised to one skin colour, with a smoothness prior and a symmetry prior
  (a texel and its mirror texel on the head alike: skin's colour is near symmetric, a
  photo's light seldom is, so what differs between the two halves is left to the light).

Both expose `texture()` -> (1, 3, h, w), `parameters()` and `prior()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..textures.spaces import TEXTURE_SPACE_COMPONENTS, TextureSpace


class SmoothAlbedo:
    def __init__(self, colour, resolution: int = 32, smoothness: float = 3e-3, device="cpu", dtype=torch.float32,
                 mirror_pairs=None, symmetry: float = 0.0):
        colour = torch.as_tensor(colour, dtype=dtype, device=device).reshape(1, 3, 1, 1)
        self.map = colour.expand(1, 3, resolution, resolution).clone().requires_grad_(True)
        self.reference = colour
        self.smoothness = smoothness
        # (flat texel, its mirror texel) index pairs of the map (uv_mirror_pairs); None (or none
        # found): no symmetry prior
        has_pairs = mirror_pairs is not None and len(mirror_pairs[0]) > 0
        self.mirror_pairs = tuple(torch.as_tensor(i, device=device) for i in mirror_pairs) if has_pairs else None
        self.symmetry = symmetry

    def parameters(self) -> list[torch.Tensor]:
        return [self.map]

    def texture(self) -> torch.Tensor:
        return self.map

    def prior(self) -> torch.Tensor:
        m = self.map
        dx = m[..., :, 1:] - m[..., :, :-1]
        dy = m[..., 1:, :] - m[..., :-1, :]
        smooth = (dx ** 2).mean() + (dy ** 2).mean()
        loss = self.smoothness * 1e3 * smooth + 1e-2 * ((m.mean((2, 3), keepdim=True) - self.reference) ** 2).sum()
        if self.mirror_pairs is not None and self.symmetry > 0:
            flat = m.reshape(3, -1)
            a, b = self.mirror_pairs
            loss = loss + self.symmetry * ((flat[:, a] - flat[:, b]) ** 2).mean()
        return loss


def uv_mirror_pairs(model, resolution: int):
    """(a, b) int64 arrays: flat indices of the texels of a resolution^2 map of `model`'s UVs
    and of their mirror texels (x -> -x on the template); texels without one are left out."""
    from ..render.uv_raster import mirror_texels, texel_map

    texels = texel_map(model, resolution, "cpu")
    # a coarse map's texels are ~1.5 cm apart on the head: its nearest mirror texel is as far
    mirror = mirror_texels(model, texels, max_distance=0.015).cpu().numpy()
    index = texels.texel_index.cpu().numpy()
    found = mirror >= 0
    return index[found], index[mirror[found]]


class TextureSpaceAlbedo:
    """Coefficients of a TextureSpace; evaluated at <= `resolution` for the fit."""

    def __init__(self, space: TextureSpace, num_components: int = TEXTURE_SPACE_COMPONENTS, resolution: int = 256,
                 device="cpu", dtype=torch.float32):
        K = min(num_components, space.basis.shape[0])
        mean, basis = space.mean[None], space.basis[:K]
        if mean.shape[-1] > resolution:
            mean = F.interpolate(mean, size=(resolution, resolution), mode="area")
            basis = F.interpolate(basis, size=(resolution, resolution), mode="area")
        self.space = space
        self.mean = mean.to(device, dtype)
        self.basis = (basis * space.std[:K, None, None, None]).to(device, dtype)
        self.coeffs = torch.zeros(1, K, dtype=dtype, device=device, requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.coeffs]

    def texture(self) -> torch.Tensor:
        return (self.mean + torch.einsum("bk,kchw->bchw", self.coeffs, self.basis)).clamp(0.0, 1.0)

    def prior(self) -> torch.Tensor:
        return 0.5 * 1e-3 * (self.coeffs ** 2).sum()

    def full_texture(self, size: int) -> torch.Tensor:
        """The fitted albedo at the space's full resolution, resized to `size`."""
        space = self.space
        K = self.coeffs.shape[1]
        coeffs = self.coeffs.detach().cpu()[0] * space.std[:K]
        tex = (space.mean + torch.einsum("k,kchw->chw", coeffs, space.basis[:K])).clamp(0, 1)[None]
        if tex.shape[-1] != size:
            tex = F.interpolate(tex, size=(size, size), mode="bilinear", align_corners=False)
        return tex.to(self.coeffs.device)
