"""The input edge: CSV / Parquet files, directories and globs -> chunks of rows with row numbers."""

from __future__ import annotations

import bz2
import datetime as dt
import glob
import gzip
import hashlib
import lzma
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import zstandard

from importer.config import SourceConfig
from importer.rows import Chunk

Format = Literal["csv", "parquet"]

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")


class SourceError(Exception):
    """An input problem a user can fix (no match, unreadable, bad encoding); names the file."""


def discover(path: str, fmt: str = "auto") -> list[Path]:
    """The files `path` names: a file, a directory's data files, or a glob; sorted."""
    target = Path(path).expanduser()
    if target.is_file():
        return [target]
    if target.is_dir():
        suffixes = CSV_SUFFIXES if fmt == "csv" else PARQUET_SUFFIXES if fmt == "parquet" else None
        found = [p for p in target.iterdir() if p.is_file() and _has_suffix(p, suffixes)]
        if not found:
            raise SourceError(f"no CSV or Parquet files in directory {target}")
        return sorted(found)
    matches = sorted(Path(p) for p in glob.glob(str(target), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise SourceError(f"no files match {path}")
    return files


def _has_suffix(path: Path, suffixes: tuple[str, ...] | None) -> bool:
    name = path.name.lower()
    return name.endswith(suffixes or CSV_SUFFIXES + PARQUET_SUFFIXES)


def format_of(path: Path, fmt: str) -> Format:
    """csv or parquet: the configured format, or the one the file name says."""
    if fmt in ("csv", "parquet"):
        return fmt  # type: ignore[return-value]
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES) or name.endswith((".csv.xz", ".csv.zip", ".tsv", ".txt")):
        return "csv"
    raise SourceError(
        f"{path}: cannot tell the format from the extension; set source.format to csv or parquet"
    )


def read_columns(path: Path, source: SourceConfig) -> list[str]:
    """The file's column names: the CSV header (only the first block is parsed) or the schema."""
    if format_of(path, source.format) == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    with _csv_errors(path, lambda: 0):
        return _header(path, source)


def iter_chunks(
    path: Path,
    source: SourceConfig,
    columns: list[str] | None = None,
    start_row: int = 1,
) -> Iterator[Chunk]:
    """Chunks of about `source.chunk_rows` rows; `frame.index` holds the 1-based data row numbers.

    Only `columns` are read when given. Rows before `start_row` (resume) are never turned into
    frames: CSV blocks are parsed and dropped (so row numbers stay exactly those of a full
    read), Parquet row groups are skipped by their metadata.

    A CSV record with the wrong number of fields is a data row of its own: it is left out of
    the frame and listed in `Chunk.malformed` with its number, so the rows after it keep the
    numbers of a full read. A CSV chunk covers `chunk_rows` consecutive data rows, good and
    malformed (its frame can be empty). Should arrow not number a malformed record (it does
    when reading single-threaded, as here), the read stops with a SourceError naming the file
    and about where, rather than guess the numbers after it.
    """
    if start_row < 1:
        raise ValueError("start_row is 1-based")
    if format_of(path, source.format) == "parquet":
        yield from _parquet_chunks(path, source, columns, start_row)
    else:
        yield from _csv_chunks(path, source, columns, start_row)


def count_rows(paths: list[Path], source: SourceConfig) -> int | None:
    """Data rows across `paths`, for a progress bar: exact for Parquet (metadata) and for CSV
    files that fit in one sample block, estimated for larger plain CSV files from the bytes
    per row of their first block, None if any file is compressed CSV or unreadable."""
    total = 0
    for path in paths:
        try:
            if format_of(path, source.format) == "parquet":
                total += _parquet_file(path).metadata.num_rows
                continue
            rows = _estimate_csv_rows(path, source)
        except SourceError:
            return None
        if rows is None:
            return None
        total += rows
    return total


COUNT_SAMPLE_BYTES = 1 << 20


def _estimate_csv_rows(path: Path, source: SourceConfig) -> int | None:
    if source.csv.compression is not None and (
        source.csv.compression != "infer" or path.suffix.lower() in _COMPRESSION_SUFFIXES
    ):
        return None
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = handle.read(COUNT_SAMPLE_BYTES)
    if len(sample) < size:
        sample = sample[: sample.rfind(b"\n") + 1]  # whole lines; a quoted one may be cut
    malformed = _MalformedRecords()  # they are data rows too
    try:
        reader = pa_csv.open_csv(
            pa.BufferReader(sample),
            read_options=pa_csv.ReadOptions(encoding=source.csv.encoding, use_threads=False),
            parse_options=pa_csv.ParseOptions(
                delimiter=source.csv.delimiter,
                newlines_in_values=True,
                invalid_row_handler=malformed,
            ),
            convert_options=pa_csv.ConvertOptions(include_columns=[]),
        )
        rows = sum(batch.num_rows for batch in reader) + len(malformed.take())
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if len(sample) >= size:
        return rows
    return round(rows * size / max(len(sample), 1))


# --- CSV ---------------------------------------------------------------------------------
# pyarrow's streaming CSV reader, not pandas.read_csv: measured on 1M rows x 12 columns it
# parses in a third of the time and hands mapping arrow strings directly, which saves the
# conversion of every cell to a Python str and back (together ~2 s of ~7 s per million rows).
# The semantics match what the job file promises: every column is text, only
# `source.null_values` are missing ("NA", "null" stay text), quoted newlines stay in one
# record, a UTF-8 BOM is dropped, and blank lines are not rows.

CSV_BLOCK_BYTES = 1 << 20  # arrow reads ~36 blocks ahead; a record must fit in one


InvalidRowHandler = Callable[[pa_csv.InvalidRow], str]


def _skip_invalid(_row: pa_csv.InvalidRow) -> str:
    return "skip"


@contextmanager
def _csv_reader(
    path: Path,
    source: SourceConfig,
    text_columns: list[str],
    columns: list[str] | None = None,
    on_invalid: InvalidRowHandler = _skip_invalid,
) -> Iterator[pa_csv.CSVStreamingReader]:
    """The streaming reader; `text_columns` are read as text, `columns` (if given) only.

    Records with the wrong number of fields go to `on_invalid` and are left out of the
    batches. `use_threads=False` is what makes arrow number them (`InvalidRow.number`).
    """
    options = source.csv
    stream = _open_compressed(path, options.compression)
    try:
        yield pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                encoding=options.encoding, block_size=CSV_BLOCK_BYTES, use_threads=False
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=options.delimiter,
                quote_char=options.quotechar or False,
                escape_char=options.escapechar or False,
                double_quote=True,
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in text_columns},
                include_columns=columns or [],
                null_values=list(source.null_values),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    finally:
        stream.close()


