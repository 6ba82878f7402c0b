"""`make bench`: moe-import beside the plain approach, each figure the median of 3 runs.

Prints a markdown table the README takes verbatim (also bench_data/results.md):
1. `validate` on a 1,000,000-row, 12-column CSV beside the plain script most teams start
   with (pandas read_csv, iterrows, a dict per row, json.dumps), the two run in turn;
2. `validate` on 5,000,000 rows, and each command's own peak memory (scripts/measure.py);
3. an unthrottled `run` into the sandbox (20 ms latency) beside a requests.post loop;
4. a history export (3 rows per customer, newest last) run the same way, in turn with 3
   (ABBA BAAB): what keeping each customer's rows in file order costs;
5. a paced run's share of the limit and its busiest window;
6. the time to the first request on the 5M-row file.
Every ratio pairs two figures from the same round, never medians from different rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from importer.sandbox.recording import read_json_lines
from importer.sandbox.windows import max_in_any_window
from scripts.bench_common import (
    DATA,
    PACED_PERIOD,
    PACED_ROWS,
    PACED_UPDATES,
    ROOT,
    UNLIMITED,
    cli_argv,
    job_file,
    measured_cli,
    rate_and_time,
    sandbox,
    steady_share,
)
from scripts.bench_data import (
    HISTORY_VERSIONS,
    MAPPING,
    head,
    history_file,
    users_files,
)
from scripts.measure import Measured, run_measured
from scripts.spread import Spread

NO_API = "http://127.0.0.1:9"  # validate sends nothing
DELIVERY_ROWS = 300_000
HISTORY_CUSTOMERS = DELIVERY_ROWS // HISTORY_VERSIONS
_A, _B = "unthrottled", "history"
DELIVERY_ORDER = (_A, _B, _B, _A, _B, _A, _A, _B)  # ABBA BAAB: drift cancels out
HISTORY_FLOOR = 0.80  # issue 8: ordering may cost at most 20% of the plain rate
REQUESTS_USERS = 300
GNU_TIME = Path("/usr/bin/time")

TableRow = tuple[str, str, str, str]


def write_job(name: str, source: Path, url: str, updates: int, period: float) -> Path:
    return job_file(DATA, name, source, url, updates, period, MAPPING)


def report_of(name: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((DATA / "out" / name / "report.json").read_text())
    return report


PLAIN_SCRIPT = """
import json, sys, time
import pandas as pd
started = time.perf_counter()
frame = pd.read_csv(sys.argv[1])
count = 0
for _, row in frame.iterrows():
    element = {"type": "customer", "customer_id": str(row["user_id"]), "attributes": {
        k: v for k, v in row.items() if k != "user_id" and not pd.isna(v)}}
    json.dumps(element, default=str)
    count += 1
