"""on_empty: unset clears a value emptied at the source (CSV cells, Parquet empty arrays);
omit leaves MoEngage's value alone. Judged by the profiles the sandbox keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from importer.config import ConfigError, load_job
from tests.sandbox_proc import start_sandbox
from tests.support import job_dict, read_report, run_cli, write_job

pytestmark = [pytest.mark.sandbox, pytest.mark.subprocess]

MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "attributes": {"u_em": "email", "points": {"column": "points", "type": "integer"}},
}


def _profiles(url: str) -> dict[str, Any]:
    got = requests.get(f"{url}/_sandbox/profiles", timeout=10).json()
    return dict(got["profiles"])


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("user_id,email,points\n" + "".join(f"{row}\n" for row in rows))
    return path


def _two_nights(tmp_path: Path, mapping: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """Night 1 delivers an email for u1 and u2; night 2 has u1's blanked. The profiles after."""
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping, **sections))
        _csv(source, ["u1,a@x.io,1", "u2,b@x.io,2"])
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        _csv(source, ["u1,,1", "u2,b@x.io,2"])
        done = run_cli("run", str(job), "--no-progress", "--fresh")
        assert done.returncode == 0, done.stderr
        return _profiles(sandbox.url)


def test_unset_clears_an_emptied_cell(tmp_path: Path) -> None:
    profiles = _two_nights(tmp_path, {**MAPPING, "on_empty": "unset"})
    assert profiles["u1"] == {"points": 1}  # the old address is gone
    assert profiles["u2"] == {"u_em": "b@x.io", "points": 2}
    assert read_report(tmp_path)["unsets_sent"] == 1


def test_omit_keeps_the_old_value(tmp_path: Path) -> None:
    profiles = _two_nights(tmp_path, MAPPING)
    assert profiles["u1"] == {"u_em": "a@x.io", "points": 1}
    assert read_report(tmp_path)["unsets_sent"] == 0


def test_an_attribute_overrides_the_job_wide_setting(tmp_path: Path) -> None:
    mapping = {
        "customer_id": "user_id",
        "attributes": {
            "u_em": {"column": "email", "on_empty": "unset"},
            "points": {"column": "points", "type": "integer"},
        },
    }
    assert _two_nights(tmp_path, mapping)["u1"] == {"points": 1}


def test_changed_mode_sends_a_value_that_became_empty(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        mapping = {**MAPPING, "on_empty": "unset"}
        job = write_job(
            tmp_path, job_dict(tmp_path, sandbox.url, source, mapping, sync={"mode": "changed"})
        )
        _csv(source, ["u1,a@x.io,1", "u2,b@x.io,2"])
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        _csv(source, ["u1,,1", "u2,b@x.io,2"])
        dry = run_cli("validate", str(job), "--no-progress")
        assert dry.returncode == 0, dry.stderr
        planned = read_report(tmp_path, dry_run=True)
        assert planned["unsets_sent"] == 1 and planned["rows_unchanged"] == 1
        assert "unsets" in dry.stdout
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        report = read_report(tmp_path)
        assert (report["rows_accepted"], report["rows_unchanged"]) == (1, 1)
        assert _profiles(sandbox.url)["u1"] == {"points": 1}
        # Once cleared, the blank is in the snapshot: the same export again sends nothing.
        assert run_cli("run", str(job), "--no-progress", "--fresh").returncode == 0
        assert read_report(tmp_path)["rows_unchanged"] == 2


def test_an_empty_parquet_array_clears_it(tmp_path: Path) -> None:
    source = tmp_path / "users.parquet"
    mapping = {
        "customer_id": "user_id",
        "on_empty": "unset",
        "attributes": {"tags": {"column": "tags", "type": "array"}},
    }

    def night(tags: list[list[str]]) -> None:
        table = pa.table({"user_id": ["u1", "u2"], "tags": pa.array(tags, pa.list_(pa.string()))})
        pq.write_table(table, source)

    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping))
        night([["a", "b"], ["c"]])
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        assert _profiles(sandbox.url)["u1"] == {"tags": ["a", "b"]}
        night([[], ["c"]])
        assert run_cli("run", str(job), "--no-progress", "--fresh").returncode == 0
        profiles = _profiles(sandbox.url)
    assert profiles["u1"] == {} and profiles["u2"] == {"tags": ["c"]}


def test_on_empty_is_refused_for_event_attributes(tmp_path: Path) -> None:
    job = job_dict(
        tmp_path,
        "http://127.0.0.1:9",
        tmp_path / "events.csv",
        {
            "customer_id": "user_id",
            "event": {
                "action": "Bought",
                "time": "at",
                "attributes": {"amount": {"column": "amount", "on_empty": "unset"}},
            },
        },
    )
    job["import"] = "events"
    with pytest.raises(ConfigError, match=r"mapping\.event\.attributes\.amount\.on_empty"):
        load_job(write_job(tmp_path, job))
