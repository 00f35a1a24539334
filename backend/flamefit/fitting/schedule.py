"""Fit options: which stages run, resolutions, iteration counts, loss weights and the
optimisers' learning rates: every hyper-parameter of the fit, named here once (the stage
modules hold no tuned literals).

The defaults are the tuned schedule (coarse-to-fine, see the README's fitting section); tests and
the benchmark change a few fields. All weights multiply terms that are already
normalised (landmark residuals in units of `landmark_sigma` x the eye-corner distance,
photometric residuals in linear RGB, coefficients in standard deviations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPTIONAL_STAGES = ("landmarks", "photometric", "texture")


@dataclass(frozen=True)
class LightOptions:
    constrained: bool = True  # False: the free 9x3 light (one per channel), as before
    # The per-channel deviation's prior per SH band (0, 1, 2), x the data's mean diagonal:
    # large = the light's colour is the illuminant's everywhere.
    deviation_weight: tuple[float, float, float] = (30.0, 3.0, 3.0)
    # The shape's own prior per band (towards 0), x the data's mean diagonal: the seen
    # skin's normals span less than a hemisphere, so bands 1-2 can grow unphysical there.
    shape_weight: tuple[float, float, float] = (0.0, 0.02, 0.2)
    # Evidence of the illuminant's colour: how far each source moves the colour from
    # neutral (the camera's white balance already made most photos neutral).
    whites_trust: float = 1.0  # eye whites / teeth (tint divided out): white surfaces lit by the light
    background_trust: float = 0.2  # grey world of the background: weak (walls, flags, fields)
    max_cast: float = 0.2  # the colour's channels stay within this of grey (ratio)
    white_percentile: float = 70.0  # eye/mouth pixels above this brightness may be white
    white_max_chroma: float = 0.45  # and below this chroma spread (max-min)/mean (skin: ~0.6; a 15% cast: ~0.4)
    white_min_vs_skin: float = 1.2  # and at least this x the face skin's median brightness
    white_least_coloured: float = 40.0  # of those, the percentile of the least coloured kept
    min_white_pixels: int = 8
    # Sclera and teeth are not white but yellowish (CIELAB b* > 0): their chroma under a
    # neutral light (linear RGB, the astronaut's studio portrait: sclera (1.07, 0.97, 0.95),
    # teeth (1.10, 0.99, 0.90)). The evidence is the seen chroma / this.
    white_tint: tuple[float, float, float] = (1.08, 0.98, 0.93)
    # Background: pixels at least this many eye distances from the face polygon (hair and
    # ears are nearer), above the chin; used when they are this fraction of the crop.
    background_distance: float = 0.9
    min_background_fraction: float = 0.05


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
    # ... where that distance is taken as at least this x the landmarks' extent (a frontal
    # face's: ~0.63 x it; at profile the eye corners meet), for (one photo, several photos):
    # see landmark_problem.landmark_setup
    landmark_sigma_extent: tuple[float, float] = (0.45, 0.6)
    contour_weight: float = 0.5  # jaw-line points (less precise) relative to the inner face
    rigid_iterations: int = 20  # Levenberg-Marquardt
    rigid_min_facing: float = 0.2  # PnP poses turned further from the camera (R[2, 2]) start frontal instead
    rigid_profile_yaws: tuple[float, ...] = (90.0, -90.0, 60.0, -60.0)  # PnP is also started from these yaws
    rigid_min_facing_profile: float = -0.3  # a profile (R[2, 2] ~ 0) may turn this far (~107 deg)
    rigid_profile_gain: float = 0.7  # a profile PnP replaces the frontal one below this x its reprojection error
    shape_iterations: int = 30  # Levenberg-Marquardt
    identity_prior: float = 1.0  # 0.5*w*|beta|^2 (coefficients ~ N(0, 1))
    expression_prior: float = 1.0
    jaw_prior: float = 10.0  # x100 per radian^2 outside the jaw's range (priors.py)
    jaw_open_range: tuple[float, float] = (-0.05, 0.6)  # radians about +X, free of the jaw prior
    jaw_side_limit: float = 0.08  # sideways and twist (radians), free of the jaw prior
    neck_prior: float = 50.0  # the head's rotation goes to "global", neck stays near rest

    # --- photometric (coarse-to-fine: (resolution, iterations) pairs) ---
    photometric_schedule: tuple[tuple[int, int], ...] = ((128, 40), (256, 50))
    visibility_every: int = 5  # recompute face ids every N steps (barycentrics every step)
    photometric_landmark_weight: float = 0.3  # landmarks keep the fit anchored
    photometric_identity_prior: float = 0.3
    albedo_resolution: int = 32  # smooth albedo map (no texture space)
    albedo_smoothness: float = 3e-3
    # x mean squared difference of mirror texels of the smooth albedo: a shadowed cheek
    # is the light's (the texture stage divides it out), not a darker albedo
    albedo_symmetry: float = 1e3
    robust_scale: float = 0.05  # residual (linear RGB) where the robust loss starts to flatten
    photometric_weight: float = 2.0e4  # x mean robust squared residual (linear RGB) over the mask
    light: LightOptions = field(default_factory=LightOptions)  # the SH light's colour constraint (fitting/light.py)
    light_ridge: float = 1e-4  # SH light solve: pull toward the previous light, x mean diagonal
    light_resolution: int = 128  # crop size of the light solve when the photometric stage is off
    # Adam, one group per parameter block; the rates follow a cosine from 1x down to
    # lr_final_fraction x over the whole schedule.
    lr_identity: float = 0.1
    lr_expression: float = 0.03  # blendshape coefficients ~ N(0, 1) (FLAME)
    lr_expression_units: float = 0.01  # ARKit-style units in [0, 1] (the open head)
    lr_rotation: float = 0.003  # global, neck and jaw (radians)
    lr_translation: float = 0.002  # in units of 0.1 x the head's distance
    lr_albedo: float = 0.01  # smooth albedo map (no texture space)
    lr_albedo_space: float = 0.05  # texture-space (PCA) albedo coefficients
    lr_final_fraction: float = 0.1
    adam_betas: tuple[float, float] = (0.8, 0.95)
    # The first albedo: the median colour of the skin pixels / albedo_shading_guess; with
    # too few skin pixels (< 10), albedo_fallback (linear RGB) instead.
    albedo_fallback: tuple[float, float, float] = (0.45, 0.3, 0.25)
    albedo_shading_guess: float = 0.9
    # Several photos: each Adam step sees every view (the identity and albedo get N times
    # the data per step), so each level runs this share of its steps (fit time, #19).
    multi_view_iterations: float = 0.6

    # --- texture ---
    texture_refine_steps: int = 2  # render / back-project residual passes after the unwrap
    texture_min_cosine: float = 0.25  # texels seen more obliquely count as unseen
    texture_max_unwrap: int = 1024  # the photo crop is sampled at most at this size
    texture_min_shading: float = 0.05  # the de-lighting divides by at least this shading
    texture_shadow_level: float = 0.35  # texels shaded below this x the median count less
    texture_silhouette_margin: float = 0.05  # several photos: texels within this x the crop of a view's outline count less

    # --- several photos (same_person.py; measured in benchmarks/same_person.py) ---
    same_person_distance: float = 0.6  # dlib face-descriptor distance above which a photo is another person (0: off)
    same_person_max_yaw: float = 50.0  # only views within this yaw (degrees) of frontal are compared

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
