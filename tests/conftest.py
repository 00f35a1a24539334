"""Shared test set-up: the backend package on the path, real test assets, a fresh cache."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
# The benchmarks define the synthetic subjects and scores some tests reuse (one rule each).
sys.path.insert(0, str(REPO / "benchmarks"))

# The CC-BY FLAME 2023 Open extract lives beside the checkout, never in it (see its NOTICE.md).
FLAME_EXTRACT = REPO.parent / "shared" / "models" / "flame2023_open_identity60.npz"


@pytest.fixture(scope="session")
def flame_extract_path():
    if not FLAME_EXTRACT.exists():
        pytest.skip(f"FLAME 2023 Open extract not found at {FLAME_EXTRACT}")
    return FLAME_EXTRACT


@pytest.fixture(scope="session")
def astronaut():
    """A real photo with one face (skimage's test data, public domain)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread, as `flamefit fit` uses by default: its tensors are small and extra
    threads spin on shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
