"""Progress: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("importer")


class Progress:
    """Counts settled rows; shows them as a bar (TTY) or a log line every `interval` seconds."""

    def __init__(
        self,
        *,
        enabled: bool | None,
        total: int | None,
        limit_per_minute: float,
        interval: float = 10.0,
    ) -> None:
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self._limit_per_minute = limit_per_minute
        self._bar: tqdm | None = None
        if use_bar:
            self._bar = tqdm(
                total=total,
                unit="rows",
                unit_scale=True,
                dynamic_ncols=True,
                smoothing=0.05,
                desc="importing",
                postfix=f"limit {limit_per_minute:,.0f}/min",
            )
        # Log lines only when nobody sees a bar and the user did not turn progress off.
        self._log_lines = not use_bar and enabled is None
        self._interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        self.settled = 0
        self.total = total

    def advance(self, rows: int) -> None:
        self.settled += rows
        if self._bar is not None:
            self._bar.update(rows)
        else:
            self.tick()

    def tick(self) -> None:
        """A log line if one is due: also called on a timer, so a long wait still shows."""
        if self._bar is not None:
            self._bar.refresh()
            return
        now = time.monotonic()
        if self._log_lines and now - self._last_log >= self._interval:
            self._last_log = now
            self._log(now)

    def _log(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        per_minute = self.settled / elapsed * 60
        eta = ""
        if self.total:
            remaining = max(self.total - self.settled, 0)
            # The limit, not our speed, bounds the rest of a long run.
            pace = min(per_minute, self._limit_per_minute) or self._limit_per_minute
            eta = f", about {remaining / pace * 60:,.0f} s left"
        of_total = f" of {self.total:,}" if self.total else ""
        log.info(
            "progress: %s%s rows settled, %s rows/minute%s",
            f"{self.settled:,}",
            of_total,
            f"{per_minute:,.0f}",
            eta,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
