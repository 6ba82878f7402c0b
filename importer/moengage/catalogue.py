"""MoEngage's standard user attributes, as its track-user schema (`UserAttributes`) types them.

Written from MoEngage's public track-user and bulk-import documentation. A standard attribute
is one MoEngage itself defines: its name, the JSON type it holds, the values it allows, whether
it is only applied when MoEngage creates the user, and whether it identifies a user (Identity
Resolution). Custom attributes are everything else.

The API takes some standard attributes under a readable name too (`email` for `u_em`, as the
track-user page's own example sends `first_name`); those names are aliases of the same entry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ValueType(Enum):
    """The JSON value a standard attribute holds."""

    STRING = "string"
    BOOLEAN = "boolean"
    INTEGER = "integer"  # also epoch seconds, as u_l_a and cr_t hold them
    NUMBER = "number"
    DATETIME = "datetime"  # an ISO 8601 date-time string, YYYY-MM-DDTHH:MM:SSZ
    STRING_ARRAY = "array of string"


# The job file's attribute types that send a value of each kind (date sends a date-time unless
# as_text keeps it as text; number may send a fraction, so it cannot fill an integer).
COMPATIBLE_TYPES: dict[ValueType, frozenset[str]] = {
    ValueType.STRING: frozenset({"string"}),
    ValueType.BOOLEAN: frozenset({"boolean"}),
    ValueType.INTEGER: frozenset({"integer"}),
    ValueType.NUMBER: frozenset({"integer", "number"}),
    ValueType.DATETIME: frozenset({"datetime", "date"}),
    ValueType.STRING_ARRAY: frozenset({"array"}),
}

# The shape checks the schema states for some text attributes.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_GEO = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s+(-?\d+(?:\.\d+)?)\s*")


def _email_problem(value: Any) -> str | None:
    if isinstance(value, str) and _EMAIL.fullmatch(value):
        return None
    return "is not an email address (name@domain)"


def _geo_problem(value: Any) -> str | None:
    match = _GEO.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        latitude, longitude = float(match.group(1)), float(match.group(2))
        if -90 <= latitude <= 90 and -180 <= longitude <= 180 and math.isfinite(latitude):
            return None
    return 'is not a location "latitude longitude" (e.g. "52.52 13.40")'


# What a value that is of the right type must also be (None: fine), by the shape's name.
SHAPES: dict[str, Callable[[Any], str | None]] = {"email": _email_problem, "geo": _geo_problem}


@dataclass(frozen=True, slots=True)
class StandardAttribute:
    name: str
    type: ValueType
    description: str
    enum: tuple[str, ...] = ()
    shape: str | None = None  # a key of SHAPES
    create_only: bool = False  # MoEngage applies it only when it creates the user
    identifier: bool = False  # can identify a user in Identity Resolution workspaces
    aliases: tuple[str, ...] = field(default=())

    def value_problem(self, value: Any) -> str | None:
        """Why MoEngage's schema refuses this (already typed) value, or None."""
        if self.enum and value not in self.enum:
            return f"is not one of {', '.join(self.enum)} (the values {self.name} allows)"
        if self.shape is not None:
            return SHAPES[self.shape](value)
        return None


_S, _B, _I, _D, _A = (
    ValueType.STRING,
    ValueType.BOOLEAN,
    ValueType.INTEGER,
    ValueType.DATETIME,
    ValueType.STRING_ARRAY,
)
EMAIL_OPTIN_STATUSES = ("DOUBLE_OPTED_IN", "OPTED_OUT", "OPT_IN_PENDING")

STANDARD_ATTRIBUTES: tuple[StandardAttribute, ...] = (
    StandardAttribute("uid", _S, "the user's unique id", identifier=True),
    StandardAttribute("u_n", _S, "full name", aliases=("name",)),
    StandardAttribute("u_fn", _S, "first name", aliases=("first_name",)),
    StandardAttribute("u_ln", _S, "last name", aliases=("last_name",)),
    StandardAttribute("u_gd", _S, "gender", aliases=("gender",)),
    StandardAttribute(
        "u_em", _S, "email address", shape="email", identifier=True, aliases=("email",)
    ),
    StandardAttribute("u_mb", _S, "mobile number", identifier=True, aliases=("mobile",)),
    StandardAttribute("u_bd", _D, "birthday", aliases=("birthday",)),
    StandardAttribute("geo", _S, 'location, "latitude longitude"', shape="geo"),
    StandardAttribute("u_l_a", _I, "last seen, epoch seconds"),
    StandardAttribute("cr_t", _I, "first seen, epoch seconds", create_only=True),
    StandardAttribute("publisher_name", _S, "install attribution source", create_only=True),
    StandardAttribute("campaign_name", _S, "install attribution campaign", create_only=True),
    StandardAttribute("moe_mobile", _S, "mobile number (identifier)", identifier=True),
    StandardAttribute(
        "moe_email", _S, "email address (identifier)", shape="email", identifier=True
    ),
    StandardAttribute("moe_unsubscribe", _B, "unsubscribed from email"),
    StandardAttribute("moe_spam", _B, "marked email as spam"),
    StandardAttribute("moe_hard_bounce", _B, "email hard-bounced"),
    StandardAttribute(
        "moe_email_optin_status", _S, "email opt-in status", enum=EMAIL_OPTIN_STATUSES
    ),
    StandardAttribute("moe_em_unsub_categories", _A, "email categories unsubscribed from"),
    StandardAttribute("moe_sub_w", _B, "subscribed to web push"),
    StandardAttribute("moe_push_opted", _B, "opted in to push"),
    StandardAttribute("moe_push_opt_out", _B, "opted out of push"),
    StandardAttribute("moe_wa_subscription", _B, "subscribed to WhatsApp"),
    StandardAttribute("moe_sms_subscription", _S, "SMS subscription status"),
    StandardAttribute("moe_gaid", _S, "Google advertising id"),
    StandardAttribute("moe_ip_address", _S, "IP address"),
    StandardAttribute("moe_geo_location", _S, "location"),
    StandardAttribute("moe_creation_source", _S, "where the user was created"),
)

