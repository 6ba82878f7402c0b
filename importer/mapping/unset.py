"""`on_empty: unset`: an empty cell clears its attribute through the element's
`unset_attributes` member (MoEngage's `[{"type": "equals", "attr": NAME}]`)."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.config import MappingConfig
from importer.mapping.arrow import NULL_TEXT
from importer.mapping.jsontext import join_members, wrapped

# How an element's unset member starts; counted in accepted elements (`count_unsets`).
UNSET_ENTRY_PREFIX = '{"type":' + orjson.dumps(moengage.UNSET_MATCH_TYPE).decode() + ',"attr":'


def unset_names(mapping: MappingConfig) -> list[str]:
    """The attributes an empty cell clears: `on_empty` of the attribute, else the job's."""
    return [
        name
        for name, spec in mapping.attributes.items()
        if (spec.on_empty or mapping.on_empty) == "unset"
    ]


def unset_member(names: list[str], fragments: list[pa.Array], rows: int) -> pa.Array:
    """`,"unset_attributes":[...]` for each row whose value of one of `names` is empty
    (the converter omitted it), "" for the others."""
    entries = []
    for name, values in zip(names, fragments, strict=True):
        entry = UNSET_ENTRY_PREFIX + orjson.dumps(name).decode() + "}"
        constant = pa.array([entry] * rows, pa.string())
        entries.append(pc.if_else(pc.is_null(values), constant, NULL_TEXT))
    body = join_members(entries) if entries else pa.array([""] * rows, pa.string())
    head = "," + orjson.dumps(moengage.UNSET_ATTRIBUTES_KEY).decode() + ":["
    member = wrapped(body, head, "]")
    return pc.if_else(pc.equal(body, ""), "", member)


def count_unsets(encoded: bytes) -> int:
    """Attributes an element clears. Inside a JSON string every quote is escaped, so the
    entry's text can only be the member itself."""
    return encoded.count(UNSET_ENTRY_PREFIX.encode())
