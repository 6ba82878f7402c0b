"""The benchmark's own parts: its history export is what it claims, its spreads add up."""

from __future__ import annotations

import pandas as pd
import pytest

from scripts.bench_data import (
    HISTORY_BLOCK_CUSTOMERS,
    HISTORY_VERSIONS,
    generate,
    history_export,
)
from scripts.spread import Spread


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_history_export_holds_every_version_of_every_customer_newest_last() -> None:
    customers, seed = 2500, 7
    history = history_export(customers, seed=seed).reset_index(drop=True)
    versions = [generate(customers, seed=seed + v).set_index("user_id") for v in range(3)]

    assert len(history) == customers * HISTORY_VERSIONS
    assert history["user_id"].value_counts().eq(HISTORY_VERSIONS).all()
    # Each customer's rows are its versions in order: the k-th row seen is version k.
    nth = history.groupby("user_id").cumcount()
    for version, expected in enumerate(versions):
        rows = history[nth == version].set_index("user_id").sort_index()
        pd.testing.assert_frame_equal(rows, expected.loc[rows.index])
    positions = history.reset_index().groupby("user_id")["index"]
    assert (positions.max() - positions.min()).max() < HISTORY_BLOCK_CUSTOMERS * HISTORY_VERSIONS


def test_history_export_interleaves_customers() -> None:
    history = history_export(2000).reset_index(drop=True)
    same_as_next = history["user_id"].eq(history["user_id"].shift(-1)).mean()
    assert same_as_next < 0.01


def test_spread_is_median_and_range() -> None:
    spread = Spread.of([3.0, 1.0, 10.0])
    assert spread == Spread(3.0, 1.0, 10.0)
    assert spread.show(",.0f", " rows/s") == "3 rows/s (1–10)"
    assert Spread.of([2.0, 4.0]).median == 3.0
    assert Spread.of([5.0]).show(".1f", " s") == "5.0 s"
    with pytest.raises(ValueError):
        Spread.of([])
