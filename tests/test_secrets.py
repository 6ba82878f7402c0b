"""secrets: any 8+ character run of a secret is blanked, in any case, and nothing else."""

from __future__ import annotations

import base64

from importer.redaction import MASK, Scrubber, for_credentials

KEY = "Zq7XkP2mN9vB4wR8tY1u"


def test_the_whole_key_and_any_long_run_of_it_in_any_case_are_blanked() -> None:
    scrub = Scrubber([KEY])
    assert scrub(f"key {KEY} refused") == f"key {MASK} refused"
    assert scrub(f"prefix {KEY[:8].lower()}!") == f"prefix {MASK}!"
    assert scrub(f"middle {KEY[5:15].upper()} end") == f"middle {MASK} end"
    assert KEY[3:11].swapcase() not in scrub(f"x{KEY[3:11].swapcase()}y")


def test_short_runs_and_other_text_are_kept() -> None:
    scrub = Scrubber([KEY])
    assert scrub(f"seven {KEY[:7]} chars") == f"seven {KEY[:7]} chars"
    assert scrub("customer_id is a placeholder") == "customer_id is a placeholder"


def test_two_runs_and_a_short_secret() -> None:
    scrub = Scrubber([KEY, "abc"])
    text = f"{KEY[:9]} and {KEY[-10:]} and ABC"
    assert scrub(text) == f"{MASK} and {MASK} and {MASK}"


def test_the_basic_credentials_are_blanked_too() -> None:
    token = base64.b64encode(f"WS1:{KEY}".encode()).decode()
    scrub = for_credentials("WS1", KEY)
    assert token not in scrub(f"Authorization: Basic {token}")
    assert KEY not in scrub(f"echo {KEY}")


def test_empty_secrets_change_nothing() -> None:
    assert Scrubber(["", ""])("anything at all") == "anything at all"
