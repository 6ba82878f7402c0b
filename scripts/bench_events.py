"""Events beside users: an unthrottled events run (actions/s) and a paced one's share of the limit.

`python -m scripts.bench_events [--rows N] [--runs R]` prints a markdown table:
1. per round, in one sandbox (20 ms latency, no schema check), an unthrottled users run and
   an unthrottled events run over the same number of rows, in turn (AB BA);
2. a paced events run at 3,000 events per 5 s: its share of the limit per full window and
   its busiest window, from the sandbox's arrival log (events counted, not elements).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from importer.sandbox.recording import read_json_lines
from importer.sandbox.windows import max_in_any_window
from scripts.bench_common import (
    PACED_PERIOD,
    PACED_ROWS,
    PACED_UPDATES,
    ROOT,
    UNLIMITED,
    job_file,
    measured_cli,
    rate_and_time,
    sandbox,
    steady_share,
)
from scripts.spread import Spread

DATA = ROOT / "bench_data" / "events"
ROWS_PER_CUSTOMER = 3  # an order history: placed, shipped, delivered
EVENT_MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "event": {
        "action": {"column": "event_name"},
        "time": {"column": "occurred_at"},
        "platform": {"column": "platform"},
        "attributes": {
            "amount": {"column": "amount", "type": "number"},
            "quantity": {"column": "quantity", "type": "integer"},
            "sku": "sku",
        },
    },
}
USER_MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "attributes": {
        "first_name": "first_name",
        "points": {"column": "points", "type": "integer"},
        "plan": "plan",
    },
}
_STEPS = ("Order Placed", "Order Shipped", "Order Delivered")


def events_file(rows: int) -> Path:
    """Order histories: each customer's three events in a run, in time order."""

    def line(i: int) -> str:
        customer, step = divmod(i, ROWS_PER_CUSTOMER)
        minute = step * 7 + customer % 60
        return (
            f"c{customer:07d},{_STEPS[step]},2024-03-0{1 + step}T10:{minute % 60:02d}:00Z,"
            f"web,{(customer % 500) / 10:.2f},{1 + customer % 4},SKU-{customer % 977}\n"
        )

    header = "user_id,event_name,occurred_at,platform,amount,quantity,sku\n"
    return _written_once(DATA / f"events_{rows}.csv", header, map(line, range(rows)))


def users_file(rows: int) -> Path:
    lines = (f"u{i:07d},name{i % 1000},{i % 10000},plan{i % 5}\n" for i in range(rows))
    return _written_once(DATA / f"users_{rows}.csv", "user_id,first_name,points,plan\n", lines)


def _written_once(path: Path, header: str, lines: Iterable[str]) -> Path:
    """`path` with `header` and `lines`, written the first time only (later rounds reuse it)."""
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            out.write(header)
            out.writelines(lines)
    return path


def write_job(name: str, source: Path, url: str, updates: int, period: float) -> Path:
    events = name.startswith("events")
    mapping = EVENT_MAPPING if events else USER_MAPPING
    kind = "events" if events else "users"
    return job_file(DATA, name, source, url, updates, period, mapping, kind=kind)


def unthrottled(rows: int, runs: int) -> list[tuple[str, str]]:
    users, events = users_file(rows), events_file(rows)
    user_seconds: list[float] = []
    event_seconds: list[float] = []
    for round_ in range(1, runs + 1):
        print(f"bench_events: unthrottled users and events runs, round {round_} ...", flush=True)
        args = ("--latency-ms", "20", "--rate", str(UNLIMITED), "--event-rate", str(UNLIMITED))
        with sandbox(*args, "--no-schema-check") as (url, _):
            jobs = {
                "users": write_job("users", users, url, UNLIMITED, 60),
                "events": write_job("events", events, url, UNLIMITED, 60),
            }
            seconds: dict[str, list[float]] = {"users": [], "events": []}
            for name in ("users", "events", "events", "users"):  # AB BA: drift cancels out
                seconds[name].append(measured_cli("run", str(jobs[name])).seconds)
        user_seconds.append(statistics.mean(seconds["users"]))
        event_seconds.append(statistics.mean(seconds["events"]))
    share = Spread.of(u / e for u, e in zip(user_seconds, event_seconds, strict=True))
    return [
        (f"unthrottled users run, {rows:,} users", rate_and_time(rows, user_seconds, "users/s")),
        (
            f"unthrottled events run, {rows:,} events ({ROWS_PER_CUSTOMER} per customer)",
            rate_and_time(rows, event_seconds, "events/s")
            + f"; {share.show('.2f')} of the users rate",
        ),
    ]


def paced(runs: int) -> list[tuple[str, str]]:
    source = events_file(PACED_ROWS)
    shares: list[float] = []
    busiest: list[int] = []
    for round_ in range(1, runs + 1):
        print(f"bench_events: paced events run, round {round_} ...", flush=True)
        args = ("--event-rate", str(PACED_UPDATES), "--period", str(PACED_PERIOD))
        with sandbox(*args) as (url, log):
            job = write_job("events_paced", source, url, PACED_UPDATES, PACED_PERIOD)
            measured_cli("run", str(job))
            arrivals = [{**a, "users": a["events"]} for a in read_json_lines(log)]
        shares.append(steady_share(arrivals, PACED_PERIOD, PACED_UPDATES))
        busiest.append(max_in_any_window(arrivals, PACED_PERIOD))
    return [
        (
            f"paced events run, {PACED_UPDATES:,} events per {PACED_PERIOD:.0f} s, "
            f"{PACED_ROWS:,} events",
            f"{Spread.of(s * 100 for s in shares).show('.1f', '%')} of the limit per full "
            f"window; busiest window {Spread.of(busiest).show(',.0f')} (limit {PACED_UPDATES:,})",
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_events", description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = [*unthrottled(args.rows, args.runs), *paced(args.runs)]
    table = ["| measurement | result |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)]
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
