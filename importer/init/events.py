"""`init` for an events file: an events job (import: events) from the guesses `init` made.

An input looks like events when it has an event-name column (event, event_name, action, ...)
and a timestamp column (a datetime column, preferring names like occurred_at or timestamp);
`init --events` asks for an events job whatever the names.
"""

from __future__ import annotations

from dataclasses import dataclass

from importer import moengage
from importer.config import event_attribute_name_problem
from importer.init.model import Guess, JobGuess, ScaffoldError
from importer.init.render import (
    api_lines,
    attribute_spec,
    check_lines,
    customer_id_lines,
    flow,
    header_lines,
    line,
    output_lines,
    scalar,
    source_lines,
)

# Names only events files use: a users file with `name` and `created_at` stays a users job.
_ACTION_NAMES = ("event_name", "event", "event_type", "action", "action_name")
_TIME_NAMES = (
    "occurred_at",
    "event_time",
    "timestamp",
    "event_timestamp",
    "ts",
    "time",
    "created_at",
    "happened_at",
)
_OFFSET_NAMES = ("tz_offset_seconds", "timezone_offset", "user_timezone_offset", "tz_offset")
_VERSION_NAMES = ("app_version", "appversion", "version")


@dataclass(frozen=True)
class EventColumns:
    """The columns an events job reads for the event's own fields."""

    action: str
    time: str
    timezone_offset: str | None = None
    platform: str | None = None
    app_version: str | None = None

    def all(self) -> set[str]:
        own = (self.action, self.time, self.timezone_offset, self.platform, self.app_version)
        return {column for column in own if column is not None}


def _first(names: tuple[str, ...], columns: dict[str, Guess], exclude: set[str]) -> str | None:
    by_lower = {c.lower(): c for c in columns if c not in exclude}
    return next((by_lower[n] for n in names if n in by_lower), None)


def event_columns(guess: JobGuess) -> EventColumns | None:
    """The event columns of the input, or None when it has no event name or no timestamp."""
    columns = guess.columns
    taken = {guess.customer_id} if guess.customer_id else set()
    action = _first(_ACTION_NAMES, columns, taken)
    if action is None:
        return None
    taken.add(action)
    datetimes = {c: g for c, g in columns.items() if g.type == "datetime" and c not in taken}
    when = _first(_TIME_NAMES, datetimes, taken) or next(iter(datetimes), None)
    if when is None:
        return None
    taken.add(when)
    offset = _first(_OFFSET_NAMES, columns, taken)
    platform = next(
        (c for c, g in columns.items() if c not in taken and c.lower() == "platform"), None
    ) or next((c for c, g in columns.items() if g.type == "platforms" and c not in taken), None)
    version = _first(_VERSION_NAMES, columns, taken)
    return EventColumns(action, when, offset, platform, version)


def render_events_job(guess: JobGuess, found: EventColumns | None = None) -> str:
    """The commented YAML events job for a guess (ScaffoldError if no event columns)."""
    found = found or event_columns(guess)
    if found is None:
        raise ScaffoldError(
            f"{guess.input_path}: no event-name column ({', '.join(_ACTION_NAMES[:4])}, ...)"
            " and timestamp column found; an events job needs both"
        )
    lines = [
        *header_lines(guess.input_path, guess.samples),
        line("import: events", "one row is one event (action) of its customer"),
        "",
        *api_lines(),
        *source_lines(guess.input_path, guess.samples, guess.format),
        *_mapping_lines(guess, found),
        *output_lines(guess.input_path),
    ]
    text = "\n".join(lines) + "\n"
    # The limit of an events job counts events; MoEngage's bulk docs allow 30,000 a minute.
    for users, events in (
        (
            line(f"  updates: {moengage.DEFAULT_RATE_UPDATES}", "per period, retries included"),
            line(f"  updates: {moengage.DEFAULT_EVENT_RATE_UPDATES}", "events per period"),
        ),
        (
            line("  endpoint: bulk", "bulk = /v1/transition; customer = one user a call"),
            line("  endpoint: bulk", "bulk = /v1/transition; customer = /v1/event, one a call"),
        ),
    ):
        text = text.replace(users, events)
    return text


def _mapping_lines(guess: JobGuess, found: EventColumns) -> list[str]:
    event = [
        "  event:",
        line(f"    action: {flow({'column': found.action})}", "the event name; or a constant"),
        line(f"    time: {flow({'column': found.time})}", "-> current_time (UTC)"),
    ]
    optional = (
        ("timezone_offset", found.timezone_offset, "seconds -> user_timezone_offset"),
        ("platform", found.platform, ", ".join(moengage.EVENT_PLATFORMS)),
        ("app_version", found.app_version, ""),
    )
    for key, column, comment in optional:
        if column is None:
            event.append(f"    # {key}: {{column: ...}}")
        else:
            event.append(line(f"    {key}: {flow({'column': column})}", comment))
    event += _attribute_lines(guess, found)
    return [
        "mapping:",
        *customer_id_lines(guess.samples, guess.customer_id),
        *event,
        "",
    ]


def _attribute_lines(guess: JobGuess, found: EventColumns) -> list[str]:
    lines = [line("    attributes:", "event attribute: column, or {column, type, ...}")]
    used = found.all() | ({guess.customer_id} if guess.customer_id else set())
    count = typed = 0
    for column, column_guess in guess.columns.items():
        if column in used:
            continue
        lines += check_lines("      ", column_guess.checks)
        if column_guess.type in ("skip", "platforms"):
            lines.append(f"      # {scalar(column)}: skipped, not importable as it is")
            continue
        count += 1
        entry = f"{scalar(column)}: {attribute_spec(column_guess)}"
        problem = event_attribute_name_problem(column)
        if problem or count > moengage.MAX_EVENT_ATTRIBUTES:
            why = problem or f"over MoEngage's {moengage.MAX_EVENT_ATTRIBUTES} per event"
            lines.append(line(f"      # {entry}", why))
            continue
        lines.append(f"      {entry}")
        typed += 1
    if not typed:
        # An empty `attributes:` is YAML null, which validate refuses: say {} and why.
        note = "nothing typed: no column to send as it is (see below)" if len(lines) > 1 else ""
        lines[0] = line("    attributes: {}", note)
    return lines
