"""The job file: a typed model validated once at the edge, ${ENV} interpolation, key-path errors."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    ca_bundle: Path | None = None  # a CA file for TLS (SSL_CERT_FILE is honoured too)
    allow_insecure_http: bool = False  # Basic auth over http:// to a non-loopback host

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

    @field_validator("ca_bundle")
    @classmethod
    def _readable_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            from importer.transport import ssl_context

            ssl_context(value)  # a ValueError naming the file if it is no CA file
        return value

    def resolved_base_url(self) -> str:
        """base_url wins over data_center (sandbox, proxy)."""
        return (self.base_url or moengage.base_url_for(self.data_center)).rstrip("/")


class RateLimitConfig(_Strict):
    updates: int = Field(moengage.DEFAULT_RATE_UPDATES, gt=0)
    period_seconds: float = Field(moengage.DEFAULT_RATE_PERIOD_SECONDS, gt=0, allow_inf_nan=False)


class DeliveryConfig(_Strict):
    max_batch_bytes: int = Field(moengage.MAX_REQUEST_BYTES, ge=1000, le=moengage.MAX_REQUEST_BYTES)
    concurrency: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(6, ge=1)
    # 429s spend no attempts: they slow the run down. Only this long of nothing but 429s
    # stops it (exit 3, rows pending).
    max_rate_limited_seconds: float = Field(3600, gt=0, allow_inf_nan=False)
    # Every request failing this long (the API down): stop, rows pending, resumable.
    max_outage_seconds: float = Field(900, gt=0, allow_inf_nan=False)
    timeout_seconds: float = Field(30, gt=0, allow_inf_nan=False)
    backoff_base_seconds: float = Field(0.5, gt=0, allow_inf_nan=False)
    backoff_max_seconds: float = Field(30, gt=0, allow_inf_nan=False)


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
    chunk_rows: int = Field(10_000, ge=1)


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


# ---------------------------------------------------------------------------------------------
# ${NAME} interpolation

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(tree: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ${NAME} in every string; missing variables are one error naming each and its key."""
    missing: list[str] = []
    result = _interpolate(tree, env, path, missing)
    if missing:
        raise ConfigError("\n".join(missing))
    return result


