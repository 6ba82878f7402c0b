"""Where input files are: local paths, directories, globs and s3:// prefixes -> `DataFile`s."""

from __future__ import annotations

import glob
import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote

from importer.config import SourceFormat, StorageOptions
from importer.errors import UsageError

if TYPE_CHECKING:
    from importer.sources.objectstore import ObjectStore

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.xz", ".csv.zip")
# Text files that may be CSV: read from a directory only when source.format is csv.
TEXT_SUFFIXES = (".txt", ".tsv", ".txt.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# A compressed file without .csv in its name (Redshift's UNLOAD writes 0000_part_00.gz):
# what it holds is told by its first bytes.
BARE_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz")

# First bytes -> what the file is. Compressed files are taken for CSV (Parquet compresses
# inside the file, never around it).
MAGIC = (
    (b"PAR1", SourceFormat.PARQUET),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
)
COMPRESSION_CODECS = frozenset({"gzip", "bz2", "zstd", "xz"})

# Hive writes a partition whose value is null under this name.
HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


class SourceError(UsageError):
    """An input problem a user can fix (no match, unreadable, bad encoding); names the file.

    Whoever shows its message scrubs it of the job's secrets (a key placed by mistake in
    source.path, say): the CLI and the Python API, with `JobConfig.secrets()`."""


@dataclass(frozen=True)
class DataFile:
    """One input file, on local disk (`local`) or in object storage (`store`).

    `name` is how rows, dead letters and reports name it: the path as given, or the
    s3:// URL. `partitions` are the Hive `key=value` folders between the searched root and
    the file, as (column, value) pairs; `content` is what its first bytes say (parquet, a
    compression codec, or None when its name already tells)."""

    name: str
    size: int
    local: Path | None = None
    etag: str | None = None
    partitions: tuple[tuple[str, str | None], ...] = ()
    content: str | None = None
    store: ObjectStore | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name

    @property
    def basename(self) -> str:
        return PurePosixPath(self.name).name if self.local is None else self.local.name

    @property
    def state_key(self) -> str:
        """The key saved progress is kept under: ./x.csv and x.csv are one file."""
        return self.name if self.local is None else str(self.local.resolve())

    def open(self, block_size: int | None = None) -> BinaryIO:
        """The raw bytes, streamed: a remote object is fetched `block_size` bytes at a time
        (a header read asks for little, a full read for large blocks)."""
        if self.store is not None:
            return self.store.open(self.name, block_size)
        assert self.local is not None
        return self.local.open("rb")


def local_file(path: Path, partitions: tuple[tuple[str, str | None], ...] = ()) -> DataFile:
    """A DataFile for a local path (its first bytes read only when the name does not tell)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    content = (_sniff_local(path) or named_codec(path.name)) if needs_sniffing(path.name) else None
    return DataFile(str(path), size, local=path, partitions=partitions, content=content)


def as_data_file(file: DataFile | Path) -> DataFile:
    return file if isinstance(file, DataFile) else local_file(file)


def is_remote(path: str) -> bool:
    return path.lower().startswith("s3://")


def discover(
    path: str, fmt: SourceFormat = SourceFormat.AUTO, storage: StorageOptions | None = None
) -> list[DataFile]:
    """The files `path` names: a file, a directory's data files (searched recursively), or a
    glob; local or s3://. Sorted by name."""
    if is_remote(path):
        from importer.sources.objectstore import ObjectStore

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


def fixed_parts(pattern: str) -> list[str]:
    """A glob's path parts before the first one with a wildcard."""
    fixed: list[str] = []
    for part in pattern.split("/"):
        if glob.has_magic(part):
            break
        fixed.append(part)
    return fixed


def glob_root(pattern: str) -> str:
    """The folder a glob searches under: its parts up to the first one with a wildcard."""
    fixed = fixed_parts(pattern)
    return "/".join(fixed[:-1] if len(fixed) == len(pattern.split("/")) else fixed) or "."


def is_marker(parts: tuple[str, ...]) -> bool:
    """Hidden files and folders, and what writers leave beside the data (Spark's _SUCCESS,
    Databricks' _committed_* / _started_*, Hadoop's .crc checksums, _temporary folders)."""
    return any(p.startswith((".", "_")) for p in parts) or parts[-1].lower().endswith(".crc")


def hive_partitions(folders: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    """The `key=value` folders as columns (values %-decoded as Hive writes them)."""
    found: dict[str, str | None] = {}
    for folder in folders:
        key, sep, value = folder.partition("=")
        if sep and key:
            text = unquote(value)
            found[unquote(key)] = None if text == HIVE_NULL_PARTITION else text
    return tuple(found.items())


def _name_tells(name: str) -> bool:
    return name.lower().endswith(CSV_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES)


_BARE_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}


def named_codec(name: str) -> str | None:
    """The codec a bare compression suffix names (0000_part_00.gz: gzip), else None."""
    lowered = name.lower()
    if _name_tells(lowered):
        return None
    return next((c for s, c in _BARE_CODECS.items() if lowered.endswith(s)), None)


def needs_sniffing(name: str) -> bool:
    """Whether only the first bytes can tell what a file holds: part-00000, and
    0000_part_00.gz (its name says compressed, not what is inside nor always truly how)."""
    return not _name_tells(name)


def sniff(head: bytes) -> str | None:
    """What the first bytes say: parquet, a compression codec, or None."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    return None


def _sniff_local(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return sniff(handle.read(8))
    except OSError:
        return None


def wanted(file: DataFile, fmt: SourceFormat) -> bool:
    """Whether a file found in a directory is data for `source.format`."""
    name = file.basename.lower()
    if fmt == SourceFormat.PARQUET:
        return name.endswith(PARQUET_SUFFIXES) or file.content == SourceFormat.PARQUET
    if name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        return True
    if fmt == SourceFormat.CSV:
        # An explicit csv format reads text files too, and extension-less parts (part-00000).
        return name.endswith(TEXT_SUFFIXES) or "." not in name or file.content is not None
    if file.content == SourceFormat.PARQUET:
        return True
    # 0000_part_00.gz (Redshift), 000000_0.gz (Hive): a compressed part whose name says no
    # more. data.json.gz says it is something else.
    stem = name.rsplit(".", 1)[0] if name.endswith(BARE_COMPRESSED_SUFFIXES) else name
    return file.content is not None and "." not in stem


def format_of(file: DataFile | Path, fmt: SourceFormat) -> SourceFormat:
    """csv or parquet: the configured format, or the one the file's name or first bytes say."""
    if fmt != SourceFormat.AUTO:
        return fmt
    data = as_data_file(file)
    name = data.basename.lower()
    parquet = data.content == SourceFormat.PARQUET
    if name.endswith(PARQUET_SUFFIXES) or (not _name_tells(name) and parquet):
        return SourceFormat.PARQUET
    if name.endswith(CSV_SUFFIXES + TEXT_SUFFIXES) or data.content in COMPRESSION_CODECS:
        return SourceFormat.CSV
    raise SourceError(
        f"{data}: cannot tell the format from the name or the first bytes; set source.format "
        "to csv or parquet"
    )


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
