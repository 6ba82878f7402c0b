"""Two-stage Ctrl-C / SIGTERM for a run: the first stops gently, the second at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger("importer")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def intercepted_signals(
    loop: asyncio.AbstractEventLoop,
    gently: Callable[[signal.Signals], None],
    at_once: Callable[[signal.Signals], None],
) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `gently` the first time and `at_once` after, while inside.

    Handlers go through the event loop (not `signal.signal`), so they run between steps of
    the loop and never in the middle of a settle. After the block the handlers from before
    it are back (asyncio alone would leave SIGTERM at its default, dropping the handler of
    an orchestrator that called us).
    """
    received = 0
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def on_signal(sig: signal.Signals) -> None:
        nonlocal received
        received += 1
        (gently if received == 1 else at_once)(sig)

    for sig in STOP_SIGNALS:
        # Not on the main thread, or no signals on this platform: run without them.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if loop.remove_signal_handler(sig) and before[sig] is not None:
                    signal.signal(sig, before[sig])


class TwoStageStop:
    """What the first and the second SIGINT / SIGTERM do to a run.

    `stop(cancel_in_flight=...)` is the run's own stop: the first signal lets requests in
    flight finish (their answers are settled), the second cancels them (their rows stay
    pending and the next run sends them again). Either way the run ends as interrupted.
    """

    def __init__(self, stop: Callable[..., None]) -> None:
        self._stop = stop
        self.interrupted = False

    def gently(self, sig: signal.Signals) -> None:
        self.interrupted = True
        log.warning(
            "%s: stopping; letting requests in flight finish (again to stop at once)", sig.name
        )
        self._stop(cancel_in_flight=False)

    def at_once(self, sig: signal.Signals) -> None:
        self.interrupted = True
        log.warning(
            "%s again: stopping now; unsettled rows will be resent by the next run", sig.name
        )
        self._stop(cancel_in_flight=True)

    @contextlib.contextmanager
    def intercepting(self, loop: asyncio.AbstractEventLoop) -> Iterator[TwoStageStop]:
        """Inside the block, the signals stop the run in two stages (see `intercepted_signals`)."""
        with intercepted_signals(loop, self.gently, self.at_once):
            yield self
