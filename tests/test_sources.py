"""Sources: finding files, reading CSV / Parquet into numbered chunks, records, fingerprints."""

from __future__ import annotations

import bz2
import datetime as dt
import decimal
import gzip
import lzma
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from importer import sources
from importer.config import CsvOptions, SourceConfig
from importer.rows import RowCount
from importer.sources import (
    DataFile,
    SourceError,
    count_rows,
    discover,
    fingerprint,
    format_of,
    iter_chunks,
    read_columns,
    record_of,
)

TEXT = 'id,name,note\n00123,"Doe, Jane","line one\nline two"\n+7,NA,\n3,null,None\n'


def rows_of(path: Path, source: SourceConfig, **options: Any) -> list[tuple[int, dict[str, Any]]]:
    """(row number, record) for every row, across chunks."""
    return [
        (int(number), record_of(chunk.frame, number))
        for chunk in iter_chunks(path, source, **options)
        for number in chunk.frame.index
    ]


def local_paths(files: list[DataFile]) -> list[Path | None]:
    return [f.local for f in files]


def test_discover_file_directory_glob_and_nothing(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv.gz", "c.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert local_paths(discover(str(tmp_path / "b.csv"))) == [tmp_path / "b.csv"]
    assert local_paths(discover(str(tmp_path))) == [
        tmp_path / n for n in ("a.csv.gz", "b.csv", "c.parquet")
    ]
    assert local_paths(discover(str(tmp_path / "*.csv*"))) == [
        tmp_path / "a.csv.gz",
        tmp_path / "b.csv",
    ]
    with pytest.raises(SourceError, match=r"no files match .*\*\.json"):
        discover(str(tmp_path / "*.json"))
    with pytest.raises(SourceError, match="no CSV or Parquet files"):
        (tmp_path / "empty").mkdir()
        discover(str(tmp_path / "empty"))


def test_format_of() -> None:
    assert format_of(Path("a.csv.zst"), sources.SourceFormat.AUTO) == "csv"
    assert format_of(Path("a.parquet"), sources.SourceFormat.AUTO) == "parquet"
    assert format_of(Path("a.dat"), sources.SourceFormat.PARQUET) == "parquet"
    with pytest.raises(SourceError, match=r"a\.dat.*source\.format"):
        format_of(Path("a.dat"), sources.SourceFormat.AUTO)


def test_csv_bom_quotes_newlines_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("\ufeff".encode() + TEXT.encode())
    assert read_columns(path, SourceConfig()) == ["id", "name", "note"]
    assert rows_of(path, SourceConfig()) == [
        (1, {"id": "00123", "name": "Doe, Jane", "note": "line one\nline two"}),
        (2, {"id": "+7", "name": "NA", "note": None}),
        (3, {"id": "3", "name": "null", "note": "None"}),
    ]


def test_chunk_boundaries_keep_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("n\n" + "".join(f'"{i}\n"\n' for i in range(1, 11)))
    chunks = list(iter_chunks(path, SourceConfig(chunk_rows=3)))
    assert [len(c.frame) for c in chunks] == [3, 3, 3, 1]
    assert [list(c.frame.index) for c in chunks][1] == [4, 5, 6]
    assert all(c.source == str(path) for c in chunks)
    numbers = [n for c in chunks for n in c.frame.index]
    assert numbers == list(range(1, 11))
    assert [c.frame.at[n, "n"] for c in chunks for n in c.frame.index] == [
        f"{i}\n" for i in range(1, 11)
    ]


@pytest.mark.parametrize("start_row", [1, 2, 4, 7, 10, 11])
def test_start_row_csv(tmp_path: Path, start_row: int) -> None:
    path = tmp_path / "in.csv"
    path.write_text("n\n" + "".join(f'"{i}\nx"\n' for i in range(1, 11)))
    got = rows_of(path, SourceConfig(chunk_rows=3), start_row=start_row)
    assert [n for n, _ in got] == list(range(start_row, 11))
    assert all(record["n"] == f"{n}\nx" for n, record in got)


def test_other_delimiter_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("id;city\n1;Zürich\n2;São Paulo\n".encode("latin-1"))
    source = SourceConfig(csv=CsvOptions(delimiter=";", encoding="latin-1"))
    assert [r["city"] for _, r in rows_of(path, source)] == ["Zürich", "São Paulo"]


def test_bytes_not_in_the_encoding_make_only_their_row_malformed(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,city\n1,Z\xfcrich\n2,Bern\n")
    [chunk] = iter_chunks(path, SourceConfig())
    assert list(chunk.frame.index) == [2]
    [bad] = chunk.malformed
    assert (bad.row, bad.text, bad.first_line) == (1, "1,Z\\xfcrich", 2)
    assert "bytes not valid in utf-8: '\\xfc'" in bad.reason
    assert "source.csv.encoding" in bad.reason


def test_binary_garbage_is_refused_without_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    rng = random.Random(1)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    with pytest.raises(SourceError, match=r"in\.csv: .*not a CSV file") as caught:
        read_columns(path, SourceConfig())
    assert str(caught.value).isprintable()


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.csv"):
        read_columns(tmp_path / "nope.csv", SourceConfig())
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="empty"):
        read_columns(tmp_path / "empty.csv", SourceConfig())


def test_null_values(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('a,b,c\n\\N,,NA\n"",x,-\n')
    got = rows_of(path, SourceConfig(null_values=["\\N", "-"]))
    # An empty cell, quoted or not, is missing even when null_values leaves "" out.
    assert [r for _, r in got] == [
        {"a": None, "b": None, "c": "NA"},
        {"a": None, "b": "x", "c": None},
    ]
    default = rows_of(path, SourceConfig())
    assert [r for _, r in default] == [
        {"a": "\\N", "b": None, "c": "NA"},
        {"a": None, "b": "x", "c": "-"},
    ]


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".csv.gz", gzip.compress),
        (".csv.bz2", bz2.compress),
        (".csv.zst", lambda data: zstandard.ZstdCompressor().compress(data)),
    ],
)
def test_compressed_csv(tmp_path: Path, suffix: str, compress: Any) -> None:
    path = tmp_path / f"in{suffix}"
    path.write_bytes(compress(TEXT.encode()))
    assert read_columns(path, SourceConfig()) == ["id", "name", "note"]
    assert [r["id"] for _, r in rows_of(path, SourceConfig())] == ["00123", "+7", "3"]


