"""The job file: key-path errors, ${ENV}, job-level rules, and the API key kept out of messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from importer import moengage
from importer.config import ConfigError, check_job_rules, load_job, parse_job
from importer.redaction import Secrets
from importer.sources import SourceFormat

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-live-7Q9zX4wPVq2Lm8RtY6"
ENV = {"MOENGAGE_WORKSPACE_ID": "WS123", "MOENGAGE_API_KEY": SECRET}

BASE_YAML = """
api:
  workspace_id: WS123
  api_key: sk-live-7Q9zX4wPVq2Lm8RtY6
source:
  path: sample_data/
mapping:
  customer_id: user_id
  attributes:
    first_name: first_name
    points: {column: loyalty_points, type: integer}
    signed_up: {column: signup_at, type: datetime}
    interests: {column: interests, type: array, separator: "|"}
"""


def _merge(base: Any, patch: Any) -> Any:
    """Deep-merge a YAML snippet into the base job (mappings merge, anything else replaces)."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    return {**base, **{key: _merge(base.get(key), value) for key, value in patch.items()}}


def job_tree(snippet: str = "") -> dict[str, Any]:
    base = yaml.safe_load(BASE_YAML)
    tree: dict[str, Any] = _merge(copy.deepcopy(base), yaml.safe_load(snippet) or {})
    return tree


