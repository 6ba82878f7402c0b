"""Whether a file's first record looks like a header: what an error may show of it.

A headerless export (Snowflake `COPY`, Redshift `UNLOAD` write none by default) has a data
row where the header would be: names, emails, phone numbers. An error about a missing
column shows the file's column names only when every one of them looks like a name (an
identifier, no `@`, no digits-only or date-like value); otherwise it says what was checked
and shows none.
"""

from __future__ import annotations

import re

# A column name: a letter or underscore first, then letters, digits, `_`, `-`, `.`, spaces.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-. ]{0,63}")
# Values that are data, not names, even when they pass the pattern above.
_DATA_LIKE = re.compile(r"^(true|false|null|none|nan)$", re.IGNORECASE)


def looks_like_header(names: list[str]) -> bool:
    """Every name is short, starts with a letter or `_`, and holds no `@`, `/`, `:` or `+`."""
    return bool(names) and all(
        _NAME.fullmatch(name) is not None and not _DATA_LIKE.match(name) for name in names
    )


def describe_columns(names: list[str], shown: int = 20) -> str:
    """The file's columns for an error message, or why they are not shown."""
    if looks_like_header(names):
        return f"it has {', '.join(repr(name) for name in names[:shown])}"
    return (
        f"its first line ({len(names)} fields) does not look like a header (checked: each "
        "field a name of letters, digits and _ starting with a letter, no @ or digits-only "
        "value), so it is not shown: if the file has no header line, export it with one"
    )
