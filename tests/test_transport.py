"""transport: the aiohttp implementation on loopback (no redirects, proxies, TLS), the guard
against plain http, and the in-memory fake."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from importer.config import ConfigError
from importer.run.transport import (
    AiohttpTransport,
    CertificateFailure,
    FakeTransport,
    NoAnswer,
    Request,
    check_plain_http,
)
from tests.support import self_signed_certificate


def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    scenario: Callable[[str], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", scheme="https" if ssl_context else "http")
        await server.start_server(ssl=ssl_context)
        try:
            await scenario(str(server.make_url("/")).rstrip("/"))
        finally:
            await server.close()

    asyncio.run(main())


def test_a_redirect_is_returned_not_followed() -> None:
    followed: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/target":
            followed.append(request.method)
            return web.Response(text="ok")
        return web.Response(status=302, headers={"Location": "/target"})

    async def scenario(url: str) -> None:
        transport = AiohttpTransport(timeout_seconds=2, concurrency=2)
        try:
            status, headers, _ = await transport.post(url + "/v1/x", b"{}", {})
        finally:
            await transport.close()
        assert status == 302 and headers["Location"] == "/target"

    serve(handler, scenario)
    assert followed == []


def test_no_answer_is_described_in_words() -> None:
    async def scenario() -> None:
        transport = AiohttpTransport(timeout_seconds=2, concurrency=1)
        try:
            with pytest.raises(NoAnswer) as refused:
                await transport.post("http://127.0.0.1:9/v1/x", b"{}", {})
        finally:
            await transport.close()
        assert refused.value.reason == "connection failed (connection refused)"

    asyncio.run(scenario())


def test_a_timeout_is_no_answer() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.Response(text="late")

    async def scenario(url: str) -> None:
        transport = AiohttpTransport(timeout_seconds=0.2, concurrency=1)
        try:
            with pytest.raises(NoAnswer) as late:
                await transport.post(url + "/v1/x", b"{}", {})
        finally:
            await transport.close()
        assert late.value.reason == "timeout (0.2 s)"

    serve(slow, scenario)


def test_the_proxy_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        transport = AiohttpTransport(timeout_seconds=2, concurrency=1)
        try:
            status, _, body = await transport.post("http://api.example.invalid/v1/x", b"{}", {})
        finally:
            await transport.close()
            server.close()
        assert (status, body) == (200, b"ok")

    asyncio.run(scenario())
    assert seen == ["POST http://api.example.invalid/v1/x HTTP/1.1"]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


@pytest.mark.subprocess
def test_an_unknown_certificate_names_the_host_and_the_ca_options(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def scenario(url: str) -> None:
        transport = AiohttpTransport(timeout_seconds=2, concurrency=1)
        try:
            with pytest.raises(CertificateFailure) as failed:
                await transport.post(url + "/v1/x", b"{}", {})
        finally:
            await transport.close()
        message = str(failed.value)
        assert message.startswith("certificate verification failed for 127.0.0.1")
        assert "api.ca_bundle" in message and "SSL_CERT_FILE" in message
        assert "Error(" not in message  # no raw repr

    serve(_ok, scenario, _server_context(certificate))


@pytest.mark.subprocess
@pytest.mark.parametrize("how", ["ca_bundle", "SSL_CERT_FILE"])
def test_a_ca_file_is_trusted(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "SSL_CERT_FILE":
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    ca_bundle = certificate[0] if how == "ca_bundle" else None

    async def scenario(url: str) -> None:
        transport = AiohttpTransport(timeout_seconds=2, concurrency=1, ca_bundle=ca_bundle)
        try:
            status, _, body = await transport.post(url + "/v1/x", b"{}", {})
        finally:
            await transport.close()
        assert (status, body) == (200, b"ok")

    serve(_ok, scenario, _server_context(certificate))


@pytest.mark.parametrize(
    "url",
    [
        "https://api-01.moengage.com",
        "http://127.0.0.1:8377",
        "http://localhost:8377",
        "http://[::1]:8377",
        "http://127.1.2.3",
    ],
)
def test_plain_http_is_allowed_on_loopback_and_https_anywhere(url: str) -> None:
    check_plain_http(url, allow_insecure_http=False)


@pytest.mark.parametrize("url", ["http://api-01.moengage.com", "http://10.0.0.5:8080"])
def test_plain_http_to_another_host_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigError, match="--allow-insecure-http"):
        check_plain_http(url, allow_insecure_http=False)
    check_plain_http(url, allow_insecure_http=True)


def test_the_fake_takes_a_function_sync_or_async() -> None:
    def sync(request: Request) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, request.body

    async def later(request: Request) -> tuple[int, dict[str, str], bytes]:
        await asyncio.sleep(0)
        raise NoAnswer("connection reset")

    async def scenario() -> None:
        fake = FakeTransport(sync)
        assert await fake.post("http://x/y", b"body", {"A": "b"}) == (200, {}, b"body")
        assert fake.requests == [Request("http://x/y", b"body", {"A": "b"})]
        with pytest.raises(NoAnswer):
            await FakeTransport(later).post("http://x/y", b"", {})

    asyncio.run(scenario())


def test_a_ca_file_that_is_missing_or_not_pem_is_refused(tmp_path: Path) -> None:
    from importer.config import ApiConfig

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for path in (tmp_path / "missing.pem", junk):
        with pytest.raises(ValueError, match="ca_bundle"):
            ApiConfig(workspace_id="W", api_key="k", ca_bundle=path)


def test_a_bad_ssl_cert_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))

    async def scenario() -> None:
        with pytest.raises(ConfigError, match="SSL_CERT_FILE"):
            AiohttpTransport(timeout_seconds=1, concurrency=1)

    asyncio.run(scenario())
