"""Texture spaces: PCA with missing texels, file formats and UV-layout checks, the
synthetic recovery test (renders of heads with albedos from a known low-rank space),
resumable builds, and a real-photo smoke run through the fitter."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flamefit.app.texture_space_build import build_texture_space
from flamefit.errors import FlameFitError, ModelFileError
from flamefit.image import linear_to_srgb, srgb_to_linear
from flamefit.textures import pca
from flamefit.textures.build import BuildOptions, space_from_samples, work_dir_for
from flamefit.textures.spaces import TextureSpaceData, load_texture_space, read_texture_space, save_texture_space

R = 32  # UV resolution of the synthetic tests
K_TRUE = 4
STD_TRUE = np.array([0.08, 0.06, 0.045, 0.035])  # RMS albedo change of one sigma
N_TRAIN, N_HELD_OUT = 72, 12


# ----------------------------------------------------------------------------- PCA (numpy only)


def test_weighted_pca_recovers_subspace_with_missing_texels():
    rng = np.random.default_rng(1)
    P, N = 24 * 24, 150
    mean = rng.uniform(0.3, 0.7, (P, 3)).astype(np.float32)
    basis = np.linalg.qr(rng.standard_normal((P * 3, K_TRUE)))[0].T.reshape(K_TRUE, P, 3)
    z = rng.standard_normal((N, K_TRUE)) * np.array([3.0, 2.0, 1.5, 1.0])
    X = mean + np.tensordot(z, basis, 1) + 0.003 * rng.standard_normal((N, P, 3))
    # Each sample sees a random half-plane of the map (a head seen from one side), with holes.
    xs = np.tile(np.linspace(-1, 1, 24), 24)
    W = np.clip(xs[None] * rng.uniform(-3, 3, (N, 1)) + 1.0, 0, 1) * (rng.uniform(size=(N, P)) > 0.2)
    X = np.where(W[..., None] > 0, X, 0.0)  # unseen texels hold nothing useful
    result = pca.weighted_pca(X, W, K_TRUE, iterations=200, tol=1e-7)
    angles = np.degrees(pca.principal_angles(basis, result.components))
    assert angles.max() < 3.0, angles
    assert np.abs(result.mean - mean).mean() < 0.01
    assert np.all(np.diff(result.objective) <= 1e-6 * result.objective[0])  # EM never increases it
    np.testing.assert_allclose(result.std, [3.0, 2.0, 1.5, 1.0], rtol=0.25)


def test_mirror_fill_copies_mirror_texels_at_reduced_weight():
    from flamefit.textures.fill import mirror_fill
    X = np.array([[[1.0, 1, 1], [5.0, 5, 5], [9.0, 9, 9]]], np.float32)
    W = np.array([[0.0, 1.0, 0.5]], np.float32)
    mirror = np.array([1, 0, -1])
    Xf, Wf = mirror_fill(X, W, mirror, strength=0.5)
    np.testing.assert_allclose(Xf[0, 0], 5.0)  # unseen texel takes its mirror's value
    np.testing.assert_allclose(Wf[0], [0.5, 1.0, 0.5])  # at half weight; no mirror: unchanged


def test_mirror_texels_on_whole_maps_pair_left_and_right(head):
    """The one mirror map, as texel-list indices (texture stage) and on whole maps (build):
    a texel's mirror is a covered texel whose template point is its own with x -> -x."""
    from flamefit.render.uv_raster import mirror_texels, texel_map

    texels = texel_map(head, R, "cpu")
    listed = mirror_texels(head, texels)
    mirror = texels.on_map(listed)
    found = np.flatnonzero(mirror >= 0)
    assert len(found) > 0.5 * texels.mask.sum() and texels.mask.reshape(-1)[mirror[found]].all()
    assert (mirror[~texels.mask.reshape(-1)] == -1).all()
    points = np.full((R * R, 3), np.nan)
    points[texels.texel_index.numpy()] = texels.points(torch.tensor(head.v_template[None], dtype=torch.float32),
                                                       torch.tensor(head.faces)).numpy()
    error = np.linalg.norm(points[mirror[found]] - points[found] * [-1, 1, 1], axis=1)
    assert error.max() <= 0.004 + 1e-6, error.max()  # the k-d tree's bound


def test_one_skin_colour_estimator_for_shaded_pixels_and_delit_albedo():
    """textures/skin: among a photo's shaded pixels (the photometric mask's defaults,
    brightness counts little) a shadowed cheek (half as bright) is skin; on de-lit albedo
    (the unwrap's settings, brightness counts) dark brown hair is not, while the face's
    own spread is kept."""
    from flamefit.textures.skin import skin_colour_weight

    rng = np.random.default_rng(0)
    face = np.array([0.55, 0.35, 0.27]) * rng.uniform(0.85, 1.15, (300, 1)) * rng.uniform(0.97, 1.03, (300, 3))
    shadow, hair = face[:50] * 0.5, np.array([0.12, 0.07, 0.045]) * rng.uniform(0.8, 1.2, (50, 1))
    colours = np.concatenate([face, shadow, hair])
    reference = np.arange(len(colours)) < len(face)
    photo = skin_colour_weight(colours, reference)
    albedo = skin_colour_weight(colours, reference, brightness=0.05, tolerance=2.5)
    assert photo[:300].mean() > 0.95 and photo[300:350].mean() > 0.9 and albedo[:300].mean() > 0.9
    assert albedo[350:].max() < 0.05 and albedo[300:350].mean() < 0.7
    assert (skin_colour_weight(colours, reference & (np.arange(len(colours)) < 10)) == 1).all()  # < 20: no estimate


