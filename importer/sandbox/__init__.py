"""A MoEngage-compatible Data API server on loopback, for the demo, tests and rehearsals.

It answers as MoEngage's Data API does (auth, the rate window, body limits, the element
rules, the request schema) and can play faults: latency, 5xx, cut connections, refused
ids, redirects and a timed outage. `moe-import sandbox` and `python -m importer.sandbox`
start it; `SandboxServer` runs it inside a test's own event loop.

    settings.py   SandboxSettings and the defaults (port, workspace, key, limits)
    rules.py      what MoEngage refuses: element, event, attribute, customer_id, platform
    window.py     RateWindow, the sandbox's own count of updates per period
    bodies.py     a request body read: parsed JSON, its customer_ids, users and events
    recording.py  the JSON-lines files: arrivals, accepted records, schema violations
    server.py     SandboxServer: auth, limits, answers, faults and outages, the counters
    cli.py        the command's options, settings from them, serve until a signal
    __main__.py   `python -m importer.sandbox`
"""

from __future__ import annotations

from importer.sandbox.answers import Answer
from importer.sandbox.cli import (
    add_arguments,
    api_key_from,
    describe,
    run_from_args,
    serve,
    settings_from_args,
)
from importer.sandbox.rules import element_problem, event_problem
from importer.sandbox.server import SandboxServer
from importer.sandbox.settings import DEFAULT_API_KEY, DEFAULT_WORKSPACE_ID, SandboxSettings
from importer.sandbox.window import RateWindow

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_WORKSPACE_ID",
    "Answer",
    "RateWindow",
    "SandboxServer",
    "SandboxSettings",
    "add_arguments",
    "api_key_from",
    "describe",
    "element_problem",
    "event_problem",
    "run_from_args",
    "serve",
    "settings_from_args",
]
