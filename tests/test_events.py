"""Events jobs without a network: mapper rules, grouping, weights, config and sandbox rules."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pandas as pd
import pytest

from importer import moengage
from importer.config import ConfigError, events_sync_problem, parse_job
from importer.mapping.events import MAX_GROUPED_ACTIONS, EventMapper, group_actions
from importer.rows import Chunk, Row, ValidRows
from importer.run import ordering
from importer.sandbox import RateWindow, event_problem

MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "event": {
        "action": {"column": "event_name"},
        "time": {"column": "at"},
        "timezone_offset": {"column": "tz"},
        "attributes": {"amount": {"column": "amount", "type": "number"}},
    },
}


def _job(mapping: dict[str, Any] | None = None, kind: str = "events") -> Any:
    raw = {
        "import": kind,
        "api": {"base_url": "http://127.0.0.1:9", "workspace_id": "W", "api_key": "k"},
        "mapping": mapping or MAPPING,
    }
    return parse_job(raw, env={})


def _chunk(rows: list[dict[str, Any]]) -> Chunk:
    frame = pd.DataFrame(rows, dtype=object)
    frame.index = pd.RangeIndex(1, len(rows) + 1)
    return Chunk("events.csv", frame)


def _map(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    mapped = EventMapper(_job().mapping).map_chunk(_chunk(rows))
    return [row.element for row in mapped.valid], {r.row: r.error for r in mapped.invalid}


def _row(**cells: Any) -> dict[str, Any]:
    base = {"user_id": "c1", "event_name": "Viewed", "at": "2024-03-01T10:00:00Z", "tz": None}
    return {**base, "amount": None, **cells}


def test_one_row_is_one_action_of_its_customer() -> None:
    elements, problems = _map([_row(amount="2.5", tz="3600")])
    assert problems == {}
    assert elements == [
        {
            "type": "event",
            "customer_id": "c1",
            "actions": [
                {
                    "action": "Viewed",
                    "attributes": {"amount": 2.5},
                    "current_time": "2024-03-01T10:00:00Z",
                    "user_time": "2024-03-01T11:00:00",
                    "user_timezone_offset": 3600,
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("cells", "rule"),
    [
        ({"event_name": None}, "an event needs an action"),
        ({"event_name": "  "}, "an event needs a non-empty action"),
        ({"event_name": "moe_click"}, "prefix is reserved"),
        ({"event_name": "x" * 201}, "at most 200"),
        ({"at": None}, "an event needs a time"),
        ({"at": "2999-01-01T00:00:00Z"}, "in the future"),
        ({"at": "yesterday"}, "column 'at'"),
        ({"tz": "54001"}, "outside -54000..54000"),
        ({"tz": "-54001"}, "outside -54000..54000"),
        ({"user_id": "unknown"}, "placeholder"),
    ],
)
def test_a_row_breaking_a_rule_is_invalid_with_the_rule(cells: dict[str, Any], rule: str) -> None:
    elements, problems = _map([_row(**cells), _row(user_id="c2")])
    assert [e["customer_id"] for e in elements] == ["c2"]
    assert rule in problems[1]


def test_offsets_at_the_bounds_and_times_within_the_skew_are_valid() -> None:
    soon = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _, problems = _map([_row(tz="54000"), _row(tz="-54000"), _row(at=soon)])
    assert problems == {}


def test_a_dot_in_an_event_name_is_sent_and_warned_about() -> None:
    mapped = EventMapper(_job().mapping).map_chunk(_chunk([_row(event_name="Signed.Up")]))
    assert mapped.valid[0].element["actions"][0]["action"] == "Signed.Up"
    assert any("stores the '.' as a space" in w for w in mapped.warnings)


def _event(customer: str, seq: int) -> bytes:
    action = {"action": "A", "attributes": {"seq": seq}, "current_time": "2024-03-01T10:00:00Z"}
    return orjson.dumps(moengage.event_element(customer, [action]))


def test_a_customers_actions_are_grouped_in_file_order_within_the_caps() -> None:
    found = [(n, _event("c1", n)) for n in range(1, MAX_GROUPED_ACTIONS + 3)]
    grouped = group_actions("c1", found, 100_000)
    assert [len(parts) for _, _, _, parts in grouped] == [MAX_GROUPED_ACTIONS, 2]
    seqs = [
        a["attributes"]["seq"]
        for _, _, encoded, _ in grouped
        for a in orjson.loads(encoded)["actions"]
    ]
    assert seqs == list(range(1, MAX_GROUPED_ACTIONS + 3))
    small = group_actions("c1", found[:6], len(found[0][1]) * 2)
    assert all(len(encoded) <= len(found[0][1]) * 2 for _, _, encoded, _ in small)
    assert sum(max(len(parts), 1) for _, _, _, parts in small) == 6


def test_sequence_groups_events_and_weights_count_actions() -> None:
    ids = ["a", "b", "a", "a", "b", "c"]
    rows = ValidRows(
        "s", list(range(1, 7)), list(ids), [_event(c, n) for n, c in enumerate(ids, 1)], _chunk([])
    )
    rounds = ordering.sequence(rows, 100_000)
    assert rounds is not None and len(rounds) == 1
    elements = list(rounds[0])
    assert [r.customer_id for r in elements] == ["a", "b", "c"]
    assert [r.weight for r in elements] == [3, 2, 1]
    assert [r.numbers for r in elements] == [[1, 3, 4], [2, 5], [6]]
    assert [len(r.split()) for r in elements] == [3, 2, 1]
    # A merged user element is one update, however many rows made it.
    user = Row("s", 1, "a", b'{"type":"customer"}', _chunk([]), ((1, b"{}"), (2, b"{}")))
    assert user.weight == 1


def test_a_grouped_element_heavier_than_the_window_is_sent_as_its_rows() -> None:
    from pydantic import SecretStr

    from importer.config import ApiConfig, DeliveryConfig
    from importer.quota.window import WindowLimiter
    from importer.run.delivery import DeliveryStats, Sender
    from importer.run.transport import Answer, FakeTransport, Request

    def respond(request: Request) -> Answer:
        return 200, {}, b'{"status": "success"}'

    transport = FakeTransport(respond)

    async def run() -> int:
        limiter = WindowLimiter(2, 0.05)
        api = ApiConfig(base_url="http://127.0.0.1:9", workspace_id="W", api_key=SecretStr("k"))
        sender = Sender(api, DeliveryConfig(), limiter, transport, DeliveryStats())
        found = [(n, _event("a", n)) for n in range(1, 6)]
        ((number, customer, encoded, parts),) = group_actions("a", found, 100_000)
        result = await sender.send([Row("s", number, customer, encoded, _chunk([]), parts)])
        return sum(len(r.numbers) for r in result.accepted)

    assert asyncio.run(run()) == 5
    sizes = [
        sum(len(e["actions"]) for e in orjson.loads(r.body)["elements"]) for r in transport.requests
    ]
    assert sum(sizes) == 5 and max(sizes) <= 2


def test_events_jobs_config_rules() -> None:
    job = _job()
    assert job.import_ == "events" and job.mapping.event is not None
    assert job.mapping.event.time.type == "datetime"
    with pytest.raises(ConfigError, match=r"mapping\.event\.attributes\.moe_x"):
        _job({**MAPPING, "event": {**MAPPING["event"], "attributes": {"moe_x": "a"}}})
    too_many = {f"a{i}": "a" for i in range(101)}
    with pytest.raises(ConfigError, match="at most 100 per event"):
        _job({**MAPPING, "event": {**MAPPING["event"], "attributes": too_many}})
    with pytest.raises(ConfigError, match=r"mapping\.event\.timezone_offset"):
        _job({**MAPPING, "event": {**MAPPING["event"], "timezone_offset": "60000"}})
    with pytest.raises(ConfigError, match=r"mapping\.event\.platform"):
        _job({**MAPPING, "event": {**MAPPING["event"], "platform": "Android TV"}})
    with pytest.raises(ConfigError, match=r"mapping\.event: only an events job"):
        _job(kind="users")
    constant = _job({**MAPPING, "event": {**MAPPING["event"], "action": "Order Placed"}})
    assert constant.mapping.event is not None
    assert constant.mapping.event.action.constant == "Order Placed"


def test_changed_sync_is_refused_for_events_jobs() -> None:
    problem = events_sync_problem("events", "changed")
    assert problem is not None and problem.startswith("sync.mode")
    assert events_sync_problem("users", "changed") is None
    assert events_sync_problem("events", "all") is None


def test_the_sandbox_checks_event_elements() -> None:
    good = orjson.loads(_event("c1", 1))
    assert event_problem(good) is None
    assert event_problem({**good, "actions": []}) == "actions must be a non-empty list"
    future = {**good, "actions": [{"action": "A", "current_time": "2999-01-01T00:00:00Z"}]}
    assert "future" in (event_problem(future) or "")
    reserved = {**good, "actions": [{"action": "A", "attributes": {"moe_x": 1}}]}
    assert "reserved prefix" in (event_problem(reserved) or "")
    offset = {**good, "actions": [{"action": "A", "user_timezone_offset": 54001}]}
    assert "user_timezone_offset" in (event_problem(offset) or "")
    assert "placeholder" in (event_problem({**good, "customer_id": "guest"}) or "")


def test_the_sandbox_limits_events_apart_from_users() -> None:
    users, events = RateWindow(10, 60), RateWindow(100, 60)
    events.add(0.0, 100)
    assert users.wait_seconds(1.0, 10) is None
    assert events.wait_seconds(1.0, 1) is not None


def test_a_request_holds_at_most_max_items_actions() -> None:
    from importer.run import batching

    ids = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d"]
    rows = ValidRows(
        "s", list(range(1, 11)), list(ids), [_event(c, n) for n, c in enumerate(ids, 1)], _chunk([])
    )
    rounds = ordering.sequence(rows, 100_000)
    assert rounds is not None
    (grouped,) = rounds
    assert batching.weights_of(grouped) == [3, 3, 3, 1]
    spans = batching.row_spans(grouped, 100_000, 4, batching.BULK)
    assert spans == [(0, 1), (1, 2), (2, 4)]  # 3, 3, then 3 + 1