def _interpolate(tree: Any, env: Mapping[str, str], path: str, missing: list[str]) -> Any:
    if isinstance(tree, dict):
        return {
            k: _interpolate(v, env, f"{path}.{k}" if path else str(k), missing)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_interpolate(v, env, f"{path}[{i}]", missing) for i, v in enumerate(tree)]
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(f"{path or '(top level)'}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(substitute, tree)
    return tree


# ---------------------------------------------------------------------------------------------
# Turning pydantic's errors into key-path messages a user can act on

# Messages for pydantic error types; none of them may contain the input (it may be the API key).
_PLAIN_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "must be a mapping (key: value)",
    "dict_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "string_type": "must be text (in YAML, quote values that look like numbers)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _annotation_model(annotation: Any) -> Any:
    """X | None -> X, so the walk below can see through optional sections."""
    if get_origin(annotation) in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts where `loc` points (for an unknown key's hint)."""
    annotation: Any = JobConfig
    for part in loc:
        annotation = _annotation_model(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _annotation_model(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    allowed = _keys_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    if allowed:
        return f"unknown key; expected one of {', '.join(allowed)}"
    return "unknown key"


def _error_message(item: Any) -> str:
    kind = item["type"]
    loc = tuple(item["loc"])
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind == "literal_error":
        # pydantic says "Input should be 'a', 'b' or 'c'"; list the choices plainly.
        choices = re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected", "")))
        return f"must be one of {', '.join(choices)}"
    if kind == "value_error":
        return str(item.get("ctx", {}).get("error", "invalid value"))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return str(item["msg"]).replace("Input should be", "must be")
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    if loc[:1] == ("api",):
        return f"invalid value ({kind})"  # pydantic's own text might quote the value
    return str(item["msg"])


def key_path(loc: Iterable[str | int]) -> str:
    """("mapping", "platforms", 0) -> "mapping.platforms[0]", as the messages write key paths."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if len(loc) >= 2 and loc[-1] == "[key]":
            # A mapping key YAML read as a number (attributes: {123: col}); name it as written.
            lines.append(f"{key_path((*loc[:-2], str(loc[-2])))}: this key must be text")
        else:
            lines.append(f"{key_path(loc)}: {_error_message(item)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Job-level rules: what pydantic's per-field checks cannot see, refused before anything is sent

_PAYLOAD_KEYS = {
    moengage.ADD_TO_ARRAY_KEY: "mapping.add_to_array",
    moengage.REMOVE_FROM_ARRAY_KEY: "mapping.remove_from_array",
    moengage.PLATFORMS_KEY: "mapping.platforms",
}
_DATE_TYPES = ("datetime", "date")
_SHOWN_NAME_LENGTH = 40


def attribute_name_problem(name: str) -> str | None:
    """Why MoEngage would refuse (or punish) this attribute name, or None if it is fine."""
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        shown = repr(name) if name else "the empty name"
        return f"{shown} is blocked by MoEngage as an attribute name"
    if name in _PAYLOAD_KEYS:
        return f"{name} is a payload key of its own; use {_PAYLOAD_KEYS[name]} instead"
    if name.startswith(moengage.RESERVED_PREFIX) and name not in moengage.SYSTEM_ATTRIBUTES:
        examples = ", ".join(moengage.SYSTEM_ATTRIBUTE_EXAMPLES[:2])
        return (
            f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's system attributes"
            f" ({examples}, ...); a custom attribute using it can get the workspace blacklisted"
        )
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return (
            f"the name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
        )
    return None


def _key(section: str, name: str) -> str:
    """A key path for an attribute, shortened so a 300-character name does not flood the output."""
    if not name:
        return f"{section}.''"
    if len(name) > _SHOWN_NAME_LENGTH:
        return f"{section}.{name[:_SHOWN_NAME_LENGTH]}..."
    return f"{section}.{name}"


def _attribute_sections(mapping: MappingConfig) -> dict[str, Mapping[str, Any]]:
    return {
        "mapping.attributes": mapping.attributes,
        "mapping.add_to_array": mapping.add_to_array,
        "mapping.remove_from_array": mapping.remove_from_array,
    }


def _attribute_name_problems(mapping: MappingConfig) -> Iterator[str]:
    for section, specs in _attribute_sections(mapping).items():
        for name in specs:
            problem = attribute_name_problem(name)
            if problem:
                yield f"{_key(section, name)}: {problem}"


def _attribute_count_problems(mapping: MappingConfig) -> Iterator[str]:
    names = set(mapping.attributes) | set(mapping.add_to_array) | set(mapping.remove_from_array)
    custom = names - moengage.SYSTEM_ATTRIBUTES
    if len(custom) > moengage.MAX_CUSTOM_ATTRIBUTES:
        yield (
            f"mapping: {len(custom)} distinct custom attributes; MoEngage allows at most"
            f" {moengage.MAX_CUSTOM_ATTRIBUTES} per workspace"
        )


def _set_and_changed_problems(mapping: MappingConfig) -> Iterator[str]:
    # Adding and removing the same array in one update is allowed; setting it as well is not.
    for section in ("add_to_array", "remove_from_array"):
        for name in getattr(mapping, section):
            if name in mapping.attributes:
                yield (
                    f"{_key('mapping.' + section, name)}: {name} is also set in"
                    " mapping.attributes; MoEngage cannot set an attribute and add to or remove"
                    " from it in the same update"
                )


def _timezone_problem(timezone: str) -> str | None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r}; use an IANA name such as UTC or Europe/Berlin"
    return None


def _attribute_option_problems(mapping: MappingConfig) -> Iterator[str]:
    for name, spec in mapping.attributes.items():
        path = _key("mapping.attributes", name)
        given = spec.model_fields_set
        if spec.type != "array":
            for option in ("separator", "items"):
                if option in given:
                    yield f"{path}.{option}: only applies to type array (this one is {spec.type})"
        if spec.type not in _DATE_TYPES:
            for option in ("format", "timezone"):
                if option in given:
                    yield f"{path}.{option}: only applies to types datetime and date"
        if spec.separator == "":
            yield f"{path}.separator: must not be empty"
        if spec.format == "":
            yield f"{path}.format: must not be empty (leave it out to read ISO 8601)"
        if spec.timezone is not None:
            problem = _timezone_problem(spec.timezone)
            if problem:
                yield f"{path}.timezone: {problem}"
    for section in ("add_to_array", "remove_from_array"):
        for name, op in getattr(mapping, section).items():
            if op.separator == "":
                yield f"{_key('mapping.' + section, name)}.separator: must not be empty"


def _platform_problem(value: str) -> str:
    *first, last = moengage.PLATFORM_NAMES
    allowed = f"{', '.join(first)} or {last}"
    by_case = {name.casefold(): name for name in moengage.PLATFORM_NAMES}
    if value.casefold() in by_case:
        return f"{value!r} is not a platform; write it as {by_case[value.casefold()]}"
    return f"{value!r} is not a platform; use {allowed}"


def _platform_problems(mapping: MappingConfig) -> Iterator[str]:
    spec = mapping.platforms
    if spec is None:
        return
    if (spec.column is None) == (spec.values is None):
        yield "mapping.platforms: give exactly one of column (a column of platform names) or values"
        return
    if spec.column == "":
        yield "mapping.platforms.column: must name a column"
    if spec.values is not None:
        if not spec.values:
            yield "mapping.platforms.values: must list at least one platform"
        for i, value in enumerate(spec.values):
            if value not in moengage.PLATFORM_NAMES:
                yield f"mapping.platforms.values[{i}]: {_platform_problem(value)}"


def _identity_problems(mapping: MappingConfig) -> Iterator[str]:
    if mapping.customer_id == "":
        yield "mapping.customer_id: must name a column (or be null for Identity Resolution)"
    if mapping.customer_id is None and not mapping.identifiers:
        yield (
            "mapping.customer_id: no customer_id column is mapped; name one, or (Identity"
            " Resolution workspaces only) list the workspace's identifiers in mapping.identifiers"
        )
    for i, name in enumerate(mapping.identifiers):
        if name not in mapping.attributes:
            yield (
                f"mapping.identifiers[{i}]: {name!r} is not a mapped attribute;"
                " map it under mapping.attributes"
            )


def _base_url_problem(url: str) -> str | None:
    expected = "must be http(s)://host[:port], e.g. http://127.0.0.1:8377"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return expected
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return expected
    if parts.username or parts.password or parts.path not in ("", "/"):
        return expected
    if parts.query or parts.fragment:
        return expected
    return None


def _api_problems(api: ApiConfig) -> Iterator[str]:
    # Never quote api.* values here: a misplaced key could be anywhere in this section.
    if not api.workspace_id.strip():
        yield "api.workspace_id: must not be empty"
    if not api.api_key.get_secret_value().strip():
        yield "api.api_key: must not be empty"
    if api.base_url is not None:
        problem = _base_url_problem(api.base_url)
        if problem:
            yield f"api.base_url: {problem}"
    if api.project_code is not None and not api.project_code.strip():
        yield "api.project_code: must not be empty (leave it out if the workspace has none)"


def _delivery_problems(delivery: DeliveryConfig) -> Iterator[str]:
    if delivery.backoff_base_seconds > delivery.backoff_max_seconds:
        yield "delivery.backoff_base_seconds: must not exceed delivery.backoff_max_seconds"


def check_job_rules(job: JobConfig) -> None:
    """Refuse a job MoEngage would refuse (or punish), listing every problem, one a line."""
    mapping = job.mapping
    problems = [
        *_api_problems(job.api),
        *_delivery_problems(job.delivery),
        *_identity_problems(mapping),
        *_attribute_name_problems(mapping),
        *_attribute_count_problems(mapping),
        *_set_and_changed_problems(mapping),
        *_attribute_option_problems(mapping),
        *_platform_problems(mapping),
    ]
    if problems:
        raise ConfigError("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# Reading a job file


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys, which PyYAML would silently let the last win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error_message(job_path: Path, error: yaml.YAMLError) -> str:
    # PyYAML's own text quotes the offending line, which may hold the API key: keep only the
    # position and the problem.
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"{job_path}: not valid YAML at {where}: {error.problem or 'syntax error'}"
    return f"{job_path}: not valid YAML"


def parse_job(raw: Any, env: Mapping[str, str] | None = None) -> JobConfig:
    """Interpolate, validate and apply the job-level rules to an already-parsed YAML tree."""
    if not isinstance(raw, dict):
        raise ConfigError("the job file must be a YAML mapping with api, source, mapping, ...")
    tree = interpolate(raw, os.environ if env is None else env)
    try:
        job = JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None
    check_job_rules(job)
    return job


def with_overrides(job: JobConfig, overrides: Mapping[str, Mapping[str, Any]]) -> JobConfig:
    """The job with command-line values put in, validated like the file itself."""
    # Only what the file set: the rules tell options a user wrote from defaults.
    tree = job.model_dump(exclude_unset=True)  # the api key stays a SecretStr
    for section, values in overrides.items():
        tree.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        updated = JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None
    check_job_rules(updated)
    return updated


def load_job(path: str | Path, env: Mapping[str, str] | None = None) -> JobConfig:
    """Read, interpolate and validate a job file; every problem is a ConfigError."""
    job_path = Path(path)
    try:
        text = job_path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read job file {job_path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read job file {job_path}: not UTF-8 text") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(job_path, error)) from None
    except ConfigError as error:
        raise ConfigError(f"{job_path}: {error}") from None
    return parse_job(raw, env)