def test_skin_model_rejects_grass_shirts_and_grey():
    from flamefit.textures.unwrap import skin_likelihood

    rng = np.random.default_rng(0)
    skin = torch.tensor([0.55, 0.35, 0.27]) * torch.tensor(rng.uniform(0.8, 1.2, (200, 1)), dtype=torch.float32)
    others = torch.tensor([[0.1, 0.3, 0.05], [0.1, 0.15, 0.5], [0.4, 0.4, 0.4], [0.95, 0.9, 0.85]])
    w = skin_likelihood(torch.cat([skin, others]), torch.ones(204))
    assert w[:200].mean() > 0.9 and (w[200:203] < 0.05).all()  # grass, blue shirt, grey
    assert w[203] < 0.5  # far brighter than this face's skin (a highlight)


# ----------------------------------------------------------------------------- synthetic heads


@pytest.fixture(scope="module")
def head(flame_extract_path):
    """FLAME 2023 Open geometry, prepared for fitting: the cylindrical UV layout (the
    extract has none) and the iBUG-68 embedding (cached)."""
    return _load_head(flame_extract_path)


def smooth_patterns(rng, count, size):
    """Random low-frequency colour patterns (count, size*size, 3), left/right symmetric in
    the cylindrical layout (u -> 1 - u), like faces, so mirror-filling unseen texels is right."""
    v, u = (np.mgrid[0:size, 0:size] + 0.5) / size
    out = []
    for _ in range(count):
        pattern = np.zeros((size, size, 3))
        for _ in range(3):
            fu, fv, phase = rng.uniform(0, 6), rng.uniform(-6, 6), rng.uniform(0, 2 * np.pi)
            wave = np.cos(2 * np.pi * fu * (u - 0.5)) * np.cos(2 * np.pi * fv * v + phase)
            pattern += wave[..., None] * rng.normal(0, 1, 3)
        out.append(pattern.reshape(-1, 3))
    return np.stack(out)


def known_space(model, rng):
    """Mean (R*R, 3) and basis (K, R*R, 3): smooth maps over the whole UV square (so the
    renderer's bilinear lookups near chart borders see the same albedo), the basis
    orthonormal over the model's covered texels, then unit-RMS. It is orthogonal to
    mean-proportional changes per channel: those look exactly like a photo's exposure /
    white balance, which the build divides out (normalise.py)."""
    from flamefit.render.uv_raster import texel_map

    covered = texel_map(model, R, "cpu").mask.reshape(-1)
    v, u = (np.mgrid[0:R, 0:R] + 0.5) / R
    mean = np.stack([0.45 + 0.08 * np.cos(6 * (u.ravel() - 0.5)), 0.30 + 0.04 * np.sin(4 * v.ravel()),
                     0.24 + 0.05 * (u.ravel() - 0.5) ** 2], -1)
    full = [np.where(np.arange(3)[None] == c, mean, 0.0).ravel() for c in range(3)]
    full += [p.ravel() for p in smooth_patterns(rng, K_TRUE, R)]
    full = np.stack(full, 1)  # (D, 3 + K)
    mask = np.repeat(covered, 3)
    # Gram-Schmidt in the inner product over covered texels, applied to the full maps.
    _, r = np.linalg.qr(full[mask])
    basis = np.linalg.solve(r.T, full.T)[3:].reshape(K_TRUE, R * R, 3)
    basis /= np.sqrt((basis[:, covered] ** 2).mean((1, 2)))[:, None, None]
    return mean.astype(np.float32), basis.astype(np.float32), covered


def random_view(rng, image_size=128):
    """Camera looking at the head from a random direction, and a random light."""
    from scipy.spatial.transform import Rotation

    from flamefit.render import PinholeCamera, ambient_light_sh, directional_light_sh

    yaw, pitch, roll = rng.uniform(-40, 40), rng.uniform(-15, 15), rng.uniform(-8, 8)
    rot = torch.tensor(Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix(), dtype=torch.float32)
    t = torch.tensor([0.0, 0.02, -0.9]) - rot @ torch.tensor([0.0, -0.02, 0.0])
    camera = PinholeCamera(torch.tensor([[4.0 * image_size] * 2]), torch.tensor([[image_size / 2] * 2]), rot[None], t[None])
    direction = torch.tensor([[rng.uniform(-1, 1), rng.uniform(-0.3, 1), rng.uniform(0.5, 1.5)]])
    tint = torch.tensor(rng.uniform(0.9, 1.1, 3), dtype=torch.float32)
    sh = directional_light_sh(direction, tint[None] * rng.uniform(0.5, 0.9)) \
        + ambient_light_sh(torch.full((1, 3), rng.uniform(0.4, 0.7)))
    return camera, sh


def render_head(model, albedo_map, camera, sh, image_size=128):
    from flamefit.render import render_rgb

    texture = torch.as_tensor(albedo_map.reshape(R, R, 3).transpose(2, 0, 1).copy())[None]
    verts = torch.tensor(model.v_template)[None]  # copies: the model's arrays are read-only
    face_uvs = torch.as_tensor(model.uv_coords[model.uv_faces])
    rendering = render_rgb(camera, verts, torch.tensor(model.faces), face_uvs, texture, sh, (image_size, image_size))
    return rendering.image[0].numpy()


