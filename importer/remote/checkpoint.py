"""Checkpoints of a run whose outputs are in object storage.

The state goes up as a consistent copy (SQLite's backup of the working file), written only
over the version this run wrote last (or read at its start, or where there is none on the
first night): a refusal means another runner wrote the state, and this run stops (exit 3,
rows pending) without ever writing it again. Dead letters, the report, metrics and files
the run leaves beside them are plain puts of the whole local file (a dead-letter file cut at
its last complete line while the run goes on).

The state object carries `run-id` and `final` metadata: `final: 0` (a checkpoint while the
run went on) tells the next run its writer may have sent more than the state says (see
`session.possibly_resent`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.outputs.location import OBJECT_SCHEME, split_url
from importer.remote.lease import Lease, LeaseLost
from importer.remote.store import Conflict, RemoteStore, StoreFault
from importer.state.database import read_only

log = logging.getLogger("importer")

# A checkpoint (or renewal) failing this many times in a row stops the run, so that a
# crash never re-sends more than the README's bound.
FAILURES_BEFORE_STOP = 2
# Sending waits while the saved state is older than the interval plus as much again, at
# most this (a slow store, or a state too large to upload within the interval).
OVERDUE_SECONDS = 15.0
OVERDUE_POLL_SECONDS = 0.1
RETRY_SECONDS = 5.0


def crash_window(checkpoint_seconds: float) -> float:
    """The longest a run sends for without its remote state knowing (see `Checkpointer`)."""
    if checkpoint_seconds <= 0:
        return 0.0
    return checkpoint_seconds + min(checkpoint_seconds, OVERDUE_SECONDS)


class StateLost(Exception):
    """Another runner wrote the state since this run's last write."""


@dataclass
class Mirror:
    """An output: its object and the file the run writes in its working directory."""

    url: str
    local: Path
    sent: dict[Path, tuple[int, int]] = field(default_factory=dict)  # file -> (size, mtime)

    def beside(self, name: str) -> str:
        bucket, key = split_url(self.url)
        folder = key.rpartition("/")[0]
        return f"{OBJECT_SCHEME}{bucket}/{folder + '/' if folder else ''}{name}"


@dataclass
class StateMirror:
    url: str
    local: Path
    etag: str | None  # the version we wrote last (or found at the start); None: no object


class Uploader:
    """One upload at a time, of the state and the files."""

    def __init__(
        self,
        store: RemoteStore,
        state: StateMirror | None,
        files: list[Mirror],
        run_id: str,
        workdir: Path,
    ) -> None:
        self.store = store
        self.state = state
        self.files = files
        self.run_id = run_id
        self.workdir = workdir
        self.lost: str | None = None
        self._lock = threading.Lock()

    def upload(self, *, final: bool, with_state: bool = True) -> None:
        """StateLost when another runner wrote the state; StoreFault when the store failed."""
        with self._lock:
            if with_state and self.state is not None:
                self._upload_state(self.state, final)
            for mirror in self.files:
                self._upload_files(mirror, final)

    def _upload_state(self, state: StateMirror, final: bool) -> None:
        if self.lost is not None:
            raise StateLost(self.lost)
        if not state.local.exists():
            return
        copy = self.workdir / ".state.upload"
        copy.unlink(missing_ok=True)
        with read_only(state.local) as db:
            if db is None:
                return
            target = sqlite3.connect(copy)
            try:
                db.backup(target)
            finally:
                target.close()
        body = copy.read_bytes()
        copy.unlink()
        metadata = {"run-id": self.run_id, "final": "1" if final else "0"}
        try:
            state.etag = self.store.put(
                state.url,
                body,
                if_match=state.etag,
                if_none_match=state.etag is None,
                metadata=metadata,
            )
        except Conflict:
            self.lost = f"another run wrote the state {state.url} after this run last did"
            raise StateLost(self.lost) from None

    def _upload_files(self, mirror: Mirror, final: bool) -> None:
        folder = mirror.local.parent
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # ownership marks and temporary files stay here
            stat = path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
            if mirror.sent.get(path) == seen:
                continue
            body = path.read_bytes()
            if not final and path.suffix == ".jsonl":
                body = body[: body.rfind(b"\n") + 1]  # a line still being written waits
            url = mirror.url if path == mirror.local else mirror.beside(path.name)
            self.store.put(url, body)
            mirror.sent[path] = seen


