"""Each mapped attribute of a sampled customer, sent against stored: match, missing,
different value, different JSON type (a number or boolean sent, a string stored), or a
cleared value still there."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from importer.moengage import catalogue
from importer.moengage.profile import expected_profile


class Outcome(enum.StrEnum):
    MATCH = "match"
    MISSING = "missing"
    DIFFERENT_VALUE = "different_value"
    DIFFERENT_TYPE = "different_type"
    NOT_CLEARED = "not_cleared"


@dataclass(frozen=True, slots=True)
class Difference:
    customer_id: str
    attribute: str
    outcome: Outcome
    sent: Any
    stored: Any


@dataclass
class Comparison:
    by_attribute: dict[str, Counter[Outcome]] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    customers_checked: int = 0
    customers_not_found: int = 0

    def count(self, attribute: str, outcome: Outcome) -> None:
        self.by_attribute.setdefault(attribute, Counter())[outcome] += 1

    @property
    def all_match(self) -> bool:
        return not self.differences and self.customers_not_found == 0


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def stored_value(stored: dict[str, Any], name: str) -> tuple[bool, Any]:
    """The stored value under the name sent, or under the catalogue's other names for it."""
    if name in stored:
        return True, stored[name]
    standard = catalogue.lookup(name)
    if standard is not None:
        for other in (standard.name, *standard.aliases):
            if other in stored:
                return True, stored[other]
    return False, None


def judge(sent: Any, present: bool, stored: Any) -> Outcome:
    if not present:
        return Outcome.MISSING
    if json_kind(sent) != json_kind(stored):
        return Outcome.DIFFERENT_TYPE
    return Outcome.MATCH if sent == stored else Outcome.DIFFERENT_VALUE


def compare(
    sampled: dict[str, list[dict[str, Any]]], stored: dict[str, dict[str, Any]]
) -> Comparison:
    """Sampled customers' elements (in file order) against the profiles read back."""
    result = Comparison()
    for customer_id, elements in sorted(sampled.items()):
        result.customers_checked += 1
        profile = stored.get(customer_id)
        if profile is None:
            result.customers_not_found += 1
        expected, cleared = expected_profile(elements)
        for name, sent in expected.items():
            present, value = stored_value(profile or {}, name)
            _record(result, Difference(customer_id, name, judge(sent, present, value), sent, value))
        for name in sorted(cleared):
            present, value = stored_value(profile or {}, name)
            outcome = Outcome.NOT_CLEARED if present and profile is not None else Outcome.MATCH
            _record(result, Difference(customer_id, name, outcome, None, value))
    return result


def _record(result: Comparison, difference: Difference) -> None:
    result.count(difference.attribute, difference.outcome)
    if difference.outcome is not Outcome.MATCH:
        result.differences.append(difference)
