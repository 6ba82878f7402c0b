"""The job file's `source:` section: where the input is and how to read it."""

from __future__ import annotations

import codecs
import enum
from typing import Any, Literal

from pydantic import Field, field_validator

from importer.config.strict import Strict


class SourceFormat(enum.StrEnum):
    """How input files are read (`source.format`); a str, so job files say it plainly."""

    AUTO = "auto"  # each file as its name or its first bytes say
    CSV = "csv"
    PARQUET = "parquet"


class CsvOptions(Strict):
    delimiter: str = ","
    encoding: str = "utf-8"
    quotechar: str = '"'
    escapechar: str | None = None
    compression: Literal["infer", "gzip", "bz2", "zstd", "xz", "zip"] | None = "infer"
    # A record (header included) longer than this is set aside as malformed; a quoted field
    # still open this far on is taken for a stray quote.
    max_record_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)

    @field_validator("delimiter", "quotechar", "escapechar")
    @classmethod
    def _one_ascii_character(cls, value: str | None, info: Any) -> str | None:
        # The reader splits records on bytes: these must be one byte in any ASCII encoding.
        empty_ok = info.field_name != "delimiter"
        if value is None or (empty_ok and value == ""):
            return value
        if len(value) != 1 or not value.isascii() or value in "\r\n":
            raise ValueError("must be one ASCII character (not a newline)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                "unknown encoding; use a Python codec name such as utf-8 or latin-1"
            ) from None
        return value


class StorageOptions(Strict):
    """Object storage (s3://) settings; credentials come from the standard AWS chain."""

    endpoint_url: str | None = None  # an S3-compatible store (MinIO, R2, GCS interop...)
    region: str | None = None
    anonymous: bool = False  # public buckets: send no credentials


class SourceConfig(Strict):
    path: str | None = None
    format: SourceFormat = SourceFormat.AUTO
    null_values: list[str] = Field(default_factory=lambda: [""])
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: int = Field(10_000, ge=1)
    allow_empty: bool = False  # a run that reads no data row exits 4 unless this is true
    storage: StorageOptions = Field(default_factory=StorageOptions)
