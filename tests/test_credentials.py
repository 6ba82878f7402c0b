"""The credential check: a wrong key or an unreachable host stops a run before it reads."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from importer.config import JobConfig, load_job
from importer.moengage import DEFAULT_EXPORT_USERS
from importer.quota.window import WindowLimiter
from importer.run import credentials
from importer.run.transport import AiohttpTransport
from importer.run.users_api import CallRefused, UsersApiClient
from tests.support import job_dict, write_job
from tests.test_sandbox import in_process


def _job(tmp_path: Path, url: str, key: str = "sandbox-key") -> JobConfig:
    source = tmp_path / "users.csv"
    source.write_text("user_id,name\nu1,Ada\n")
    job = job_dict(tmp_path, url, source, {"customer_id": "user_id", "attributes": {"n": "name"}})
    job["api"]["api_key"] = key
    return load_job(write_job(tmp_path, job))


async def _check(job: JobConfig) -> None:
    transport = AiohttpTransport(timeout_seconds=5, concurrency=1)
    client = UsersApiClient(
        job.api, transport, limiter=WindowLimiter(DEFAULT_EXPORT_USERS, 60), in_transit_seconds=5
    )
    try:
        await credentials.check_credentials(job, client, transport)
    finally:
        await transport.close()


def test_good_credentials_pass_and_change_nothing(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        asyncio.run(_check(_job(tmp_path, server.url)))
        assert server.profiles.profiles == {} and server.stats()["exports"] == 1


def test_a_wrong_key_stops_before_anything_is_read(tmp_path: Path) -> None:
    with in_process(tmp_path) as server, pytest.raises(CallRefused, match="401") as refused:
        asyncio.run(_check(_job(tmp_path, server.url, key="wrong-key-123")))
    assert "wrong-key-123" not in str(refused.value)


def test_a_closed_port_stops_within_the_bound_naming_host_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "UNREACHABLE_GIVE_UP_SECONDS", 0.3)
    monkeypatch.setattr(credentials, "RETRY_EVERY_SECONDS", 0.1)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(credentials.Unreachable, match=f"127.0.0.1:{port}"):
        asyncio.run(_check(_job(tmp_path, f"http://127.0.0.1:{port}")))
