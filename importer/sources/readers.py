"""Reading one data file: CSV / Parquet -> numbered chunks of rows, partition columns added."""

from __future__ import annotations

import bz2
import codecs
import datetime as dt
import gzip
import io
import itertools
import lzma
import math
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import zstandard

from importer.config import CsvOptions, SourceConfig, SourceFormat
from importer.rows import Chunk, LineMap, Malformed
from importer.sources.csvrecords import (
    BadRecord,
    Records,
    RecordScanner,
    TranscodedStream,
    is_ascii_compatible,
)
from importer.sources.files import (
    COMPRESSION_CODECS,
    DataFile,
    SourceError,
    as_data_file,
    format_of,
)

Names = list[str]


def file_columns(file: DataFile | Path, source: SourceConfig) -> list[str]:
    """The columns stored in the file: the CSV header (only its first record is read) or the
    Parquet schema; a name that appears twice is refused (which one a job means is unknowable)."""
    data = as_data_file(file)
    if format_of(data, source.format) == SourceFormat.PARQUET:
        names = list(_parquet_file(data).schema_arrow.names)
    else:
        with _csv_errors(data, lambda: 0):
            names = _header(data, source)
    _refuse_duplicates(data, names)
    return names


class EmptyFile(SourceError):
    """A CSV file with not even a header: an empty part of a larger export holds no rows."""


def is_empty(file: DataFile | Path, source: SourceConfig) -> bool:
    """Whether the file is a CSV without even a header line (compressed or not)."""
    try:
        file_columns(file, source)
    except EmptyFile:
        return True
    return False


def head_bytes(file: DataFile | Path, source: SourceConfig, limit: int = 1 << 16) -> bytes:
    """The first `limit` bytes of a file's text, decompressed (for sniffing its dialect)."""
    data = as_data_file(file)
    compression = source.csv.compression
    with _csv_errors(data, lambda: 0), _open_compressed(data, compression, limit) as stream:
        return stream.read(limit)


def read_columns(file: DataFile | Path, source: SourceConfig) -> list[str]:
    """The file's columns as a job sees them: those stored in it, then its partition columns
    (Hive `key=value` folders) that the file does not hold itself."""
    data = as_data_file(file)
    names = file_columns(data, source)
    return names + [key for key, _value in data.partitions if key not in names]


def union_columns(files: list[DataFile], source: SourceConfig) -> list[str]:
    """Every column any of the files has, in the order first seen: parts of one export may
    differ (a column added later), and a part lacking a column reads it as empty."""

    def columns_of(file: DataFile) -> list[str] | EmptyFile:
        try:
            return read_columns(file, source)
        except EmptyFile as error:
            return error  # an empty part of an export: no rows, and no columns

    seen: dict[str, None] = {}
    empty: list[EmptyFile] = []
    for found in _each(columns_of, files):
        if isinstance(found, EmptyFile):
            empty.append(found)
        else:
            seen.update(dict.fromkeys(found))
    if empty and len(empty) == len(files):
        if len(files) == 1:
            raise empty[0]
        raise SourceError(f"all {len(files)} files are empty (not even a header row)")
    return list(seen)


# Objects whose headers or footers are read at once: each read is a round trip to the store,
# and an export of a thousand parts should not wait for them one by one.
REMOTE_READS_AT_ONCE = 16

T = TypeVar("T")


def _each(read: Callable[[DataFile], T], files: Sequence[DataFile]) -> Iterator[T]:
    """`read` of each file, in order; objects in storage several at a time."""
    if sum(1 for f in files if f.local is None) < 2:
        yield from map(read, files)
        return
    with ThreadPoolExecutor(REMOTE_READS_AT_ONCE, thread_name_prefix="head") as pool:
        yield from pool.map(read, files)


def _refuse_duplicates(file: DataFile, names: list[str]) -> None:
    counts = Counter(names)
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        where = "; ".join(
            f"{name!r} is column {', '.join(str(i + 1) for i, n in enumerate(names) if n == name)}"
            for name in repeated
        )
        raise SourceError(
            f"{file}: the header names a column more than once ({where}): rename them in the "
            "export so each column has its own name"
        )


