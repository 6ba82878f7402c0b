"""Compressed input: which codec a file needs, and a stream of its decompressed bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from typing import Any, BinaryIO

import zstandard

from importer.sources.datafile import COMPRESSION_CODECS, DataFile, SourceError

_COMPRESSION_SUFFIXES = {
    ".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz", ".zip": "zip",
}  # fmt: skip


def codec_of(file: DataFile, compression: str | None) -> str | None:
    """The compression to undo: the configured one, or what the name or first bytes say."""
    if compression != "infer":
        return compression
    if file.content in COMPRESSION_CODECS:
        return file.content  # the first bytes, over a name that may not say or may be wrong
    name = file.basename.lower()
    for suffix, codec in _COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            return codec
    return None


def open_compressed(
    file: DataFile, compression: str | None, block_size: int | None = None
) -> BinaryIO:
    """A Python binary stream of the file's decompressed bytes."""
    codec = codec_of(file, compression)
    if file.local is not None:
        path = file.local
        if codec == "gzip":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        if codec == "bz2":
            return bz2.open(path, "rb")  # type: ignore[return-value]
        if codec == "zstd":
            stream: BinaryIO = zstandard.open(path, "rb")
            return stream
        if codec == "xz":
            return lzma.open(path, "rb")  # type: ignore[return-value]
        if codec != "zip":
            return path.open("rb")
    raw = file.open(block_size)
    try:
        return _decompressing(file, raw, codec)
    except BaseException:
        raw.close()
        raise


def open_compressed_stream(file: DataFile, raw: BinaryIO, codec: str | None) -> BinaryIO:
    """The decompressed bytes of `raw`, a stream of the file's bytes (not closed with it)."""
    return raw if codec is None else _decompressing(file, raw, codec)


def _decompressing(file: DataFile, raw: BinaryIO, codec: str | None) -> BinaryIO:
    if codec is None:
        return raw
    if codec == "zip":
        archive = zipfile.ZipFile(raw)
        members = [name for name in archive.namelist() if not name.endswith("/")]
        if len(members) != 1:
            raise SourceError(f"{file}: a zip file must hold exactly one CSV file")
        return _Owning(archive.open(members[0]), raw)  # type: ignore[arg-type,return-value]
    stream: BinaryIO
    if codec == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif codec == "bz2":
        stream = bz2.BZ2File(raw, "rb")  # type: ignore[assignment]
    elif codec == "zstd":
        stream = zstandard.ZstdDecompressor().stream_reader(raw)
    else:
        stream = lzma.LZMAFile(raw, "rb")  # type: ignore[assignment]  # noqa: SIM115
    return _Owning(stream, raw)  # type: ignore[return-value]


class _Owning(io.RawIOBase):
    """A decompressing stream that closes the raw stream under it too."""

    def __init__(self, stream: BinaryIO, raw: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._raw.close()
            super().close()
