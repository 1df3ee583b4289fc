"""Shared fixtures: a tiny synthetic dataset and paths to the real OCT2017 sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_VIT, tiny_config
from octlens.data.synth import synthesize
from octlens.training import train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_DEV = SHARED_DATA / "oct2017-real" / "dev"
DUKE = SHARED_DATA / "duke-dme-fluid"

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


@pytest.fixture(scope="session")
def duke() -> Path:
    """Real DME B-scans with a grader's fluid masks (``dev/DME``, ``masks/dev/DME``)."""
    if not DUKE.is_dir():
        pytest.skip(f"Duke DME fluid scans not found at {DUKE}")
    return DUKE


@pytest.fixture(scope="session")
def tiny_resnet_run(tiny_data, tmp_path_factory) -> Path:
    """A ResNet18 trained for one epoch on ``tiny_data`` at 32 px: a run to start from
    (fine-tuning) or to learn from (distillation). Tests only read it."""
    out = tmp_path_factory.mktemp("runs") / "resnet"
    train(tiny_config(tiny_data, out, model="resnet18"), verbose=False)
    return out


@pytest.fixture(scope="session")
def tiny_vit_run(tiny_data, tmp_path_factory) -> Path:
    """A 2-block ViT (patch 8, width 32) trained for one epoch on ``tiny_data`` at 32 px.
    Tests only read it."""
    out = tmp_path_factory.mktemp("runs") / "vit"
    config = tiny_config(tiny_data, out, model="vit_tiny", patch_size=8, model_kwargs=TINY_VIT)
    train(config, verbose=False)
    return out
