"""Rules of a users mapping that pydantic's per-field checks cannot see: names, counts, options."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from importer import moengage
from importer.config.messages import attribute_key
from importer.config.models import AttributeSpec, MappingConfig
from importer.moengage import catalogue

_PAYLOAD_KEYS = {
    moengage.ADD_TO_ARRAY_KEY: "mapping.add_to_array",
    moengage.REMOVE_FROM_ARRAY_KEY: "mapping.remove_from_array",
    moengage.PLATFORMS_KEY: "mapping.platforms",
}
_DATE_TYPES: tuple[str, ...] = ("datetime", "date")


def attribute_name_problem(name: str, allow_reserved: Iterable[str] = ()) -> str | None:
    """Why MoEngage would refuse (or punish) this attribute name, or None if it is fine.

    `allow_reserved` admits moe_ names the catalogue lacks (mapping.allow_reserved)."""
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        shown = repr(name) if name else "the empty name"
        return f"{shown} is blocked by MoEngage as an attribute name"
    if name in _PAYLOAD_KEYS:
        return f"{name} is a payload key of its own; use {_PAYLOAD_KEYS[name]} instead"
    if (
        name.startswith(moengage.RESERVED_PREFIX)
        and name not in moengage.SYSTEM_ATTRIBUTES
        and name not in allow_reserved
    ):
        examples = ", ".join(moengage.SYSTEM_ATTRIBUTE_EXAMPLES[:2])
        return (
            f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's system attributes"
            f" ({examples}, ...); a custom attribute using it can get the workspace blacklisted"
            " (list a system attribute MoEngage added since in mapping.allow_reserved)"
        )
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return (
            f"the name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
        )
    return None


def _attribute_sections(mapping: MappingConfig) -> dict[str, Mapping[str, Any]]:
    return {
        "mapping.attributes": mapping.attributes,
        "mapping.add_to_array": mapping.add_to_array,
        "mapping.remove_from_array": mapping.remove_from_array,
    }


def attribute_name_problems(mapping: MappingConfig) -> Iterator[str]:
    for section, specs in _attribute_sections(mapping).items():
        for name in specs:
            problem = attribute_name_problem(name, mapping.allow_reserved)
            if problem:
                yield f"{attribute_key(section, name)}: {problem}"


def attribute_count_problems(mapping: MappingConfig) -> Iterator[str]:
    names = set(mapping.attributes) | set(mapping.add_to_array) | set(mapping.remove_from_array)
    custom = {name for name in names if catalogue.lookup(name) is None}
    if len(custom) > moengage.MAX_CUSTOM_ATTRIBUTES:
        yield (
            f"mapping: {len(custom)} distinct custom attributes; MoEngage allows at most"
            f" {moengage.MAX_CUSTOM_ATTRIBUTES} per workspace"
        )


def set_and_changed_problems(mapping: MappingConfig) -> Iterator[str]:
    # Adding and removing the same array in one update is allowed; setting it as well is not.
    for section in ("add_to_array", "remove_from_array"):
        for name in getattr(mapping, section):
            if name in mapping.attributes:
                yield (
                    f"{attribute_key('mapping.' + section, name)}: {name} is also set in"
                    " mapping.attributes; MoEngage cannot set an attribute and add to or remove"
                    " from it in the same update"
                )


def timezone_problem(timezone: str) -> str | None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r}; use an IANA name such as UTC or Europe/Berlin"
    return None


# Options that apply to some types only, in the order they are checked: option -> (the types
# it applies to, what the message says it applies to).
_TYPED_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "separator": (("array",), "type array"),
    "items": (("array",), "type array"),
    "format": (_DATE_TYPES, "types datetime and date"),
    "timezone": (_DATE_TYPES, "types datetime and date"),
    "ambiguous": (("datetime",), "type datetime"),
    "nonexistent": (("datetime",), "type datetime"),
    "as_text": (("date",), "type date"),
}


def attribute_option_problems(mapping: MappingConfig) -> Iterator[str]:
    for name, spec in mapping.attributes.items():
        yield from _spec_option_problems(attribute_key("mapping.attributes", name), spec)
    for section in ("add_to_array", "remove_from_array"):
        for name, op in getattr(mapping, section).items():
            if op.separator == "":
                yield f"{attribute_key('mapping.' + section, name)}.separator: must not be empty"


def _spec_option_problems(path: str, spec: AttributeSpec) -> Iterator[str]:
    for option, (types, applies_to) in _TYPED_OPTIONS.items():
        if option in spec.model_fields_set and spec.type not in types:
            # The date types' message has always named both types and not this one's.
            this_one = "" if types is _DATE_TYPES else f" (this one is {spec.type})"
            yield f"{path}.{option}: only applies to {applies_to}{this_one}"
    if spec.separator == "":
        yield f"{path}.separator: must not be empty"
    if spec.format == "":
        yield f"{path}.format: must not be empty (leave it out to read ISO 8601)"
    if spec.timezone is not None:
        problem = timezone_problem(spec.timezone)
        if problem:
            yield f"{path}.timezone: {problem}"


def standard_attribute_problems(mapping: MappingConfig) -> Iterator[str]:
    """A standard attribute mapped as a type its schema contradicts would be dropped by
    MoEngage without a word: refuse the job instead."""
    for name, spec in mapping.attributes.items():
        problem = catalogue.type_contradiction(name, spec.type, spec.as_text, spec.items)
        if problem:
            yield f"{attribute_key('mapping.attributes', name)}.type: {problem}"
    for standard_name, names in catalogue.duplicate_standard_names(
        list(mapping.attributes)
    ).items():
        yield (
            f"{attribute_key('mapping.attributes', names[1])}: sets MoEngage's standard attribute"
            f" {standard_name}, as {names[0]} does; map it once"
        )
    for section in ("add_to_array", "remove_from_array"):
        for name in getattr(mapping, section):
            problem = catalogue.array_op_contradiction(name)
            if problem:
                yield f"{attribute_key('mapping.' + section, name)}: {problem}"
    for i, name in enumerate(mapping.allow_reserved):
        if not name.startswith(moengage.RESERVED_PREFIX):
            yield (
                f"mapping.allow_reserved[{i}]: {name!r} does not start with"
                f" {moengage.RESERVED_PREFIX}; only reserved names need allowing"
            )
        elif name in moengage.SYSTEM_ATTRIBUTES:
            yield (
                f"mapping.allow_reserved[{i}]: {name} is already one of MoEngage's standard"
                " attributes; remove it from allow_reserved"
            )


def job_warnings(mapping: MappingConfig) -> list[str]:
    """What the job may send but a user should know about (the job still runs)."""
    warnings = []
    mapped = [*mapping.attributes, *mapping.add_to_array, *mapping.remove_from_array]
    for name in mapping.allow_reserved:
        if name in mapped:
            warnings.append(
                f"mapping.allow_reserved: sending {name}, which is not among MoEngage's"
                f" documented system attributes; a custom attribute with the"
                f" {moengage.RESERVED_PREFIX} prefix can get the workspace blacklisted"
            )
    if mapping.update_existing_only:
        for name in mapping.attributes:
            standard = catalogue.lookup(name)
            if standard is not None and standard.create_only:
                key = attribute_key("mapping.attributes", name)
                warnings.append(
                    f"{key}: MoEngage sets {name} only when it"
                    " creates a user, and update_existing_only: true creates none"
                )
    return warnings


def _platform_problem(value: str) -> str:
    *first, last = moengage.PLATFORM_NAMES
    allowed = f"{', '.join(first)} or {last}"
    by_case = {name.casefold(): name for name in moengage.PLATFORM_NAMES}
    if value.casefold() in by_case:
        return f"{value!r} is not a platform; write it as {by_case[value.casefold()]}"
    return f"{value!r} is not a platform; use {allowed}"


def platform_problems(mapping: MappingConfig) -> Iterator[str]:
    spec = mapping.platforms
    if spec is None:
        return
    if (spec.column is None) == (spec.values is None):
        yield "mapping.platforms: give exactly one of column (a column of platform names) or values"
        return
    if spec.column == "":
        yield "mapping.platforms.column: must name a column"
    if spec.values is not None:
        if not spec.values:
            yield "mapping.platforms.values: must list at least one platform"
        for i, value in enumerate(spec.values):
            if value not in moengage.PLATFORM_NAMES:
                yield f"mapping.platforms.values[{i}]: {_platform_problem(value)}"


def identity_problems(mapping: MappingConfig) -> Iterator[str]:
    if mapping.customer_id == "":
        yield "mapping.customer_id: must name a column (or be null for Identity Resolution)"
    if mapping.customer_id is None and not mapping.identifiers:
        yield (
            "mapping.customer_id: no customer_id column is mapped; name one, or (Identity"
            " Resolution workspaces only) list the workspace's identifiers in mapping.identifiers"
        )
    for i, name in enumerate(mapping.identifiers):
        if name not in mapping.attributes:
            yield (
                f"mapping.identifiers[{i}]: {name!r} is not a mapped attribute;"
                " map it under mapping.attributes"
            )
