"""Issue 24, the rest: bounded answers, the route's plain-HTTP check, a trickling webhook,
a state file that cannot grow, the ledger's private directory, a headerless export, a Redis
URL's password, notifying a job that never loaded, and an S3 endpoint that never answers."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from importer.config import ConfigError, SourceFormat, StorageOptions
from importer.outputs.load_notify import notify_load_failure
from importer.outputs.notify import notify
from importer.quota.base import QuotaTerms, QuotaUnavailable
from importer.quota.local import LocalLedger
from importer.quota.redis import redacted
from importer.run.transport import MAX_ANSWER_BYTES, AiohttpTransport, check_plain_http
from importer.sources import objectstore
from importer.sources.datafile import SourceError
from tests.support import ROOT, USERS_MAPPING, job_dict, run_cli, users_csv, users_job, write_job
from tests.test_ops_hooks import webhook

# ---------------------------------------------------------------- answers read within a cap


@contextmanager
def huge_answers() -> Iterator[str]:
    """/plain: a 20 MB 200 body; /bomb: 1 MB of gzip that inflates to 1 GB."""
    bomb = gzip.compress(b"\0" * (1 << 30), compresslevel=9)

    async def plain(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"x" * (1 << 20))
        return response

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/plain", plain)
    app.router.add_post("/bomb", gz)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.mark.slow
def test_answer_bodies_and_their_decompression_are_capped() -> None:
    async def fetch(url: str) -> tuple[int, int]:
        transport = AiohttpTransport(timeout_seconds=20, concurrency=1)
        try:
            status, _, payload = await transport.post(url, b"{}", {})
        finally:
            await transport.close()
        return status, len(payload)

    with huge_answers() as base:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert asyncio.run(fetch(f"{base}/plain")) == (200, MAX_ANSWER_BYTES)
        assert asyncio.run(fetch(f"{base}/bomb")) == (200, MAX_ANSWER_BYTES)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"{grown_mb:.0f} MB more for two capped answers"


# ---------------------------------------------------------------- the whole route


def test_plain_http_through_a_remote_proxy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "http://127.0.0.1:8080/v1/transition/W"
    check_plain_http(url, False)  # loopback, no proxy: nothing crosses the network
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.invalid:3128")
    with pytest.raises(ConfigError, match=r"through the proxy proxy\.example\.invalid"):
        check_plain_http(url, False)
    check_plain_http(url, True)  # --allow-insecure-http
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    check_plain_http(url, False)  # not proxied: loopback again
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY")
    check_plain_http(url, False)  # a loopback proxy to a loopback API


@pytest.mark.subprocess
def test_the_cli_refuses_a_loopback_url_routed_via_a_remote_proxy(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 3)
    job = users_job(tmp_path, "http://127.0.0.1:9", source)
    env = {"HTTP_PROXY": "http://proxy.example.invalid:3128", "NO_PROXY": "", "no_proxy": ""}
    result = run_cli("run", str(job), "--no-progress", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "proxy.example.invalid" in result.stderr and "--allow-insecure-http" in result.stderr


# ---------------------------------------------------------------- a trickling webhook


@contextmanager
def trickling_server(every: float) -> Iterator[str]:
    """Answers every connection one byte at a time, `every` seconds apart, forever."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                if stop.wait(every):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(2)
        server.close()


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_a_trickling_webhook_cannot_hang_the_run() -> None:
    with trickling_server(every=0.5) as url:
        started = time.monotonic()
        answered = notify(url, {"status": "failure"}, timeout=2.0)
        took = time.monotonic() - started
    assert answered is False and took < 4, took


# ---------------------------------------------------------------- our own writes


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))


@pytest.mark.subprocess
def test_a_state_file_that_cannot_grow_is_an_io_fault(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 50)
    job = users_job(tmp_path, "http://127.0.0.1:9", source)
    (tmp_path / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "importer", "run", str(job), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 3, result.stderr
    assert "state file" in result.stderr and "not a usable" not in result.stderr
    assert "--fresh" not in result.stderr


def _terms() -> QuotaTerms:
    return QuotaTerms(10, 1.0, lease_seconds=5, pacer_interval=0.0, pacer_tolerance=1.0)


def test_the_ledgers_default_directory_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importer.quota.local as local

    fresh = tmp_path / "mine"
    monkeypatch.setattr(local, "DEFAULT_DIRECTORY", fresh)
    asyncio.run(LocalLedger(_terms(), "k").occupied())
    assert fresh.stat().st_mode & 0o777 == 0o700

    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)  # as someone else would leave a shared /tmp path
    monkeypatch.setattr(local, "DEFAULT_DIRECTORY", planted)
    with pytest.raises(QuotaUnavailable, match="open to other users"):
        asyncio.run(LocalLedger(_terms(), "k").occupied())
    assert not list(planted.iterdir())


