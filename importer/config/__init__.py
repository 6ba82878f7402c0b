"""The job file: a typed model validated once at the edge, ${ENV} interpolation, key-path errors."""

from __future__ import annotations

import codecs
import difflib
import enum
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from importer import moengage
from importer.errors import UsageError
from importer.moengage import Endpoint, catalogue

# ---------------------------------------------------------------------------------------------
# Secret values: a value taken from a variable that holds a secret is never printed, wherever a
# mistake puts it (a key pasted as ${MOENGAGE_API_KEY} into mapping.customer_id, a timezone,
# source.path...). Errors about values redact them at construction, so no later path can leak.

_SECRET_VARIABLE = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)
# A run of this many characters of a secret, in any case, is the secret: long enough that
# ordinary words in a message never match, short enough that a value cut for display does.
_SECRET_RUN = 12
_SHORTEST_SECRET = 8  # shorter values (flags, ports, "date") would redact ordinary words
_secrets: dict[str, str] = {}  # value -> how to show it instead


def is_secret_variable(name: str) -> bool:
    return bool(_SECRET_VARIABLE.search(name))


def register_secret(value: str, shown_as: str) -> None:
    """From now on, `redact` hides `value` (and any long run of it) as `shown_as`."""
    if len(value.strip()) >= _SHORTEST_SECRET:
        _secrets.setdefault(value, shown_as)


def forget_secrets() -> None:
    """Tests: start from no registered secrets."""
    _secrets.clear()


def redact(text: str) -> str:
    """`text` with every registered secret, and every long run of one, replaced."""
    for value, shown_as in _secrets.items():
        if len(value) < _SECRET_RUN:
            text = text.replace(value, shown_as)
            continue
        lowered = text.lower()
        windows = {value.lower()[i : i + _SECRET_RUN] for i in range(len(value) - _SECRET_RUN + 1)}
        hidden = [False] * len(text)
        for i in range(len(text) - _SECRET_RUN + 1):
            if lowered[i : i + _SECRET_RUN] in windows:
                hidden[i : i + _SECRET_RUN] = [True] * _SECRET_RUN
        if not any(hidden):
            continue
        parts: list[str] = []
        for i, char in enumerate(text):
            if not hidden[i]:
                parts.append(char)
            elif i == 0 or not hidden[i - 1]:
                parts.append(shown_as)
        text = "".join(parts)
    return text


