"""CSV text in other encodings: whether its structural bytes are ASCII; re-encoding as UTF-8."""

from __future__ import annotations

import codecs
import io
from typing import BinaryIO

READ_BYTES = 1 << 20


def is_ascii_compatible(encoding: str) -> bool:
    """Whether the CSV's structural bytes (newlines, quotes, delimiters) are plain ASCII."""
    name = codecs.lookup(encoding).name
    if name.startswith(("utf-16", "utf-32", "utf-7")):
        return False
    sample = "\n\r\",;|\t'abc"
    try:
        return sample.encode(encoding) == sample.encode("ascii")
    except UnicodeError:
        return False


class TranscodedStream(io.RawIOBase):
    """The stream's text re-encoded as UTF-8, for encodings whose newlines are not ASCII bytes."""

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            block = self._raw.read(READ_BYTES)
            self._done = not block
            self._pending = self._decoder.decode(block, final=self._done).encode("utf-8")
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()
