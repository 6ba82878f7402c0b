"""The Python API mirrors the CLI, in-process: one load_job, run_job (a dry run needs no
credentials), replay_job; and each CLI command offers only the flags it uses."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import importer
from importer import JobRefused, load_job, replay_job, run_job
from importer.cli import build_parser
from importer.errors import EXIT_DEAD_LETTERED, EXIT_OK
from tests.support import USERS_MAPPING, job_dict, read_report, users_csv, write_job

UNSET = "MOE_TEST_API_UNSET_KEY"


def _keyless_job(tmp_path: Path, source: Path, mapping: dict[str, Any] | None = None) -> Path:
    """A job whose key comes from a variable that is not set; its API is a closed port."""
    settings = job_dict(tmp_path, "http://127.0.0.1:9", source, mapping or USERS_MAPPING)
    settings["api"]["api_key"] = "${" + UNSET + "}"
    return write_job(tmp_path, settings)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)


def test_a_dry_run_needs_no_credentials_and_counts_every_row(tmp_path: Path) -> None:
    job = _keyless_job(tmp_path, users_csv(tmp_path, 20, bad_points=(3, 11)))
    report = run_job(job, dry_run=True)
    assert report.dry_run
    assert (report.rows_read, report.rows_invalid) == (20, 2)
    assert report.requests_planned >= 1 and report.requests == 0
    assert report.exit_code == EXIT_DEAD_LETTERED  # a finished run, not an error
    # Written as `moe-import validate` writes it: beside the real report, never over it.
    assert read_report(tmp_path, dry_run=True)["rows_invalid"] == 2
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_real_run_without_credentials_is_refused_naming_the_key(tmp_path: Path) -> None:
    job = _keyless_job(tmp_path, users_csv(tmp_path, 5))
    with pytest.raises(JobRefused, match=re.escape(f"api.api_key: environment variable {UNSET}")):
        run_job(job)
    loaded = load_job(job, need_credentials=False)  # the CLI's loader, the same function
    assert loaded.api.api_key.get_secret_value() == ""
    assert load_job is importer.api.load_job is importer.config.load_job


def test_load_job_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    job = _keyless_job(tmp_path, users_csv(tmp_path, 5))
    moved = load_job(job, overrides={"source": {"path": "elsewhere.csv"}}, need_credentials=False)
    assert moved.source.path == "elsewhere.csv"
    with pytest.raises(JobRefused, match=r"delivery\.concurrency"):
        load_job(job, overrides={"delivery": {"concurrency": 0}}, need_credentials=False)


def test_replay_job_remaps_dead_letters_and_writes_beside_them(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 20, bad_points=(3, 11))
    run_job(_keyless_job(tmp_path, source), dry_run=True)
    # A dry run writes only its own files: the real dead-letter file is never made.
    assert not (tmp_path / "out" / "dead_letter.jsonl").exists()
    dead_letter = tmp_path / "out" / "dead_letter.dry-run.jsonl"
    assert len(dead_letter.read_text().splitlines()) == 2
    # The mapping fixed (points as text), the two rows map now.
    fixed = {**USERS_MAPPING, "attributes": {"first_name": "first_name", "points": "points"}}
    report = replay_job(_keyless_job(tmp_path, source, fixed), dead_letter, dry_run=True)
    assert (report.rows_read, report.rows_invalid) == (2, 0)
    assert report.exit_code == EXIT_OK
    written = tmp_path / "out" / "dead_letter.dry-run.replay.report.dry-run.json"
    assert json.loads(written.read_text())["rows_read"] == 2


def _flags(command: str) -> set[str]:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command")
    commands: dict[str, Any] = sub.choices  # type: ignore[assignment]
    return {flag for action in commands[command]._actions for flag in action.option_strings}


def test_each_command_offers_only_the_flags_it_uses() -> None:
    run, validate, replay = _flags("run"), _flags("validate"), _flags("replay")
    contract = {"--input", "--dry-run", "--fresh", "--full", "--base-url", "--rate"}
    contract |= {"--concurrency", "--dead-letter", "--report", "--no-progress", "--log-format"}
    assert contract | {"--notify", "--allow-insecure-http"} <= run
    # A dry run keeps no progress, sends nothing and paces nothing.
    for unused in ("--dry-run", "--fresh", "--period", "--concurrency", "--notify"):
        assert unused not in validate
    assert "--allow-insecure-http" not in validate
    assert {"--report", "--dead-letter", "--input", "--full", "--state"} <= validate
    # A replay reads no source and compares with no snapshot.
    assert "--input" not in replay and "--full" not in replay
    assert {"--dry-run", "--fresh", "--notify", "--dead-letter", "--report"} <= replay


def test_the_version_is_the_installed_one_and_types_ship() -> None:
    assert importer.__version__ == metadata.version("moe-import")
    assert (Path(importer.__file__).parent / "py.typed").exists()
