"""Key-path messages: ConfigError, and pydantic's errors turned into lines a user can act on."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from importer.config.models import JobConfig
from importer.errors import UsageError

SHOWN_NAME_LENGTH = 40


class JobRefused(UsageError):
    """The job file, its input or its output paths are wrong; nothing was sent.

    What the Python API raises for any of these (importer.api); a ConfigError is one."""


class ConfigError(JobRefused):
    """A job file problem a user can fix; the message names the key path.

    The loader scrubs its message of the job's secrets before it leaves (importer.redaction)."""


# Messages for pydantic error types; none of them may contain the input (it may be the API key).
_PLAIN_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "must be a mapping (key: value)",
    "dict_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "string_type": "must be text (in YAML, quote values that look like numbers)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _annotation_model(annotation: Any) -> Any:
    """X | None -> X, so the walk below can see through optional sections."""
    if get_origin(annotation) in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts where `loc` points (for an unknown key's hint)."""
    annotation: Any = JobConfig
    for part in loc:
        annotation = _annotation_model(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _annotation_model(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    allowed = _keys_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    if allowed:
        return f"unknown key; expected one of {', '.join(allowed)}"
    return "unknown key"


def _error_message(item: Any) -> str:
    kind = item["type"]
    loc = tuple(item["loc"])
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("literal_error", "enum"):
        # pydantic says "Input should be 'a', 'b' or 'c'"; list the choices plainly.
        choices = re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected", "")))
        return f"must be one of {', '.join(choices)}"
    if kind == "value_error":
        return str(item.get("ctx", {}).get("error", "invalid value"))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return str(item["msg"]).replace("Input should be", "must be")
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    if loc[:1] == ("api",):
        return f"invalid value ({kind})"  # pydantic's own text might quote the value
    return str(item["msg"])


def key_path(loc: Iterable[str | int]) -> str:
    """("mapping", "platforms", 0) -> "mapping.platforms[0]", as the messages write key paths."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def format_validation_error(error: ValidationError) -> str:
    """pydantic's errors as key-path lines, one a line; never quoting a value of api.*."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if len(loc) >= 2 and loc[-1] == "[key]":
            # A mapping key YAML read as a number (attributes: {123: col}); name it as written.
            lines.append(f"{key_path((*loc[:-2], str(loc[-2])))}: this key must be text")
        else:
            lines.append(f"{key_path(loc)}: {_error_message(item)}")
    return "\n".join(lines)


def attribute_key(section: str, name: str) -> str:
    """A key path for an attribute, shortened so a 300-character name does not flood the output."""
    if not name:
        return f"{section}.''"
    if len(name) > SHOWN_NAME_LENGTH:
        return f"{section}.{name[:SHOWN_NAME_LENGTH]}..."
    return f"{section}.{name}"