def iter_chunks(
    file: DataFile | Path,
    source: SourceConfig,
    columns: list[str] | None = None,
    start_row: int = 1,
) -> Iterator[Chunk]:
    """Chunks of about `source.chunk_rows` rows; `frame.index` holds the 1-based data row numbers.

    Only `columns` are read when given; those the file lacks are filled in: a partition
    column with its folder's value, any other as empty (parts of an export may differ).
    Rows before `start_row` (resume) are never turned into
    frames: CSV records are counted by the scanner and dropped unparsed (so row numbers stay
    exactly those of a full read), Parquet row groups are skipped by their metadata.

    A CSV record that cannot be read as a row (wrong number of fields, an unterminated quote,
    bytes not in the encoding, longer than `source.csv.max_record_bytes`) is a data row of
    its own: it is left out of the frame and listed in `Chunk.malformed` with its number, full
    text and lines, so the rows after it keep the numbers of a full read. A CSV chunk covers
    `chunk_rows` consecutive data rows, good and malformed (its frame can be empty), and
    `Chunk.lines` gives the physical line where each starts. Should arrow ever count the
    records differently from the scanner, the read stops with a SourceError naming the file
    and about where, rather than misnumber the rows after it.
    """
    if start_row < 1:
        raise ValueError("start_row is 1-based")
    data = as_data_file(file)
    try:
        stored = file_columns(data, source)
    except EmptyFile:
        if columns is None:
            raise
        return  # a part with not even a header holds no rows
    wanted = list(columns) if columns is not None else read_columns(data, source)
    to_read = [c for c in wanted if c in stored]
    if format_of(data, source.format) == SourceFormat.PARQUET:
        chunks = _parquet_chunks(data, source, to_read, start_row)
    else:
        chunks = _csv_chunks(data, source, to_read, start_row)
    if to_read == wanted:
        yield from chunks
        return
    partitions = dict(data.partitions)
    for chunk in chunks:
        chunk.frame = _completed(chunk.frame, wanted, partitions)
        yield chunk


def _completed(
    frame: pd.DataFrame, columns: list[str], partitions: dict[str, str | None]
) -> pd.DataFrame:
    """The frame with `columns` in order: those it lacks are partition values or empty."""
    rows = len(frame)
    filled: dict[str, Any] = {}
    for column in columns:
        if column in frame.columns:
            filled[column] = frame[column]
            continue
        value = partitions.get(column)
        cells = pa.nulls(rows, pa.string()) if value is None else pa.repeat(value, rows)
        filled[column] = pd.Series(
            pd.arrays.ArrowExtensionArray(cells.cast(pa.string())), index=frame.index
        )
    return pd.DataFrame(filled, index=frame.index)


def count_rows(files: Sequence[DataFile | Path], source: SourceConfig) -> int | None:
    """Data rows across `files`, for a progress bar: exact for Parquet (metadata) and for CSV
    files that fit in one sample block, estimated for larger plain CSV files from the bytes
    per row of their first block, None if any file is compressed CSV or unreadable."""

    def rows_of(data: DataFile) -> int | None:
        try:
            if format_of(data, source.format) == SourceFormat.PARQUET:
                return int(_parquet_file(data).metadata.num_rows)
            return _estimate_csv_rows(data, source)
        except (SourceError, OSError):
            return None

    total = 0
    for rows in _each(rows_of, [as_data_file(f) for f in files]):
        if rows is None:
            return None
        total += rows
    return total


COUNT_SAMPLE_BYTES = 1 << 20


def _estimate_csv_rows(file: DataFile, source: SourceConfig) -> int | None:
    if _codec(file, source.csv.compression) is not None:
        return None
    size = file.size
    with file.open(COUNT_SAMPLE_BYTES) as handle:
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
        return int(rows)
    return round(int(rows) * size / max(len(sample), 1))


# --- CSV ---------------------------------------------------------------------------------
# pyarrow's CSV parser, not pandas.read_csv: measured on 1M rows x 12 columns it parses in a
# third of the time and hands mapping arrow strings directly, which saves the conversion of
# every cell to a Python str and back (together ~2 s of ~7 s per million rows).
# The semantics match what the job file promises: every column is text, only
# `source.null_values` are missing ("NA", "null" stay text), quoted newlines stay in one
# record, a UTF-8 BOM is dropped, and blank lines are not rows.
# Record boundaries come from `csvrecords` first (lines, stray quotes, bad bytes); arrow
# parses only the good records, a chunk at a time, already UTF-8.

InvalidRowHandler = Callable[[pa_csv.InvalidRow], str]


