"""The `sandbox` command: its options, the settings they make, and serving until a signal."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from importer import moengage
from importer.sandbox.answers import SUCCESS_BODIES
from importer.sandbox.server import SandboxServer
from importer.sandbox.settings import (
    API_KEY_VARIABLE,
    DEFAULT_API_KEY,
    DEFAULT_PORT,
    DEFAULT_REDIRECT_TO,
    DEFAULT_WORKSPACE_ID,
    HOST,
    OUTAGE_MODES,
    REDIRECT_STATUSES,
    SandboxSettings,
)

# Said by --help of `python -m importer.sandbox`.
DESCRIPTION = (
    "A MoEngage-compatible Data API server on loopback, for the demo, tests and rehearsals."
)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from exc
    return text


def _status(text: str) -> int:
    value = int(text)
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{text} is not an HTTP status code")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sandbox` command's options, in the order --help lists them."""
    _add_server_options(parser)
    _add_fault_and_record_options(parser)
    _add_outage_and_check_options(parser)
    _add_profile_options(parser)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    """Where it listens, the workspace and key it accepts, and its rate limits."""
    add = parser.add_argument
    add("--port", type=_port, default=DEFAULT_PORT, help="0 = any free port (default %(default)s)")
    add("--workspace-id", default=DEFAULT_WORKSPACE_ID, help="(default %(default)s)")
    add(
        "--api-key",
        help=f"the Data API key clients must send; visible in `ps`, so prefer "
        f"${API_KEY_VARIABLE} (default: ${API_KEY_VARIABLE} if set, else {DEFAULT_API_KEY!r})",
    )
    add(
        "--api-key-env",
        metavar="NAME",
        default=API_KEY_VARIABLE,
        help="the environment variable holding the key (default %(default)s)",
    )
    add(
        "--rate",
        type=int,
        default=moengage.DEFAULT_RATE_UPDATES,
        help="user updates per period (default %(default)s)",
    )
    add(
        "--period",
        type=_positive,
        default=moengage.DEFAULT_RATE_PERIOD_SECONDS,
        help="seconds (default %(default)s)",
    )
    add(
        "--event-rate",
        type=int,
        default=moengage.DEFAULT_EVENT_RATE_UPDATES,
        help="events (actions) per period, limited apart from users (default %(default)s)",
    )


def _add_fault_and_record_options(parser: argparse.ArgumentParser) -> None:
    """Random faults and latency, the files it records into, body limits and refused ids."""
    add = parser.add_argument
    add("--fail-rate", type=_fraction, default=0.0, help="fraction answered 500/503 (default 0)")
    add(
        "--reset-rate",
        type=_fraction,
        default=0.0,
        help="fraction whose connection is cut (default 0)",
    )
    add(
        "--lost-answer-rate",
        type=_fraction,
        default=0.0,
        help="fraction of accepted requests whose connection is cut after they were"
        " accepted and recorded: the client gets no answer (default 0)",
    )
    add("--latency-ms", type=float, default=0.0, help="delay before each answer (default 0)")
    add(
        "--record",
        type=Path,
        help="append accepted users (and event elements) here as JSON lines (default: none)",
    )
    add("--arrivals", type=Path, help="append every request here as a JSON line (default: none)")
    add(
        "--max-body-bytes",
        type=int,
        default=moengage.MAX_REQUEST_BYTES,
        help="larger: 413 (default %(default)s)",
    )
    add(
        "--strict-bulk",
        action="store_true",
        help="bulk: 400 for an invalid element, not drop (default: drop, as MoEngage does)",
    )
    add(
        "--reject-customer-ids",
        type=_regex,
        metavar="REGEX",
        help="400 for a request holding a matching id (default: none)",
    )
    add(
        "--fail-customer-ids",
        type=_regex,
        metavar="REGEX",
        help="503 for every request holding a matching id, a request failing on its own "
        "(default: none)",
    )
    add(
        "--status-for-all",
        type=_status,
        metavar="CODE",
        help="answer every request so (default: none)",
    )


