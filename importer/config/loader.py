"""Reading a job file: YAML without surprises, ${ENV}, the model, the rules; one `load_job`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from importer.config.env import interpolate
from importer.config.event_rules import event_job_warnings
from importer.config.messages import ConfigError, format_validation_error
from importer.config.models import DEFAULT_OUTPUT_FOLDER, JobConfig, OutputConfig
from importer.config.rules import check_job_rules, read_api_key_file
from importer.config.user_rules import job_warnings
from importer.redaction import Secrets

# Sections as in the job file, e.g. {"source": {"path": "x.csv"}}; a None value is "not given".
Overrides = Mapping[str, Mapping[str, Any] | str | None]


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
    raw: Any,
    env: Mapping[str, str] | None = None,
    *,
    need_credentials: bool = True,
    secrets: Secrets | None = None,
) -> JobConfig:
    """Interpolate, validate and apply the job-level rules to an already-parsed YAML tree.

    Without `need_credentials` (validate, init: nothing is sent) the API key and workspace
    may be missing, and a key file is not read. The secrets met (the key, values of secret
    variables) go into `secrets`, are scrubbed from every error and stay with the job
    (`JobConfig.secrets()`)."""
    secrets = Secrets() if secrets is None else secrets
    try:
        job = _parsed(raw, os.environ if env is None else env, need_credentials, secrets)
    except ConfigError as error:
        raise ConfigError(secrets.scrub(str(error))) from None
    return job.keeping_secrets(secrets)


def _parsed(
    raw: Any, env: Mapping[str, str], need_credentials: bool, secrets: Secrets
) -> JobConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the job file must be a YAML mapping with api, source, mapping, ...")
    tree = interpolate(raw, env, need_credentials=need_credentials, secrets=secrets)
    api = tree.get("api")
    if isinstance(api, dict) and isinstance(api.get("api_key"), str):
        secrets.add(api["api_key"], "the API key")  # before any message could quote it
    try:
        job = JobConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
    check_job_rules(job, need_credentials)
    for warning in [*job_warnings(job.mapping), *event_job_warnings(job.import_, job.mapping)]:
        logging.getLogger("importer").warning(secrets.scrub(warning))
    if need_credentials and job.api.api_key_file is not None:
        key = read_api_key_file(job.api.api_key_file, secrets)
        api_config = job.api.model_copy(update={"api_key": SecretStr(key), "api_key_file": None})
        job = job.model_copy(update={"api": api_config})
    return job


def with_overrides(
    job: JobConfig, overrides: Overrides, *, need_credentials: bool = True
) -> JobConfig:
    """The job with command-line values put in, validated like the file itself."""
    secrets = job.secrets()
    # Only what the file set: the rules tell options a user wrote from defaults.
    tree = job.model_dump(exclude_unset=True)  # the api key stays a SecretStr
    for section, values in overrides.items():
        if not isinstance(values, Mapping):  # a top-level key (slice)
            if values is not None:
                tree[section] = values
            continue
        tree.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        updated = JobConfig.model_validate(tree)
        check_job_rules(updated, need_credentials)
    except ValidationError as error:
        raise ConfigError(secrets.scrub(format_validation_error(error))) from None
    except ConfigError as error:
        raise ConfigError(secrets.scrub(str(error))) from None
    return updated.keeping_secrets(secrets).from_job_file(job.job_file())


def load_job(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
    *,
    need_credentials: bool = True,
) -> JobConfig:
    """Read, interpolate and validate a job file; every problem is a ConfigError (a JobRefused).

    `${NAME}` comes from `env` (default: the environment). `overrides` are sections as in the
    file, e.g. `{"source": {"path": "x.csv"}}`, checked like the file itself. Without
    `need_credentials` (a dry run) the API key and workspace may be missing."""
    job_path = Path(path)
    raw = _read_yaml(job_path)
    job = parse_job(raw, env, need_credentials=need_credentials).from_job_file(job_path)
    given = raw.get("output") if isinstance(raw.get("output"), dict) else {}
    defaults = default_outputs(job_path, {k for k, v in given.items() if v}, job.output)
    if defaults:
        job = with_overrides(job, {"output": defaults}, need_credentials=need_credentials)
    if overrides:
        job = with_overrides(job, overrides, need_credentials=need_credentials)
    return job


def default_outputs(job_path: Path, given: set[str], output: OutputConfig) -> dict[str, str]:
    """The outputs a job file leaves unset, each job apart: `out/<job file stem>/` holds its
    dead letters, report and state (relative to the current directory).

    Progress belongs to the job, not the input: two jobs over one export (a rehearsal and
    the real one) must not share it. A job that names its dead-letter file but not its state
    keeps `<job stem>.state.db` beside the dead letters, as before."""
    folder = DEFAULT_OUTPUT_FOLDER / job_path.stem
    defaults: dict[str, str] = {}
    if "dead_letter" not in given:
        defaults["dead_letter"] = str(folder / "dead_letter.jsonl")
    if "report" not in given:
        defaults["report"] = str(folder / "report.json")
    if "state" not in given:
        beside = output.dead_letter.parent / f"{job_path.stem}.state.db"
        defaults["state"] = str(beside if "dead_letter" in given else folder / "state.db")
    return defaults


def _read_yaml(job_path: Path) -> Any:
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
    return raw
