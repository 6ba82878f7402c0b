"""Write the bundled sample inputs (sample_data/customers.csv and .parquet): seeded, no network."""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

OUT_DIR = Path(__file__).resolve().parent.parent / "sample_data"
CSV_ROWS = 3_000
PARQUET_ROWS = 2_000
SEED = 20240531

COLUMNS = [
    "user_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "city",
    "country",
    "loyalty_points",
    "lifetime_value",
    "is_super",
    "signup_at",
    "birthday",
    "interests",
    "platform",
    "plan",
]

FIRST_NAMES = [
    "Anna", "Ben", "Chloé", "David", "Elif", "Farah", "Gustav", "Hana", "Ivan", "Jana",
    "Kofi", "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quentin", "Rosa", "Søren", "Tomás",
    "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoë", "Amara", "Jonas", "Leila", "Noah",
]  # fmt: skip
LAST_NAMES = [
    "Müller", "Smith", "García", "Nguyen", "Kowalski", "Okafor", "Rossi", "Tanaka", "Dubois",
    "Johansson", "Silva", "Khan", "Schmidt", "Brown", "Novak", "Haddad", "Kim", "Fischer",
    "O'Brien", "van der Berg", "Nakamura", "Petrov", "Shikongo", "Nambala", "Mensah",
]  # fmt: skip
DOMAINS = ["example.com", "mail.example.org", "example.net", "shop.example"]
# (city, ISO country code, phone country code); NA is Namibia and must arrive as "NA".
PLACES = [
    ("Berlin", "DE", "49"), ("Hamburg", "DE", "49"), ("London", "GB", "44"),
    ("Manchester", "GB", "44"), ("New York", "US", "1"), ("Austin", "US", "1"),
    ("Paris", "FR", "33"), ("Lyon", "FR", "33"), ("Windhoek", "NA", "264"),
    ("Walvis Bay", "NA", "264"), ("São Paulo", "BR", "55"), ("Mumbai", "IN", "91"),
    ("Singapore", "SG", "65"), ("Jakarta", "ID", "62"), ("Sydney", "AU", "61"),
    ("Toronto", "CA", "1"),
]  # fmt: skip
INTERESTS = [
    "running", "cooking", "travel", "gaming", "music", "photography", "yoga", "cycling",
    "reading", "gardening", "fashion", "tech", "football", "hiking", "movies",
]  # fmt: skip
PLATFORMS = ["ANDROID", "iOS", "web"]
PLANS = ["free", "basic", "plus", "pro", "enterprise"]
CSV_BOOLEANS = ["true", "false", "yes", "no", "1", "0", "TRUE", "False"]
UTC_OFFSETS = [0, 1, 2, -5, -8, 5.5, 8, 9]  # hours


@dataclass(frozen=True)
class BadRow:
    """A row the importer must dead-letter at validation: which row, which column, why."""

    row: int  # 1-based data row, header excluded
    column: str
    value: Any
    reason: str


