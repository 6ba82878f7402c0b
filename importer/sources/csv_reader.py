"""Reading a CSV file: its header, its chunks of rows, its first bytes, an estimate of its rows."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv

from importer.config import CsvOptions, SourceConfig
from importer.rows import Chunk, RowCount, RowFilter
from importer.sources.compression import codec_of, open_compressed, open_compressed_stream
from importer.sources.csv_chunks import ChunkAssembler
from importer.sources.csv_text import (
    CONTROL_BYTES,
    csv_errors,
    names_of,
    open_text,
    text_encoding,
)
from importer.sources.csvrecords import RecordScanner
from importer.sources.datafile import DataFile, SourceError, as_data_file


class EmptyFile(SourceError):
    """A CSV file with not even a header: an empty part of a larger export holds no rows."""


def head_bytes(file: DataFile | Path, source: SourceConfig, limit: int = 1 << 16) -> bytes:
    """The first `limit` bytes of a file's text, decompressed (for sniffing its dialect)."""
    data = as_data_file(file)
    compression = source.csv.compression
    with csv_errors(data, lambda: 0), open_compressed(data, compression, limit) as stream:
        return stream.read(limit)


SCAN_READ_BYTES = 1 << 20  # what the scanner reads at a time (tests make it tiny)


def _scanner(stream: BinaryIO, options: CsvOptions, read_bytes: int | None = None) -> RecordScanner:
    return RecordScanner(
        stream,
        delimiter=options.delimiter,
        quotechar=options.quotechar or None,
        escapechar=options.escapechar,
        max_record_bytes=options.max_record_bytes,
        read_bytes=read_bytes or SCAN_READ_BYTES,
    )


def _read_header(
    path: DataFile, source: SourceConfig, scanner: RecordScanner
) -> tuple[list[str], bytes]:
    """The column names and the header record as UTF-8; refuses what is not CSV text."""
    found = scanner.header()
    if found is None:
        raise EmptyFile(f"{path}: the file is empty (no header row)")
    raw, _line = found
    encoding = text_encoding(source)
    if not raw.endswith((b"\n", b"\r")):
        if len(raw) >= scanner.max_record_bytes:
            raise SourceError(
                f"{path}: no line end in the first {scanner.max_record_bytes:,} bytes: not a CSV "
                "file? (raise source.csv.max_record_bytes if its header really is that long)"
            )
        raw += b"\n"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        shown = repr(error.object[error.start : error.end][:8])
        raise SourceError(
            f"{path}: the header line is not valid {encoding} (bytes {shown}): not a CSV "
            "file, or set source.csv.encoding"
        ) from None
    if CONTROL_BYTES.search(raw) or "\ufffd" in text:
        raise SourceError(
            f"{path}: the header line holds control characters (binary data?): not a CSV file"
        )
    header = text.encode("utf-8")
    try:
        return names_of(header, source.csv), header
    except ValueError as error:
        raise SourceError(f"{path}: {error}") from None


# What reading only a header fetches at a time: from object storage, checking the columns
# of a thousand parts must not download megabytes of each.
HEADER_READ_BYTES = 64 << 10


def header_names(path: DataFile, source: SourceConfig) -> list[str]:
    with open_text(path, source, HEADER_READ_BYTES) as stream:
        scanner = _scanner(stream, source.csv, HEADER_READ_BYTES)
        return _read_header(path, source, scanner)[0]


def csv_chunks(
    path: DataFile,
    source: SourceConfig,
    columns: list[str] | None,
    start_row: int,
    row_filter: RowFilter | None = None,
) -> Iterator[Chunk]:
    assembler: ChunkAssembler | None = None

    def rows_done() -> int:
        return 0 if assembler is None else assembler.known_through()

    with csv_errors(path, rows_done), open_text(path, source) as stream:
        scanner = _scanner(stream, source.csv)
        names, header = _read_header(path, source, scanner)
        missing = sorted(set(columns or []) - set(names))
        if missing:
            raise SourceError(f"{path}: no column {', '.join(map(repr, missing))}")
        assembler = ChunkAssembler(path, source, header, columns, start_row, row_filter)
        for records in scanner.records():
            assembler.add(records)
            yield from assembler.ready()
        yield from assembler.rest()


COUNT_SAMPLE_BYTES = 1 << 20


def estimate_csv_rows(file: DataFile, source: SourceConfig) -> RowCount | None:
    """The file's data rows: exact when its text (decompressed) fits in one sample block,
    otherwise about the sample's rows times the file's bytes over the bytes the sample took
    (compressed bytes for a compressed file). None when it cannot tell (zip, unreadable)."""
    codec = codec_of(file, source.csv.compression)
    if codec == "zip":
        return None
    # Decompressors read ahead (bz2 by whole blocks): a larger sample keeps that small.
    sample_bytes = COUNT_SAMPLE_BYTES if codec is None else 4 * COUNT_SAMPLE_BYTES
    with file.open(COUNT_SAMPLE_BYTES) as raw:
        counted = _CountingStream(raw)
        with open_compressed_stream(file, counted, codec) as handle:  # type: ignore[arg-type]
            sample = handle.read(sample_bytes)
            whole = len(handle.read(1)) == 0
        taken = counted.bytes_read if codec is not None else len(sample)
    if not whole:
        sample = sample[: sample.rfind(b"\n") + 1]  # whole lines; a quoted one may be cut
        taken = taken if codec is not None else len(sample)
    rows = _rows_in(sample, source)
    if rows is None:
        return None
    if whole:
        return RowCount(rows, exact=True)
    return RowCount(round(rows * file.size / max(taken, 1)), exact=False)


def _rows_in(sample: bytes, source: SourceConfig) -> int | None:
    """Data rows in whole lines of CSV text (None when arrow cannot read them)."""
    quote = (source.csv.quotechar or "").encode()
    if not quote or quote not in sample:
        # No quoted field, so no line end inside one: each line is a record (the header's
        # too), counted without parsing the columns (arrow's cost grows with their number).
        lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") or not sample else 1)
        return max(lines - 1, 0)
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
        return int(sum(batch.num_rows for batch in reader) + len(malformed.take()))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None


class _CountingStream(io.RawIOBase):
    """The raw (compressed) bytes, counting how many the decompressor took."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


class _MalformedRecords:
    """An `invalid_row_handler` for the row estimate: counts the records arrow skips."""

    def __init__(self) -> None:
        self._reported: list[pa_csv.InvalidRow] = []

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        self._reported.append(row)
        return "skip"

    def take(self) -> list[pa_csv.InvalidRow]:
        reported, self._reported = self._reported, []
        return reported
