"""What `init` knows about an input: the sample, a guess per column, the job guess."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from importer.config import ConfigError
from importer.sources import SourceFormat


class ScaffoldError(ConfigError):
    """The input cannot be scaffolded (missing, unreadable, no data files).

    A ConfigError, so the CLI reports it as bad usage (exit 2) like any job problem.
    """


@dataclass
class Guess:
    """What one column becomes in the job file, and what a human should check."""

    column: str
    type: str = "string"  # an attribute type, or "platforms", or "skip" (not importable)
    options: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """The columns of the input's files of one kind and rows sampled across them (native
    values, None = missing)."""

    path: Path | str
    kind: SourceFormat  # csv | parquet
    columns: list[str]
    values: dict[str, list[Any]]
    arrow_types: dict[str, pa.DataType] = field(default_factory=dict)
    delimiter: str = ","
    escapechar: str | None = None
    encoding: str = "utf-8"
    null_values: list[str] = field(default_factory=lambda: [""])
    files: int = 1  # how many files the rows come from
    malformed: list[str] = field(default_factory=list)  # "file line N", skipped in the sample
    notes: list[str] = field(default_factory=list)  # for the source section
    # Columns whose values Python cannot hold (a Spark INT96 timestamp beyond year 9999), and
    # why: their values are left missing and the column is skipped, never a crash.
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class JobGuess:
    """What `init` concluded about an input, before any YAML is written."""

    input_path: str
    samples: list[Sample]
    format: SourceFormat  # source.format
    columns: dict[str, Guess]
    customer_id: str | None
    platforms: str | None  # the column mapping.platforms reads
