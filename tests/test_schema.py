"""The JSON Schema of MoEngage's request bodies: valid, shipped, in step with the catalogue,
and what it accepts and refuses (including what the importer builds)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from importer import moengage
from importer.config import MappingConfig
from importer.mapping import Mapper
from importer.moengage import catalogue, request_schema
from importer.rows import Chunk

# The body on MoEngage's track-user page (reference/moengage-track-user-api.txt).
TRACK_USER_EXAMPLE: dict[str, Any] = {
    "type": "customer",
    "customer_id": "john@example.com",
    "attributes": {
        "name": "JohnDoe",
        "first_name": "John",
        "platforms": [{"platform": "ANDROID", "active": "true"}],
    },
}
# The attribute example on the same page: a date is an ISO 8601 date-time.
ATTRIBUTES_EXAMPLE = {
    "name": "John",
    "points": 20,
    "expiry_date": "2020-05-31T03:47:35Z",
    "super_user": True,
    "user_persona": "browsers",
}
BULK_EXAMPLE = {
    "type": "transition",
    "elements": [
        {"type": "customer", "customer_id": "u1", "attributes": ATTRIBUTES_EXAMPLE},
        {
            "type": "event",
            "customer_id": "u1",
            "actions": [{"action": "Purchase", "attributes": {"amount": 5}, "platform": "web"}],
        },
    ],
}


def customer(**attributes: Any) -> dict[str, Any]:
    return moengage.customer_element("u1", attributes, False)


def test_the_schema_is_valid_draft_2020_12_and_ships_with_the_package() -> None:
    schema = request_schema.load_schema()
    Draft202012Validator.check_schema(schema)
    assert {"CustomerElement", "EventElement", "BulkRequest", "UserAttributes"} <= set(
        schema["$defs"]
    )


def test_the_schema_and_the_catalogue_name_the_same_standard_attributes() -> None:
    properties = request_schema.load_schema()["$defs"]["UserAttributes"]["properties"]
    payload_keys = {
        moengage.PLATFORMS_KEY,
        moengage.ADD_TO_ARRAY_KEY,
        moengage.REMOVE_FROM_ARRAY_KEY,
    }
    assert set(properties) - payload_keys == set(catalogue.BY_NAME)
    json_types = {
        catalogue.ValueType.STRING: "string",
        catalogue.ValueType.BOOLEAN: "boolean",
        catalogue.ValueType.INTEGER: "integer",
        catalogue.ValueType.STRING_ARRAY: "array",
    }
    for name, attribute in catalogue.BY_NAME.items():
        declared = properties[name]
        if attribute.type is catalogue.ValueType.DATETIME:
            assert declared == {"$ref": "#/$defs/dateTime"}, name
        elif attribute.enum:
            assert declared == {"enum": list(attribute.enum)}, name
        else:
            assert declared["type"] == json_types[attribute.type], name
        if attribute.shape == "email":
            assert declared["format"] == "email", name


def test_moengage_examples_conform() -> None:
    assert request_schema.problems(TRACK_USER_EXAMPLE, request_schema.CUSTOMER_ELEMENT) == []
    assert request_schema.problems(BULK_EXAMPLE, request_schema.BULK_REQUEST) == []


def test_the_published_elements_enum_is_the_known_error_left_out() -> None:
    # MoEngage's bulk schema puts an enum of strings on the elements array itself; no array
    # satisfies it, so its own example fails. Ours leaves that enum out (see $comment).
    schema = request_schema.load_schema()
    assert "elements" in schema["$comment"] and "enum" in schema["$comment"]
    published = copy.deepcopy(schema)
    elements = published["$defs"]["BulkRequest"]["properties"]["elements"]
    elements["enum"] = ["customer", "event"]
    validator = Draft202012Validator({**published, "$ref": "#/$defs/BulkRequest"})
    assert not validator.is_valid(BULK_EXAMPLE)
    assert "enum" not in schema["$defs"]["BulkRequest"]["properties"]["elements"]


@pytest.mark.parametrize(
    ("element", "fragment"),
    [
        (customer(u_bd="1971-07-27"), "attributes.u_bd: must be a valid date-time"),
        (customer(birthday="1971-07-27T25:00:00Z"), "attributes.birthday: must be a valid"),
        (customer(moe_email_optin_status="YES"), "must be one of DOUBLE_OPTED_IN, OPTED_OUT"),
        (customer(moe_sub_w="true"), "attributes.moe_sub_w: must be of type boolean"),
        (customer(u_l_a="2024-01-01T00:00:00Z"), "attributes.u_l_a: must be of type integer"),
        (customer(u_em="nobody"), "attributes.u_em: must be a valid email"),
        (customer(geo="52.5,13.4"), "attributes.geo: breaks the schema's pattern rule"),
        (customer(moe_em_unsub_categories="news"), "must be of type array"),
        (customer(points=None), "attributes.points: must be of type"),
        (customer(tags=["a", 1]), "attributes.tags: breaks the schema's anyOf rule"),
        (customer(tags=list(range(51))), "attributes.tags: breaks maxItems 50"),
        (customer(bio="x" * 513), "attributes.bio: breaks maxLength 512"),
        (customer(**{"_id": 1}), "attributes: breaks the schema's not rule"),
        (customer(platforms=[{"platform": "android", "active": "true"}]), "platform: must be"),
        ({**customer(a=1), "update_existing_only": "no"}, "update_existing_only: must be"),
        ({**customer(a=1), "customer_id": ""}, "customer_id: breaks minLength 1"),
        ({"type": "user", "attributes": {}}, "type: must be 'customer'"),
    ],
)
def test_what_the_schema_refuses(element: dict[str, Any], fragment: str) -> None:
    problem = request_schema.element_problem(element)
    assert problem is not None and fragment in problem, problem


def test_problems_never_quote_the_value() -> None:
    problem = request_schema.element_problem(customer(u_em="secret-person", u_bd="1999-01-01"))
    assert problem is not None and "secret-person" not in problem and "1999" not in problem


def test_what_the_schema_accepts() -> None:
    element = customer(
        u_bd="1971-07-27T00:00:00Z",
        moe_email_optin_status="OPT_IN_PENDING",
        moe_sub_w=False,
        moe_em_unsub_categories=["news"],
        u_l_a=1700000000,
        geo="52.52 13.40",
        email="ada@example.com",
        nested={"a": {"b": [1, 2]}},
        **{moengage.ADD_TO_ARRAY_KEY: {"tags": ["x"]}},
    )
    assert request_schema.element_problem(element) is None
    bare = moengage.customer_element(None, {"moe_mobile": "+4915112345678"}, True)
    assert request_schema.element_problem(bare) is None  # Identity Resolution


def test_bulk_envelope() -> None:
    assert request_schema.bulk_envelope_problem(BULK_EXAMPLE) is None
    assert "must be 'transition'" in str(request_schema.bulk_envelope_problem({"type": "x"}))


def test_every_element_the_mapper_builds_conforms() -> None:
    frame = pd.DataFrame(
        {
            "id": ["u1", "u2"],
            "born": ["1990-05-01", "2001-12-24T23:00:00-05:00"],
            "seen": ["2024-01-31T10:00:00+02:00", "2024-01-31 10:00"],
            "n": ["20", "2.5"],
            "flag": ["yes", "0"],
            "tags": ["a|b", "c"],
            "mail": ["ada@example.com", "bo@example.org"],
            "status": ["OPTED_OUT", "DOUBLE_OPTED_IN"],
            "platform": ["ANDROID", "web"],
        },
        dtype=object,
    )
    frame.index = pd.RangeIndex(1, 3)
    mapping = MappingConfig.model_validate(
        {
            "customer_id": "id",
            "attributes": {
                "u_bd": {"column": "born", "type": "date"},
                "born_text": {"column": "born", "type": "date", "as_text": True},
                "seen": {"column": "seen", "type": "datetime"},
                "n": {"column": "n", "type": "number"},
                "moe_sub_w": {"column": "flag", "type": "boolean"},
                "tags": {"column": "tags", "type": "array", "separator": "|"},
                "email": "mail",
                "moe_email_optin_status": "status",
            },
            "add_to_array": {"more_tags": {"column": "tags", "separator": "|"}},
            "platforms": {"column": "platform"},
        }
    )
    mapped = Mapper(mapping).map_chunk(Chunk(source="t.csv", frame=frame))
    assert not mapped.invalid and len(mapped.valid) == 2
    for row in mapped.valid:
        element = orjson.loads(row.encoded)
        assert request_schema.element_problem(element) is None, element
    assert orjson.loads(mapped.valid[1].encoded)["attributes"]["u_bd"] == "2001-12-24T00:00:00Z"


@pytest.mark.parametrize(
    ("cell", "sent"),
    [
        ("2024-01-31", "2024-01-31T00:00:00Z"),
        ("2024-01-31T23:30:00-05:00", "2024-01-31T00:00:00Z"),  # the date as written
        ("2024-01-31 10:00", "2024-01-31T00:00:00Z"),
        ("20240131", "2024-01-31T00:00:00Z"),  # forms datetime reads, date reads too
        ("2024-1-5", "2024-01-05T00:00:00Z"),
        ("20240131T101010Z", "2024-01-31T00:00:00Z"),
        ("2024", None),  # a year alone is no date (datetime reads it as 1 January)
        ("2024-01", None),
        ("2024-02-30", None),
    ],
)
def test_date_reads_what_datetime_reads_and_sends_a_schema_date_time(
    cell: str, sent: str | None
) -> None:
    frame = pd.DataFrame({"id": ["u1", "u2"], "born": ["1999-12-31", cell]}, dtype=object)
    frame.index = pd.RangeIndex(1, 3)
    mapping = MappingConfig.model_validate(
        {"customer_id": "id", "attributes": {"u_bd": {"column": "born", "type": "date"}}}
    )
    mapped = Mapper(mapping).map_chunk(Chunk(source="t.csv", frame=frame))
    if sent is None:
        assert [row.customer_id for row in mapped.invalid] == ["u2"]
        assert f"{cell!r} is not a date" in mapped.invalid[0].error
        return
    element = orjson.loads(mapped.valid[1].encoded)
    assert element["attributes"]["u_bd"] == sent
    assert request_schema.element_problem(element) is None