def _header(path: Path, source: SourceConfig) -> list[str]:
    with _csv_reader(path, source, []) as reader:  # parses the first block, skips bad records
        return list(reader.schema.names)


def _open_compressed(path: Path, compression: str | None) -> BinaryIO:
    """A Python binary stream of the file's decompressed bytes.

    Python file objects on purpose: handed an arrow input stream, the CSV reader reads ahead
    some 36 blocks (~290 MiB here), while from a Python file it reads as it parses.
    """
    codec = compression
    if compression == "infer":
        codec = _COMPRESSION_SUFFIXES.get(path.suffix.lower())
    if codec == "gzip":
        return gzip.open(path, "rb")
    if codec == "bz2":
        return bz2.open(path, "rb")
    if codec == "zstd":
        return zstandard.open(path, "rb")
    if codec == "xz":
        return lzma.open(path, "rb")
    if codec == "zip":
        archive = zipfile.ZipFile(path)
        members = [name for name in archive.namelist() if not name.endswith("/")]
        if len(members) != 1:
            raise SourceError(f"{path}: a zip file must hold exactly one CSV file")
        return archive.open(members[0])
    return path.open("rb")


_COMPRESSION_SUFFIXES = {
    ".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz", ".zip": "zip",
}  # fmt: skip


def _csv_chunks(
    path: Path, source: SourceConfig, columns: list[str] | None, start_row: int
) -> Iterator[Chunk]:
    malformed = _MalformedRecords()
    chunks = _CsvChunker(path, source.chunk_rows, start_row)
    with _csv_errors(path, chunks.known_through):
        header = _header(path, source)
        missing = sorted(set(columns or []) - set(header))
        if missing:
            raise SourceError(f"{path}: no column {', '.join(map(repr, missing))}")
        reader_context = _csv_reader(path, source, header, columns, malformed)
    with _csv_errors(path, chunks.known_through), reader_context as reader:
        chunks.schema = reader.schema
        for batch in reader:
            # Arrow reports a block's bad records while parsing it, before yielding its batch.
            chunks.add_malformed(malformed.take())
            chunks.add_batch(batch)
            yield from chunks.ready()
        chunks.add_malformed(malformed.take())
        yield from chunks.rest()


MALFORMED_TEXT_CHARS = 500


