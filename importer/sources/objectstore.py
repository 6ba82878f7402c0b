"""s3:// input through s3fs: listing with ETags, and objects streamed a block at a time.

s3fs rather than pyarrow's S3FileSystem: pyarrow's listings carry no ETag, and the ETag
is what tells a resumed run that an object is still the one it started on. Credentials come
from botocore's standard chain (environment, ~/.aws, SSO, instance or task roles);
`source.storage` adds an endpoint and a region for S3-compatible stores, or anonymous
access for public buckets.

An endpoint that accepts the connection and never answers must not hang the run: every
request has botocore's connect and read timeouts and few retries, and the listing as a
whole (the HEAD of a named object, the listing or glob) has one deadline,
LISTING_DEADLINE_SECONDS, after which it ends with an error naming the URL.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, BinaryIO, ClassVar

from importer.config import SourceFormat, StorageOptions
from importer.sources.datafile import (
    DataFile,
    SourceError,
    fixed_parts,
    hive_partitions,
    is_marker,
    named_codec,
    needs_sniffing,
    sniff,
    wanted,
)

# What one read of an object fetches: memory stays at about this much per open file,
# whatever the object's size.
READ_BLOCK_BYTES = 8 << 20
SCHEME = "s3://"
SNIFFS_AT_ONCE = 16
# The whole listing of a source URL (HEAD, list or glob calls, their retries included).
LISTING_DEADLINE_SECONDS = 120.0
# Each request: connecting, and each wait for bytes. botocore's own defaults (60 s, with
# up to 5 attempts, under s3fs's 5 retries) let one hung read last some 25 minutes.
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
BOTOCORE_ATTEMPTS = 3
S3FS_RETRIES = 2


def client_settings(options: StorageOptions) -> dict[str, Any]:
    """The S3 client's endpoint and region as `storage` says (s3:// inputs and outputs alike);
    credentials are botocore's standard chain."""
    client: dict[str, Any] = {}
    if options.endpoint_url:
        client["endpoint_url"] = options.endpoint_url
    if options.region:
        client["region_name"] = options.region
    return client


