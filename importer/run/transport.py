"""The network seam: `Transport.post` sends one request; aiohttp for real, a function for tests.

Delivery speaks only to a `Transport`: an answer is `(status, headers, body)`, whatever the
status (a 3xx too: redirects are never followed), and a request that got no answer raises
`NoAnswer` (a timeout, a refused or broken connection). A TLS failure raises
`CertificateFailure`: no retry mends it, so it stops the run with a message naming the CA
options; a request that cannot be made at all raises `RequestFailure`. `FakeTransport`
puts a function from request to answer behind the same seam, so retry, split, bisection,
429 and outage rules are tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp

from importer import moengage
from importer.config import ApiConfig, ConfigError, DeliveryConfig
from importer.config.tls import ssl_context
from importer.run import batching

Answer = tuple[int, Mapping[str, str], bytes]

# An answer body is read up to this many bytes (decompressed): MoEngage's answers are a few
# hundred bytes; a peer sending gigabytes costs no more memory than this per request.
MAX_ANSWER_BYTES = 64 * 1024


class NoAnswer(Exception):
    """The request got no HTTP answer; it may or may not have reached the server."""

    def __init__(self, reason: str, *, maybe_sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # False when no connection was made: the request carried nothing (lost_answers)
        self.maybe_sent = maybe_sent


class CertificateFailure(Exception):
    """The server's certificate could not be verified: retrying cannot help."""


class RequestFailure(Exception):
    """The request could not be made at all (a URL the client cannot use): no retry helps."""


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One POST; its answer, or NoAnswer / CertificateFailure."""
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- plain HTTP guard


def host_and_port(url: str) -> str:
    """`host:port` of a URL, for messages: never the credentials a URL may carry."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname or ''}:{port}"


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plain_http(url: str, allow_insecure_http: bool) -> None:
    """Basic auth over http:// to another machine sends the key in clear: refuse unless
    allowed. The whole route is judged: a loopback URL sent through a proxy
    (HTTP_PROXY, unless NO_PROXY names the host) crosses the network to that proxy."""
    parts = urlsplit(url)
    if parts.scheme != "http" or allow_insecure_http:
        return
    host = parts.hostname or ""
    proxy = proxy_for(url)
    proxy_host = urlsplit(proxy).hostname or "" if proxy else None
    if proxy_host is None and is_loopback_host(host):
        return
    if proxy_host is not None and is_loopback_host(host) and is_loopback_host(proxy_host):
        return
    via = f" through the proxy {proxy_host} (HTTP_PROXY)" if proxy_host is not None else ""
    raise ConfigError(
        f"api.base_url {url} is plain http:// to {host}{via}: the API key would cross the "
        "network in clear. Use https://, or pass --allow-insecure-http if this is really "
        "meant (a trusted proxy on a private network)"
    )


