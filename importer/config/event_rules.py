"""The rules of an events job (import: events): mapping.event, its names and its constants."""

from __future__ import annotations

from collections.abc import Iterator

from importer import moengage
from importer.config.messages import attribute_key
from importer.config.models import EventConfig, MappingConfig
from importer.config.user_rules import timezone_problem


def event_name_problem(name: str) -> str | None:
    """Why MoEngage would refuse this event name (the action), or None."""
    if not name.strip():
        return "an event needs a non-empty action"
    if name.startswith(moengage.RESERVED_PREFIX):
        return f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's own events"
    if len(name) > moengage.MAX_EVENT_NAME_LENGTH:
        return (
            f"the event name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_EVENT_NAME_LENGTH}"
        )
    return None


def event_attribute_name_problem(name: str) -> str | None:
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        shown = repr(name) if name else "the empty name"
        return f"{shown} is blocked by MoEngage as an attribute name"
    if name.startswith(moengage.RESERVED_PREFIX):
        return (
            f"the {moengage.RESERVED_PREFIX} prefix is reserved for MoEngage's system"
            " attributes, on events too"
        )
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return (
            f"the name is {len(name)} characters; MoEngage allows at most"
            f" {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
        )
    return None


_USER_ONLY_KEYS = ("attributes", "add_to_array", "remove_from_array", "platforms", "identifiers")


def event_job_problems(kind: str, mapping: MappingConfig) -> Iterator[str]:
    """mapping.event belongs to events jobs, and is what an events job maps."""
    event = mapping.event
    if kind != "events":
        if event is not None:
            yield "mapping.event: only an events job maps events; set `import: events`"
        return
    if event is None:
        yield (
            "mapping.event: an events job (import: events) needs mapping.event with action and time"
        )
        return
    yield from _user_key_problems(mapping)
    yield from _event_field_problems(event)
    yield from _event_attribute_problems(event)


def _user_key_problems(mapping: MappingConfig) -> Iterator[str]:
    for key in _USER_ONLY_KEYS:
        if getattr(mapping, key):
            yield (
                f"mapping.{key}: an events job sends no user attributes; event attributes go"
                " under mapping.event.attributes"
            )
    if mapping.update_existing_only:
        yield "mapping.update_existing_only: applies to user updates, not to an events job"
    if not mapping.customer_id:
        yield (
            "mapping.customer_id: an events job needs the column holding each event's customer_id"
        )


def _event_field_problems(event: EventConfig) -> Iterator[str]:
    if event.action.constant is not None:
        problem = event_name_problem(event.action.constant)
        if problem:
            yield f"mapping.event.action: {problem}"
    if event.time.type != "datetime":
        yield "mapping.event.time.type: must be datetime (the time of the event)"
    if event.time.timezone is not None:
        problem = timezone_problem(event.time.timezone)
        if problem:
            yield f"mapping.event.time.timezone: {problem}"
    if event.timezone_offset is not None and event.timezone_offset.constant is not None:
        yield from _offset_constant_problems(event.timezone_offset.constant)
    platform = event.platform
    if (
        platform is not None
        and platform.constant is not None
        and platform.constant not in moengage.EVENT_PLATFORMS
    ):
        yield (
            f"mapping.event.platform: {platform.constant!r} is not a platform MoEngage"
            f" knows; use one of {', '.join(moengage.EVENT_PLATFORMS)}"
        )


def _event_attribute_problems(event: EventConfig) -> Iterator[str]:
    for name, spec in event.attributes.items():
        problem = event_attribute_name_problem(name)
        if problem:
            yield f"{attribute_key('mapping.event.attributes', name)}: {problem}"
        if spec.timezone is not None:
            problem = timezone_problem(spec.timezone)
            if problem:
                yield f"{attribute_key('mapping.event.attributes', name)}.timezone: {problem}"
    if len(event.attributes) > moengage.MAX_EVENT_ATTRIBUTES:
        yield (
            f"mapping.event.attributes: {len(event.attributes)} attributes; MoEngage allows at"
            f" most {moengage.MAX_EVENT_ATTRIBUTES} per event"
        )


def _offset_constant_problems(text: str) -> Iterator[str]:
    limit = moengage.MAX_TIMEZONE_OFFSET_SECONDS
    try:
        offset = int(text)
    except ValueError:
        yield "mapping.event.timezone_offset: a constant offset must be whole seconds"
        return
    if not -limit <= offset <= limit:
        yield f"mapping.event.timezone_offset: must lie between -{limit} and {limit} seconds"


def event_job_warnings(kind: str, mapping: MappingConfig) -> list[str]:
    event = mapping.event
    if kind != "events" or event is None or event.action.constant is None:
        return []
    if moengage.EVENT_NAME_STORED_AS_SPACE in event.action.constant:
        return ["mapping.event.action: MoEngage stores a '.' in an event name as a space"]
    return []


def events_sync_problem(kind: str, sync_mode: str) -> str | None:
    """`sync.mode: changed` compares a user's element with the last one accepted: events
    have no such state, and resume already keeps a rerun from sending an event twice.
    Refused before anything is sent (exit 2)."""
    if kind == "events" and sync_mode == "changed":
        return (
            "sync.mode: changed is for users; an events job cannot use it (events have no"
            " state to compare, and resume already keeps a rerun from sending one twice)"
        )
    return None
