"""What MoEngage refuses: the element, event, attribute, customer_id and platform checks."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from importer import moengage

# How far ahead of the server's clock an event's current_time may be before it counts as
# future-dated (clocks drift).
EVENT_CLOCK_SKEW_SECONDS = 600


def element_problem(element: Any) -> str | None:
    """Why MoEngage would refuse this user update (or event element), or None if acceptable."""
    if not isinstance(element, dict):
        return "element is not a JSON object"
    if element.get("type") == moengage.EVENT_TYPE:
        return event_problem(element)
    if element.get("type") != moengage.CUSTOMER_TYPE:
        return f"type must be {moengage.CUSTOMER_TYPE!r}"
    attributes = element.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes must be a JSON object"
    problem = customer_id_problem(element.get("customer_id"), attributes)
    problem = problem or attributes_problem(attributes)
    if problem:
        return problem
    if not isinstance(element.get("update_existing_only", False), bool):
        return "update_existing_only must be true or false"
    return None


def event_problem(element: dict[str, Any]) -> str | None:
    """Why MoEngage would refuse this event element (type event), or None."""
    customer_id = element.get("customer_id")
    if customer_id is not None or not element.get("user_identifiers"):
        problem = customer_id_problem(customer_id, {})
        if problem:
            return problem
    actions = element.get(moengage.ACTIONS_KEY)
    if not isinstance(actions, list) or not actions:
        return "actions must be a non-empty list"
    for action in actions:
        problem = action_problem(action)
        if problem:
            return problem
    return None


def action_problem(action: Any) -> str | None:
    if not isinstance(action, dict):
        return "an action is not a JSON object"
    name = action.get("action")
    if not isinstance(name, str) or not name.strip():
        return "an action needs a non-empty action (event name)"
    if name.startswith(moengage.RESERVED_PREFIX):
        return f"event name {short(name)} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
    if len(name) > moengage.MAX_EVENT_NAME_LENGTH:
        return f"event name {short(name)} is longer than {moengage.MAX_EVENT_NAME_LENGTH}"
    attributes = action.get("attributes", {})
    if not isinstance(attributes, dict):
        return "event attributes must be a JSON object"
    if len(attributes) > moengage.MAX_EVENT_ATTRIBUTES:
        return f"an event has more than {moengage.MAX_EVENT_ATTRIBUTES} attributes"
    for key, value in attributes.items():
        if key.startswith(moengage.RESERVED_PREFIX):
            return f"event attribute {key!r} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
        problem = name_problem(key) or value_problem(key, value)
        if problem:
            return problem
    platform = action.get("platform")
    if platform is not None and platform not in moengage.EVENT_PLATFORMS:
        return f"platform {short(platform)} is not one of {', '.join(moengage.EVENT_PLATFORMS)}"
    offset = action.get("user_timezone_offset")
    limit = moengage.MAX_TIMEZONE_OFFSET_SECONDS
    if offset is not None and (
        isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > limit
    ):
        return f"user_timezone_offset must be whole seconds within -{limit}..{limit}"
    return _current_time_problem(action.get("current_time"))


def _current_time_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"current_time {short(value)} is not an ISO 8601 time"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = moment.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return "current_time must be an ISO 8601 time"
    if seconds > time.time() + EVENT_CLOCK_SKEW_SECONDS:
        return "current_time is in the future: MoEngage refuses future-dated events"
    return None


def customer_id_problem(customer_id: Any, attributes: dict[str, Any]) -> str | None:
    if customer_id is None:
        # Identity Resolution workspaces identify the user by one of its identifiers.
        if any(attributes.get(name) not in (None, "") for name in moengage.IDENTIFIER_ATTRIBUTES):
            return None
        names = ", ".join(sorted(moengage.IDENTIFIER_ATTRIBUTES))
        return f"customer_id is missing and the attributes carry no identifier ({names})"
    if not isinstance(customer_id, str):
        return "customer_id must be a string"
    if not customer_id.strip():
        return "customer_id is empty"
    if customer_id.strip().lower() in moengage.PLACEHOLDER_CUSTOMER_IDS:
        return f"customer_id {customer_id!r} is a placeholder value MoEngage refuses"
    return None


def attributes_problem(attributes: dict[str, Any]) -> str | None:
    array_ops = (moengage.ADD_TO_ARRAY_KEY, moengage.REMOVE_FROM_ARRAY_KEY)
    for name, value in attributes.items():
        if name == moengage.PLATFORMS_KEY:
            problem = platforms_problem(value)
        elif name in array_ops:
            problem = array_op_problem(name, value)
        else:
            problem = name_problem(name) or value_problem(name, value)
        if problem:
            return problem
    set_names = attributes.keys() - {moengage.PLATFORMS_KEY, *array_ops}
    for op in array_ops:
        both = sorted(set_names & attributes.get(op, {}).keys())
        if both:
            return f"attribute {both[0]!r} is both set and in {op}"
    return None


def name_problem(name: str) -> str | None:
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        return f"attribute name {name!r} is blocked"
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return f"attribute name {short(name)} is longer than {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
    if name.startswith(moengage.RESERVED_PREFIX) and name not in moengage.SYSTEM_ATTRIBUTES:
        return f"attribute {name!r} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
    return None


def value_problem(name: str, value: Any) -> str | None:
    if value is None:
        return f"attribute {name!r} is null (omit a missing value instead)"
    if isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"attribute {name!r} is not a finite number"
    if isinstance(value, str):
        if len(value) > moengage.MAX_STRING_LENGTH:
            return f"attribute {name!r} is longer than {moengage.MAX_STRING_LENGTH} characters"
        return None
    if isinstance(value, list):
        return array_problem(name, value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = value_problem(f"{name}.{key}", item)
            if problem:
                return problem
        return None
    return f"attribute {name!r} has an unsupported type"


def array_problem(name: str, items: Any) -> str | None:
    if not isinstance(items, list):
        return f"attribute {name!r} must be an array"
    if len(items) > moengage.MAX_ARRAY_ITEMS:
        return f"attribute {name!r} has more than {moengage.MAX_ARRAY_ITEMS} items"
    kinds = {_item_kind(item) for item in items}
    if None in kinds:
        return f"attribute {name!r} holds items that are not strings, numbers or booleans"
    if len(kinds) > 1:
        named = sorted(kind for kind in kinds if kind is not None)
        return f"attribute {name!r} mixes item types ({', '.join(named)})"
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            return f"attribute {name!r} holds a number that is not finite"
        if isinstance(item, str) and len(item) > moengage.MAX_ARRAY_ITEM_LENGTH:
            limit = moengage.MAX_ARRAY_ITEM_LENGTH
            return f"attribute {name!r} holds an item longer than {limit} characters"
    return None


def _item_kind(item: Any) -> str | None:
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int | float):
        return "number"
    if isinstance(item, str):
        return "string"
    return None


def array_op_problem(op: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{op} must be an object of arrays"
    for name, items in value.items():
        problem = name_problem(name) or array_problem(f"{op}.{name}", items)
        if problem:
            return problem
    return None


def platforms_problem(value: Any) -> str | None:
    allowed = f"[{{'platform': {' | '.join(moengage.PLATFORM_NAMES)}, 'active': 'true'}}]"
    if not isinstance(value, list):
        return f"platforms must be a list like {allowed}"
    for item in value:
        if (
            not isinstance(item, dict)
            or item.keys() != {"platform", "active"}
            or item["platform"] not in moengage.PLATFORM_NAMES
            or item["active"] not in moengage.PLATFORM_ACTIVE_VALUES
        ):
            return f"platforms item {short(item)} is not like {allowed}"
    return None


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
