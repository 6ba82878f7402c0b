"""Reading work off the event loop: each fault the reader thread meets becomes a ReadFailed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from importer.config import ConfigError
from importer.errors import describe_fault
from importer.outputs.progress import Progress, ticking
from importer.run.feed import ReadFailed, Work, next_work
from importer.sources import SourceError
from importer.state import StateFault
from tests.virtual_clock import VirtualTimeLoop, run_virtual


def _failing(error: BaseException) -> Iterator[Work]:
    yield Work(1, (0, 0), [], [])
    raise error


def _read_all(items: Iterator[Work]) -> list[Work | None]:
    async def scenario() -> list[Work | None]:
        return [await next_work(items), await next_work(items)]

    return asyncio.run(scenario())


def test_work_comes_in_order_and_none_marks_the_end() -> None:
    first, end = _read_all(iter([Work(3, (0, 0), [], [])]))
    assert first is not None and first.rows_read == 3 and end is None


@pytest.mark.parametrize(
    ("error", "bad_input"),
    [
        (SourceError("users.csv: row 9: a bad record"), True),
        (ConfigError("mapping.x: a column missing mid-run"), True),
        (StateFault("the state database is locked"), False),
    ],
)
def test_known_faults_keep_their_message(error: Exception, bad_input: bool) -> None:
    items = _failing(error)
    with pytest.raises(ReadFailed) as failed:
        _read_all(items)
    assert str(failed.value) == str(error) and failed.value.bad_input is bad_input


def test_other_faults_are_described_without_their_message() -> None:
    # A parser's message can quote a cell (personal data): only its type is shown.
    items = _failing(ValueError("could not convert 'jane@example.com'"))
    with pytest.raises(ReadFailed) as failed:
        _read_all(items)
    message = str(failed.value)
    assert message.startswith("reading the input stopped: ValueError")
    assert "jane" not in message and not failed.value.bad_input


def test_an_os_error_names_its_cause_and_file() -> None:
    gone = FileNotFoundError(2, "No such file or directory", "/data/part-2.csv")
    assert describe_fault(gone) == "No such file or directory (/data/part-2.csv)"
    assert describe_fault(OSError()) == "OSError"


def test_the_ticker_ticks_inside_the_block_only() -> None:
    ticks: list[int] = []

    class _Counted(Progress):
        def tick(self) -> None:
            ticks.append(1)

    async def scenario(loop: VirtualTimeLoop) -> int:
        progress = _Counted(enabled=False, total=None, limit_per_minute=60)
        with ticking(progress, every=1.0):
            await asyncio.sleep(10.5)
        inside = len(ticks)
        await asyncio.sleep(5)
        return inside

    inside = run_virtual(scenario)  # a virtual clock: the count is exact
    assert inside == 10 and len(ticks) == inside
