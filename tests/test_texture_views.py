"""The texture of several photos (#19): each photo gives the texels it shows, and the
merge keeps them.

- A profile's unwrap covers the whole head it shows, not only its landmark crop (centred
  on the face, which left out the back of the head and the neck of a 90-degree view).
- The merge's feathering fades a view's weight toward the edge of what it sees on the
  surface; a chart border of the UV layout is no such edge.
"""

from __future__ import annotations

import numpy as np
import pytest
import subject  # benchmarks/subject.py (conftest puts benchmarks/ on the path)
import test_fit_photos as photos_tests

from flamefit.fitting import FitOptions, fit_photos
from flamefit.render.uv_raster import texel_map
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
