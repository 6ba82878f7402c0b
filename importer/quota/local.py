"""A shared ledger for several processes on one machine: a JSON file under an exclusive lock.

The clock is the machine's monotonic clock (CLOCK_MONOTONIC is one clock for every process
on a Linux host, and never jumps); the file records the boot it belongs to, since that clock
restarts at boot. Every decision is taken under `flock` on a lock file beside the ledger,
and the ledger is replaced atomically (write, rename), so a process killed at any point leaves
either the old ledger or the new one, never half of one (no fsync: after a power loss the
boot differs and every old grant is over anyway). `flock` is released by the kernel when
its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from importer.outputs.atomic import write_atomically
from importer.quota.base import (
    POLL_SECONDS,
    TICKET_STALE_SECONDS,
    Attempt,
    QuotaTerms,
    QuotaUnavailable,
    mismatch,
)

# Per user, private (0700, owned by the user, checked): a predictable shared path under /tmp
# that someone else created first is refused, never used.
DEFAULT_DIRECTORY = Path(tempfile.gettempdir()) / f"moe-import-quota-{os.getuid()}"


def ensure_private_directory(path: Path) -> None:
    """Create `path` 0700, or accept it only as a real directory of ours that no one else
    may write: QuotaUnavailable naming what is wrong otherwise."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    info = path.lstat()
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a link or a file)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & 0o077:
        problem = f"is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise QuotaUnavailable(
            f"the local quota ledger's directory {path} {problem}: refusing to use it. "
            "Remove it, or set rate_limit.shared.path to a directory of your own"
        )


State = dict[str, Any]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def empty_state(terms: QuotaTerms) -> State:
    return {
        "boot": _boot_id(),
        "limit": terms.limit_label,
        "tat": 0.0,
        "paused_until": 0.0,
        "grants": {},  # grant id -> [n, expires at]
        "queue": {},  # ticket -> [first seen, last seen]
    }


def decide(
    state: State, terms: QuotaTerms, now: float, ticket: str, n: int, grant_id: str
) -> Attempt:
    """One atomic step of the shared ledger (the Redis script does the same on its server)."""
    if state["limit"] != terms.limit_label:
        raise mismatch(state["limit"], terms.limit_label)
    grants: dict[str, list[float]] = state["grants"]
    for gid in [g for g, (_, expires) in grants.items() if expires <= now]:
        del grants[gid]
    queue: dict[str, list[float]] = state["queue"]
    _forget_stale_tickets(queue, now)
    first_seen = queue[ticket][0] if ticket in queue else now
    queue[ticket] = [first_seen, now]
    head = min(queue, key=lambda t: (queue[t][0], t))
    if head != ticket:
        return Attempt(None, POLL_SECONDS)
    wait = max(0.0, state["paused_until"] - now)
    tat = max(state["tat"], now)
    wait = max(wait, tat - terms.pacer_tolerance - now)
    occupied = sum(int(g[0]) for g in grants.values())
    if occupied + n > terms.updates:
        wait = max(wait, _room_at(grants, occupied + n - terms.updates) - now)
    if wait > 0:
        return Attempt(None, min(wait, POLL_SECONDS))
    grants[grant_id] = [n, now + terms.lease_seconds]
    state["tat"] = tat + n * terms.pacer_interval
    del queue[ticket]
    return Attempt(grant_id)


def _forget_stale_tickets(queue: dict[str, list[float]], now: float) -> None:
    """Tickets not seen for TICKET_STALE_SECONDS: their process died waiting (killed)."""
    for stale in [t for t, (_, seen) in queue.items() if seen < now - TICKET_STALE_SECONDS]:
        del queue[stale]


def _room_at(grants: dict[str, list[float]], excess: int) -> float:
    """When enough grants have expired to free `excess` slots (leases count as expiries)."""
    freed = 0
    for n, expires in sorted(grants.values(), key=lambda g: g[1]):
        freed += int(n)
        if freed >= excess:
            return expires
    return float("inf")


class LocalLedger:
    """A ledger file shared by the processes of one machine, one file per key."""

    def __init__(
        self,
        terms: QuotaTerms,
        key: str,
        directory: Path | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terms = terms
        self.timeout = timeout
        self.directory = directory or DEFAULT_DIRECTORY
        self._private = directory is None  # the default: checked to be the user's own
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        self.path = self.directory / f"{name}.json"
        self._lock_path = self.directory / f"{name}.lock"
        # Every sharer must read the same clock (a test gives its event loop's virtual one).
        self.clock = clock

    def describe(self) -> str:
        return f"the local ledger {self.path}"

    async def try_acquire(self, ticket: str, n: int, grant_id: str) -> Attempt:
        with self._locked() as state:
            return decide(state, self.terms, self.clock(), ticket, n, grant_id)

    async def release(self, grant_id: str, hold: float) -> None:
        with self._locked() as state:
            n = state["grants"].get(grant_id, [0])[0]
            expires = self.clock() + hold + self.terms.period_seconds
            state["grants"][grant_id] = [n, expires]

    async def forget(self, grant_id: str, n: int) -> None:
        with self._locked() as state:
            state["grants"].pop(grant_id, None)

    async def pause(self, seconds: float) -> None:
        with self._locked() as state:
            state["paused_until"] = max(state["paused_until"], self.clock() + seconds)

    async def leave(self, ticket: str) -> None:
        with self._locked() as state:
            state["queue"].pop(ticket, None)

    async def occupied(self) -> int:
        now = self.clock()
        with self._locked() as state:
            return sum(int(n) for n, expires in state["grants"].values() if expires > now)

    async def aclose(self) -> None:
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[State]:
        """The ledger, read and written back under the lock; a fault stops the run."""
        try:
            if self._private:
                ensure_private_directory(self.directory)
                self._private = False  # checked once, then used
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
            # As the umask allows: processes of several users may share one directory.
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise QuotaUnavailable(f"cannot open {self._lock_path}: {error.strerror}") from None
        try:
            self._lock(fd)
            state = self._read()
            yield state
            self._write(state)
        finally:
            os.close(fd)  # also releases the lock

    def _lock(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise QuotaUnavailable(
                        f"{self.describe()} stayed locked for {self.timeout:g} s"
                    ) from None
                time.sleep(0.001)  # the holder's step takes well under a millisecond

    def _read(self) -> State:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty_state(self.terms)
        except (OSError, ValueError) as error:
            # Starting afresh could forget grants still in flight: stop instead.
            raise QuotaUnavailable(f"cannot read {self.path}: {error}") from None
        if state.get("boot") != _boot_id():
            return empty_state(self.terms)  # the clock restarted: every old grant is over
        now = self.clock()
        state["grants"] = {g: v for g, v in state["grants"].items() if v[1] > now}
        # As the Redis script does: a ticket a killed process left must not keep its limit.
        _forget_stale_tickets(state["queue"], now)
        if not state["grants"] and not state["queue"]:
            state["limit"] = self.terms.limit_label  # an idle ledger takes the caller's limit
        return state  # type: ignore[no-any-return]

    def _write(self, state: State) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            # Under the umask, as the lock file is; no fsync (see the module's docstring).
            data = json.dumps(state).encode("utf-8")
            write_atomically(self.path, data, mode=0o666, tmp=tmp, exact_mode=False, durable=False)
        except OSError as error:
            raise QuotaUnavailable(f"cannot write {self.path}: {error.strerror}") from None