# ---------------------------------------------------------------- personal data, secrets


@pytest.mark.subprocess
def test_a_headerless_export_never_shows_its_first_row(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("c001,Ada Lovelace,ada@example.com,+447700900123\nc002,Bob,b@x.io,1\n")
    mapping = {"customer_id": "user_id", "attributes": {"email": "email"}}
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping))
    result = run_cli("run", str(job), "--no-progress", "--log-format", "json", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "does not look like a header" in result.stderr
    for value in ("Ada", "ada@example.com", "447700900123", "c001"):
        assert value not in result.stderr + result.stdout


@pytest.mark.subprocess
def test_a_header_that_looks_like_one_is_still_shown(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("id,first_name,email_address\nc001,Ada,ada@example.com\n")
    mapping = {"customer_id": "user_id"}
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping))
    result = run_cli("validate", str(job), timeout=60)
    assert result.returncode == 2 and "'first_name'" in result.stderr, result.stderr


@pytest.mark.parametrize("password", ["p/ss#w?rd-42", "a?b#c/d@e-42", "simple-secret-42"])
def test_a_redis_url_password_is_hidden_whatever_it_holds(password: str) -> None:
    shown = redacted(f"redis://user:{password}@cache.internal:6379/0")
    assert shown == "redis://user:***@cache.internal:6379/0"
    for piece in password.replace("/", " ").replace("#", " ").replace("?", " ").split():
        assert piece not in shown.replace("cache.internal", "")


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_a_job_that_does_not_load_still_notifies(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 3)
    with webhook() as hook:
        job = job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING)
        job["output"]["notify"] = hook.url
        job["api"]["api_key"] = "${MISSING_KEY_VARIABLE}"
        job["surprise"] = "sensitive-value-123"
        path = write_job(tmp_path, job, "nightly.yaml")
        error = ConfigError("surprise: unknown key (value sensitive-value-123)")
        assert notify_load_failure(path, error) is True
    [post] = hook.posts
    assert post["exit_code"] == 2 and post["job"] == "nightly" and post["error"] == "ConfigError"
    assert "sensitive-value-123" not in json.dumps(post)


@pytest.mark.subprocess
def test_the_cli_notifies_a_job_that_does_not_load(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 3)
    with webhook() as hook:
        job = job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING)
        job["output"]["notify"] = {"url": "${HOOK_URL}", "on": ["failure"]}
        job["api"]["api_key"] = "${MISSING_KEY_VARIABLE}"
        path = write_job(tmp_path, job, "nightly.yaml")
        result = run_cli("run", str(path), env={"HOOK_URL": hook.url}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert [(post["job"], post["exit_code"], post["error"]) for post in hook.posts] == [
        ("nightly", 2, "ConfigError")
    ]


# ---------------------------------------------------------------- an S3 endpoint that hangs


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts every connection and never answers a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()


@pytest.mark.slow  # the deadline is 2 s here
@pytest.mark.parametrize("path", ["s3://exports/users.csv", "s3://exports/day=1/", "s3://e/*.csv"])
def test_an_s3_endpoint_that_never_answers_ends_the_listing_in_time(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(objectstore, "LISTING_DEADLINE_SECONDS", 2.0)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with silent_endpoint() as endpoint:
        options = StorageOptions(endpoint_url=endpoint, region="us-east-1", anonymous=True)
        store = objectstore.ObjectStore(options)
        started = time.monotonic()
        with pytest.raises(SourceError) as stopped:
            store.discover(path, SourceFormat.CSV)
        elapsed = time.monotonic() - started
    assert elapsed < 6, elapsed
    assert str(stopped.value).startswith(f"{path}: object storage did not answer within 2 s")