@pytest.fixture(scope="module")
def synthetic(head):
    """Renders of the head with albedos drawn from a known space, unwrapped with the true
    pose and light, under random exposure/white-balance gains: N_TRAIN to build, N_HELD_OUT held out."""
    from flamefit.render.uv_raster import texel_map
    from flamefit.textures.unwrap import unwrap_albedo
    from flamefit.textures.uv_masks import uv_skin_prior

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mean, basis, covered = known_space(head, rng)
    texels = texel_map(head, R, "cpu")
    skin = uv_skin_prior(head, R)  # no eyeballs (FLAME's are separate pieces of the mesh)
    n = N_TRAIN + N_HELD_OUT
    gains = np.exp(rng.normal(0, 0.15, (n, 1)) + rng.normal(0, 0.05, (n, 3)))
    gains /= np.exp(np.log(gains[:N_TRAIN]).mean(0))  # only relative exposure is identifiable
    samples, weights, truths = [], [], []
    for i in range(n):
        z = rng.standard_normal(K_TRUE) * STD_TRUE
        albedo = np.clip(mean + np.tensordot(z, basis, 1), 0, 1)
        camera, sh = random_view(rng)
        image = render_head(head, albedo, camera, sh) * gains[i]
        result = unwrap_albedo(image, head.v_template, head.faces, texels, camera, sh[0].numpy(), skin_prior=skin,
                               skin_model=False)
        samples.append(result.albedo.reshape(3, -1).T)
        weights.append(result.confidence.reshape(-1))
        truths.append(albedo)
    return dict(mean=mean, basis=basis, covered=covered, X=np.stack(samples), W=np.stack(weights),
                truth=np.stack(truths), gains=gains)


def test_unwrap_matches_rendered_albedo(synthetic):
    X, W, truth, gains = synthetic["X"], synthetic["W"], synthetic["truth"], synthetic["gains"]
    sure = W > 0.5
    assert sure.mean() > 0.15  # a good part of the UV map is seen confidently in each render
    error = np.abs(X / gains[:, None, :] - truth)[sure]
    assert np.median(error) < 2e-3 and np.percentile(error, 95) < 0.03


def test_synthetic_space_is_recovered(synthetic, head):
    X, W = synthetic["X"][:N_TRAIN], synthetic["W"][:N_TRAIN]
    options = BuildOptions(components=6, uv_resolution=R, size=R, normalise="white-balance")
    space, result = space_from_samples(X, W, head, options)
    well_seen = result.coverage > 8  # texels seen with confidence in >~ 8 renders
    true_basis = synthetic["basis"][:, well_seen]
    found = space.basis.reshape(len(space.basis), 3, -1).transpose(0, 2, 1)[:, well_seen]
    angles = np.degrees(pca.principal_angles(true_basis, found[:K_TRUE]))
    found_mean = space.mean.reshape(3, -1).T[well_seen]
    mean_error = np.abs(found_mean - synthetic["mean"][well_seen]).mean()
    # The mean of the drawn albedos differs from the space's mean by ~ std / sqrt(N_TRAIN);
    # against it the error is the method's own.
    sample_mean = synthetic["truth"][:N_TRAIN, well_seen].mean(0)
    sample_mean_error = np.abs(found_mean - sample_mean).mean()
    held_out = heldout_errors(space, synthetic, range(N_TRAIN, N_TRAIN + N_HELD_OUT), well_seen)
    print(f"\nprincipal angles (deg) {np.round(angles, 2)}; mean albedo error {mean_error:.4f} "
          f"(vs the drawn albedos' mean {sample_mean_error:.4f}); "
          f"held-out RMS error vs K=0..6 {np.round(held_out, 4)}")
    assert angles.max() < 10.0, angles
    assert mean_error < 0.02 and sample_mean_error < 0.005
    assert all(held_out[k + 1] < held_out[k] for k in range(K_TRUE)), held_out
    assert held_out[K_TRUE] < 0.5 * held_out[0]
    assert held_out[-1] < 1.15 * held_out[K_TRUE]
    # One-sigma steps have the true size where the renders saw the head.
    true_rms = np.sqrt(((true_basis * STD_TRUE[:, None, None]) ** 2).mean((1, 2)))
    found_rms = np.sqrt(((found[:K_TRUE] * space.std[:K_TRUE, None, None]) ** 2).mean((1, 2)))
    np.testing.assert_allclose(found_rms, true_rms, rtol=0.25)


def heldout_errors(space, synthetic, indices, region):
    """RMS error (vs the true albedo, on `region`) of reconstructions of held-out renders
    from their own visible texels, for K = 0 .. space.num_components."""
    mean = space.mean.reshape(3, -1).T
    comps = space.basis.reshape(len(space.basis), 3, -1).transpose(0, 2, 1) * space.std[:, None, None]
    errors = np.zeros(space.num_components + 1)
    for i in indices:
        x, w = synthetic["X"][i], synthetic["W"][i]
        gain = np.einsum("p,pc,pc->c", w, x, mean) / np.einsum("p,pc->c", w, mean ** 2)
        x = x / gain
        for k in range(space.num_components + 1):
            z = pca.project(mean, comps[:k], x, w, np.ones(k), prior=1.0) if k else np.zeros(0)
            recon = pca.reconstruct(mean, comps, z)
            errors[k] += np.mean((recon[region] - synthetic["truth"][i][region]) ** 2)
    return np.sqrt(errors / len(indices))


# ----------------------------------------------------------------------------- file formats


def tiny_space(model, size=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.2, 0.6, (3, size, size)).astype(np.float32)
    basis = rng.standard_normal((k, 3, size, size)).astype(np.float32)
    basis /= np.sqrt((basis ** 2).mean((1, 2, 3)))[:, None, None, None]
    return TextureSpaceData(mean, basis, np.array([0.05, 0.03, 0.01][:k], np.float32), model.uv_coords, model.uv_faces)


def test_our_format_round_trips_in_flame_layout(head, tmp_path):
    space = tiny_space(head)
    path = save_texture_space(tmp_path / "space.npz", space, {"num_photos": 7, "input_licence": "CC0"})
    with np.load(path) as data:
        assert data["mean"].shape == (16, 16, 3) and data["tex_dir"].shape == (16, 16, 3, 3)
        assert {"vt", "ft", "meta"} <= set(data.files)
        meta = json.loads(str(data["meta"]))
    assert meta["num_photos"] == 7 and meta["colour"]["transfer"] == "linear" and meta["colour"]["order"] == "BGR"
    back = read_texture_space(path, head)
    np.testing.assert_allclose(back.mean, space.mean, atol=1e-6)
    np.testing.assert_allclose(back.basis, space.basis, atol=1e-5)
    np.testing.assert_allclose(back.std, space.std, rtol=1e-5)
    fitting_space = load_texture_space(path, head, components=2)
    from flamefit.textures.spaces import TextureSpace

    assert isinstance(fitting_space, TextureSpace) and tuple(fitting_space.basis.shape) == (2, 3, 16, 16)


