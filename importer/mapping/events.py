"""Events jobs (import: events): source rows to MoEngage event elements, one row one action.

The EventMapper follows the user Mapper's plan: each mapped column is converted once per chunk
by the converters of `importer.mapping` into the JSON text of its values, and each row's
element is joined from those fragments in arrow. Its rules, checked before anything is sent
(a row that breaks one is dead-lettered, stage validation, with the rule):

- the action (event name) is present, not blank, not `moe_`-prefixed, at most 200 characters;
  a `.` in it is sent as written and warned about (MoEngage stores it as a space);
- the time is present and not in the future beyond FUTURE_SKEW_SECONDS of this clock;
- `user_timezone_offset` lies within +-54,000 seconds; the platform is one MoEngage knows.

A customer's rows of one chunk share one element's `actions`, in file order (`group_actions`,
called by `ordering.sequence`): fewer bytes, the same events. The rate limit counts actions
(`Row.weight`), not elements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.config import (
    AttributeSpec,
    ConfigError,
    EventValue,
    MappingConfig,
    event_attribute_name_problem,
    event_name_problem,
)
from importer.mapping.arrow import NULL_TEXT, null_mask
from importer.mapping.cells import Converted, per_unique, plain, problem
from importer.mapping.converters import CONVERTERS, Field
from importer.mapping.identity import customer_ids
from importer.mapping.jsontext import join_members, member_texts, quoted, wrapped
from importer.mapping.numbers import to_integer
from importer.mapping.shared import (
    DEFAULT_MAX_ELEMENT_BYTES,
    ChunkConversion,
    add_malformed,
    check_columns,
    settle,
)
from importer.mapping.text import string_cell, to_string
from importer.rows import Chunk, MappedChunk

# How far ahead of this machine's clock an event time may be: clocks drift a little, and
# an export written seconds ago must not be refused for it. Beyond it: dead-lettered.
FUTURE_SKEW_SECONDS = 300
# Actions one element holds at most when a customer's rows are grouped: keeps one element's
# share of the rate limit small, so pacing stays smooth.
MAX_GROUPED_ACTIONS = 50
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # the converters send datetimes so, with a trailing Z

# (row number, customer_id, encoded element, parts), as ordering builds its elements.
GroupedElement = tuple[int, "str | None", bytes, tuple[tuple[int, bytes], ...]]


def is_event(encoded: bytes) -> bool:
    return encoded.startswith(moengage.EVENT_ELEMENT_PREFIX)


def group_actions(
    customer: str | None, found: list[tuple[int, bytes]], max_element_bytes: int
) -> list[GroupedElement]:
    """A customer's event elements, in file order, as few elements as fit: the actions of
    consecutive ones joined (at most MAX_GROUPED_ACTIONS, within `max_element_bytes`)."""
    out: list[GroupedElement] = []
    run: list[tuple[int, bytes, dict[str, Any]]] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append((run[0][0], customer, run[0][1], ()))
        elif run:
            out.append((run[0][0], customer, _joined(run), tuple((n, e) for n, e, _ in run)))
        run.clear()

    size = 0
    for number, encoded in found:
        element = orjson.loads(encoded)
        actions = element.get(moengage.ACTIONS_KEY)
        # The actions' bytes, plus a comma, is what joining this element adds.
        grows = len(orjson.dumps(actions)) - 1 if isinstance(actions, list) else len(encoded)
        if run and (len(run) >= MAX_GROUPED_ACTIONS or size + grows > max_element_bytes):
            close_run()
        if not run:
            size = len(encoded)
        else:
            size += grows
        run.append((number, encoded, element))
    close_run()
    return out


def _joined(run: list[tuple[int, bytes, dict[str, Any]]]) -> bytes:
    first = run[0][2]
    actions = [action for _, _, element in run for action in element[moengage.ACTIONS_KEY]]
    return orjson.dumps({**first, moengage.ACTIONS_KEY: actions})


def event_template() -> tuple[str, str, str]:
    """The element JSON around the customer_id and the one action, from the one builder of
    the shape (moengage.event_element), so the key order stays its own."""
    text = orjson.dumps(moengage.event_element("\x01", [{"\x02": 0}])).decode()
    head, tail = text.split('{"\\u0002":0}')
    before, after = head.split('"\\u0001"')
    return before, after, tail


def _action_cell(cell: Any) -> tuple[Any, str | None]:
    text, rule = string_cell(cell)
    if rule is not None:
        return None, rule
    return text, event_name_problem(text)


_PLATFORMS = {name.lower(): name for name in moengage.EVENT_PLATFORMS}


def _platform_cell(cell: Any) -> tuple[Any, str | None]:
    text = plain(cell)
    known = _PLATFORMS.get(str(text).strip().lower()) if isinstance(text, str) else None
    if known is None:
        return None, f"is not a platform MoEngage knows ({', '.join(moengage.EVENT_PLATFORMS)})"
    return known, None


class EventMapper:
    """Maps chunks of source rows to MoEngage event elements (one action a row), valid or not
    (a RowMapper, sibling of the user Mapper)."""

    def __init__(
        self, mapping: MappingConfig, max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES
    ) -> None:
        if mapping.event is None or mapping.customer_id is None:
            raise ConfigError("mapping.event: an events job needs customer_id, action and time")
        self.mapping = mapping
        self.max_element_bytes = max_element_bytes
        self._customer_id = mapping.customer_id
        event = mapping.event
        for name in event.attributes:
            problem = event_attribute_name_problem(name)
            if problem:
                raise ConfigError(f"mapping.event.attributes.{name}: {problem}")
        self._attributes = [_attribute_field(n, s) for n, s in event.attributes.items()]
        self._action = _value_field("action", event.action, _action_kind)
        time_convert, time_kind = CONVERTERS["datetime"](event.time)
        self._time = Field(
            "current_time", event.time.column, "mapping.event.time.column", time_kind, time_convert
        )
        self._offset = _value_field("user_timezone_offset", event.timezone_offset, _offset_kind)
        self._platform = _value_field("platform", event.platform, _platform_kind)
        self._app_version = _value_field("app_version", event.app_version, _string_kind)
        self._constants = {
            name: value.constant
            for name, value in (
                ("action", event.action),
                ("user_timezone_offset", event.timezone_offset),
                ("platform", event.platform),
                ("app_version", event.app_version),
            )
            if value is not None and value.constant is not None
        }
        self._template = event_template()
        self._event_id = event.id

    def _fields(self) -> list[Field]:
        own = [self._action, self._time, self._offset, self._platform, self._app_version]
        return [*(f for f in own if f is not None), *self._attributes]

    @property
    def columns(self) -> list[str]:
        """The input columns this mapping reads, each once, in mapping order."""
        names = [self._customer_id] if self._customer_id else []
        names += [field.column for field in self._fields()]
        names += [self._event_id] if self._event_id else []  # read for the events ledger
        return list(dict.fromkeys(names))

    def check_columns(self, available: list[str], source: str) -> None:
        """Refuse a mapping that names columns `source` lacks, suggesting close matches."""
        wanted = [("mapping.customer_id", self._customer_id)] if self._customer_id else []
        wanted += [(field.key_path, field.column) for field in self._fields()]
        wanted += [("mapping.event.id", self._event_id)] if self._event_id else []
        check_columns(wanted, available, source)

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, column, type) for each mapped value, for `validate`'s summary."""
        rows = [("customer_id", self._customer_id, "customer_id")]
        for name in ("action", "user_timezone_offset", "platform", "app_version"):
            if name in self._constants:
                rows.append((name, "(constant)", self._constants[name]))
        rows += [(f.name, f.column, f.kind) for f in self._fields()]
        return [(n if n in _ACTION_KEYS else f"attributes.{n}", c, k) for n, c, k in rows]

    def map_chunk(self, chunk: Chunk) -> MappedChunk:
        """Every row of the chunk as a valid Row or an InvalidRow saying what is wrong."""
        work = ChunkConversion(chunk, self._customer_id)
        ids, id_json, id_errors, warnings = customer_ids(
            work.frame[self._customer_id], self._customer_id, self.mapping.strip_customer_id
        )
        work.note(id_errors)
        # The order of these steps is the order of a row's problems in its dead letter.
        action = self._actions(work, warnings)
        times, instants = self._times(work)
        offsets, user_times = self._offsets(work, instants)
        values = {
            "platform": self._optional(work, self._platform, "platform"),
            "app_version": self._optional(work, self._app_version, "app_version"),
            "current_time": times,
            "user_time": user_times,
            "user_timezone_offset": offsets,
        }
        attributes = [work.convert(field) for field in self._attributes]
        action_json = self._action_json(action, attributes, values)
        before, after, tail = self._template
        with_id = pc.binary_join_element_wise(id_json.fill_null("null"), action_json, after)
        elements = wrapped(with_id, before, tail)
        mapped = settle(chunk, ids, elements, work.problems, self.max_element_bytes)
        mapped.warnings += warnings
        add_malformed(mapped, chunk)
        return mapped

    def _actions(self, work: ChunkConversion, warnings: list[str]) -> pa.Array:
        """The action (event name) of each row; empty ones noted, dotted names warned of."""
        if self._action is None:
            return self._constant_json("action", work.rows)
        action = work.convert(self._action)
        empty = f"column {self._action.column!r}: empty; an event needs an action"
        work.note(_missing(action, work.refused["action"], empty))
        warnings += _dotted_names(action)
        return action

    def _times(self, work: ChunkConversion) -> tuple[pa.Array, pa.Array]:
        """(each row's current_time as JSON text, as UTC seconds); empty and future noted."""
        times = work.convert(self._time)
        empty = f"column {self._time.column!r}: empty; an event needs a time"
        work.note(_missing(times, work.refused["current_time"], empty))
        instants = _instants(times)
        work.note(self._future(instants, times))
        return times, instants

    def _offsets(
        self, work: ChunkConversion, instants: pa.Array
    ) -> tuple[pa.Array | None, pa.Array | None]:
        """(user_timezone_offset, user_time) of each row, or None when the job maps none."""
        offsets = None if self._offset is None else work.convert(self._offset)
        if offsets is None and "user_timezone_offset" in self._constants:
            seconds_text = str(int(self._constants["user_timezone_offset"]))  # checked by config
            offsets = pa.array([seconds_text] * work.rows, pa.string())
        if offsets is None:
            return None, None
        seconds = pc.cast(offsets, pa.int64())
        work.note(self._offset_problems(seconds))
        return offsets, _user_times(instants, seconds)

    def _optional(self, work: ChunkConversion, field: Field | None, name: str) -> pa.Array | None:
        """An optional value: from its column, else its constant, else None (omitted)."""
        if field is not None:
            return work.convert(field)
        if name in self._constants:
            return self._constant_json(name, work.rows)
        return None

    def _action_json(
        self,
        action: pa.Array,
        attributes: list[pa.Array],
        values: dict[str, pa.Array | None],
    ) -> pa.Array:
        """Each row's action object: its name, attributes, then the values the job maps."""
        members = member_texts(["action"], [action])
        if self._attributes:
            names = [f.name for f in self._attributes]
            inner = join_members(member_texts(names, attributes))
            member = wrapped(inner, '"attributes":{', "}")
            members.append(pc.if_else(pc.equal(inner, ""), NULL_TEXT, member))
        for name, column in values.items():
            if column is not None:
                members += member_texts([name], [column])
        return wrapped(join_members(members), "{", "}")

    def _constant_json(self, name: str, rows: int) -> pa.Array:
        return pa.array([orjson.dumps(self._constants[name]).decode()] * rows, pa.string())

    def _future(self, instants: pa.Array, times: pa.Array) -> dict[int, str]:
        latest = int(time.time()) + FUTURE_SKEW_SECONDS
        seconds = pc.cast(instants, pa.int64()).to_numpy(zero_copy_only=False)
        ahead = np.flatnonzero(np.nan_to_num(seconds.astype(float), nan=-np.inf) > latest)
        column = self._time.column
        rule = (
            f"is in the future (more than {FUTURE_SKEW_SECONDS} s ahead of this machine's"
            " clock); MoEngage refuses future-dated events"
        )
        return {int(p): problem(column, times[int(p)].as_py()[1:-1], rule) for p in ahead}

    def _offset_problems(self, seconds: pa.Array) -> dict[int, str]:
        limit = moengage.MAX_TIMEZONE_OFFSET_SECONDS
        values = seconds.to_numpy(zero_copy_only=False).astype(float)
        outside = np.flatnonzero(np.abs(np.nan_to_num(values, nan=0.0)) > limit)
        column = self._offset.column if self._offset is not None else "(constant)"
        rule = f"is outside -{limit}..{limit} seconds (user_timezone_offset)"
        return {int(p): problem(column, int(values[p]), rule) for p in outside}


