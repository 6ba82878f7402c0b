"""The job file's typed model: every section and key, validated once at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from importer import moengage
from importer.config.slicing import parse_slice, slice_text
from importer.config.source_models import SourceConfig, StorageOptions
from importer.config.strict import Strict
from importer.config.tls import ssl_context
from importer.moengage import Endpoint
from importer.outputs.location import output_location
from importer.redaction import Secrets, credential_secrets, url_password

# mapping.on_empty: what an empty cell does to its attribute (omit: nothing; unset: cleared).
OnEmpty = Literal["omit", "unset"]
AttributeType = Literal["string", "integer", "number", "boolean", "datetime", "date", "array"]
ItemType = Literal["string", "integer", "number"]
# How type datetime reads a local time the clocks repeat / skip; "raise" dead-letters the row.
AmbiguousTime = Literal["earliest", "latest", "raise"]
NonexistentTime = Literal["shift_forward", "shift_backward", "raise"]


class ApiConfig(Strict):
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
            ssl_context(value)  # a ValueError naming the file if it is no CA file
        return value

    def resolved_base_url(self) -> str:
        """base_url wins over data_center (sandbox, proxy)."""
        return (self.base_url or moengage.base_url_for(self.data_center)).rstrip("/")


class SharedQuotaConfig(Strict):
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


class DeleteRateConfig(Strict):
    """rate_limit.deletes: the Delete User API's own limit (one user a request)."""

    requests: int = Field(moengage.DEFAULT_DELETE_REQUESTS, gt=0)  # deletes per period
    period_seconds: float = Field(moengage.DEFAULT_RATE_PERIOD_SECONDS, gt=0, allow_inf_nan=False)


class RateLimitConfig(Strict):
    updates: int = Field(moengage.DEFAULT_RATE_UPDATES, gt=0)
    period_seconds: float = Field(moengage.DEFAULT_RATE_PERIOD_SECONDS, gt=0, allow_inf_nan=False)
    shared: SharedQuotaConfig | None = None
    deletes: DeleteRateConfig = Field(default_factory=DeleteRateConfig)


class DeliveryConfig(Strict):
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
    # Events whose request got no answer (it may have reached MoEngage): sent again, and
    # counted as possibly duplicated; or dead-lettered, stage uncertain. Users always resend.
    on_lost_answer: Literal["resend", "dead_letter"] = "resend"


class AttributeSpec(Strict):
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
    on_empty: OnEmpty | None = None  # users: overrides mapping.on_empty for this attribute


class ArrayOpSpec(Strict):
    column: str
    separator: str | None = None
    items: ItemType = "string"


class PlatformsSpec(Strict):
    """Either a column whose cells are platform names, or a constant list for every row."""

    column: str | None = None
    values: list[str] | None = None


class EventValue(Strict):
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


class EventConfig(Strict):
    """mapping.event (import: events): one row is one action of its customer."""

    action: EventValue
    time: AttributeSpec  # -> current_time; type datetime
    timezone_offset: EventValue | None = None  # seconds -> user_timezone_offset
    platform: EventValue | None = None
    app_version: EventValue | None = None
    attributes: AttributeSpecs = Field(default_factory=dict)
    # The export's own event id: it keys the events ledger (else the event's content does).
    id: str | None = None

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


class MappingConfig(Strict):
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
    on_empty: OnEmpty = "omit"  # users: an empty cell omits its attribute, or unsets it
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


class NotifyConfig(Strict):
    """output.notify: a JSON POST (Slack-webhook compatible) when the run ends."""

    url: str
    on: list[NotifyOn] = Field(default_factory=lambda: list(NOTIFY_ON))

    @field_validator("url", mode="before")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        if isinstance(value, str) and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value


class DeleteAbsentConfig(Strict):
    """sync.delete_absent: delete customers this job delivered that tonight's export lacks."""

    enabled: bool = False  # needs sync.mode changed and mapping.customer_id
    # More absent than this share of the snapshot: nothing is deleted (exit 2).
    max_fraction: float = Field(0.05, ge=0, le=1, allow_inf_nan=False)
    max_count: int | None = Field(None, ge=0)  # more absent than this: nothing deleted (exit 2)
    # MoEngage hard-deletes this long after the request; updates in between are lost.
    window_seconds: float = Field(86_400, ge=0, allow_inf_nan=False)


