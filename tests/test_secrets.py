"""redaction: any 8+ character run of a secret is blanked, in any case, and nothing else."""

from __future__ import annotations

import base64

from importer.redaction import MASK, MIN_SECRET_RUN, Secrets, for_credentials

KEY = "Zq7XkP2mN9vB4wR8tY1u"


def test_the_whole_key_and_any_long_run_of_it_in_any_case_are_blanked() -> None:
    scrub = Secrets([KEY])
    assert scrub(f"key {KEY} refused") == f"key {MASK} refused"
    assert scrub(f"prefix {KEY[:8].lower()}!") == f"prefix {MASK}!"
    assert scrub(f"middle {KEY[5:15].upper()} end") == f"middle {MASK} end"
    assert KEY[3:11].swapcase() not in scrub(f"x{KEY[3:11].swapcase()}y")


def test_no_run_of_the_secret_as_long_as_the_window_survives_anywhere() -> None:
    scrub = Secrets([KEY])
    for start in range(len(KEY) - MIN_SECRET_RUN + 1):
        for end in range(start + MIN_SECRET_RUN, len(KEY) + 1):
            part = KEY[start:end]
            shown = scrub(f"<{part}>{part.lower()}")
            assert part not in shown and part.lower() not in shown, (start, end)


def test_short_runs_and_other_text_are_kept() -> None:
    scrub = Secrets([KEY])
    assert scrub(f"seven {KEY[:7]} chars") == f"seven {KEY[:7]} chars"
    assert scrub("customer_id is a placeholder") == "customer_id is a placeholder"


def test_two_runs_and_a_short_secret() -> None:
    scrub = Secrets([KEY, "abc"])
    text = f"{KEY[:9]} and {KEY[-10:]} and ABC"
    assert scrub(text) == f"{MASK} and {MASK} and {MASK}"


def test_the_basic_credentials_are_blanked_too() -> None:
    token = base64.b64encode(f"WS1:{KEY}".encode()).decode()
    scrub = for_credentials("WS1", KEY)
    assert token not in scrub(f"Authorization: Basic {token}")
    assert KEY not in scrub(f"echo {KEY}")


def test_credentials_inside_a_url_are_blanked_even_when_not_known() -> None:
    scrub = Secrets()
    assert scrub("redis://:s3cret@10.0.0.1:6379/0 down") == f"redis://:{MASK}@10.0.0.1:6379/0 down"
    assert scrub("via https://bob:pw1@proxy:3128") == f"via https://bob:{MASK}@proxy:3128"
    assert scrub("http://host:8080/path") == "http://host:8080/path"


def test_a_secret_shows_as_it_was_added_and_sets_merge() -> None:
    named = Secrets()
    named.add(KEY, "${MY_TOKEN}")
    merged = Secrets()
    merged.update(named)
    merged.add("another-secret-value")
    assert merged(f"{KEY} / another-secret-value") == f"${{MY_TOKEN}} / {MASK}"


def test_empty_secrets_change_nothing() -> None:
    assert Secrets(["", ""])("anything at all") == "anything at all"