def test_usecols_reads_only_those(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(TEXT)
    chunk = next(iter_chunks(path, SourceConfig(), columns=["note", "id"]))
    assert sorted(chunk.frame.columns) == ["id", "note"]
    # A column this part of an export lacks reads as empty (others may have it).
    chunk = next(iter_chunks(path, SourceConfig(), columns=["id", "missing"]))
    assert list(chunk.frame.columns) == ["id", "missing"]
    assert chunk.frame["missing"].isna().all() and chunk.frame["id"].tolist()[0] == "00123"


def write_parquet(path: Path, rows: int, group_rows: int) -> Path:
    table = pa.table({"n": pa.array(range(1, rows + 1), pa.int64())})
    pq.write_table(table, path, row_group_size=group_rows)
    return path


@pytest.mark.parametrize("start_row", [1, 2, 5, 6, 9, 13, 14])
def test_start_row_parquet(tmp_path: Path, start_row: int) -> None:
    path = write_parquet(tmp_path / "in.parquet", rows=13, group_rows=5)
    got = rows_of(path, SourceConfig(chunk_rows=4), start_row=start_row)
    assert [n for n, _ in got] == list(range(start_row, 14))
    assert [r["n"] for _, r in got] == list(range(start_row, 14))


def test_parquet_native_types_and_records(tmp_path: Path) -> None:
    table = pa.table(
        {
            "i": pa.array([1, None], pa.int64()),
            "b": pa.array([True, None]),
            "tz": pa.array(
                [dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")
            ),
            "naive": pa.array([dt.datetime(2024, 1, 1, 10), None], pa.timestamp("ms")),
            "d": pa.array([dt.date(2024, 1, 31), None], pa.date32()),
            "dec": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(10, 2)),
            "ls": pa.array([["a", "b"], None], pa.list_(pa.string())),
            "dic": pa.array(["x", None]).dictionary_encode(),
            "f": pa.array([0.5, float("nan")]),
        }
    )
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    assert read_columns(path, SourceConfig()) == table.column_names
    chunk = next(
        iter_chunks(
            path, SourceConfig(), columns=["i", "b", "tz", "naive", "d", "dec", "ls", "dic", "f"]
        )
    )
    assert str(chunk.frame["i"].dtype) == "int64[pyarrow]"
    first, second = record_of(chunk.frame, 1), record_of(chunk.frame, 2)
    assert first == {
        "i": 1,
        "b": True,
        "tz": "2024-01-01T10:00:00+00:00",
        "naive": "2024-01-01T10:00:00",
        "d": "2024-01-31",
        "dec": "1.50",
        "ls": ["a", "b"],
        "dic": "x",
        "f": 0.5,
    }
    assert set(second.values()) == {None}
    orjson.dumps(first)


def test_record_of_pandas_values() -> None:
    frame = pd.DataFrame(
        {"a": [pd.NA], "b": [float("nan")], "c": [pd.Timestamp("2024-01-01")]}, index=[7]
    )
    assert orjson.loads(orjson.dumps(record_of(frame, 7))) == {
        "a": None,
        "b": None,
        "c": "2024-01-01T00:00:00",
    }


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text("a\n1\n")
    first = fingerprint(small)
    assert fingerprint(small) == first
    small.write_text("a\n2\n")
    assert fingerprint(small) != first

    big = tmp_path / "big.bin"
    data = bytearray(b"x" * (6 << 20))
    big.write_bytes(data)
    before = fingerprint(big)
    data[-10] = ord("y")  # the tail is always sampled
    big.write_bytes(data)
    assert fingerprint(big) != before
    big.write_bytes(bytes(data) + b"z")
    assert fingerprint(big).startswith(f"{len(data) + 1}:")


def test_count_rows_exact_for_parquet_and_small_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(TEXT)
    parquet = write_parquet(tmp_path / "in.parquet", rows=13, group_rows=5)
    assert count_rows([csv_path, parquet], SourceConfig()) == RowCount(16, exact=True)
    gz = tmp_path / "in.csv.gz"
    gz.write_bytes(gzip.compress(TEXT.encode()))
    # A compressed file whose text fits in the sample is counted exactly too.
    assert count_rows([gz], SourceConfig()) == RowCount(3, exact=True)


def test_count_rows_estimates_large_csv(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("n,t\n" + "".join(f"{i:06d},text\n" for i in range(300_000)))
    estimate = count_rows([path], SourceConfig())
    assert estimate is not None and not estimate.exact
    assert abs(estimate.rows - 300_000) < 3_000


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd", "xz"])
def test_count_rows_estimates_compressed_csv_from_compressed_bytes(
    tmp_path: Path, codec: str
) -> None:
    rng = random.Random(3)
    text = "n,t\n" + "".join(f"{i:07d},{rng.random():.6f}\n" for i in range(400_000))
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }
    compress = compressors[codec]
    suffix = {"gzip": "gz", "bz2": "bz2", "zstd": "zst", "xz": "xz"}[codec]
    path = tmp_path / f"big.csv.{suffix}"
    path.write_bytes(compress(text.encode()))
    estimate = count_rows([path], SourceConfig())
    assert estimate is not None and not estimate.exact
    # "about": decompressors read ahead of what they hand out (bz2 by 900 kB blocks).
    assert abs(estimate.rows - 400_000) < 400_000 * 0.25, estimate


# --- malformed CSV records ---------------------------------------------------------------


def chunks_of(
    path: Path, source: SourceConfig, **options: Any
) -> list[tuple[list[Any], list[Any]]]:
    """(good row numbers, malformed rows) of every chunk."""
    return [
        (list(chunk.frame.index), triples(chunk.malformed))
        for chunk in iter_chunks(path, source, **options)
    ]


def triples(malformed: list[sources.Malformed]) -> list[tuple[int, str, str]]:
    """(row, text, reason) of each malformed record."""
    return [(m.row, m.text, m.reason) for m in malformed]


def fields(count: int) -> str:
    return f"expected 2 fields, found {count}"


def test_malformed_row_in_the_middle_keeps_its_number(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,x\n2,y\n3,z,extra\n4,w\n")
    [chunk] = iter_chunks(path, SourceConfig())
    assert list(chunk.frame.index) == [1, 2, 4]
    assert list(chunk.frame["a"]) == ["1", "2", "4"]
    assert triples(chunk.malformed) == [(3, "3,z,extra", fields(3))]
    assert record_of(chunk.frame, 4) == {"a": "4", "b": "w"}


def test_too_few_too_many_and_several_in_a_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\nonly\n2,y\n3\n4,5,6,7\n,,\n6,u\n7\n8,v,\n")
    [chunk] = iter_chunks(path, SourceConfig())
    assert list(chunk.frame.index) == [2, 6]
    assert triples(chunk.malformed) == [
        (1, "only", fields(1)),
        (3, "3", fields(1)),
        (4, "4,5,6,7", fields(4)),
        (5, ",,", fields(3)),
        (7, "7", fields(1)),
        (8, "8,v,", fields(3)),
    ]


def test_only_malformed_rows_give_a_chunk_with_an_empty_frame(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1\n2,3,4\n")
    assert read_columns(path, SourceConfig()) == ["a", "b"]
    [chunk] = iter_chunks(path, SourceConfig(), columns=["b"])
    assert chunk.frame.empty and list(chunk.frame.columns) == ["b"]
    assert triples(chunk.malformed) == [(1, "1", fields(1)), (2, "2,3,4", fields(3))]


def test_quoted_newlines_and_blank_lines_before_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'a,b\r\n"x\r\ny","p\nq"\r\n\r\n"two\nlines",1,2\r\n3,"r\ns"\r\n\n"4\n",t,"\n"\r\n5,v'
    )
    [chunk] = iter_chunks(path, SourceConfig())
    assert list(chunk.frame.index) == [1, 3, 5]
    assert [record_of(chunk.frame, n)["b"] for n in (1, 3, 5)] == ["p\nq", "r\ns", "v"]
    assert triples(chunk.malformed) == [
        (2, '"two\nlines",1,2', fields(3)),
        (4, '"4\n",t,"\n"', fields(3)),
    ]


def test_malformed_rows_at_chunk_boundaries(tmp_path: Path) -> None:
    # rows 3, 4 (last of chunk 1, first of chunk 2), 7..9 (a whole chunk), 10 (the last row)
    bad = {3, 4, 7, 8, 9, 10}
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "".join(f"{i}\n" if i in bad else f"{i},x\n" for i in range(1, 11)))
    assert chunks_of(path, SourceConfig(chunk_rows=3)) == [
        ([1, 2], [(3, "3", fields(1))]),
        ([5, 6], [(4, "4", fields(1))]),
        ([], [(n, str(n), fields(1)) for n in (7, 8, 9)]),
        ([], [(10, "10", fields(1))]),
    ]


@pytest.mark.parametrize(
    ("start_row", "good", "bad"),
    [
        (1, [1, 2, 4, 6, 7], [3, 5]),
        (3, [4, 6, 7], [3, 5]),  # start on a malformed row
        (4, [4, 6, 7], [5]),  # start past a malformed row
        (6, [6, 7], []),  # past both
        (8, [], []),
    ],
)
def test_start_row_around_malformed_rows(
    tmp_path: Path, start_row: int, good: list[int], bad: list[int]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "a,b\n" + "".join(f"{i}\n" if i in (3, 5) else f'{i},"x\ny"\n' for i in range(1, 8))
    )
    got = chunks_of(path, SourceConfig(chunk_rows=2), start_row=start_row)
    assert [n for numbers, _ in got for n in numbers] == good
    assert [row for _, malformed in got for row, *_ in malformed] == bad
    starts = [min(numbers + [row for row, *_ in malformed]) for numbers, malformed in got]
    assert all((start - start_row) % 2 == 0 for start in starts)  # chunks cover row ranges


def test_malformed_text_is_kept_whole_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "x" * 2000 + ',1,"2\n3"\n1,2\n')
    [chunk] = iter_chunks(path, SourceConfig())
    [bad] = chunk.malformed
    assert (bad.row, bad.text, bad.reason) == (1, "x" * 2000 + ',1,"2\n3"', fields(3))
    assert (bad.first_line, bad.last_line) == (2, 3)
    assert chunk.line(2) == 4
    assert chunk.warnings and "lines 2-3" in chunk.warnings[0]


