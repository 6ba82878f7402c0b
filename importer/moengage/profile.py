"""How MoEngage merges updates into a profile: plain attributes set, arrays added to and
removed from (an array holds a value once), `unset_attributes` cleared.

The sandbox keeps its profiles with it, and `verify` computes what a workspace should hold
after the rows a job sent, so both agree on one rule.
"""

from __future__ import annotations

from typing import Any

from importer.moengage import (
    ADD_TO_ARRAY_KEY,
    REMOVE_FROM_ARRAY_KEY,
    UNSET_ATTRIBUTES_KEY,
    UNSET_MATCH_TYPE,
)


def merge_attributes(profile: dict[str, Any], attributes: dict[str, Any]) -> None:
    """Set plain attributes; add to and remove from arrays."""
    for name, value in attributes.items():
        if name == ADD_TO_ARRAY_KEY and isinstance(value, dict):
            for array, items in value.items():
                current = as_list(profile.get(array))
                current += [item for item in as_list(items) if item not in current]
                profile[array] = current
        elif name == REMOVE_FROM_ARRAY_KEY and isinstance(value, dict):
            for array, items in value.items():
                gone = as_list(items)
                profile[array] = [item for item in as_list(profile.get(array)) if item not in gone]
        else:
            # Values come from a freshly parsed body and are never changed in place here.
            profile[name] = value


def unset_names(element: dict[str, Any]) -> list[str]:
    """The attributes an element clears."""
    return [
        str(unset.get("attr"))
        for unset in element.get(UNSET_ATTRIBUTES_KEY) or []
        if isinstance(unset, dict) and unset.get("type") == UNSET_MATCH_TYPE
    ]


def expected_profile(elements: list[dict[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    """What a profile holds after these elements in order, and the names they left cleared."""
    profile: dict[str, Any] = {}
    cleared: set[str] = set()
    for element in elements:
        attributes = element.get("attributes") or {}
        merge_attributes(profile, attributes)
        cleared -= set(attributes)
        for name in unset_names(element):
            profile.pop(name, None)
            cleared.add(name)
    return profile, cleared


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
