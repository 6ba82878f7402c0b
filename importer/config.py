"""The job file: a typed model validated once at the edge, ${ENV} interpolation, key-path errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from importer import moengage


class ConfigError(Exception):
    """A job file problem a user can fix; the message names the key path."""


AttributeType = Literal["string", "integer", "number", "boolean", "datetime", "date", "array"]
ItemType = Literal["string", "integer", "number"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Strict):
    data_center: str = "01"
    base_url: str | None = None
    workspace_id: str
    api_key: SecretStr
    project_code: str | None = None
    endpoint: Literal["bulk", "customer"] = "bulk"

    @field_validator("data_center", mode="before")
    @classmethod
    def _data_center_text(cls, value: Any) -> Any:
        # YAML reads 01 as the integer 1; accept it and mean "01".
        if isinstance(value, int):
            return f"{value:02d}" if value < 100 else str(value)
        return value

    @field_validator("data_center")
    @classmethod
    def _known_data_center(cls, value: str) -> str:
        if value not in moengage.DATA_CENTERS:
            raise ValueError(f"must be one of {', '.join(moengage.DATA_CENTERS)}")
        return value

    @field_validator("workspace_id")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def resolved_base_url(self) -> str:
        """base_url wins over data_center (sandbox, proxy)."""
        return (self.base_url or moengage.base_url_for(self.data_center)).rstrip("/")


class RateLimitConfig(_Strict):
    updates: int = Field(moengage.DEFAULT_RATE_UPDATES, gt=0)
    period_seconds: float = Field(moengage.DEFAULT_RATE_PERIOD_SECONDS, gt=0)


class DeliveryConfig(_Strict):
    max_batch_bytes: int = Field(moengage.MAX_REQUEST_BYTES, ge=1000, le=moengage.MAX_REQUEST_BYTES)
    concurrency: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(6, ge=1)
    # 429s wait on their own budget so rate limiting does not eat the attempts meant for failures.
    max_rate_limited_attempts: int = Field(30, ge=1)
    timeout_seconds: float = Field(30, gt=0)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(30, gt=0)


class CsvOptions(_Strict):
    delimiter: str = ","
    encoding: str = "utf-8"
    quotechar: str = '"'
    escapechar: str | None = None
    compression: Literal["infer", "gzip", "bz2", "zstd", "xz", "zip"] | None = "infer"


class SourceConfig(_Strict):
    path: str | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    null_values: list[str] = Field(default_factory=lambda: [""])
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: int = Field(50_000, ge=1)


class AttributeSpec(_Strict):
    column: str
    type: AttributeType = "string"
    separator: str | None = None
    items: ItemType = "string"
    format: str | None = None
    timezone: str | None = None


class ArrayOpSpec(_Strict):
    column: str
    separator: str | None = None
    items: ItemType = "string"


class PlatformsSpec(_Strict):
    """Either a column whose cells are platform names, or a constant list for every row."""

    column: str | None = None
    values: list[str] | None = None


class MappingConfig(_Strict):
    customer_id: str | None = None
    update_existing_only: bool = False
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    add_to_array: dict[str, ArrayOpSpec] = Field(default_factory=dict)
    remove_from_array: dict[str, ArrayOpSpec] = Field(default_factory=dict)
    platforms: PlatformsSpec | None = None
    identifiers: list[str] = Field(default_factory=list)

    @field_validator("attributes", mode="before")
    @classmethod
    def _bare_column_is_string(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: ({"column": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("platforms", mode="before")
    @classmethod
    def _constant_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"values": value}
        if isinstance(value, str):
            return {"column": value}
        return value


class OutputConfig(_Strict):
    dead_letter: Path = Path("out/dead_letter.jsonl")
    state: Path = Path("out/state.db")
    report: Path = Path("out/report.json")


class JobConfig(_Strict):
    api: ApiConfig
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    mapping: MappingConfig
    output: OutputConfig = Field(default_factory=OutputConfig)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(tree: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ${NAME} in every string; a missing variable is an error naming it and its key."""
    if isinstance(tree, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return env[name]

        return _ENV_REF.sub(substitute, tree)
    return tree


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            # Never echo the input: it may be the API key.
            lines.append(f"{where}: {item['msg']}")
    return "\n".join(lines)


def parse_job(raw: Any, env: Mapping[str, str] | None = None) -> JobConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the job file must be a YAML mapping with api, source, mapping, ...")
    tree = interpolate(raw, os.environ if env is None else env)
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None


def load_job(path: str | Path, env: Mapping[str, str] | None = None) -> JobConfig:
    """Read, interpolate and validate a job file; every problem is a ConfigError."""
    job_path = Path(path)
    try:
        text = job_path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read job file {job_path}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{job_path}: not valid YAML: {error}") from None
    return parse_job(raw, env)
