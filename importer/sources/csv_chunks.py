"""Cuts the scanner's CSV records into numbered chunks; arrow parses each chunk's good ones."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from importer.config import SourceConfig
from importer.rows import Chunk, LineMap, Malformed, RowFilter
from importer.sources.csv_text import has_control_bytes, names_of, parse_options, text_encoding
from importer.sources.csvrecords import BadRecord, Records
from importer.sources.datafile import DataFile, SourceError


class ChunkAssembler:
    """Cuts the scanner's records into chunks of `chunk_rows` consecutive data rows and has
    arrow parse each chunk's good records.

    Rows before `start_row` (resume) are dropped unparsed. A record arrow finds with the
    wrong number of fields, one whose bytes are not in the encoding, and one the scanner set
    aside are the chunk's `malformed` rows, each with its full raw text and lines. With a
    `row_filter`, the rows it leaves out are dropped from the parsed table, before the frame
    and the line map are made (`Chunk.other_rows` counts them).
    """

    def __init__(
        self,
        path: DataFile,
        source: SourceConfig,
        header: bytes,
        columns: list[str] | None,
        start_row: int,
        row_filter: RowFilter | None = None,
    ) -> None:
        self.path = path
        self.row_filter = row_filter
        self.source = source
        self.header = header
        self.columns = columns
        self.start_row = start_row
        self.encoding = text_encoding(source)
        self.text_columns = {name: pa.string() for name in names_of(header, source.csv)}
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
        payload = _Payload(self.header)
        for piece in (run for whole in pieces for run in _contiguous(whole)):
            for run, decoded, problems in _decoded_runs(piece, self.encoding):
                malformed.extend(_undecodable(piece, problems, self.encoding))
                if run is not None:
                    payload.add(piece, run, decoded)
        good_rows, good_lines = payload.rows(), payload.lines()
        data = payload.data()
        table, wrong = self._arrow_table(data, len(good_rows))
        keep = np.ones(len(good_rows), dtype=bool)
        spans = payload.spans() if wrong else []
        for position, (rule, arrow_text) in wrong:
            keep[position] = False
            start, end = spans[position] if self.encoding_is_utf8 else (0, 0)
            as_read = data[start:end].decode("utf-8", errors="backslashreplace")
            text = _without_line_end(as_read) or arrow_text
            first_line = int(good_lines[position])
            malformed.append(
                Malformed(
                    int(good_rows[position]), text, rule, first_line, _last_line(first_line, text)
                )
            )
        rows, lines = good_rows[keep], good_lines[keep]
        malformed.sort(key=lambda m: m.row)
        other = 0
        if self.row_filter is not None:  # other slices' rows: parsed, never made into a frame
            mine = self.row_filter.mask(table.column(self.row_filter.column))
            if not mine.all():
                table, rows, lines = table.filter(pa.array(mine)), rows[mine], lines[mine]
            other = len(mine) - len(rows)
            if not self.row_filter.keep_malformed:
                other, malformed = other + len(malformed), []
        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
        frame.index = _row_index(rows)
        return Chunk(
            source=str(self.path),
            frame=frame,
            malformed=malformed,
            lines=_line_map(rows, lines, malformed),
            warnings=self._spanning(malformed),
            control_free=not has_control_bytes(data),
            other_rows=other,
        )

    def _spanning(self, malformed: list[Malformed]) -> list[str]:
        """A warning for each malformed record over more than one line."""
        return [
            f"{self.path}: data row {m.row} is a malformed record spanning lines "
            f"{m.first_line}-{m.last_line} (a stray quote can join lines); it is in the "
            "dead-letter file with its full text"
            for m in malformed
            if m.last_line > m.first_line
        ]

    @property
    def encoding_is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    def _arrow_table(
        self, payload: bytes, records: int
    ) -> tuple[pa.Table, list[tuple[int, tuple[str, str]]]]:
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
            parse_options=parse_options(options, on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types=self.text_columns,
                include_columns=self.columns or [],
                # An empty cell, quoted or not, is missing whatever null_values says: `""`
                # is never sent (it would blank the attribute).
                null_values=list(dict.fromkeys([*self.source.null_values, ""])),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        if table.num_rows + len(wrong) != records:
            raise SourceError(
                f"{self.path}: cannot split the records after data row {self._chunk_start - 1} "
                "consistently (an unusual quoting?); set source.csv.quotechar / escapechar"
            )
        return table, wrong


class _Payload:
    """The header and a chunk's good records as one UTF-8 text for arrow, with each record's
    span in it, data row and first line."""

    def __init__(self, header: bytes) -> None:
        self._parts: list[bytes] = [header]
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._lines: list[np.ndarray] = []
        self._offset = len(header)

    def add(self, piece: Records, run: tuple[int, int], decoded: bytes) -> None:
        """The records `run` (an index range) of `piece`, whose UTF-8 text is `decoded`."""
        lo, hi = run
        base = int(piece.starts[lo])
        if not decoded.endswith((b"\n", b"\r")):
            decoded += b"\n"
        self._starts.append(piece.starts[lo:hi] - base + self._offset)
        self._ends.append(piece.ends[lo:hi] - base + self._offset)
        self._rows.append(piece.rows[lo:hi])
        self._lines.append(piece.first_lines[lo:hi])
        # Re-encoding can change lengths: offsets only matter for UTF-8 input.
        self._offset += len(decoded)
        self._parts.append(decoded)

    def data(self) -> bytes:
        return b"".join(self._parts)

    def rows(self) -> np.ndarray:
        return np.concatenate(self._rows) if self._rows else np.empty(0, np.int64)

    def lines(self) -> np.ndarray:
        return np.concatenate(self._lines) if self._lines else np.empty(0, np.int64)

    def spans(self) -> list[tuple[int, int]]:
        """Each good record's (start, end) in `data()`."""
        return list(
            zip(
                np.concatenate(self._starts).tolist(),
                np.concatenate(self._ends).tolist(),
                strict=True,
            )
        )


def _undecodable(
    piece: Records, problems: list[tuple[int, str]], encoding: str
) -> Iterator[Malformed]:
    """The records of `piece` whose bytes are not valid in `encoding`, as malformed rows."""
    for index, reason in problems:
        raw = piece.data[piece.starts[index] : piece.ends[index]]
        yield Malformed(
            int(piece.rows[index]),
            _without_line_end(raw.decode(encoding, errors="backslashreplace")),
            reason,
            int(piece.first_lines[index]),
            int(piece.last_lines[index]),
        )


def _line_map(good_rows: np.ndarray, good_lines: np.ndarray, malformed: list[Malformed]) -> LineMap:
    """Where each data row of the chunk starts, good and malformed, in row order."""
    all_rows = np.concatenate([good_rows, np.array([m.row for m in malformed], np.int64)])
    all_lines = np.concatenate([good_lines, np.array([m.first_line for m in malformed], np.int64)])
    order = np.argsort(all_rows, kind="stable")
    return LineMap(all_rows[order], all_lines[order])


def _row_index(numbers: np.ndarray) -> pd.Index:
    if len(numbers) and int(numbers[-1]) - int(numbers[0]) == len(numbers) - 1:
        return pd.RangeIndex(int(numbers[0]), int(numbers[-1]) + 1)
    index: pd.Index = pd.Index(numbers, dtype="int64")
    return index


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
