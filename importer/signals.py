"""Two-stage Ctrl-C / SIGTERM for a run: the first stops gently, the second at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def intercepted_signals(
    loop: asyncio.AbstractEventLoop,
    gently: Callable[[signal.Signals], None],
    at_once: Callable[[signal.Signals], None],
) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `gently` the first time and `at_once` after, while inside.

    Handlers go through the event loop (not `signal.signal`), so they run between steps of
    the loop and never in the middle of a settle; outside the block Python's own come back.
    """
    received = 0

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
                loop.remove_signal_handler(sig)