@pytest.mark.parametrize("batch_axis", [False, True])  # (512,512,3) as published, or with a leading 1
def test_flame_texture_npz_is_converted_from_bgr_255_srgb(head, tmp_path, batch_axis):
    space = tiny_space(head)
    srgb_mean = linear_to_srgb(space.mean)
    dirs = space.basis * space.std[:, None, None, None] * 0.1  # small: first-order colour conversion
    mean_file = srgb_mean.transpose(1, 2, 0)[..., ::-1] * 255
    dirs_file = dirs.transpose(2, 3, 1, 0)[:, :, ::-1] * 255
    if batch_axis:
        mean_file, dirs_file = mean_file[None], dirs_file[None]
    path = tmp_path / "FLAME_texture.npz"
    np.savez(path, mean=mean_file, tex_dir=dirs_file, vt=head.uv_coords, ft=head.uv_faces.astype(np.int32))
    loaded = read_texture_space(path, head)
    assert loaded.meta["kind"] == "FLAME"
    np.testing.assert_allclose(loaded.mean, space.mean, atol=2e-5)
    # +1 sigma in the file (sRGB) and in the loaded space (linear) agree to first order
    step_file = srgb_to_linear(srgb_mean + dirs[0]) - space.mean
    step_loaded = loaded.basis[0] * loaded.std[0]
    assert np.abs(step_file - step_loaded).max() < 0.02 * np.abs(step_file).max() + 1e-4


def test_bfm_albedo_npz_is_converted_and_assumes_flame_layout(head, tmp_path):
    space = tiny_space(head)
    srgb = linear_to_srgb(space.mean)
    path = tmp_path / "FLAME_albedo_from_BFM.npz"
    pc = (space.basis * 0.01).transpose(2, 3, 1, 0)[:, :, ::-1].reshape(-1, 3)
    np.savez(path, MU=srgb.transpose(1, 2, 0)[..., ::-1].reshape(-1), PC=pc)
    loaded = read_texture_space(path, head)  # FLAME topology: accepted without vt/ft
    assert loaded.meta["kind"] == "BFM" and loaded.num_components == 3
    np.testing.assert_allclose(loaded.mean, space.mean, atol=2e-5)
    other = _other_topology(head)
    with pytest.raises(ModelFileError, match="FLAME's UV layout"):
        read_texture_space(path, other)


def _other_topology(model):
    import dataclasses

    return dataclasses.replace(model, name="open head (test stand-in)", uv_faces=model.uv_faces[:-10])


def test_saving_a_space_never_touches_a_file_beside_it(head, tmp_path):
    """The space is written through a private temporary (fsutil.atomic_save_npz): a user's
    file named like the old fixed temporary, SPACE.npz.tmp.npz, is left as it was."""
    mine = tmp_path / "space.npz.tmp.npz"
    mine.write_bytes(b"the user's file")
    path = save_texture_space(tmp_path / "space.npz", tiny_space(head))
    assert mine.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.npz", "space.npz.tmp.npz"]
    assert read_texture_space(path, head) is not None


def test_space_for_another_uv_layout_is_refused(head, tmp_path):
    space = tiny_space(head)
    path = save_texture_space(tmp_path / "space.npz", space)
    with pytest.raises(ModelFileError, match="another UV layout .*9976 faces"):
        read_texture_space(path, _other_topology(head))
    moved = TextureSpaceData(space.mean, space.basis, space.std, head.uv_coords * 0.9 + 0.05, head.uv_faces)
    path2 = save_texture_space(tmp_path / "moved.npz", moved)
    with pytest.raises(ModelFileError, match="built for another UV layout .*differ by up to") as info:
        load_texture_space(path2, head)
    assert "texture-space build" in str(info.value)
    with pytest.raises(ModelFileError, match="not a texture space"):
        np.savez(tmp_path / "junk.npz", a=np.zeros(3))
        read_texture_space(tmp_path / "junk.npz", head)


def test_resize_keeps_one_sigma_steps(head):
    space = tiny_space(head)
    big = space.resized(32)
    assert big.size == (32, 32)
    assert abs(float(np.sqrt((big.basis ** 2).mean())) - 1) < 1e-4  # unit RMS again
    step_small = (space.basis[0] * space.std[0]).mean()
    step_big = (big.basis[0] * big.std[0]).mean()
    assert abs(step_small - step_big) < 1e-3


def _flame_layout_file(path, size, k, dtype=np.float64, faces=None, seed=0):
    """A FLAME_texture.npz-style file (BGR x 255 sRGB, tex_dir (H,W,3,K)) with `faces` UV faces."""
    rng = np.random.default_rng(seed)
    arrays = {"mean": rng.uniform(60, 200, (size, size, 3)).astype(dtype),
              "tex_dir": rng.normal(0, 5, (size, size, 3, k)).astype(dtype)}
    if faces is not None:
        arrays["vt"] = rng.random((faces + 5, 2)).astype(np.float32)
        arrays["ft"] = rng.integers(0, faces + 5, (faces, 3)).astype(np.int32)
    np.savez(path, **arrays)
    return path


