"""Every call to the outputs' object store has a wall-clock deadline: a server that accepts
the connection and trickles its answer a byte at a time (each read of the socket is quick,
so botocore's own read timeout never fires) must not hold the run past it.

The server is a thread on loopback; the store is asked with a short deadline."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from importer.config import OutputStorage
from importer.remote.lease import Lease
from importer.remote.store import RemoteStore, StoreFault
from tests.support import S3_ENV

DEADLINE = 0.6
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 64\r\n\r\n" + (
    b"<" * 64
)


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Reads the request, then answers one byte every 0.05 s (about 7 s for the whole)."""

    stop = threading.Event()

    def _trickle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        for byte in ANSWER:
            if self.stop.wait(0.05):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _trickle

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def trickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteStore]:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    stop = threading.Event()
    handler = type("Handler", (_Trickle,), {"stop": stop})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield RemoteStore(
            OutputStorage(endpoint_url=endpoint, region="us-east-1"), timeout=DEADLINE
        )
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


URL = "s3://nightly/jobs/users/state.db"


def _lease(store: RemoteStore) -> Lease:
    lease = Lease(store, URL, "run-1", 15)
    lease.etag = '"ours"'
    return lease


CALLS: dict[str, Callable[[RemoteStore], object]] = {
    "get": lambda store: store.get(URL),
    "put": lambda store: store.put(URL, b"x" * 1000),
    "conditional put": lambda store: store.put(URL, b"x", if_match='"v1"'),
    "delete": lambda store: store.delete(URL),
    "probe": lambda store: store.honours_conditions(URL),
    "lease taken": lambda store: Lease(store, URL, "run-1", 15).acquire(),
    "lease renewed": lambda store: _lease(store).renew(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_trickling_store_fails_the_call_at_its_deadline(
    trickling: RemoteStore, call: str
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreFault, match=r"did not answer within 0\.6 s"):
        CALLS[call](trickling)
    took = time.monotonic() - started
    # One deadline (the body's 1 KB adds a millisecond), never the trickle's 7 s; the margin
    # is for a loaded machine (-n 6 on 2 cores), still far from the trickle's end.
    assert DEADLINE <= took < DEADLINE + 3.0, took


def test_a_large_body_gets_time_to_move() -> None:
    store = RemoteStore(OutputStorage(endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    assert store.deadline(0) == 30.0
    assert store.deadline(100 << 20) == 130.0  # 100 MiB at 1 MiB/s at the slowest