def _long_text(prefix: str, length: int) -> str:
    return (prefix * (length // len(prefix) + 1))[:length]


# Each bad row breaks a different rule; the README lists them for whoever reads the dead letters.
CSV_BAD_ROWS = [
    BadRow(7, "user_id", "guest", "placeholder customer_id (guest)"),
    BadRow(123, "user_id", "null", "placeholder customer_id (the text null)"),
    BadRow(321, "user_id", "", "empty customer_id"),
    BadRow(555, "loyalty_points", "2.5", "not an integer"),
    BadRow(890, "is_super", "maybe", "not a boolean"),
    BadRow(1234, "birthday", "31/31/2024", "not a date"),
    BadRow(1500, "first_name", _long_text("Maximiliane", 600), "string longer than 512 characters"),
    BadRow(
        2001, "interests", "|".join(f"topic{i}" for i in range(60)), "array of 60 items (max 50)"
    ),
    BadRow(2500, "platform", "Windows", "not a platform (ANDROID, iOS, web)"),
    BadRow(2750, "signup_at", "yesterday", "not a datetime"),
    BadRow(2999, "lifetime_value", "12,50", "not a number (decimal comma)"),
]
PARQUET_BAD_ROWS = [
    BadRow(3, "user_id", "guest", "placeholder customer_id (guest)"),
    BadRow(77, "user_id", "NULL", "placeholder customer_id (NULL, any case)"),
    BadRow(150, "user_id", "", "empty customer_id (empty string)"),
    BadRow(222, "user_id", None, "missing customer_id (null)"),
    BadRow(640, "user_id", "N/A", "placeholder customer_id (N/A)"),
    BadRow(
        900, "city", _long_text("Llanfairpwllgwyngyll", 600), "string longer than 512 characters"
    ),
    BadRow(1111, "interests", [f"topic{i}" for i in range(60)], "array of 60 items (max 50)"),
    BadRow(
        1400, "interests", ["music", _long_text("x", 600)], "array item longer than 512 characters"
    ),
    BadRow(1650, "platform", "Windows", "not a platform (ANDROID, iOS, web)"),
]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _user(rng: random.Random, number: int) -> dict[str, Any]:
    """One realistic user with native Python values (None = missing)."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, country, dial = rng.choice(PLACES)
    # Some exports zero-pad numeric ids; they must arrive as written.
    user_id = f"{number:05d}" if number % 10 == 3 else f"U{number:06d}"
    phone_digits = "".join(str(rng.randrange(10)) for _ in range(9))
    phone = None if rng.random() < 0.08 else f"+{dial}{phone_digits}"
    signup = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(6 * 365 * 86400))
    birthday = None if rng.random() < 0.1 else date(1950, 1, 1) + timedelta(rng.randrange(57 * 365))
    interests = rng.sample(INTERESTS, rng.randrange(0, 6))
    return {
        "user_id": user_id,
        "first_name": first,
        "last_name": last,
        "email": f"{_ascii(first)}.{_ascii(last)}{number}@{rng.choice(DOMAINS)}",
        "phone": phone,
        "city": city,
        "country": country,
        "loyalty_points": None if rng.random() < 0.15 else rng.randrange(0, 50_000),
        "lifetime_value": None if rng.random() < 0.05 else round(rng.uniform(0, 5_000), 2),
        "is_super": None if rng.random() < 0.05 else rng.random() < 0.2,
        "signup_at": signup,
        "birthday": birthday,
        "interests": interests or None,
        "platform": None if rng.random() < 0.03 else rng.choice(PLATFORMS),
        "plan": rng.choice(PLANS),
    }


def _csv_datetime(rng: random.Random, value: datetime) -> str:
    """Exports write datetimes with assorted offsets; the importer converts them to UTC."""
    offset = rng.choice(UTC_OFFSETS)
    local = value.astimezone(timezone(timedelta(hours=offset)))
    if offset == 0 and rng.random() < 0.5:
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    separator = "T" if rng.random() < 0.7 else " "
    return local.isoformat(sep=separator)


def _csv_row(rng: random.Random, user: dict[str, Any]) -> dict[str, str]:
    """The user as a CSV export writes it: text, with empty cells for missing values."""
    row = {name: "" if value is None else str(value) for name, value in user.items()}
    if user["is_super"] is not None:
        row["is_super"] = rng.choice(CSV_BOOLEANS[0::2] if user["is_super"] else CSV_BOOLEANS[1::2])
    row["signup_at"] = _csv_datetime(rng, user["signup_at"])
    row["interests"] = "|".join(user["interests"] or [])
    return row


def write_csv(path: Path, rng: random.Random) -> None:
    bad = {b.row: b for b in CSV_BAD_ROWS}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row_number in range(1, CSV_ROWS + 1):
            row = _csv_row(rng, _user(rng, 100 + row_number))
            if row_number in bad:
                row[bad[row_number].column] = bad[row_number].value
            writer.writerow(row)


PARQUET_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("city", pa.string()),
        ("country", pa.string()),
        ("loyalty_points", pa.int64()),
        ("lifetime_value", pa.float64()),
        ("is_super", pa.bool_()),
        ("signup_at", pa.timestamp("us", tz="UTC")),
        ("birthday", pa.date32()),
        ("interests", pa.list_(pa.string())),
        ("platform", pa.string()),
        ("plan", pa.string()),
    ]
)


def write_parquet(path: Path, rng: random.Random) -> None:
    bad = {b.row: b for b in PARQUET_BAD_ROWS}
    users = []
    for row_number in range(1, PARQUET_ROWS + 1):
        # Different users from the CSV: numbers start well past the CSV's.
        user = _user(rng, 10_000 + row_number)
        if row_number in bad:
            user[bad[row_number].column] = bad[row_number].value
        users.append(user)
    table = pa.Table.from_pylist(users, schema=PARQUET_SCHEMA)
    pq.write_table(table, path, compression="zstd")


def _bad_rows_table(rows: list[BadRow]) -> str:
    lines = ["| row | column | value | why it is dead-lettered |", "| --- | --- | --- | --- |"]
    for bad in rows:
        shown = repr(bad.value)
        if len(shown) > 40:
            unit = "items" if isinstance(bad.value, list) else "chars"
            shown = f"{shown[:30]}... ({len(bad.value)} {unit})"
        shown = shown.replace("|", "\\|")  # a pipe would end the Markdown table cell
        lines.append(f"| {bad.row} | {bad.column} | `{shown}` | {bad.reason} |")
    return "\n".join(lines)


def write_readme(path: Path) -> None:
    columns = ", ".join(f"`{c}`" for c in COLUMNS)
    path.write_text(
        f"""# Sample data

Generated by `scripts/make_sample_data.py` (seed {SEED}, no network); run it again to
rebuild these files byte for byte. The users are made up.

- `customers.csv`: {CSV_ROWS:,} users, every value as text the way exports write it:
  zero-padded ids (`00123`), phones with `+`, empty cells for missing values, datetimes
  with assorted UTC offsets, booleans as true/false/yes/no/1/0 in any case, interests as
  `a|b|c`, `NA` as Namibia's country code.
- `customers.parquet`: {PARQUET_ROWS:,} different users with the same columns in native types:
  int64 with nulls, float64, bool, timestamp with time zone, date32, list<string>.

Columns: {columns}.

`configs/demo.yaml` imports both files into the sandbox.

## Rows that must be dead-lettered at validation

Every other row is valid. Row numbers are 1-based data rows, header excluded, as in the
dead-letter file.

### customers.csv

{_bad_rows_table(CSV_BAD_ROWS)}

### customers.parquet

{_bad_rows_table(PARQUET_BAD_ROWS)}
""",
        encoding="utf-8",
    )


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_csv(OUT_DIR / "customers.csv", random.Random(SEED))
    write_parquet(OUT_DIR / "customers.parquet", random.Random(SEED + 1))
    write_readme(OUT_DIR / "README.md")
    print(f"wrote {CSV_ROWS} + {PARQUET_ROWS} users to {OUT_DIR}")


if __name__ == "__main__":
    main()
