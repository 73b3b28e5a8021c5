"""Shared fixtures for the algorithm tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.learning import torch_threads


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    """The tensors here are tiny; extra intra-op threads only contend for the shared cores.

    ``SAFEBENCH_TEST_THREADS`` changes the count (scripts/tools/test_robustness.py varies it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    yield
    torch.set_num_threads(previous)
