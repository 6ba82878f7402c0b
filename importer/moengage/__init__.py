"""Every fact about MoEngage's Data API, in one place: hosts, paths, payloads, limits, rules."""

from __future__ import annotations

import enum
from typing import Any

from importer.moengage import catalogue

DATA_CENTERS = ("01", "02", "03", "04", "05", "06", "101")

# Attribute rules from the track-user API page.
BLOCKED_ATTRIBUTE_NAMES = frozenset({"id", "_id", ""})
RESERVED_PREFIX = "moe_"
# System attributes that legitimately carry the reserved prefix: exactly the standard ones
# MoEngage's schema documents (importer/moengage/catalogue.py); a job admits others by name
# (mapping.allow_reserved).
SYSTEM_ATTRIBUTES = catalogue.names_with_prefix(RESERVED_PREFIX)
MAX_ATTRIBUTE_NAME_LENGTH = 200
MAX_STRING_LENGTH = 512
MAX_ARRAY_ITEMS = 50
MAX_ARRAY_ITEM_LENGTH = 512
MAX_CUSTOM_ATTRIBUTES = 256
PLATFORM_NAMES = ("ANDROID", "iOS", "web")

# customer_id values MoEngage refuses (compared case-insensitively, after stripping).
PLACEHOLDER_CUSTOMER_IDS = frozenset(
    {
        "unknown",
        "guest",
        "null",
        "0",
        "1",
        "2",
        "-1",
        "-2",
        "true",
        "false",
        "none",
        "na",
        "n/a",
        "(empty)",
        "id",
        "uid",
        "userid",
        "user_id",
        "customer_id",
        "user_attribute_unique_id",
        "dummy_seller_code",
    }
)

# Payload keys.
ADD_TO_ARRAY_KEY = "addValueToArrayField"
REMOVE_FROM_ARRAY_KEY = "removeValueFromArrayField"
PLATFORMS_KEY = "platforms"
# Clears attributes in a customer element: [{"type": "equals", "attr": NAME}] (Early Access
# on MoEngage's side; a workspace without it answers 200 and ignores them).
UNSET_ATTRIBUTES_KEY = "unset_attributes"
UNSET_MATCH_TYPE = "equals"

# Delete User API: one user a request, limited apart from updates.
DELETE_PATH = "/v1/customer/delete"
DELETE_IDENTITY_TYPE = "customer_id"
DEFAULT_DELETE_REQUESTS = 5_000
# A 400 whose message says so: the user is already gone, so the delete is done.
USER_NOT_FOUND_MESSAGE = "User not found"

# Get User API: at most 20 users a request, 1,000 users a minute.
EXPORT_PATH = "/v1/customers/export"
EXPORT_MAX_USERS = 20
DEFAULT_EXPORT_USERS = 1_000

# Request limits.
MAX_REQUEST_BYTES = 100_000
DEFAULT_RATE_UPDATES = 10_000
DEFAULT_RATE_PERIOD_SECONDS = 60.0

# Statuses: which stop the run, which are about the data, which are transient.
FATAL_STATUSES = frozenset({401, 403, 409})
RATE_LIMITED_STATUS = 429
TOO_LARGE_STATUS = 413
BAD_PAYLOAD_STATUS = 400


def base_url_for(data_center: str) -> str:
    if data_center not in DATA_CENTERS:
        raise ValueError(
            f"unknown data center {data_center!r}; expected one of {', '.join(DATA_CENTERS)}"
        )
    if data_center == "101":
        return "https://api-101.moengage.com"
    return f"https://api-{data_center}.moengage.com"


def bulk_path(workspace_id: str) -> str:
    return f"/v1/transition/{workspace_id}"


def customer_path(workspace_id: str) -> str:
    return f"/v1/customer/{workspace_id}"


def customer_element(
    customer_id: str | None, attributes: dict[str, Any], update_existing_only: bool
) -> dict[str, Any]:
    """One user update, the shape both endpoints take."""
    element: dict[str, Any] = {"type": "customer"}
    if customer_id is not None:
        element["customer_id"] = customer_id
    element["attributes"] = attributes
    element["update_existing_only"] = update_existing_only
    return element


# The bulk body is assembled from pre-encoded elements so batching can count bytes exactly.
BULK_PREFIX = b'{"type":"transition","elements":['
BULK_SUFFIX = b"]}"
# What a bulk body adds around its elements (the commas between them aside).
BULK_FRAME_BYTES = len(BULK_PREFIX) + len(BULK_SUFFIX)


