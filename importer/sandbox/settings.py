"""The sandbox's settings and defaults: port, workspace, key, limits and the faults to play."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from importer import moengage

HOST = "127.0.0.1"
DEFAULT_PORT = 8377
DEFAULT_WORKSPACE_ID = "SANDBOX"
DEFAULT_API_KEY = "sandbox-key"
# The sandbox reads its key from here when --api-key is not given: a real key passed as an
# argument would sit in `ps` for anyone on the machine to read.
API_KEY_VARIABLE = "MOE_SANDBOX_API_KEY"
OUTAGE_MODES = ("500", "reset", "refuse")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_REDIRECT_TO = "http://127.0.0.1:9/elsewhere"
FAIL_STATUSES = (500, 503)
STATS_PATH = "/_sandbox/stats"
PROFILES_PATH = "/_sandbox/profiles"  # the profiles as kept (GET), for tests and rehearsals
# aiohttp refuses bodies over this on its own; ours (max_body_bytes) is checked below it.
READ_LIMIT_BYTES = 64 * 1024 * 1024
BULK = moengage.Endpoint.BULK
CUSTOMER = moengage.Endpoint.CUSTOMER
EVENT = "event"  # POST /v1/event: one event element


@dataclass(slots=True)
class SandboxSettings:
    port: int = DEFAULT_PORT
    workspace_id: str = DEFAULT_WORKSPACE_ID
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    rate: int = moengage.DEFAULT_RATE_UPDATES
    period: float = moengage.DEFAULT_RATE_PERIOD_SECONDS
    event_rate: int = moengage.DEFAULT_EVENT_RATE_UPDATES  # events (actions) per period
    fail_rate: float = 0.0
    reset_rate: float = 0.0
    lost_answer_rate: float = 0.0  # accepted and recorded, then the connection cut
    latency_ms: float = 0.0
    record: Path | None = None
    arrivals: Path | None = None
    max_body_bytes: int = moengage.MAX_REQUEST_BYTES
    strict_bulk: bool = False
    reject_customer_ids: str | None = None  # a regex, searched in each customer_id
    fail_customer_ids: str | None = None  # a regex: 503 for a request holding a match
    status_for_all: int | None = None
    seed: int | None = None
    schema_violations: Path | None = None  # elements MoEngage's request schema refuses
    # About 0.5 ms an element: a throughput benchmark may turn it off.
    check_schema: bool = True
    key_source: str = f"the default key ({DEFAULT_API_KEY})"  # said on start, never the key
    # A scheduled outage, timed from the first request: answered 500, connections cut, or
    # (refuse) the port closed.
    outage_after: float | None = None
    outage_for: float = 0.0
    outage_mode: str = "500"
    redirect: int | None = None  # answer every POST with this 3xx
    redirect_to: str = DEFAULT_REDIRECT_TO
    delete_rate: int = moengage.DEFAULT_DELETE_REQUESTS  # Delete User requests per period
    export_rate: int = moengage.DEFAULT_EXPORT_USERS  # Get User users per period
    delete_window: float = 0.0  # updates this long after a delete are lost (MoEngage: 1 day)
    success_body: str = "moengage"  # or a 2xx that is not MoEngage's (see answers.py)
    ratelimit_headers: bool = False  # x-ratelimit-limit/-remaining/-reset on every answer
    unset_supported: bool = True  # False: a workspace without Early Access ignores unsets
    fail_deletes: bool = False  # every Delete User request answered 503
    profiles: Path | None = None  # the profiles as kept, written here (0600) on stop
