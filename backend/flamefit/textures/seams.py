"""No seams: blend a filled UV texture across its chart borders on the surface.

A UV layout cuts the head into charts; a point on a cut has a texel on each side, and
the image-space fills (pull-push, the mirror fill) never compare them, so their colours
differ and a render shows a line. `blend_seams` works on the surface instead:

- unseen texels (the back of the head, under the chin) are filled on the mesh: seen
  texels splat their colours onto their triangle's vertices, the vertices are diffused
  from those (a harmonic fill on the mesh graph) and a texel takes its vertices'
  interpolation, the same on both sides of a cut; far from seen texels the fill tends to
  the face's skin colour, and on the scalp and under the jaw a seen texel feeds the fill
  only as far as it looks like skin (hair stays where the photo showed it, the unseen skull
  is skin; the chin's shadow and a collar do not tint the neck);
- every covered texel has its surface point (the template's: the layout's geometry);
- a texel within `band` texels of its chart's border takes a Gaussian-weighted mean of
  the texels nearest to its surface point, whichever chart holds them, blended in from
  its own colour `band` texels inside to the mean at the border, so both sides of a seam
  take nearly the same mean of the same points and meet;
- the gutter around every chart (`margin` texels) takes its nearest texel's colour, so
  bilinear filtering and mip-maps at a border read the chart's own colours.

Borders with nothing across (the neck cut, the eye and mouth openings) only average
their own chart's texels there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skin import smoothstep


@dataclass(frozen=True)
class SeamOptions:
    band: float = 3.0  # texels from a chart border over which the surface mean blends in
    hold: float = 50.0  # how firmly a seen vertex keeps its colour in the surface fill (vs its neighbours)
    neighbours: int = 8  # texels (nearest on the surface, any chart) in each surface mean
    margin: int = 16  # gutter texels (at 1024; scaled with the size) that copy their nearest texel
    # Far from seen vertices the surface fill tends to a given skin colour (the face's own)
    # instead of the average of the seen border, which is greyer and darker (grazing
    # angles, hair, shadow): this hold on every vertex sets how fast (~1/sqrt edges).
    far_hold: float = 0.03
    # With a skin colour given, a seen texel on the scalp (the model's "scalp" region) feeds
    # the fill by how close its colour is to it: hair kept where the photo showed it does not
    # spread over what the photo did not show (the unseen skull of a bald head mesh).
    # Gaussian widths: chromaticity, and log brightness (de-lit skin varies with shading).
    source_chroma: float = 0.03
    source_brightness: float = 0.5
    # Under the jaw likewise: on the model's "neck" region grown by `under_rings` rings of
    # triangles (the chin's and jaw's underside) a seen texel feeds the fill by how close
    # its colour is to the skin: the chin's shadow on the neck and a collar's last faint
    # weights do not tint the neck's fill (the astronaut's neck: 6.7 -> 1.5 dE from the cheeks)
    under_rings: int = 3
    # ... with tighter widths than the scalp's: a shadowed neck or a skin-toned collar de-lit is
    # a greyer, darker beige that the scalp's widths pass (the astronaut's neck: 4.7 -> 1.5 dE
    # from the cheeks).
    under_chroma: float = 0.015
    under_brightness: float = 0.25
    unseen: float = 0.3  # texels seen less than this take that skin-fed fill (blended in below it)
    # ... which tends to the skin colour faster than the fill of partly seen texels (~3 edges
    # against ~6): the seen border is darker than the face (skin seen at a grazing angle
    # de-lights darker) and, carried far, set the unseen sides of the head apart from it.
    unseen_far_hold: float = 0.1


class SeamBlender:
    """The texel pairs and weights of one model's layout at one size (cached per model)."""

    def __init__(self, model, size: int, options: SeamOptions = SeamOptions()):
        import cv2  # its distance transforms: scipy.ndimage costs ~0.15 s to import per fit
        import scipy.sparse
        from scipy.spatial import cKDTree

        from ..models.uv_pack import uv_islands
        from ..render.uv_raster import gutter_texels, texel_map

        self.size = size
        texels = texel_map(model, size, "cpu")
        flat = texels.texel_index.cpu().numpy()
        face = texels.face.cpu().numpy()
        bary = texels.bary.cpu().numpy().astype(np.float64)
        faces = np.asarray(model.faces)
        verts = np.asarray(model.v_template, np.float64)
        corners = faces[face]

        # Distance (texels) of each covered texel to its chart's border: to the nearest
        # texel that is uncovered or of another chart.
        island = uv_islands(np.asarray(model.uv_faces), len(model.uv_coords))[np.asarray(model.uv_faces)[face, 0]]
        label = np.full(size * size, -1, np.int32)
        label[flat] = island
        label = label.reshape(size, size)
        same = np.ones((size, size), bool)
        for axis in (0, 1):
            for shift in (1, -1):
                same &= np.roll(label, shift, axis) == label
        inner = same & (label >= 0)
        distance = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L1, 3).reshape(-1)[flat].astype(np.float64)
        alpha = smoothstep(1.0 - (distance - 0.5) / options.band, 0.0, 1.0)  # smooth start inside the chart
        blended = np.nonzero(alpha > 0)[0]

        # The surface mean: the `neighbours` texels nearest to the blended texel's point,
        # whichever chart holds them, Gaussian-weighted at half the farthest one's distance.
        # Across a seam between charts of different density the denser side's texels are
        # the nearer: both sides take nearly the same mean, the denser side's colour.
        # (Only texels near a border can be among them: the nearest lie within ~2 texels.)
        near = np.nonzero(distance <= options.band + 4)[0]
        # Surface points of those texels only (the blended ones are among them).
        points = np.zeros((len(flat), 3))
        points[near] = sum(verts[corners[near, k]] * bary[near, k:k + 1] for k in range(3))
        distances, nearest = cKDTree(points[near]).query(points[blended], k=options.neighbours)
        nearest = near[nearest]
        sigma = np.maximum(distances[:, -1:] * 0.5, 1e-9)
        w = np.exp(-0.5 * (distances / sigma) ** 2)
        w /= w.sum(1, keepdims=True)
        rows = np.repeat(np.arange(len(blended)), options.neighbours)
        mean = scipy.sparse.csr_matrix((w.reshape(-1), (rows, nearest.reshape(-1))), shape=(len(blended), len(flat)))
        self.flat, self.blended, self.alpha = flat, blended, alpha[blended]
        # splat (V, N): a texel's barycentric weights on its triangle's vertices (its
        # transpose interpolates vertex values at the texels).
        # Built as its transpose in CSR form directly (three entries per texel): no COO sort.
        self.splat = scipy.sparse.csr_matrix((bary.reshape(-1), corners.reshape(-1), np.arange(0, 3 * len(flat) + 1, 3)),
                                             shape=(len(flat), len(verts))).T
        self.share = np.asarray(self.splat.sum(1)).reshape(-1)
        from .uv_masks import hair_vertices, under_jaw_vertices

        self.scalp = self.splat.T @ hair_vertices(model)  # (N,) each texel's share of the scalp (hair's place)
        self.under = self.splat.T @ under_jaw_vertices(model, options.under_rings)  # (N,) the neck and the jaw's underside
        # The mesh graph's Laplacian (unit edge weights) for the surface fill.
        edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1), axis=0)
        adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), tuple(edges.T)), shape=(len(verts),) * 2)
        adjacency = (adjacency + adjacency.T).tocsr()
        self.laplacian = scipy.sparse.diags(np.asarray(adjacency.sum(1)).reshape(-1)) - adjacency
        self.hold, self.far_hold = options.hold, options.far_hold
        self.source_chroma, self.source_brightness = options.source_chroma, options.source_brightness
        self.unseen, self.unseen_far_hold = options.unseen, options.unseen_far_hold
        self.under_widths = (options.under_chroma, options.under_brightness)
        self.mean = mean.tocsr()

        # Gutter: each uncovered texel within the margin copies its nearest covered texel.
        self.gutter, self.gutter_source = gutter_texels(texels, max(2, int(round(options.margin * size / 1024))))

    def surface_fill(self, values: np.ndarray, weight: np.ndarray, reference=None) -> np.ndarray:
        """(N, C) texel values with their poorly seen part (1 - weight) filled on the
        surface: seen texels splat their colours on their triangle's vertices, the mesh's
        vertices are diffused from them (harmonic fill on the mesh graph, seen vertices
        held), and a texel takes the interpolation of its vertices: continuous across charts.
        With a `reference` colour (C,) every vertex is also held weakly (`far_hold`) to it,
        so far from what was seen the fill is that colour, not the seen border's mean; and
        the unseen texels (weight below `unseen`) take a fill fed by the seen scalp texels
        only as far as they look like skin (`source_weight`: hair stays where it was seen,
        the unseen skull is skin), while partly seen ones keep the fill of their own
        surroundings (hair at a hairline seen at an angle stays hair)."""
        w = np.clip(weight, 0.0, 1.0)
        local = self.splat.T @ self._diffuse(values, w, reference, self.far_hold)
        if reference is not None and (self.scalp.any() or self.under.any()):
            skin = w.copy()
            hair = np.nonzero((w > 0) & (self.scalp > 0))[0]  # only seen scalp texels change
            skin[hair] *= 1.0 - self.scalp[hair] * (1.0 - self.source_weight(values[hair], reference))
            # Under the jaw the photo shows the chin's shadow on the neck: it stays where
            # seen but feeds the neck's fill only as far as it looks like skin.
            under = np.nonzero((w > 0) & (self.under > 0))[0]
            skin[under] *= 1.0 - self.under[under] * (1.0 - self.source_weight(values[under], reference, self.under_widths))
            unseen = np.nonzero(w < self.unseen)[0]  # only these take the skin-fed fill
            ramp = smoothstep(w[unseen], 0.0, self.unseen)[:, None]
            fill = self.splat.T[unseen] @ self._diffuse(values, skin, reference, self.unseen_far_hold)
            local[unseen] = ramp * local[unseen] + (1.0 - ramp) * fill
        return values + (1.0 - w)[:, None] * (local - values)

    def _diffuse(self, values: np.ndarray, source: np.ndarray, reference, far_hold: float) -> np.ndarray:
        """(V, C) vertex colours: the harmonic fill on the mesh from the texels' values
        weighted by `source`, every vertex held weakly (`far_hold`) to `reference` (when
        given) as far as it is unseen."""
        import scipy.sparse
        import scipy.sparse.linalg

        seen = self.splat @ source
        confidence = np.clip(seen / np.maximum(self.share, 1e-9), 0.0, 1.0)
        held = self.hold * confidence ** 2  # a vertex seen by a few faint texels hardly holds
        far = 0.0 if reference is None else far_hold * (1.0 - confidence) ** 2  # seen vertices keep their own
        solve = scipy.sparse.linalg.factorized((self.laplacian + scipy.sparse.diags(held + far)).tocsc())
        mean = (self.splat @ (source[:, None] * values)) / np.maximum(seen, 1e-9)[:, None]
        target = held[:, None] * mean + (0.0 if reference is None else far[:, None] * np.asarray(reference, np.float64)[None])
        return np.stack([solve(target[:, c]) for c in range(values.shape[1])], 1)

    def source_weight(self, values: np.ndarray, reference, widths: tuple[float, float] | None = None) -> np.ndarray:
        """(N,) in [0, 1]: how close each texel's colour (N, 3) is to the skin colour
        `reference` (3,), in chromaticity and log brightness (Gaussian of `widths`, default
        the scalp's (source_chroma, source_brightness))."""
        chroma_width, brightness_width = widths or (self.source_chroma, self.source_brightness)
        reference = np.asarray(reference, np.float64)
        total = np.maximum(values[:, 0] + values[:, 1] + values[:, 2], 1e-4)  # not .sum(1): slow on 3 columns
        ref_total = max(float(reference.sum()), 1e-4)
        chroma = ((values[:, 0] / total - reference[0] / ref_total) ** 2
                  + (values[:, 1] / total - reference[1] / ref_total) ** 2) / chroma_width ** 2
        brightness = (np.log(total / ref_total) / brightness_width) ** 2
        return np.exp(-0.5 * (chroma + brightness))

    def __call__(self, texture: np.ndarray, weight: np.ndarray | None = None, reference=None) -> np.ndarray:
        """(size, size, C) texture -> the same with its poorly seen texels filled on the
        surface (given their weight (size, size) in [0, 1]), the seams blended and the
        gutter filled; `reference`: the colour the fill tends to far from seen texels."""
        out = np.array(texture, np.float32, copy=True).reshape(self.size * self.size, -1)
        values = out[self.flat].astype(np.float64)
        if weight is not None:
            values = self.surface_fill(values, np.asarray(weight, np.float64).reshape(-1)[self.flat], reference)
            out[self.flat] = values.astype(np.float32)
        surface = self.mean @ values
        own = values[self.blended]
        out[self.flat[self.blended]] = (own + self.alpha[:, None] * (surface - own)).astype(np.float32)
        out[self.gutter] = out[self.gutter_source]
        return out.reshape(texture.shape)


