"""Which texels hold the face's own colour from the photo (issue #20.2).

A photo shows more than skin where the fitted head lies: background at the ears and
the silhouette, clothing on the neck, hair over the forehead and temples, the teeth of
a smile where the fitted lips are closed. `texture_mask` gives each seen texel a weight
in [0, 1] that multiplies its confidence in the texture stage, so what is not the
face's own colour takes the fill (mirror, then the surface fill) instead, blended by the
soft weight:

- skin: a skin-like hue (red >= green > blue) close to this photo's own skin colour over
  the skin core, the cheeks and nose (skin.py: the estimator the photometric mask and
  the unwrap use);
- what stays whatever its colour: the face inside the jaw line and the brows raised by
  `forehead` (0.45) x the eye-corner distance (shadows, freckles, beard, and hair over
  that part of the forehead: the photometric fit and its PSNR judge the same region),
  and around the eyebrows, the eyes and the lips, found from the model's iBUG-68
  embedding on the template; so the mask acts on the upper forehead, the temples, the
  ears, the scalp and the neck;
- hair where hair belongs: on the model's "scalp" region (top, back and sides of the
  skull above the ears) colours close to this photo's hair (the well-seen scalp's
  hair-hued texels that are not skin: `hair_hue`) stay, so a head orbited shows the hair
  the photo saw there; background and clothing, far from both skin and hair, still go.
  Hair over the face region (upper forehead, temples) takes the fill as before. A model
  without a "scalp" region masks hair everywhere outside the kept face;
- the mouth's inside does not land on the lips: in the lip zone a texel much darker than
  the lips (the mouth cavity) is dropped, and inside the lips' outline one much paler and
  greyer than them (teeth; not in the skin ring around the lips: clipped lips in an
  overexposed photo make pale skin there look like teeth, AFW 2417212918). The lips'
  colour is the median inside their outline.

The weights are smoothed over a few texels so the fill blends in. The bundle's
`texture_mask.png` is the final per-texel weight of the photo's colour in albedo.png
(this mask x visibility x viewing angle), 255 = the photo's colour, 0 = filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..render.shading import vertex_normals
from .skin import MIN_REFERENCE, skin_colour_weight, skin_hue, smoothstep
from .uv_masks import JAW_AND_BROWS, hair_vertices, inside_polygon


@dataclass(frozen=True)
class MaskOptions:
    enabled: bool = True  # off: every seen texel keeps the photo's colour (the fill only where unseen)
    forehead: float = 0.45  # the kept face reaches this x the eye-corner distance above the brows
    brows: float = 0.008  # metres around the eyebrow landmarks that keep their colour
    eyes: float = 0.006  # around the eye outlines (lids, lashes)
    lips: float = 0.003  # around the outer lip outline
    feather: float = 0.003  # metres over which a feature zone fades out
    teeth_chroma: float = 0.5  # a lip texel below this fraction of the lips' chroma ...
    teeth_brightness: float = 1.15  # ... and above this multiple of their brightness is teeth
    cavity_brightness: float = 0.35  # a lip texel below this multiple of their brightness is the mouth cavity
    skin_ramp: tuple = (0.4, 0.9)  # skin weights below the first count as 0, above the second as 1
    brightness: float = 0.05  # log-brightness floor of the skin test (scalp, neck: dark hair, clothing)
    # On the face and ears the skin test allows this much darker or brighter skin (a
    # profile's far cheek, the ear in the jaw's shadow: de-lit, they stay darker), the hue
    # and chromaticity tests unchanged; hair there is far darker still.
    face_brightness: float = 0.4
    # On the scalp (the model's "scalp" region: top, back and sides of the skull above the
    # ears) hair is where it belongs: colours close to this photo's hair (the well-seen
    # scalp's hair-hued, not skin-coloured texels) stay too; background and clothing,
    # far from both, still go. Hair varies in brightness (shine, shade): a wide floor.
    hair_brightness: float = 0.6
    hair_tolerance: float = 4.0
    # Hair stays only where well seen: at grazing angles a few photo pixels stretch over
    # many texels (streaks); there it fades into the fill over this confidence ramp.
    hair_seen: tuple = (0.4, 0.9)
    blur: float = 1.5  # Gaussian sigma (texels at 1024, scaled) of the final weights


BROWS = [list(range(17, 22)), list(range(22, 27))]
EYES = [list(range(36, 42)) + [36], list(range(42, 48)) + [42]]
OUTER_LIPS = list(range(48, 60))
BEARD = list(range(3, 14)) + [35, 34, 33, 32, 31]  # jaw 3..13, then under the nose back to the left


def _distance_to_polylines(points: np.ndarray, lines, reach: float) -> np.ndarray:
    """(N,) distance of 3D points to the nearest polyline (list of (K,3)), from points
    sampled every 0.25 mm along them; inf beyond `reach`."""
    from scipy.spatial import cKDTree

    samples = []
    for line in lines:
        for a, b in zip(line[:-1], line[1:]):
            steps = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.00025)) + 1)
            samples.append(a + np.linspace(0, 1, steps)[:, None] * (b - a))
    return cKDTree(np.concatenate(samples)).query(points, distance_upper_bound=reach)[0]


def feature_zones(model, texels, options: MaskOptions = MaskOptions()):
    """`_feature_zones`, cached per model, texture size and options (no photo in it)."""
    from ..models.derived import derived

    return derived("zones", model, (texels.size, options), lambda: _feature_zones(model, texels, options))


def _feature_zones(model, texels, options: MaskOptions = MaskOptions()):
    """(keep, lips, core, face, scalp, mouth, face_skin) (N,) in [0, 1] at the texels: zones
    whose colours stay (brows, eyes, lips, beard), the lip zone alone, the skin core whose
    colours define the skin test (inside the jaw line and brows, outside those zones: upper
    cheeks, nose), the model's face and ear regions (where the skin test allows darker skin),
    its scalp region (where hair stays), inside the lips' outline, and the face's skin (the
    core with the beard zone: lower cheeks and chin too; the fill's colour). Decided on the
    template's vertices (the face's are 2-3 mm apart, finer than the zones' fade) and
    interpolated to the texels."""
    verts = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces)
    marks = model.landmarks["ibug68"].points(model.v_template, model.faces)
    # torch.tensor copies: the model's arrays are read-only
    front = vertex_normals(torch.tensor(verts[None]), torch.tensor(faces))[0, :, 2].numpy() > 0

    def zone(lines, radius):
        d = _distance_to_polylines(verts, [marks[i] for i in lines], radius + options.feather)
        return 1.0 - smoothstep(np.minimum(d, 1.0), radius, radius + options.feather)

    def inside(polygon):  # vertices inside a landmark polygon seen from the front
        return (inside_polygon(verts[:, :2], polygon[:, :2]) & (verts[:, 2] > polygon[:, 2].min() - 0.01)).astype(float)

    mouth = inside(marks[OUTER_LIPS]) * front
    lips = np.maximum(zone([OUTER_LIPS + [48]], options.lips), mouth)
    features = np.maximum.reduce([zone(BROWS, options.brows), zone(EYES, options.eyes), lips]) * front
    keep = np.maximum(features, inside(marks[BEARD]) * front)
    face_skin = inside(marks[JAW_AND_BROWS]) * front * (features < 0.01)
    core = face_skin * (keep < 0.01)
    # Inside the jaw line and brows (raised by `forehead` x the eye-corner distance) the
    # photo shows the face itself (a shadow there is no background): everything stays,
    # but for the mouth's inside on the lips.
    outline = marks[JAW_AND_BROWS].copy()
    up = marks[36:48].mean(0) - marks[48:60].mean(0)
    outline[17:] += up / np.linalg.norm(up) * options.forehead * np.linalg.norm(marks[36] - marks[45])
    from scipy.spatial import ConvexHull

    keep = np.maximum(keep, inside(outline[ConvexHull(outline[:, :2]).vertices]) * front)  # as fitting/masks.py
    corners = faces[texels.face.cpu().numpy()]
    bary = texels.bary.cpu().numpy()
    regions = getattr(model, "regions", {})
    face = np.zeros(len(verts))
    for name in ("face", "ears"):
        face[np.asarray(regions.get(name, []), int)] = 1.0
    scalp = hair_vertices(model)
    zones = np.stack([keep, lips, core, face, scalp, mouth, face_skin], 1)  # interpolated all at once: (N, 7)
    return tuple(sum(zones[corners[:, k]] * bary[:, k:k + 1] for k in range(3)).T)


def texture_mask(albedo: np.ndarray, confidence: np.ndarray, model, texels,
                 options: MaskOptions = MaskOptions()) -> np.ndarray:
    """(N,) float32 in [0, 1]: how much each texel's photo colour is the face's own.

    albedo (N, 3) linear de-lit colours and confidence (N,) at the texels of `texels`
    (a TexelMap of `model`, which has an iBUG-68 embedding)."""
    if not options.enabled:
        return np.ones(len(confidence), np.float32)
    albedo = np.asarray(albedo, np.float64)
    confidence = np.asarray(confidence, np.float64)
    keep, lips, core, face, scalp, mouth, _ = feature_zones(model, texels, options)
    core = core > 0.99
    plausible = skin_hue(albedo)
    trusted = (confidence * plausible) > 0.5
    if int((trusted & core).sum()) >= MIN_REFERENCE:
        trusted &= core
    tight = skin_colour_weight(albedo, trusted, brightness=options.brightness, tolerance=2.5)
    loose = skin_colour_weight(albedo, trusted, brightness=options.face_brightness, tolerance=2.5)
    skin = plausible * (tight + face * (loose - tight))
    skin = smoothstep(skin, *options.skin_ramp)  # the estimator's tail is long: pale background kept ~0.3
    weight = np.maximum(skin, keep)
    on = np.nonzero((scalp > 0) & (confidence > options.hair_seen[0]))[0]  # where hair can stay
    hair = scalp[on] * _hair_weight(albedo[on], confidence[on], scalp[on] > 0.99, skin[on], options) \
        * smoothstep(confidence[on], *options.hair_seen)
    weight[on] = np.maximum(weight[on], smoothstep(hair, *options.skin_ramp))
    seen_lips = (mouth > 0.5) & (confidence > 0.5)  # the lips themselves, not the skin ring around them
    if int(seen_lips.sum()) >= MIN_REFERENCE:
        r, g, b = albedo.T  # per channel: numpy's reductions over a length-3 axis are slow
        brightness, top = r + g + b, np.maximum(np.maximum(r, g), b)
        chroma = (top - np.minimum(np.minimum(r, g), b)) / np.maximum(top, 1e-6)
        lip_brightness, lip_chroma = np.median(brightness[seen_lips]), np.median(chroma[seen_lips])
        teeth = (1 - smoothstep(chroma / max(lip_chroma, 1e-6), options.teeth_chroma, options.teeth_chroma + 0.2)) \
            * smoothstep(brightness / max(lip_brightness, 1e-6), options.teeth_brightness, options.teeth_brightness + 0.3)
        cavity = 1 - smoothstep(brightness / max(lip_brightness, 1e-6), options.cavity_brightness - 0.1,
                                options.cavity_brightness)
        weight = weight * (1 - lips * np.maximum(teeth * mouth, cavity))
    return _blur(weight, texels, options.blur * texels.size / 1024).astype(np.float32)


def hair_hue(colours: np.ndarray) -> np.ndarray:
    """(...) in [0, 1]: a hue hair can have. Hair's pigments (black-brown and red-yellow
    melanin) give red and green above blue, or a grey (black, grey, white hair); ash-blonde
    strands de-lit come out a little greener than red (chromaticity up to ~0.07): no
    blue cast (shirts, sky) and no clear green (grass, shirts)."""
    total = np.maximum(colours.sum(-1), 1e-4)
    r, g, b = np.moveaxis(colours / total[..., None], -1, 0)
    return smoothstep(r - b, -0.04, -0.01) * smoothstep(g - b, -0.06, -0.03) * smoothstep(r - g, -0.12, -0.08)


def _hair_weight(albedo, confidence, scalp, skin, options: MaskOptions) -> np.ndarray:
    """(N,) how much each texel's colour looks like this photo's hair: the estimator of
    skin.py with the well-seen scalp's hair-hued, not skin-coloured texels as the
    reference; 0 where too few (a bald head: its scalp's skin passes the skin test)."""
    plausible = hair_hue(albedo)
    reference = scalp & (confidence > 0.5) & (plausible > 0.5) & (skin < 0.5)
    if int(reference.sum()) < MIN_REFERENCE:
        return np.zeros(len(albedo))
    return plausible * skin_colour_weight(albedo, reference, brightness=options.hair_brightness,
                                          tolerance=options.hair_tolerance)


def skin_colour(albedo: np.ndarray, confidence: np.ndarray, model, texels, well_seen: float = 0.5,
                options: MaskOptions = MaskOptions()):
    """(3,) the face's skin colour, which the fill far from seen texels takes
    (textures/seams.py): the median de-lit albedo of the seen (confidence > `well_seen`)
    skin-hued texels of the face's skin (inside the jaw line and brows, the brows, eyes and
    lips out) that pass the mask's skin test on the face against the skin core (a dark beard
    fails it: tests/test_unseen_fill.py); None when too few. Not the skin
    core alone (upper cheeks, nose; until 7e8b675): the unseen head in its colour stood
    apart from the cheeks on most AFW photos (benchmarks/appearance.py). Not only the
    best-seen texels (> 0.8 faces the camera and its light, where the photo's highlights
    are)."""
    albedo = np.asarray(albedo, np.float64)
    _, _, core, _, _, _, face_skin = feature_zones(model, texels, options)
    good = (np.asarray(confidence) > well_seen) & (skin_hue(albedo) > 0.5)
    core, face_skin = good & (core > 0.99), good & (face_skin > 0.99)
    if int(face_skin.sum()) < MIN_REFERENCE:
        return None
    skin = albedo[face_skin]  # the core lies inside the face's skin
    like = skin_colour_weight(skin, core[face_skin], brightness=options.face_brightness, tolerance=2.5) > 0.5
    return np.median(skin[like] if int(like.sum()) >= MIN_REFERENCE else skin, axis=0)


def _blur(values: np.ndarray, texels, sigma: float) -> np.ndarray:
    """Texel values smoothed over `sigma` texels within the covered texels (normalised
    convolution: uncovered texels neither give nor take)."""
    if sigma <= 0:
        return values
    import cv2  # not scipy.ndimage: ~0.15 s to import per fit

    T = texels.size
    flat = texels.texel_index.cpu().numpy()
    image = np.zeros((T * T, 2), np.float32)
    image[flat, 0], image[flat, 1] = values, 1.0
    size = 2 * int(4 * sigma + 0.5) + 1  # scipy's truncate=4
    both = cv2.GaussianBlur(image.reshape(T, T, 2), (size, size), sigma, borderType=cv2.BORDER_REFLECT).reshape(-1, 2)[flat]
    num, den = both[:, 0].astype(np.float64), both[:, 1].astype(np.float64)
    return np.clip(num / np.maximum(den, 1e-6), 0, 1)


def mask_png(seen: np.ndarray) -> np.ndarray:
    """(T, T) weight of the photo's colour in albedo.png -> the bundle's texture_mask.png
    (uint8, 255 = the photo's colour, 0 = filled)."""
    return np.round(np.clip(np.asarray(seen, np.float64), 0, 1) * 255).astype(np.uint8)
