"""The events ledger and the lost-answer policy, in process (issue 23).

End to end (CLI against the sandbox) in tests/test_e2e_events_once.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from importer.config import ConfigError, JobConfig, parse_job
from importer.moengage import event_element
from importer.rows import ValidRows
from importer.run.answers import Answer, Budget
from importer.run.exactly_once import EventLedger, KeySet, content_material
from importer.run.lost_answers import LostAnswer, LostAnswers
from importer.run.results import DeliveryStats
from importer.run.transport import NoAnswer
from importer.state import SCHEMA, StateStore
from importer.state.events_ledger import known_keys, ledger_size, prune_ledger, write_ledger

WORKSPACE = {"workspace_id": "WS1", "api_key": "k", "base_url": "http://127.0.0.1:9"}


def events_job(tmp_path: Path, **event: Any) -> JobConfig:
    tree = {
        "import": "events",
        "api": WORKSPACE,
        "source": {"path": str(tmp_path / "e.csv")},
        "mapping": {
            "customer_id": "user_id",
            "event": {"action": "Viewed", "time": "occurred_at", **event},
        },
        "output": {"state": str(tmp_path / "state.db")},
    }
    return parse_job(tree, env={})


def element(customer: str, seq: int, platform: str = "web", when: str = "10:00") -> bytes:
    action = {
        "action": "Viewed",
        "attributes": {"seq": seq},
        "platform": platform,
        "current_time": f"2024-03-01T{when}:00Z",
    }
    return orjson.dumps(event_element(customer, [action]))


def rows_of(elements: list[bytes]) -> ValidRows:
    numbers = list(range(1, len(elements) + 1))
    ids = [orjson.loads(e)["customer_id"] for e in elements]
    return ValidRows("e.csv", numbers, ids, elements, chunk=None)  # type: ignore[arg-type]


def test_an_event_is_its_customer_action_time_and_attributes() -> None:
    one = content_material(element("c1", 1))
    assert content_material(element("c1", 1, platform="iOS")) == one  # a re-export's platform
    assert content_material(element("c2", 1)) != one
    assert content_material(element("c1", 2)) != one
    assert content_material(element("c1", 1, when="10:01")) != one


def test_a_state_file_from_before_the_ledger_gains_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.close()
    store = StateStore(path, "s")
    assert ledger_size(store.database.db) == 0
    store.mark_settled("e.csv", "fp", [1, 2], ledger=[b"a" * 16, b"b" * 16])
    assert known_keys(store.database.db, [b"b" * 16, b"c" * 16]).tolist() == [True, False]
    # Saved with the rows' progress, in the same transaction.
    assert store.settled("e.csv", "fp").ranges == [(1, 2)]
    store.close()


def test_the_horizon_forgets_only_what_is_older(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", "s")
    db = store.database.db
    with db:
        db.execute("BEGIN")
        write_ledger(db, [b"o" * 16], day=100)
        write_ledger(db, [b"n" * 16], day=130)
        write_ledger(db, [b"o" * 16], day=131)  # known already: keeps its first day
    assert prune_ledger(db, 30, now_day=140) == 1
    assert known_keys(db, [b"o" * 16, b"n" * 16]).tolist() == [False, True]
    store.close()


def test_the_key_set_finds_what_was_added_across_merges() -> None:
    keys = KeySet()
    rng = np.random.default_rng(1)
    added = [np.array([rng.bytes(16) for _ in range(n)], dtype="S16") for n in (5, 9, 3, 40)]
    for part in added:
        keys.add(part)
    everything = np.concatenate(added)
    others = np.array([rng.bytes(16) for _ in range(50)], dtype="S16")
    assert keys.contains(everything).all() and not keys.contains(others).any()
    assert len(keys) == len(everything)


def test_the_feed_filter_drops_known_and_repeated_events(tmp_path: Path) -> None:
    job = events_job(tmp_path)
    ledger = EventLedger(job)
    first = rows_of([element("c1", 1), element("c1", 2), element("c1", 1, platform="iOS")])
    kept, already, uncertain = ledger.filter(first)
    assert [r.row for r in kept] == [1, 2] and already == [3] and uncertain == []
    keys = ledger.take(list(kept))
    assert len(keys) == 2 and ledger.take(list(kept)) == []  # taken once
    store = StateStore(job.output.state, "s")
    store.mark_settled("e.csv", "fp", [1, 2], ledger=keys)
    store.close()
    # Another run (a new overlay), the same events and a new one: only the new one goes.
    again = EventLedger(job)
    kept, already, _ = again.filter(rows_of([element("c1", 2), element("c1", 3)]))
    assert [r.row for r in kept] == [2] and already == [1]
    again.close()
    ledger.close()


def test_another_workspace_has_a_ledger_of_its_own(tmp_path: Path) -> None:
    job = events_job(tmp_path)
    other = job.model_copy(update={"api": job.api.model_copy(update={"workspace_id": "WS2"})})
    rows = rows_of([element("c1", 1)])
    assert EventLedger(job).keys(rows) != EventLedger(other).keys(rows)


def test_event_ids_key_the_ledger_when_named(tmp_path: Path) -> None:
    ledger = EventLedger(events_job(tmp_path, id="event_id"))
    assert ledger.id_column == "event_id"
    with pytest.raises(ConfigError, match="on_lost_answer"):
        parse_job(
            {
                "api": WORKSPACE,
                "source": {"path": "x.csv"},
                "mapping": {"customer_id": "u"},
                "delivery": {"on_lost_answer": "maybe"},
            },
            env={},
        )


def test_a_lost_answer_under_each_policy() -> None:
    stats = DeliveryStats()
    sent = NoAnswer("connection reset")
    never = NoAnswer("connection failed (connection refused)", maybe_sent=False)
    resend, dead = (LostAnswers(p, stats, events=True) for p in ("resend", "dead_letter"))
    users = LostAnswers("dead_letter", stats, events=False)
    budget = Budget()
    assert resend.after(sent, "reset", budget) is None and budget.lost == 1
    assert resend.final(Answer(200, "accepted"), budget, 7).ok
    assert stats.events_possibly_duplicated == 7
    assert resend.final(Answer(200, "accepted"), Budget(), 5).ok  # no loss: not counted
    assert stats.events_possibly_duplicated == 7
    assert isinstance(dead.after(sent, "reset", Budget()), LostAnswer)
    assert dead.after(never, "refused", Budget()) is None  # nothing was sent: retried
    assert users.after(sent, "reset", Budget()) is None  # users always resend


@pytest.mark.parametrize("policy", ["resend", "dead_letter"])
def test_events_a_killed_run_left_in_flight(tmp_path: Path, policy: str) -> None:
    job = events_job(tmp_path)
    job = job.model_copy(
        update={"delivery": job.delivery.model_copy(update={"on_lost_answer": policy})}
    )
    StateStore(job.output.state, "s").close()
    killed = EventLedger(job)
    killed.open_writer()
    rows = rows_of([element("c1", 1), element("c1", 2)])
    kept, _, _ = killed.filter(rows)
    killed.sending(list(kept)[:1])  # the first row's request went; then the kill
    killed.close()
    rerun = EventLedger(job)
    kept, already, uncertain = rerun.filter(rows_of([element("c1", 1), element("c1", 2)]))
    if policy == "dead_letter":
        assert [r.row for r in uncertain] == [1] and [r.row for r in kept] == [2]
    else:
        assert uncertain == [] and [r.row for r in kept] == [1, 2]
        rerun.take(list(kept))
        assert rerun.possibly_duplicated == 1
    assert already == []
    rerun.close()