def _parse_options(options: CsvOptions, on_invalid: InvalidRowHandler) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quotechar or False,
        escape_char=options.escapechar or False,
        double_quote=True,
        newlines_in_values=True,
        invalid_row_handler=on_invalid,
    )


def _open_text(file: DataFile, source: SourceConfig, block_size: int | None = None) -> BinaryIO:
    """The decompressed bytes, re-encoded as UTF-8 if the encoding's newlines are not ASCII."""
    stream = _open_compressed(file, source.csv.compression, block_size)
    if is_ascii_compatible(source.csv.encoding):
        return stream
    return TranscodedStream(stream, source.csv.encoding)  # type: ignore[return-value]


def _text_encoding(source: SourceConfig) -> str:
    """The encoding of the bytes the scanner sees."""
    return source.csv.encoding if is_ascii_compatible(source.csv.encoding) else "utf-8"


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


_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _read_header(
    path: DataFile, source: SourceConfig, scanner: RecordScanner
) -> tuple[list[str], bytes]:
    """The column names and the header record as UTF-8; refuses what is not CSV text."""
    found = scanner.header()
    if found is None:
        raise EmptyFile(f"{path}: the file is empty (no header row)")
    raw, _line = found
    encoding = _text_encoding(source)
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
    if _CONTROL_BYTES.search(raw) or "\ufffd" in text:
        raise SourceError(
            f"{path}: the header line holds control characters (binary data?): not a CSV file"
        )
    header = text.encode("utf-8")
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(header),
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=_parse_options(source.csv, _skip_invalid),
        )
    except pa.ArrowInvalid as error:
        raise SourceError(f"{path}: cannot read the header line: {error}") from None
    return list(table.schema.names), header


def _skip_invalid(_row: pa_csv.InvalidRow) -> str:
    return "skip"


# What reading only a header fetches at a time: from object storage, checking the columns
# of a thousand parts must not download megabytes of each.
HEADER_READ_BYTES = 64 << 10


def _header(path: DataFile, source: SourceConfig) -> list[str]:
    with _open_text(path, source, HEADER_READ_BYTES) as stream:
        scanner = _scanner(stream, source.csv, HEADER_READ_BYTES)
        return _read_header(path, source, scanner)[0]


def _codec(file: DataFile, compression: str | None) -> str | None:
    """The compression to undo: the configured one, or what the name or first bytes say."""
    if compression != "infer":
        return compression
    if file.content in COMPRESSION_CODECS:
        return file.content  # the first bytes, over a name that may not say or may be wrong
    name = file.basename.lower()
    for suffix, codec in _COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            return codec
    return None


def _open_compressed(
    file: DataFile, compression: str | None, block_size: int | None = None
) -> BinaryIO:
    """A Python binary stream of the file's decompressed bytes."""
    codec = _codec(file, compression)
    if file.local is not None:
        path = file.local
        if codec == "gzip":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        if codec == "bz2":
            return bz2.open(path, "rb")  # type: ignore[return-value]
        if codec == "zstd":
            stream: BinaryIO = zstandard.open(path, "rb")
            return stream
        if codec == "xz":
            return lzma.open(path, "rb")  # type: ignore[return-value]
        if codec != "zip":
            return path.open("rb")
    raw = file.open(block_size)
    try:
        return _decompressing(file, raw, codec)
    except BaseException:
        raw.close()
        raise


def _decompressing(file: DataFile, raw: BinaryIO, codec: str | None) -> BinaryIO:
    if codec is None:
        return raw
    if codec == "zip":
        archive = zipfile.ZipFile(raw)
        members = [name for name in archive.namelist() if not name.endswith("/")]
        if len(members) != 1:
            raise SourceError(f"{file}: a zip file must hold exactly one CSV file")
        return _Owning(archive.open(members[0]), raw)  # type: ignore[arg-type,return-value]
    stream: BinaryIO
    if codec == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif codec == "bz2":
        stream = bz2.BZ2File(raw, "rb")  # type: ignore[assignment]
    elif codec == "zstd":
        stream = zstandard.ZstdDecompressor().stream_reader(raw)
    else:
        stream = lzma.LZMAFile(raw, "rb")  # type: ignore[assignment]  # noqa: SIM115
    return _Owning(stream, raw)  # type: ignore[return-value]


