"""Lost answers as a policy (`delivery.on_lost_answer`), for events.

A request that got no answer after it may have reached the server (a timeout, a
connection reset or closed after sending) may have been accepted. Sending it again is
harmless for users (an update applied twice is applied once) but not for events: MoEngage
keeps every event it accepts, twice if sent twice. So for events jobs:

- `resend` (the default): retried as any failure; rows accepted after their request lost
  an answer are counted in the report's `events_possibly_duplicated`. No event is lost;
  some may be in MoEngage twice.
- `dead_letter`: not retried; the rows go to the dead-letter file with stage `uncertain`
  (counted in `rows_failed`, not sent again by a rerun; `replay` sends them when you
  choose). No event is sent twice; some may be missing until replayed.

A connection that could not be made at all (refused, no route, DNS) carried nothing and
is retried under both policies.
"""

from __future__ import annotations

from dataclasses import dataclass

from importer.run.answers import Answer, Budget
from importer.run.results import DeliveryStats
from importer.run.transport import NoAnswer

RESEND = "resend"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class LostAnswer(Answer):
    """The final answer of an events request whose answer was lost (policy dead_letter):
    its rows are dead-lettered with stage `uncertain`."""


class LostAnswers:
    """The sender's policy for requests that got no answer after they may have arrived."""

    def __init__(self, policy: str, stats: DeliveryStats, *, events: bool) -> None:
        self.events = events
        self.dead_letters = events and policy == DEAD_LETTER
        self._stats = stats

    def after(self, failure: NoAnswer, reason: str, budget: Budget) -> Answer | None:
        """Noted on the request's budget; under dead_letter (events), its final answer."""
        if not failure.maybe_sent:
            return None
        budget.lost += 1
        if not self.dead_letters:
            return None
        return LostAnswer(
            None,
            f"no answer ({reason}): the request may have reached MoEngage, so its events"
            " were not sent again (delivery.on_lost_answer: dead_letter); replay them if"
            " MoEngage does not have them",
        )

    def final(self, answer: Answer, budget: Budget, rows: int) -> Answer:
        """An events request accepted after a lost answer: its events may be there twice."""
        if self.events and answer.ok and budget.lost:
            self._stats.events_possibly_duplicated += rows
        return answer
