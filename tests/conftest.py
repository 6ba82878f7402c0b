"""pytest's fixtures and markers for the suite; the helpers tests import are in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.fixture
def root() -> Path:
    return ROOT


# Files whose tests measure the pace of a real clock (windows full to 95%, a run's length):
# `make test` runs them alone, after the rest has run four at a time.
PACE_FILES = frozenset(
    {"test_e2e_ratelimit.py", "test_e2e_quota.py", "test_quota.py", "test_ratelimit.py"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in tests/test_e2e_*.py `e2e`, so `make test-fast` can leave them out,
    and the pace-measuring files `pace`."""
    for item in items:
        if item.path.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.e2e)
        if item.path.name in PACE_FILES:
            item.add_marker(pytest.mark.pace)