_ACTION_KEYS = frozenset(
    {"customer_id", "action", "current_time", "user_timezone_offset", "platform", "app_version"}
)


def _action_kind(column: str) -> tuple[Callable[[pd.Series], Converted], str]:
    return partial(per_unique, column=column, convert=_action_cell), "event name"


def _offset_kind(column: str) -> tuple[Callable[[pd.Series], Converted], str]:
    return partial(to_integer, column=column), "seconds"


def _platform_kind(column: str) -> tuple[Callable[[pd.Series], Converted], str]:
    return partial(per_unique, column=column, convert=_platform_cell), "platform"


def _string_kind(column: str) -> tuple[Callable[[pd.Series], Converted], str]:
    return partial(to_string, column=column), "string"


def _value_field(
    name: str,
    value: EventValue | None,
    kind: Callable[[str], tuple[Callable[[pd.Series], Converted], str]],
) -> Field | None:
    if value is None or value.column is None:
        return None
    key = {"user_timezone_offset": "timezone_offset"}.get(name, name)
    convert, shown = kind(value.column)
    return Field(name, value.column, f"mapping.event.{key}.column", shown, convert)


def _attribute_field(name: str, spec: AttributeSpec) -> Field:
    convert, kind = CONVERTERS[spec.type](spec)
    return Field(name, spec.column, f"mapping.event.attributes.{name}.column", kind, convert)