class _MalformedRecords:
    """The `invalid_row_handler`: keeps the records arrow skips until the chunker numbers them."""

    def __init__(self) -> None:
        self._reported: list[pa_csv.InvalidRow] = []

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        self._reported.append(row)
        return "skip"

    def take(self) -> list[pa_csv.InvalidRow]:
        reported, self._reported = self._reported, []
        return reported


class _CsvChunker:
    """Numbers the good rows of a CSV stream around the malformed records and cuts chunks.

    Arrow leaves a malformed record out of its batches and reports it with `number`, its
    record count from the header (header = 1; quoted newlines do not count, blank lines are
    not records), so its data row is `number - 1`, and the good rows take the numbers left
    between them. Each chunk covers `chunk_rows` consecutive data rows, good ones in the
    frame and malformed ones in `malformed`; a run of malformed rows can make a chunk with an
    empty frame. A record reported without a number, or out of order, stops the read with a
    SourceError rather than risk numbering the rows after it wrongly.
    """

    def __init__(self, path: Path, chunk_rows: int, start_row: int) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.start_row = start_row
        self.schema: pa.Schema | None = None
        self._next_row = 1  # the first data row number not yet given to a good row
        self._last_malformed = 0
        self._ahead: list[int] = []  # malformed rows at or after _next_row
        self._chunk_start = start_row
        self._batches: list[pa.RecordBatch] = []  # good rows not yet in a chunk ...
        self._numbers: list[np.ndarray] = []  # ... and their data row numbers
        self._malformed: list[tuple[int, str, str]] = []  # from start_row, not yet in a chunk

    def known_through(self) -> int:
        """The data rows 1..n whose fate (good or malformed) is known."""
        known = self._next_row - 1
        for row in self._ahead:
            if row != known + 1:
                break
            known = row
        return known

    def add_malformed(self, rows: list[pa_csv.InvalidRow]) -> None:
        for invalid in rows:
            reason = f"expected {invalid.expected_columns} fields, found {invalid.actual_columns}"
            if invalid.number is None:
                raise SourceError(
                    f"{self.path}: a record after data row {self.known_through()} has the wrong "
                    f"number of fields ({reason}) and its row number is unknown"
                )
            row = invalid.number - 1  # the header is record 1
            if row < self._next_row or row <= self._last_malformed:
                raise SourceError(
                    f"{self.path}: cannot number the rows around a record with the wrong number "
                    f"of fields ({reason}) near data row {row}"
                )
            self._last_malformed = row
            self._ahead.append(row)
            if row >= self.start_row:
                self._malformed.append((row, _shorten(invalid.text), reason))

    def add_batch(self, batch: pa.RecordBatch) -> None:
        count = batch.num_rows
        if count == 0:
            return
        numbers = _good_row_numbers(self._next_row, count, self._ahead)
        self._next_row = int(numbers[-1]) + 1
        self._ahead = [row for row in self._ahead if row >= self._next_row]
        if self._next_row <= self.start_row:  # wholly before start_row: drop unconverted
            return
        first = int(np.searchsorted(numbers, self.start_row))
        self._batches.append(batch.slice(first))
        self._numbers.append(numbers[first:])

    def ready(self) -> Iterator[Chunk]:
        """The chunks whose every row is known."""
        while self._chunk_start + self.chunk_rows - 1 <= self.known_through():
            yield self._cut(self._chunk_start + self.chunk_rows - 1)

    def rest(self) -> Iterator[Chunk]:
        """At the end of the stream: every row is known; the last chunks."""
        last = max(self._next_row - 1, self._last_malformed)
        while self._chunk_start <= last:
            yield self._cut(min(self._chunk_start + self.chunk_rows - 1, last))

    def _cut(self, last: int) -> Chunk:
        """The chunk of data rows `_chunk_start..last`."""
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        numbers = np.concatenate(self._numbers) if self._numbers else np.empty(0, np.int64)
        count = int(np.searchsorted(numbers, last, side="right"))
        rest = table.slice(count)
        self._batches, self._numbers = rest.to_batches(), [numbers[count:]]
        split = next((i for i, bad in enumerate(self._malformed) if bad[0] > last), None)
        split = len(self._malformed) if split is None else split
        malformed, self._malformed = self._malformed[:split], self._malformed[split:]
        self._chunk_start = last + 1
        frame = table.slice(0, count).to_pandas(types_mapper=pd.ArrowDtype)
        frame.index = _row_index(numbers[:count])
        return Chunk(source=str(self.path), frame=frame, malformed=malformed)