def test_model_info_reports_a_space_without_a_model(tmp_path):
    """model-info has no model to check a UV layout against: a space for another layout
    (the open head's) or without one (BFM) is described, not called invalid."""
    from flamefit.app.inspect import model_info as inspect_model_file
    from flamefit.cli import main

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    ours = TextureSpaceData(np.full((3, 8, 8), 0.4, np.float32), basis, np.array([0.1, 0.05, 0.02], np.float32),
                            rng.random((40, 2)).astype(np.float32), rng.integers(0, 40, (30, 3)))
    path = save_texture_space(tmp_path / "open_head_space.npz", ours, {"num_photos": 4, "input_licence": "CC0"})
    info = inspect_model_file(path)
    assert info["kind"] == "texture space" and info["problems"] == []
    described = info["texture_space"]
    assert described["kind"] == "flamefit" and described["size"] == [8, 8] and described["components"] == 3
    assert described["uv_layout"].startswith("30 faces") and described["colour"]["transfer"] == "linear"
    assert described["num_photos"] == 4 and described["input_licence"] == "CC0"
    assert main(["model-info", str(path)]) == 0

    bfm = tmp_path / "FLAME_albedo_from_BFM.npz"
    np.savez(bfm, MU=rng.random(8 * 8 * 3), PC=rng.normal(0, 0.01, (8 * 8 * 3, 5)))
    info = inspect_model_file(bfm)
    assert info["kind"] == "texture space" and info["problems"] == []
    assert info["texture_space"]["kind"] == "BFM" and info["texture_space"]["components"] == 5
    assert info["texture_space"]["colour"] == {"order": "BGR", "scale": 1.0, "transfer": "srgb"}
    assert "none in the file" in info["texture_space"]["uv_layout"]
    flame = _flame_layout_file(tmp_path / "FLAME_texture.npz", 8, 4, faces=9976)
    assert inspect_model_file(flame)["texture_space"]["colour"]["scale"] == 255.0
    np.savez(tmp_path / "broken.npz", mean=np.zeros((8, 8, 3)), tex_dir=np.zeros((7, 8, 3, 2)))
    assert "do not describe one 8x8" in inspect_model_file(tmp_path / "broken.npz")["problems"][0]


def test_only_the_requested_components_are_read(tmp_path, monkeypatch):
    """FLAME_texture.npz holds 200 components, the fitter uses fewer: the others are never
    read into memory (tex_dir is streamed; only its first K columns are kept)."""
    import tracemalloc

    from flamefit.models import safe_pickle

    path = _flame_layout_file(tmp_path / "FLAME_texture.npz", 32, 160)  # tex_dir: 3.9 MB of float64
    full_bytes = 32 * 32 * 3 * 160 * 8
    everything = read_texture_space(path)
    monkeypatch.setattr(safe_pickle, "NPZ_CHUNK_BYTES", 64 << 10)
    tracemalloc.start()
    try:
        two = read_texture_space(path, components=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert two.basis.shape == (2, 3, 32, 32) and two.meta["components_in_file"] == 160
    np.testing.assert_allclose(two.basis, everything.basis[:2], atol=1e-6)
    np.testing.assert_allclose(two.std, everything.std[:2], rtol=1e-6)
    assert peak < full_bytes / 6, f"peak {peak} bytes: the whole tex_dir ({full_bytes} bytes) was read"
    bfm = tmp_path / "FLAME_albedo_from_BFM.npz"  # PC (N, K): the same streaming
    np.savez(bfm, MU=np.full(16 * 16 * 3, 0.5), PC=np.random.default_rng(1).normal(0, 0.01, (16 * 16 * 3, 6)))
    assert read_texture_space(bfm, components=4).basis.shape == (4, 3, 16, 16)


def test_fit_and_batch_load_only_the_components_the_fitter_uses(tmp_path, monkeypatch):
    import types

    import flamefit.fitting.prepare
    import flamefit.models
    from flamefit.app import batch
    from flamefit.app.session import load_fit_inputs, settings_from
    from flamefit.fitting.albedo import TEXTURE_SPACE_COMPONENTS, TextureSpaceAlbedo

    stored = TEXTURE_SPACE_COMPONENTS + 6
    path = _flame_layout_file(tmp_path / "FLAME_texture.npz", 8, stored, np.float32, faces=20)
    with np.load(path) as data:
        stand_in = types.SimpleNamespace(name="stand-in head", uv_coords=data["vt"], uv_faces=data["ft"].astype(np.int64))
    monkeypatch.setattr(flamefit.models, "load_head_model", lambda settings: stand_in)
    monkeypatch.setattr(flamefit.fitting.prepare, "prepare_model", lambda model, cache_dir=None: model)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    for key in [k for k in os.environ if k.startswith("FLAMEFIT_")]:
        monkeypatch.delenv(key)
    flags = dict(flame_model=None, uv_template=None, texture_space=str(path), landmark_embedding=None,
                 cache_dir=str(tmp_path / "cache"))
    _, space, _ = load_fit_inputs(settings_from(flags))  # `flamefit fit` and `batch --workers 1`
    assert tuple(space.basis.shape) == (TEXTURE_SPACE_COMPONENTS, 3, 8, 8)
    assert TextureSpaceAlbedo(space).coeffs.shape[1] == TEXTURE_SPACE_COMPONENTS  # all it fits
    monkeypatch.setattr(batch.pool, "worker_signals", lambda: None)  # keep this process's handlers
    threads = torch.get_num_threads()
    try:
        batch.worker_init({"settings": {"texture_space": str(path)}})  # `batch --workers N`
    finally:
        torch.set_num_threads(threads)
        worker_space = batch._WORKER.pop("space", None)
        batch._WORKER.clear()
    assert tuple(worker_space.basis.shape) == (TEXTURE_SPACE_COMPONENTS, 3, 8, 8)


def test_bundle_writes_sh_only_for_a_camera_without_rotation(tmp_path):
    """INTERFACE.md gives the SH light for world-space normals; the renderer (and the
    texture build's de-lighting) shades camera-space normals. The bundle writes the
    camera it was fitted with, and refuses one whose rotation would make the two differ."""
    import types

    from flamefit.bundle.writer import world_to_camera, write_params
    from flamefit.fitting.geometry import CameraFrame
    from flamefit.image import Crop
    from flamefit.render.lighting import ambient_light_sh

    class RotatedFrame(CameraFrame):
        def extrinsics(self):
            a = math.radians(10)
            return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]), np.zeros(3)

    crop = Crop(100, 50, 300, 256)
    sh = ambient_light_sh(torch.ones(1, 3))[0].numpy()

    def result(frame):  # schema 3, plain arrays: the parameters per view, the first view's camera is the world
        view = types.SimpleNamespace(frame=frame, expression=np.zeros(2), pose=np.zeros((5, 3)),
                                     translation=np.array([0.0, 0.0, -1.0]), sh=sh)
        return types.SimpleNamespace(identity=np.zeros(3), views=[view])

    write_params(result(CameraFrame(640, 480, crop)), tmp_path / "params.npz")
    with np.load(tmp_path / "params.npz") as params:
        np.testing.assert_array_equal(params["world_to_camera"], np.eye(4)[None])
    rotated = RotatedFrame(640, 480, crop)
    with pytest.raises(RuntimeError, match="SH light is in world space only for a camera without rotation"):
        world_to_camera(rotated)
    with pytest.raises(RuntimeError, match="rotated"):
        write_params(result(rotated), tmp_path / "rotated.npz")


