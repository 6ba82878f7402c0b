"""`make bench`: generate data, then measure moe-import side by side with the plain approach.

Prints a markdown table (and writes bench_data/results.md):
1. `validate` on a 1,000,000-row, 12-column CSV vs the plain script most teams start with
   (pandas read_csv, iterrows, a dict per row, json.dumps);
2. an unthrottled `run` into the sandbox (20 ms latency) vs a loop of requests.post per user;
3. peak memory of `validate` at 1M and 5M rows;
4. a paced run's share of the limit and its busiest window;
5. time to the first request on the 5M-row file.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data"
sys.path.insert(0, str(ROOT / "tests"))
from sandbox_proc import max_in_any_window, read_json_lines  # noqa: E402

from importer.sandbox import launched  # noqa: E402

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


def generate(rows: int, seed: int = 1) -> pd.DataFrame:
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


def ensure_data() -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    one, five = DATA / "users_1m.csv", DATA / "users_5m.csv"
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


def write_job(
    path: Path, source: Path, url: str, updates: int, period: float, **delivery: object
) -> Path:
    out = DATA / "out" / path.stem
    job = {
        "api": {"base_url": url, "workspace_id": "SANDBOX", "api_key": "sandbox-key"},
        "rate_limit": {"updates": updates, "period_seconds": period},
        "delivery": {"concurrency": 8, **delivery},
        "source": {"path": str(source)},
        "mapping": MAPPING,
        "output": {
            "dead_letter": str(out / "dead_letter.jsonl"),
            "state": str(out / "state.db"),
            "report": str(out / "report.json"),
        },
    }
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def timed_cli(*args: str) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in MB) of one CLI run, measured by wait4."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "importer", *args, "--no-progress", "--fresh"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024


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


def plain_script(source: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_SCRIPT, str(source)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[1])


@contextmanager
def sandbox(*args: str) -> Iterator[tuple[str, Path, Path]]:
    """The sandbox on a free port, logging arrivals (not users: recording costs its CPU)."""
    record, arrivals = DATA / "record.jsonl", DATA / "arrivals.jsonl"
    for path in (record, arrivals):
        path.unlink(missing_ok=True)
    with launched(["--arrivals", str(arrivals), *args], cwd=ROOT) as (_, url):
        yield url, record, arrivals


def requests_loop(url: str, users: int) -> float:
    """Users per second of the per-user requests.post loop."""
    session_less_started = time.perf_counter()
    for i in range(users):
        body = {"type": "customer", "customer_id": f"plain{i}", "attributes": {"first_name": "x"}}
        requests.post(
            f"{url}/v1/customer/SANDBOX", json=body, auth=("SANDBOX", "sandbox-key"), timeout=30
        )
    return users / (time.perf_counter() - session_less_started)


def steady_share(arrivals: list[dict], period: float, updates: int) -> float:
    """Mean users per full window (one starting at every arrival) over the limit."""
    times = np.array(sorted(a["t"] for a in arrivals))
    users = np.array([a["users"] for a in sorted(arrivals, key=lambda a: a["t"])])
    cumulative = np.concatenate(([0], np.cumsum(users)))
    starts = np.flatnonzero(times <= times[-1] - period)
    ends = np.searchsorted(times, times[starts] + period, side="left")
    per_window = cumulative[ends] - cumulative[starts]
    return float(per_window.mean()) / updates


def main() -> int:
    one, five = ensure_data()
    results: list[tuple[str, str, str, str]] = []

    print("bench: validate 1M rows ...", flush=True)
    job_1m = write_job(DATA / "validate_1m.yaml", one, "http://127.0.0.1:9", 10_000, 60)
    seconds, code, rss_1m = timed_cli("validate", str(job_1m))
    assert code in (0, 1), f"validate exited {code}"
    print("bench: plain script 1M rows ...", flush=True)
    plain = plain_script(one)
    results.append(
        (
            "validate, 1M rows x 12 columns",
            f"{1_000_000 / seconds:,.0f} rows/s ({seconds:.1f} s)",
            f"{1_000_000 / plain:,.0f} rows/s ({plain:.1f} s)",
            f"{plain / seconds:.1f}x",
        )
    )

    print("bench: validate 5M rows ...", flush=True)
    job_5m = write_job(DATA / "validate_5m.yaml", five, "http://127.0.0.1:9", 10_000, 60)
    seconds_5m, code, rss_5m = timed_cli("validate", str(job_5m))
    assert code in (0, 1), f"validate exited {code}"
    results.append(
        (
            "peak memory of validate, 1M / 5M rows",
            f"{rss_1m} MB / {rss_5m} MB",
            "",
            f"5M/1M = {rss_5m / rss_1m:.2f}",
        )
    )
    results.append(
        ("validate, 5M rows", f"{5_000_000 / seconds_5m:,.0f} rows/s ({seconds_5m:.1f} s)", "", "")
    )

    unthrottled_rows = 300_000
    subset = DATA / "users_300k.csv"
    if not subset.exists():
        with one.open("rb") as src, subset.open("wb") as dst:
            for _ in range(unthrottled_rows + 1):
                dst.write(src.readline())
    print("bench: unthrottled run into the sandbox (20 ms latency) ...", flush=True)
    # The schema check costs the sandbox about 0.5 ms a user; this run measures the importer.
    unthrottled = (
        "--latency-ms",
        "20",
        "--rate",
        "100000000",
        "--period",
        "60",
        "--no-schema-check",
    )
    with sandbox(*unthrottled) as (url, _, _):
        job = write_job(DATA / "unthrottled.yaml", subset, url, 100_000_000, 60)
        seconds, code, _ = timed_cli("run", str(job))
        assert code == 0, f"run exited {code}"
        plain_rate = requests_loop(url, 300)
    results.append(
        (
            "unthrottled run into the sandbox, 20 ms latency",
            f"{unthrottled_rows / seconds:,.0f} users/s ({seconds:.1f} s for 300k)",
            f"{plain_rate:,.0f} users/s (requests.post per user)",
            f"{unthrottled_rows / seconds / plain_rate:.0f}x",
        )
    )

    updates, period, rows = 3000, 5.0, 15_000
    paced_source = DATA / "users_15k.csv"
    with one.open("rb") as src, paced_source.open("wb") as dst:
        for _ in range(rows + 1):
            dst.write(src.readline())
    print(f"bench: paced run, {updates} updates per {period:.0f} s, {rows:,} rows ...", flush=True)
    with sandbox("--rate", str(updates), "--period", str(period)) as (url, _, arrivals_path):
        job = write_job(DATA / "paced.yaml", paced_source, url, updates, period)
        seconds, code, _ = timed_cli("run", str(job))
        assert code == 0, f"paced run exited {code}"
        arrivals = read_json_lines(arrivals_path)
    busiest = max_in_any_window(arrivals, period)
    share = steady_share(arrivals, period, updates)
    report = json.loads((DATA / "out" / "paced" / "report.json").read_text())
    results.append(
        (
            "paced run, 3,000 per 5 s, 15,000 rows",
            f"{share:.1%} of the limit per full window; busiest {period:.0f} s window "
            f"{busiest:,} (limit {updates:,})",
            "",
            f"429s: {report['http_429']}",
        )
    )

    print("bench: time to first request on the 5M-row file ...", flush=True)
    with sandbox("--rate", "100000000") as (url, _, arrivals_path):
        job = write_job(DATA / "first.yaml", five, url, 100_000_000, 60)
        started = time.time()
        process = subprocess.Popen(
            [sys.executable, "-m", "importer", "run", str(job), "--no-progress", "--fresh"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not read_json_lines(arrivals_path) and time.time() - started < 60:
            time.sleep(0.01)
        first = read_json_lines(arrivals_path)[0]["t"] - started
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    results.append(("first request on the 5M-row file", f"{first:.2f} s after start", "", ""))

    table = ["| measure | moe-import | plain approach | ratio |", "| --- | --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()}"
    )
    text = "\n".join(table) + f"\n\nMachine: {machine}. Command: `make bench`.\n"
    (DATA / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
