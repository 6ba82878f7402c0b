"""The events ledger at scale: 10,000,000 accepted events.

`python -m scripts.bench_ledger [--events N] [--lookups N] [--folder DIR]` builds a state
file whose ledger holds N events (written as a run writes them: a transaction per
request of SETTLE_BATCH events, through `ScopedProgress.mark_settled`), then prints its
bytes per event on disk, the write rate, the feed's lookup rate through its read-only
connection (half the keys known, half new, in chunk-sized calls), and the rate at which
keys are made from event elements (content keys: parse, pick, hash).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from importer.moengage import event_element
from importer.run.exactly_once import KEY_BYTES, content_material
from importer.state import StateStore
from importer.state.events_ledger import LedgerReader, ledger_size, write_ledger

SETTLE_BATCH = 1_000  # events a request settles, about (a full bulk request of events)
FILL_BATCH = 500_000  # keys a transaction while the ledger is filled
SETTLED = 100_000  # events saved the way a run saves them, on the full ledger
LOOKUP_CHUNK = 50_000  # rows a chunk of the feed looks up at once
HASH_KEY = hashlib.sha256(b"bench").digest()


def random_keys(rng: np.random.Generator, count: int) -> list[bytes]:
    raw = rng.bytes(count * KEY_BYTES)
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


def build(path: Path, events: int) -> np.random.Generator:
    """A ledger of `events` keys, filled in large transactions (the setup, not measured)."""
    rng = np.random.default_rng(23)
    store = StateStore(path, "bench")
    db = store.database.db
    for start in range(0, events, FILL_BATCH):
        keys = random_keys(rng, min(FILL_BATCH, events - start))
        with db:
            db.execute("BEGIN")
            write_ledger(db, keys)
        if start and start % 1_000_000 == 0:
            print(f"bench_ledger: {start:,} events written", flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return np.random.default_rng(23)


def settle_rate(path: Path, events: int) -> float:
    """Events a second saved as a run saves them on the full ledger: with their rows'
    progress, a transaction per SETTLE_BATCH (one request's events)."""
    rng = np.random.default_rng(77)
    store = StateStore(path, "bench")
    keys = random_keys(rng, events)
    started = time.perf_counter()
    for at in range(0, events, SETTLE_BATCH):
        part = keys[at : at + SETTLE_BATCH]
        store.mark_settled("bench.csv", "fp", range(at + 1, at + len(part) + 1), ledger=part)
    seconds = time.perf_counter() - started
    store.database.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return events / seconds


def lookup_rate(path: Path, lookups: int, known_from: np.random.Generator) -> float:
    """Keys a second through the feed's read-only connection: half known, half new."""
    known = random_keys(known_from, lookups // 2)  # the first keys `build` wrote
    new = random_keys(np.random.default_rng(99), lookups - len(known))
    keys = known + new
    np.random.default_rng(5).shuffle(keys)
    reader = LedgerReader(path)
    started = time.perf_counter()
    found = 0
    for at in range(0, len(keys), LOOKUP_CHUNK):
        found += int(reader.known(keys[at : at + LOOKUP_CHUNK]).sum())
    seconds = time.perf_counter() - started
    reader.close()
    assert found == len(known), (found, len(known))
    return len(keys) / seconds


def key_rate(count: int) -> float:
    """Content keys a second, from encoded event elements."""
    elements = [
        orjson.dumps(
            event_element(
                f"c{i % 5000}",
                [
                    {
                        "action": "Order Placed",
                        "attributes": {"amount": i * 0.5, "sku": f"S-{i}", "qty": i % 7},
                        "platform": "web",
                        "current_time": "2024-03-01T10:00:00Z",
                    }
                ],
            )
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    for element in elements:
        hashlib.blake2b(content_material(element), digest_size=KEY_BYTES, key=HASH_KEY).digest()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench_ledger_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ledger_state.db"
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    started = time.perf_counter()
    known_from = build(path, args.events)
    filled = time.perf_counter() - started
    rate = lookup_rate(path, args.lookups, known_from)
    settled = settle_rate(path, SETTLED)
    size = os.path.getsize(path)
    db = sqlite3.connect(path)
    held = ledger_size(db)
    (pages,) = (
        db.execute("SELECT count(*) FROM dbstat WHERE name = 'events_ledger'").fetchone()
        if _has_dbstat(db)
        else (None,)
    )
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    keys = key_rate(200_000)
    table = f"; the ledger table alone {pages * page_size / held:.1f}" if pages else ""
    print(f"events ledger, {held:,} events ({folder}):")
    print(f"  state file       {size / held:.1f} bytes an event ({size / 2**20:,.0f} MiB{table})")
    print(f"  filled in        {filled:,.0f} s ({FILL_BATCH:,} keys a transaction)")
    batch = f"{SETTLE_BATCH:,} a transaction, with progress"
    print(f"  settle writes    {settled:,.0f} events/s ({batch})")
    print(f"  load average     {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores)")
    print(f"  lookups          {rate:,.0f} keys/s (read-only connection, half known)")
    print(f"  content keys     {keys:,.0f} events/s (parse, pick, hash)")
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


def _has_dbstat(db: sqlite3.Connection) -> bool:
    try:
        db.execute("SELECT 1 FROM dbstat LIMIT 1").fetchone()
    except sqlite3.Error:
        return False
    return True


if __name__ == "__main__":
    main()
