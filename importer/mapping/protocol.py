"""What the run asks of a mapper: the one protocol the user and event mappers both meet."""

from __future__ import annotations

from typing import Protocol

from importer.rows import Chunk, MappedChunk


class RowMapper(Protocol):
    """Maps chunks of source rows to MoEngage elements (users or events), valid or not."""

    @property
    def max_element_bytes(self) -> int:
        """The largest element one request can carry; larger ones are invalid rows."""
        ...

    @property
    def columns(self) -> list[str]:
        """The input columns this mapping reads, each once, in mapping order."""
        ...

    def check_columns(self, available: list[str], source: str) -> None:
        """Refuse a mapping that names columns `source` lacks (a ConfigError)."""
        ...

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, column, type) for each mapped value, for `validate`'s summary."""
        ...

    def map_chunk(self, chunk: Chunk) -> MappedChunk:
        """Every row of the chunk as a valid Row or an InvalidRow saying what is wrong."""
        ...