class Endpoint(enum.StrEnum):
    """Where users are sent (`api.endpoint`); a str, so job files and reports say it plainly."""

    BULK = "bulk"  # POST /v1/transition/{workspace_id}: many elements a request
    CUSTOMER = "customer"  # POST /v1/customer/{workspace_id}: one user a request


def bulk_body(encoded_elements: list[bytes]) -> bytes:
    return BULK_PREFIX + b",".join(encoded_elements) + BULK_SUFFIX


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    """MoEngage's error envelope (the sandbox answers with it; delivery parses it)."""
    return {
        "status": "fail",
        "error": {"type": error_type, "message": message, "request_id": request_id},
    }


def parse_error(body: Any) -> tuple[str, str | None]:
    """(message, request_id) from an error body, tolerating anything the server sends."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "error")
            request_id = error.get("request_id")
            return message, (str(request_id) if request_id is not None else None)
        if "message" in body:
            return str(body["message"]), None
    return (str(body)[:300] if body else "no error message"), None


# Payload and answer shapes (the sandbox checks and answers with these).
CUSTOMER_TYPE = "customer"
BULK_TYPE = "transition"
PLATFORM_ACTIVE_VALUES = ("true", "false")
# Identity Resolution: attribute names taken as a user identifier when customer_id is
# absent. A real workspace chooses its own; these are the standard ones.
IDENTIFIER_ATTRIBUTES = catalogue.identifier_names()
SUCCESS_MESSAGE = "Your request has been accepted and will be processed soon."
RATE_LIMIT_ERROR_TYPE = "RateLimitError"
RATE_LIMIT_MESSAGE = "Rate limit exceeded"
UNSUPPORTED_MEDIA_STATUS = 415


# Added for retry/delivery: more statuses and what the fatal ones mean to a user.
UNPROCESSABLE_STATUS = 422
# A wrong URL or a client bug, not the data: retrying or bisecting cannot help.
CLIENT_BUG_STATUSES = frozenset({404, 405, 415})
STATUS_MEANINGS = {
    401: "bad credentials (check api.workspace_id and api.api_key)",
    403: "account suspended or blocked",
    409: "the workspace ID in the path does not match the credentials",
    404: "no such endpoint (check api.base_url / api.data_center)",
    405: "method not allowed (check api.base_url / api.data_center)",
    415: "unsupported media type (check api.base_url; a proxy may be rewriting the request)",
}
# MoEngage may say when the rate limit window resets: seconds, or a unix epoch.
RATE_LIMIT_RESET_HEADER = "x-ratelimit-reset"
RATE_LIMIT_LIMIT_HEADER = "x-ratelimit-limit"
RATE_LIMIT_REMAINING_HEADER = "x-ratelimit-remaining"


def error_type(body: Any) -> str | None:
    """The `error.type` of an error body (e.g. RateLimitError), if there is one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("type") is not None:
            return str(error["type"])
    return None


# System attributes that messages name when explaining the reserved moe_ prefix.
SYSTEM_ATTRIBUTE_EXAMPLES = ("moe_mobile", "moe_email", "moe_unsubscribe")


# --- Events (the bulk-import and track-event pages) ------------------------------------
EVENT_TYPE = "event"
# An events job posts one element a request here when api.endpoint is `customer`.
EVENT_PLATFORMS = ("ANDROID", "iOS", "web", "TV", "unknown")
MAX_EVENT_ATTRIBUTES = 100
MAX_EVENT_NAME_LENGTH = 200
MAX_TIMEZONE_OFFSET_SECONDS = 54_000  # user_timezone_offset lies within +-this
# Events are limited apart from users: 30,000 a minute in the bulk docs (some pages say
# 60,000 users and events together; the stricter figure is the default).
DEFAULT_EVENT_RATE_UPDATES = 30_000
# A `.` in an event name is stored as a space.
EVENT_NAME_STORED_AS_SPACE = "."
# The start of every event element's JSON (see event_element): tells one apart from bytes.
EVENT_ELEMENT_PREFIX = b'{"type":"event"'
ACTIONS_KEY = "actions"


def event_path(workspace_id: str) -> str:
    return f"/v1/event/{workspace_id}"


def event_element(customer_id: str | None, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """One element of events for one user, the shape both endpoints take."""
    element: dict[str, Any] = {"type": EVENT_TYPE}
    if customer_id is not None:
        element["customer_id"] = customer_id
    element[ACTIONS_KEY] = actions
    return element
