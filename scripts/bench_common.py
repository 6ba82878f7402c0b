"""What the benches share: the sandbox they run against, the CLI measured, job files, rates."""

from __future__ import annotations

import sys
from collections.abc import Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from importer.sandbox.launcher import launched
from scripts.measure import Measured, run_measured
from scripts.spread import Spread

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data"
UNLIMITED = 100_000_000
PACED_UPDATES, PACED_PERIOD, PACED_ROWS = 3000, 5.0, 15_000


def job_file(
    folder: Path,
    name: str,
    source: Path,
    url: str,
    updates: int,
    period: float,
    mapping: dict[str, Any],
    *,
    kind: str | None = None,
    sections: dict[str, Any] | None = None,
) -> Path:
    """`folder/name.yaml`: import `source` into the sandbox at `url`, `updates` per `period`
    over 8 connections, outputs under `folder/out/name`; `kind` sets `import:`, `sections`
    adds whole sections (`sync`, ...)."""
    out = folder / "out" / name
    job: dict[str, Any] = {} if kind is None else {"import": kind}
    job |= {
        "api": {"base_url": url, "workspace_id": "SANDBOX", "api_key": "sandbox-key"},
        "rate_limit": {"updates": updates, "period_seconds": period},
        "delivery": {"concurrency": 8},
        "source": {"path": str(source)},
        "mapping": mapping,
        "output": {
            "dead_letter": str(out / "dead_letter.jsonl"),
            "state": str(out / "state.db"),
            "report": str(out / "report.json"),
        },
    } | (sections or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def cli_argv(*args: str) -> list[str]:
    """The CLI, quiet; a run starts from nothing (a dry run keeps no progress to ignore)."""
    fresh = ["--fresh"] if args[0] in ("run", "replay") else []
    return [sys.executable, "-m", "importer", *args, "--no-progress", *fresh]


def measured_cli(*args: str, expect: Container[int] = (0,)) -> Measured:
    result = run_measured(cli_argv(*args), cwd=ROOT)
    if result.exit_code not in expect:
        tail = result.stderr[-2000:]
        raise SystemExit(f"bench: `moe-import {' '.join(args)}` exited {result.exit_code}\n{tail}")
    return result


def rate_and_time(rows: int, seconds: list[float], unit: str) -> str:
    """'190,000 rows/s (180,000–200,000); 5.3 s (5.0–5.6)'."""
    rates = Spread.of(rows / s for s in seconds).show(",.0f", f" {unit}")
    return f"{rates}; {Spread.of(seconds).show('.1f', ' s')}"


@contextmanager
def sandbox(*args: str) -> Iterator[tuple[str, Path]]:
    """The sandbox on a free port logging arrivals (not users: recording costs its CPU)."""
    arrivals = DATA / "arrivals.jsonl"
    arrivals.unlink(missing_ok=True)
    with launched(["--arrivals", str(arrivals), *args], cwd=ROOT) as (_, url):
        yield url, arrivals


def steady_share(arrivals: list[dict[str, Any]], period: float, updates: int) -> float:
    """Mean users per full window (one starting at every arrival) over the limit."""
    arrivals = sorted(arrivals, key=lambda a: a["t"])
    times = np.array([a["t"] for a in arrivals])
    cumulative = np.concatenate(([0], np.cumsum([a["users"] for a in arrivals])))
    starts = np.flatnonzero(times <= times[-1] - period)
    ends = np.searchsorted(times, times[starts] + period, side="left")
    return float((cumulative[ends] - cumulative[starts]).mean()) / updates
