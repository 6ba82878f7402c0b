"""The catalogue of MoEngage's standard attributes: the reserved prefix, type refusals,
value rules, and the names `init` proposes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import yaml

from importer import moengage
from importer.config import ConfigError, MappingConfig, parse_job
from importer.init.scaffold import scaffold_job
from importer.mapping import Mapper
from importer.moengage import catalogue
from importer.rows import Chunk

API = {"workspace_id": "WS", "api_key": "k", "base_url": "http://127.0.0.1:1"}


def job(mapping: dict[str, Any]) -> dict[str, Any]:
    return {"api": API, "mapping": {"customer_id": "id", **mapping}}


def refusal(mapping: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_job(job(mapping), env={})
    return str(caught.value)


# --- the catalogue itself --------------------------------------------------------------


def test_every_moe_name_the_issue_names_is_a_standard_attribute() -> None:
    for name in (
        "moe_wa_subscription",
        "moe_em_unsub_categories",
        "moe_sub_w",
        "moe_spam",
        "moe_unsubscribe",
        "moe_hard_bounce",
        "moe_sms_subscription",
        "moe_email_optin_status",
        "moe_push_opted",
        "moe_mobile",
        "moe_email",
    ):
        assert name in moengage.SYSTEM_ATTRIBUTES, name
    # The reserved prefix admits exactly the catalogue's moe_ names.
    assert {
        name for name in catalogue.BY_NAME if name.startswith(moengage.RESERVED_PREFIX)
    } == moengage.SYSTEM_ATTRIBUTES


def test_catalogue_types_enums_create_only_and_identifiers() -> None:
    optin = catalogue.lookup("moe_email_optin_status")
    assert optin is not None
    assert optin.enum == ("DOUBLE_OPTED_IN", "OPTED_OUT", "OPT_IN_PENDING")
    assert catalogue.lookup("moe_wa_subscription").type is catalogue.ValueType.BOOLEAN  # type: ignore[union-attr]
    assert catalogue.lookup("moe_sms_subscription").type is catalogue.ValueType.STRING  # type: ignore[union-attr]
    assert catalogue.lookup("u_l_a").type is catalogue.ValueType.INTEGER  # type: ignore[union-attr]
    assert catalogue.lookup("u_bd").type is catalogue.ValueType.DATETIME  # type: ignore[union-attr]
    assert catalogue.lookup("publisher_name").create_only  # type: ignore[union-attr]
    assert {"u_em", "u_mb", "moe_mobile", "moe_email"} <= moengage.IDENTIFIER_ATTRIBUTES
    # Friendly names are the same attribute.
    assert catalogue.lookup("email") is catalogue.lookup("u_em")
    assert catalogue.lookup("first_name") is catalogue.lookup("u_fn")
    assert catalogue.lookup("points") is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("moe_email_optin_status", "OPTED_OUT", None),
        ("moe_email_optin_status", "opted_out", "DOUBLE_OPTED_IN, OPTED_OUT, OPT_IN_PENDING"),
        ("u_em", "ada@example.com", None),
        ("email", "ada@example", "not an email"),
        ("u_em", "ada example.com", "not an email"),
        ("geo", "52.52 13.40", None),
        ("geo", "-33.9 151.2", None),
        ("geo", "52.52,13.40", "latitude longitude"),
        ("geo", "95 13", "latitude longitude"),
        ("u_fn", "anything", None),
    ],
)
def test_value_rules(name: str, value: Any, fragment: str | None) -> None:
    attribute = catalogue.lookup(name)
    assert attribute is not None
    problem = attribute.value_problem(value)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


# --- the job file ----------------------------------------------------------------------


def test_standard_moe_attributes_are_accepted() -> None:
    parsed = parse_job(
        job(
            {
                "attributes": {
                    "moe_email_optin_status": "status",
                    "moe_sub_w": {"column": "web_push", "type": "boolean"},
                    "moe_em_unsub_categories": {"column": "c", "type": "array", "separator": "|"},
                    "u_l_a": {"column": "seen", "type": "integer"},
                }
            }
        ),
        env={},
    )
    assert "moe_sub_w" in parsed.mapping.attributes


def test_an_unknown_moe_name_is_refused_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    message = refusal({"attributes": {"moe_new_flag": "x"}})
    assert "mapping.attributes.moe_new_flag" in message and "allow_reserved" in message
    with caplog.at_level(logging.WARNING, logger="importer"):
        parsed = parse_job(
            job({"attributes": {"moe_new_flag": "x"}, "allow_reserved": ["moe_new_flag"]}), env={}
        )
    assert parsed.mapping.allow_reserved == ["moe_new_flag"]
    assert any("moe_new_flag" in r.getMessage() for r in caplog.records)


def test_allow_reserved_takes_only_reserved_names_the_catalogue_lacks() -> None:
    message = refusal({"allow_reserved": ["points", "moe_sub_w"]})
    assert "mapping.allow_reserved[0]: 'points' does not start with moe_" in message
    assert "mapping.allow_reserved[1]: moe_sub_w is already" in message


@pytest.mark.parametrize(
    ("spec", "mapped", "standard"),
    [
        ({"moe_sub_w": "web_push"}, "string", "boolean"),
        ({"moe_wa_subscription": {"column": "wa", "type": "string"}}, "string", "boolean"),
        ({"u_l_a": {"column": "seen", "type": "datetime"}}, "datetime", "integer"),
        ({"u_l_a": {"column": "seen", "type": "number"}}, "number", "integer"),
        ({"u_em": {"column": "e", "type": "integer"}}, "integer", "string"),
        ({"email": {"column": "e", "type": "boolean"}}, "boolean", "string"),
        ({"u_bd": {"column": "b", "type": "string"}}, "string", "datetime"),
        ({"birthday": {"column": "b", "type": "date", "as_text": True}}, "as_text", "datetime"),
        ({"moe_sms_subscription": {"column": "s", "type": "boolean"}}, "boolean", "string"),
        ({"moe_em_unsub_categories": "c"}, "string", "array of string"),
    ],
)
def test_a_standard_attribute_with_a_contradicting_type_is_refused(
    spec: dict[str, Any], mapped: str, standard: str
) -> None:
    name = next(iter(spec))
    message = refusal({"attributes": spec})
    assert message.startswith(f"mapping.attributes.{name}.type: ")
    assert f"is {standard}" in message and mapped in message


def test_array_items_and_array_operations_follow_the_catalogue() -> None:
    spec = {"moe_em_unsub_categories": {"column": "c", "type": "array", "items": "integer"}}
    assert "use items string" in refusal({"attributes": spec})
    message = refusal({"add_to_array": {"u_em": {"column": "e"}}})
    assert "mapping.add_to_array.u_em: MoEngage's standard attribute u_em is string" in message


def test_a_standard_attribute_mapped_twice_is_refused() -> None:
    message = refusal({"attributes": {"u_em": "a", "email": "b"}})
    assert "mapping.attributes.email: sets MoEngage's standard attribute u_em" in message


def test_as_text_only_applies_to_date() -> None:
    message = refusal(
        {"attributes": {"when": {"column": "w", "type": "datetime", "as_text": True}}}
    )
    assert "mapping.attributes.when.as_text: only applies to type date" in message


def test_create_only_attribute_with_update_existing_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mapping = {"update_existing_only": True, "attributes": {"publisher_name": "source"}}
    with caplog.at_level(logging.WARNING, logger="importer"):
        parse_job(job(mapping), env={})
    assert any("only when it creates a user" in r.getMessage() for r in caplog.records)


# --- the mapper ------------------------------------------------------------------------


def map_frame(frame: pd.DataFrame, attributes: dict[str, Any]) -> Any:
    mapper = Mapper(MappingConfig.model_validate({"customer_id": "id", "attributes": attributes}))
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return mapper.map_chunk(Chunk(source="t.csv", frame=frame))


def test_values_outside_the_catalogue_are_invalid_rows_naming_the_rule() -> None:
    frame = pd.DataFrame(
        {
            "id": ["u1", "u2", "u3", "u4"],
            "status": ["OPTED_OUT", "maybe", "OPT_IN_PENDING", None],
            "mail": ["a@example.com", "a@example.com", "not-an-email", "b@example.org"],
        },
        dtype=object,
    )
    mapped = map_frame(frame, {"moe_email_optin_status": "status", "email": "mail"})
    assert [row.customer_id for row in mapped.valid] == ["u1", "u4"]
    assert mapped.valid[1].element["attributes"] == {"email": "b@example.org"}
    bad = {row.customer_id: row for row in mapped.invalid}
    assert "'maybe' is not one of DOUBLE_OPTED_IN, OPTED_OUT, OPT_IN_PENDING" in bad["u2"].error
    assert "column 'mail': 'not-an-email' is not an email address" in bad["u3"].error
    # The refused value is left out of the payload shown in the dead-letter file.
    assert "moe_email_optin_status" not in bad["u2"].payload["attributes"]
    assert orjson.loads(mapped.valid[0].encoded)["attributes"]["moe_email_optin_status"] == (
        "OPTED_OUT"
    )


# --- init ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("EMAIL", "u_em"),
        ("E-Mail", "u_em"),
        ("First_Name", "u_fn"),
        ("first name", "u_fn"),
        ("LastName", "u_ln"),
        ("phone", "u_mb"),
        ("Mobile", "u_mb"),
        ("gender", "u_gd"),
        ("birthday", "u_bd"),
        ("Date_Of_Birth", "u_bd"),
        ("moe_sub_w", "moe_sub_w"),
        ("city", None),
        ("u_emx", None),
    ],
)
def test_column_names_that_mean_a_standard_attribute(column: str, expected: str | None) -> None:
    attribute = catalogue.standard_name_for_column(column)
    assert (attribute.name if attribute else None) == expected


def test_init_proposes_standard_names_with_a_comment(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "user_id,EMAIL,First_Name,phone,mobile,gender,birthday,city\n"
        "u1,ada@example.com,Ada,+4930123,+4915112,f,1990-05-01,Berlin\n"
        "u2,bo@example.com,Bo,+4930124,+4915113,m,1985-02-03,Paris\n",
        encoding="utf-8",
    )
    text = scaffold_job(str(source))
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if ":" in line}
    assert lines["u_em"].startswith("    u_em: EMAIL") and "standard attribute" in lines["u_em"]
    assert lines["u_fn"].startswith("    u_fn: First_Name")
    assert lines["u_mb"].startswith("    u_mb: phone")
    # u_mb is taken by phone; the mobile column must not set it a second time.
    assert lines["mobile_other"].startswith("    mobile_other: mobile")
    assert lines["u_gd"].startswith("    u_gd: gender")
    assert "u_bd: {column: birthday, type: date}" in text
    assert "    city: city" in text
    parsed = parse_job({**yaml.safe_load(text), "api": API}, env={})
    assert parsed.mapping.attributes["u_bd"].type == "date"


def test_init_keeps_standard_names_and_does_not_set_one_twice(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "id,u_em,email,moe_mobile,mobile\nu1,a@example.com,b@example.com,+491511,+491512\n",
        encoding="utf-8",
    )
    parsed = parse_job({**yaml.safe_load(scaffold_job(str(source))), "api": API}, env={})
    columns = {name: spec.column for name, spec in parsed.mapping.attributes.items()}
    assert columns == {
        "u_em": "u_em",
        "email_other": "email",
        "moe_mobile": "moe_mobile",
        "u_mb": "mobile",
    }