class Checkpointer:
    """Renews the lease and keeps the remote state fresh, so that a runner that vanishes
    leaves at most `crash_window(every)` seconds of sending unrecorded.

    Every `every` seconds (counted from the start of the last saved copy) a thread uploads
    the state; if the saved copy grows older than `crash_window(every)` (a slow or failing
    store), `before_send` holds every request until one is saved. With `every` 0 each request
    waits for an upload holding its events' in-flight marks (requests waiting together share
    one upload): nothing is sent that the remote state does not know of. A lost state or
    lease, or a store failing twice in a row, stops the run through `stop`."""

    def __init__(
        self,
        uploader: Uploader,
        lease: Lease | None,
        checkpoint_seconds: float,
        renew_seconds: float,
    ) -> None:
        self.uploader = uploader
        self.lease = lease
        self.every = checkpoint_seconds
        self.renew_every = renew_seconds
        self.stop: Callable[[str], None] | None = None
        self.stopped: str | None = None
        # Rows whose in-flight marks a request that was not sent leaves (the events ledger).
        self.not_sent: Callable[[Sequence[Any]], None] | None = None
        self._failures = 0
        self._saved = time.monotonic()  # the start of the last copy saved (or downloaded)
        self._retry_at = 0.0
        self._asked = self._covered = 0
        self._turn: asyncio.Lock | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def attach(self, stop: Callable[[str], None]) -> None:
        self.stop = stop
        if self.stopped is not None:
            stop(self.stopped)

    async def before_send(self, rows: Sequence[Any]) -> bool:
        """Whether the request holding `rows` may go (False: the run is stopping)."""
        try:
            saved = await (self._saved_now() if self.every <= 0 else self._fresh())
        except asyncio.CancelledError:
            self._unsent(rows)
            raise
        if not saved:
            self._unsent(rows)
        return saved

    def _unsent(self, rows: Sequence[Any]) -> None:
        if self.not_sent is not None:
            self.not_sent(rows)

    async def _fresh(self) -> bool:
        """Until the saved copy is recent enough (at once, unless the store lags)."""
        while self.uploader.state is not None and self.overdue():
            if self.stopped is not None:
                return False
            await asyncio.sleep(OVERDUE_POLL_SECONDS)
        return self.stopped is None

    def overdue(self) -> bool:
        return time.monotonic() - self._saved > crash_window(self.every)

    async def _saved_now(self) -> bool:
        """checkpoint_seconds 0: an upload that started after this call (off the loop)."""
        self._asked += 1
        wanted = self._asked
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            while self._covered < wanted:
                if self.stopped is not None:
                    return False
                target = self._asked  # marks committed before now are in the next copy
                upload = functools.partial(self.uploader.upload, final=False)
                if await asyncio.to_thread(self._guarded, upload):
                    self._covered = target
        return self.stopped is None

    def _loop(self) -> None:
        next_renewal = time.monotonic() + self.renew_every
        while self.stopped is None:
            due = max(self._saved + self.every, self._retry_at) if self.every > 0 else next_renewal
            if self._done.wait(max(0.0, min(next_renewal, due) - time.monotonic())):
                return
            if time.monotonic() >= next_renewal:
                if self.lease is not None and not self._guarded(self.lease.renew):
                    return
                next_renewal = time.monotonic() + self.renew_every
                if self.every <= 0:  # the state goes up before requests; the files here
                    self._guarded(lambda: self.uploader.upload(final=False, with_state=False))
            if self.every > 0 and time.monotonic() >= due:
                started = time.monotonic()
                if self._guarded(lambda: self.uploader.upload(final=False)):
                    self._saved = started
                else:  # once more soon; a second failure in a row stops the run
                    self._retry_at = time.monotonic() + min(self.renew_every, RETRY_SECONDS)

    def _guarded(self, step: Callable[[], None]) -> bool:
        try:
            step()
        except (StateLost, LeaseLost) as lost:
            self._halt(f"{_lost_message(lost, self.lease)}; stopping with rows pending")
            return False
        except StoreFault as error:
            self._failures += 1
            log.warning("checkpoint failed (%d in a row): %s", self._failures, error)
            if self._failures >= FAILURES_BEFORE_STOP:
                self._halt(f"cannot upload to object storage: {error}; stopping with rows pending")
            return False
        self._failures = 0
        return True

    def _halt(self, message: str) -> None:
        if self.stopped is None:
            self.stopped = message
            if self.stop is not None:
                self.stop(message)


def _lost_message(lost: Exception, lease: Lease | None) -> str:
    holder = "unknown"
    if lease is not None:
        try:
            holder = lease.holder()
        except Exception:  # the message matters more than who
            holder = "unknown (the lease cannot be read)"
    if isinstance(lost, LeaseLost):
        return f"another runner took over the lease {lost} (it holds: {holder})"
    return f"{lost} (the lease names {holder})"
