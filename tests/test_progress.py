"""Progress lines when nobody watches a terminal: also during a long wait."""

from __future__ import annotations

import logging
import time

import pytest

from importer.outputs.progress import Progress
from importer.rows import RowCount


def test_log_lines_come_on_a_timer_even_when_nothing_settles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = Progress(enabled=None, total=1000, limit_per_minute=600, interval=0.05)
    caplog.set_level(logging.INFO, logger="importer")
    logger = logging.getLogger("importer")
    logger.propagate = True
    progress.advance(10)
    time.sleep(0.06)
    progress.tick()  # no rows settled since: the line still comes
    lines = [r.getMessage() for r in caplog.records if "progress" in r.getMessage()]
    assert lines and "10 of 1,000 rows settled" in lines[-1]
    assert "left" in lines[-1]


def test_no_lines_when_progress_is_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(enabled=False, total=None, limit_per_minute=600, interval=0.0)
    caplog.set_level(logging.INFO, logger="importer")
    logging.getLogger("importer").propagate = True
    progress.advance(5)
    progress.tick()
    assert not [r for r in caplog.records if "progress" in r.getMessage()]


@pytest.mark.parametrize(
    ("total", "shown"),
    [
        (RowCount(30_000, exact=True), "10 of 30,000 rows"),
        (RowCount(30_171, exact=False), "10 of about 30,171 rows"),
    ],
)
@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_an_estimated_total_is_shown_as_about(
    caplog: pytest.LogCaptureFixture, total: RowCount, shown: str
) -> None:
    progress = Progress(enabled=None, total=total, limit_per_minute=600, interval=0.0)
    caplog.set_level(logging.INFO, logger="importer")
    logging.getLogger("importer").propagate = True
    progress.advance(10)
    time.sleep(0.6)
    progress.tick()
    lines = [r.getMessage() for r in caplog.records if "progress" in r.getMessage()]
    assert lines and shown in lines[-1] and "left" in lines[-1]
