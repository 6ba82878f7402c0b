"""Progress: a tqdm bar on a terminal, timed log lines otherwise; says what the run waits on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import NoReturn, Protocol, TextIO

from tqdm import tqdm

from importer.outputs.report import WAIT_NAMES
from importer.rows import RowCount

log = logging.getLogger("importer")

# No answer for this long while requests are in flight: the API is slow, say so.
SLOW_ANSWER_SECONDS = 5.0
# Granting at least this share of the limit: the limit is what sets the pace.
AT_LIMIT_SHARE = 0.85
# The current pace (for the ETA and the rate-limit test) is measured over this long.
PACE_WINDOW_SECONDS = 30.0
MIN_PACE_SPAN_SECONDS = 3.0


class WaitingSender(Protocol):
    host: str  # where requests go, host:port (no credentials)

    @property
    def outage(self) -> bool: ...

    @property
    def answered(self) -> bool: ...  # any request accepted or refused by the API yet

    def waiting_on(self) -> str | None: ...


class WatchedLimiter(Protocol):
    updates: int
    period_seconds: float
    granted_total: int

    @property
    def in_flight(self) -> int: ...


class _Pace:
    """Count per minute over the last PACE_WINDOW_SECONDS (None until a few seconds are seen)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self._samples.append((now, count))
        while self._samples and now - self._samples[0][0] > PACE_WINDOW_SECONDS:
            self._samples.popleft()

    def per_minute(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        if t1 - t0 < MIN_PACE_SPAN_SECONDS:
            return None
        return (c1 - c0) / (t1 - t0) * 60


class Waits:
    """What holds the run back now, as (kind, words): kinds are report.WAIT_NAMES' keys."""

    def __init__(self, sender: WaitingSender, limiter: WatchedLimiter) -> None:
        self._sender = sender
        self._limiter = limiter
        self._grants = _Pace()
        self._limit_per_minute = limiter.updates / limiter.period_seconds * 60

    def now(self, clock: float, quiet_for: float) -> tuple[str, str] | None:
        """`quiet_for`: seconds since a row last settled."""
        self._grants.add(clock, self._limiter.granted_total)
        said = self._sender.waiting_on()
        if self._sender.outage and said:
            return "outage", said
        if said:
            return "http_429", said
        in_flight = self._limiter.in_flight
        if not self._sender.answered:
            # Nothing came back yet (a host that hangs, answers only failures, or was not
            # reached): whatever the grants' pace, the limit holds nothing back.
            if not self._limiter.granted_total:
                return None  # nothing sent yet: reading, mapping
            return "slow_answers", (
                f"the first answer from {self._sender.host}: {in_flight:,} updates in "
                f"flight, none accepted in {quiet_for:.0f} s"
            )
        if in_flight and quiet_for >= SLOW_ANSWER_SECONDS:
            return "slow_answers", (
                f"slow answers: {in_flight:,} updates in flight, none answered for "
                f"{quiet_for:.0f} s"
            )
        pace = self._grants.per_minute()
        if pace is not None and pace >= AT_LIMIT_SHARE * self._limit_per_minute:
            return "rate_limit", f"the rate limit ({self._limit_per_minute:,.0f} updates/minute)"
        return None


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class Progress:
    """Counts settled rows; shows them as a bar (TTY) or a log line every `interval` seconds,
    with what the run waits on and an ETA at the current pace. A log line also comes as
    soon as a new kind of wait starts, so a stall never looks like a hang."""

    def __init__(
        self,
        *,
        enabled: bool | None,
        total: int | RowCount | None,
        limit_per_minute: float,
        interval: float = 10.0,
        pipe: TextIO | None = None,
    ) -> None:
        # A slice run by `--workers`: settled counts as JSON lines for the parent's one bar.
        self._pipe = pipe
        self._piped_at = 0.0
        # An estimated total (a large or compressed CSV) is shown as "about N", never as exact.
        self.total_exact = not isinstance(total, RowCount) or total.exact
        total = total.rows if isinstance(total, RowCount) else total
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self._limit_per_minute = limit_per_minute
        self._bar: tqdm[NoReturn] | None = None
        if use_bar:
            self._bar = tqdm(
                total=total,
                unit="rows",
                unit_scale=True,
                dynamic_ncols=True,
                smoothing=0.05,
                desc="importing" if self.total_exact else f"importing about {total:,} rows",
                postfix=f"limit {limit_per_minute:,.0f}/min",
            )
        # Log lines only when nobody sees a bar and the user did not turn progress off.
        self._log_lines = not use_bar and enabled is None
        self._interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        self._last_settled_at = self._started
        self._last_sample = self._started
        self._pace = _Pace()
        self._waits: Waits | None = None
        self._waiting: tuple[str, str] | None = None
        self._waited: dict[str, float] = {}
        self.settled = 0
        self.total = total

    def watch(self, sender: WaitingSender, limiter: WatchedLimiter) -> None:
        """From now on, say what the sender and the limiter hold the run back on."""
        self._waits = Waits(sender, limiter)

    def advance(self, rows: int) -> None:
        self.settled += rows
        if rows:
            self._last_settled_at = time.monotonic()
        if self._bar is not None:
            self._bar.update(rows)
        else:
            self.tick()

    def tick(self) -> None:
        """Called on a timer too: a long wait still shows, and its time is counted."""
        now = time.monotonic()
        if self._pipe is not None and now - self._piped_at >= 0.25:
            self._piped_at = now
            self._pipe.write(f'{{"settled": {self.settled}}}\n')
            self._pipe.flush()
        changed = self._sample(now)
        if self._bar is not None:
            words = self._waiting[1] if self._waiting else "sending"
            self._bar.set_postfix_str(words, refresh=False)
            self._bar.refresh()
            return
        if self._log_lines and (changed or now - self._last_log >= self._interval):
            self._last_log = now
            self._log(now)

    def _sample(self, now: float) -> bool:
        """Note what the run waits on (at most twice a second); True if a new wait began."""
        if now - self._last_sample < 0.5:
            return False
        if self._waiting is not None:
            kind = self._waiting[0]
            self._waited[kind] = self._waited.get(kind, 0.0) + now - self._last_sample
        self._last_sample = now
        self._pace.add(now, self.settled)
        if self._waits is None:
            return False
        before = self._waiting[0] if self._waiting else None
        self._waiting = self._waits.now(now, now - self._last_settled_at)
        return self._waiting is not None and self._waiting[0] != before

    def _log(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        per_minute = self._pace.per_minute()
        if per_minute is None:
            per_minute = self.settled / elapsed * 60
        about = "" if self.total_exact else "about "
        of_total = f" of {about}{self.total:,}" if self.total else ""
        parts = [
            f"progress: {self.settled:,}{of_total} rows settled, {per_minute:,.0f} rows/minute"
        ]
        if self.total:
            remaining = max(self.total - self.settled, 0)
            if remaining == 0 and not self.total_exact:
                parts.append("more rows than estimated; time left unknown")
            elif remaining == 0:
                parts.append("done, finishing")
            elif per_minute > 0:
                eta = format_duration(remaining / per_minute * 60)
                parts.append(f"about {eta} left at this pace")
            else:
                parts.append("time left unknown until rows settle again")
        if self._waiting is not None:
            parts.append(f"waiting: {self._waiting[1]}")
        log.info("%s", "; ".join(parts))

    def wait_seconds(self) -> dict[str, float]:
        """Time held back by each kind of wait (report.wait_seconds)."""
        return {kind: round(self._waited[kind], 1) for kind in WAIT_NAMES if kind in self._waited}

    def close(self) -> None:
        self._piped_at = 0.0
        if self._pipe is not None:
            self.tick()
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def ticking(progress: Progress, every: float = 1.0) -> Iterator[None]:
    """Ticks `progress` on a timer inside the block (of a running event loop), so a long
    wait still shows and its time is counted."""
    ticker = asyncio.create_task(_tick(progress, every))
    try:
        yield
    finally:
        ticker.cancel()


async def _tick(progress: Progress, every: float) -> NoReturn:
    while True:
        await asyncio.sleep(every)
        progress.tick()
