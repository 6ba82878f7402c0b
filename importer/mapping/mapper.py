"""The user Mapper: chunks of source rows to MoEngage customer elements, valid or not."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.config import ConfigError, MappingConfig, check_mapping_rules
from importer.mapping.arrow import NULL_TEXT, null_mask
from importer.mapping.converters import Field, array_op_field, attribute_field
from importer.mapping.identity import customer_ids
from importer.mapping.jsontext import join_members, member_texts, wrapped
from importer.mapping.platforms import platform_entries, to_platforms
from importer.mapping.shared import (
    DEFAULT_MAX_ELEMENT_BYTES,
    ChunkConversion,
    add_malformed,
    check_columns,
    settle,
)
from importer.mapping.unset import unset_member, unset_names
from importer.rows import Chunk, MappedChunk


def element_template(with_customer_id: bool, update_existing_only: bool) -> tuple[str, ...]:
    """The element JSON around the customer_id and the attribute members, from the one
    builder of the shape (moengage.customer_element), so the key order stays its own."""
    customer_id = "\x01" if with_customer_id else None
    text = orjson.dumps(
        moengage.customer_element(customer_id, {"\x02": 0}, update_existing_only)
    ).decode()
    head, tail = text.split('"\\u0002":0')
    if with_customer_id:
        before, after = head.split('"\\u0001"')
        return before, after, tail
    return head, tail


class Mapper:
    """Maps chunks of source rows to MoEngage customer elements, valid or not (a RowMapper,
    sibling of the events job's EventMapper)."""

    def __init__(
        self, mapping: MappingConfig, max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES
    ) -> None:
        self.mapping = mapping
        self.max_element_bytes = max_element_bytes
        check_mapping_rules(mapping)
        blank = [repr(name) for name in mapping.attributes if not name.strip()]
        if blank:
            raise ConfigError(
                f"mapping.attributes: an attribute name of only whitespace ({', '.join(blank)}); "
                "give it a name"
            )
        self._attributes = [attribute_field(n, s) for n, s in mapping.attributes.items()]
        self._add = [array_op_field("add_to_array", n, s) for n, s in mapping.add_to_array.items()]
        self._remove = [
            array_op_field("remove_from_array", n, s) for n, s in mapping.remove_from_array.items()
        ]
        self._platforms_field: Field | None = None
        self._platforms_constant: list[dict[str, str]] | None = None
        platforms = mapping.platforms
        if platforms is not None and platforms.column is not None:
            self._platforms_field = Field(
                moengage.PLATFORMS_KEY, platforms.column, "mapping.platforms.column", "platforms",
                partial(to_platforms, column=platforms.column),
            )  # fmt: skip
        elif platforms is not None and platforms.values:
            # check_mapping_rules admitted only MoEngage's platform names.
            self._platforms_constant, _ = platform_entries(platforms.values)
        self._template = element_template(
            mapping.customer_id is not None, mapping.update_existing_only
        )
        unset = set(unset_names(mapping))  # on_empty: unset
        self._unset = [i for i, f in enumerate(self._attributes) if f.name in unset]

    @property
    def columns(self) -> list[str]:
        """The input columns this mapping reads, each once, in mapping order."""
        names = [self.mapping.customer_id] if self.mapping.customer_id else []
        names += [field.column for field in self._fields()]
        return list(dict.fromkeys(names))

    def _fields(self) -> list[Field]:
        extra = [self._platforms_field] if self._platforms_field else []
        return [*self._attributes, *self._add, *self._remove, *extra]

    def check_columns(self, available: list[str], source: str) -> None:
        """Refuse a mapping that names columns `source` lacks, suggesting close matches."""
        wanted: list[tuple[str, str]] = []
        if self.mapping.customer_id:
            wanted.append(("mapping.customer_id", self.mapping.customer_id))
        wanted += [(field.key_path, field.column) for field in self._fields()]
        check_columns(wanted, available, source)

    def describe(self) -> list[tuple[str, str, str]]:
        """(attribute, column, type) for each mapped attribute, for `validate`'s summary."""
        rows = []
        if self.mapping.customer_id:
            rows.append(("customer_id", self.mapping.customer_id, "customer_id"))
        rows += [(f.name, f.column, f.kind) for f in self._attributes]
        rows += [(f"{moengage.ADD_TO_ARRAY_KEY}.{f.name}", f.column, f.kind) for f in self._add]
        rows += [
            (f"{moengage.REMOVE_FROM_ARRAY_KEY}.{f.name}", f.column, f.kind) for f in self._remove
        ]
        if self._platforms_field:
            rows.append((moengage.PLATFORMS_KEY, self._platforms_field.column, "platforms"))
        elif self._platforms_constant:
            names = "|".join(entry["platform"] for entry in self._platforms_constant)
            rows.append((moengage.PLATFORMS_KEY, "(constant)", names))
        return rows

    def map_chunk(self, chunk: Chunk) -> MappedChunk:
        """Every row of the chunk as a valid Row or an InvalidRow saying what is wrong."""
        work = ChunkConversion(chunk, self.mapping.customer_id)
        rows = work.rows
        ids: list[Any] = [None] * rows
        id_json: pa.Array | None = None
        warnings: list[str] = []
        if self.mapping.customer_id is not None:
            column = self.mapping.customer_id
            ids, id_json, id_errors, warnings = customer_ids(
                work.frame[column], column, self.mapping.strip_customer_id
            )
            work.note(id_errors)
        attributes = [work.convert(field) for field in self._attributes]
        if self.mapping.customer_id is None:
            self._require_identifier(attributes, work.problems)
        members = member_texts([f.name for f in self._attributes], attributes)
        members += self._array_ops(moengage.ADD_TO_ARRAY_KEY, self._add, work.convert, rows)
        members += self._array_ops(moengage.REMOVE_FROM_ARRAY_KEY, self._remove, work.convert, rows)
        members += self._platforms(work.convert, rows)
        elements = self._elements(id_json, members, rows)
        if self._unset:
            names = [self._attributes[i].name for i in self._unset]
            cleared = unset_member(names, [attributes[i] for i in self._unset], rows)
            # The member goes last, inside the element's closing brace.
            elements = pc.utf8_slice_codeunits(elements, 0, -1)
            elements = pc.binary_join_element_wise(elements, cleared, "}", "")
        mapped = settle(chunk, ids, elements, work.problems, self.max_element_bytes)
        mapped.warnings += warnings
        add_malformed(mapped, chunk)
        return mapped

    def _array_ops(
        self, key: str, fields: list[Field], converted: Callable[[Field], pa.Array], rows: int
    ) -> list[pa.Array]:
        """The `"addValueToArrayField":{...}` member, null where no column has a value."""
        if not fields:
            return []
        inner = member_texts([f.name for f in fields], [converted(f) for f in fields])
        body = join_members(inner)
        member = wrapped(body, orjson.dumps(key).decode() + ":{", "}")
        return [pc.if_else(pc.equal(body, ""), NULL_TEXT, member)]

    def _platforms(self, converted: Callable[[Field], pa.Array], rows: int) -> list[pa.Array]:
        if self._platforms_field is not None:
            return member_texts([moengage.PLATFORMS_KEY], [converted(self._platforms_field)])
        if self._platforms_constant is not None:
            value = orjson.dumps(self._platforms_constant).decode()
            return member_texts([moengage.PLATFORMS_KEY], [pa.array([value] * rows, pa.string())])
        return []

    def _require_identifier(
        self, attributes: list[pa.Array], problems: dict[int, list[str]]
    ) -> None:
        """Without customer_id, a row must carry one of the identifiers (Identity Resolution)."""
        rows = len(attributes[0]) if attributes else 0
        has_one = np.zeros(rows, dtype=bool)
        for field, values in zip(self._attributes, attributes, strict=True):
            if field.name in self.mapping.identifiers:
                has_one |= ~null_mask(values)
        message = (
            "no customer_id and none of the identifiers "
            f"({', '.join(self.mapping.identifiers)}) has a value"
        )
        for position in np.flatnonzero(~has_one):
            problems.setdefault(int(position), []).append(message)

    def _elements(self, id_json: pa.Array | None, members: list[pa.Array], rows: int) -> pa.Array:
        """Each row's element JSON, joined from the fragments (omitted members skipped)."""
        body = join_members(members) if members else pa.array([""] * rows, pa.string())
        if id_json is None:
            head, tail = self._template
            return wrapped(body, head, tail)
        before, after, tail = self._template
        # An invalid row can lack a customer_id; its payload then shows it as null.
        id_and_body = pc.binary_join_element_wise(id_json.fill_null("null"), body, after)
        return wrapped(id_and_body, before, tail)
