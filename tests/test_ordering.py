"""ordering: merging with the same end state, rounds, the customer gate, the duplicate tally."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pandas as pd

from importer import moengage
from importer.rows import Chunk, Row, ValidRows
from importer.run.ordering import CustomerGate, CustomerTally, merge, sequence

CHUNK = Chunk("in.csv", pd.DataFrame({"user_id": ["x"]}, index=[1]))


def _element(customer: str, **attributes: Any) -> dict[str, Any]:
    return moengage.customer_element(customer, attributes, False)


def _rows(*elements: dict[str, Any]) -> ValidRows:
    return ValidRows(
        "in.csv",
        list(range(1, len(elements) + 1)),
        [e.get("customer_id") for e in elements],
        [orjson.dumps(e) for e in elements],
        CHUNK,
    )


def _apply(stored: dict[str, dict[str, Any]], element: dict[str, Any]) -> None:
    """A server's view of a plain update (the sandbox records them this way)."""
    stored.setdefault(element["customer_id"], {}).update(element["attributes"])


def test_merge_keeps_the_end_state_of_plain_sets_and_refuses_array_edits() -> None:
    first = _element("a", city="Oslo", points=1)
    second = _element("a", points=2, tier="gold")
    merged = merge(first, second)
    assert merged is not None
    one: dict[str, dict[str, Any]] = {}
    two: dict[str, dict[str, Any]] = {}
    _apply(one, first)
    _apply(one, second)
    _apply(two, merged)
    assert one == two == {"a": {"city": "Oslo", "points": 2, "tier": "gold"}}
    adding = _element("a", **{moengage.ADD_TO_ARRAY_KEY: {"tags": ["x"]}})
    assert merge(first, adding) is None and merge(adding, first) is None
    platforms = _element("a", **{moengage.PLATFORMS_KEY: [{"platform": "web", "active": "true"}]})
    assert merge(first, platforms) is None
    existing_only = {**second, "update_existing_only": True}
    assert merge(first, existing_only) is None


def test_no_repeated_customer_needs_no_rounds() -> None:
    assert sequence(_rows(_element("a"), _element("b"), _element("c")), 10_000) is None


def test_plain_rows_merge_and_keep_every_row_number() -> None:
    rows = _rows(
        _element("a", v=1), _element("b", v=1), _element("a", v=2, c="x"), _element("a", v=3)
    )
    rounds = sequence(rows, 10_000)
    assert rounds is not None and len(rounds) == 1
    (only,) = rounds
    by_customer = {row.customer_id: row for row in only}
    merged = by_customer["a"]
    assert merged.element["attributes"] == {"v": 3, "c": "x"}
    assert merged.numbers == [1, 3, 4]
    assert [part.element["attributes"] for part in merged.split()] == [
        {"v": 1},
        {"v": 2, "c": "x"},
        {"v": 3},
    ]
    assert by_customer["b"].numbers == [2]


def test_rows_that_cannot_merge_go_to_later_rounds_in_file_order() -> None:
    add = {moengage.ADD_TO_ARRAY_KEY: {"tags": ["t"]}}
    rows = _rows(
        _element("a", v=1, **add),
        _element("a", v=2, **add),
        _element("b", v=1),
        _element("a", v=3),
        _element("a", v=4),
    )
    rounds = sequence(rows, 10_000)
    assert rounds is not None
    seen = [[(r.customer_id, r.element["attributes"]["v"]) for r in batch] for batch in rounds]
    # a: 1, 2 (array edits, alone), then 3+4 merged (ends on 4); b once, in the first round.
    assert seen == [[("a", 1), ("b", 1)], [("a", 2)], [("a", 4)]]
    for batch in rounds:
        customers = [r.customer_id for r in batch]
        assert len(customers) == len(set(customers))


def test_a_merge_too_large_for_one_request_is_not_made() -> None:
    rows = _rows(_element("a", x="1" * 60), _element("a", y="2" * 60))
    rounds = sequence(rows, 150)
    assert rounds is not None and [len(r) for r in rounds] == [1, 1]


def test_tally_counts_customers_seen_more_than_once_across_chunks() -> None:
    tally = CustomerTally()
    tally.add(["a", "b", "b", None, None])
    tally.add(["c", "a"])
    tally.add(["a", "b", "d"])
    for start in range(0, 20_000, 1000):  # many chunks: the sorted runs merge as they grow
        tally.add([f"u{i}" for i in range(start, start + 1000)])
    tally.add([f"u{i}" for i in range(0, 20_000, 2)])
    assert tally.duplicates == 2 + 10_000


def test_gate_makes_a_later_request_wait_only_for_earlier_ones_holding_its_customers() -> None:
    async def scenario() -> list[str]:
        gate = CustomerGate()
        order: list[str] = []
        first, wait_first = gate.take(frozenset({"a", "b"}))
        other, wait_other = gate.take(frozenset({"c"}))
        later, wait_later = gate.take(frozenset({"b", "d"}))
        assert wait_first == [] and wait_other == []
        assert wait_later == [first.done]

        async def send_later() -> None:
            await asyncio.gather(*wait_later)
            order.append("later")

        task = asyncio.create_task(send_later())
        await asyncio.sleep(0.01)
        order.append("first answered")
        gate.release(first)
        gate.release(other)
        await task
        gate.release(later)
        return order

    assert asyncio.run(scenario()) == ["first answered", "later"]


def test_row_without_parts_splits_into_itself() -> None:
    row = Row("in.csv", 5, "a", orjson.dumps(_element("a")), CHUNK)
    assert row.split() == [row] and row.numbers == [5]
