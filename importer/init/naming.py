"""What column names tell `init`: the customer id, identifiers, flags, attribute names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from importer import moengage
from importer.config import attribute_name_problem

# Column names that usually hold the customer id, best first (compared without case or _).
CUSTOMER_ID_NAMES = (
    "customerid",
    "userid",
    "uid",
    "externalid",
    "memberid",
    "accountid",
    "clientid",
    "id",
    "email",
    "emailaddress",
)
# Name parts that mark identifiers and codes: numbers there are labels, so they stay text.
_IDENTIFIER_PARTS = frozenset(
    {"id", "ids", "uid", "uuid", "guid", "code", "zip", "zipcode", "postcode", "postal", "phone"}
    | {"mobile", "msisdn", "tel", "telephone", "sku", "ean", "upc", "iban"}
)
_FLAG_PREFIXES = ("is_", "has_", "can_", "was_", "opt_in", "optin", "allow")
# Name parts that mark a list: a comma may then separate its items.
LIST_NAME_PARTS = frozenset({"tags", "interests", "categories", "labels", "segments", "list"})


def name_parts(name: str) -> list[str]:
    """The lower-case words of a column name (snake_case, camelCase or spaced)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # customerId -> customer_Id
    return [p for p in re.split(r"[^a-z0-9]+", spaced.lower()) if p]


def looks_like_identifier(name: str) -> bool:
    """The name marks an id or a code: its digits are labels, so they stay text."""
    parts = name_parts(name)
    compact = "".join(parts)
    return bool(_IDENTIFIER_PARTS.intersection(parts)) or compact in CUSTOMER_ID_NAMES


def looks_like_flag(name: str) -> bool:
    """The name reads as a yes/no question (is_, has_, opt_in, ...)."""
    return name.lower().startswith(_FLAG_PREFIXES)


def guess_customer_id(columns: Sequence[str]) -> str | None:
    """The column most likely to hold customer_id, by name."""
    by_compact = {"".join(name_parts(c)): c for c in reversed(columns)}
    for candidate in CUSTOMER_ID_NAMES:
        if candidate in by_compact:
            return by_compact[candidate]
    return None


def attribute_name_for(column: str, taken: set[str]) -> tuple[str, str | None]:
    """The attribute name for a column, and why it differs from the column (None: it does not).

    A valid column name is kept; any other gets a valid name not in `taken`.
    """
    reason = attribute_name_problem(column)
    if reason is None:
        return column, None
    if column.startswith(moengage.RESERVED_PREFIX):
        name = column[len(moengage.RESERVED_PREFIX) :]
    elif column in moengage.BLOCKED_ATTRIBUTE_NAMES:
        name = f"source{column if column.startswith('_') else '_' + column}"
    elif len(column) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        name = column[: moengage.MAX_ATTRIBUTE_NAME_LENGTH]
    else:
        name = f"{column}_value"
    if not name or attribute_name_problem(name) is not None:
        name = "column_value"
    base, suffix = name, 2
    while name in taken:
        name = f"{base[: moengage.MAX_ATTRIBUTE_NAME_LENGTH - 4]}_{suffix}"
        suffix += 1
    return name, reason
