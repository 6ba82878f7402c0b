"""The two-stage Ctrl-C / SIGTERM: the first signal stops gently, the second at once."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from importer.run.signals import TwoStageStop, intercepted_signals


class _Stops:
    """Records each stop the signals ask of a run."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, *, cancel_in_flight: bool) -> None:
        self.calls.append(cancel_in_flight)


def test_the_first_signal_stops_gently_and_the_second_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stops = _Stops()
    stages = TwoStageStop(stops)
    assert not stages.interrupted
    stages.gently(signal.SIGINT)
    assert stops.calls == [False] and stages.interrupted
    stages.at_once(signal.SIGTERM)
    assert stops.calls == [False, True]
    assert "SIGINT: stopping; letting requests in flight finish" in caplog.text
    assert "SIGTERM again: stopping now" in caplog.text


def test_real_signals_inside_the_block_reach_the_stages_in_order() -> None:
    stops = _Stops()
    stages = TwoStageStop(stops)

    async def scenario() -> None:
        with stages.intercepting(asyncio.get_running_loop()) as inside:
            assert inside is stages
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
                os.kill(os.getpid(), sig)
                for _ in range(5):
                    await asyncio.sleep(0.01)

    asyncio.run(scenario())
    # Whichever signal comes first is the gentle stop; every later one stops at once.
    assert stops.calls == [False, True, True]
    assert stages.interrupted


def test_outside_the_block_python_handles_the_signals_again() -> None:
    before = signal.getsignal(signal.SIGINT)
    seen: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with intercepted_signals(
            loop, lambda s: seen.append("gently"), lambda s: seen.append("now")
        ):
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert seen == ["gently"]
    assert signal.getsignal(signal.SIGINT) is before


def test_the_callers_own_handlers_come_back_after_the_block() -> None:
    """An orchestrator's SIGTERM handler (Airflow's, say) survives a run in its process."""
    theirs: list[int] = []

    def orchestrator(signum: int, frame: object) -> None:
        theirs.append(signum)

    previous = signal.signal(signal.SIGTERM, orchestrator)
    try:

        async def scenario() -> None:
            with intercepted_signals(asyncio.get_running_loop(), lambda s: None, lambda s: None):
                await asyncio.sleep(0)

        asyncio.run(scenario())
        assert signal.getsignal(signal.SIGTERM) is orchestrator
        os.kill(os.getpid(), signal.SIGTERM)
        assert theirs == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_loop_off_the_main_thread_runs_without_the_handlers() -> None:
    """add_signal_handler refuses off the main thread: the block still runs, unguarded."""
    stages = TwoStageStop(_Stops())
    ran: list[bool] = []

    def in_thread() -> None:
        async def scenario() -> None:
            with stages.intercepting(asyncio.get_running_loop()):
                ran.append(True)

        asyncio.run(scenario())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert ran == [True] and not stages.interrupted
