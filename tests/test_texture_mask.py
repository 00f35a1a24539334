"""The texture mask (issue #20.2): what the photo shows that is not the face's own colour
takes the fill. On skimage's astronaut with a green rectangle painted over her right ear:
without the mask the green reaches the ear's texels, with it they hold skin colours; the
face inside the jaw line keeps the photo's colours; the bundle writes texture_mask.png
(255 where albedo.png holds the photo's colour, 0 where it is filled)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import flamefit.fitting.texture as texture_stage
from flamefit.bundle import write_bundle
from flamefit.config import load_settings
from flamefit.fitting import FitOptions, fit_photo, prepare_model
from flamefit.image import Photo
from flamefit.models import load_head_model
from flamefit.render.uv_raster import texel_map
from flamefit.textures.texture_mask import texture_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 256


@pytest.fixture(scope="module")
def model():
    settings = load_settings()
    return prepare_model(load_head_model(settings), settings.cache_dir)


@pytest.fixture(scope="module")
def green_ear(model, astronaut, tmp_path_factory):
    """The astronaut with a green rectangle beside her right jaw line's top (the ear)."""
    folder = tmp_path_factory.mktemp("green_ear")
    first = fit_photo(Photo(folder / "astronaut.png", astronaut), model, FitOptions(texture_size=SIZE))
    marks = first.fitted_2d
    iod = np.linalg.norm(marks[36] - marks[45])
    x, y = marks[0]
    photo = astronaut.copy()
    photo[int(y - 0.5 * iod):int(y + 0.4 * iod), int(x - 0.6 * iod):int(x - 0.08 * iod)] = (20, 190, 30)
    return Photo(folder / "green_ear.png", photo), folder


def _greenness(texture, index):
    rgb = texture.reshape(-1, 3)[index]
    return rgb[:, 1] - rgb[:, 0]


def test_a_green_patch_over_the_ear_does_not_reach_the_texture(model, green_ear, monkeypatch):
    photo, folder = green_ear
    masked = fit_photo(photo, model, FitOptions(texture_size=SIZE))
    with monkeypatch.context() as patch:  # the same fit with every texel trusted, for comparison
        patch.setattr(texture_stage, "texture_mask", lambda albedo, confidence, *a, **k: np.ones(len(confidence)))
        unmasked = fit_photo(photo, model, FitOptions(texture_size=SIZE))
    texels = texel_map(model, SIZE, "cpu")
    ears = np.isin(np.asarray(model.faces)[texels.face.numpy()], model.regions["ears"]).all(1)
    index = texels.texel_index.numpy()[ears]
    # the patch reached these without the mask: green's share of the de-lit colour (skin ~0.3,
    # the patch ~0.95), not green minus red, which scales with how bright the fitted light is there
    rgb = unmasked.texture.reshape(-1, 3)[index]
    painted = rgb[:, 1] > 0.4 * rgb.sum(1)
    assert painted.sum() > 20
    assert np.median(_greenness(masked.texture, index[painted])) < 0.0  # skin: red above green
    assert masked.seen.reshape(-1)[index[painted]].max() < 0.2

    # The face inside the jaw line and brows keeps the photo's colours (only the fill changes).
    inside = (unmasked.seen > 0.9).reshape(-1)
    face = np.zeros(SIZE * SIZE, bool)
    face[texels.texel_index.numpy()[np.isin(np.asarray(model.faces)[texels.face.numpy()],
                                            model.regions["face"]).all(1)]] = True
    from flamefit.textures.uv_masks import uv_face_outline

    outline = uv_face_outline(model, SIZE).reshape(-1) & inside & face
    assert outline.sum() > 1000
    kept = masked.seen.reshape(-1)[outline] / unmasked.seen.reshape(-1)[outline]
    assert np.median(kept) > 0.95

    # texture_mask.png in the bundle: the final weight of the photo's colour per texel.
    out = write_bundle(masked, folder / "bundle")
    mask = np.asarray(Image.open(out / "texture_mask.png").convert("L"))
    assert mask.shape == (SIZE, SIZE)
    assert np.abs(mask / 255.0 - masked.seen).max() <= 0.5 / 255 + 1e-6
    assert (mask.reshape(-1)[index[painted]] < 60).all()


