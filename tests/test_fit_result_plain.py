"""A FitResult is plain data: numpy arrays and Python values, no torch tensor or module
anywhere in it (the prepared head model it keeps for the writer is numpy too), so it
pickles, and the bundle written from a pickled copy is the bundle of the original."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import subject  # benchmarks/subject.py (conftest puts benchmarks/ on the path)
import test_fit_photos as photos_tests
import torch

from flamefit.bundle import write_bundle
from flamefit.fitting import FitOptions, fit_photos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted():
    """Two synthetic photos of one person, every stage (texture at 64 texels: quick)."""
    model = photos_tests.prepared_model()
    photos, points, _ = subject.make_subject(model, 7, (0, 45))
    return fit_photos(photos, model, FitOptions(texture_size=64), landmarks=points)


def torch_objects(value, path="result", seen=None) -> list[str]:
    """The paths of every torch.Tensor / torch.nn.Module reachable from `value`."""
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None), Path)):
        return []
    seen.add(id(value))
    if isinstance(value, (torch.Tensor, torch.nn.Module)):
        return [f"{path}: {type(value).__name__}"]
    if isinstance(value, np.ndarray):
        return [f"{path}: object array"] if value.dtype == object else []
    if isinstance(value, dict):
        items = [(f"{path}[{k!r}]", v) for k, v in value.items()] + [(f"{path} key", k) for k in value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
        items = [(f"{path}.{k}", v) for k, v in vars(value).items()]
    else:
        return []
    return [found for sub_path, sub in items for found in torch_objects(sub, sub_path, seen)]


def test_a_result_holds_no_torch_object(fitted):
    assert len(fitted.views) == 2 and fitted.stages[-1] == "bundle"
    assert torch_objects(fitted) == []
    planted = dataclasses.replace(fitted, history={"stage": [torch.zeros(1)]})
    assert torch_objects(planted) == ["result.history['stage'][0]: Tensor"]  # the walk does see one
    assert torch_objects(fitted.model, "model") == []  # the model kept for the writer: numpy as well
    # What the readers used to dig out of the torch state is here as arrays.
    S, E = len(fitted.identity), len(fitted.views[0].expression)
    assert fitted.identity.dtype == np.float32 and S > 0 and np.abs(fitted.identity).max() > 0
    for view in fitted.views:
        assert view.pose.shape == (5, 3) and view.translation.shape == (3,) and view.sh.shape == (9, 3)
        assert view.expression.shape == (E,) and isinstance(view.yaw_degrees, float)
    assert abs(fitted.views[1].yaw_degrees - fitted.views[0].yaw_degrees - 45) < 8
    assert set(fitted.history) >= {"rigid", "shape", "photometric"}
    assert all(isinstance(v, float) for values in fitted.history.values() for v in values)
    assert fitted.texture_space is None and fitted.albedo_coefficients is None  # the smooth albedo: no space
    # The shape keys at their fitted values are the first view's head.
    assert np.abs(fitted.shape_keys.vertices() - fitted.views[0].vertices).max() < 1e-5
    assert fitted.device == "cpu"


def test_a_pickled_result_writes_the_same_bundle(fitted, tmp_path):
    copy = pickle.loads(pickle.dumps(fitted))
    first, second = write_bundle(fitted, tmp_path / "original"), write_bundle(copy, tmp_path / "copy")
    for name in ("mesh.npz", "params.npz"):
        with np.load(first / name) as a, np.load(second / name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name
    for name in ("albedo.png", "mesh.obj", "overlay.png", "overlay-2.png", "photo-2.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    a, b = (json.loads((folder / "result.json").read_text()) for folder in (first, second))
    a.pop("timings"), b.pop("timings")
    assert a == b