def _good_row_numbers(next_row: int, count: int, malformed: list[int]) -> np.ndarray:
    """The `count` data row numbers from `next_row` on that are not `malformed` rows."""
    candidates = np.arange(next_row, next_row + count + len(malformed), dtype=np.int64)
    if malformed:
        candidates = candidates[~np.isin(candidates, malformed)]
    return candidates[:count]


def _row_index(numbers: np.ndarray) -> pd.Index:
    if len(numbers) and int(numbers[-1]) - int(numbers[0]) == len(numbers) - 1:
        return pd.RangeIndex(int(numbers[0]), int(numbers[-1]) + 1)
    return pd.Index(numbers, dtype="int64")


def _shorten(text: str) -> str:
    if len(text) <= MALFORMED_TEXT_CHARS:
        return text
    return text[: MALFORMED_TEXT_CHARS - 1] + "…"


@contextmanager
def _csv_errors(path: Path, rows_done: Callable[[], int]) -> Iterator[None]:
    """Turns the reader's exceptions into SourceErrors naming the file and about where."""
    try:
        yield
    except SourceError:
        raise
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{path}: not valid {error.encoding} after data row {rows_done()} "
            f"({error.reason}); set source.csv.encoding"
        ) from None
    except pa.ArrowInvalid as error:
        text = str(error)
        if "UTF8" in text or "decode" in text.lower():
            raise SourceError(
                f"{path}: not valid UTF-8 after data row {rows_done()}; set source.csv.encoding"
            ) from None
        if "Empty CSV file" in text:
            raise SourceError(f"{path}: the file is empty (no header row)") from None
        raise SourceError(
            f"{path}: cannot parse CSV after data row {rows_done()}: {text}"
        ) from None
    except OSError as error:
        raise SourceError(f"{path}: cannot read: {error.strerror or error}") from None
    except (
        LookupError,
        EOFError,
        zipfile.BadZipFile,
        lzma.LZMAError,
        zlib.error,
        zstandard.ZstdError,
    ) as error:
        raise SourceError(f"{path}: cannot read: {error}") from None


# --- Parquet -----------------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except OSError as error:
        raise SourceError(f"{path}: cannot read as Parquet: {error}") from None
    except pa.ArrowInvalid as error:
        raise SourceError(f"{path}: not a Parquet file: {error}") from None


def _parquet_chunks(
    path: Path, source: SourceConfig, columns: list[str] | None, start_row: int
) -> Iterator[Chunk]:
    parquet = _parquet_file(path)
    first_group, first_row = _first_row_group(parquet.metadata, start_row)
    groups = list(range(first_group, parquet.metadata.num_row_groups))
    if not groups:
        return
    to_skip = start_row - first_row  # rows of the first kept group that come before start_row
    number = first_row
    try:
        batches = parquet.iter_batches(
            batch_size=source.chunk_rows, row_groups=groups, columns=columns
        )
        for batch in batches:
            if to_skip:
                skipped = min(to_skip, batch.num_rows)
                batch = batch.slice(skipped)
                number += skipped
                to_skip -= skipped
            if batch.num_rows == 0:
                continue
            # ArrowDtype keeps every native type without loss (int64 with nulls stays int).
            frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
            frame.index = pd.RangeIndex(number, number + batch.num_rows)
            number += batch.num_rows
            yield Chunk(source=str(path), frame=frame)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(
            f"{path}: cannot read Parquet after data row {number - 1}: {error}"
        ) from None


def _first_row_group(metadata: pq.FileMetaData, start_row: int) -> tuple[int, int]:
    """(index of the row group holding `start_row`, data row number of its first row)."""
    first_row = 1
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if first_row + rows > start_row:
            return group, first_row
        first_row += rows
    return metadata.num_row_groups, first_row


# --- records and fingerprints ------------------------------------------------------------


def record_of(frame: pd.DataFrame, row: int) -> dict[str, Any]:
    """The row numbered `row` as read, with every value JSON-ready (missing cells are None)."""
    return {str(column): _json_value(frame.at[row, column]) for column in frame.columns}


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    return str(value)


FINGERPRINT_EDGE_BYTES = 1 << 20  # first and last MiB
FINGERPRINT_BLOCK_BYTES = 64 << 10
FINGERPRINT_BLOCKS = 8  # evenly spaced between the edges


def fingerprint(path: Path) -> str:
    """A cheap content identity: size + sha256 of the first and last MiB and 8 spaced 64 KiB blocks.

    It reads at most 2.5 MiB whatever the size, so a 5 GB file costs milliseconds. Files up
    to that size are hashed whole. An edit that keeps the size and touches none of the
    sampled bytes goes unseen; exports that change rewrite rows, which moves the tail.
    """
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
