"""Shared test set-up: the backend package on the path, real test assets, a fresh cache."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))

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