print(count, time.perf_counter() - started)
"""


@dataclass(frozen=True)
class PlainRun:
    seconds: float  # as the script reports it: reading and the loop, imports excluded
    measured: Measured


def plain_script(source: Path) -> PlainRun:
    stdout = DATA / "plain_script.out"
    result = run_measured(
        [sys.executable, "-c", PLAIN_SCRIPT, str(source)], cwd=ROOT, stdout=stdout
    )
    if result.exit_code != 0:
        raise SystemExit(f"bench: the plain script exited {result.exit_code}\n{result.stderr}")
    return PlainRun(float(stdout.read_text().split()[1]), result)


def validate_side_by_side(one: Path, runs: int) -> tuple[list[Measured], list[PlainRun]]:
    job = write_job("validate_1m", one, NO_API, 10_000, 60)
    ours: list[Measured] = []
    plain: list[PlainRun] = []
    for round_ in range(1, runs + 1):
        print(f"bench: validate 1M rows, then the plain script, round {round_} ...", flush=True)
        ours.append(measured_cli("validate", str(job), expect=(0, 1)))
        plain.append(plain_script(one))
    return ours, plain


def validate_rows(
    ours_1m: list[Measured], plain_1m: list[PlainRun], ours_5m: list[Measured]
) -> list[TableRow]:
    plain_seconds = [p.seconds for p in plain_1m]
    return [
        (
            "validate, 1M rows x 12 columns",
            rate_and_time(1_000_000, [m.seconds for m in ours_1m], "rows/s"),
            rate_and_time(1_000_000, plain_seconds, "rows/s"),
            Spread.of(p / m.seconds for m, p in zip(ours_1m, plain_seconds, strict=True)).show(
                ".1f", "x"
            ),
        ),
        (
            "validate, 5M rows",
            rate_and_time(5_000_000, [m.seconds for m in ours_5m], "rows/s"),
            "",
            "",
        ),
        (
            "peak memory of validate, 1M / 5M rows",
            f"{peak(ours_1m)} / {peak(ours_5m)}",
            f"1M rows: {peak([p.measured for p in plain_1m])}",
            "5M/1M = "
            + Spread.of(
                five.peak_mib / one.peak_mib for one, five in zip(ours_1m, ours_5m, strict=True)
            ).show(".2f"),
        ),
    ]


def validate_5m(five: Path, runs: int) -> list[Measured]:
    job = write_job("validate_5m", five, NO_API, 10_000, 60)
    measures = []
    for round_ in range(1, runs + 1):
        print(f"bench: validate 5M rows, round {round_} ...", flush=True)
        measures.append(measured_cli("validate", str(job), expect=(0, 1)))
    return measures


def peak(measures: list[Measured]) -> str:
    return Spread.of(m.peak_mib for m in measures).show(",.0f", " MiB")


def requests_loop(url: str, users: int) -> float:
    """Users per second of a requests.post loop, one user per request, no session."""
    started = time.perf_counter()
    for i in range(users):
        body: dict[str, Any] = {
            "type": "customer",
            "customer_id": f"plain{i}",
            "attributes": {"first_name": "x"},
        }
        requests.post(
            f"{url}/v1/customer/SANDBOX", json=body, auth=("SANDBOX", "sandbox-key"), timeout=30
        )
    return users / (time.perf_counter() - started)


def delivery(distinct: Path, history: Path, runs: int) -> list[TableRow]:
    """Per round, in one sandbox: distinct customers (A) and the history export (B) four
    times each in the order ABBA BAAB, so a host slowing down or speeding up mid-round
    cancels out of the ratio; then the requests.post loop. A round's time for each file is
    the mean of its four runs: on a shared host single runs of either vary by 30%."""
    plain: list[Measured] = []
    ordered: list[Measured] = []
    plain_seconds: list[float] = []
    ordered_seconds: list[float] = []
    loop_rates: list[float] = []
    duplicates: set[int] = set()
    for round_ in range(1, runs + 1):
        print(
            f"bench: unthrottled runs into the sandbox (20 ms latency), round {round_} ...",
            flush=True,
        )
        # The schema check costs the sandbox about 0.5 ms a user; these runs measure the importer.
        unthrottled = ("--latency-ms", "20", "--rate", str(UNLIMITED), "--period", "60")
        with sandbox(*unthrottled, "--no-schema-check") as (url, _):
            jobs = {
                "unthrottled": write_job("unthrottled", distinct, url, UNLIMITED, 60),
                "history": write_job("history", history, url, UNLIMITED, 60),
            }
            this_round: dict[str, list[Measured]] = {name: [] for name in jobs}
            for name in DELIVERY_ORDER:
                this_round[name].append(measured_cli("run", str(jobs[name])))
            if "duplicate_customers" in (report := report_of("history")):
                duplicates.add(int(report["duplicate_customers"]))
            loop_rates.append(requests_loop(url, REQUESTS_USERS))
        plain += this_round["unthrottled"]
        ordered += this_round["history"]
        plain_seconds.append(statistics.mean(m.seconds for m in this_round["unthrottled"]))
        ordered_seconds.append(statistics.mean(m.seconds for m in this_round["history"]))
    plain_rates = [DELIVERY_ROWS / s for s in plain_seconds]
    ordered_rates = [DELIVERY_ROWS / s for s in ordered_seconds]
    history_share = Spread.of(o / p for o, p in zip(ordered_rates, plain_rates, strict=True))
    verdict = "meets" if history_share.median >= HISTORY_FLOOR else "MISSES"
    return [
        (
            "unthrottled run into the sandbox, 20 ms latency, 300k customers",
            rate_and_time(DELIVERY_ROWS, plain_seconds, "users/s"),
            f"requests.post per user: {Spread.of(loop_rates).show(',.0f', ' users/s')}",
            Spread.of(p / r for p, r in zip(plain_rates, loop_rates, strict=True)).show(
                ",.0f", "x"
            ),
        ),
        (
            f"history export the same way: {DELIVERY_ROWS // 1000}k rows, "
            f"{HISTORY_VERSIONS} per customer, newest last",
            rate_and_time(DELIVERY_ROWS, ordered_seconds, "rows/s") + counted(duplicates),
            "",
            f"{history_share.show('.2f')} of the row above "
            f"({verdict} the {HISTORY_FLOOR:.2f} floor)",
        ),
        (
            "peak memory of run, 300k rows / history export",
            f"{peak(plain)} / {peak(ordered)}",
            "",
            "",
        ),
    ]


def counted(duplicates: set[int]) -> str:
    """The report's duplicate_customers, once the code counts them (issue 8)."""
    if not duplicates:
        return ""
    return "; duplicate_customers " + " / ".join(f"{d:,}" for d in sorted(duplicates))


