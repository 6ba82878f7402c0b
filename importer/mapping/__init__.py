"""Source rows to MoEngage customer elements: the Mapper and its converters by type family.

Speed comes from never building per-row dicts for valid rows: each mapped column is converted
once per chunk, with pyarrow compute kernels, into the JSON text of its values (null where the
attribute is omitted) plus the problems found; the element JSON of every row is then joined from
those fragments in arrow too. Per-row Python only wraps the result in a `Row`, whose `element`
is decoded from `encoded` when something asks for it (dead letters, samples). Conversions that
need Python per cell (booleans, arrays, platforms, odd formats) run once per distinct value.

Layers: `arrow` (arrays and masks), `jsontext` (JSON text in arrow), `cells` (per distinct
value), the converters by family (`text`, `numbers`, `booleans`, `temporal`, `arrays`,
`platforms`, `identity`, `standard`), `converters` (the CONVERTERS table keyed by type),
`shared` (conversion bookkeeping, column checks, settling rows) and the two sibling mappers
behind the `protocol.RowMapper` protocol: `mapper` (the user Mapper) and `events` (the
EventMapper). The type rules are in each family's module docstring.
"""

from importer.mapping.events import EventMapper
from importer.mapping.mapper import Mapper
from importer.mapping.protocol import RowMapper
from importer.mapping.shared import DEFAULT_MAX_ELEMENT_BYTES, MALFORMED_RECORD_KEY
from importer.mapping.temporal import looks_like_datetime, parse_export_datetime

__all__ = [
    "DEFAULT_MAX_ELEMENT_BYTES",
    "MALFORMED_RECORD_KEY",
    "EventMapper",
    "Mapper",
    "RowMapper",
    "looks_like_datetime",
    "parse_export_datetime",
]