def refusal(snippet: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_job(job_tree(snippet), env=ENV)
    return str(caught.value)


def test_base_job_is_accepted() -> None:
    job = parse_job(job_tree(), env=ENV)
    assert job.mapping.attributes["points"].type == "integer"
    assert job.api.resolved_base_url() == "https://api-01.moengage.com"


REFUSALS = [
    # attribute names
    (
        "mapping: {attributes: {moe_points: loyalty_points}}",
        "mapping.attributes.moe_points: the moe_ prefix is reserved for MoEngage's system"
        " attributes (moe_mobile, moe_email, ...); a custom attribute using it can get the"
        " workspace blacklisted",
    ),
    ("mapping: {attributes: {id: user_id}}", "mapping.attributes.id: 'id' is blocked"),
    (
        "mapping: {add_to_array: {_id: {column: tags}}}",
        "mapping.add_to_array._id: '_id' is blocked",
    ),
    ("mapping: {attributes: {'': city}}", "mapping.attributes.'': the empty name is blocked"),
    (
        f"mapping: {{remove_from_array: {{{'n' * 201}: {{column: tags}}}}}}",
        "mapping.remove_from_array.nnnnnnnnnn",
    ),
    (f"mapping: {{attributes: {{{'n' * 201}: city}}}}", "the name is 201 characters"),
    (
        "mapping: {attributes: {addValueToArrayField: tags}}",
        "mapping.attributes.addValueToArrayField: addValueToArrayField is a payload key of its"
        " own; use mapping.add_to_array",
    ),
    (
        "mapping: {attributes: {removeValueFromArrayField: tags}}",
        "mapping.attributes.removeValueFromArrayField: removeValueFromArrayField is a payload key",
    ),
    (
        "mapping: {attributes: {platforms: platform}}",
        "mapping.attributes.platforms: platforms is a",
    ),
    ("mapping: {add_to_array: {moe_tags: {column: t}}}", "mapping.add_to_array.moe_tags: the moe_"),
    # set and changed in the same update
    (
        "mapping: {add_to_array: {interests: {column: new_interests}}}",
        "mapping.add_to_array.interests: interests is also set in mapping.attributes",
    ),
    (
        "mapping: {remove_from_array: {interests: {column: old_interests}}}",
        "mapping.remove_from_array.interests: interests is also set in mapping.attributes",
    ),
    # type-specific options
    (
        "mapping: {attributes: {points: {column: p, type: integer, separator: ','}}}",
        "mapping.attributes.points.separator: only applies to type array",
    ),
    (
        "mapping: {attributes: {city: {column: city, items: integer}}}",
        "mapping.attributes.city.items: only applies to type array",
    ),
    (
        "mapping: {attributes: {city: {column: city, format: '%Y'}}}",
        "mapping.attributes.city.format: only applies to types datetime and date",
    ),
    (
        "mapping: {attributes: {points: {column: p, type: integer, timezone: UTC}}}",
        "mapping.attributes.points.timezone: only applies to types datetime and date",
    ),
    (
        "mapping: {attributes: {signed_up: {column: s, type: datetime, timezone: Europe/Berln}}}",
        "mapping.attributes.signed_up.timezone: unknown time zone 'Europe/Berln'",
    ),
    (
        "mapping: {attributes: {signed_up: {column: s, type: date, timezone: ../etc/passwd}}}",
        "mapping.attributes.signed_up.timezone: unknown time zone",
    ),
    (
        "mapping: {attributes: {interests: {column: i, type: array, separator: ''}}}",
        "mapping.attributes.interests.separator: must not be empty",
    ),
    (
        "mapping: {add_to_array: {tags: {column: t, separator: ''}}}",
        "mapping.add_to_array.tags.separator: must not be empty",
    ),
    # platforms
    (
        "mapping: {platforms: {column: platform, values: [web]}}",
        "mapping.platforms: give exactly one of column",
    ),
    ("mapping: {platforms: {}}", "mapping.platforms: give exactly one of column"),
    (
        "mapping: {platforms: [ANDROID, Windows]}",
        "mapping.platforms.values[1]: 'Windows' is not a platform; use ANDROID, iOS or web",
    ),
    ("mapping: {platforms: [ios]}", "mapping.platforms.values[0]: 'ios' is not a platform"),
    ("mapping: {platforms: []}", "mapping.platforms.values: must list at least one platform"),
    # identity
    ("mapping: {customer_id: null}", "mapping.customer_id: no customer_id column is mapped"),
    (
        "mapping: {customer_id: null, identifiers: [moe_mobile]}",
        "mapping.identifiers[0]: 'moe_mobile' is not a mapped attribute",
    ),
    ("mapping: {identifiers: [email]}", "mapping.identifiers[0]: 'email' is not a mapped"),
    # api
    ("api: {base_url: '127.0.0.1:8377'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {base_url: 'ftp://example.com'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {base_url: 'http://'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {base_url: 'http://host:99999'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {base_url: 'http://host/v1/x'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {base_url: 'http://user:pw@host'}", "api.base_url: must be http(s)://host[:port]"),
    ("api: {workspace_id: ''}", "api.workspace_id: must not be empty"),
    ("api: {workspace_id: '   '}", "api.workspace_id: must not be empty"),
    ("api: {api_key: ''}", "api.api_key: must not be empty"),
    ("api: {data_center: '07'}", "api.data_center: must be one of 01, 02, 03, 04, 05, 06, 101"),
    ("api: {endpoint: batch}", "api.endpoint: must be one of bulk, customer"),
]


@pytest.mark.parametrize(("snippet", "expected"), REFUSALS, ids=[s for s, _ in REFUSALS])
def test_job_level_refusals(snippet: str, expected: str) -> None:
    assert expected in refusal(snippet)


ACCEPTED = [
    "mapping: {attributes: {moe_mobile: phone, moe_email: email}}",  # system attributes
    # adding and removing the same array in one update is allowed (the reference's example job)
    "mapping: {add_to_array: {tags: {column: a, separator: '|'}},"
    " remove_from_array: {tags: {column: b, separator: '|'}}}",
    "mapping: {customer_id: null, attributes: {moe_mobile: phone}, identifiers: [moe_mobile]}",
    "mapping: {attributes: {signed_up: {column: s, type: datetime, format: '%d/%m/%Y %H:%M',"
    " timezone: Europe/Berlin}}}",
    "mapping: {attributes: {born: {column: b, type: date, format: '%d.%m.%Y'}}}",
    "mapping: {attributes: {scores: {column: s, type: array, separator: ';', items: number}}}",
    "mapping: {platforms: [ANDROID, iOS, web]}",
    "mapping: {platforms: platform}",
    "api: {base_url: 'https://proxy.example.com:8443/'}",
    "api: {base_url: 'http://127.0.0.1:8377'}",
    f"mapping: {{attributes: {{{'n' * 200}: city}}}}",
]


@pytest.mark.parametrize("snippet", ACCEPTED)
def test_jobs_that_are_allowed(snippet: str) -> None:
    check_job_rules(parse_job(job_tree(snippet), env=ENV))


def test_every_problem_is_listed_one_a_line() -> None:
    message = refusal(
        "api: {workspace_id: ''}\n"
        "mapping: {attributes: {id: user_id, moe_x: x}, platforms: [Windows]}"
    )
    lines = message.splitlines()
    assert len(lines) == 4
    assert [line.split(":")[0] for line in lines] == [
        "api.workspace_id",
        "mapping.attributes.id",
        "mapping.attributes.moe_x",
        "mapping.platforms.values[0]",
    ]


def _attributes(count: int, prefix: str = "a") -> dict[str, str]:
    return {f"{prefix}{i}": f"c{i}" for i in range(count)}


def test_more_than_256_custom_attributes_is_refused() -> None:
    tree = job_tree()
    tree["mapping"]["attributes"] = _attributes(250)
    tree["mapping"]["add_to_array"] = {f"x{i}": {"column": "c"} for i in range(7)}
    with pytest.raises(ConfigError, match=r"mapping: 257 distinct custom attributes; .* 256"):
        parse_job(tree, env=ENV)


def test_256_custom_attributes_plus_system_ones_are_fine() -> None:
    tree = job_tree()
    tree["mapping"]["attributes"] = {**_attributes(255), "moe_mobile": "phone"}
    # An array both added to and removed from counts once: 256 custom attributes in all.
    tree["mapping"]["add_to_array"] = {"tags": {"column": "c"}}
    tree["mapping"]["remove_from_array"] = {"tags": {"column": "c"}}
    parse_job(tree, env=ENV)


# --- pydantic's errors, with full key paths ---------------------------------------------------


def test_unknown_key_names_its_full_path() -> None:
    message = refusal("mapping: {attributes: {points: {column: loyalty_points, tpye: integer}}}")
    assert "mapping.attributes.points.tpye: unknown key" in message
    assert "did you mean type?" in message


def test_unknown_type_lists_the_types() -> None:
    message = refusal("mapping: {attributes: {points: {column: loyalty_points, type: float}}}")
    assert message == (
        "mapping.attributes.points.type: must be one of string, integer, number, boolean,"
        " datetime, date, array"
    )


def test_misspelt_top_level_section_is_named() -> None:
    tree = job_tree()
    tree["maping"] = tree.pop("mapping")
    with pytest.raises(ConfigError) as caught:
        parse_job(tree, env=ENV)
    lines = str(caught.value).splitlines()
    assert "mapping: required key is missing" in lines
    assert "maping: unknown key (did you mean mapping?)" in lines


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    message = refusal("source: {compression: gzip}")
    assert message.startswith("source.compression: unknown key; expected one of path, format")


def test_source_format_reads_the_plain_words_and_refuses_others_by_listing_them() -> None:
    for word, member in (("auto", SourceFormat.AUTO), ("parquet", SourceFormat.PARQUET)):
        job = parse_job(job_tree(f"source: {{format: {word}}}"), env=ENV)
        assert job.source.format is member and job.source.format == word
    assert parse_job(job_tree(), env=ENV).source.format is SourceFormat.AUTO
    for wrong in ("xlsx", "CSV", "1"):
        message = refusal(f"source: {{format: {wrong}}}")
        assert message == "source.format: must be one of auto, csv, parquet"


def test_wrong_value_types_read_plainly() -> None:
    message = refusal("rate_limit: {updates: lots, period_seconds: -1}\nsource: {csv: ','}")
    assert "rate_limit.updates: must be a whole number" in message
    assert "rate_limit.period_seconds: must be greater than 0" in message
    assert "source.csv: must be a mapping (key: value)" in message


def test_bare_column_is_a_string_attribute() -> None:
    job = parse_job(job_tree(), env=ENV)
    spec = job.mapping.attributes["first_name"]
    assert (spec.column, spec.type) == ("first_name", "string")


def test_data_center_written_as_a_yaml_number_means_the_padded_code(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    for written, meant in (("01", "01"), ("4", "04"), ("101", "101"), ('"02"', "02")):
        path.write_text(BASE_YAML.replace("api:\n", f"api:\n  data_center: {written}\n"))
        job = load_job(path)
        assert job.api.data_center == meant
        assert job.api.resolved_base_url() == f"https://api-{meant}.moengage.com"


def test_base_url_wins_over_data_center() -> None:
    job = parse_job(job_tree("api: {data_center: '02', base_url: 'http://127.0.0.1:8377/'}"), ENV)
    assert job.api.resolved_base_url() == "http://127.0.0.1:8377"


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(BASE_YAML + "    points: points_again\n")
    with pytest.raises(ConfigError, match="duplicate key points"):
        load_job(path)


# --- ${NAME} interpolation --------------------------------------------------------------------


def test_env_variables_are_interpolated() -> None:
    tree = job_tree(
        "api: {workspace_id: '${MOENGAGE_WORKSPACE_ID}', api_key: '${MOENGAGE_API_KEY}'}\n"
        "source: {path: 'exports/${MOENGAGE_WORKSPACE_ID}/*.csv'}"
    )
    job = parse_job(tree, env=ENV)
    assert job.api.workspace_id == "WS123"
    assert job.api.api_key.get_secret_value() == SECRET
    assert job.source.path == "exports/WS123/*.csv"


def test_missing_env_variables_name_the_variable_and_key_path() -> None:
    tree = job_tree(
        "api: {workspace_id: '${MOENGAGE_WORKSPACE_ID}', api_key: '${MOENGAGE_API_KEY}'}\n"
        "mapping: {platforms: ['${PLATFORM}']}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_job(tree, env={})
    assert str(caught.value).splitlines() == [
        "api.workspace_id: environment variable MOENGAGE_WORKSPACE_ID is not set",
        "api.api_key: environment variable MOENGAGE_API_KEY is not set",
        "mapping.platforms[0]: environment variable PLATFORM is not set",
    ]


# --- the API key never appears in an error ----------------------------------------------------

KEY_LEAK_CASES = [
    # rule errors elsewhere in a job holding the key
    "api: {base_url: 'nope'}\nmapping: {attributes: {id: x}, platforms: [Windows]}",
    # the key pasted into the wrong field
    f"api: {{base_url: '{SECRET}'}}",
    f"api: {{data_center: '{SECRET}'}}",
    f"api: {{endpoint: '{SECRET}'}}",
    f"api: {{project_code: [{SECRET}]}}",
    f"api: {{api_kee: '{SECRET}'}}",
    f"api: {{workspace_id: [{SECRET}]}}",
    f"api: {{api_key: [{SECRET}]}}",
    f"api: {{api_key: {{value: {SECRET}}}}}",
    f"rate_limit: {{updates: '{SECRET}'}}",
]


@pytest.mark.parametrize("snippet", KEY_LEAK_CASES)
def test_api_key_never_appears_in_an_error(snippet: str) -> None:
    message = refusal(snippet)
    assert message  # it was refused, with a message
    assert SECRET not in message
    assert "7Q9zX4wP" not in message


def test_api_key_never_appears_in_a_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(f"api:\n  workspace_id: WS\n  api_key: '{SECRET}\n  data_center: [\n")
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert "not valid YAML at line" in str(caught.value)
    assert "7Q9zX4wP" not in str(caught.value)


def test_api_key_is_hidden_in_the_model() -> None:
    job = parse_job(job_tree(), env=ENV)
    assert SECRET not in repr(job)
    assert SECRET not in str(job.model_dump())


# --- the bundled configs ----------------------------------------------------------------------


def test_demo_config_loads() -> None:
    job = load_job(REPO / "configs" / "demo.yaml", env={})
    assert job.api.resolved_base_url() == "http://127.0.0.1:8377"
    assert job.source.path == "sample_data/"
    types = {spec.type for spec in job.mapping.attributes.values()}
    assert types == {"string", "integer", "number", "boolean", "datetime", "date", "array"}
    assert job.mapping.platforms is not None and job.mapping.platforms.column == "platform"
    paths = [p for p in job.output.model_dump().values() if isinstance(p, Path)]
    assert all(str(p).startswith("out/demo/") for p in paths)


def test_example_config_loads_with_its_env_variables() -> None:
    job = load_job(REPO / "configs" / "example.yaml", env=ENV)
    demo = load_job(REPO / "configs" / "demo.yaml", env={})
    assert job.api.resolved_base_url() == moengage.base_url_for("01")
    assert job.api.workspace_id == "WS123"
    assert job.rate_limit.updates == moengage.DEFAULT_RATE_UPDATES
    assert job.mapping == demo.mapping
    with pytest.raises(ConfigError, match=r"api\.api_key: environment variable MOENGAGE_API_KEY"):
        load_job(REPO / "configs" / "example.yaml", env={"MOENGAGE_WORKSPACE_ID": "W"})


def test_list_items_and_number_keys_are_named() -> None:
    message = refusal("source: {null_values: ['', 3]}\nmapping: {attributes: {123: city}}")
    assert "source.null_values[1]: must be text" in message
    assert "mapping.attributes.123: this key must be text" in message


# --- issue 9: secrets in errors, the key file, credentials, YAML aliases, workspace ids ---------


def test_secrets_hide_a_secret_and_long_runs_of_it_in_any_case() -> None:
    secrets = Secrets()
    secrets.add("Zq8Rt2Vw9Lm4Xp7Nc3Bv", "${MY_TOKEN}")
    assert secrets.scrub("no column 'Zq8Rt2Vw9Lm4Xp7Nc3Bv'") == "no column '${MY_TOKEN}'"
    assert secrets.scrub("shown 'zq8rt2vw9lm4xp…'") == "shown '${MY_TOKEN}…'"  # cut, lower-cased
    assert secrets.scrub("distinct words stay") == "distinct words stay"


def test_the_loader_keeps_the_secrets_it_met_with_the_job() -> None:
    env = {**ENV, "S3_SECRET": "Zq8Rt2Vw9Lm4Xp7Nc3Bv"}
    job = parse_job(job_tree("source: {path: 'in/${S3_SECRET}.csv'}"), env=env)
    shown = job.secrets().scrub(f"cannot read {job.source.path}; key {SECRET}")
    assert shown == "cannot read in/${S3_SECRET}.csv; key the API key"
    # Another job's load shares nothing with this one: no global registry.
    assert "Zq8Rt2Vw9Lm4Xp7Nc3Bv" in parse_job(job_tree(), env=ENV).secrets().scrub(
        "Zq8Rt2Vw9Lm4Xp7Nc3Bv"
    )


def test_a_secret_variable_in_a_value_is_never_in_the_error() -> None:
    env = {**ENV, "S3_SECRET": "Zq8Rt2Vw9Lm4Xp7Nc3Bv"}
    tree = job_tree(
        "mapping: {attributes: {t: {column: c, type: datetime, timezone: '${S3_SECRET}'}}}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_job(tree, env=env)
    assert "Zq8Rt2Vw9Lm4Xp7Nc3Bv" not in str(caught.value)
    assert "'${S3_SECRET}'" in str(caught.value)


def test_api_key_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file-123\n")
    tree = job_tree()
    del tree["api"]["api_key"]
    tree["api"]["api_key_file"] = str(key_file)
    job = parse_job(tree, env=ENV)
    assert job.api.api_key.get_secret_value() == "sk-from-file-123"
    key_file.write_text("sk-from-file-123\n\n")
    with pytest.raises(ConfigError, match=r"api\.api_key_file: .*whitespace"):
        parse_job(tree, env=ENV)
    tree["api"]["api_key"] = "x"
    with pytest.raises(ConfigError, match=r"either api\.api_key or api\.api_key_file"):
        parse_job(tree, env=ENV)


def test_a_key_with_surrounding_whitespace_is_refused_with_a_hint() -> None:
    tree = job_tree("api: {api_key: '${MOENGAGE_API_KEY}'}")
    with pytest.raises(ConfigError, match=r"api\.api_key: .*whitespace.*cat keyfile"):
        parse_job(tree, env={**ENV, "MOENGAGE_API_KEY": SECRET + "\n"})


def test_credentials_are_optional_only_when_nothing_is_sent() -> None:
    tree = job_tree("api: {workspace_id: '${WS}', api_key: '${KEY}'}")
    job = parse_job(tree, env={}, need_credentials=False)
    assert job.api.api_key.get_secret_value() == ""
    with pytest.raises(ConfigError, match="KEY is not set"):
        parse_job(tree, env={})


@pytest.mark.parametrize("workspace", ["a:b", "a/b", "a b", "a?b", "a#b", "a%2F"])
def test_workspace_ids_that_cannot_be_in_a_url_path_or_user_name(workspace: str) -> None:
    assert "api.workspace_id: may hold only" in refusal(f"api: {{workspace_id: '{workspace}'}}")


def test_recursive_yaml_aliases_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_job(path, {})


def test_unknown_keys_still_name_their_path() -> None:
    assert "source.csv.max_record_byte: unknown key (did you mean max_record_bytes?)" in refusal(
        "source: {csv: {max_record_byte: 10}}"
    )
