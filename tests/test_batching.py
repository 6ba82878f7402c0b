"""batching: rows packed under the byte cap, in order, each row in exactly one request."""

from __future__ import annotations

import itertools
import random

import orjson
import pandas as pd
import pytest

from importer import moengage
from importer.rows import Chunk, Row
from importer.run.batching import body_size, pack, request_body

CHUNK = Chunk("in.csv", pd.DataFrame({"user_id": ["x"]}, index=[1]))


def make_row(number: int, filler: int = 0) -> Row:
    element = moengage.customer_element(f"u{number}", {"pad": "x" * filler}, False)
    return Row("in.csv", number, f"u{number}", orjson.dumps(element), CHUNK)


def test_bulk_body_is_exactly_what_pack_counted() -> None:
    rows = [make_row(i, filler=i % 37) for i in range(1, 200)]
    for batch in pack(rows, 2_000, 1_000, "bulk"):
        body = request_body(batch, "bulk")
        assert len(body) == body_size(batch, "bulk") <= 2_000
        assert orjson.loads(body)["elements"] == [row.element for row in batch]


def test_cap_is_byte_exact_at_the_boundary() -> None:
    rows = [make_row(i) for i in range(1, 4)]
    three = len(moengage.bulk_body([row.encoded for row in rows]))
    assert [len(b) for b in pack(rows, three, 100, "bulk")] == [3]
    assert [len(b) for b in pack(rows, three - 1, 100, "bulk")] == [2, 1]


def test_max_items_caps_a_batch() -> None:
    rows = [make_row(i) for i in range(1, 11)]
    assert [len(b) for b in pack(rows, 100_000, 4, "bulk")] == [4, 4, 2]


def test_customer_endpoint_sends_one_row_a_request() -> None:
    rows = [make_row(i) for i in range(1, 4)]
    batches = list(pack(rows, 100_000, 100, "customer"))
    assert [len(b) for b in batches] == [1, 1, 1]
    assert request_body(batches[0], "customer") == rows[0].encoded
    with pytest.raises(ValueError):
        request_body(rows[:2], "customer")


def test_every_row_in_exactly_one_batch_in_order() -> None:
    rng = random.Random(7)
    rows = [make_row(i, filler=rng.randrange(0, 400)) for i in range(1, 1_001)]
    batches = list(pack(iter(rows), 5_000, 50, "bulk"))
    assert [row.row for batch in batches for row in batch] == list(range(1, 1_001))
    assert all(body_size(b, "bulk") <= 5_000 and len(b) <= 50 for b in batches)
    # Greedy: the next row would not have fitted in the previous batch.
    for before, after in itertools.pairwise(batches):
        assert len(before) == 50 or body_size([*before, after[0]], "bulk") > 5_000


def test_a_row_too_large_for_any_request_is_a_bug() -> None:
    with pytest.raises(ValueError, match="row 1"):
        list(pack([make_row(1, filler=3_000)], 1_000, 10, "bulk"))
    with pytest.raises(ValueError, match="row 1"):
        list(pack([make_row(1, filler=3_000)], 1_000, 10, "customer"))


def test_unknown_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        list(pack([make_row(1)], 1_000, 10, "batch"))
