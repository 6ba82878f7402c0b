"""Keeps secrets out of text we show or store: any 8+ character run of a secret, in any case."""

from __future__ import annotations

import base64
from collections.abc import Iterable

# A run this long that also occurs in the key is taken for the key: shorter runs are too
# likely to be ordinary words ("customer") to blank without harming the message.
MIN_SECRET_RUN = 8
MASK = "***"


class Scrubber:
    """Removes from text every run of MIN_SECRET_RUN+ characters found in one of the secrets.

    Matching ignores case: a server that lower-cases or echoes part of the key (a prefix
    in an error message, a log line) must not carry it into the dead-letter file, stderr
    or the report. A secret shorter than MIN_SECRET_RUN is blanked wherever it occurs whole.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._grams: set[str] = set()
        self._short: list[str] = []
        for secret in secrets:
            folded = secret.casefold()
            if not folded:
                continue
            if len(folded) < MIN_SECRET_RUN:
                self._short.append(folded)
                continue
            for start in range(len(folded) - MIN_SECRET_RUN + 1):
                self._grams.add(folded[start : start + MIN_SECRET_RUN])

    def __call__(self, text: str) -> str:
        return self.scrub(text)

    def scrub(self, text: str) -> str:
        folded = text.casefold()
        if len(folded) != len(text):  # a character whose case fold is longer: be safe
            folded = "".join(c.casefold()[:1] or c for c in text)
        masked = [False] * len(text)
        # Every window of a secret run is one of the secret's grams, so the union of matching
        # windows covers each run whole.
        if self._grams:
            for start in range(len(folded) - MIN_SECRET_RUN + 1):
                if folded[start : start + MIN_SECRET_RUN] in self._grams:
                    masked[start : start + MIN_SECRET_RUN] = [True] * MIN_SECRET_RUN
        for secret in self._short:
            start = folded.find(secret)
            while start != -1:
                masked[start : start + len(secret)] = [True] * len(secret)
                start = folded.find(secret, start + 1)
        if not any(masked):
            return text
        parts: list[str] = []
        index = 0
        while index < len(text):
            if masked[index]:
                while index < len(text) and masked[index]:
                    index += 1
                parts.append(MASK)
            else:
                end = index
                while end < len(text) and not masked[end]:
                    end += 1
                parts.append(text[index:end])
                index = end
        return "".join(parts)


def credential_secrets(login: str, password: str) -> list[str]:
    """The password and the Basic credentials (base64 of `login:password`) that carry it."""
    token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    return [password, token]


def for_credentials(login: str, password: str) -> Scrubber:
    """A scrubber for an API key and the Authorization header built from it."""
    return Scrubber(credential_secrets(login, password))