def _missing(values: pa.Array, refused: set[int], message: str) -> dict[int, str]:
    """Rows with no value the converter did not refuse: empty cells, and an event needs one."""
    return {int(p): message for p in np.flatnonzero(null_mask(values)) if int(p) not in refused}


def _dotted_names(action: pa.Array) -> list[str]:
    dotted = pc.sum(pc.match_substring(action, moengage.EVENT_NAME_STORED_AS_SPACE)).as_py()
    if not dotted:
        return []
    return [f"event names with a '.' ({dotted:,} rows): MoEngage stores the '.' as a space"]


def _instants(times: pa.Array) -> pa.Array:
    """The converter's `"YYYY-MM-DDTHH:MM:SSZ"` texts back as UTC seconds (null stays null)."""
    inner = pc.utf8_slice_codeunits(times, 1, 20)
    return pc.strptime(inner, format=_TIME_FORMAT, unit="s", error_is_null=True)


def _user_times(instants: pa.Array, offsets: pa.Array) -> pa.Array:
    """Local time (current_time + offset), as MoEngage's user_time: ISO 8601 without a zone."""
    local = pc.add(pc.cast(instants, pa.int64()), offsets)
    text = pc.strftime(pc.cast(local, pa.timestamp("s")), format=_TIME_FORMAT)
    return quoted(text)
