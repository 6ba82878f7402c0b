"""The job file: a typed model validated once at the edge, ${ENV} interpolation, key-path errors.

models       every section and key (pydantic), and the secrets a job holds
env          ${NAME} interpolation, noting values of secret variables
messages     ConfigError, and pydantic's errors as key-path lines
user_rules   rules of a users mapping (names, counts, options, platforms)
event_rules  rules of an events job (mapping.event)
rules        credentials and delivery, and the job-level check that runs them all
loader       YAML reading and the one `load_job`
tls          the CA trust `api.ca_bundle` names (checked at load time)
"""

from __future__ import annotations

from importer.config.env import CREDENTIAL_PATHS, interpolate, is_secret_variable
from importer.config.event_rules import (
    event_attribute_name_problem,
    event_job_problems,
    event_job_warnings,
    event_name_problem,
    events_sync_problem,
)
from importer.config.loader import (
    MAX_YAML_VALUES,
    Overrides,
    default_outputs,
    load_job,
    parse_job,
    with_overrides,
)
from importer.config.messages import ConfigError, JobRefused, key_path
from importer.config.models import (
    DEFAULT_OUTPUT_FOLDER,
    NOTIFY_ON,
    AmbiguousTime,
    ApiConfig,
    ArrayOpSpec,
    AttributeSpec,
    AttributeSpecs,
    AttributeType,
    DeleteAbsentConfig,
    DeleteRateConfig,
    DeliveryConfig,
    EventConfig,
    EventValue,
    ImportKind,
    ItemType,
    JobConfig,
    MappingConfig,
    NonexistentTime,
    NotifyConfig,
    NotifyOn,
    OnEmpty,
    OutputConfig,
    OutputStorage,
    PlatformsSpec,
    RateLimitConfig,
    SharedQuotaConfig,
    SyncConfig,
)
from importer.config.rules import check_job_rules, check_mapping_rules, read_api_key_file
from importer.config.source_models import CsvOptions, SourceConfig, SourceFormat, StorageOptions
from importer.config.user_rules import attribute_name_problem, job_warnings, timezone_problem

__all__ = [
    "CREDENTIAL_PATHS",
    "DEFAULT_OUTPUT_FOLDER",
    "MAX_YAML_VALUES",
    "NOTIFY_ON",
    "AmbiguousTime",
    "ApiConfig",
    "ArrayOpSpec",
    "AttributeSpec",
    "AttributeSpecs",
    "AttributeType",
    "ConfigError",
    "CsvOptions",
    "DeleteAbsentConfig",
    "DeleteRateConfig",
    "DeliveryConfig",
    "EventConfig",
    "EventValue",
    "ImportKind",
    "ItemType",
    "JobConfig",
    "JobRefused",
    "MappingConfig",
    "NonexistentTime",
    "NotifyConfig",
    "NotifyOn",
    "OnEmpty",
    "OutputConfig",
    "OutputStorage",
    "Overrides",
    "PlatformsSpec",
    "RateLimitConfig",
    "SharedQuotaConfig",
    "SourceConfig",
    "SourceFormat",
    "StorageOptions",
    "SyncConfig",
    "attribute_name_problem",
    "check_job_rules",
    "check_mapping_rules",
    "default_outputs",
    "event_attribute_name_problem",
    "event_job_problems",
    "event_job_warnings",
    "event_name_problem",
    "events_sync_problem",
    "interpolate",
    "is_secret_variable",
    "job_warnings",
    "key_path",
    "load_job",
    "parse_job",
    "read_api_key_file",
    "timezone_problem",
    "with_overrides",
]
