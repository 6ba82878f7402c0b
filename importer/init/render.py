"""The YAML text both job kinds share: scalars, comments, header, api, source, output."""

from __future__ import annotations

import glob
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from importer import moengage, sources
from importer.config import DEFAULT_OUTPUT_FOLDER, OutputConfig
from importer.init.columns import placeholder_count
from importer.init.model import Guess, Sample
from importer.sources import SourceFormat

COMMENT_COLUMN = 40  # where trailing comments start, so the file reads as two columns
LINE_WIDTH = 100


def scalar(value: Any) -> str:
    """One YAML scalar, quoted only when YAML needs it."""
    dumped = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=10**6)
    return dumped.strip()[1:-1]


def flow(mapping: dict[str, Any] | list[Any]) -> str:
    """A mapping or list in YAML's one-line flow style."""
    return yaml.safe_dump(
        mapping, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**6
    ).strip()


def line(text: str, comment: str = "") -> str:
    """A job-file line with its comment aligned at COMMENT_COLUMN."""
    if not comment:
        return text
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}"


def check_lines(indent: str, notes: Iterable[str]) -> list[str]:
    """The '# check:' comments a person should review, wrapped to LINE_WIDTH."""
    lines = []
    for note in dict.fromkeys(notes):  # a column seen in two files may repeat a note
        width = LINE_WIDTH - len(indent) - len("# check: ")
        wrapped = textwrap.wrap(note, width) or [""]
        lines.append(f"{indent}# check: {wrapped[0]}")
        lines += [f"{indent}#        {rest}" for rest in wrapped[1:]]
    return lines


def _sample_rows(sample: Sample) -> int:
    return len(next(iter(sample.values.values()), []))


def _described(sample: Sample) -> str:
    if sample.files == 1:
        return f"{sample.path} ({_sample_rows(sample)} rows)"
    return f"{sample.files} {sample.kind} files ({_sample_rows(sample)} rows, first {sample.path})"


def header_lines(input_path: str, samples: Sequence[Sample]) -> list[str]:
    """The opening comments: what was read, what was left out, what to do next."""
    read = ", ".join(_described(s) for s in samples)
    lines = [
        f"# moe-import job for {input_path}, written by `moe-import init`.",
        *(f"# {t}" for t in textwrap.wrap(f"Types guessed from the first rows of {read}.", 96)),
    ]
    malformed = [m for s in samples for m in s.malformed]
    if malformed:
        shown = ", ".join(malformed[:5]) + (", ..." if len(malformed) > 5 else "")
        note = (
            f"{len(malformed)} malformed record(s) left out of the sample ({shown}); `run` puts "
            "such records in the dead-letter file with their full text."
        )
        lines += [f"# {t}" for t in textwrap.wrap(note, 96)]
    return [
        *lines,
        "# Review every '# check:' line, then try the job with `moe-import validate`.",
        "",
    ]


def api_lines() -> list[str]:
    """The api and rate_limit sections (credentials come from the environment)."""
    return [
        "api:",
        line('  data_center: "01"', "01-06 or 101, as in your dashboard's URL"),
        line("  # base_url: http://127.0.0.1:8377", "wins over data_center (sandbox, proxy)"),
        line("  workspace_id: ${MOENGAGE_WORKSPACE_ID}", "Settings > Account > APIs"),
        line("  api_key: ${MOENGAGE_API_KEY}", "the Data API key: keep it in the environment"),
        line("  # project_code: ...", "Portfolio workspaces only"),
        line("  endpoint: bulk", "bulk = /v1/transition; customer = one user a call"),
        "",
        "rate_limit:",
        line(f"  updates: {moengage.DEFAULT_RATE_UPDATES}", "per period, retries included"),
        line(f"  period_seconds: {moengage.DEFAULT_RATE_PERIOD_SECONDS:g}", "support can raise it"),
        "",
    ]


def source_lines(input_path: str, samples: Sequence[Sample], fmt: SourceFormat) -> list[str]:
    """The source section: path, format, null values and the CSV dialect found."""
    null_values = list(dict.fromkeys(v for s in samples for v in s.null_values))
    lines = [
        "source:",
        *check_lines("  ", [note for s in samples for note in s.notes]),
        line(
            f"  path: {scalar(input_path)}",
            "file, directory, glob or s3://",
        ),
        line(f"  format: {fmt}", "auto | csv | parquet"),
        line(f"  null_values: {flow(null_values)}", "only these cells are missing: NA is data"),
    ]
    if sources.is_remote(input_path):
        lines.append(
            line(
                "  # storage: {endpoint_url: null, region: null, anonymous: false}",
                "S3-compatible stores",
            )
        )
    csv_samples = [s for s in samples if s.kind == SourceFormat.CSV]
    options: dict[str, Any] = {}
    if csv_samples and csv_samples[0].delimiter != ",":
        options["delimiter"] = csv_samples[0].delimiter
    if csv_samples and csv_samples[0].escapechar:
        options["escapechar"] = csv_samples[0].escapechar
    if csv_samples and csv_samples[0].encoding != "utf-8":
        options["encoding"] = csv_samples[0].encoding
    if options:
        lines.append(f"  csv: {flow(options)}")
    return [*lines, ""]


