"""The API answering no one: requests wait together while one of them probes.

An outage begins when every request fails (see `importer.run.answers`); it ends with the
first answer, or stops the run (ApiAbort) once it has lasted `max_outage_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from importer.errors import ApiAbort
from importer.run.results import DeliveryStats

log = logging.getLogger("importer")

# Probe intervals during an outage: the first, then doubling up to the cap.
FIRST_PROBE_SECONDS = 1.0
MAX_PROBE_SECONDS = 30.0


class Stopped(Exception):
    """The sender was stopped before these rows' fate was known."""


class _Broadcast:
    """Wakes every waiter at once; each wait also ends after its timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class Outage:
    """The API answering no one: requests wait here while one of them probes."""

    def __init__(
        self, stats: DeliveryStats, max_seconds: float, clock: Callable[[], float]
    ) -> None:
        self._stats = stats
        self._max_seconds = max_seconds
        self._clock = clock
        self.changed = _Broadcast()
        self.active = False
        self.started_at = 0.0
        self.reason = ""
        self._interval = FIRST_PROBE_SECONDS
        self._next_probe_at = 0.0
        self._probing = False

    def start(self, reason: str) -> None:
        if self.active:
            return
        now = self._clock()
        self.active, self.started_at, self.reason = True, now, reason
        self._interval = FIRST_PROBE_SECONDS
        self._next_probe_at = now + self._interval
        self._stats.outages += 1
        log.warning(
            "the API is not answering (%s): pausing, probing with one request at growing "
            "intervals; stopping after %s s",
            reason,
            f"{self._max_seconds:g}",
        )

    def end(self) -> None:
        if not self.active:
            return
        lasted = self._clock() - self.started_at
        self._stats.outage_seconds += lasted
        self.active = False
        self._probing = False
        log.warning("the API answers again after %.1f s: resuming", lasted)
        self.changed.notify()

    async def turn(self, stopping: asyncio.Event) -> bool:
        """Wait while the outage lasts: True when this caller is to send the probe, False
        when the outage is over. Raises ApiAbort once it has lasted `max_seconds`."""
        while True:
            if stopping.is_set():
                raise Stopped
            if not self.active:
                return False
            now = self._clock()
            left = self.started_at + self._max_seconds - now
            if left <= 0:
                raise ApiAbort(None, self._too_long_message(now))
            if not self._probing and now >= self._next_probe_at:
                self._probing = True
                return True
            wait = left if self._probing else min(left, self._next_probe_at - now)
            await self.changed.wait(wait)

    def probe_failed(self, reason: str) -> None:
        self.reason = reason
        self._probing = False
        self._interval = min(self._interval * 2, MAX_PROBE_SECONDS)
        self._next_probe_at = self._clock() + self._interval
        self.changed.notify()

    def probe_abandoned(self) -> None:
        if self._probing:
            self._probing = False
            self.changed.notify()

    def _too_long_message(self, now: float) -> str:
        return (
            f"the API has not answered for {now - self.started_at:.0f} s (last: {self.reason}); "
            f"delivery.max_outage_seconds is {self._max_seconds:g}. The rows not yet "
            "accepted are pending: run the same command again once the API is back"
        )
