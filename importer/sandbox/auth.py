"""The sandbox's credential check: HTTP Basic with the workspace ID and the Data API key."""

from __future__ import annotations

import hmac

from aiohttp import BasicAuth

from importer.sandbox.answers import Answer, failure
from importer.sandbox.rules import short
from importer.sandbox.settings import SandboxSettings


def auth_problem(
    settings: SandboxSettings, header: str | None, path_workspace: str
) -> Answer | None:
    """Basic auth as MoEngage checks it: 401 unknown or wrong, 409 path and login disagree."""
    expects = (
        f"this sandbox expects HTTP Basic with username {settings.workspace_id!r} "
        f"(the workspace ID, also in the path) and as password {settings.key_source}"
    )
    if not header:
        return failure(401, f"authentication required: {expects}")
    try:
        credentials = BasicAuth.decode(header)
    except ValueError:
        return failure(401, f"malformed Authorization header: {expects}")
    if credentials.login != path_workspace:
        return failure(409, "the workspace ID in the path does not match the credentials")
    if path_workspace != settings.workspace_id:
        return failure(401, f"unknown workspace ID {short(path_workspace)}: {expects}")
    password = credentials.password
    if not hmac.compare_digest(password.encode(), settings.api_key.encode()):
        hint = ""
        if password != password.strip() and hmac.compare_digest(
            password.strip().encode(), settings.api_key.encode()
        ):
            hint = " (the key sent has surrounding whitespace: a newline from a file?)"
        return failure(401, f"invalid Data API key for this workspace{hint}: {expects}")
    return None
