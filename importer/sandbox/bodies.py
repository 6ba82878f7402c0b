"""Reading a request body: parsed JSON, its customer_ids, and the users and events it holds."""

from __future__ import annotations

from typing import Any

import orjson

from importer import moengage
from importer.sandbox.settings import CUSTOMER, EVENT

UNPARSED = object()  # the body was not valid JSON


def parse_body(body: bytes | None) -> Any:
    if body is None:
        return UNPARSED
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return UNPARSED


def customer_ids(parsed: Any) -> list[Any]:
    if not isinstance(parsed, dict):
        return []
    elements = parsed.get("elements") if parsed.get("type") == moengage.BULK_TYPE else [parsed]
    if not isinstance(elements, list):
        return []
    return [e.get("customer_id") for e in elements if isinstance(e, dict)]


def count_users(parsed: Any, endpoint: str) -> int:
    if endpoint == CUSTOMER:
        return 1
    if endpoint == EVENT:
        return 0
    elements = parsed.get("elements") if isinstance(parsed, dict) else None
    if not isinstance(elements, list):
        return 0
    return sum(not is_event_element(e) for e in elements)


def is_event_element(element: Any) -> bool:
    return isinstance(element, dict) and element.get("type") == moengage.EVENT_TYPE


def count_events(parsed: Any) -> int:
    """Actions in the body's event elements (a bulk body, or one element)."""
    if not isinstance(parsed, dict):
        return 0
    elements = parsed.get("elements") if "elements" in parsed else [parsed]
    if not isinstance(elements, list):
        return 0
    total = 0
    for element in elements:
        actions = element.get(moengage.ACTIONS_KEY) if is_event_element(element) else None
        total += len(actions) if isinstance(actions, list) else 0
    return total
