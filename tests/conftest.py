"""Shared fixtures: where the real speech data lives, and small synthetic audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "ASR_TEST_DATA"


def shared_data_dir() -> Path:
    """The real speech sets: $ASR_TEST_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data"))


def corpus_dir(name: str) -> Path:
    """One real speech corpus, or a skip naming where it was looked for: each test needs only its own."""
    path = shared_data_dir() / name
    if not path.is_dir():
        pytest.skip(f"real speech data not found: no {path} (set {DATA_ENV} to the folder holding {name}/)")
    return path


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    return corpus_dir("fsdd")


@pytest.fixture(scope="session")
def so762_dir() -> Path:
    return corpus_dir("speechocean762")


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP waits can stall them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
