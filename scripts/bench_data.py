"""The benchmark's input files: generated user profiles, their subsets and a history export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "user_id", "first_name", "last_name", "email", "phone", "city",
    "loyalty_points", "lifetime_value", "is_super", "signup_at", "birthday", "interests",
]  # fmt: skip

MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "first_name": "first_name",
        "last_name": "last_name",
        "email": "email",
        "phone": "phone",
        "city": "city",
        "loyalty_points": {"column": "loyalty_points", "type": "integer"},
        "lifetime_value": {"column": "lifetime_value", "type": "number"},
        "super_user": {"column": "is_super", "type": "boolean"},
        "signup_at": {"column": "signup_at", "type": "datetime"},
        "birthday": {"column": "birthday", "type": "date"},
        "interests": {"column": "interests", "type": "array", "separator": "|"},
    },
}

HISTORY_VERSIONS = 3
# A history export ordered by update time keeps one customer's rows close together:
# here within a block of 1,000 customers (3,000 rows), so they are in flight at once.
HISTORY_BLOCK_CUSTOMERS = 1000


def generate(rows: int, seed: int = 1) -> pd.DataFrame:
    """`rows` users with ids 1..rows; the seed varies every other column."""
    rng = np.random.default_rng(seed)
    first = np.array(
        ["Ada", "Bob", "Chen", "Dana", "Emeka", "Fatima", "Gus", "Hana", "Ivan", "Jun"]
    )
    last = np.array(["Smith", "Okafor", "Müller", "Tanaka", "Silva", "Khan", "Novak", "Rossi"])
    cities = np.array(["Berlin", "Lagos", "Mumbai", "São Paulo", "Jakarta", "Austin", "Paris"])
    tags = np.array(["sports", "books", "travel", "music", "food", "tech", "games"])
    ids = np.arange(1, rows + 1)
    points = rng.integers(0, 50_000, rows).astype(str).astype(object)
    points[rng.random(rows) < 0.05] = ""
    base = np.datetime64("2020-01-01T00:00:00")
    signup = base + rng.integers(0, 5 * 365 * 86400, rows).astype("timedelta64[s]")
    birthday = np.datetime64("1950-01-01") + rng.integers(0, 50 * 365, rows).astype(
        "timedelta64[D]"
    )
    interests = ["|".join(tags[rng.integers(0, len(tags), k)]) for k in rng.integers(0, 4, rows)]
    frame = pd.DataFrame(
        {
            "user_id": np.char.zfill(ids.astype(str), 9),
            "first_name": first[rng.integers(0, len(first), rows)],
            "last_name": last[rng.integers(0, len(last), rows)],
            "email": [f"user{i}@example.com" for i in ids],
            "phone": ["+4915" + str(n) for n in rng.integers(10_000_000, 99_999_999, rows)],
            "city": cities[rng.integers(0, len(cities), rows)],
            "loyalty_points": points,
            "lifetime_value": np.round(rng.random(rows) * 1000, 2),
            "is_super": rng.choice(np.array(["true", "false", "yes", "no"]), rows),
            "signup_at": np.datetime_as_string(signup, unit="s"),
            "birthday": np.datetime_as_string(birthday, unit="D"),
            "interests": interests,
        }
    )
    return frame[COLUMNS]


def history_export(customers: int, seed: int = 7) -> pd.DataFrame:
    """HISTORY_VERSIONS rows per customer, each a different state, the newest last.

    Rows are ordered by a random update moment within blocks of HISTORY_BLOCK_CUSTOMERS
    customers; each customer's moments are sorted, so version k comes before version k+1.
    """
    versions = [generate(customers, seed=seed + v) for v in range(HISTORY_VERSIONS)]
    stacked = pd.concat(versions, ignore_index=True)  # row v * customers + i: version v of i
    rng = np.random.default_rng(seed)
    moments = np.sort(rng.random((customers, HISTORY_VERSIONS)), axis=1)
    block = np.tile(np.arange(customers) // HISTORY_BLOCK_CUSTOMERS, HISTORY_VERSIONS)
    order = np.lexsort((moments.T.reshape(-1), block))
    return stacked.iloc[order]


def head(source: Path, rows: int, target: Path) -> Path:
    """The header and the first `rows` rows of a CSV file (written once)."""
    if not target.exists():
        with source.open("rb") as src, target.open("wb") as dst:
            for _ in range(rows + 1):
                dst.write(src.readline())
    return target


def users_files(folder: Path) -> tuple[Path, Path]:
    """The 1,000,000-row file and a 5,000,000-row one (the same rows five times)."""
    folder.mkdir(exist_ok=True)
    one, five = folder / "users_1m.csv", folder / "users_5m.csv"
    if not one.exists():
        print("bench: generating 1,000,000 rows ...", flush=True)
        generate(1_000_000).to_csv(one, index=False)
    if not five.exists():
        print("bench: building the 5,000,000-row file (the 1M rows five times) ...", flush=True)
        body = one.read_bytes().split(b"\n", 1)[1]
        with five.open("wb") as out:
            out.write(",".join(COLUMNS).encode() + b"\n")
            for _ in range(5):
                out.write(body)
    return one, five


def history_file(folder: Path, customers: int) -> Path:
    path = folder / f"history_{customers // 1000}k_x{HISTORY_VERSIONS}.csv"
    if not path.exists():
        print(f"bench: generating a history export, {customers:,} customers ...", flush=True)
        history_export(customers).to_csv(path, index=False)
    return path
