"""Splits a CSV byte stream into records as arrow's parser does, each with its physical lines.

Arrow's CSV reader knows records, not lines, and one unterminated quote makes the rest of
the file a single record. This scanner finds the record boundaries first, so that:
- every record knows the physical lines it spans (`sed -n LINEp` finds it);
- a quoted field still open after `max_record_bytes`, or at the end of the file, costs only
  the line it opened on: that line is set aside as malformed and the scan starts again on
  the next line, so a stray quote cannot swallow the rows after it;
- bytes that are not valid in the file's encoding make their record (only) malformed.
Arrow then parses the good records, a chunk at a time, as UTF-8.

Quoting follows arrow's parser: a quote opens a quoted field only at the start of a field;
inside one, a doubled quote is a literal quote; after the closing quote the field goes on
unquoted until the delimiter. A record ends at a newline (LF, CRLF, or a bare CR) outside
quotes; empty lines are not records. Blocks whose quotes all sit where the simple parity
rule gives the same answer are split with numpy; the others go through an exact scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

READ_BYTES = 1 << 20
LF, CR = 10, 13

# What follows the complete records in the buffer: a record not yet ended, one inside an open
# quoted field, or one whose multi-line quoted field closed mid-field (a stray quote).
OPEN, QUOTED, STRAY = "open", "quoted", "stray"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class BadRecord:
    """A record set aside before parsing: its data row, lines, full raw text and the reason."""

    row: int
    first_line: int
    last_line: int
    text: str
    reason: str


@dataclass(slots=True)
class Records:
    """Consecutive records of one stretch of the file, in order.

    `data` holds the good records' bytes (in the file's encoding), `starts`/`ends` their
    spans in it (the end is past the record's line end); `rows`, `first_lines` and
    `last_lines` are per good record. `bad` are the records set aside in this stretch.
    """

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    rows: np.ndarray
    first_lines: np.ndarray
    last_lines: np.ndarray
    bad: list[BadRecord] = field(default_factory=list)


class RecordScanner:
    """Reads a CSV byte stream and hands out its header and then its records, numbered.

    `header()` must be called first. Data rows are numbered from 1 (blank lines are not
    rows); lines from 1, counting every LF of the file.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        delimiter: str,
        quotechar: str | None,
        escapechar: str | None,
        max_record_bytes: int,
        read_bytes: int = READ_BYTES,
    ) -> None:
        self._stream = stream
        self._delimiter = delimiter.encode("ascii")[0]
        self._quote = quotechar.encode("ascii")[0] if quotechar else None
        self._escape = escapechar.encode("ascii")[0] if escapechar else None
        self.max_record_bytes = max_record_bytes
        self._read_bytes = read_bytes
        self._buffer = b""
        self._line = 1  # the line of _buffer[0]
        self._eof = False
        self._next_row = 1
        self._first_read = True
        special = re.escape(bytes([self._delimiter])) + b"\n\r"
        if self._escape is not None:
            special += re.escape(bytes([self._escape]))
        self._unquoted_special = re.compile(b"[" + special + b"]")
        inside = re.escape(bytes([self._quote])) if self._quote is not None else b""
        if self._escape is not None:
            inside += re.escape(bytes([self._escape]))
        self._quoted_special = re.compile(b"[" + inside + b"]") if inside else None

    # --- reading ------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read one more block into the buffer; False at the end of the stream."""
        if self._eof:
            return False
        block = self._stream.read(self._read_bytes)
        if self._first_read:
            self._first_read = False
            if block.startswith(UTF8_BOM):
                block = block[len(UTF8_BOM) :]
        if not block:
            self._eof = True
            return False
        self._buffer += block
        return True

    def _consume(self, count: int) -> None:
        self._line += self._buffer.count(b"\n", 0, count)
        self._buffer = self._buffer[count:]

    # --- the header -----------------------------------------------------------------------

    def header(self) -> tuple[bytes, int] | None:
        """The first record's bytes (line end included) and its first line; None if no record.

        A first record that cannot be split (an open quote, no line end within
        `max_record_bytes`) is its first line, for the caller to judge."""
        while True:
            ends, _state = self._split()
            start = 0
            for end in ends:
                if self._buffer[start:end].strip(b"\r\n"):
                    self._consume(start)
                    line = self._line
                    record = self._buffer[: end - start]
                    self._consume(end - start)
                    return record, line
                start = end
            if ends:
                self._consume(start)
                continue
            if len(self._buffer) <= self.max_record_bytes and self._fill():
                continue
            if not self._buffer.strip(b"\r\n"):
                return None
            newline = self._buffer.find(b"\n", 0, self.max_record_bytes)
            end = min(len(self._buffer), self.max_record_bytes) if newline < 0 else newline + 1
            record, line = self._buffer[:end], self._line
            self._consume(end)
            return record, line

    # --- records ------------------------------------------------------------------------

    def records(self) -> Iterator[Records]:
        """The data records, a read block at a time, until the end of the stream."""
        while True:
            ends, state = self._split()
            if ends:
                yield self._take(ends)
                continue
            if state == STRAY:
                yield self._set_aside_first_line(state, at_end=False)
                continue
            if len(self._buffer) > self.max_record_bytes:
                yield self._set_aside_first_line(state, at_end=False)
                continue
            if not self._eof:
                self._fill()
                continue  # split again: at the end, a last quote or CR is no longer in doubt
            if not self._buffer:
                return
            if state != OPEN:
                yield self._set_aside_first_line(state, at_end=True)
                continue
            self._buffer += b"\n"  # the last record had no line end

    def _take(self, ends: list[int]) -> Records:
        """The records ending at `ends` (offsets past their line ends), consumed."""
        buffer = self._buffer
        last = ends[-1]
        bounds = np.asarray(ends, dtype=np.int64)
        starts = np.concatenate(([0], bounds[:-1]))
        newlines = np.flatnonzero(np.frombuffer(buffer, np.uint8, count=last) == LF)
        first = self._line + np.searchsorted(newlines, starts)
        # The last content byte's line: the record's own LF does not start a new line.
        last_lines = self._line + np.searchsorted(newlines, bounds - 1)
        candidates = np.flatnonzero(bounds - starts <= 2)  # "\n", "\r\n", "\r": blank lines
        blank = [int(i) for i in candidates if not buffer[starts[i] : bounds[i]].strip(b"\r\n")]
        if blank:
            keep = np.ones(len(starts), dtype=bool)
            keep[blank] = False
            starts, bounds = starts[keep], bounds[keep]
            first, last_lines = first[keep], last_lines[keep]
        rows = np.arange(self._next_row, self._next_row + len(starts), dtype=np.int64)
        self._next_row += len(starts)
        self._consume(last)
        too_long = np.flatnonzero(bounds - starts > self.max_record_bytes)
        bad = [
            BadRecord(
                int(rows[i]),
                int(first[i]),
                int(last_lines[i]),
                _text(buffer[int(starts[i]) : int(bounds[i])]),
                f"the record is longer than source.csv.max_record_bytes "
                f"({self.max_record_bytes:,} bytes); raise it if the record is real",
            )
            for i in too_long
        ]
        if bad:
            keep = np.ones(len(starts), dtype=bool)
            keep[too_long] = False
            starts, bounds, rows = starts[keep], bounds[keep], rows[keep]
            first, last_lines = first[keep], last_lines[keep]
        return Records(buffer[:last], starts, bounds, rows, first, last_lines, bad)

    def _set_aside_first_line(self, state: str, *, at_end: bool) -> Records:
        """The record at the buffer's start cannot be split: set aside its first line only."""
        limit = self.max_record_bytes
        newline = self._buffer.find(b"\n")
        while newline < 0 and not self._eof and len(self._buffer) <= 64 * limit:
            self._fill()
            newline = self._buffer.find(b"\n")
        end = len(self._buffer) if newline < 0 else newline + 1
        raw = self._buffer[:end]
        line = self._line
        if state == STRAY:
            reason = (
                "unterminated quote: the quoted field opened on this line closes on a later "
                "line in the middle of a field, so it is taken for a stray quote; this line is "
                "set aside and reading goes on with the next line"
            )
        elif state == QUOTED:
            where = "the end of the file" if at_end else f"{limit:,} bytes"
            reason = (
                "unterminated quote: a quoted field opened on this line is still open at "
                f"{where}; this line is set aside and reading goes on with the next line "
                "(if the record really is that long, raise source.csv.max_record_bytes)"
            )
        else:
            reason = (
                f"record longer than source.csv.max_record_bytes ({limit:,} bytes); "
                "raise it if the record is real"
            )
        cut = raw[:limit]
        text = _text(cut)
        if len(cut) < len(raw):
            text += "…"
            reason += f" (its text is cut at {limit:,} bytes)"
        bad = BadRecord(self._next_row, line, line, text, reason)
        self._next_row += 1
        self._consume(end)
        empty = np.empty(0, np.int64)
        return Records(b"", empty, empty, empty, empty, empty, [bad])

    # --- splitting ----------------------------------------------------------------------

    def _split(self) -> tuple[list[int], str]:
        """Offsets past each complete record's line end in the buffer, and the state of the
        rest (OPEN, QUOTED, or STRAY: the next record's quote is taken for a stray one)."""
        buffer = self._buffer
        if not buffer:
            return [], OPEN
        fast = self._split_by_parity(buffer)
        if fast is not None and fast[0]:
            return fast
        # Counting found no record end (or cannot be trusted here): a literal quote inside a
        # field would make it read the rest of the buffer as quoted, so scan exactly.
        return self._split_exactly(buffer)

    def _terminators(self, bytes_: np.ndarray) -> np.ndarray:
        """LFs, and CRs not followed by an LF (a CR at the very end waits for more input)."""
        n = len(bytes_)
        lf = np.flatnonzero(bytes_ == LF)
        cr = np.flatnonzero(bytes_ == CR)
        if not len(cr):
            return lf
        following = np.minimum(cr + 1, n - 1)
        bare = cr[(bytes_[following] != LF) & (cr + 1 < n)]
        if self._eof and len(cr) and cr[-1] == n - 1:
            bare = np.append(bare, n - 1)
        return np.union1d(lf, bare) if len(bare) else lf

    def _split_by_parity(self, buffer: bytes) -> tuple[list[int], str] | None:
        """Record ends by counting quotes, or None when some quote is placed where counting
        would disagree with arrow (or an escape character is set)."""
        if self._escape is not None:
            return None
        bytes_ = np.frombuffer(buffer, np.uint8)
        terms = self._terminators(bytes_)
        if self._quote is None:
            return (terms + 1).tolist(), OPEN
        quotes = np.flatnonzero(bytes_ == self._quote)
        if not len(quotes):
            return (terms + 1).tolist(), OPEN
        before = np.searchsorted(quotes, terms)
        outside = terms[before % 2 == 0]
        if not len(outside):
            return None
        checked = quotes[quotes < outside[-1]]
        if not self._parity_agrees(bytes_, checked):
            return None
        return (outside + 1).tolist(), QUOTED if (len(quotes) - len(checked)) % 2 else OPEN

    def _parity_agrees(self, bytes_: np.ndarray, quotes: np.ndarray) -> bool:
        """Each opening quote starts a field and each closing one ends it (or doubles)."""
        if not len(quotes):
            return True
        n = len(bytes_)
        boundary = np.array([self._delimiter, LF, CR], dtype=np.uint8)
        openers, closers = quotes[0::2], quotes[1::2]
        previous = bytes_[np.maximum(openers - 1, 0)]
        at_start = (openers == 0) | np.isin(previous, boundary)
        doubled = np.zeros(len(openers), dtype=bool)
        doubled[1:] = closers[: len(openers) - 1] == openers[1:] - 1
        if not (at_start | doubled).all():
            return False
        after = closers + 1
        inside = after < n
        following = bytes_[np.minimum(after, n - 1)]
        closing = np.append(boundary, np.uint8(self._quote or 0))
        ends = np.isin(following, closing) & inside
        return bool((ends | (~inside & self._eof)).all())

    def _split_exactly(self, buffer: bytes) -> tuple[list[int], str]:
        """Arrow's state machine over the buffer, jumping from one special byte to the next.

        One departure: a quoted field that runs over a line end and then closes in the
        middle of a field (`"Doe, J` ... `"two` on a later line) is taken for a stray quote
        (STRAY), rather than joining every line between into one record as arrow would."""
        ends: list[int] = []
        n = len(buffer)
        pos = 0
        field_start = True
        while pos < n:
            if field_start and self._quote is not None and buffer[pos] == self._quote:
                closed = self._past_quoted(buffer, pos)
                if closed is None:
                    return ends, QUOTED
                if (
                    closed < n
                    and buffer[closed] not in (self._delimiter, LF, CR)
                    and buffer.find(b"\n", pos, closed) >= 0
                ):
                    return ends, STRAY
                pos, field_start = closed, False
                continue
            match = self._unquoted_special.search(buffer, pos)
            if match is None:
                return ends, OPEN
            at = match.start()
            byte = buffer[at]
            if byte == self._delimiter:
                pos, field_start = at + 1, True
            elif byte == LF:
                ends.append(at + 1)
                pos, field_start = at + 1, True
            elif byte == CR:
                if at + 1 >= n and not self._eof:
                    return ends, OPEN
                pos = at + 2 if at + 1 < n and buffer[at + 1] == LF else at + 1
                ends.append(pos)
                field_start = True
            else:  # the escape character: the next byte is literal
                pos, field_start = at + 2, False
        return ends, OPEN

    def _past_quoted(self, buffer: bytes, opened: int) -> int | None:
        """Where the quoted field whose quote is at `opened` ends (past its closing quote);
        None while it is still open in the buffer."""
        assert self._quoted_special is not None
        n = len(buffer)
        pos = opened + 1
        while True:
            match = self._quoted_special.search(buffer, pos)
            if match is None:
                return None
            at = match.start()
            if at + 1 >= n and not self._eof:
                return None  # a quote or escape at the end: need the next byte
            if buffer[at] == self._escape or (at + 1 < n and buffer[at + 1] == self._quote):
                pos = at + 2  # an escaped byte, or a doubled quote: a literal
                continue
            return at + 1


def _text(raw: bytes) -> str:
    """A record's bytes as text for the dead-letter file: its line end dropped, bytes that
    are not UTF-8 shown escaped."""
    return raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", errors="backslashreplace")
