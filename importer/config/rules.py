"""Job-level rules, refused before anything is sent: credentials, delivery, the mapping's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from importer.config.event_rules import event_job_problems, events_sync_problem
from importer.config.messages import ConfigError
from importer.config.models import ApiConfig, DeliveryConfig, JobConfig, MappingConfig
from importer.config.slicing import slice_problems
from importer.config.sync_rules import delete_absent_problems, on_empty_problems
from importer.config.user_rules import (
    attribute_count_problems,
    attribute_name_problems,
    attribute_option_problems,
    identity_problems,
    platform_problems,
    set_and_changed_problems,
    standard_attribute_problems,
)
from importer.redaction import Secrets


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


def read_api_key_file(path: Path, secrets: Secrets | None = None) -> str:
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
    if secrets is not None:
        secrets.add(key, "the key in api.api_key_file")
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


def check_mapping_rules(mapping: MappingConfig) -> None:
    """Refuse a mapping the Mapper cannot apply (no identity, unknown time zone or platform);
    the one place these rules live, for jobs and for a Mapper built from a MappingConfig."""
    problems = [
        *identity_problems(mapping),
        *attribute_option_problems(mapping),
        *platform_problems(mapping),
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def check_job_rules(job: JobConfig, need_credentials: bool = True) -> None:
    """Refuse a job MoEngage would refuse (or punish), listing every problem, one a line."""
    mapping = job.mapping
    problems = [
        *_api_problems(job.api, need_credentials),
        *_delivery_problems(job.delivery),
        *identity_problems(mapping),
        *attribute_name_problems(mapping),
        *attribute_count_problems(mapping),
        *set_and_changed_problems(mapping),
        *attribute_option_problems(mapping),
        *standard_attribute_problems(mapping),
        *platform_problems(mapping),
        *event_job_problems(job.import_, mapping),
        *filter(None, [events_sync_problem(job.import_, job.sync.mode)]),
        *on_empty_problems(job),
        *delete_absent_problems(job),
        *slice_problems(job.slice, mapping.customer_id),
    ]
    if problems:
        raise ConfigError("\n".join(problems))
