"""Customer-hash slices (`slice: K/N`): which rows a slice maps, where its outputs go, and
whether its saved state was made with the same N.

A customer always falls in one slice, so N slices together send what one run would, each
customer's rows in file order. The hash is SipHash-2-4 (pandas' `hash_array`, its fixed
key) of the customer_id as sent (`mapping.identity.sent_ids`: a Parquet integer 123 and a
CSV "123" are one customer), taken modulo N. Rows with no id and malformed CSV records
belong to slice 0, so that across the slices every row is read, and counted, exactly once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from importer.config import ConfigError, JobConfig
from importer.mapping.identity import sent_ids
from importer.rows import Chunk, RowFilter

PathLike = TypeVar("PathLike", str, Path)

_SLICED_NAME = re.compile(r"^(?P<stem>.*)\.slice-(?P<k>\d+)-of-(?P<n>\d+)(?P<suffix>\.[^.]*)?$")


def slice_path(path: PathLike, k: int, n: int) -> PathLike:
    """`.slice-K-of-N` before the suffix (`out/state.db` -> `out/state.slice-2-of-4.db`), for a
    local Path and an `s3://bucket/key` string alike; the one place slice outputs are named."""
    text = str(path)
    folder, _, name = text.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    if not stem:  # no suffix (or a dot file): the mark goes at the end
        stem, dot, suffix = name, "", ""
    sliced = f"{stem}.slice-{k}-of-{n}{dot}{suffix}"
    joined = f"{folder}/{sliced}" if folder or text.startswith("/") else sliced
    return Path(joined) if isinstance(path, Path) else joined


def sliced_outputs(job: JobConfig) -> dict[str, str]:
    """The job's output paths for its slice (an override of the `output:` section)."""
    parts = job.slice_parts()
    if parts is None:
        return {}
    k, n = parts
    output = job.output
    paths = {"state": output.state, "dead_letter": output.dead_letter, "report": output.report}
    if output.metrics is not None:
        paths["metrics"] = output.metrics
    return {name: str(slice_path(path, k, n)) for name, path in paths.items()}


def slots(ids: pa.Array, n: int) -> np.ndarray:
    """Each id's slice (0 to n-1); a missing id is slice 0."""
    result = np.zeros(len(ids), dtype=np.int64)
    if n == 1:
        return result
    present = ids.is_valid().to_numpy(zero_copy_only=False)
    texts = (ids if ids.null_count == 0 else ids.filter(present)).to_numpy(zero_copy_only=False)
    if len(texts):
        hashed = pd.util.hash_array(texts.astype(object, copy=False), categorize=False)
        result[present] = (hashed % np.uint64(n)).astype(np.int64)
    return result


def slice_filter(column: str, strip: bool, k: int, n: int) -> RowFilter:
    """The reader's filter of slice k of n: the rows whose sent customer_id hashes to k;
    malformed records (no id to hash) are slice 0's."""

    def keep(cells: pd.Series) -> np.ndarray:
        return slots(sent_ids(cells, strip, check_lossy=False), n) == k

    return RowFilter(column, keep, keep_malformed=k == 0)


def job_filter(job: JobConfig) -> RowFilter | None:
    """The row filter of a sliced job (None: every row is the run's)."""
    parts, column = job.slice_parts(), job.mapping.customer_id
    if parts is None or column is None:
        return None
    return slice_filter(column, job.mapping.strip_customer_id, *parts)


def in_slice(chunk: Chunk, column: str, strip: bool, k: int, n: int) -> Chunk:
    """The chunk's rows of slice k (filtered on the id column alone, before mapping)."""
    return slice_filter(column, strip, k, n).apply(chunk)


def check_slicing(job: JobConfig, *, fresh: bool) -> None:
    """Refuse (exit 2) a run whose state file of another N is newer than its own: its
    progress, snapshot and delete list hold other customers, so comparing with them would
    resend or delete the wrong ones. `--fresh` starts this slicing over.

    Local state files only; a state in object storage is not compared here."""
    state = job.output.state
    if fresh or str(state).startswith("s3://") or not state.parent.is_dir():
        return
    parts = job.slice_parts()
    k, n = parts if parts is not None else (0, 1)
    base = _unsliced(state) if parts is not None else state
    own = _mtime(state)
    for other, made_with in _siblings(base):
        if made_with != n and _mtime(other) > own:
            raise ConfigError(
                f"the state {other} was made with {made_with} slice(s), this run has {n}"
                f" (slice {k}/{n}): its progress and snapshot hold other customers' rows;"
                f" run with --fresh to start over with {n}, or keep slice: K/{made_with}"
            )


def _unsliced(path: Path) -> Path:
    match = _SLICED_NAME.match(path.name)
    if match is None:
        return path
    return path.with_name(match.group("stem") + (match.group("suffix") or ""))


def _siblings(base: Path) -> list[tuple[Path, int]]:
    """State files of `base`'s job: itself (1 slice) and each slice file, with their N."""
    found = [(base, 1)] if base.exists() else []
    stem, suffix = (base.stem, base.suffix) if base.suffix else (base.name, "")
    for path in base.parent.glob(f"{glob_escape(stem)}.slice-*-of-*{glob_escape(suffix)}"):
        match = _SLICED_NAME.match(path.name)
        if match is not None and match.group("stem") == stem:
            found.append((path, int(match.group("n"))))
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")
