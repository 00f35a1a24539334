"""Fit options: which stages run, resolutions, iteration counts and loss weights.

The defaults are the tuned schedule (coarse-to-fine, see the README's fitting section); tests and
the benchmark change a few fields. All weights multiply terms that are already
normalised (landmark residuals in units of `landmark_sigma` x the eye-corner distance,
photometric residuals in linear RGB, coefficients in standard deviations).
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIONAL_STAGES = ("landmarks", "photometric", "texture")


@dataclass
class FitOptions:
    # --- stages (`--stages`, `--no-expression`) ---
    stages: tuple[str, ...] = OPTIONAL_STAGES
    expression: bool = True  # False: neutral face (expression and jaw fixed at zero)
    texture_size: int = 1024

    # --- image ---
    crop_margin: float = 1.9  # crop side = margin x extent of the 68 landmarks
    landmark_resolution: int = 256  # crop size for the landmark stages (pixels)

    # --- model subspace ---
    identity_components: int = 100  # first K identity components (FLAME: 300 available)
    expression_components: int = 100  # first K expression components (all of the open head's 51)

    # --- rigid + shape (landmarks) ---
    landmark_sigma: float = 0.02  # expected landmark noise, fraction of the eye-corner distance
    contour_weight: float = 0.5  # jaw-line points (less precise) relative to the inner face
    rigid_iterations: int = 20  # Levenberg-Marquardt
    shape_iterations: int = 30  # Levenberg-Marquardt
    identity_prior: float = 1.0  # 0.5*w*|beta|^2 (coefficients ~ N(0, 1))
    expression_prior: float = 1.0
    jaw_prior: float = 10.0  # x100 per radian^2 outside the jaw's range (priors.py)
    neck_prior: float = 50.0  # the head's rotation goes to "global", neck stays near rest

    # --- photometric (coarse-to-fine: (resolution, iterations) pairs) ---
    photometric_schedule: tuple[tuple[int, int], ...] = ((128, 40), (256, 50))
    visibility_every: int = 5  # recompute face ids every N steps (barycentrics every step)
    photometric_landmark_weight: float = 0.3  # landmarks keep the fit anchored
    photometric_identity_prior: float = 0.3
    albedo_resolution: int = 32  # smooth albedo map (no texture space)
    albedo_smoothness: float = 3e-3
    robust_scale: float = 0.05  # residual (linear RGB) where the robust loss starts to flatten

    # --- texture ---
    texture_refine_steps: int = 2  # render / back-project residual passes after the unwrap
    texture_min_cosine: float = 0.25  # texels seen more obliquely count as unseen

    # --- misc ---
    seed: int = 0

    def runs(self, stage: str) -> bool:
        return stage in self.stages

    @classmethod
    def parse_stages(cls, text: str) -> tuple[str, ...]:
        from ..errors import FlameFitError

        names = tuple(s.strip() for s in text.split(",") if s.strip())
        unknown = [s for s in names if s not in OPTIONAL_STAGES]
        if unknown:
            raise FlameFitError(f"unknown stage(s) {', '.join(unknown)} in --stages; choose from {','.join(OPTIONAL_STAGES)}")
        return names