class ObjectStore:
    """One S3 (or S3-compatible) endpoint, as `source.storage` describes it."""

    _cache: ClassVar[dict[StorageOptions, ObjectStore]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, options: StorageOptions) -> None:
        try:
            import s3fs
        except ImportError:  # pragma: no cover - a dependency, but a broken install says so
            raise SourceError(
                "reading s3:// paths needs the s3fs package: pip install s3fs"
            ) from None
        self.options = options
        # Listings are taken fresh each run: a cached listing would hide a rewritten object.
        self.fs = s3fs.S3FileSystem(
            anon=options.anonymous,
            client_kwargs=client_settings(options),
            use_listings_cache=False,
            skip_instance_cache=True,
            config_kwargs={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "read_timeout": READ_TIMEOUT_SECONDS,
                "retries": {"max_attempts": BOTOCORE_ATTEMPTS, "mode": "standard"},
            },
        )
        self.fs.retries = S3FS_RETRIES

    @classmethod
    def forget_all(cls) -> None:
        """In a forked process (a slice of `--workers`): the parent's stores hold its event
        loop and connections, which the child must not use; it makes its own."""
        cls._cache = {}
        cls._lock = threading.Lock()

    @classmethod
    def for_options(cls, options: StorageOptions) -> ObjectStore:
        with cls._lock:
            if options not in cls._cache:
                cls._cache[options] = cls(options)
            return cls._cache[options]

    def discover(self, url: str, fmt: SourceFormat) -> list[DataFile]:
        """The objects a URL names: one object, every data object under a prefix
        (recursively, markers left out), or those a glob matches."""
        path = url[len(SCHEME) :]
        if not path or path.startswith("/"):
            raise SourceError(f"{url}: an s3:// path needs a bucket: s3://bucket/prefix/")
        left = _Deadline(url)
        with self._errors(url):
            if glob.has_magic(path):
                root = _glob_root(path)
                listed = self.fs.glob(path, detail=True, timeout=left())
                return self._data_files(url, root, listed, fmt, from_glob=True)
            if not path.endswith("/"):
                info = self._info(path, left())
                if info is not None and info.get("type") == "file":
                    return [self._data_file(path, info, ())]
            root = path.rstrip("/")
            listed = self.fs.find(root, detail=True, timeout=left())
            return self._data_files(url, root, listed, fmt, from_glob=False)

    def _info(self, path: str, timeout: float) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.fs.info(path, timeout=timeout)
        except FileNotFoundError:
            return None
        return info

    def _data_files(
        self, url: str, root: str, listed: dict[str, Any], fmt: SourceFormat, *, from_glob: bool
    ) -> list[DataFile]:
        found: list[tuple[str, dict[str, Any], tuple[tuple[str, str | None], ...]]] = []
        for key in sorted(listed):
            info = listed[key]
            if info.get("type") != "file":
                continue
            parts = tuple(p for p in key[len(root) :].split("/") if p)
            if not parts or is_marker(parts):
                continue
            found.append((key, info, hive_partitions(parts[:-1])))
        # Objects whose names do not tell are sniffed: a round trip each, so several at once.
        with ThreadPoolExecutor(SNIFFS_AT_ONCE, thread_name_prefix="sniff") as pool:
            located = list(pool.map(lambda item: self._data_file(*item), found))
        files = [file for file in located if from_glob or wanted(file, fmt)]
        if not files:
            kind = "no files match" if from_glob else "no CSV or Parquet files under"
            raise SourceError(f"{kind} {url}")
        return files

    def _data_file(
        self, key: str, info: dict[str, Any], partitions: tuple[tuple[str, str | None], ...]
    ) -> DataFile:
        name = SCHEME + key
        size = int(info.get("size") or info.get("Size") or 0)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"') or None
        if etag is None and info.get("LastModified"):
            # A store that lists no ETag: its modification time still sees a rewrite.
            etag = f"modified {info['LastModified']}"
        content = None
        if needs_sniffing(key):
            with self._errors(name), self.fs.open(key, "rb", block_size=64) as head:
                content = sniff(head.read(8)) or named_codec(key)
        return DataFile(name, size, etag=etag, partitions=partitions, content=content, store=self)

    def open(self, url: str, block_size: int | None = None) -> BinaryIO:
        """The object's bytes, fetched a block at a time as they are read."""
        with self._errors(url):
            stream: BinaryIO = self.fs.open(
                url[len(SCHEME) :],
                "rb",
                block_size=block_size or READ_BLOCK_BYTES,
                cache_type="readahead",
            )
        return stream

    def _errors(self, url: str) -> AbstractContextManager[None]:
        return _store_errors(url)


class _Deadline:
    """What is left of LISTING_DEADLINE_SECONDS for the next call (fsspec's `timeout=`
    cancels the call's coroutine when it runs out), or a SourceError once none is."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._ends_at = time.monotonic() + LISTING_DEADLINE_SECONDS

    def __call__(self) -> float:
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise SourceError(timeout_message(self._url))
        return left


def timeout_message(url: str) -> str:
    return (
        f"{url}: object storage did not answer within {LISTING_DEADLINE_SECONDS:g} s "
        "(check source.storage.endpoint_url, the network and any proxy)"
    )


@contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """Turns s3fs / botocore exceptions into SourceErrors naming the URL."""
    try:
        yield
    except SourceError:
        raise
    except TimeoutError:  # fsspec's FSTimeoutError: the listing's deadline ran out
        raise SourceError(timeout_message(url)) from None
    except FileNotFoundError:
        raise SourceError(f"{url}: no such object or bucket") from None
    except PermissionError:
        raise SourceError(
            f"{url}: access denied (check the AWS credentials, or set "
            "source.storage.anonymous: true for a public bucket)"
        ) from None
    except Exception as error:
        name = type(error).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            raise SourceError(
                f"{url}: no AWS credentials found (set AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or source.storage.anonymous: true)"
            ) from None
        if isinstance(error, OSError | ValueError) or "botocore" in type(error).__module__:
            raise SourceError(f"{url}: cannot read from object storage: {error}") from None
        raise


def _glob_root(path: str) -> str:
    return "/".join(fixed_parts(path))


os.register_at_fork(after_in_child=ObjectStore.forget_all)