class _Owning(io.RawIOBase):
    """A decompressing stream that closes the raw stream under it too."""

    def __init__(self, stream: BinaryIO, raw: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._raw.close()
            super().close()


_COMPRESSION_SUFFIXES = {
    ".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz", ".zip": "zip",
}  # fmt: skip


def _csv_chunks(
    path: DataFile, source: SourceConfig, columns: list[str] | None, start_row: int
) -> Iterator[Chunk]:
    assembler: _ChunkAssembler | None = None

    def rows_done() -> int:
        return 0 if assembler is None else assembler.known_through()

    with _csv_errors(path, rows_done), _open_text(path, source) as stream:
        scanner = _scanner(stream, source.csv)
        names, header = _read_header(path, source, scanner)
        missing = sorted(set(columns or []) - set(names))
        if missing:
            raise SourceError(f"{path}: no column {', '.join(map(repr, missing))}")
        assembler = _ChunkAssembler(path, source, header, columns, start_row)
        for records in scanner.records():
            assembler.add(records)
            yield from assembler.ready()
        yield from assembler.rest()


class _ChunkAssembler:
    """Cuts the scanner's records into chunks of `chunk_rows` consecutive data rows and has
    arrow parse each chunk's good records.

    Rows before `start_row` (resume) are dropped unparsed. A record arrow finds with the
    wrong number of fields, one whose bytes are not in the encoding, and one the scanner set
    aside are the chunk's `malformed` rows, each with its full raw text and lines.
    """

    def __init__(
        self,
        path: DataFile,
        source: SourceConfig,
        header: bytes,
        columns: list[str] | None,
        start_row: int,
    ) -> None:
        self.path = path
        self.source = source
        self.header = header
        self.columns = columns
        self.start_row = start_row
        self.encoding = _text_encoding(source)
        self.text_columns = {name: pa.string() for name in _names_of(header, source.csv)}
        self._pending: list[Records] = []
        self._bad: list[BadRecord] = []
        self._known = 0  # data rows numbered so far
        self._chunk_start = start_row

    def known_through(self) -> int:
        return self._known

    def add(self, records: Records) -> None:
        if len(records.rows):
            self._known = max(self._known, int(records.rows[-1]))
            self._pending.append(records)
        for bad in records.bad:
            self._known = max(self._known, bad.row)
            self._bad.append(bad)

    def ready(self) -> Iterator[Chunk]:
        rows = self.source.chunk_rows
        while self._chunk_start + rows - 1 <= self._known:
            yield self._cut(self._chunk_start + rows - 1)

    def rest(self) -> Iterator[Chunk]:
        while self._chunk_start <= self._known:
            yield self._cut(min(self._chunk_start + self.source.chunk_rows - 1, self._known))

    def _cut(self, last: int) -> Chunk:
        """The chunk of data rows `_chunk_start..last`."""
        first = self._chunk_start
        self._chunk_start = last + 1
        pieces: list[Records] = []
        kept: list[Records] = []
        for records in self._pending:
            upto = int(np.searchsorted(records.rows, last, side="right"))
            if upto:
                pieces.append(_sliced(records, 0, upto))
            if upto < len(records.rows):
                kept.append(_sliced(records, upto, len(records.rows)))
        self._pending = kept
        bad = [b for b in self._bad if b.row <= last]
        self._bad = [b for b in self._bad if b.row > last]
        if first > self.start_row or any(len(p.rows) and p.rows[0] < first for p in pieces):
            pieces = [_sliced(p, int(np.searchsorted(p.rows, first)), len(p.rows)) for p in pieces]
            bad = [b for b in bad if b.row >= first]
        return self._parse(pieces, bad)

    def _parse(self, pieces: list[Records], bad: list[BadRecord]) -> Chunk:
        malformed = [Malformed(b.row, b.text, b.reason, b.first_line, b.last_line) for b in bad]
        parts: list[bytes] = [self.header]
        span_starts: list[np.ndarray] = []  # each good record's span in the payload
        span_ends: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        offset = len(self.header)
        for piece in (run for whole in pieces for run in _contiguous(whole)):
            for run, decoded, problems in _decoded_runs(piece, self.encoding):
                for index, reason in problems:
                    undecodable = piece.data[piece.starts[index] : piece.ends[index]]
                    malformed.append(
                        Malformed(
                            int(piece.rows[index]),
                            _without_line_end(
                                undecodable.decode(self.encoding, errors="backslashreplace")
                            ),
                            reason,
                            int(piece.first_lines[index]),
                            int(piece.last_lines[index]),
                        )
                    )
                if run is None:
                    continue
                lo, hi = run
                base = int(piece.starts[lo])
                starts = piece.starts[lo:hi] - base + offset
                ends = piece.ends[lo:hi] - base + offset
                if not decoded.endswith((b"\n", b"\r")):
                    decoded += b"\n"
                span_starts.append(starts)
                span_ends.append(ends)
                rows.append(piece.rows[lo:hi])
                lines.append(piece.first_lines[lo:hi])
                # Re-encoding can change lengths: offsets only matter for UTF-8 input.
                offset += len(decoded)
                parts.append(decoded)
        good_rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        good_lines = np.concatenate(lines) if lines else np.empty(0, np.int64)
        payload = b"".join(parts)
        frame, wrong = self._arrow_frame(payload, len(good_rows))
        keep = np.ones(len(good_rows), dtype=bool)
        if wrong:
            spans = list(
                zip(
                    np.concatenate(span_starts).tolist(),
                    np.concatenate(span_ends).tolist(),
                    strict=True,
                )
            )
        for position, (rule, arrow_text) in wrong:
            keep[position] = False
            start, end = spans[position] if self.encoding_is_utf8 else (0, 0)
            as_read = payload[start:end].decode("utf-8", errors="backslashreplace")
            text = _without_line_end(as_read) or arrow_text
            malformed.append(
                Malformed(
                    int(good_rows[position]),
                    text,
                    rule,
                    int(good_lines[position]),
                    _last_line(int(good_lines[position]), text),
                )
            )
        frame.index = _row_index(good_rows[keep])
        malformed.sort(key=lambda m: m.row)
        all_rows = np.concatenate([good_rows, np.array([m.row for m in malformed], np.int64)])
        all_lines = np.concatenate(
            [good_lines, np.array([m.first_line for m in malformed], np.int64)]
        )
        order = np.argsort(all_rows, kind="stable")
        warnings = [
            f"{self.path}: data row {m.row} is a malformed record spanning lines "
            f"{m.first_line}-{m.last_line} (a stray quote can join lines); it is in the "
            "dead-letter file with its full text"
            for m in malformed
            if m.last_line > m.first_line
        ]
        return Chunk(
            source=str(self.path),
            frame=frame,
            malformed=malformed,
            lines=LineMap(all_rows[order], all_lines[order]),
            warnings=warnings,
            control_free=_CONTROL_BYTES.search(payload) is None,
        )

    @property
    def encoding_is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    def _arrow_frame(
        self, payload: bytes, records: int
    ) -> tuple[pd.DataFrame, list[tuple[int, tuple[str, str]]]]:
        """The good records parsed, and those arrow found with the wrong number of fields:
        (position among the records, (reason, arrow's text of it))."""
        wrong: list[tuple[int, tuple[str, str]]] = []

        def on_invalid(row: pa_csv.InvalidRow) -> str:
            reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
            if row.number is None:
                raise SourceError(f"{self.path}: a record's number is unknown ({reason})")
            wrong.append((row.number - 2, (reason, row.text)))
            return "skip"

        options = self.source.csv
        table = pa_csv.read_csv(
            pa.BufferReader(payload),
            read_options=pa_csv.ReadOptions(
                use_threads=False, block_size=max(len(payload) + 1, 1 << 20)
            ),
            parse_options=_parse_options(options, on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types=self.text_columns,
                include_columns=self.columns or [],
                null_values=list(self.source.null_values),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        if table.num_rows + len(wrong) != records:
            raise SourceError(
                f"{self.path}: cannot split the records after data row {self._chunk_start - 1} "
                "consistently (an unusual quoting?); set source.csv.quotechar / escapechar"
            )
        return table.to_pandas(types_mapper=pd.ArrowDtype), wrong


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


def _row_index(numbers: np.ndarray) -> pd.Index:
    if len(numbers) and int(numbers[-1]) - int(numbers[0]) == len(numbers) - 1:
        return pd.RangeIndex(int(numbers[0]), int(numbers[-1]) + 1)
    index: pd.Index = pd.Index(numbers, dtype="int64")
    return index


@contextmanager
def _csv_errors(path: DataFile, rows_done: Callable[[], int]) -> Iterator[None]:
    """Turns the reader's exceptions into SourceErrors naming the file and about where."""
    try:
        yield
    except SourceError:
        raise
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{path}: not valid {error.encoding} after data row {rows_done()} "
            f"(bytes {error.object[error.start : error.end]!r}); set source.csv.encoding"
        ) from None
    except pa.ArrowInvalid as error:
        raise SourceError(
            f"{path}: cannot parse CSV after data row {rows_done()}: {_printable(str(error))}"
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
        raise SourceError(f"{path}: cannot read: {_printable(str(error))}") from None


def _printable(text: str) -> str:
    """Text safe for a terminal: control characters and odd bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _names_of(header: bytes, options: CsvOptions) -> list[str]:
    table = pa_csv.read_csv(
        pa.BufferReader(header),
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=_parse_options(options, _skip_invalid),
    )
    return list(table.schema.names)


def _last_line(first: int, text: str) -> int:
    return first + text.count("\n")


def _without_line_end(text: str) -> str:
    """A record's text without the newline that ends it (quoted newlines stay)."""
    for end in ("\r\n", "\n", "\r"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


def _contiguous(records: Records) -> Iterator[Records]:
    """The records in runs that sit next to each other in `data` (records set aside, and
    blank lines, leave gaps)."""
    gaps = np.flatnonzero(records.starts[1:] != records.ends[:-1]) + 1
    bounds = [0, *gaps.tolist(), len(records.rows)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            yield _sliced(records, lo, hi)


def _sliced(records: Records, lo: int, hi: int) -> Records:
    return Records(
        records.data,
        records.starts[lo:hi],
        records.ends[lo:hi],
        records.rows[lo:hi],
        records.first_lines[lo:hi],
        records.last_lines[lo:hi],
    )


def _decoded_runs(
    piece: Records, encoding: str
) -> Iterator[tuple[tuple[int, int] | None, bytes, list[tuple[int, str]]]]:
    """The piece's records as UTF-8, in runs between records whose bytes are not valid in
    `encoding`: (record index range or None, UTF-8 bytes, [(bad record index, reason)])."""
    count = len(piece.rows)
    if not count:
        return
    utf8 = codecs.lookup(encoding).name == "utf-8"
    lo = 0
    while lo < count:
        start = int(piece.starts[lo])
        end = int(piece.ends[count - 1])
        raw = piece.data[start:end]
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as error:
            at = start + error.start
            bad = int(np.searchsorted(piece.ends, at, side="right"))
            good = piece.data[start : int(piece.starts[bad])]
            # The bytes as a quoted value (as rules show values), so reasons group by rule.
            shown = repr(error.object[error.start : error.end])[1:]
            reason = (
                f"bytes not valid in {encoding}: {shown} (set source.csv.encoding if the file"
                " is not all in one encoding)"
            )
            run = (lo, bad) if bad > lo else None
            decoded = good if utf8 else good.decode(encoding).encode("utf-8")
            yield run, decoded, [(bad, reason)]
            lo = bad + 1
            continue
        yield (lo, count), raw if utf8 else text.encode("utf-8"), []
        return


# --- Parquet -----------------------------------------------------------------------------


def _parquet_file(file: DataFile) -> pq.ParquetFile:
    path = file
    try:
        # Spark's INT96 timestamps in microseconds: as nanoseconds, values outside 1677-2262
        # (9999-12-31, the usual "no end") would wrap around silently.
        # A remote object is read by ranges (footer, then the column chunks it needs).
        source = file.local if file.local is not None else file.open()
        return pq.ParquetFile(source, coerce_int96_timestamp_unit="us")
    except OSError as error:
        raise SourceError(f"{path}: cannot read as Parquet: {error}") from None
    except pa.ArrowInvalid as error:
        raise SourceError(f"{path}: not a Parquet file: {error}") from None


def parquet_schema(file: DataFile | Path) -> pa.Schema:
    """A Parquet file's arrow schema, as the reader sees it (INT96 in microseconds)."""
    return _parquet_file(as_data_file(file)).schema_arrow


def _parquet_chunks(
    path: DataFile, source: SourceConfig, columns: list[str] | None, start_row: int
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
    return {str(column): _json_value(_cell(frame, row, column)) for column in frame.columns}


def _cell(frame: pd.DataFrame, row: int, column: Any) -> Any:
    try:
        return frame.at[row, column]
    except (OverflowError, ValueError):
        # A value Python cannot hold (a timestamp past year 9999): arrow writes it as text.
        position = int(np.flatnonzero(frame.index == row)[0])
        cell = pa.array(frame[column].iloc[position : position + 1])
        return pa.compute.cast(cell, pa.string())[0].as_py()


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
