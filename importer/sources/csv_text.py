"""What the CSV reader and its chunk assembler share: arrow's options, the encoding, errors."""

from __future__ import annotations

import csv
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import zstandard

from importer.config import CsvOptions, SourceConfig
from importer.sources.compression import open_compressed
from importer.sources.datafile import DataFile, SourceError
from importer.sources.encodings import TranscodedStream, is_ascii_compatible

# pyarrow's CSV parser, not pandas.read_csv: measured on 1M rows x 12 columns it parses in a
# third of the time and hands mapping arrow strings directly, which saves the conversion of
# every cell to a Python str and back (together ~2 s of ~7 s per million rows).
# The semantics match what the job file promises: every column is text, only
# `source.null_values` are missing ("NA", "null" stay text), quoted newlines stay in one
# record, a UTF-8 BOM is dropped, and blank lines are not rows.
# Record boundaries come from `csvrecords` first (lines, stray quotes, bad bytes); arrow
# parses only the good records, a chunk at a time, already UTF-8.

InvalidRowHandler = Callable[[pa_csv.InvalidRow], str]


def parse_options(options: CsvOptions, on_invalid: InvalidRowHandler) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quotechar or False,
        escape_char=options.escapechar or False,
        double_quote=True,
        newlines_in_values=True,
        invalid_row_handler=on_invalid,
    )


def open_text(file: DataFile, source: SourceConfig, block_size: int | None = None) -> BinaryIO:
    """The decompressed bytes, re-encoded as UTF-8 if the encoding's newlines are not ASCII."""
    stream = open_compressed(file, source.csv.compression, block_size)
    if is_ascii_compatible(source.csv.encoding):
        return stream
    return TranscodedStream(stream, source.csv.encoding)  # type: ignore[return-value]


def text_encoding(source: SourceConfig) -> str:
    """The encoding of the bytes the scanner sees."""
    return source.csv.encoding if is_ascii_compatible(source.csv.encoding) else "utf-8"


CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_TABLE = bytes(b for b in range(256) if CONTROL_BYTES.match(bytes([b])))


def has_control_bytes(data: bytes) -> bool:
    """Whether `data` holds a control byte (other than tab and line ends): by deleting them
    and comparing lengths, a few times faster than the regex's search over megabytes."""
    return len(data.translate(None, _CONTROL_TABLE)) != len(data)


def skip_invalid(_row: pa_csv.InvalidRow) -> str:
    return "skip"


@contextmanager
def csv_errors(path: DataFile, rows_done: Callable[[], int]) -> Iterator[None]:
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


def names_of(header: bytes, options: CsvOptions) -> list[str]:
    """The column names of a header record (UTF-8), parsed as arrow parses the data, but
    by Python's csv module: arrow builds a column per field to read one line, about 10 KB
    each, so a header of 100k columns took a gigabyte."""
    text = header.decode("utf-8")
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=options.delimiter,
        quotechar=options.quotechar or None,
        escapechar=options.escapechar or None,
        doublequote=True,
        quoting=csv.QUOTE_MINIMAL if options.quotechar else csv.QUOTE_NONE,
        strict=False,
    )
    try:
        return next(reader)
    except (csv.Error, StopIteration) as error:
        raise ValueError(f"cannot read the header line: {error}") from None
