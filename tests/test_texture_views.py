"""The texture of several photos (#19): each photo gives the texels it shows, and the
merge keeps them.

- A profile's unwrap covers the whole head it shows, not only its landmark crop (centred
  on the face, which left out the back of the head and the neck of a 90-degree view).
- The merge's feathering fades a view's weight toward the edge of what it sees on the
  surface; a chart border of the UV layout is no such edge.
- The unwrap's refinement leaves the texels at a chart's border as they are when the
  render already matches the photo.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import subject  # benchmarks/subject.py (conftest puts benchmarks/ on the path)
import test_fit_photos as photos_tests
import torch

from flamefit.fitting import FitOptions, fit_photos
from flamefit.fitting.geometry import CameraFrame, HeadRig, initial_state
from flamefit.fitting.texture import _residual_at_texels
from flamefit.image import Crop
from flamefit.render.lighting import sh_basis
from flamefit.render.rasterizer import RasterizationSettings, rasterize_mesh
from flamefit.render.shading import render_rgb, vertex_normals
from flamefit.render.uv_raster import texel_map, texel_visibility
from flamefit.textures.merge import merge_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as the CLI runs (FLAMEFIT_THREADS)


def test_profiles_texture_the_back_of_the_head_and_the_neck():
    model = photos_tests.prepared_model()
    photos, points, _ = subject.make_subject(model, 4, (0, 90, -90))
    result = fit_photos(photos, model, FitOptions(stages=("landmarks", "texture"), texture_size=128), landmarks=points)
    texels = texel_map(model, 128, "cpu")
    faces = np.asarray(model.faces)[texels.face.numpy()]
    seen = result.seen.reshape(-1)[texels.texel_index.numpy()] > subject.SEEN_CONFIDENCE
    share = {name: float(seen[np.isin(faces, model.regions[name]).all(1)].mean()) for name in ("scalp", "neck")}
    # Measured 0.41 / 0.56 (0.20 / 0.29 when each view's unwrap was limited to its landmark crop).
    assert share["scalp"] > 0.3 and share["neck"] > 0.42, share


def test_a_chart_border_is_not_where_a_view_fades():
    """Two charts (columns 0-59 and 68-127) with an uncovered gutter between them: a view
    that sees both whole keeps its full weight at their borders; one whose coverage ends
    inside a chart fades there."""
    size = 128
    rows, cols = np.divmod(np.arange(size * size), size)
    index = np.nonzero((cols < 60) | (cols >= 68))[0]
    ones = np.ones(len(index), np.float32)
    albedo = np.full((len(index), 3), 0.5, np.float32)
    _, _, fill = merge_views([albedo, albedo], [ones, ones], [ones, ones], index, size)
    assert np.all(fill == 1)
    ends = (cols[index] < 90).astype(np.float32)  # the second chart seen only up to column 90
    _, _, fill = merge_views([albedo], [ends], [ones], index, size)
    row = np.zeros(size * size, np.float32)
    row[index] = fill
    row = row.reshape(size, size)[64]
    assert np.all(row[:60] == 1) and row[89] < 0.1 and row[70] == 1


def test_the_refinement_does_not_brighten_chart_borders():
    """The texture refinement renders the texels' albedo and adds back the residual. A head
    with one flat colour, rendered with that colour everywhere as the photo, leaves no
    residual, also at the layout's chart borders, where a bilinear lookup reaches past the
    chart (into the gutter, which held black: those texels came out brighter every step)."""
    model = photos_tests.prepared_model()
    rig = HeadRig(model, "cpu", 10, 10)
    state = initial_state(rig, 1)
    with torch.no_grad():
        centre = rig.landmarks(rig.vertices(state), state.views[0].pose)[0].mean(0)
        state.views[0].translation[0] = torch.tensor([0.0, 0.0, -0.6]) - centre
        verts = rig.vertices(state)
        T, R = 256, 256
        camera = CameraFrame(R, R, Crop(0, 0, R, R)).camera(R, "cpu")
        sh = state.views[0].sh
        photo = render_rgb(camera, verts, rig.faces, rig.face_uvs, torch.full((1, 3, T, T), 0.5), sh,
                           RasterizationSettings((R, R), cull_backfaces=True)).image[0]
        texels = texel_map(model, T, "cpu")
        points = texels.points(verts, rig.faces)
        normals = torch.nn.functional.normalize(texels.points(vertex_normals(verts, rig.faces), rig.faces), dim=-1)
        screen = camera.transform_points(points[None])[0]
        frags = rasterize_mesh(camera, verts, rig.faces, RasterizationSettings((R, R), cull_backfaces=True))
        visible = texel_visibility(screen[None], frags, 0.004)[0]
        cosine = (normals * torch.nn.functional.normalize(-points, dim=-1)).sum(-1)
        shading = (sh_basis(normals) @ sh[0]).clamp(min=0.05)
        albedo = torch.full((len(points), 3), 0.5)
        residual = _residual_at_texels(rig, verts, albedo, texels, sh, camera, photo, screen, shading, T)
    covered = np.zeros(T * T, np.uint8)
    covered[texels.texel_index.numpy()] = 1
    border = cv2.distanceTransform(covered.reshape(T, T), cv2.DIST_L2, 3).reshape(-1)[texels.texel_index.numpy()] <= 1.5
    seen = (visible & (cosine > 0.5)).numpy()
    error = residual.abs().max(-1).values.numpy()
    assert (seen & border).sum() > 100
    # Measured: 0 at every such border texel (95th percentile 0.16 with a black gutter).
    assert np.percentile(error[seen & border], 95) < 0.05, np.percentile(error[seen & border], 95)


def test_the_photo_fades_out_toward_its_border():
    """Hair or skin that a photo's border cuts fades into the fill over PHOTO_EDGE x the
    face's size, not at one pixel (a hard line in the texture): a texel's weight from
    the photo is 0 past the border and rises smoothly, with the distance inside it, to 1."""
    from flamefit.fitting.texture import _inside_photo

    frame = CameraFrame(200, 100, Crop(-50, -50, 200, 100))  # a crop past the photo's top-left
    R, edge = 100, 8.0
    x = torch.linspace(-20, 40, 121)  # photo pixels along a row in the photo's middle
    screen = torch.stack([(x + 50) * R / 200, torch.full_like(x, 50 + 50) * R / 200, torch.ones_like(x)], -1)
    ramp = _inside_photo(frame, screen, R, edge).numpy()
    assert ramp[x.numpy() < -0.5].max() == 0.0 and ramp[x.numpy() > edge].min() == 1.0
    between = ramp[(x.numpy() > 0) & (x.numpy() < edge - 0.5)]
    assert len(between) > 10 and (np.diff(ramp) >= 0).all() and 0.0 < between.min() and between.max() < 1.0
