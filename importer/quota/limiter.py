"""The window limiter for a quota shared by several processes: a local limiter plus a ledger.

Each request first takes a permit from this process's `WindowLimiter` (its pacing, its
pauses, its first-come-first-served turn), then waits for a grant in the shared ledger.
The local permit is a subset of the shared promise (this process's own grants), so only the
shared ledger binds when others are busy. The permit's release releases both: at once here,
and in the ledger as soon as the ledger answers (the release is sent in the background,
since a permit is released from a `finally`); until that answer the grant keeps its lease,
which only errs on the safe side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from typing import Any

from importer.quota.base import SharedLedger
from importer.quota.window import Permit, WindowLimiter

log = logging.getLogger("importer")

# Releases still on their way to the ledger get this long at the end of a run.
CLOSE_GRACE_SECONDS = 5.0


class SharedWindowLimiter(WindowLimiter):
    """At most `updates` in any `period_seconds` window for every process sharing the ledger."""

    def __init__(
        self, updates: int, period_seconds: float, *, ledger: SharedLedger, **kwargs: Any
    ) -> None:
        super().__init__(updates, period_seconds, **kwargs)
        self.ledger = ledger
        # One waiter of this process in the shared queue at a time, in arrival order.
        self._shared_turn = asyncio.Lock()
        self._ticket = uuid.uuid4().hex
        self._grant_numbers = itertools.count(1)
        self._grants: dict[Permit, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._release_failed = False

    async def acquire(self, n: int) -> Permit:
        permit = await super().acquire(n)
        try:
            grant = await self._shared_grant(n)
        except BaseException:
            permit.release()  # nothing was sent under it
            raise
        self._grants[permit] = grant
        return permit

    def pause_until(self, deadline: float) -> None:
        super().pause_until(deadline)
        # The 429 was the workspace's: every sharer waits, not only this process.
        self._in_background(self.ledger.pause(max(0.0, deadline - self.clock())))

    async def aclose(self) -> None:
        """Send the releases still pending, leave the queue, close the connection."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=CLOSE_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ledger.leave(self._ticket), CLOSE_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await self.ledger.aclose()

    async def _shared_grant(self, n: int) -> str:
        grant_id = f"{self._ticket}-{next(self._grant_numbers)}"
        async with self._shared_turn:
            try:
                while True:
                    attempt = await self.ledger.try_acquire(self._ticket, n, grant_id)
                    if attempt.grant_id is not None:
                        return attempt.grant_id
                    await asyncio.sleep(attempt.wait)
            except asyncio.CancelledError:
                # Our place in the queue would hold up the others until it went stale, and a
                # grant the ledger made as we were cancelled would hold its room for a lease.
                self._in_background(self.ledger.leave(self._ticket))
                self._in_background(self.ledger.forget(grant_id, n))
                raise

    def _on_release(self, permit: Permit) -> None:
        super()._on_release(permit)
        grant = self._grants.pop(permit, None)
        if grant is not None:
            self._in_background(self.ledger.release(grant, permit.extra_hold))

    def _in_background(self, call: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if not self._release_failed:
            self._release_failed = True
            # The grant keeps its lease and frees when it ends; the next grant will fail too.
            log.warning("%s", task.exception())