def customer_id_lines(samples: Sequence[Sample], customer_id: str | None) -> list[str]:
    """mapping.customer_id, with a check when the sample holds ids MoEngage refuses."""
    if customer_id is None:
        note = (
            "no customer id column recognised: name the column holding customer_id, or, in an"
            " Identity Resolution workspace, keep null and map the identifier attributes"
            " (e.g. moe_email, moe_mobile) and list them under identifiers"
        )
        return [*check_lines("  ", [note]), "  customer_id: null"]
    checks, comment = _id_type_checks(samples, customer_id)
    lines = [line(f"  customer_id: {scalar(customer_id)}", comment)]
    refused, total = placeholder_count(samples, customer_id)
    if refused:
        checks.append(
            f"{refused} of {total} sampled rows have an empty or placeholder customer_id"
            " (guest, null, 0, ...); MoEngage refuses them, so they will be dead-lettered"
        )
    return check_lines("  ", checks) + lines


# pandas writes a float column as 12.0: a whole number with a zero fraction.
_FLOAT_TEXT_ID = re.compile(r"\s*[+-]?[0-9]+\.0+\s*")


def _id_type_checks(samples: Sequence[Sample], customer_id: str) -> tuple[list[str], str]:
    """Checks on how the file stores the customer ids, and the customer_id line's comment.

    A floating-point id column (what pandas writes for an integer column with missing values)
    cannot hold every id exactly, and its text is not the id: the fix is at the source."""
    fix = "export it as text, or as a nullable integer (pandas Int64, Spark bigint), at the source"
    for sample in samples:
        arrow_type = sample.arrow_types.get(customer_id)
        if arrow_type is not None and pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if arrow_type is not None and pa.types.is_floating(arrow_type):
            note = (
                f"the file stores customer_id column {customer_id!r} as floating point"
                f" ({arrow_type}), as pandas writes an integer column with missing values:"
                " ids beyond 2^53 or with fractions cannot be exact;"
            )
            return [f"{note} {fix}"], "floating point in the file: see the check above"
        if arrow_type is not None and not _text_like_id(arrow_type):
            note = (
                f"the file stores customer_id column {customer_id!r} as {arrow_type}, not as"
                " text or an integer: MoEngage ids are text; export it as text at the source"
            )
            return [note], f"{arrow_type} in the file: see the check above"
        if sample.kind == SourceFormat.CSV and any(
            isinstance(v, str) and _FLOAT_TEXT_ID.fullmatch(v)
            for v in sample.values.get(customer_id, [])
        ):
            note = (
                f"customer_id column {customer_id!r} holds ids written as floating point (7.0),"
                " as pandas writes an integer column with missing values: 7.0 and 7 would be"
                " two customers, and ids beyond 2^53 cannot be exact;"
            )
            return [f"{note} {fix}"], "written as floating point: see the check above"
    return [], "read as text exactly as written"


def _text_like_id(arrow_type: pa.DataType) -> bool:
    """The type holds ids `run` reads as text (Impala's and Hive's binary strings included)."""
    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def attribute_spec(guess: Guess) -> str:
    """The value of one attribute entry: a bare column, or {column, type, ...}."""
    if guess.type == "string" and not guess.options:
        return scalar(guess.column)  # a bare column name is a string attribute
    return flow({"column": guess.column, "type": guess.type, **guess.options})


def output_lines(input_path: str) -> list[str]:
    """The output section, in a folder named after the input."""
    defaults = OutputConfig()
    # Name the output folder after the input, up to the first glob pattern in its path.
    fixed = [part for part in Path(input_path).parts if not glob.has_magic(part)]
    stem = (Path(*fixed).name if fixed else "").split(".")[0] or "job"
    folder = DEFAULT_OUTPUT_FOLDER / re.sub(r"[^A-Za-z0-9_-]+", "_", stem)
    return [
        "output:",
        line(
            f"  dead_letter: {scalar(str(folder / defaults.dead_letter.name))}",
            "rows not imported and why (personal data)",
        ),
        # No state line: by default the progress file is named after the job file (e.g.
        # nightly.yaml -> nightly.state.db beside the dead letters), so two jobs over one
        # input never share progress.
        line("  # state: JOB.state.db", "progress; named after the job file unless set"),
        line(f"  report: {scalar(str(folder / defaults.report.name))}", "the run's counts"),
    ]