def _add_outage_and_check_options(parser: argparse.ArgumentParser) -> None:
    """A timed outage, redirects, the fault seed and the request schema check."""
    add = parser.add_argument
    add(
        "--outage-after",
        type=_non_negative,
        metavar="S",
        help="an outage starting S seconds after the first request (default: none)",
    )
    add("--outage-for", type=_non_negative, default=0.0, metavar="S", help="its length (default 0)")
    add(
        "--outage-mode",
        choices=OUTAGE_MODES,
        default="500",
        help="503 answers, cut connections, or the port closed (default %(default)s)",
    )
    add(
        "--redirect",
        type=int,
        choices=REDIRECT_STATUSES,
        metavar="CODE",
        help="answer every request with this redirect: 301, 302, 303, 307, 308 (default: none)",
    )
    add("--redirect-to", default=DEFAULT_REDIRECT_TO, help="its Location (default %(default)s)")
    add("--seed", type=int, help="seed for the fault injection (default: random)")
    add(
        "--schema-violations",
        type=Path,
        help="append elements the request schema refuses here (default: none)",
    )
    add(
        "--no-schema-check",
        dest="check_schema",
        action="store_false",
        help="skip the request schema check, for throughput benchmarks (default: check)",
    )


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    """Options of the kept profiles, the Delete and Get User APIs, and odd 2xx answers."""
    add = parser.add_argument
    add(
        "--profiles",
        type=Path,
        help="write the profiles as kept here (0600) on stop; also GET /_sandbox/profiles",
    )
    add(
        "--delete-rate",
        type=int,
        default=moengage.DEFAULT_DELETE_REQUESTS,
        help="Delete User requests per period (default %(default)s)",
    )
    add(
        "--export-rate",
        type=int,
        default=moengage.DEFAULT_EXPORT_USERS,
        help="users read back through the Get User API per period (default %(default)s)",
    )
    add(
        "--delete-window",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="updates of a customer this long after its delete are lost, as in MoEngage's "
        "day before the hard delete (default 0)",
    )
    add(
        "--success-body",
        choices=SUCCESS_BODIES,
        default="moengage",
        help="answer accepted requests with MoEngage's body, or with a 2xx that is not "
        "MoEngage's (a portal's HTML page, a fail body, an empty body, 202, 204); those "
        "elements are not kept (default %(default)s)",
    )
    add(
        "--fail-deletes",
        action="store_true",
        help="answer every Delete User request 503 (a delete that keeps failing)",
    )
    add(
        "--ratelimit-headers",
        action="store_true",
        help="send x-ratelimit-limit, -remaining and -reset with every answer",
    )
    add(
        "--no-unset",
        dest="unset_supported",
        action="store_false",
        help="ignore unset_attributes, as a workspace without the Early Access feature does",
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def api_key_from(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """The key and where it came from, in words that never hold the key."""
    if args.api_key is not None:
        return args.api_key, "the key given with --api-key (visible in `ps`)"
    from_env = env.get(args.api_key_env)
    if from_env:
        return from_env, f"the key in ${args.api_key_env}"
    return DEFAULT_API_KEY, f"the default key ({DEFAULT_API_KEY})"


def settings_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> SandboxSettings:
    import os

    api_key, key_source = api_key_from(args, os.environ if env is None else env)
    return SandboxSettings(
        port=args.port,
        workspace_id=args.workspace_id,
        api_key=api_key,
        key_source=key_source,
        outage_after=args.outage_after,
        outage_for=args.outage_for,
        outage_mode=args.outage_mode,
        redirect=args.redirect,
        redirect_to=args.redirect_to,
        rate=args.rate,
        period=args.period,
        event_rate=args.event_rate,
        fail_rate=args.fail_rate,
        reset_rate=args.reset_rate,
        lost_answer_rate=args.lost_answer_rate,
        latency_ms=args.latency_ms,
        record=args.record,
        arrivals=args.arrivals,
        max_body_bytes=args.max_body_bytes,
        strict_bulk=args.strict_bulk,
        reject_customer_ids=args.reject_customer_ids,
        fail_customer_ids=args.fail_customer_ids,
        status_for_all=args.status_for_all,
        seed=args.seed,
        schema_violations=args.schema_violations,
        check_schema=args.check_schema,
        profiles=args.profiles,
        delete_rate=args.delete_rate,
        export_rate=args.export_rate,
        delete_window=args.delete_window,
        success_body=args.success_body,
        ratelimit_headers=args.ratelimit_headers,
        fail_deletes=args.fail_deletes,
        unset_supported=args.unset_supported,
    )


async def serve(settings: SandboxSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SandboxServer(settings) as server:
        print(f"sandbox listening on {server.url} (workspace {settings.workspace_id})", flush=True)
        print(describe(settings), flush=True)
        await stop.wait()


def describe(settings: SandboxSettings) -> str:
    """What a client needs to know, said on start: workspace, key source, limit, faults."""
    lines = [
        f"  workspace ID  {settings.workspace_id}",
        f"  API key       {settings.key_source}",
        f"  rate limit    {settings.rate:,} user updates per {settings.period:g} s",
        f"  event limit   {settings.event_rate:,} events per {settings.period:g} s",
    ]
    faults = []
    if settings.latency_ms:
        faults.append(f"latency {settings.latency_ms:g} ms")
    if settings.fail_rate:
        faults.append(f"{settings.fail_rate:.0%} answered 5xx")
    if settings.reset_rate:
        faults.append(f"{settings.reset_rate:.0%} connections cut")
    if settings.lost_answer_rate:
        faults.append(f"{settings.lost_answer_rate:.0%} answers lost after accepting")
    if settings.success_body != "moengage":
        faults.append(f"accepted requests answered {settings.success_body} (not MoEngage's)")
    if settings.status_for_all is not None:
        faults.append(f"every request answered {settings.status_for_all}")
    if settings.redirect is not None:
        faults.append(f"every request redirected ({settings.redirect})")
    if settings.outage_after is not None:
        faults.append(
            f"outage ({settings.outage_mode}) {settings.outage_after:g} s after the first "
            f"request, for {settings.outage_for:g} s"
        )
    if faults:
        lines.append(f"  faults        {', '.join(faults)}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    try:
        asyncio.run(serve(settings_from_args(args)))
    except OSError as exc:  # the port is taken, most likely
        print(f"sandbox: cannot listen on {HOST}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