class ConfigError(UsageError):
    """A job file problem a user can fix; the message names the key path (never a secret)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))


class SourceFormat(enum.StrEnum):
    """How input files are read (`source.format`); a str, so job files say it plainly."""

    AUTO = "auto"  # each file as its name or its first bytes say
    CSV = "csv"
    PARQUET = "parquet"


AttributeType = Literal["string", "integer", "number", "boolean", "datetime", "date", "array"]
ItemType = Literal["string", "integer", "number"]
# How type datetime reads a local time the clocks repeat / skip; "raise" dead-letters the row.
AmbiguousTime = Literal["earliest", "latest", "raise"]
NonexistentTime = Literal["shift_forward", "shift_backward", "raise"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Strict):
    data_center: str = "01"
    base_url: str | None = None
    workspace_id: str
    api_key: SecretStr = SecretStr("")
    # A file holding the key (one trailing newline is dropped); instead of api_key.
    api_key_file: Path | None = None
    project_code: str | None = None
    endpoint: Endpoint = Endpoint.BULK
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
            from importer.run.transport import ssl_context

            ssl_context(value)  # a ValueError naming the file if it is no CA file
        return value

    def resolved_base_url(self) -> str:
        """base_url wins over data_center (sandbox, proxy)."""
        return (self.base_url or moengage.base_url_for(self.data_center)).rstrip("/")


class SharedQuotaConfig(_Strict):
    """rate_limit.shared: one quota for every process using the same key (importer.quota)."""

    backend: Literal["local", "redis"] = "local"
    url: str | None = None  # redis://[:password@]host:port/db (backend redis)
    key: str | None = None  # the quota's name; the workspace ID when unset
    path: str | None = None  # backend local: the ledger's directory (default: the temp dir)
    timeout_seconds: float = Field(5.0, gt=0, allow_inf_nan=False)  # one ledger call, at most

    @model_validator(mode="after")
    def _redis_needs_url(self) -> SharedQuotaConfig:
        if self.backend == "redis":
            if not self.url:
                raise ValueError("backend redis needs url (redis://host:port/db)")
            if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
                raise ValueError("url must start with redis://, rediss:// or unix://")
        if self.key is not None and not self.key.strip():
            raise ValueError("key must not be empty (leave it out to use the workspace ID)")
        return self


class RateLimitConfig(_Strict):
    updates: int = Field(moengage.DEFAULT_RATE_UPDATES, gt=0)
    period_seconds: float = Field(moengage.DEFAULT_RATE_PERIOD_SECONDS, gt=0, allow_inf_nan=False)
    shared: SharedQuotaConfig | None = None


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
    # A run whose invalid rows (this run's rows_invalid over its rows_read) stay at or under
    # this share, with nothing rejected or failed, exits 0 with a warning.
    max_invalid_fraction: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)


class CsvOptions(_Strict):
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


class StorageOptions(_Strict):
    """Object storage (s3://) settings; credentials come from the standard AWS chain."""

    endpoint_url: str | None = None  # an S3-compatible store (MinIO, R2, GCS interop...)
    region: str | None = None
    anonymous: bool = False  # public buckets: send no credentials


class SourceConfig(_Strict):
    path: str | None = None
    format: SourceFormat = SourceFormat.AUTO
    null_values: list[str] = Field(default_factory=lambda: [""])
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_rows: int = Field(10_000, ge=1)
    allow_empty: bool = False  # a run that reads no data row exits 4 unless this is true
    storage: StorageOptions = Field(default_factory=StorageOptions)


class AttributeSpec(_Strict):
    column: str
    type: AttributeType = "string"
    separator: str | None = None
    items: ItemType = "string"
    format: str | None = None
    timezone: str | None = None
    # type date: send the bare YYYY-MM-DD as text instead of midnight UTC as a date-time.
    as_text: bool = False
    # type datetime: how to read a local time the clocks repeat or skip (default: the row is
    # dead-lettered, never shifted silently).
    ambiguous: AmbiguousTime | None = None
    nonexistent: NonexistentTime | None = None


class ArrayOpSpec(_Strict):
    column: str
    separator: str | None = None
    items: ItemType = "string"


class PlatformsSpec(_Strict):
    """Either a column whose cells are platform names, or a constant list for every row."""

    column: str | None = None
    values: list[str] | None = None


class EventValue(_Strict):
    """An event field: a column per row, or a constant for every row (a bare string)."""

    column: str | None = None
    constant: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> EventValue:
        if (self.column is None) == (self.constant is None):
            raise ValueError("give a column ({column: name}) or a constant (a bare string)")
        return self


def _bare_columns_are_strings(value: Any) -> Any:
    """`name: column` in an attributes block is `name: {column: column}`, a string attribute."""
    if isinstance(value, Mapping):
        return {k: ({"column": v} if isinstance(v, str) else v) for k, v in value.items()}
    return value


# mapping.attributes and mapping.event.attributes: MoEngage attribute -> its column spec.
AttributeSpecs = Annotated[dict[str, AttributeSpec], BeforeValidator(_bare_columns_are_strings)]


class EventConfig(_Strict):
    """mapping.event (import: events): one row is one action of its customer."""

    action: EventValue
    time: AttributeSpec  # -> current_time; type datetime
    timezone_offset: EventValue | None = None  # seconds -> user_timezone_offset
    platform: EventValue | None = None
    app_version: EventValue | None = None
    attributes: AttributeSpecs = Field(default_factory=dict)

    @field_validator("action", "timezone_offset", "platform", "app_version", mode="before")
    @classmethod
    def _bare_is_constant(cls, value: Any) -> Any:
        return {"constant": value} if isinstance(value, str) else value

    @field_validator("time", mode="before")
    @classmethod
    def _time_is_datetime(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"column": value, "type": "datetime"}
        if isinstance(value, Mapping) and "type" not in value:
            return {**value, "type": "datetime"}
        return value


class MappingConfig(_Strict):
    customer_id: str | None = None
    # Surrounding whitespace in a customer_id is a validation error unless this is true.
    strip_customer_id: bool = False
    update_existing_only: bool = False
    attributes: AttributeSpecs = Field(default_factory=dict)
    add_to_array: dict[str, ArrayOpSpec] = Field(default_factory=dict)
    remove_from_array: dict[str, ArrayOpSpec] = Field(default_factory=dict)
    platforms: PlatformsSpec | None = None
    identifiers: list[str] = Field(default_factory=list)
    # moe_ names MoEngage's catalogue lacks that a job may still send (with a warning).
    allow_reserved: list[str] = Field(default_factory=list)
    event: EventConfig | None = None  # import: events only

    @field_validator("platforms", mode="before")
    @classmethod
    def _constant_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"values": value}
        if isinstance(value, str):
            return {"column": value}
        return value


