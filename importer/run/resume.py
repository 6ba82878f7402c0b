"""Which content a source file is, for resuming: settled rows apply only to content that is
provably the same, or continued (an appended export resumes after its old end).

A local file is hashed whole (`sources.content`); when this scope saved progress of the
same path under another content, the file continues it if the old content is a prefix of
the new one ending a line (one read checks every earlier size): that progress is carried
over. An in-place edit, even one keeping the size, matches nothing and starts over.
"""

from __future__ import annotations

import logging
from pathlib import Path

from importer import sources
from importer.sources.content import (
    content_fingerprint,
    is_legacy,
    legacy_fingerprint,
    parse_fingerprint,
)
from importer.state import RunState

log = logging.getLogger("importer")

# Inputs that can grow in place: text CSV (not compressed, not Parquet).
_FIXED_SUFFIXES = (".gz", ".parquet", ".pq", ".zst", ".bz2")


def identify(state: RunState | None, key: str, data: sources.DataFile) -> str:
    """The source's fingerprint, after carrying over progress of content it continues."""
    local = data.local
    if local is None or state is None:
        return sources.fingerprint(data)
    earlier = state.earlier_versions(key)
    growable = not local.name.lower().endswith(_FIXED_SUFFIXES)
    sizes = [p[0] for p in map(parse_fingerprint, earlier) if p] if growable else []
    try:
        fingerprint, prefixes = content_fingerprint(local, sizes)
    except OSError as error:
        raise sources.SourceError(f"{local}: cannot read: {error.strerror or error}") from None
    if not earlier or fingerprint in earlier:
        return fingerprint
    old = _continued(earlier, prefixes) or _legacy_match(earlier, local)
    if old is not None:
        state.carry_over(key, old, fingerprint)
    return fingerprint


def _continued(earlier: list[str], prefixes: dict[int, str]) -> str | None:
    """The longest earlier content the file now starts with, if any."""
    matches = [
        (parsed[0], old)
        for old in earlier
        if (parsed := parse_fingerprint(old)) and prefixes.get(parsed[0]) == parsed[1]
    ]
    if not matches:
        return None
    size, old = max(matches)
    log.info("the input grew since the last run; resuming after its first %s bytes", f"{size:,}")
    return old


def _legacy_match(earlier: list[str], local: Path) -> str | None:
    """Progress saved by an earlier version under a sampled fingerprint: trusted once, as
    that version did, when the file has the same size and samples."""
    if not any(is_legacy(old) for old in earlier):
        return None
    try:
        sampled = legacy_fingerprint(local)
    except OSError:
        return None
    return sampled if sampled in earlier else None
