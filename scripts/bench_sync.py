"""Incremental sync at scale: a 5,000,000-row export, 1% changed, against a 5M snapshot.

`python -m scripts.bench_sync [--rows N] [--folder DIR]` prints the diff's rows/s (read,
map, fingerprint, look up: `validate` in changed mode, and the real `run` against the
sandbox, which also saves progress and sends the changed rows), each command's peak
memory, the state file's bytes per customer, a plain full `validate` beside them, and
the nightly run time at MoEngage's limit either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from importer import sources
from importer.config import load_job, with_overrides
from importer.run import batching, ordering
from importer.run.preflight import job_scope, mapper_for
from importer.run.slices import in_slice, sliced_outputs
from importer.run.sync import CustomerKeys, fingerprints
from importer.sandbox.launcher import launched
from importer.state import StateStore
from scripts.bench_common import job_file
from scripts.bench_data import MAPPING, generate
from scripts.measure import Measured, run_measured

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 1_000_000
LIMIT_PER_MINUTE = 10_000  # MoEngage's default: 10,000 user updates a minute


def write_exports(folder: Path, rows: int, changed_share: float) -> tuple[Path, Path, int]:
    """night1.csv (`rows` distinct users) and night2.csv (the same, `changed_share` of the
    rows with other loyalty points); written once, in blocks so memory stays small."""
    night_1, night_2 = folder / f"night1_{rows}.csv", folder / f"night2_{rows}.csv"
    changed_file = folder / f"changed_{rows}.json"
    if night_1.exists() and night_2.exists() and changed_file.exists():
        return night_1, night_2, int(json.loads(changed_file.read_text()))
    rng = np.random.default_rng(11)
    changed = 0
    for block, start in enumerate(range(0, rows, BLOCK)):
        count = min(BLOCK, rows - start)
        print(f"bench_sync: generating rows {start + 1:,}-{start + count:,} ...", flush=True)
        frame = generate(count, seed=block + 1)
        frame["user_id"] = np.char.zfill(np.arange(start + 1, start + count + 1).astype(str), 9)
        first = block == 0
        frame.to_csv(night_1, index=False, mode="w" if first else "a", header=first)
        moved = rng.random(count) < changed_share
        frame.loc[moved, "loyalty_points"] = (50_000 + np.arange(int(moved.sum()))).astype(str)
        changed += int(moved.sum())
        frame.to_csv(night_2, index=False, mode="w" if first else "a", header=first)
    changed_file.write_text(str(changed))
    return night_1, night_2, changed


def write_job_file(folder: Path, url: str, mode: str, night_1: Path) -> Path:
    """The job in `sync.mode` `mode`, unthrottled; its outputs under `folder/out/job_<mode>`
    (each command names its input with --input)."""
    return job_file(
        folder,
        f"job_{mode}",
        night_1,
        url,
        10_000_000,
        60,
        MAPPING,
        sections={"sync": {"mode": mode}},
    )


def build_snapshot(job_path: Path, night_1: Path, slicing: str | None = None) -> int:
    """The snapshot a night-1 run would leave: every row accepted (written directly, in key
    order, as the bench's starting point); with `slicing` ("K/N"), that slice's, in its own
    state file. Returns the customers recorded."""
    job = load_job(str(job_path), need_credentials=False, overrides={"slice": slicing})
    if job.slice is not None:
        job = with_overrides(job, {"output": sliced_outputs(job)}, need_credentials=False)
    mapper = mapper_for(job)
    keys_of = CustomerKeys(job.mapping.identifiers)
    keys: list[np.ndarray] = []
    prints: list[np.ndarray] = []
    print("bench_sync: building the night-1 snapshot ...", flush=True)
    for chunk in sources.iter_chunks(night_1, job.source, mapper.columns):
        if job.slice is not None and job.mapping.customer_id is not None:
            chunk = in_slice(chunk, job.mapping.customer_id, False, *job.slice_parts() or (0, 1))
        valid = mapper.map_chunk(chunk).valid
        encoded, ids = batching.encoded_of(valid), ordering.customer_ids(valid)
        hashed, _ = keys_of.hashes(ids, encoded)
        keys.append(hashed)
        prints.append(fingerprints(encoded))
    all_keys, all_prints = np.concatenate(keys), np.concatenate(prints)
    order = np.argsort(all_keys)
    store = StateStore(job.output.state, job_scope(job))
    store.close()
    db = sqlite3.connect(job.output.state)
    with db:
        db.execute("INSERT OR IGNORE INTO snapshot_scopes(scope) VALUES (?)", (job_scope(job),))
        (scope_id,) = db.execute(
            "SELECT id FROM snapshot_scopes WHERE scope = ?", (job_scope(job),)
        ).fetchone()
        db.executemany(
            "INSERT OR REPLACE INTO snapshot(scope_id, customer, fingerprint) VALUES (?, ?, ?)",
            (
                (scope_id, int(k), int(f))
                for k, f in zip(all_keys[order], all_prints[order], strict=True)
            ),
        )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    db.close()
    return len(all_keys)


def measure(job: Path, args: list[str]) -> tuple[Measured, dict[str, Any]]:
    argv = [sys.executable, "-m", "importer", *args, "--no-progress"]
    measured = run_measured(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if measured.exit_code not in (0, 1):
        raise SystemExit(
            f"bench_sync: {' '.join(args)} exited {measured.exit_code}\n{measured.stderr[-3000:]}"
        )
    # A dry run (validate) writes its report beside the real one, never over it.
    report = "report.dry-run.json" if args[0] == "validate" else "report.json"
    return measured, json.loads(
        (load_job(str(job), need_credentials=False).output.report.parent / report).read_text()
    )


def line(name: str, rows: int, measured: Measured) -> str:
    return (
        f"  {name:<40} {rows / measured.seconds:>10,.0f} rows/s  {measured.seconds:>6.1f} s"
        f"  peak {measured.peak_mib:>6,.0f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench_sync")
    parser.add_argument("--no-run", action="store_true", help="leave out the real run")
    options = parser.parse_args()
    folder: Path = options.folder
    folder.mkdir(parents=True, exist_ok=True)
    night_1, night_2, changed = write_exports(folder, options.rows, options.changed)
    sandbox_args = ["--port", "0", "--rate", "100000000", "--no-schema-check"]
    with launched(sandbox_args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}) as (_, url):
        changed_job = write_job_file(folder, url, "changed", night_1)
        plain_job = write_job_file(folder, url, "all", night_1)
        state = load_job(str(changed_job), need_credentials=False).output.state
        for stale in state.parent.glob(f"{state.name}*"):
            stale.unlink()
        customers = build_snapshot(changed_job, night_1)
        state_bytes = sum(p.stat().st_size for p in state.parent.glob(f"{state.name}*"))
        print("bench_sync: measuring ...", flush=True)
        plain, _ = measure(plain_job, ["validate", str(plain_job), "--input", str(night_2)])
        diff, report = measure(changed_job, ["validate", str(changed_job), "--input", str(night_2)])
        would_send, unchanged = report["rows_pending"], report["rows_unchanged"]
        real: tuple[Measured, dict[str, Any]] | None = None
        if not options.no_run:
            real = measure(changed_job, ["run", str(changed_job), "--input", str(night_2)])
    rows = options.rows
    print(
        f"\nincremental sync, {rows:,} rows ({changed:,} changed) against {customers:,} customers"
    )
    print(line("plain validate (sync.mode all)", rows, plain))
    print(line("diff: validate, sync.mode changed", rows, diff))
    if real is not None:
        measured, run_report = real
        print(line("diff + send: run, sync.mode changed", rows, measured))
        print(
            f"    run: accepted {run_report['rows_accepted']:,}, unchanged"
            f" {run_report['rows_unchanged']:,}, absent {run_report['customers_absent']:,}"
        )
    print(f"  would send {would_send:,}, unchanged {unchanged:,}")
    print(f"  state file: {state_bytes:,} bytes, {state_bytes / customers:.1f} bytes per customer")
    full_hours = rows / LIMIT_PER_MINUTE / 60
    diff_minutes = would_send / LIMIT_PER_MINUTE + diff.seconds / 60
    print(
        f"  nightly at {LIMIT_PER_MINUTE:,}/min: full load {full_hours:.1f} h;"
        f" changed only {diff_minutes:.1f} min (diff {diff.seconds:.0f} s + sending)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
