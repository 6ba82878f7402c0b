"""Checks request bodies against the JSON Schema of MoEngage's documented requests.

The schema (importer/schemas/moengage_requests.json) is written from MoEngage's public docs,
with the known error of its bulk schema (an `enum` on the `elements` array) left out. The
sandbox applies it to what it receives, and the test suite fails on any element it refuses.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from importlib import resources
from typing import Any, cast

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from importer.moengage import catalogue

SCHEMA_PACKAGE = "importer.moengage.schemas"
SCHEMA_FILE = "moengage_requests.json"
CUSTOMER_ELEMENT = "CustomerElement"
EVENT_ELEMENT = "EventElement"
BULK_REQUEST = "BulkRequest"
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_SHOWN_PROBLEMS = 3


def load_schema() -> dict[str, Any]:
    """The schema document, read from the installed package."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        return not isinstance(value, str)  # formats only constrain strings
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_email(value: object) -> bool:
    return not isinstance(value, str) or catalogue.SHAPES["email"](value) is None


def format_checker() -> FormatChecker:
    """date-time as MoEngage writes it (RFC 3339) and email as the catalogue checks it; the
    jsonschema defaults would need extra packages or accept any text with an @."""
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_date_time)
    checker.checks("email")(_is_email)
    return checker


@cache
def _validator(definition: str) -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    rooted = {**schema, "$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(rooted, format_checker=format_checker())


def _describe(error: ValidationError) -> str:
    """Where and which rule, never the value (it may be personal data)."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    rule, expected = error.validator, cast(Any, error.validator_value)
    if rule == "enum":
        text = f"must be one of {', '.join(map(str, expected))}"
    elif rule == "const":
        text = f"must be {expected!r}"
    elif rule == "type":
        text = f"must be of type {expected if isinstance(expected, str) else ' or '.join(expected)}"
    elif rule == "format":
        text = f"must be a valid {expected}"
    elif rule == "required":
        text = error.message  # names the missing property, not a value
    elif rule in ("maxLength", "minLength", "maxItems", "minItems"):
        text = f"breaks {rule} {expected}"
    else:
        text = f"breaks the schema's {rule} rule"
    return f"{where.lstrip('.') or '(body)'}: {text}"


def problems(body: Any, definition: str) -> list[str]:
    """Every way `body` breaks the schema's `definition` (empty: it conforms)."""
    errors = sorted(_validator(definition).iter_errors(body), key=lambda e: list(e.path))
    return [_describe(error) for error in errors]


def element_problem(element: Any) -> str | None:
    """Why MoEngage's schema refuses this bulk element (customer or event), or None."""
    kind = element.get("type") if isinstance(element, dict) else None
    definition = EVENT_ELEMENT if kind == "event" else CUSTOMER_ELEMENT
    found = problems(element, definition)
    if not found:
        return None
    shown = "; ".join(found[:_SHOWN_PROBLEMS])
    more = f" (and {len(found) - _SHOWN_PROBLEMS} more)" if len(found) > _SHOWN_PROBLEMS else ""
    return f"not valid per MoEngage's request schema: {shown}{more}"


def bulk_envelope_problem(body: Any) -> str | None:
    """Why the bulk body around the elements breaks the schema, or None (elements aside)."""
    if not isinstance(body, dict):
        return "not valid per MoEngage's request schema: the body is not an object"
    envelope = dict(body)
    if isinstance(envelope.get("elements"), list) and envelope["elements"]:
        envelope["elements"] = [{"type": "customer", "attributes": {}}]
    found = problems(envelope, BULK_REQUEST)
    return f"not valid per MoEngage's request schema: {'; '.join(found)}" if found else None
