"""The lease: an object beside the remote state saying which run holds the job.

Created only where there is none (`If-None-Match: *`), renewed and released only over the
version we wrote (`If-Match`), so of two runners started together exactly one holds it; the
other exits (as a second run on one machine does at the run lock) without touching the
state. A holder that dies stops renewing: its lease expires `lease_seconds` after the last
renewal and the next runner takes it over, again only over the version it read. Expiry is
read on the runners' clocks; the conditional writes of the state, not the lease, are what
keep two runners from overwriting each other when clocks or pauses fool it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from importer.remote.store import Conflict, RemoteStore
from importer.state.database import StateError

log = logging.getLogger("importer")

LEASE_SUFFIX = ".lease"
RENEW_AT_MOST_SECONDS = 5.0  # the holder renews at least this often (a PUT of 150 bytes)
EXPIRES_AFTER_RENEWALS = 3  # a lease not renewed this many times over has expired
LEASE_AT_LEAST_SECONDS = 5.0


class LeaseHeld(StateError):
    """Another runner holds the job (exit 2, as the run lock): nothing was touched."""


class LeaseLost(Exception):
    """Another runner took our lease over (we were taken for dead)."""


def renew_seconds(checkpoint_seconds: float) -> float:
    """How often the holder renews: at each checkpoint, and at least every 5 s."""
    if checkpoint_seconds <= 0:
        return RENEW_AT_MOST_SECONDS
    return max(1.0, min(checkpoint_seconds, RENEW_AT_MOST_SECONDS))


def lease_seconds(checkpoint_seconds: float) -> float:
    """How long a lease lasts after its last renewal: three renewals, at least 5 s."""
    return max(LEASE_AT_LEAST_SECONDS, EXPIRES_AFTER_RENEWALS * renew_seconds(checkpoint_seconds))


def describe(holder: dict[str, Any]) -> str:
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder.get("expires_at", 0))))
    who = f"run {holder.get('run_id', '?')} on {holder.get('host', '?')}"
    return f"{who} (pid {holder.get('pid', '?')}), its lease renewed until {until}"


class Lease:
    """The lease of one remote state (`<state URL>.lease`) for one run."""

    def __init__(self, store: RemoteStore, state_url: str, run_id: str, seconds: float) -> None:
        self.store = store
        self.url = state_url + LEASE_SUFFIX
        self.state_url = state_url
        self.run_id = run_id
        self.seconds = seconds
        self.etag: str | None = None

    def _body(self, *, released: bool = False) -> bytes:
        now = time.time()
        holder = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires_at": now if released else now + self.seconds,
            "released": released,
        }
        return json.dumps(holder).encode()

    def acquire(self) -> None:
        """Takes the lease, or raises LeaseHeld naming the run that holds it."""
        current = self.store.get(self.url)
        try:
            if current is None:
                self.etag = self.store.put(self.url, self._body(), if_none_match=True)
                return
            holder = _holder(current.body)
            if not holder.get("released") and float(holder.get("expires_at", 0)) > time.time():
                raise self._held(holder)
            if not holder.get("released"):
                log.warning("taking over the expired lease of %s", describe(holder))
            self.etag = self.store.put(self.url, self._body(), if_match=current.etag)
        except Conflict:
            latest = self.store.get(self.url)
            raise self._held(_holder(latest.body) if latest else {}) from None

    def _held(self, holder: dict[str, Any]) -> LeaseHeld:
        return LeaseHeld(
            f"another run of this job holds {self.url} ({describe(holder)}); its state"
            f" {self.state_url} was not touched: wait for it to finish or stop it"
        )

    def renew(self) -> None:
        """Extends the lease; LeaseLost if another runner took it over."""
        try:
            self.etag = self.store.put(self.url, self._body(), if_match=self.etag)
        except Conflict:
            raise LeaseLost(self.url) from None

    def release(self) -> None:
        """Marks the lease released (over our version only); never raises."""
        if self.etag is None:
            return
        try:
            self.store.put(self.url, self._body(released=True), if_match=self.etag)
        except Exception as error:  # it expires anyway: a release is a courtesy
            log.warning("could not release the lease %s: %s", self.url, error)
        self.etag = None

    def holder(self) -> str:
        latest = self.store.get(self.url)
        return describe(_holder(latest.body)) if latest else "a run whose lease is gone"


def _holder(body: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(body)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