def proxy_for(url: str) -> str | None:
    """The proxy aiohttp (trust_env) would send `url` through, as the environment says."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy:
        return None
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(f"{host}:{parts.port}" if parts.port else host):
        return None
    return proxy


# ---------------------------------------------------------------- aiohttp


class AiohttpTransport:
    """One aiohttp session for the run. Redirects are never followed; the proxy variables
    (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) are honoured. Create and use inside the event loop."""

    def __init__(
        self, *, timeout_seconds: float, concurrency: int, ca_bundle: Path | None = None
    ) -> None:
        self._timeout_seconds = timeout_seconds
        try:
            context = ssl_context(ca_bundle)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self._ca_bundle = ca_bundle
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, ssl=context),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            trust_env=True,
            auto_decompress=False,  # decoded here, within MAX_ANSWER_BYTES (read_capped)
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                payload = await read_capped(response, MAX_ANSWER_BYTES)
                return response.status, response.headers, payload
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            raise CertificateFailure(self._certificate_message(url, exc)) from None
        except (
            TimeoutError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            ConnectionResetError,
        ) as exc:
            never_sent = isinstance(exc, aiohttp.ClientConnectorError)
            reason = describe_failure(exc, self._timeout_seconds)
            raise NoAnswer(reason, maybe_sent=not never_sent) from None
        except aiohttp.ClientError as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise RequestFailure(f"the request to {url} could not be made ({why})") from None

    def _certificate_message(self, url: str, exc: BaseException) -> str:
        host = urlsplit(url).hostname or url
        detail = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
        reason = getattr(detail, "verify_message", None) or getattr(detail, "reason", None)
        because = f" ({reason})" if isinstance(reason, str) and reason else ""
        using = (
            f"the CA file {self._ca_bundle}"
            if self._ca_bundle
            else "the system's CA certificates"
            + (" and SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "")
        )
        return (
            f"certificate verification failed for {host}{because}, using {using}. "
            "If a proxy or private CA signs it, set api.ca_bundle to that CA file "
            "(or SSL_CERT_FILE)"
        )

    async def close(self) -> None:
        await self._session.close()


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The answer's body, decompressed, cut to `cap` bytes: never more held in memory. A
    body past the cap is cut (the answer is judged on what was read; a success body is a
    few dozen bytes)."""
    pieces: list[bytes] = []
    held = 0
    while held <= cap:  # read() gives what has arrived, maybe less than asked
        piece = await response.content.read(cap + 1 - held)
        if not piece:
            break
        pieces.append(piece)
        held += len(piece)
    raw = b"".join(pieces)
    encoding = response.headers.get(aiohttp.hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        # wbits 47: gzip or zlib header, detected; a raw deflate stream is tried after.
        try:
            return zlib.decompressobj(47).decompress(raw, cap)
        except zlib.error:
            try:
                return zlib.decompressobj(-15).decompress(raw, cap)
            except zlib.error:
                return b""
    return raw[:cap]


def describe_failure(exc: BaseException, timeout_seconds: float) -> str:
    """Why a request got no answer, in a few words (no repr of library internals)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return f"timeout ({timeout_seconds:g} s)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "cannot resolve the host name"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = getattr(exc.os_error, "errno", None)
        why = os.strerror(errno).lower() if errno else "cannot connect"
        return f"connection failed ({why})"
    if isinstance(exc, ConnectionResetError) or "reset" in str(exc).lower():
        return "connection reset"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "answer cut short"
    return f"connection error ({type(exc).__name__})"


# ---------------------------------------------------------------- in memory


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]


Respond = Callable[[Request], Awaitable[Answer] | Answer]


@dataclass
class FakeTransport:
    """A function from request to answer (or raising NoAnswer), behind the Transport seam.

    Records every request it was given, in order, with the loop time it started.
    """

    respond: Respond
    requests: list[Request] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        request = Request(url, body, dict(headers))
        self.requests.append(request)
        self.started_at.append(asyncio.get_running_loop().time())
        answer = self.respond(request)
        if isinstance(answer, Awaitable):
            return await answer
        return answer

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def open_transport(api: ApiConfig, delivery: DeliveryConfig) -> AsyncIterator[Transport]:
    """The run's aiohttp transport, closed on exit. Call inside the loop."""
    transport = AiohttpTransport(
        timeout_seconds=delivery.timeout_seconds,
        concurrency=delivery.concurrency,
        ca_bundle=api.ca_bundle,
    )
    try:
        yield transport
    finally:
        await transport.close()


def request_url(api: ApiConfig, events: bool = False) -> str:
    if api.endpoint == batching.BULK:
        path = moengage.bulk_path(api.workspace_id)
    elif events:
        path = moengage.event_path(api.workspace_id)
    else:
        path = moengage.customer_path(api.workspace_id)
    return api.resolved_base_url() + path


def with_project_code(url: str, project_code: str | None) -> str:
    if not project_code:
        return url
    return f"{url}?{urlencode({'project_code': project_code})}"