BY_NAME: dict[str, StandardAttribute] = {
    name: attribute
    for attribute in STANDARD_ATTRIBUTES
    for name in (attribute.name, *attribute.aliases)
}


def lookup(name: str) -> StandardAttribute | None:
    """The standard attribute an attribute name (or alias) means, or None for a custom one."""
    return BY_NAME.get(name)


def names_with_prefix(prefix: str) -> frozenset[str]:
    return frozenset(name for name in BY_NAME if name.startswith(prefix))


def identifier_names() -> frozenset[str]:
    return frozenset(name for name, attribute in BY_NAME.items() if attribute.identifier)


def type_contradiction(
    name: str, mapped_type: str, as_text: bool = False, items: str = "string"
) -> str | None:
    """Why mapping `name` as `mapped_type` contradicts MoEngage's schema, or None.

    The message names both types; the caller adds the key path."""
    attribute = lookup(name)
    if attribute is None:
        return None
    standard = name if name == attribute.name else f"{name} ({attribute.name})"
    is_text_date = as_text and attribute.type is ValueType.DATETIME
    if mapped_type in COMPATIBLE_TYPES[attribute.type] and not is_text_date:
        if mapped_type == "array" and items != "string":
            return (
                f"MoEngage's standard attribute {standard} is {attribute.type.value};"
                f" this maps it as an array of {items}: use items string"
            )
        return None
    sent = "a date kept as text (as_text)" if as_text else mapped_type
    wanted = " or ".join(sorted(COMPATIBLE_TYPES[attribute.type]))
    hint = "; drop as_text" if is_text_date else ""
    return (
        f"MoEngage's standard attribute {standard} is {attribute.type.value}"
        f" ({attribute.description}); this maps it as {sent}: use type {wanted}{hint}"
    )


def array_op_contradiction(name: str) -> str | None:
    """Adding to or removing from a standard attribute that is not an array."""
    attribute = lookup(name)
    if attribute is None or attribute.type is ValueType.STRING_ARRAY:
        return None
    return (
        f"MoEngage's standard attribute {name} is {attribute.type.value}, not an array;"
        " only arrays can be added to or removed from"
    )


# --- `init`: proposing a standard attribute for a column ------------------------------------

# Column names (compared without case or separators) that mean a standard attribute.
_COLUMN_NAMES: dict[str, str] = {
    "email": "u_em",
    "emailaddress": "u_em",
    "mail": "u_em",
    "firstname": "u_fn",
    "givenname": "u_fn",
    "lastname": "u_ln",
    "surname": "u_ln",
    "familyname": "u_ln",
    "fullname": "u_n",
    "phone": "u_mb",
    "phonenumber": "u_mb",
    "mobile": "u_mb",
    "mobilenumber": "u_mb",
    "mobilephone": "u_mb",
    "cellphone": "u_mb",
    "gender": "u_gd",
    "sex": "u_gd",
    "birthday": "u_bd",
    "birthdate": "u_bd",
    "dateofbirth": "u_bd",
    "dob": "u_bd",
    "emailoptinstatus": "moe_email_optin_status",
}
_SEPARATORS = re.compile(r"[\s_\-.]+")


def _compact(column: str) -> str:
    return _SEPARATORS.sub("", column).casefold()


def standard_name_for_column(column: str) -> StandardAttribute | None:
    """The standard attribute a column's name means (EMAIL, First_Name, phone, ...), or None."""
    compact = _compact(column)
    name = _COLUMN_NAMES.get(compact)
    if name is None:
        attribute = BY_NAME.get(column)
        return attribute if attribute is not None and column == attribute.name else None
    return BY_NAME[name]


def propose_for_column(column: str, guessed_type: str, taken: set[str]) -> tuple[str, str] | None:
    """For `init`: (an attribute name, a comment) when the column's name means a standard
    attribute: its name if the guessed type fits and no other column took it, or, if the
    column's own name is that attribute's alias, a custom name that does not set it twice.
    None: the column is an ordinary custom attribute."""
    attribute = standard_name_for_column(column)
    if attribute is None or column == attribute.name:
        return None  # a custom column, or one already named as MoEngage names it
    if attribute.name in taken:
        if lookup(column) is attribute:
            return f"{column}_other", f"another column already maps {attribute.name}"
        return None
    if guessed_type not in COMPATIBLE_TYPES[attribute.type]:
        return None
    return attribute.name, f"standard attribute: {attribute.description}"


def duplicate_standard_names(names: list[str]) -> dict[str, list[str]]:
    """Standard attributes that more than one of `names` sets (u_em and its alias email)."""
    by_standard: dict[str, list[str]] = {}
    for name in names:
        attribute = lookup(name)
        if attribute is not None:
            by_standard.setdefault(attribute.name, []).append(name)
    return {standard: found for standard, found in by_standard.items() if len(found) > 1}