# ----------------------------------------------------------------------------- build + resume


_INTERRUPT_AFTER = {"count": None}


def truth_view(path, model, context):
    """A stand-in for the fitter: the true pose and light stored beside each render."""
    from flamefit.app.texture_space_build import PhotoView, photo_arrays
    from flamefit.render import PinholeCamera

    if _INTERRUPT_AFTER["count"] is not None:
        if _INTERRUPT_AFTER["count"] == 0:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a fit
        _INTERRUPT_AFTER["count"] -= 1
    time.sleep(float(os.environ.get("TEXTURE_TEST_FIT_SECONDS", "0")))  # a slower "fit"
    truth = np.load(Path(path).with_suffix(".truth.npz"))
    if truth["no_face"]:
        raise FlameFitError(f"{path}: no face found")
    camera = PinholeCamera(torch.tensor(truth["focal"]), torch.tensor(truth["principal"]), torch.tensor(truth["R"]),
                           torch.tensor(truth["t"]))
    linear, srgb_max = photo_arrays(path)
    return PhotoView(linear, model.v_template, camera, truth["sh"], srgb_max, {"fitter": "truth"})


@pytest.fixture(scope="module")
def photo_folder(head, tmp_path_factory):
    """12 synthetic photos as 8-bit sRGB PNGs with their true parameters; one has 'no face'."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    mean, basis, _ = known_space(head, rng)
    for i in range(12):
        albedo = np.clip(mean + np.tensordot(rng.standard_normal(K_TRUE) * STD_TRUE, basis, 1), 0, 1)
        camera, sh = random_view(rng)
        image = render_head(head, albedo, camera, sh)
        Image.fromarray((linear_to_srgb(np.clip(image, 0, 1)) * 255 + 0.5).astype(np.uint8)).save(folder / f"p{i:02d}.png")
        np.savez(folder / f"p{i:02d}.truth.npz", focal=camera.focal.numpy(), principal=camera.principal.numpy(),
                 R=camera.R.numpy(), t=camera.t.numpy(), sh=sh[0].numpy(), no_face=(i == 7))
    return folder


def _build(folder, out, model, log=lambda *a: None, **kw):
    settings = dict(components=4, uv_resolution=R, size=64, fitter="test_texture_space:truth_view")
    options = BuildOptions(**{**settings, **kw})
    return build_texture_space(folder, out, options, model, log=log)


def test_interrupted_build_resumes_without_losing_photos(head, photo_folder, tmp_path):
    reference = _build(photo_folder, tmp_path / "ref" / "space.npz", head)
    assert reference.used == 11 and len(reference.failed) == 1 and "no face" in next(iter(reference.failed.values()))

    out = tmp_path / "run" / "space.npz"
    _INTERRUPT_AFTER["count"] = 5
    try:
        with pytest.raises(KeyboardInterrupt):
            _build(photo_folder, out, head)
    finally:
        _INTERRUPT_AFTER["count"] = None
    work = work_dir_for(out)
    stored = sorted(p.name for p in (work / "unwrapped").iterdir())
    assert len(stored) == 5 and all(name.endswith(".npz") and not name.startswith(".") for name in stored)
    assert not out.exists()
    with pytest.raises(FlameFitError, match="--resume"):
        _build(photo_folder, out, head)
    resumed = _build(photo_folder, out, head, resume=True, workers=2)
    assert resumed.fitted_now == 12 - 5 and resumed.used == 11
    a, b = read_texture_space(reference.output, head), read_texture_space(out, head)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-5)
    np.testing.assert_allclose(np.abs(a.basis), np.abs(b.basis), atol=1e-3)
    again = _build(photo_folder, out, head, resume=True, overwrite=True)  # everything stored: only the PCA runs
    assert again.fitted_now == 0
    with pytest.raises(FlameFitError, match="settings changed"):
        _build(photo_folder, out, head, resume=True, overwrite=True, uv_resolution=16)


def test_build_killed_by_a_signal_resumes(head, photo_folder, flame_extract_path, tmp_path):
    """A real SIGINT to a build process (2 workers) in the middle of the photos."""
    out = tmp_path / "space.npz"
    tests = Path(__file__).parent
    # Ctrl-C raises KeyboardInterrupt as in a terminal, even when this run inherited SIGINT
    # ignored (a background job of a non-interactive shell, as CI runners start them).
    script = (f"import signal, sys; sys.path[:0] = [{str(tests.parent / 'backend')!r}, {str(tests)!r}]\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from test_texture_space import _build, _load_head\n"
              f"_build({str(photo_folder)!r}, {str(out)!r}, _load_head({str(flame_extract_path)!r}), workers=2)\n")
    env = {**os.environ, "TEXTURE_TEST_FIT_SECONDS": "1.0"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    work = work_dir_for(out)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("unwrapped/*.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the build ended before 3 photos were stored: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err.decode()[-2000:]
    done = len(list(work.glob("unwrapped/[!.]*.npz"))) + len(list(work.glob("failed/[!.]*.json")))
    assert 3 <= done < 12 and not out.exists()
    resumed = _build(photo_folder, out, head, resume=True)
    assert resumed.fitted_now == 12 - done and resumed.used == 11
    assert not list(work.glob("unwrapped/.*"))  # no partial file left behind


def _load_head(path):
    from flamefit.config import load_settings
    from flamefit.fitting import prepare_model
    from flamefit.models.flame import load_flame

    return prepare_model(load_flame(path), load_settings().cache_dir)


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    from flamefit.cli import main

    (tmp_path / "photos").mkdir()
    assert main(["texture-space", "build", str(tmp_path / "photos"), "-o", str(tmp_path / "s.npz"), "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
    assert main(["texture-space", "build", str(tmp_path / "photos"), "-o", str(tmp_path / "s.npz")]) == 2
    assert "no photos" in capsys.readouterr().err


def test_build_writes_metadata_and_contact_sheet(head, photo_folder, tmp_path):
    from PIL import Image

    report = _build(photo_folder, tmp_path / "space.npz", head, licence="CC0-1.0 (synthetic renders)")
    with np.load(report.output) as data:
        meta = json.loads(str(data["meta"]))
        assert data["mean"].shape == (64, 64, 3) and data["tex_dir"].shape == (64, 64, 3, 4)
        assert data["ft"].shape == (9976, 3)
    assert meta["num_photos"] == 11 and meta["photos_failed"] == 1
    assert meta["input_licence"].startswith("CC0") and meta["head_model"]["name"] == head.name
    assert meta["colour"] == {**meta["colour"], "order": "BGR", "scale": 255.0, "transfer": "linear"}
    sheet = Image.open(report.contact_sheet)
    assert sheet.width > 600 and sheet.height > 500


# ----------------------------------------------------------------------------- outputs: nothing a user owns is lost


def test_build_never_writes_over_a_photo(head, photo_folder, tmp_path):
    """-o PHOTOS/p01.npz puts the contact sheet at p01.png, a photo: refused, even with
    --overwrite, before anything is written."""
    photos = shutil.copytree(photo_folder, tmp_path / "photos")
    before = (photos / "p01.png").read_bytes()
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(FlameFitError, match=r"p01\.png: is one of the photos in .*--overwrite never replaces"):
            _build(photos, photos / "p01.npz", head, **kw)
    assert (photos / "p01.png").read_bytes() == before
    assert not (photos / "p01.npz").exists() and not (photos / "p01.work").exists()


def test_existing_outputs_are_replaced_only_with_overwrite_and_only_ours(head, photo_folder, tmp_path):
    # The user's own mine.npz / mine.png: kept, with or without --overwrite.
    mine = tmp_path / "mine.npz"
    np.savez(mine, mean=np.zeros(3))
    shutil.copy(photo_folder / "p00.png", tmp_path / "mine.png")
    owned = {p: p.read_bytes() for p in (mine, tmp_path / "mine.png")}
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(FlameFitError, match=r"mine\.npz: exists and is not a texture space FlameFit wrote"):
            _build(photo_folder, mine, head, **kw)
        mine.rename(tmp_path / "mine.npz.aside")  # now the picture is in the way
        with pytest.raises(FlameFitError, match=r"mine\.png: exists and is not a contact sheet FlameFit wrote"):
            _build(photo_folder, mine, head, **kw)
        (tmp_path / "mine.npz.aside").rename(mine)
    assert {p: p.read_bytes() for p in owned} == owned and not (tmp_path / "mine.work").exists()

    # FlameFit's own space and sheet: refused without --overwrite (--resume reuses only
    # the work folder), replaced with it; --overwrite never starts the work folder over.
    out = tmp_path / "space.npz"
    _build(photo_folder, out, head)
    inodes = [p.stat().st_ino for p in (out, out.with_suffix(".png"))]
    for kw in ({}, {"resume": True}):
        with pytest.raises(FlameFitError, match=r"space\.npz: already exists \(use --overwrite"):
            _build(photo_folder, out, head, **kw)
    with pytest.raises(FlameFitError, match=r"space\.work: a build was started here before; pass --resume"):
        _build(photo_folder, out, head, overwrite=True)
    again = _build(photo_folder, out, head, resume=True, overwrite=True)
    assert again.fitted_now == 0 and [p.stat().st_ino for p in (out, out.with_suffix(".png"))] != inodes

    # The space the fits read is an input: never replaced.
    with pytest.raises(FlameFitError, match=r"space\.npz: is the texture space the fits use"):
        _build(photo_folder, out, head, resume=True, overwrite=True, texture_space=str(out))


def truth_view_user_saves(path, model, context):
    """truth_view, while the user saves a picture where the contact sheet will go."""
    target = Path(os.environ["TEXTURE_TEST_USER_FILE"])
    if not target.exists():
        target.write_bytes(b"the user's drawing")
    return truth_view(path, model, context)


def test_a_file_saved_during_the_build_is_kept(head, photo_folder, tmp_path, monkeypatch):
    out = tmp_path / "space.npz"
    monkeypatch.setenv("TEXTURE_TEST_USER_FILE", str(out.with_suffix(".png")))
    with pytest.raises(FlameFitError, match=r"space\.png: exists and is not a contact sheet FlameFit wrote"):
        _build(photo_folder, out, head, fitter="test_texture_space:truth_view_user_saves")
    assert out.with_suffix(".png").read_bytes() == b"the user's drawing" and not out.exists()
    assert len(list(work_dir_for(out).glob("unwrapped/*.npz"))) == 11  # the fits are kept for a --resume


def test_resume_never_writes_into_a_users_folder(head, photo_folder, tmp_path):
    work = tmp_path / "space.work"
    work.mkdir()
    (work / "thesis.txt").write_text("t")
    for kw in ({"resume": True}, {}):
        with pytest.raises(FlameFitError, match=r"space\.work: exists and is not a texture-space build's work folder"):
            _build(photo_folder, tmp_path / "space.npz", head, **kw)
    assert os.listdir(work) == ["thesis.txt"] and not (tmp_path / "space.npz").exists()


def test_every_photo_left_out_is_named(head, photo_folder, tmp_path):
    """A contact sheet among the photos is not a photo, a failed photo is not used: the
    log says both (a build into the photo folder leaves its sheet there)."""
    photos = shutil.copytree(photo_folder, tmp_path / "photos")
    _build(photos, photos / "space.npz", head)
    lines = []
    report = _build(photos, photos / "other.npz", head, log=lines.append)
    assert report.photos == 12 and report.used == 11
    assert "left out space.png: a FlameFit contact sheet, not a photo" in lines
    assert any(line.startswith("11 of 12 photos used; left out: 1 failed (p07.png; why: ") for line in lines), lines


def test_cli_refuses_an_output_in_one_line_before_the_model_loads(tmp_path, capsys):
    """Checked before the model loads: the broken --model is never read."""
    from PIL import Image

    from flamefit.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a1.png", "a2.png"):
        Image.new("RGB", (32, 32), (200, 150, 120)).save(photos / name)
    (tmp_path / "mine.npz").write_bytes(b"my data")
    (tmp_path / "broken.npz").write_bytes(b"not a model")
    broken = ["--model", str(tmp_path / "broken.npz")]
    cases = [(["-o", str(tmp_path / "mine.npz")], "mine.npz: exists and is not a texture space FlameFit wrote"),
             (["-o", str(photos / "a1.npz"), "--overwrite"], "a1.png: is one of the photos in")]
    for args, message in cases:
        assert main(["texture-space", "build", str(photos), *args, *broken]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flamefit: error: ") and err.count("\n") == 1 and message in err, err
    assert (tmp_path / "mine.npz").read_bytes() == b"my data" and sorted(os.listdir(tmp_path)) == ["broken.npz", "mine.npz", "photos"]
    assert sorted(os.listdir(photos)) == ["a1.png", "a2.png"]


# ----------------------------------------------------------------------------- real photos


MESSI = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory, astronaut):
    """The few face photos that packages ship: skimage's astronaut (and its mirror image, a
    second view for the fitter) and opencv-doc's messi5.jpg (its small face cropped, 3x)."""
    import cv2

    folder = tmp_path_factory.mktemp("real_photos")
    cv2.imwrite(str(folder / "astronaut.png"), astronaut[:, :, ::-1])
    cv2.imwrite(str(folder / "astronaut_mirrored.png"), np.ascontiguousarray(astronaut[:, ::-1, ::-1]))
    if MESSI.exists():
        messi = cv2.imread(str(MESSI))
        cv2.imwrite(str(folder / "messi5_face.png"), cv2.resize(np.ascontiguousarray(messi[40:200, 170:330]), None,
                                                                 fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    return folder


def test_real_photo_build_gives_a_space_the_fitter_uses(real_photos, tmp_path, monkeypatch):
    from flamefit.cli import main
    from flamefit.config import load_settings
    from flamefit.fitting import FitOptions, fit_photo, prepare_model
    from flamefit.models import load_head_model

    monkeypatch.setenv("FLAMEFIT_CONFIG", str(tmp_path / "none.toml"))  # the default model: the open head
    (tmp_path / "none.toml").write_text("")
    out = tmp_path / "space.npz"
    code = main(["texture-space", "build", str(real_photos), "-o", str(out), "--components", "4",
                 "--uv-resolution", "128", "--size", "256", "--workers", "2", "--licence", "test photos (public domain)"])
    assert code == 0 and out.exists() and out.with_suffix(".png").exists()
    model = prepare_model(load_head_model(load_settings()), load_settings().cache_dir)
    space = read_texture_space(out, model)
    photos = len(list(real_photos.iterdir()))
    assert space.meta["num_photos"] == photos and space.num_components == photos - 1
    assert space.size == (256, 256) and np.isfinite(space.basis).all() and (space.std > 0).all()
    skin = space.mean.reshape(3, -1)[:, space.mean.reshape(3, -1).sum(0) > 0.05]
    assert 0.02 < float(np.median(skin)) < 0.9  # a plausible linear albedo, not noise or black

    options = FitOptions(stages=("landmarks", "photometric"), photometric_schedule=((96, 15),), shape_iterations=20,
                         rigid_iterations=15)
    fitted_space = load_texture_space(out, model)
    result = fit_photo(real_photos / "astronaut.png", model, options, texture_space=fitted_space)
    assert result.texture_space == fitted_space.name  # the result says which space its coefficients are of
    assert result.albedo_coefficients.shape == (space.num_components,)
    assert np.isfinite(result.albedo_coefficients).all() and np.abs(result.albedo_coefficients).max() > 0
    assert np.isfinite(result.texture).all() and result.metrics["psnr_db"] > 15