def blend_seams(texture: np.ndarray, model, weight: np.ndarray | None = None,
                options: SeamOptions = SeamOptions(), reference=None) -> np.ndarray:
    """(T, T, C) texture of `model`'s layout with its poorly seen texels (weight (T, T) in
    [0, 1], optional) filled on the surface, its chart borders blended on the surface and
    its gutter filled (the blender is built once per model, size and options); far from
    seen texels the fill tends to `reference` (C,), the face's skin colour, when given."""
    from ..models.derived import derived

    size = texture.shape[0]
    blender = derived("seams", model, (size, options), lambda: SeamBlender(model, size, options))
    return blender(texture, weight, reference)


def seam_pairs(model, size: int, max_distance: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Flat texel indices (a, b) of texels on a chart border (a) and the texel of another
    chart nearest to a's surface point (b), within `max_distance` metres: the two sides
    of the layout's seams, to measure how well they meet (the seam score)."""
    import scipy.ndimage
    from scipy.spatial import cKDTree

    from ..models.uv_pack import uv_islands
    from ..render.uv_raster import texel_map

    texels = texel_map(model, size, "cpu")
    flat, face = texels.texel_index.cpu().numpy(), texels.face.cpu().numpy()
    faces = np.asarray(model.faces)
    points = (np.asarray(model.v_template, np.float64)[faces[face]] * texels.bary.cpu().numpy()[:, :, None]).sum(1)
    island = uv_islands(np.asarray(model.uv_faces), len(model.uv_coords))[np.asarray(model.uv_faces)[face, 0]]
    covered = np.zeros(size * size, bool)
    covered[flat] = True
    border = scipy.ndimage.binary_erosion(covered.reshape(size, size)).reshape(-1)[flat] == 0
    a = np.nonzero(border)[0]
    pairs_a, pairs_b = [], []
    for k in np.unique(island):
        others = np.nonzero(island != k)[0]
        mine = a[island[a] == k]
        if not len(mine) or not len(others):
            continue
        distance, nearest = cKDTree(points[others]).query(points[mine], distance_upper_bound=max_distance)
        ok = np.isfinite(distance)
        pairs_a.append(flat[mine[ok]])
        pairs_b.append(flat[others[nearest[ok]]])
    return np.concatenate(pairs_a), np.concatenate(pairs_b)
