"""Where an output lives: a local path, or an object in S3 (`s3://bucket/key`).

An output in object storage is kept in the job's model as a `Path` whose first part is
`s3:` (`Path("s3://b/k")` is `s3:/b/k`), so everything that derives one output's path
from another (`.with_name`, `.parent /`, the dry run's `X.dry-run.json`, a slice's file)
works on both alike; `object_url` tells which it is and gives the URL back. Nothing opens
such a path: `importer.remote` swaps every one for a file in a private working directory
before the run opens its outputs, and uploads them back.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

OBJECT_SCHEME = "s3://"
_FIRST_PART = "s3:"


def object_url(path: str | os.PathLike[str] | None) -> str | None:
    """`s3://bucket/key` when `path` names an object, else None (a local path, or none)."""
    if path is None:
        return None
    text = os.fspath(path)
    if text.startswith(OBJECT_SCHEME):
        return text
    parts = PurePosixPath(text).parts
    if len(parts) >= 3 and parts[0] == _FIRST_PART:
        return OBJECT_SCHEME + "/".join(parts[1:])
    return None


def is_remote(path: str | os.PathLike[str] | None) -> bool:
    return object_url(path) is not None


def shown(path: str | os.PathLike[str]) -> str:
    """The output as a user wrote it: its URL, or the local path."""
    return object_url(path) or os.fspath(path)


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URL."""
    bucket, _, key = url[len(OBJECT_SCHEME) :].partition("/")
    return bucket, key


def output_location(value: Any) -> Any:
    """The job file's output value: `s3://bucket/key` checked (a bucket and a key), local
    paths left to pydantic. An output derived from another (a replay's, beside its s3://
    input) comes back as `str(path)`, `s3:/bucket/key`: the same object."""
    if isinstance(value, str) and value.startswith("s3:"):
        value = object_url(value) or value  # `s3:/b/k`: a URL kept as a Path, written out
        if not value.startswith(OBJECT_SCHEME):
            raise ValueError(f"{value!r}: an object's URL is s3://bucket/key")
        bucket, key = split_url(value)
        if not bucket or not key.strip("/") or key.endswith("/"):
            raise ValueError(f"{value!r}: name an object, s3://bucket/key (not a bucket or folder)")
        return Path(value)
    return value
