"""Shared fixtures: paths to the real sample data beside the repository, and CPU-only settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The authors' sample slices and the full BUSI set live outside the repository (never copied in).
SHARED_DATA = Path(
    os.environ.get("SYNFOC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SYNFOC_SHARED_DATA to ../shared/data)")
    return path


@pytest.fixture(scope="session")
def samples_root() -> Path:
    """``../shared/data/samples``: the authors' sample slices of all four datasets."""
    return _require(SHARED_DATA / "samples")


@pytest.fixture(scope="session")
def busi_root() -> Path:
    """``../shared/data/Dataset_BUSI_with_GT``: the full BUSI benign/malignant set."""
    return _require(SHARED_DATA / "Dataset_BUSI_with_GT")


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """``../shared/data/acdc-sample``: ACDC in the SSL4MIS h5 layout (10 train, 2 val, 3 test
    volumes)."""
    return _require(SHARED_DATA / "acdc-sample")
