"""sh_math.py: SH shading and the SH -> lights approximation (plain Python)."""

import math

import numpy as np
import pytest
from synth_bundle import SH_DEFAULT, head_mesh, sh_shading

from blender_flamefit.io import sh_math


def test_shading_matches_numpy_reference():
    rng = np.random.default_rng(1)
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    ref = sh_shading(n, SH_DEFAULT)
    got = np.array([sh_math.sh_shade(tuple(v), SH_DEFAULT) for v in n])
    assert np.abs(got - ref).max() < 1e-12


def test_white_ambient_is_one():
    sh = [[math.sqrt(4 * math.pi)] * 3] + [[0.0] * 3] * 8
    assert sh_math.sh_shade((0.0, 0.0, 1.0), sh) == pytest.approx((1.0, 1.0, 1.0))
    rig = sh_math.fit_lights(sh)
    assert rig.ambient == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)
    assert rig.suns == [] and rig.error < 1e-6


def test_closed_form_reproduces_bands_0_and_1():
    """Projecting the closed-form rig back onto bands 0 and 1 gives the SH's bands (exactly
    when the colour channels share one light direction, as here)."""
    sh = (np.array(SH_DEFAULT)[:, :1] * np.array([[1.0, 0.9, 0.8]])).tolist()
    rig = sh_math.closed_form_rig(sh)
    dirs = np.array(sh_math.fibonacci_sphere(20000))
    rig_vals = np.array([rig.shade(tuple(d)) for d in dirs])
    sh_vals = sh_shading(dirs, sh)
    # mean (band 0) and first moments (band 1) over the sphere agree
    assert np.abs(rig_vals.mean(0) - sh_vals.mean(0)).max() < 2e-3
    for axis in range(3):
        assert np.abs((rig_vals * dirs[:, axis:axis + 1]).mean(0) - (sh_vals * dirs[:, axis:axis + 1]).mean(0)).max() < 2e-3


def test_single_directional_light_is_recovered():
    """SH of one distant light from d (the clamped cosine, projected to 9 terms) -> a key sun near d."""
    d = np.array([0.3, 0.5, 0.81])
    d /= np.linalg.norm(d)
    # project C * max(0, n.d) onto DECA's basis: sh_k = <f, P_k> / (c_k <P_k, P_k>)
    dirs = np.array(sh_math.fibonacci_sphere(40000))
    x, y, z = dirs.T
    P = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    f = np.clip(dirs @ d, 0, None)
    c = np.array(sh_math.SH_CONSTANTS)
    coef = (P * f[:, None]).mean(0) / (P * P).mean(0) / c
    sh = np.stack([coef * 1.0, coef * 0.8, coef * 0.6], -1).tolist()
    rig = sh_math.fit_lights(sh, max_suns=1, soft=False)
    key = rig.suns[0]
    assert np.degrees(np.arccos(np.clip(np.dot(key.direction, d), -1, 1))) < 5
    assert key.colour[1] / key.colour[0] == pytest.approx(0.8, abs=0.02)
    assert rig.error < 0.1


def test_fit_beats_closed_form_on_head_normals():
    verts, faces, _, _ = head_mesh()
    normals, weights = sh_math.head_normals(verts.ravel().tolist(), faces.ravel().tolist(), view_dir=(0, 0, 1))
    rig = sh_math.fit_lights(SH_DEFAULT, normals, weights)
    hard = sh_math.fit_lights(SH_DEFAULT, normals, weights, soft=False)
    assert rig.error < hard.error < rig.closed_form_error
    assert rig.error < 0.05 and hard.error < 0.10
    assert all(min(s.colour) >= 0 for s in rig.suns) and min(rig.ambient) >= 0
    # the reported error is what it says
    n = np.array(normals)
    idx = np.linspace(0, len(n) - 1, min(len(n), 600)).astype(int)
    assert rig.error == pytest.approx(sh_math.rig_error(rig, SH_DEFAULT, [tuple(v) for v in n[idx]],
                                                        [weights[i] for i in idx]), rel=0.2)


@pytest.mark.parametrize("angle", [0.0, sh_math.NARROW, 0.7, 1.9, 2.6, math.pi])
def test_cap_falloff_matches_numerical_integration(angle):
    """A uniform disc of light of angular diameter `angle`: integrate max(0, n.l) over it."""
    half = angle / 2
    rng = np.random.default_rng(3)
    if half > 1e-3:
        u = rng.uniform(np.cos(half), 1.0, 200000)  # uniform on the spherical cap around +z
        phi = rng.uniform(0, 2 * np.pi, 200000)
        s = np.sqrt(1 - u * u)
        dirs = np.stack([s * np.cos(phi), s * np.sin(phi), u], -1)
    else:
        dirs = np.array([[0.0, 0.0, 1.0]])
    for beta in (0.0, 0.6, 1.3, 1.7, 2.4):
        n = np.array([np.sin(beta), 0.0, np.cos(beta)])
        ref = np.clip(dirs @ n, 0, None).mean() / np.clip(dirs @ np.array([0, 0, 1.0]), 0, None).mean()
        assert sh_math.cap_falloff(np.cos(beta), angle) == pytest.approx(ref, abs=3e-3)
