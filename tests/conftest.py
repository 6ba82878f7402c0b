"""pytest's fixtures and markers for the suite; the helpers tests import are in tests/support.py."""

from __future__ import annotations

import gc
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, S3_ENV


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """What `cli.main` sets for the whole process (the importer logger's handler on the
    stderr of the moment, the collector's thresholds and frozen objects) is put back after
    each test, so a CLI run in-process leaves nothing behind for the next test."""
    logger = logging.getLogger("importer")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    thresholds = gc.get_threshold()
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _a_temp_directory_of_its_own(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes a test starts get a temp directory of the test's own (TMPDIR), and with
    it their own default local quota ledger (keyed by the workspace ID, under the temp
    directory). Every test talks to the sandbox's one workspace: two `--workers` runs of two
    tests at once (`-n 2`, stretched by a loaded machine) with different limits would meet
    in one ledger, and the later would stop, rightly, with exit 3 (another process shares
    this key with another limit)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmp")))


# The tiers: a test says with a marker which processes it starts (README "Development").
PROCESS_MARKERS = ("sandbox", "subprocess", "redis")
FAST_TIER = os.environ.get("MOE_TEST_TIER") == "fast"


def marker_for(argv: object) -> str:
    """The marker a test starting this command line needs."""
    words = [str(word) for word in argv] if isinstance(argv, list | tuple) else [str(argv)]
    if "importer.sandbox" in words:
        return "sandbox"
    if words and Path(words[0]).name.startswith("redis-server"):
        return "redis"
    return "subprocess"


@pytest.fixture(autouse=True)
def _in_process_only_in_the_fast_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make test-fast` (MOE_TEST_TIER=fast) runs in-process tests only: a test there that
    starts a process fails at once, naming the marker that moves it out of the tier."""
    if not FAST_TIER:
        return
    real_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        if any(request.node.get_closest_marker(name) for name in PROCESS_MARKERS):
            real_init(self, args, *rest, **options)
            return
        marker = marker_for(args)
        # So the half-made Popen's __del__ finds no child to reap.
        self._child_created = False  # type: ignore[attr-defined]
        pytest.fail(
            f"{request.node.nodeid} starts a process ({shlex.join(map(str, _words(args)))})"
            f" in the fast tier: mark it @pytest.mark.{marker}",
            pytrace=False,
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def _words(args: Any) -> list[Any]:
    return list(args) if isinstance(args, list | tuple) else [args]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`e2e` is the old name for a test driving the sandbox subprocess: it counts as `sandbox`."""
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("sandbox"):
            item.add_marker(pytest.mark.sandbox)


# --- the S3 server (moto's, on loopback) ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server, a subprocess on a free loopback port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **S3_ENV},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    return {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}


def s3_client(endpoint: str) -> Any:
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def s3(s3_env: dict[str, str], request: pytest.FixtureRequest) -> Any:
    """The test side's client, with a bucket of this test's own."""
    client = s3_client(s3_env["AWS_ENDPOINT_URL"])
    bucket = f"nightly-{abs(hash(request.node.name)) % 10**8}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client
