"""Customer-hash slices (`slice: K/N`): which rows a slice maps, where its outputs go, and
whether its saved state was made with the same N.

A customer always falls in one slice, so N slices together send what one run would, each
customer's rows in file order. The hash is SipHash-2-4 (pandas' `hash_array`, its fixed
key) of the customer_id as sent (`mapping.identity.sent_ids`: a Parquet integer 123 and a
CSV "123" are one customer), taken modulo N. Rows with no id and malformed CSV records
belong to slice 0, so that across the slices every row is read, and counted, exactly once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from importer.config import ConfigError, JobConfig, with_overrides
from importer.mapping.identity import sent_ids
from importer.outputs.location import object_url, shown
from importer.remote.store import RemoteStore
from importer.rows import Chunk, RowFilter

PathLike = TypeVar("PathLike", str, Path)

_SLICE_MARK = re.compile(r"\.slice-(?P<k>\d+)-of-(?P<n>\d+)\.")
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
    # An object's URL as written (s3://...: its Path would say s3:/...).
    return {name: slice_path(shown(path), k, n) for name, path in paths.items()}


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
        mine: np.ndarray = slots(sent_ids(cells, strip, check_lossy=False), n) == k
        return mine

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
    """Refuse (exit 2) a run whose state of another N is newer than its own: its progress,
    snapshot and delete list hold other customers, so comparing with them would resend or
    delete the wrong ones. `--fresh` starts this slicing over. Local state files are
    compared by mtime, objects in storage (s3://) by their LastModified."""
    if fresh:
        return
    parts = job.slice_parts()
    k, n = parts if parts is not None else (0, 1)
    found = state_files(job)
    own = max((at for name, _, at in found if name == shown(job.output.state)), default=-math.inf)
    for other, made_with, modified in found:
        if made_with != n and modified > own:
            raise ConfigError(
                f"the state {shown(other)} was made with {made_with} slice(s), this run has {n}"
                f" (slice {k}/{n}): its progress and snapshot hold other customers' rows;"
                f" run with --fresh to start over with {n}, or keep slice: K/{made_with}"
            )


def state_files(job: JobConfig) -> list[tuple[str, int, float]]:
    """The job's state files, sliced or not: (path or s3:// URL, the N it was made with,
    when it was last written)."""
    state = job.output.state
    parts = job.slice_parts()
    base = _unsliced(state.name) if parts is not None else state.name
    stem, dot, suffix = base.rpartition(".")
    stem, suffix = (stem, dot + suffix) if stem else (base, "")
    url = object_url(state)
    if url is not None:
        folder = url.rpartition("/")[0]
        listed = RemoteStore(job.output.storage).listed(f"{folder}/{stem}")
    elif state.parent.is_dir():
        pattern = f"{glob_escape(stem)}*{glob_escape(suffix)}"
        listed = [(str(path), _mtime(path)) for path in state.parent.glob(pattern)]
    else:
        return []
    found = []
    for name, modified in listed:
        leaf = name.rpartition("/")[2]
        match = _SLICED_NAME.match(leaf)
        if leaf == base:
            found.append((name, 1, modified))
        elif match is not None and (match.group("stem"), match.group("suffix") or "") == (
            stem,
            suffix,
        ):
            found.append((name, int(match.group("n")), modified))
    return found


def slicing_of(job: JobConfig) -> int | None:
    """How many slices a job's memory is in: the N of its `slice:`, else that of its newest
    sliced state files (None: the job's memory is one unsliced state)."""
    parts = job.slice_parts()
    if parts is not None:
        return parts[1]
    newest = max(state_files(job), key=lambda found: found[2], default=None)
    return None if newest is None or newest[1] == 1 else newest[1]


def slice_jobs(job: JobConfig, n: int, *, need_credentials: bool = False) -> list[JobConfig]:
    """Slices 0..n-1 of the job, each with its own outputs (X.slice-K-of-N.*)."""
    jobs = []
    for k in range(n):
        one = with_overrides(job, {"slice": f"{k}/{n}"}, need_credentials=need_credentials)
        outputs = {"output": sliced_outputs(one)}
        jobs.append(with_overrides(one, outputs, need_credentials=need_credentials))
    return jobs


def slice_in_name(path: Path) -> str | None:
    """ "K/N" when a file's name says it is a slice's (dead_letter.slice-1-of-4.jsonl, and a
    replay's dead_letter.slice-1-of-4.replay.jsonl)."""
    match = _SLICE_MARK.search(path.name)
    return None if match is None else f"{match.group('k')}/{match.group('n')}"


def _unsliced(name: str) -> str:
    match = _SLICED_NAME.match(name)
    return name if match is None else match.group("stem") + (match.group("suffix") or "")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -math.inf