def test_count_rows_counts_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n3\n4,5,6\n7,8\n")
    assert count_rows([path], SourceConfig()) == RowCount(4, exact=True)


def random_csv(rng: random.Random) -> tuple[bytes, list[tuple[int, str | None, str]]]:
    """A CSV with quoted newlines, blank lines, CRLF and malformed records, and for every
    data row (number, its first field if good or None, its raw text)."""
    eol = rng.choice(["\n", "\r\n"])
    lines = ["a,b,c"]
    rows: list[tuple[int, str | None, str]] = []
    if rng.random() < 0.3:
        lines.insert(0, "")
    for number in range(1, rng.randint(1, 60)):
        count = rng.choice([3, 3, 3, 3, 1, 2, 4, 6])
        cells = [
            f'"{number}\n{i}"' if rng.random() < 0.3 else f"{number}-{i}" for i in range(count)
        ]
        text = ",".join(cells)
        rows.append((number, f"{number}\n0" if cells[0].startswith('"') else f"{number}-0", text))
        if count != 3:
            rows[-1] = (number, None, text)
        lines.append(text)
        if rng.random() < 0.1:
            lines.append("")
    return (eol.join(lines) + rng.choice(["", eol])).encode(), rows


def seeds(count: int, fast: int) -> list[Any]:
    """Seeds for a randomized test: the first `fast` in every tier, the rest marked slow."""
    return [
        seed if seed < fast else pytest.param(seed, marks=pytest.mark.slow) for seed in range(count)
    ]


