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

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from importer.outputs.location import OBJECT_SCHEME, split_url
from importer.remote.lease import Lease, LeaseLost
from importer.remote.store import Conflict, RemoteStore, StoreFault
from importer.state.database import read_only

log = logging.getLogger("importer")

# A checkpoint (or renewal) failing this many times in a row stops the run, so that a
# crash never re-sends more than the README's bound.
FAILURES_BEFORE_STOP = 2


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
    """Renews the lease and uploads at most every `checkpoint_seconds`, from a thread (or
    after every answer when that is 0); a lost state or lease, or a store failing twice in
    a row, stops the run through `stop`."""

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
        self._failures = 0
        self._last = time.monotonic()
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

    def after_answer(self) -> None:
        """checkpoint_seconds 0: the state goes up after each settled answer."""
        if self.every <= 0 and self.stopped is None:
            self._guarded(lambda: self.uploader.upload(final=False))

    def _loop(self) -> None:
        while not self._done.wait(self.renew_every) and self.stopped is None:
            if self.lease is not None and not self._guarded(self.lease.renew):
                return
            due = self.every > 0 and time.monotonic() - self._last >= self.every
            if due and self._guarded(lambda: self.uploader.upload(final=False)):
                self._last = time.monotonic()
            elif self.every <= 0:  # the state goes up after answers; the files here
                self._guarded(lambda: self.uploader.upload(final=False, with_state=False))

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
