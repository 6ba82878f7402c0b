"""What a send settles: each row accepted or refused (with its stage), and the run's counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from importer.errors import ApiAbort
from importer.rows import Row

Stage = Literal["rejected", "delivery", "uncertain"]


@dataclass
class DeliveryStats:
    requests: int = 0  # HTTP attempts
    retries: int = 0  # attempts after the first for the same rows
    http_429: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # attempts without an answer
    users_sent: int = 0  # user updates attempted, retries included
    outages: int = 0
    outage_seconds: float = 0.0
    rate_limited_wait_seconds: float = 0.0  # every sender paused on a 429's Retry-After
    rate_limited_at: float | None = None  # the first 429 (clock time)
    accepted_since_429: int = 0  # users accepted after the first 429
    # The adaptive ceiling (updates a second) at the last 2xx after a 429: what the run
    # settled at, so about the workspace's real limit.
    settled_per_second: float | None = None
    # Events accepted after a request of theirs lost its answer (on_lost_answer: resend)
    events_possibly_duplicated: int = 0
    # The limit MoEngage's rate-limit headers gave, a minute, when it was below rate_limit
    rate_limit_learned: int | None = None

    def rate_settled_per_minute(self) -> float | None:
        """The pace 429s taught the run (None without 429s, or no 2xx after one)."""
        if self.settled_per_second is None:
            return None
        return round(self.settled_per_second * 60, 1)


@dataclass
class Refusal:
    row: Row
    stage: Stage
    status: int | None
    error: str


@dataclass
class SendResult:
    accepted: list[Row] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


class SendAborted(ApiAbort):
    """An ApiAbort out of `Sender.send`: `partial` holds what the interrupted send had
    settled (rows accepted by an earlier 2xx, rows refused); rows of the batch in neither
    list are pending."""

    def __init__(self, abort: ApiAbort, partial: SendResult) -> None:
        super().__init__(abort.status, abort.message)
        self.partial = partial