@pytest.mark.parametrize("seed", seeds(40, fast=10))
def test_random_files_number_every_row_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(sources.csv_reader, "SCAN_READ_BYTES", rng.choice([7, 64, 128, 1 << 20]))
    data, rows = random_csv(rng)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    chunk_rows, start_row = rng.randint(1, 7), rng.randint(1, len(rows) + 2)
    got = chunks_of(path, SourceConfig(chunk_rows=chunk_rows), start_row=start_row)
    chunks = list(iter_chunks(path, SourceConfig(chunk_rows=chunk_rows), start_row=start_row))
    good = {n: record_of(c.frame, n)["a"] for c in chunks for n in c.frame.index}
    assert good == {n: first for n, first, _ in rows if first is not None and n >= start_row}
    bad = [(m.row, m.text) for c in chunks for m in c.malformed]
    assert bad == [(n, text) for n, first, text in rows if first is None and n >= start_row]
    # Each row's line: where its text starts in the file (blank lines and quoted newlines).
    text = data.decode()
    starts = {n: text.count("\n", 0, text.index(raw_text)) + 1 for n, _, raw_text in rows}
    assert {n: c.line(n) for c in chunks for n in c.frame.index} == {n: starts[n] for n in good}
    assert [(m.row, m.first_line) for c in chunks for m in c.malformed] == [
        (n, starts[n]) for n, _ in bad
    ]
    covered = [sorted(numbers + [n for n, _, _ in malformed]) for numbers, malformed in got]
    expected = list(range(start_row, len(rows) + 1))
    assert covered == [expected[i : i + chunk_rows] for i in range(0, len(expected), chunk_rows)]


