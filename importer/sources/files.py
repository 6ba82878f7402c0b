"""Where input files are: local paths, directories, globs and s3:// prefixes -> `DataFile`s."""

from __future__ import annotations

import glob
import hashlib
import stat
from pathlib import Path

from importer.config import SourceFormat, StorageOptions
from importer.sources.datafile import (
    TEXT_SUFFIXES,
    DataFile,
    SourceError,
    as_data_file,
    glob_root,
    hive_partitions,
    is_marker,
    is_remote,
    local_file,
    wanted,
)
from importer.sources.objectstore import ObjectStore


def discover(
    path: str, fmt: SourceFormat = SourceFormat.AUTO, storage: StorageOptions | None = None
) -> list[DataFile]:
    """The files `path` names: a file, a directory's data files (searched recursively), or a
    glob; local or s3://. Sorted by name."""
    if is_remote(path):
        return ObjectStore.for_options(storage or StorageOptions()).discover(path, fmt)
    return _discover_local(path, fmt)


def _discover_local(path: str, fmt: SourceFormat) -> list[DataFile]:
    target = Path(path).expanduser()
    if target.is_file():
        return [local_file(target)]
    if target.is_dir():
        found = [
            p
            for p in sorted(target.rglob("*"))
            if p.is_file() and not is_marker(p.relative_to(target).parts)
        ]
        files = [f for f in (_located(p, target) for p in found) if wanted(f, fmt)]
        if not files:
            hint = ""
            if fmt == SourceFormat.AUTO and any(
                p.name.lower().endswith(TEXT_SUFFIXES) for p in found
            ):
                hint = (
                    f" (to read its {', '.join(TEXT_SUFFIXES[:2])} files, set source.format: csv)"
                )
            raise SourceError(f"no CSV or Parquet files in directory {target}{hint}")
        return files
    if target.exists():
        raise SourceError(_not_regular(target))
    matches = sorted(Path(p) for p in glob.glob(str(target), recursive=True))
    root = glob_root(str(target))
    files = [
        _located(p, Path(root))
        for p in matches
        if p.is_file() and not is_marker(_relative_parts(p, Path(root)))
    ]
    if not files:
        special = [p for p in matches if p.exists() and not p.is_dir()]
        raise SourceError(_not_regular(special[0]) if special else f"no files match {path}")
    return files


def _relative_parts(path: Path, root: Path) -> tuple[str, ...]:
    try:
        return path.relative_to(root).parts
    except ValueError:
        return (path.name,)


def _located(path: Path, root: Path) -> DataFile:
    return local_file(path, hive_partitions(_relative_parts(path, root)[:-1]))


def _not_regular(path: Path) -> str:
    mode = path.stat().st_mode
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return (
        f"{path} is {kind}: moe-import reads its input more than once (the header first, and "
        "again to resume), so write it to a regular file and import that"
    )


# --- fingerprints ------------------------------------------------------------------------

FINGERPRINT_EDGE_BYTES = 1 << 20  # first and last MiB
FINGERPRINT_BLOCK_BYTES = 64 << 10
FINGERPRINT_BLOCKS = 8  # evenly spaced between the edges


def fingerprint(file: DataFile | Path) -> str:
    """A cheap content identity. An object in storage: its size and ETag (which changes
    whenever the object is rewritten), so nothing is downloaded. A local file: size + sha256
    of the first and last MiB and 8 spaced 64 KiB blocks.

    A local file is read for at most 2.5 MiB whatever its size, so a 5 GB file costs
    milliseconds. Files up to that size are hashed whole. An edit that keeps the size and
    touches none of the sampled bytes goes unseen; exports that change rewrite rows, which
    moves the tail.
    """
    data = as_data_file(file)
    if data.local is None:
        return f"{data.size}:etag:{data.etag}"
    path = data.local
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    sampled = 2 * FINGERPRINT_EDGE_BYTES + FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK_BYTES
    try:
        with path.open("rb") as handle:
            if size <= sampled:
                digest.update(handle.read())
            else:
                for offset, length in _sample_spans(size):
                    handle.seek(offset)
                    digest.update(handle.read(length))
    except OSError as error:
        raise SourceError(f"{path}: cannot read: {error.strerror or error}") from None
    return f"{size}:{digest.hexdigest()}"


def _sample_spans(size: int) -> list[tuple[int, int]]:
    middle = size - 2 * FINGERPRINT_EDGE_BYTES
    step = middle // (FINGERPRINT_BLOCKS + 1)
    spans = [(0, FINGERPRINT_EDGE_BYTES)]
    for block in range(1, FINGERPRINT_BLOCKS + 1):
        spans.append((FINGERPRINT_EDGE_BYTES + block * step, FINGERPRINT_BLOCK_BYTES))
    spans.append((size - FINGERPRINT_EDGE_BYTES, FINGERPRINT_EDGE_BYTES))
    return spans
