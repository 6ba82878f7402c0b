"""Keeps secrets out of text we show or store: one rule, for the secrets a job hands in."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

# A run this long that also occurs in a secret is taken for the secret: shorter runs are too
# likely to be ordinary words ("customer") to blank without harming the message.
MIN_SECRET_RUN = 8
MASK = "***"
# scheme://user:password@host: the password is hidden whether or not it is a known secret
# (a Redis URL, a proxy, an object store endpoint written with its credentials).
# A password may hold `/`, `#`, `?` or `@` unencoded (people paste them so): it runs to the
# last `@` of the token.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(\S+)(@)")


class Secrets:
    """The secrets of one job, and the scrubber that removes them from text.

    `scrub` replaces every run of MIN_SECRET_RUN+ characters found in one of the secrets,
    in any case (a server that lower-cases or echoes part of the key, a value cut for
    display), and a secret shorter than that wherever it occurs whole; and the password of
    any `scheme://user:password@host` URL. Each secret shows as how it was added (MASK, or
    e.g. `${MY_TOKEN}`, which tells the user which value is meant without showing it).
    """

    def __init__(self, values: Iterable[str] = (), *, shown_as: str = MASK) -> None:
        self._shown: dict[str, str] = {}  # folded secret -> how to show it
        for value in values:
            self.add(value, shown_as)

    def add(self, value: str, shown_as: str = MASK) -> None:
        """From now on, `scrub` hides `value` (and any long run of it) as `shown_as`."""
        folded = _fold(value)
        if folded.strip():
            self._shown.setdefault(folded, shown_as)

    def update(self, other: Secrets) -> None:
        """Also hide every secret `other` hides."""
        for folded, shown_as in other.items():
            self._shown.setdefault(folded, shown_as)

    def items(self) -> list[tuple[str, str]]:
        """(folded secret, how it is shown) pairs."""
        return list(self._shown.items())

    def __call__(self, text: str) -> str:
        return self.scrub(text)

    def scrub(self, text: str) -> str:
        """`text` with every secret, every long run of one, and URL passwords replaced."""
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
        for secret, shown_as in self._shown.items():
            text = _hide(text, secret, shown_as)
        return text


def _fold(text: str) -> str:
    """Case-folded, one character for one, so positions in the fold are positions in `text`."""
    folded = text.casefold()
    if len(folded) != len(text):  # a character whose case fold is longer: fold it alone
        folded = "".join(c.casefold()[:1] or c for c in text)
    return folded


def _hide(text: str, secret: str, shown_as: str) -> str:
    folded = _fold(text)
    masked = [False] * len(text)
    if len(secret) < MIN_SECRET_RUN:
        start = folded.find(secret)
        while start != -1:
            masked[start : start + len(secret)] = [True] * len(secret)
            start = folded.find(secret, start + 1)
    else:
        # Every window of a secret run is one of the secret's windows, so the union of the
        # matching windows covers each run whole.
        windows = {secret[i : i + MIN_SECRET_RUN] for i in range(len(secret) - MIN_SECRET_RUN + 1)}
        for start in range(len(folded) - MIN_SECRET_RUN + 1):
            if folded[start : start + MIN_SECRET_RUN] in windows:
                masked[start : start + MIN_SECRET_RUN] = [True] * MIN_SECRET_RUN
    if not any(masked):
        return text
    parts: list[str] = []
    for index, char in enumerate(text):
        if not masked[index]:
            parts.append(char)
        elif index == 0 or not masked[index - 1]:
            parts.append(shown_as)
    return "".join(parts)


def url_password(url: str | None) -> str | None:
    """The password in `scheme://user:password@host...`, whatever characters it holds."""
    match = _URL_CREDENTIALS.search(url or "")
    return match.group(2) if match else None


def credential_secrets(login: str, password: str) -> list[str]:
    """The password and the Basic credentials (base64 of `login:password`) that carry it."""
    if not password:
        return []
    token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    return [password, token]


def for_credentials(login: str, password: str) -> Secrets:
    """The secrets of an API key and the Authorization header built from it."""
    return Secrets(credential_secrets(login, password))