NotifyOn = Literal["failure", "success"]
NOTIFY_ON: tuple[NotifyOn, ...] = ("failure", "success")


class NotifyConfig(_Strict):
    """output.notify: a JSON POST (Slack-webhook compatible) when the run ends."""

    url: str
    on: list[NotifyOn] = Field(default_factory=lambda: list(NOTIFY_ON))

    @field_validator("url", mode="before")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        if isinstance(value, str) and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value


class SyncConfig(_Strict):
    # all: send every valid row; changed: only rows whose element differs from the last
    # one the API accepted for that customer (see importer/sync.py).
    mode: Literal["all", "changed"] = "all"


class OutputConfig(_Strict):
    dead_letter: Path = Path("out/dead_letter.jsonl")
    state: Path = Path("out/state.db")
    report: Path = Path("out/report.json")
    metrics: Path | None = None  # Prometheus text format, rewritten during and after the run
    notify: NotifyConfig | None = None

    @field_validator("notify", mode="before")
    @classmethod
    def _bare_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


ImportKind = Literal["users", "events"]


class JobConfig(_Strict):
    # `import` is a Python keyword: the field is import_, the job file key `import`.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    import_: ImportKind = Field("users", alias="import")
    api: ApiConfig
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    mapping: MappingConfig
    sync: SyncConfig = Field(default_factory=SyncConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


# ---------------------------------------------------------------------------------------------
# ${NAME} interpolation

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


CREDENTIAL_PATHS = ("api.api_key", "api.api_key_file", "api.workspace_id")


def interpolate(
    tree: Any, env: Mapping[str, str], path: str = "", *, need_credentials: bool = True
) -> Any:
    """Replace ${NAME} in every string; missing variables are one error naming each and its key.

    Values of variables that hold secrets (the API key's, and any *KEY*, *SECRET*, *TOKEN*,
    *PASSWORD*) are registered for redaction. Without `need_credentials` (validate, init) a
    missing variable in the credentials is no error."""
    missing: list[str] = []
    result = _interpolate(tree, env, path, missing, need_credentials)
    if missing:
        raise ConfigError("\n".join(missing))
    return result


def _interpolate(
    tree: Any, env: Mapping[str, str], path: str, missing: list[str], need_credentials: bool
) -> Any:
    if isinstance(tree, dict):
        return {
            k: _interpolate(v, env, f"{path}.{k}" if path else str(k), missing, need_credentials)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [
            _interpolate(v, env, f"{path}[{i}]", missing, need_credentials)
            for i, v in enumerate(tree)
        ]
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                if need_credentials or path not in CREDENTIAL_PATHS:
                    missing.append(
                        f"{path or '(top level)'}: environment variable {name} is not set"
                    )
                return ""
            if path == "api.api_key" or is_secret_variable(name):
                register_secret(env[name], f"${{{name}}}")
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
    if kind in ("literal_error", "enum"):
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


def attribute_name_problem(name: str, allow_reserved: Iterable[str] = ()) -> str | None:
    """Why MoEngage would refuse (or punish) this attribute name, or None if it is fine.

    `allow_reserved` admits moe_ names the catalogue lacks (mapping.allow_reserved)."""
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        shown = repr(name) if name else "the empty name"
        return f"{shown} is blocked by MoEngage as an attribute name"
    if name in _PAYLOAD_KEYS:
        return f"{name} is a payload key of its own; use {_PAYLOAD_KEYS[name]} instead"
    if (
        name.startswith(moengage.RESERVED_PREFIX)
        and name not in moengage.SYSTEM_ATTRIBUTES
        and name not in allow_reserved
    ):
        examples = ", ".join(moengage.SYSTEM_ATTRIBUTE_EXAMPLES[:2])
        return (
            f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's system attributes"
            f" ({examples}, ...); a custom attribute using it can get the workspace blacklisted"
            " (list a system attribute MoEngage added since in mapping.allow_reserved)"
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
            problem = attribute_name_problem(name, mapping.allow_reserved)
            if problem:
                yield f"{_key(section, name)}: {problem}"


def _attribute_count_problems(mapping: MappingConfig) -> Iterator[str]:
    names = set(mapping.attributes) | set(mapping.add_to_array) | set(mapping.remove_from_array)
    custom = {name for name in names if catalogue.lookup(name) is None}
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
        for option in ("ambiguous", "nonexistent"):
            if spec.type != "datetime" and option in given:
                yield f"{path}.{option}: only applies to type datetime (this one is {spec.type})"
        if spec.type != "date" and "as_text" in given:
            yield f"{path}.as_text: only applies to type date (this one is {spec.type})"
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


def _standard_attribute_problems(mapping: MappingConfig) -> Iterator[str]:
    """A standard attribute mapped as a type its schema contradicts would be dropped by
    MoEngage without a word: refuse the job instead."""
    for name, spec in mapping.attributes.items():
        problem = catalogue.type_contradiction(name, spec.type, spec.as_text, spec.items)
        if problem:
            yield f"{_key('mapping.attributes', name)}.type: {problem}"
    for standard_name, names in catalogue.duplicate_standard_names(
        list(mapping.attributes)
    ).items():
        yield (
            f"{_key('mapping.attributes', names[1])}: sets MoEngage's standard attribute"
            f" {standard_name}, as {names[0]} does; map it once"
        )
    for section in ("add_to_array", "remove_from_array"):
        for name in getattr(mapping, section):
            problem = catalogue.array_op_contradiction(name)
            if problem:
                yield f"{_key('mapping.' + section, name)}: {problem}"
    for i, name in enumerate(mapping.allow_reserved):
        if not name.startswith(moengage.RESERVED_PREFIX):
            yield (
                f"mapping.allow_reserved[{i}]: {name!r} does not start with"
                f" {moengage.RESERVED_PREFIX}; only reserved names need allowing"
            )
        elif name in moengage.SYSTEM_ATTRIBUTES:
            yield (
                f"mapping.allow_reserved[{i}]: {name} is already one of MoEngage's standard"
                " attributes; remove it from allow_reserved"
            )


def job_warnings(mapping: MappingConfig) -> list[str]:
    """What the job may send but a user should know about (the job still runs)."""
    warnings = []
    mapped = [*mapping.attributes, *mapping.add_to_array, *mapping.remove_from_array]
    for name in mapping.allow_reserved:
        if name in mapped:
            warnings.append(
                f"mapping.allow_reserved: sending {name}, which is not among MoEngage's"
                f" documented system attributes; a custom attribute with the"
                f" {moengage.RESERVED_PREFIX} prefix can get the workspace blacklisted"
            )
    if mapping.update_existing_only:
        for name in mapping.attributes:
            standard = catalogue.lookup(name)
            if standard is not None and standard.create_only:
                warnings.append(
                    f"{_key('mapping.attributes', name)}: MoEngage sets {name} only when it"
                    " creates a user, and update_existing_only: true creates none"
                )
    return warnings


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


_WORKSPACE_ID = re.compile(r"[A-Za-z0-9._~-]+")


def _api_problems(api: ApiConfig, need_credentials: bool = True) -> Iterator[str]:
    # Never quote api.* values here: a misplaced key could be anywhere in this section.
    key = api.api_key.get_secret_value()
    if need_credentials and not api.workspace_id.strip():
        yield "api.workspace_id: must not be empty"
    elif api.workspace_id and not _WORKSPACE_ID.fullmatch(api.workspace_id):
        odd = sorted({c for c in api.workspace_id if not _WORKSPACE_ID.fullmatch(c)})
        yield (
            "api.workspace_id: may hold only letters, digits and . _ ~ - (it is part of the URL"
            f" path and the Basic auth user name); found {' '.join(map(repr, odd))}"
        )
    if key and api.api_key_file is not None:
        yield "api.api_key_file: give either api.api_key or api.api_key_file, not both"
    elif need_credentials and api.api_key_file is None and not key.strip():
        yield (
            "api.api_key: must not be empty"
            if "api_key" in api.model_fields_set
            else "api.api_key: required key is missing (or give api.api_key_file)"
        )
    elif need_credentials and key != key.strip():
        yield (
            "api.api_key: the key has whitespace at its start or end (a newline from `cat "
            "keyfile`?); remove it, or name the file in api.api_key_file, which drops one "
            "trailing newline"
        )
    if api.base_url is not None:
        problem = _base_url_problem(api.base_url)
        if problem:
            yield f"api.base_url: {problem}"
    if api.project_code is not None and not api.project_code.strip():
        yield "api.project_code: must not be empty (leave it out if the workspace has none)"


def read_api_key_file(path: Path) -> str:
    """The key in `path`, less one trailing newline (what `echo KEY > file` adds)."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as error:
        raise ConfigError(f"api.api_key_file: cannot read {path}: {error.strerror}") from None
    try:
        key = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"api.api_key_file: {path} is not UTF-8 text") from None
    key = key.removesuffix("\n").removesuffix("\r")
    register_secret(key, "the key in api.api_key_file")
    if not key.strip():
        raise ConfigError(f"api.api_key_file: {path} is empty")
    if key != key.strip():
        raise ConfigError(
            f"api.api_key_file: the key in {path} has whitespace at its start or end beyond"
            " one trailing newline; remove it"
        )
    return key


def _delivery_problems(delivery: DeliveryConfig) -> Iterator[str]:
    if delivery.backoff_base_seconds > delivery.backoff_max_seconds:
        yield "delivery.backoff_base_seconds: must not exceed delivery.backoff_max_seconds"


# ---------------------------------------------------------------------------------------------
# Events jobs (import: events): the rules of mapping.event


def event_name_problem(name: str) -> str | None:
    """Why MoEngage would refuse this event name (the action), or None."""
    if not name.strip():
        return "an event needs a non-empty action"
    if name.startswith(moengage.RESERVED_PREFIX):
        return f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's own events"
    if len(name) > moengage.MAX_EVENT_NAME_LENGTH:
        return (
            f"the event name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_EVENT_NAME_LENGTH}"
        )
    return None


def event_attribute_name_problem(name: str) -> str | None:
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        shown = repr(name) if name else "the empty name"
        return f"{shown} is blocked by MoEngage as an attribute name"
    if name.startswith(moengage.RESERVED_PREFIX):
        return (
            f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's system"
            " attributes, on events too"
        )
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return (
            f"the name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
        )
    return None


_USER_ONLY_KEYS = ("attributes", "add_to_array", "remove_from_array", "platforms", "identifiers")


def event_job_problems(kind: str, mapping: MappingConfig) -> Iterator[str]:
    """mapping.event belongs to events jobs, and is what an events job maps."""
    event = mapping.event
    if kind != "events":
        if event is not None:
            yield "mapping.event: only an events job maps events; set `import: events`"
        return
    if event is None:
        yield (
            "mapping.event: an events job (import: events) needs mapping.event with action and time"
        )
        return
    for key in _USER_ONLY_KEYS:
        if getattr(mapping, key):
            yield (
                f"mapping.{key}: an events job sends no user attributes; event attributes go"
                " under mapping.event.attributes"
            )
    if mapping.update_existing_only:
        yield "mapping.update_existing_only: applies to user updates, not to an events job"
    if not mapping.customer_id:
        yield (
            "mapping.customer_id: an events job needs the column holding each event's customer_id"
        )
    if event.action.constant is not None:
        problem = event_name_problem(event.action.constant)
        if problem:
            yield f"mapping.event.action: {problem}"
    if event.time.type != "datetime":
        yield "mapping.event.time.type: must be datetime (the time of the event)"
    if event.time.timezone is not None:
        problem = _timezone_problem(event.time.timezone)
        if problem:
            yield f"mapping.event.time.timezone: {problem}"
    if event.timezone_offset is not None and event.timezone_offset.constant is not None:
        yield from _offset_constant_problems(event.timezone_offset.constant)
    platform = event.platform
    if (
        platform is not None
        and platform.constant is not None
        and platform.constant not in moengage.EVENT_PLATFORMS
    ):
        yield (
            f"mapping.event.platform: {platform.constant!r} is not a platform MoEngage"
            f" knows; use one of {', '.join(moengage.EVENT_PLATFORMS)}"
        )
    for name, spec in event.attributes.items():
        problem = event_attribute_name_problem(name)
        if problem:
            yield f"{_key('mapping.event.attributes', name)}: {problem}"
        if spec.timezone is not None:
            problem = _timezone_problem(spec.timezone)
            if problem:
                yield f"{_key('mapping.event.attributes', name)}.timezone: {problem}"
    if len(event.attributes) > moengage.MAX_EVENT_ATTRIBUTES:
        yield (
            f"mapping.event.attributes: {len(event.attributes)} attributes; MoEngage allows at"
            f" most {moengage.MAX_EVENT_ATTRIBUTES} per event"
        )


def _offset_constant_problems(text: str) -> Iterator[str]:
    limit = moengage.MAX_TIMEZONE_OFFSET_SECONDS
    try:
        offset = int(text)
    except ValueError:
        yield "mapping.event.timezone_offset: a constant offset must be whole seconds"
        return
    if not -limit <= offset <= limit:
        yield f"mapping.event.timezone_offset: must lie between -{limit} and {limit} seconds"


def event_job_warnings(kind: str, mapping: MappingConfig) -> list[str]:
    event = mapping.event
    if kind != "events" or event is None or event.action.constant is None:
        return []
    if moengage.EVENT_NAME_STORED_AS_SPACE in event.action.constant:
        return ["mapping.event.action: MoEngage stores a '.' in an event name as a space"]
    return []


def events_sync_problem(kind: str, sync_mode: str) -> str | None:
    """`sync.mode: changed` compares a user's element with the last one accepted: events
    have no such state, and resume already keeps a rerun from sending an event twice.
    Refused before anything is sent (exit 2)."""
    if kind == "events" and sync_mode == "changed":
        return (
            "sync.mode: changed is for users; an events job cannot use it (events have no"
            " state to compare, and resume already keeps a rerun from sending one twice)"
        )
    return None


def check_mapping_rules(mapping: MappingConfig) -> None:
    """Refuse a mapping the Mapper cannot apply (no identity, unknown time zone or platform);
    the one place these rules live, for jobs and for a Mapper built from a MappingConfig."""
    problems = [
        *_identity_problems(mapping),
        *_attribute_option_problems(mapping),
        *_platform_problems(mapping),
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def check_job_rules(job: JobConfig, need_credentials: bool = True) -> None:
    """Refuse a job MoEngage would refuse (or punish), listing every problem, one a line."""
    mapping = job.mapping
    problems = [
        *_api_problems(job.api, need_credentials),
        *_delivery_problems(job.delivery),
        *_identity_problems(mapping),
        *_attribute_name_problems(mapping),
        *_attribute_count_problems(mapping),
        *_set_and_changed_problems(mapping),
        *_attribute_option_problems(mapping),
        *_standard_attribute_problems(mapping),
        *_platform_problems(mapping),
        *event_job_problems(job.import_, mapping),
        *filter(None, [events_sync_problem(job.import_, job.sync.mode)]),
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
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_YAML_VALUES = 100_000  # a job file has hundreds; aliases must not multiply them


def _check_expanded_size(tree: Any, job_path: Path) -> None:
    """Refuse a tree whose aliases expand it beyond MAX_YAML_VALUES values (an alias bomb),
    counted without expanding: each shared node is sized once."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise ConfigError(f"{job_path}: a YAML alias refers to itself")
        in_progress.add(key)
        children = list(node.items()) if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child[1]) if isinstance(node, dict) else size(child)
            if total > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{job_path}: the YAML expands to more than {MAX_YAML_VALUES:,} values"
                    " through its aliases (&anchor / *alias); a job file needs far fewer"
                )
        in_progress.discard(key)
        sizes[key] = total
        return total

    size(tree)


def _yaml_error_message(job_path: Path, error: yaml.YAMLError) -> str:
    # PyYAML's own text quotes the offending line, which may hold the API key: keep only the
    # position and the problem.
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"{job_path}: not valid YAML at {where}: {error.problem or 'syntax error'}"
    return f"{job_path}: not valid YAML"


def parse_job(
    raw: Any, env: Mapping[str, str] | None = None, *, need_credentials: bool = True
) -> JobConfig:
    """Interpolate, validate and apply the job-level rules to an already-parsed YAML tree.

    Without `need_credentials` (validate, init: nothing is sent) the API key and workspace
    may be missing, and a key file is not read."""
    if not isinstance(raw, dict):
        raise ConfigError("the job file must be a YAML mapping with api, source, mapping, ...")
    tree = interpolate(raw, os.environ if env is None else env, need_credentials=need_credentials)
    try:
        job = JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None
    key = job.api.api_key.get_secret_value()
    register_secret(key, "the API key")
    check_job_rules(job, need_credentials)
    for warning in [*job_warnings(job.mapping), *event_job_warnings(job.import_, job.mapping)]:
        logging.getLogger("importer").warning(warning)
    if need_credentials and job.api.api_key_file is not None:
        key = read_api_key_file(job.api.api_key_file)
        api = job.api.model_copy(update={"api_key": SecretStr(key), "api_key_file": None})
        job = job.model_copy(update={"api": api})
    return job


def with_overrides(
    job: JobConfig,
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    need_credentials: bool = True,
) -> JobConfig:
    """The job with command-line values put in, validated like the file itself."""
    # Only what the file set: the rules tell options a user wrote from defaults.
    tree = job.model_dump(exclude_unset=True)  # the api key stays a SecretStr
    for section, values in overrides.items():
        tree.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        updated = JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None
    check_job_rules(updated, need_credentials)
    return updated


def load_job(
    path: str | Path, env: Mapping[str, str] | None = None, *, need_credentials: bool = True
) -> JobConfig:
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
        _check_expanded_size(raw, job_path)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(job_path, error)) from None
    except ConfigError as error:
        if str(error).startswith(str(job_path)):
            raise
        raise ConfigError(f"{job_path}: {error}") from None
    except RecursionError:
        raise ConfigError(f"{job_path}: the YAML nests too deeply") from None
    job = parse_job(raw, env, need_credentials=need_credentials)
    output = raw.get("output")
    if not (isinstance(output, dict) and output.get("state")):
        # Progress belongs to the job, not the input: two jobs over one export (a rehearsal
        # and the real one) must not share it. Default: <job name>.state.db by the dead letters.
        state = job.output.dead_letter.parent / f"{job_path.stem}.state.db"
        job = with_overrides(
            job, {"output": {"state": str(state)}}, need_credentials=need_credentials
        )
    return job
