"""The CLI in-process: `main(argv)` is the command a scheduler runs; its exit code, what it
prints on stdout and stderr, and the files it writes are checked without a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from importer.cli import main
from importer.errors import EXIT_ABORTED, EXIT_DEAD_LETTERED, EXIT_EMPTY, EXIT_OK, EXIT_USAGE
from tests.sandbox_proc import start_sandbox
from tests.support import (
    SANDBOX_KEY,
    USERS_MAPPING,
    job_dict,
    read_report,
    user_ids,
    users_csv,
    users_job,
    write_job,
)

FAST = ("--latency-ms", "0")


def _no_api_job(tmp_path: Path, source: Path) -> Path:
    """A job whose API is never contacted: a closed loopback port."""
    return users_job(tmp_path, "http://127.0.0.1:9", source)


def _summary_counts(out: str) -> dict[str, int]:
    """The summary's counts by label: `  accepted        1,234   (...)` -> {"accepted": 1234}."""
    counts = {}
    for line in out.splitlines():
        match = re.match(r"^  ([a-z][a-z ]*?)\s{2,}([\d,]+)(\s|$)", line)
        if match:
            counts[match.group(1)] = int(match.group(2).replace(",", ""))
    return counts


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.sandbox
def test_run_delivers_every_row_and_the_summary_and_report_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = users_csv(tmp_path, 300)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        code, out, err = _run(capsys, "run", str(job), "--no-progress")
        records = sandbox.records()
    assert code == EXIT_OK, err
    assert sorted(r["customer_id"] for r in records) == sorted(user_ids(300))
    report = read_report(tmp_path)
    assert report["rows_accepted"] == 300 and report["exit_code"] == EXIT_OK
    summary = _summary_counts(out)
    assert summary["rows read"] == summary["accepted"] == 300 and summary["pending"] == 0
    assert summary["invalid"] == summary["rejected"] == summary["failed"] == 0
    assert "Traceback" not in err
    assert SANDBOX_KEY not in out + err


@pytest.mark.sandbox
def test_bad_rows_exit_1_and_name_row_column_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = users_csv(tmp_path, 50, bad_points=(7, 30))
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        code, _, err = _run(capsys, "run", str(job), "--no-progress")
        sent = {r["customer_id"] for r in sandbox.records()}
    assert code == EXIT_DEAD_LETTERED, err
    assert "u00007" not in sent and "u00030" not in sent and len(sent) == 48
    letters = [json.loads(line) for line in (tmp_path / "out" / "dead_letter.jsonl").open()]
    assert sorted(letter["row"] for letter in letters) == [7, 30]
    assert all("points" in letter["error"] for letter in letters)


def test_validate_needs_no_key_sends_nothing_and_leaves_the_real_report_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = users_csv(tmp_path, 20, bad_points=(3,))
    settings = job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING)
    settings["api"]["api_key"] = "${MOE_TEST_UNSET_KEY}"
    monkeypatch.delenv("MOE_TEST_UNSET_KEY", raising=False)
    job = write_job(tmp_path, settings)
    real_report = tmp_path / "out" / "report.json"
    real_report.parent.mkdir()
    real_report.write_text('{"rows_accepted": 20}')  # what last night's run left
    code, out, err = _run(capsys, "validate", str(job))
    assert code == EXIT_DEAD_LETTERED, err
    assert "points" in out and "first_name" in out  # the attribute table
    assert _summary_counts(out)["invalid"] == 1
    assert read_report(tmp_path, dry_run=True)["rows_invalid"] == 1
    assert real_report.read_text() == '{"rows_accepted": 20}'


@pytest.mark.parametrize(
    ("job_text", "named"),
    [
        ("api: [unclosed\n", "job.yaml"),
        ("api: {}\nsurprise: 1\n", "surprise"),
    ],
)
def test_a_broken_job_file_exits_2_naming_where_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], job_text: str, named: str
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(job_text)
    code, out, err = _run(capsys, "run", str(job))
    assert code == EXIT_USAGE
    assert named in err and "Traceback" not in err and out == ""


def test_a_missing_job_file_and_a_missing_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == EXIT_USAGE and "nope.yaml" in err
    job = _no_api_job(tmp_path, tmp_path / "absent.csv")
    code, _, err = _run(capsys, "validate", str(job))
    assert code == EXIT_USAGE and "absent.csv" in err and "Traceback" not in err


def test_an_input_with_no_rows_exits_4_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "users.csv"
    source.write_text("user_id,first_name,points\n")
    code, _, err = _run(capsys, "validate", str(_no_api_job(tmp_path, source)))
    assert code == EXIT_EMPTY, err
    settings = job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING)
    settings["source"]["allow_empty"] = True
    allowed = write_job(tmp_path, settings, "allowed.yaml")
    code, _, err = _run(capsys, "validate", str(allowed))
    assert code == EXIT_OK, err


def test_the_key_never_shows_in_an_error_about_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-KEY-value-0123456789"
    monkeypatch.setenv("MOE_TEST_API_KEY", secret)
    settings = job_dict(tmp_path, "http://127.0.0.1:9", users_csv(tmp_path, 5), USERS_MAPPING)
    settings["api"]["api_key"] = "${MOE_TEST_API_KEY}"
    settings["rate_limit"] = {"updates": "${MOE_TEST_API_KEY}"}  # a key pasted in the wrong place
    job = write_job(tmp_path, settings)
    code, out, err = _run(capsys, "run", str(job), "--no-progress")
    assert code == EXIT_USAGE
    assert "rate_limit.updates" in err
    assert secret[:8] not in out + err and secret[-8:] not in out + err


def test_json_log_format_makes_the_fatal_error_a_json_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("api: {}\nsurprise: 1\n")
    code, _, err = _run(capsys, "run", str(job), "--log-format", "json")
    assert code == EXIT_USAGE
    line = json.loads(err.strip().splitlines()[-1])
    assert line["level"] == "error" and "surprise" in line["message"]


@pytest.mark.sandbox
def test_a_report_that_cannot_be_written_turns_success_into_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = users_csv(tmp_path, 10)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        # The report's folder is a file: the run delivers, then cannot say so.
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        job = users_job(
            tmp_path, sandbox.url, source, output={"report": str(blocker / "report.json")}
        )
        code, _, err = _run(capsys, "run", str(job), "--no-progress")
        delivered = len(sandbox.records())
    assert delivered == 10
    assert code == EXIT_ABORTED, err
    assert "report" in err and "Traceback" not in err


def test_bad_option_values_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", "job.yaml", "--rate", "0"])
    assert stopped.value.code == EXIT_USAGE
    assert "--rate" in capsys.readouterr().err
