"""What a local input's content is, for resuming: a sha256 of every byte, and whether a file
now on disk continues (appends to) the content an earlier run settled rows of.

A local file's fingerprint is `SIZE:sha256:HEX`, the hash of the whole file, so an edit
anywhere (even one that keeps the size) is another content. A file that grew is the old
one continued when its first SIZE bytes still hash to HEX and they end a line: the rows
settled before are the same rows. One pass over the file hashes it and checks every
earlier prefix (hashlib's copy() at each earlier size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

READ_BYTES = 1 << 20
DIGEST = "sha256"
MARK = f":{DIGEST}:"

# How fingerprints were made before whole-content hashing (kept to carry progress over once).
LEGACY_EDGE_BYTES = 1 << 20
LEGACY_BLOCK_BYTES = 64 << 10
LEGACY_BLOCKS = 8


def content_fingerprint(path: Path, prefixes: Iterable[int] = ()) -> tuple[str, dict[int, str]]:
    """(`SIZE:sha256:HEX` of the whole file, {prefix size: HEX of that prefix}) in one read.

    A prefix is hashed only where its last byte ends a line (else the earlier file's last
    row may continue in the added bytes): other sizes are left out of the answer."""
    wanted = sorted({size for size in prefixes if size > 0})
    found: dict[int, str] = {}
    digest = hashlib.new(DIGEST)
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_BYTES):
            end = done + len(block)
            while wanted and wanted[0] <= end:
                cut = wanted.pop(0) - done  # at least 1: a size at `done` was the last block's
                if block[cut - 1 : cut] == b"\n":
                    head = digest.copy()
                    head.update(block[:cut])
                    found[done + cut] = head.hexdigest()
            digest.update(block)
            done = end
    return f"{done}{MARK}{digest.hexdigest()}", found


def parse_fingerprint(fingerprint: str) -> tuple[int, str] | None:
    """(size, hex) of a whole-content fingerprint; None for another kind (ETag, legacy)."""
    size, mark, hexdigest = fingerprint.partition(MARK)
    if not mark or not size.isdigit():
        return None
    return int(size), hexdigest


def is_legacy(fingerprint: str) -> bool:
    """A fingerprint of sampled blocks, from before whole-content hashing (`SIZE:HEX`)."""
    size, _, rest = fingerprint.partition(":")
    return size.isdigit() and ":" not in rest and len(rest) == 64


def legacy_fingerprint(path: Path) -> str:
    """The sampled fingerprint earlier versions saved: size + sha256 of the first and last
    MiB and 8 spaced 64 KiB blocks (the whole file up to 2.5 MiB)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    sampled = 2 * LEGACY_EDGE_BYTES + LEGACY_BLOCKS * LEGACY_BLOCK_BYTES
    with path.open("rb") as handle:
        if size <= sampled:
            digest.update(handle.read())
        else:
            middle = size - 2 * LEGACY_EDGE_BYTES
            step = middle // (LEGACY_BLOCKS + 1)
            spans = [(0, LEGACY_EDGE_BYTES)]
            spans += [(LEGACY_EDGE_BYTES + b * step, LEGACY_BLOCK_BYTES) for b in range(1, 9)]
            spans.append((size - LEGACY_EDGE_BYTES, LEGACY_EDGE_BYTES))
            for offset, length in spans:
                handle.seek(offset)
                digest.update(handle.read(length))
    return f"{size}:{digest.hexdigest()}"