class SyncConfig(Strict):
    # all: send every valid row; changed: only rows whose element differs from the last
    # one the API accepted for that customer (see importer/run/sync.py).
    mode: Literal["all", "changed"] = "all"
    delete_absent: DeleteAbsentConfig = Field(default_factory=DeleteAbsentConfig)
    # Events jobs: forget ledger entries accepted more than this many days ago, so an event
    # re-exported after that is sent again (null: never forget).
    events_horizon_days: int | None = Field(None, ge=1)


# Outputs a job file leaves unset go to `out/<job file stem>/` (see config.loader); a job
# built in code, with no file, is "job".
DEFAULT_OUTPUT_FOLDER = Path("out")


class OutputStorage(StorageOptions):
    """output.storage: the store of s3:// outputs (as source.storage), and whether a store
    that ignores conditional writes may hold the state (`allow_unguarded`)."""

    # A store that does not honour If-Match / If-None-Match cannot keep two runners from
    # overwriting each other's state: refused (exit 2) unless this is true.
    allow_unguarded: bool = False


# An output: a local path, or s3://bucket/key (kept as a Path; see importer.outputs.location).
OutputPath = Annotated[Path, BeforeValidator(output_location)]


class OutputConfig(Strict):
    # unset: out/<job file stem>/dead_letter.jsonl (each job its own folder)
    dead_letter: OutputPath = DEFAULT_OUTPUT_FOLDER / "job" / "dead_letter.jsonl"
    # unset: out/<job file stem>/state.db (<stem>.state.db beside a dead_letter set in the file)
    state: OutputPath = DEFAULT_OUTPUT_FOLDER / "job" / "state.db"
    # unset: out/<job file stem>/report.json
    report: OutputPath = DEFAULT_OUTPUT_FOLDER / "job" / "report.json"
    metrics: OutputPath | None = None  # Prometheus text format, rewritten during and after the run
    notify: NotifyConfig | None = None
    storage: OutputStorage = Field(default_factory=OutputStorage)  # for s3:// outputs
    # s3:// state: uploaded at most this often while the run goes on, and at its end; 0
    # uploads after every answered request (a crash then re-sends nothing, at its cost).
    checkpoint_seconds: float = Field(60, ge=0, allow_inf_nan=False)

    @field_validator("notify", mode="before")
    @classmethod
    def _bare_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


ImportKind = Literal["users", "events"]


class JobConfig(Strict):
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
    # "K/N": only the customers whose customer_id hashes to slice K of N (run.slices).
    slice: Annotated[str | None, BeforeValidator(slice_text)] = None

    # The values of secret variables the job file named (${*TOKEN*}, ...), kept by the
    # loader so that errors met later in the run can be scrubbed of them too.
    _named_secrets: Secrets = PrivateAttr(default_factory=Secrets)
    # The job file this job was read from (None for a job built in code): its outputs'
    # ownership marks name it (see importer.outputs.ownership).
    _job_file: Path | None = PrivateAttr(default=None)

    def slice_parts(self) -> tuple[int, int] | None:
        """(K, N) of `slice`, or None for a run of every customer."""
        return None if self.slice is None else parse_slice(self.slice)

    def job_file(self) -> Path | None:
        """The job file's resolved path, when the job was read from one."""
        return self._job_file

    def from_job_file(self, path: Path | None) -> JobConfig:
        """This job, remembering the job file it was read from (resolved)."""
        self._job_file = None if path is None else path.resolve()
        return self

    def secrets(self) -> Secrets:
        """Everything secret in this job: the values of secret variables it named, the API key
        and the Basic credentials built from it (see importer.redaction)."""
        found = Secrets()
        found.update(self._named_secrets)
        key = self.api.api_key.get_secret_value()
        found.add(key, "the API key")
        for value in credential_secrets(self.api.workspace_id, key)[1:]:
            found.add(value)
        found.add(url_password(self.rate_limit.shared.url if self.rate_limit.shared else "") or "")
        return found

    def keeping_secrets(self, secrets: Secrets) -> JobConfig:
        """This job, remembering `secrets` (the loader's) for `secrets()`."""
        kept = Secrets()
        kept.update(self._named_secrets)
        kept.update(secrets)
        self._named_secrets = kept
        return self
