"""Where input files are: local paths, directories, globs and s3:// prefixes -> `DataFile`s."""

from __future__ import annotations

import glob
import stat
from pathlib import Path

from importer.config import SourceFormat, StorageOptions
from importer.sources.content import content_fingerprint
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


def fingerprint(file: DataFile | Path) -> str:
    """The content identity saved progress is kept under. An object in storage: its size
    and ETag (which changes whenever the object is rewritten), so nothing is downloaded. A
    local file: its size and the sha256 of every byte (`sources.content`), so any edit,
    even one that keeps the size, is another content.
    """
    data = as_data_file(file)
    if data.local is None:
        return f"{data.size}:etag:{data.etag}"
    try:
        return content_fingerprint(data.local)[0]
    except OSError as error:
        raise SourceError(f"{data.local}: cannot read: {error.strerror or error}") from None
