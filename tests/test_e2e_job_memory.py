"""One job, one memory: progress, acceptances, dead-letter lines and run history are kept per
job and target, through the CLI against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import USERS_MAPPING, job_dict, run_cli, users_csv, write_job

FAST = ("--latency-ms", "0")


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return folder


def _job(
    tmp_path: Path, name: str, url: str, source: Path, *, state: str = "state.db", **extra: Any
) -> Path:
    """Job `name` (its file's stem) with outputs of its own, unless `state` is shared."""
    job = job_dict(tmp_path, url, source, USERS_MAPPING, **extra)
    out = tmp_path / "out" / name
    job["output"] = {
        "dead_letter": str(out / "dead_letter.jsonl"),
        "report": str(out / "report.json"),
        "state": str(tmp_path / "out" / state),
    }
    return write_job(tmp_path, job, f"{name}.yaml")


def _letters(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / "out" / name / "dead_letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _report(tmp_path: Path, name: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((tmp_path / "out" / name / "report.json").read_text())
    return report


def _sent(sandbox: Any) -> list[str]:
    return [record["customer_id"] for record in sandbox.records()]


@pytest.mark.slow
def test_a_rehearsals_acceptances_do_not_make_the_real_replay_skip_rows(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 10)
    with start_sandbox(_folder(tmp_path, "rehearsal"), *FAST) as rehearsal:
        job = _job(tmp_path, "users", rehearsal.url, source)
        assert run_cli("run", str(job), "--no-progress").returncode == 0
    assert len(set(_sent(rehearsal))) == 10
    # The real workspace refuses two customers the rehearsal accepted.
    reject = ("--reject-customer-ids", "^u0000[35]$")
    with start_sandbox(_folder(tmp_path, "real"), *FAST, *reject) as real:
        job = _job(tmp_path, "users", real.url, source)
        assert run_cli("run", str(job), "--no-progress").returncode == 1
    letters = _letters(tmp_path, "users")
    assert sorted(letter["customer_id"] for letter in letters) == ["u00003", "u00005"]
    assert {letter["job"] for letter in letters} == {"users"}
    assert letters[0]["target"]["workspace_id"] == "SANDBOX"
    dead_letter = tmp_path / "out" / "users" / "dead_letter.jsonl"
    # Fixed on MoEngage's side: the replay sends both (the rehearsal's acceptances are
    # another target's and count for nothing here).
    with start_sandbox(_folder(tmp_path, "fixed"), *FAST) as fixed:
        job = _job(tmp_path, "users", fixed.url, source)
        replay = run_cli("replay", str(job), str(dead_letter), "--no-progress")
    assert replay.returncode == 0, replay.stderr
    assert sorted(_sent(fixed)) == ["u00003", "u00005"]
    assert "a later run accepted" not in replay.stderr


@pytest.mark.slow
def test_fresh_on_one_job_leaves_another_jobs_progress_in_a_shared_state_file(
    tmp_path: Path,
) -> None:
    source = users_csv(tmp_path, 20)
    with start_sandbox(_folder(tmp_path, "sandbox"), *FAST) as sandbox:
        a = _job(tmp_path, "a", sandbox.url, source)
        b = _job(tmp_path, "b", sandbox.url, source)
        assert run_cli("run", str(a), "--no-progress").returncode == 0
        assert run_cli("run", str(b), "--no-progress").returncode == 0
        assert len(_sent(sandbox)) == 40  # two jobs: each sends its own
        assert run_cli("run", str(a), "--no-progress", "--fresh").returncode == 0
        assert len(_sent(sandbox)) == 60  # A starts over
        assert run_cli("run", str(b), "--no-progress").returncode == 0
        assert len(_sent(sandbox)) == 60  # B's progress survived A's --fresh: nothing sent
    assert _report(tmp_path, "b")["rows_skipped"] == 20
    assert _report(tmp_path, "a")["rows_accepted"] == 20


def _rewrite(path: Path, change: dict[int, Any]) -> None:
    """Dead-letter lines by customer row number changed by a function of the line."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for line in lines:
        if line["row"] in change:
            change[line["row"]](line)
        out.append(json.dumps(line))
    path.write_text("\n".join(out) + "\n")


@pytest.mark.slow
def test_replay_refuses_lines_of_another_job_or_workspace_unless_retargeted(
    tmp_path: Path,
) -> None:
    source = users_csv(tmp_path, 10)
    reject = ("--reject-customer-ids", "^u0000[3579]$")
    with start_sandbox(_folder(tmp_path, "night"), *FAST, *reject) as night:
        job = _job(tmp_path, "a", night.url, source, api={"endpoint": "customer"})
        assert run_cli("run", str(job), "--no-progress").returncode == 1
    dead_letter = tmp_path / "out" / "a" / "dead_letter.jsonl"

    def other_workspace(line: dict[str, Any]) -> None:
        line["target"]["workspace_id"] = "W2"

    def written_before_jobs(line: dict[str, Any]) -> None:
        del line["job"], line["target"]

    _rewrite(
        dead_letter,
        {5: lambda line: line.update(job="b"), 7: other_workspace, 9: written_before_jobs},
    )
    with start_sandbox(_folder(tmp_path, "replay"), *FAST) as up:
        job = _job(tmp_path, "a", up.url, source)
        refused = run_cli("replay", str(job), str(dead_letter), "--no-progress")
        assert refused.returncode == 2, refused.stderr
        assert "1 line of job b" in refused.stderr
        assert "1 line of workspace W2" in refused.stderr
        assert "--retarget" in refused.stderr
        assert _sent(up) == []  # the whole file was checked before anything was sent
        sent = run_cli("replay", str(job), str(dead_letter), "--no-progress", "--retarget")
        assert sent.returncode == 0, sent.stderr
        assert sorted(_sent(up)) == ["u00003", "u00005", "u00007", "u00009"]


@pytest.mark.slow
def test_status_lists_the_last_runs_dead_letters_and_snapshot(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 10, bad_points=(2,))
    reject = ("--reject-customer-ids", "^u00004$")
    with start_sandbox(_folder(tmp_path, "sandbox"), *FAST, *reject) as sandbox:
        job = _job(tmp_path, "nightly", sandbox.url, source, sync={"mode": "changed"})
        assert run_cli("run", str(job), "--no-progress").returncode == 1
        first = _report(tmp_path, "nightly")["run_id"]
        assert run_cli("run", str(job), "--no-progress").returncode == 1
        second = _report(tmp_path, "nightly")["run_id"]
    # Needs no credentials: the key is given by a variable that is not set.
    text = job.read_text().replace("sandbox-key", "${NOT_SET_ANYWHERE}")
    job.write_text(text)
    shown = run_cli("status", str(job))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert first in out and second in out
    assert out.index(second) < out.index(first)  # newest first
    assert "exit 1" in out
    assert "validation 1, rejected 1" in out
    assert str(tmp_path / "out" / "state.db") in out
    assert "8 customers" in out and "workspace SANDBOX" in out
    as_json = run_cli("status", str(job), "--json")
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert [run["run_id"] for run in status["runs"]] == [second, first]
    assert status["runs"][0]["counts"]["rows_skipped"] == 10
    assert status["runs"][1]["counts"]["rows_accepted"] == 8
    assert status["dead_letters"]["by_stage"] == {"rejected": 1, "validation": 1}
    assert status["progress"]["snapshot_customers"] == 8
    assert status["state"] == str(tmp_path / "out" / "state.db")
    assert status["job"] == "nightly"
    for output in (out, as_json.stdout):  # no personal data: ids of customers, names
        assert "u0000" not in output and "name1" not in output