def paced(source: Path, runs: int) -> list[TableRow]:
    shares: list[float] = []
    busiest: list[int] = []
    too_many: list[int] = []
    for round_ in range(1, runs + 1):
        print(
            f"bench: paced run, {PACED_UPDATES} updates per {PACED_PERIOD:.0f} s, "
            f"{PACED_ROWS:,} rows, round {round_} ...",
            flush=True,
        )
        with sandbox("--rate", str(PACED_UPDATES), "--period", str(PACED_PERIOD)) as (url, log):
            job = write_job("paced", source, url, PACED_UPDATES, PACED_PERIOD)
            measured_cli("run", str(job))
            arrivals = read_json_lines(log)
        shares.append(steady_share(arrivals, PACED_PERIOD, PACED_UPDATES))
        busiest.append(max_in_any_window(arrivals, PACED_PERIOD))
        too_many.append(int(report_of("paced")["http_429"]))
    return [
        (
            f"paced run, {PACED_UPDATES:,} per {PACED_PERIOD:.0f} s, {PACED_ROWS:,} rows",
            f"{Spread.of(s * 100 for s in shares).show('.1f', '%')} of the limit per full window; "
            f"busiest {PACED_PERIOD:.0f} s window {Spread.of(busiest).show(',.0f')} "
            f"(limit {PACED_UPDATES:,})",
            "",
            f"429s: {Spread.of(too_many).show(',.0f')}",
        )
    ]


def first_request(five: Path, runs: int) -> list[TableRow]:
    """Seconds from starting `run` on the 5M-row file to the sandbox seeing a request."""
    delays = []
    for round_ in range(1, runs + 1):
        print(
            f"bench: time to the first request on the 5M-row file, round {round_} ...", flush=True
        )
        with sandbox("--rate", str(UNLIMITED)) as (url, log):
            job = write_job("first", five, url, UNLIMITED, 60)
            started = time.time()
            process = subprocess.Popen(
                cli_argv("run", str(job)),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not read_json_lines(log) and time.time() - started < 60:
                time.sleep(0.01)
            arrivals = read_json_lines(log)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        if not arrivals:
            raise SystemExit("bench: no request reached the sandbox within 60 s")
        delays.append(float(arrivals[0]["t"]) - started)
    return [
        (
            "first request on the 5M-row file",
            f"{Spread.of(delays).show('.2f', ' s')} after start",
            "",
            "",
        )
    ]


def memory_cross_check(ours_1m: list[Measured]) -> str:
    """validate 1M once more, under GNU time -v, which also reports the command's own peak."""
    sampled = Spread.of(m.sampled_peak_mib or 0 for m in ours_1m)
    ours = (
        f"the rounds above: {peak(ours_1m)} by wait4 from the launcher, "
        f"{sampled.show(',.0f', ' MiB')} by VmHWM sampled every 50 ms"
    )
    if not GNU_TIME.exists():
        return f"Memory cross-check: {ours}; /usr/bin/time is not installed, so no third figure."
    print("bench: validate 1M rows under /usr/bin/time -v ...", flush=True)
    job = DATA / "validate_1m.yaml"
    timed = run_measured([str(GNU_TIME), "-v", *cli_argv("validate", str(job))], cwd=ROOT)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr)
    if found is None:
        return f"Memory cross-check: {ours}; /usr/bin/time -v printed no maximum resident set."
    return (
        f"Memory cross-check, validate 1M: /usr/bin/time -v {int(found.group(1)) / 1024:,.0f} MiB "
        f"and this bench's launcher {timed.peak_mib:,.0f} MiB for one run; {ours}."
    )


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return (
        f"{commit} (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else commit
    )


def machine() -> str:
    memory = ""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores{memory}, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def spread_note(runs: int) -> str:
    if runs == 1:
        return "Each figure is from a single round (`--runs 1`)."
    return (
        f"Each figure is the median of {runs} rounds with the lowest and highest in brackets; "
        "each ratio pairs two figures of one round."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per figure (default 3)")
    runs = parser.parse_args().runs
    started, load_before = time.monotonic(), os.getloadavg()[0]
    when = datetime.now(UTC)
    one, five = users_files(DATA)
    distinct = head(one, DELIVERY_ROWS, DATA / f"users_{DELIVERY_ROWS // 1000}k.csv")
    history = history_file(DATA, HISTORY_CUSTOMERS)
    paced_source = head(one, PACED_ROWS, DATA / f"users_{PACED_ROWS // 1000}k.csv")

    ours_1m, plain_1m = validate_side_by_side(one, runs)
    ours_5m = validate_5m(five, runs)
    rows = validate_rows(ours_1m, plain_1m, ours_5m)
    rows += delivery(distinct, history, runs)
    rows += paced(paced_source, runs)
    rows += first_request(five, runs)
    cross_check = memory_cross_check(ours_1m)

    minutes = (time.monotonic() - started) / 60
    table = ["| measure | moe-import | plain approach | ratio |", "| --- | --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    notes = [
        f"Command `make bench`, {when:%Y-%m-%d %H:%M} UTC, commit {git_commit()}. "
        f"{spread_note(runs)} Peak memory is the command's own maximum resident set after "
        "its exec.",
        f"Machine: {machine()}; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; the bench took {minutes:.1f} minutes.",
        cross_check,
    ]
    text = "\n".join(table) + "\n\n" + "\n\n".join(notes) + "\n"
    (DATA / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
