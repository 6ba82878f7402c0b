"""Before the input is read: do the credentials work and does the API answer at all?

A Get User call for an id no workspace holds is cheap, authenticated and changes nothing.
(MoEngage documents a Test Connection API too, but not its body for Data API keys, and it
does not exercise the data path the run uses.) 401, 403 and 409 stop the run before a row is
read; a host that refuses connections or does not resolve stops it within a minute, naming
host and port; any other answer means the credentials were taken.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import urlsplit

import orjson

from importer import moengage
from importer.config import JobConfig
from importer.errors import RunAborted
from importer.quota.window import WindowLimiter
from importer.run.transport import CertificateFailure, NoAnswer, RequestFailure, Transport
from importer.run.users_api import CallRefused, UsersApiClient

# How long an unreachable API is tried before the run stops (a brief blip is allowed for).
UNREACHABLE_GIVE_UP_SECONDS = 45.0
RETRY_EVERY_SECONDS = 5.0


class Unreachable(RunAborted):
    """No answer at all from the API's host: exit 3, nothing read or sent."""


def probe_id() -> str:
    return f"moe-import-credential-check-{secrets.token_hex(8)}"


async def check_before_reading(job: JobConfig, transport: Transport) -> None:
    """The check a real run makes on its own transport before it reads a row: CallRefused
    or Unreachable (both RunAborted), given up on within UNREACHABLE_GIVE_UP_SECONDS (or
    the job's delivery.max_outage_seconds, if shorter)."""
    client = UsersApiClient(
        job.api,
        transport,
        limiter=WindowLimiter(moengage.DEFAULT_EXPORT_USERS, 60.0),
        in_transit_seconds=job.delivery.timeout_seconds,
    )
    give_up = min(UNREACHABLE_GIVE_UP_SECONDS, job.delivery.max_outage_seconds)
    try:
        await check_credentials(job, client, transport, give_up_seconds=give_up)
    except (CertificateFailure, RequestFailure) as failure:
        raise RunAborted(f"{failure}; nothing was read or sent") from None


async def check_credentials(
    job: JobConfig,
    client: UsersApiClient,
    transport: Transport,
    *,
    give_up_seconds: float | None = None,
) -> None:
    """Raise CallRefused (bad credentials) or Unreachable; return when the API answered."""
    url = client.url(moengage.EXPORT_PATH)
    body = orjson.dumps({"identity_type": "customer_id", "identity_values": [probe_id()]})
    give_up = UNREACHABLE_GIVE_UP_SECONDS if give_up_seconds is None else give_up_seconds
    deadline = time.monotonic() + give_up
    while True:
        try:
            status, _, _ = await transport.post(url, body, client.headers)
        except NoAnswer as exc:
            if exc.reason.startswith("timeout"):
                return  # the host took the connection: slow, not unreachable (delivery judges)
            if time.monotonic() + RETRY_EVERY_SECONDS > deadline:
                raise Unreachable(_unreachable(job, str(exc), give_up)) from None
            await asyncio.sleep(RETRY_EVERY_SECONDS)
            continue
        if status in moengage.FATAL_STATUSES:
            meaning = moengage.STATUS_MEANINGS.get(status, "refused")
            raise CallRefused(
                f"the API refused the credentials before anything was read ({status}: {meaning})"
            )
        return


def _unreachable(job: JobConfig, why: str, waited: float) -> str:
    parts = urlsplit(job.api.resolved_base_url())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (
        f"cannot reach the API at {parts.hostname}:{port} ({why}) for "
        f"{waited:g} s; nothing was read or sent. Check api.base_url / "
        "api.data_center and the network, then rerun"
    )


async def checked_before_reading(
    job: JobConfig, transport: Transport, stopping: asyncio.Event
) -> str | None:
    """`check_before_reading`, given up when the run is stopped: why the run cannot go on
    (credentials refused, host unreachable), or None (also when stopped: nothing read)."""
    check = asyncio.ensure_future(check_before_reading(job, transport))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({check, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not check.done():  # interrupted during the check: nothing read, nothing sent
        check.cancel()
        await asyncio.gather(check, return_exceptions=True)
        return None
    try:
        check.result()
    except RunAborted as refused:
        return str(refused)
    return None
