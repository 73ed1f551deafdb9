"""Shared test fixtures: the real-data directory, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("BAYESMF_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The directory holding the real datasets (``$BAYESMF_DATA_DIR`` or ``../shared/data``)."""
    d = _shared_data()
    if d is None:
        pytest.skip("real datasets not available: set BAYESMF_DATA_DIR to the shared data folder")
    return d


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run single-threaded: on a busy 2-core machine OpenMP oversubscription makes small
    problems tens of times slower; results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
