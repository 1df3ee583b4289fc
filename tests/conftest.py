"""Shared fixtures: a tiny synthetic dataset and paths to the real OCT2017 sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from octlens.data.synth import synthesize

REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "oct2017-real" / "dev"

# Small scans keep the suite fast; the generator scales every size to the scan height.
TINY_SIZE = (124, 128)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """8 scans per class at 124x128, OCT2017 layout with masks/ and retina/."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, n_per_class=8, seed=0, size=TINY_SIZE, workers=1)
    return root


@pytest.fixture(scope="session")
def real_dev() -> Path:
    if not REAL_DEV.is_dir():
        pytest.skip(f"real OCT2017 sample not found at {REAL_DEV}")
    return REAL_DEV
