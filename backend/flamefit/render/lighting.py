"""Second-order spherical-harmonics (9 coefficients per colour) Lambertian lighting.

Same basis and constants as DECA's `add_SHlight` (Ramamoorthi & Hanrahan 2001):

    shading(n) = sum_k  sh[k] * c_k * P_k(n)                     (per colour channel)

    P = [1, x, y, z, xy, xz, yz, x^2 - y^2, 3z^2 - 1]            n = (x, y, z), unit
    c = [1/sqrt(4pi),
         (2pi/3) sqrt(3/(4pi))      x3,
         (pi/4) 3 sqrt(5/(12pi))    x3,
         (pi/4) (3/2) sqrt(5/(12pi)),
         (pi/4) (1/2) sqrt(5/(4pi))]

c_k = A_l * Y-normalisation, with the clamped-cosine factors A_1 = 2pi/3, A_2 = pi/4,
but A_0 = 1 (not pi) in band 0, as in DECA. Consequences, exactly:
- sh[0] = sqrt(4pi) ~= 3.5449 (others 0) gives shading 1 everywhere (white ambient);
- a distant light of colour C from unit direction d: `directional_light_sh(d, C)` gives
  the 9-term approximation of C * max(0, n.d) (max error ~0.09 * C).
shading is a dimensionless factor; the rendered colour is albedo (linear-ish, [0, 1]) times
shading. Normals are in camera space (x right, y up, z toward the camera): with R = I this
is FLAME's world frame, so the light is fixed relative to the camera, not the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .rasterizer import require_finite

_PI = math.pi
SH_CONSTANTS = (
    1 / math.sqrt(4 * _PI),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (3 / 2) * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (1 / 2) * math.sqrt(5 / (4 * _PI)),
)
# Orthonormal real SH Y_k = SH_NORMALISATION[k] * P_k (used to project lights).
SH_NORMALISATION = (
    1 / math.sqrt(4 * _PI),
    *(math.sqrt(3 / (4 * _PI)),) * 3,
    *(math.sqrt(15 / (4 * _PI)),) * 3,
    0.5 * math.sqrt(15 / (4 * _PI)),
    0.25 * math.sqrt(5 / _PI),
)


def _polynomials(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """P_k(n) stacked along `dim`."""
    return torch.stack((torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1), dim=dim)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals -> (..., 9) shading basis c_k * P_k(n) (DECA's)."""
    constants = torch.tensor(SH_CONSTANTS, dtype=normals.dtype, device=normals.device)
    return _polynomials(*normals.unbind(-1)) * constants


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """(B, ..., 3) unit camera-space normals, (B or 1, 9, 3) coefficients -> (B, ..., 3) shading."""
    _check_sh(sh)
    require_finite(normals=normals, sh=sh)
    if normals.shape[-1] != 3 or normals.dim() < 2:
        raise ValueError(f"normals must have shape (B, ..., 3), got {tuple(normals.shape)}")
    basis = sh_basis(normals).reshape(normals.shape[0], -1, 9)
    return torch.matmul(basis, sh.to(basis.dtype)).reshape(*normals.shape[:-1], 3)


def sh_shading_packed(normals: torch.Tensor, sh: torch.Tensor, pixels_per_image: list[int]) -> torch.Tensor:
    """Shading (N, 3) of packed (N, 3) normals whose batch segments have the given lengths."""
    _check_sh(sh)
    x, y, z = normals.t().unbind(0)  # channel-major rows: fast
    polys = _polynomials(x, y, z, dim=0)  # (9, N)
    constants = torch.tensor(SH_CONSTANTS, dtype=x.dtype, device=x.device)
    coeffs = (sh.to(x.dtype) * constants[:, None]).transpose(1, 2)  # (B, 3, 9): constants on 27 numbers
    if sh.shape[0] == 1:
        return (coeffs[0] @ polys).t()
    parts = torch.split(polys, pixels_per_image, dim=1)
    return torch.cat([coeffs[b] @ part for b, part in enumerate(parts)], dim=1).t()


def ambient_light_sh(color: torch.Tensor) -> torch.Tensor:
    """(B, 3) colour -> (B, 9, 3) coefficients giving shading == colour everywhere."""
    color = torch.as_tensor(color, dtype=torch.get_default_dtype()) if not torch.is_tensor(color) else color
    sh = color.new_zeros(color.shape[0], 9, 3)
    sh[:, 0] = color * math.sqrt(4 * _PI)
    return sh


def directional_light_sh(direction: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """(B, 3) direction toward the light, (B, 3) colour -> (B, 9, 3) coefficients.

    The light's SH projection, with band 0 multiplied by pi so that the shading equals
    the band-limited irradiance sum_l A_l sum_m Y_lm(d) Y_lm(n) ~= max(0, n.d).
    """
    d = torch.nn.functional.normalize(direction, dim=-1)
    norm = torch.tensor(SH_NORMALISATION, dtype=d.dtype, device=d.device)
    projection = _polynomials(*d.unbind(-1)) * norm
    projection = torch.cat((projection[:, :1] * _PI, projection[:, 1:]), dim=1)
    return projection[:, :, None] * color[:, None, :]


def _check_sh(sh: torch.Tensor) -> None:
    if not torch.is_tensor(sh) or sh.dim() != 3 or tuple(sh.shape[1:]) != (9, 3):
        raise ValueError(f"sh must have shape (B, 9, 3), got {tuple(getattr(sh, 'shape', ()))}")


@dataclass(frozen=True)
class SHLight:
    """A 9x3 SH light (as pytorch3d's light objects): `diffuse(normals)` is the shading."""

    coefficients: torch.Tensor  # (B or 1, 9, 3)

    def __post_init__(self):
        _check_sh(self.coefficients)

    @classmethod
    def of(cls, light) -> "SHLight":
        """An SHLight, or one made from (B, 9, 3) coefficients."""
        return light if isinstance(light, cls) else cls(light)

    @classmethod
    def ambient(cls, color: torch.Tensor) -> "SHLight":
        return cls(ambient_light_sh(color))

    @classmethod
    def directional(cls, direction: torch.Tensor, color: torch.Tensor) -> "SHLight":
        return cls(directional_light_sh(direction, color))

    def __add__(self, other: "SHLight") -> "SHLight":
        return SHLight(self.coefficients + SHLight.of(other).coefficients)

    def diffuse(self, normals: torch.Tensor) -> torch.Tensor:
        """(B, ..., 3) unit camera-space normals -> (B, ..., 3) shading."""
        return sh_shading(normals, self.coefficients)

    def diffuse_packed(self, normals: torch.Tensor, pixels_per_image: list[int]) -> torch.Tensor:
        """Shading (N, 3) of packed (N, 3) normals (the renderer's per-pixel lists)."""
        return sh_shading_packed(normals, self.coefficients, pixels_per_image)
