"""What one input file is: `DataFile` (local or in object storage), format, codec, partitions."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import unquote

from importer.config import SourceFormat
from importer.errors import UsageError

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
    (b"PARE", "encrypted-parquet"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
)
# Parquet modular encryption: the footer is encrypted (magic PARE), or the writer named it so.
ENCRYPTED_PARQUET = "encrypted-parquet"
ENCRYPTED_PARQUET_SUFFIXES = (".parquet.encrypted", ".parquet.enc")
COMPRESSION_CODECS = frozenset({"gzip", "bz2", "zstd", "xz"})

# Hive writes a partition whose value is null under this name.
HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


class SourceError(UsageError):
    """An input problem a user can fix (no match, unreadable, bad encoding); names the file.

    Whoever shows its message scrubs it of the job's secrets (a key placed by mistake in
    source.path, say): the CLI and the Python API, with `JobConfig.secrets()`."""


class ByteStore(Protocol):
    """Where a remote DataFile's bytes come from (an `objectstore.ObjectStore`)."""

    def open(self, url: str, block_size: int | None = None) -> BinaryIO: ...


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
    store: ByteStore | None = field(default=None, compare=False, repr=False)

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


def is_encrypted_parquet(file: DataFile) -> bool:
    name = file.basename.lower()
    return name.endswith(ENCRYPTED_PARQUET_SUFFIXES) or file.content == ENCRYPTED_PARQUET


def encrypted_parquet(file: DataFile | str) -> str:
    """The refusal of an encrypted Parquet file."""
    return (
        f"{file}: encrypted Parquet (Parquet modular encryption): moe-import cannot decrypt it; "
        "export the data without encryption (encrypt the storage instead)"
    )


def wanted(file: DataFile, fmt: SourceFormat) -> bool:
    """Whether a file found in a directory is data for `source.format` (an encrypted Parquet
    file is, so that it is refused by name rather than left out unseen)."""
    name = file.basename.lower()
    if is_encrypted_parquet(file):
        return True
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
        if is_encrypted_parquet(as_data_file(file)):
            raise SourceError(encrypted_parquet(as_data_file(file)))
        return fmt
    data = as_data_file(file)
    if is_encrypted_parquet(data):
        raise SourceError(encrypted_parquet(data))
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
