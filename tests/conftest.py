"""pytest's fixtures and markers for the suite; the helpers tests import are in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.fixture
def root() -> Path:
    return ROOT


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in tests/test_e2e_*.py `e2e`, so `make test-fast` can leave them out."""
    for item in items:
        if item.path.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.e2e)