def messy_csv(rng: random.Random) -> bytes:
    """Quotes anywhere (field starts, mid-field, doubled, unterminated), CR, CRLF, blanks."""
    pieces = ["a,b,c\n"]
    alphabet = ['"', '"', ",", "x", "y", "\n", "\r\n", "\r", '""', " ", "\\"]
    for _ in range(rng.randint(1, 80)):
        line = "".join(rng.choice(alphabet) if rng.random() < 0.3 else "v" for _ in range(8))
        pieces.append(line + rng.choice(["\n", "\r\n", ""]))
    return "".join(pieces).encode()


@pytest.mark.parametrize("seed", seeds(200, fast=20))
def test_messy_quoting_never_misnumbers_or_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Whatever the quoting, the scanner and arrow agree on the records (no refusal), rows are
    numbered 1..n without gaps, lines rise with rows, and a set-aside record's text is the
    file's own lines."""
    rng = random.Random(seed)
    monkeypatch.setattr(sources.csv_reader, "SCAN_READ_BYTES", rng.choice([5, 16, 1 << 20]))
    data = messy_csv(rng)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    escape = rng.choice([None, "\\"])
    options = CsvOptions(max_record_bytes=1024, escapechar=escape)
    source = SourceConfig(chunk_rows=rng.randint(1, 9), csv=options)
    chunks = list(iter_chunks(path, source))
    rows = sorted(
        [(int(n), c.line(int(n))) for c in chunks for n in c.frame.index]
        + [(m.row, m.first_line) for c in chunks for m in c.malformed]
    )
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1))
    lines = [line for _, line in rows if line is not None]
    assert len(lines) == len(rows)
    assert lines == sorted(lines)  # a bare CR ends a record but not a line: equal is fine
    physical = data.decode().split("\n")
    for chunk in chunks:
        for bad in chunk.malformed:
            span = "\n".join(physical[bad.first_line - 1 : bad.last_line])
            assert bad.text.replace("\r", "") in span.replace("\r", ""), (bad, span)