def test_the_mask_keeps_skin_and_drops_what_is_not(model):
    """On the model's own texels: skin-coloured albedo stays, a blue or grey one on the scalp
    goes, anything inside the jaw line and brows stays."""
    texels = texel_map(model, SIZE, "cpu")
    n = len(texels.face)
    skin = np.array([0.55, 0.36, 0.27])
    albedo = np.tile(skin, (n, 1))
    faces = np.asarray(model.faces)[texels.face.numpy()]
    scalp = np.isin(faces, model.regions["scalp"]).all(1)
    rng = np.random.default_rng(0)
    albedo *= rng.uniform(0.95, 1.05, (n, 1))
    patch = scalp & (np.arange(n) % 2 == 0)
    albedo[patch] = (0.1, 0.2, 0.6)  # a blue shirt
    weights = texture_mask(albedo, np.ones(n), model, texels)
    assert np.median(weights[scalp & ~patch]) > 0.4 and np.median(weights[patch]) < 0.6
    from flamefit.textures.uv_masks import uv_face_outline

    outline = uv_face_outline(model, SIZE).reshape(-1)[texels.texel_index.numpy()]
    albedo[outline] = (0.1, 0.2, 0.6)
    assert np.median(texture_mask(albedo, np.ones(n), model, texels)[outline]) > 0.95


def test_hair_stays_on_the_scalp_and_goes_over_the_face(model):
    """Hair belongs on the scalp (a bald head mesh orbited should show it where the photo
    did), not over the upper forehead and temples: on the model's texels, brown hair on
    the scalp keeps its weight, the same hair on the face region outside the kept outline
    and a blue shirt on the scalp take the fill."""
    texels = texel_map(model, SIZE, "cpu")
    n = len(texels.face)
    rng = np.random.default_rng(1)
    skin, hair = np.array([0.55, 0.36, 0.27]), np.array([0.09, 0.06, 0.04])
    albedo = np.tile(skin, (n, 1)) * rng.uniform(0.95, 1.05, (n, 1))
    faces = np.asarray(model.faces)[texels.face.numpy()]
    scalp = np.isin(faces, model.regions["scalp"]).all(1)
    from flamefit.textures.texture_mask import feature_zones

    kept = feature_zones(model, texels)[0] > 0  # the face inside the jaw line and raised brows, the features
    forehead = np.isin(faces, model.regions["face"]).all(1) & ~kept  # the upper forehead, the temples
    shirt = scalp & (np.arange(n) % 5 == 0)
    albedo[scalp] = hair * rng.uniform(0.7, 1.4, (int(scalp.sum()), 1))  # strands lighter and darker
    albedo[forehead] = hair
    albedo[shirt] = (0.1, 0.2, 0.6)
    weights = texture_mask(albedo, np.ones(n), model, texels)
    assert forehead.sum() > 100
    assert np.median(weights[scalp & ~shirt]) > 0.9
    assert np.median(weights[forehead]) < 0.1
    assert np.median(weights[shirt]) < 0.6  # smoothed with the hair around it, but down


def test_teeth_are_dropped_inside_the_lips_and_pale_skin_around_clipped_lips_stays(model):
    """An overexposed photo (AFW 2417212918): the lips clip to a saturated red (chroma ~1),
    so near-white skin just outside their outline is 'much paler and greyer than the
    lips' as teeth are. Teeth land inside the fitted lips' outline (a smile on closed
    lips): only there does the teeth rule drop texels; the skin ring around the lips stays."""
    from flamefit.textures.texture_mask import OUTER_LIPS, feature_zones
    from flamefit.textures.uv_masks import inside_polygon

    texels = texel_map(model, SIZE, "cpu")
    n = len(texels.face)
    faces = np.asarray(model.faces)[texels.face.numpy()]
    verts = np.asarray(model.v_template)
    points = (verts[faces] * texels.bary.numpy()[:, :, None]).sum(1)
    marks = model.landmarks["ibug68"].points(model.v_template, model.faces)
    front = points[:, 2] > marks[OUTER_LIPS, 2].min() - 0.01
    lips = feature_zones(model, texels)[1] > 0.5
    inner = inside_polygon(points[:, :2], marks[OUTER_LIPS, :2]) & front
    centre = marks[OUTER_LIPS, :2].mean(0)
    rng = np.random.default_rng(2)
    albedo = np.tile([0.8, 0.7, 0.62], (n, 1)) * rng.uniform(0.97, 1.03, (n, 1))  # pale, near-white skin
    middle = inner & (np.abs(points[:, 1] - centre[1]) < 0.002)  # along the lip line: the teeth
    below = lips & ~inner & (points[:, 1] < centre[1])  # the lip zone's skin ring under the lower lip
    albedo[lips & ~middle & ~below] = (0.6, 0.02, 0.01)  # clipped red lips: most of the lip zone
    albedo[middle] = (0.85, 0.83, 0.8)  # teeth: grey and bright
    assert below.sum() > 50 and middle.sum() > 20
    weights = texture_mask(albedo, np.ones(n), model, texels)
    assert np.median(weights[below]) > 0.9  # the skin around the lips keeps the photo's colour (0.07 before)
    assert np.median(weights[middle]) < 0.5  # the teeth on the lips take the fill
