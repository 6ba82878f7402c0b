"""End to end: dates as MoEngage stores them, standard attributes checked against the
catalogue, and the sandbox's schema check that fails any test sending a refused shape."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    SANDBOX_KEY,
    SANDBOX_WORKSPACE,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

CSV = (
    "user_id,born,optin,web_push,mail\n"
    "u1,1990-05-01,DOUBLE_OPTED_IN,true,ada@example.com\n"
    "u2,2001-12-24T23:30:00-05:00,OPTED_OUT,false,bo@example.org\n"
    "u3,1985-02-03,maybe,true,cy@example.net\n"
    "u4,,OPT_IN_PENDING,,not-an-email\n"
)
MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "born_on": {"column": "born", "type": "date"},
        "born_text": {"column": "born", "type": "date", "as_text": True},
        "u_bd": {"column": "born", "type": "date"},
        "moe_email_optin_status": "optin",
        "moe_sub_w": {"column": "web_push", "type": "boolean"},
        "email": "mail",
    },
}


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("endpoint", ["bulk", "customer"])
def test_dates_and_standard_attributes_arrive_as_moengage_documents_them(
    tmp_path: Path, endpoint: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV, encoding="utf-8")
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, MAPPING, api={"endpoint": endpoint})
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        # Different customers may arrive in any order (one user a request, several in flight).
        records = sorted(
            ((r["customer_id"], r["attributes"]) for r in sandbox.records()), key=lambda r: r[0]
        )
        stats = sandbox.stats()
    assert result.returncode == 1, result.stderr
    assert records == [
        (
            "u1",
            {
                "born_on": "1990-05-01T00:00:00Z",
                "born_text": "1990-05-01",
                "u_bd": "1990-05-01T00:00:00Z",
                "moe_email_optin_status": "DOUBLE_OPTED_IN",
                "moe_sub_w": True,
                "email": "ada@example.com",
            },
        ),
        (
            "u2",
            {
                "born_on": "2001-12-24T00:00:00Z",  # the calendar date as written
                "born_text": "2001-12-24",
                "u_bd": "2001-12-24T00:00:00Z",
                "moe_email_optin_status": "OPTED_OUT",
                "moe_sub_w": False,
                "email": "bo@example.org",
            },
        ),
    ]
    assert stats["users_dropped"] == 0
    letters = {letter["customer_id"]: letter for letter in read_dead_letters(tmp_path)}
    assert set(letters) == {"u3", "u4"}
    assert letters["u3"]["stage"] == "validation"
    assert (
        "column 'optin': 'maybe' is not one of DOUBLE_OPTED_IN, OPTED_OUT, OPT_IN_PENDING"
        in (letters["u3"]["error"])
    )
    assert "column 'mail': 'not-an-email' is not an email address" in letters["u4"]["error"]
    report = read_report(tmp_path)
    assert (report["rows_accepted"], report["rows_invalid"]) == (2, 2)
    assert_report_adds_up(report)
    # Cell values stay in the dead-letter file, never in the report or the output.
    assert "maybe" not in orjson.dumps(report).decode() and "maybe" not in result.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("attribute", "spec", "both_types"),
    [
        ("moe_sub_w", "web_push", ("moe_sub_w is boolean", "maps it as string")),
        ("u_bd", {"column": "born", "type": "date", "as_text": True}, ("is datetime", "as_text")),
        ("email", {"column": "born", "type": "datetime"}, ("is string", "maps it as datetime")),
    ],
)
def test_a_standard_attribute_with_the_wrong_type_is_refused_before_sending(
    tmp_path: Path, attribute: str, spec: Any, both_types: tuple[str, str]
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV, encoding="utf-8")
    with start_sandbox(tmp_path) as sandbox:
        mapping = {"customer_id": "user_id", "attributes": {attribute: spec}}
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping))
        result = run_cli("run", str(job), "--no-progress")
        arrivals = sandbox.arrivals()
    assert result.returncode == 2, result.stderr
    assert arrivals == []
    assert f"mapping.attributes.{attribute}.type:" in result.stderr
    for fragment in both_types:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_an_unknown_moe_attribute_is_refused_unless_allowed(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV, encoding="utf-8")
    mapping: dict[str, Any] = {"customer_id": "user_id", "attributes": {"moe_new_thing": "optin"}}
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping))
    refused = run_cli("validate", str(job))
    assert refused.returncode == 2 and "allow_reserved" in refused.stderr
    mapping["allow_reserved"] = ["moe_new_thing"]
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping))
    allowed = run_cli("validate", str(job))
    assert allowed.returncode == 0, allowed.stderr
    assert "WARNING" in allowed.stderr and "moe_new_thing" in allowed.stderr


def _post(url: str, body: dict[str, Any], path: str) -> int:
    token = base64.b64encode(f"{SANDBOX_WORKSPACE}:{SANDBOX_KEY}".encode()).decode()
    request = urllib.request.Request(
        f"{url}{path}/{SANDBOX_WORKSPACE}",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


BARE_DATE = {"type": "customer", "customer_id": "u1", "attributes": {"u_bd": "1990-05-01"}}


@pytest.mark.sandbox
def test_the_sandbox_applies_the_schema_and_records_violations(tmp_path: Path) -> None:
    with start_sandbox(tmp_path, allow_schema_violations=True) as sandbox:
        assert _post(sandbox.url, BARE_DATE, "/v1/customer") == 400
        bulk = {"type": "transition", "elements": [BARE_DATE, {**BARE_DATE, "attributes": {}}]}
        assert _post(sandbox.url, bulk, "/v1/transition") == 200
        stats = sandbox.stats()
        violations = sandbox.schema_violations()
    assert stats["users_dropped"] == 1 and stats["users_accepted"] == 1
    assert [v["endpoint"] for v in violations] == ["customer", "bulk"]
    assert "attributes.u_bd: must be a valid date-time" in violations[0]["problem"]


@pytest.mark.sandbox
def test_a_test_whose_sandbox_received_a_refused_shape_fails(tmp_path: Path) -> None:
    # The suite-wide check: start_sandbox fails the test at teardown, whatever was answered.
    with pytest.raises(pytest.fail.Exception, match="request schema refuses"):  # noqa: SIM117
        with start_sandbox(tmp_path) as sandbox:
            _post(sandbox.url, BARE_DATE, "/v1/customer")
