"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.learning import Margins


@pytest.fixture
def margins(request: pytest.FixtureRequest) -> Margins:
    """Learning-outcome assertions that record their margin (``tests/learning.py``)."""
    return Margins(request.node.nodeid)