# --- partitioned directories, markers, content sniffing (issue 12) ------------------------


def _write_parquet(path: Path, columns: dict[str, list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_directory_is_searched_recursively_markers_left_out(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "dt=2024-01-02" / "part-0.parquet", {"a": [1]})
    _write_parquet(tmp_path / "dt=2024-01-01" / "part-0.parquet", {"a": [2]})
    for marker in (
        "_SUCCESS",
        "dt=2024-01-01/_committed_123",
        "dt=2024-01-01/_started_123",
        "dt=2024-01-01/.part-0.parquet.crc",
        "_temporary/0/part-9.parquet",
        ".hidden/part-8.parquet",
        "dt=2024-01-02/part-0.parquet.crc",
    ):
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_bytes(b"PAR1")
    files = discover(str(tmp_path))
    assert [f.local for f in files] == [
        tmp_path / "dt=2024-01-01" / "part-0.parquet",
        tmp_path / "dt=2024-01-02" / "part-0.parquet",
    ]
    assert [f.partitions for f in files] == [(("dt", "2024-01-01"),), (("dt", "2024-01-02"),)]
    # A glob: its fixed folders are the root the partitions are counted from.
    globbed = discover(str(tmp_path / "*" / "*.parquet"))
    assert [f.partitions for f in globbed] == [(("dt", "2024-01-01"),), (("dt", "2024-01-02"),)]


def test_partition_columns_are_read_and_decoded(tmp_path: Path) -> None:
    folder = tmp_path / "country=New%20Zealand" / "dt=__HIVE_DEFAULT_PARTITION__"
    _write_parquet(folder / "p.parquet", {"user_id": ["u1", "u2"]})
    (file,) = discover(str(tmp_path))
    source = SourceConfig()
    assert read_columns(file, source) == ["user_id", "country", "dt"]
    frame = next(iter_chunks(file, source, columns=["dt", "user_id", "country"])).frame
    assert list(frame.columns) == ["dt", "user_id", "country"]
    assert frame["country"].tolist() == ["New Zealand", "New Zealand"]
    assert frame["dt"].isna().all()
    assert list(frame.index) == [1, 2]
    # A column the file holds itself wins over a folder of the same name.
    _write_parquet(tmp_path / "b" / "dt=x" / "p.parquet", {"dt": ["inside"]})
    (inner,) = discover(str(tmp_path / "b"))
    assert read_columns(inner, source) == ["dt"]
    assert next(iter_chunks(inner, source, columns=["dt"])).frame["dt"].tolist() == ["inside"]


def test_parts_with_different_columns_read_as_their_union(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,Ann\n")
    (tmp_path / "b.csv").write_text("id,name,tier\n2,Bob,gold\n")
    (tmp_path / "c.csv").write_bytes(b"")  # an empty part: no header, no rows
    source = SourceConfig()
    files = discover(str(tmp_path))
    assert sources.union_columns(files, source) == ["id", "name", "tier"]
    rows = [
        record_of(chunk.frame, int(n))
        for f in files
        for chunk in iter_chunks(f, source, columns=["id", "tier"])
        for n in chunk.frame.index
    ]
    assert rows == [{"id": "1", "tier": None}, {"id": "2", "tier": "gold"}]
    with pytest.raises(SourceError, match="empty"):
        sources.union_columns([files[2]], source)


def test_format_and_compression_told_by_content(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "0000_part_00.gz", "wt") as handle:
        handle.write("id,name\n1,Ann\n")
    pq.write_table(pa.table({"id": ["2"]}), tmp_path / "part-00001")
    (tmp_path / "README").write_text("not data")
    files = discover(str(tmp_path))
    assert [f.basename for f in files] == ["0000_part_00.gz", "part-00001"]
    assert [format_of(f, sources.SourceFormat.AUTO) for f in files] == ["csv", "parquet"]
    assert rows_of(files[0].local, SourceConfig()) == [(1, {"id": "1", "name": "Ann"})]  # type: ignore[arg-type]
    assert [r for f in files[1:] for r in rows_of(f.local, SourceConfig())] == [  # type: ignore[arg-type]
        (1, {"id": "2"})
    ]


def test_duplicate_header_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id,email,Email,email\n1,a,b,c\n")
    with pytest.raises(SourceError, match=r"'email' is column 2, 4"):
        read_columns(path, SourceConfig())
    with pytest.raises(SourceError, match=r"'email' is column 2, 4"):
        list(iter_chunks(path, SourceConfig(), columns=["id"]))


def test_remote_fingerprint_is_size_and_etag() -> None:
    remote = DataFile("s3://b/k.csv", 12, etag="abc")
    assert fingerprint(remote) == "12:etag:abc"
    assert fingerprint(DataFile("s3://b/k.csv", 12, etag="abd")) != fingerprint(remote)
    assert remote.state_key == "s3://b/k.csv"


def test_compressed_parts_of_other_kinds_are_not_taken_for_csv(tmp_path: Path) -> None:
    for name in ("0000_part_00.gz", "000000_0.bz2", "events.json.gz"):
        with (bz2.open if name.endswith(".bz2") else gzip.open)(tmp_path / name, "wt") as handle:
            handle.write("id\n1\n")
    files = discover(str(tmp_path))
    assert [(f.basename, f.content) for f in files] == [
        ("000000_0.bz2", "bz2"),
        ("0000_part_00.gz", "gzip"),
    ]
    assert [r for f in files for r in rows_of(f.local, SourceConfig())] == [  # type: ignore[arg-type]
        (1, {"id": "1"}),
        (1, {"id": "1"}),
    ]


def test_gzip_part_without_any_extension_is_told_by_its_magic(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "0002_part_00", "wt") as handle:
        handle.write("id,name\n3,Cy\n")
    (file,) = discover(str(tmp_path))
    assert (file.content, format_of(file, sources.SourceFormat.AUTO)) == ("gzip", "csv")
    assert [r for c in iter_chunks(file, SourceConfig()) for r in c.frame["name"]] == ["Cy"]
