"""One S3 (or S3-compatible) endpoint for the outputs: reads, plain and conditional writes.

Plain botocore, not s3fs: a conditional PutObject (`If-Match` on the version we wrote last,
`If-None-Match: *` for a first write) is what keeps two runners from overwriting each
other's state, and s3fs does not pass those. The client's endpoint and region are the s3://
input's (`objectstore.client_settings`); credentials come from botocore's standard chain.
Every call has a wall-clock deadline (`deadline`): all its attempts, connects and reads
together, however slowly a server trickles bytes. botocore's own timeouts bound one read of
a socket, not a whole answer, so each call runs in a daemon thread the caller stops waiting
for at its deadline (the thread is abandoned, never joined; it ends when the socket does).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from importer.config import OutputStorage, StorageOptions
from importer.errors import RunAborted, UsageError
from importer.outputs.location import split_url
from importer.sources.objectstore import client_settings

CONNECT_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 30.0  # the most one call takes, all its attempts included, plus:
MIN_BYTES_PER_SECOND = 1 << 20  # a body's transfer: its size at 1 MiB/s at the slowest
ATTEMPTS = 3
T = TypeVar("T")
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class StoreRefused(UsageError):
    """The store refuses the job (no bucket, access denied, no credentials): exit 2."""


class StoreFault(RunAborted):
    """The store failed us (unreachable, timed out, an error of its own): exit 3."""


class Conflict(Exception):
    """A conditional write was refused (412): another writer changed the object."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str
    metadata: dict[str, str]


class RemoteStore:
    """The outputs' store, as `output.storage` describes it."""

    def __init__(self, options: StorageOptions, *, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        import botocore
        import botocore.config
        import botocore.session

        self.timeout = timeout
        config = botocore.config.Config(
            connect_timeout=min(CONNECT_TIMEOUT_SECONDS, timeout),
            read_timeout=timeout / ATTEMPTS,
            retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
            signature_version=botocore.UNSIGNED if options.anonymous else None,
        )
        self.options = options
        session = botocore.session.get_session()
        self.client: Any = session.create_client("s3", config=config, **client_settings(options))

    def deadline(self, size: int = 0) -> float:
        """The most a call moving `size` bytes may take, in seconds."""
        return self.timeout + size / MIN_BYTES_PER_SECOND

    def _call(self, url: str, call: Callable[[], T], size: int = 0) -> T:
        return bounded(url, call, self.deadline(size))

    def get(self, url: str) -> Fetched | None:
        """The object's bytes and ETag, or None when there is no such object."""
        bucket, key = split_url(url)
        try:
            answer = self._call(url, lambda: self.client.get_object(Bucket=bucket, Key=key))
        except _Missing:
            return None
        size = int(answer.get("ContentLength") or 0)
        body: bytes = self._call(url, answer["Body"].read, size)
        return Fetched(body, str(answer.get("ETag", "")), dict(answer.get("Metadata") or {}))

    def put(
        self,
        url: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Writes the object; with `if_match` only over that version, with `if_none_match` only
        where there is none (else Conflict). Returns the new ETag."""
        bucket, key = split_url(url)
        conditions: dict[str, str] = {}
        if if_match is not None:
            conditions["IfMatch"] = if_match
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
        arguments = {"Bucket": bucket, "Key": key, "Body": body, **conditions, **extra}
        answer = self._call(url, lambda: self.client.put_object(**arguments), len(body))
        return str(answer.get("ETag", ""))

    def delete(self, url: str) -> None:
        bucket, key = split_url(url)
        try:
            self._call(url, lambda: self.client.delete_object(Bucket=bucket, Key=key))
        except _Missing:
            return

    def listed(self, prefix: str) -> list[tuple[str, float]]:
        """The objects whose URL starts with `prefix`, each with its LastModified (seconds
        since the epoch): siblings of a state object, for the other-N check of slices."""
        bucket, key = split_url(prefix)
        found: list[tuple[str, float]] = []
        with _errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for page in pages:
                for item in page.get("Contents", []):
                    found.append((f"s3://{bucket}/{item['Key']}", item["LastModified"].timestamp()))
        return found

    def honours_conditions(self, beside: str) -> bool:
        """Whether the store refuses a conditional write it should (a probe object beside
        `beside`, removed after): a second create-only write and a write over a version
        that is not there must both be refused."""
        probe = f"{beside}.probe-{uuid.uuid4().hex[:12]}"
        self.put(probe, b"probe", if_none_match=True)  # a store that fails here: no cleanup
        try:
            try:
                self.put(probe, b"probe", if_none_match=True)
                return False
            except Conflict:
                pass
            try:
                self.put(probe, b"probe", if_match='"not-the-version-there"')
                return False
            except Conflict:
                return True
        finally:
            self.delete(probe)


def bounded(url: str, call: Callable[[], T], seconds: float) -> T:
    """`call()` (botocore's errors translated), or StoreFault once `seconds` have passed."""
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            with _errors(url):
                outcome.append((True, call()))
        except BaseException as error:  # handed to the caller, whatever it is
            outcome.append((False, error))

    worker = threading.Thread(target=attempt, name="object-store", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise StoreFault(f"{url}: the object store did not answer within {round(seconds, 1):g} s")
    done, value = outcome[0]
    if not done:
        raise value
    result: T = value
    return result


class _Missing(Exception):
    """No such object (a read or delete of one that is not there)."""


class _Errors:
    """botocore's exceptions as ours, naming the URL (no traceback reaches the user)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> Literal[False]:
        if error is None or not isinstance(error, Exception):
            return False
        if isinstance(error, Conflict | _Missing | StoreRefused | StoreFault):
            return False
        raise _translated(self.url, error) from None


def _errors(url: str) -> _Errors:
    return _Errors(url)


def _translated(url: str, error: Exception) -> Exception:
    name = type(error).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreRefused(
            f"{url}: no AWS credentials found (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            " or AWS_PROFILE, or a role)"
        )
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _CONFLICT_CODES or status in ("412", "409"):
            return Conflict(url)
        if code == "NoSuchBucket":
            return StoreRefused(f"{url}: no such bucket")
        if code in _MISSING_CODES or status == "404":
            return _Missing(url)
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId") or status == "403":
            return StoreRefused(
                f"{url}: access denied (check the AWS credentials and the bucket's policy;"
                " the job needs to read, write and delete objects there)"
            )
        return StoreFault(f"{url}: the object store answered {code or status}: {error}")
    return StoreFault(f"{url}: cannot reach the object store: {error}")


def refuse_unguarded(url: str, options: OutputStorage) -> StoreRefused:
    bucket, _ = split_url(url)
    return StoreRefused(
        f"the object store of bucket {bucket} ({options.endpoint_url or 'AWS S3'}) does not"
        f" honour conditional writes (If-Match / If-None-Match), so two runners of this job"
        f" could overwrite each other's state at {url}; use a store that does, or set"
        " output.storage.allow_unguarded: true to run without that guard"
    )
