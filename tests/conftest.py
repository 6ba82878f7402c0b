"""pytest's fixtures and markers for the suite; the helpers tests import are in tests/support.py."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """What `cli.main` sets for the whole process (the importer logger's handler on the
    stderr of the moment, the collector's thresholds and frozen objects) is put back after
    each test, so a CLI run in-process leaves nothing behind for the next test."""
    logger = logging.getLogger("importer")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    thresholds = gc.get_threshold()
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in tests/test_e2e_*.py `e2e`, so `make test-fast` can leave them out."""
    for item in items:
        if item.path.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.e2e)
