"""In-process checks of where a job's outputs go and what refuses them: default paths per
job, output vetting, ownership marks, the old default state carried over, first sync."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from importer.config import JobConfig, load_job
from importer.outputs.ownership import OutputOwned, check_owner, claim, mark_path
from importer.outputs.vetting import Kind, Output, OutputRefused, vet_outputs
from importer.run.carry_over import carry_over, legacy_state
from importer.run.first_sync import FIRST_SYNC, check_first_sync
from importer.run.preflight import dry_run_outputs, job_scope
from importer.state import StateStore
from tests.support import USERS_MAPPING, users_csv


def _write(folder: Path, name: str, **sections: Any) -> Path:
    job: dict[str, Any] = {
        "api": {"base_url": "http://127.0.0.1:9", "workspace_id": "W", "api_key": "k"},
        "source": {"path": str(users_csv(folder, 3))},
        "mapping": USERS_MAPPING,
        **sections,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jobs loaded from tmp_path as the current directory (default outputs are relative)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_outputs_left_unset_go_to_a_folder_named_after_the_job_file(here: Path) -> None:
    job = load_job(_write(here, "nightly.yaml"))
    assert (job.output.dead_letter, job.output.report, job.output.state) == (
        Path("out/nightly/dead_letter.jsonl"),
        Path("out/nightly/report.json"),
        Path("out/nightly/state.db"),
    )
    assert job.job_file() == (here / "nightly.yaml").resolve()
    # A dead-letter path set in the file keeps the state beside it, named after the job.
    named = load_job(_write(here, "b.yaml", output={"dead_letter": "x/dl.jsonl"}))
    assert named.output.state == Path("x/b.state.db")
    assert named.output.report == Path("out/b/report.json")


def _outputs(folder: Path) -> list[Output]:
    return [
        Output("report file", "--report", folder / "r.json", Kind.REPORT),
        Output("dead-letter file", "--dead-letter", folder / "d.jsonl", Kind.DEAD_LETTER),
        Output("state file", "--state", folder / "s.db", Kind.STATE, (folder / "s.db-wal",)),
    ]


def test_vetting_refuses_an_input_the_job_file_another_output_and_another_kind(
    tmp_path: Path,
) -> None:
    outputs = _outputs(tmp_path)
    vet_outputs(outputs, [tmp_path / "in.csv"], tmp_path / "job.yaml")  # all distinct: fine
    report, _, state = outputs
    with pytest.raises(OutputRefused, match="is an input file"):
        vet_outputs(outputs, [tmp_path / "." / "r.json"], None)
    with pytest.raises(OutputRefused, match="is the job file"):
        vet_outputs(outputs, [], tmp_path / "d.jsonl")
    same = Output("dead-letter file", "--dead-letter", report.path, Kind.DEAD_LETTER)
    with pytest.raises(OutputRefused, match=r"is also the dead-letter file \(--dead-letter\)"):
        vet_outputs([report, same], [], None)
    beside = Output("report file", "--report", tmp_path / "s.db-wal", Kind.REPORT)
    with pytest.raises(OutputRefused, match="a file the state file writes beside it"):
        vet_outputs([beside, state], [], None)
    (tmp_path / "r.json").write_text("id,name\n1,a\n")
    with pytest.raises(OutputRefused, match=r"exists and is a text file \(CSV or other\)"):
        vet_outputs(outputs, [], None)
    (tmp_path / "r.json").write_text(json.dumps({"rows_read": 3, "exit_code": 0}))
    sqlite3.connect(tmp_path / "d.jsonl").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(OutputRefused, match=r"d\.jsonl exists and is an SQLite database"):
        vet_outputs(outputs, [], None)
    (tmp_path / "d.jsonl").write_text('{"source": "x.csv", "row": 1, "stage": "validation"}\n')
    vet_outputs(outputs, [], None)  # each holds its own kind now


def test_a_hard_link_to_the_input_is_the_input(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a\n1\n")
    (tmp_path / "r.json").hardlink_to(source)
    with pytest.raises(OutputRefused, match="is an input file"):
        vet_outputs(_outputs(tmp_path), [source], None)


def test_an_output_marked_by_another_job_is_refused_naming_both(here: Path) -> None:
    first = load_job(_write(here, "users.yaml"))
    second = load_job(_write(here, "profiles.yaml"))
    output = here / "shared" / "report.json"
    check_owner(output, "report file", "output.report", second)  # no mark: anyone's
    claim(output, first)
    mark = json.loads(mark_path(output).read_text())
    assert mark["job"] == str(here / "users.yaml") and mark["target"]["workspace_id"] == "W"
    check_owner(output, "report file", "output.report", first)  # its own
    with pytest.raises(OutputOwned) as refused:
        check_owner(output, "report file", "output.report", second)
    assert str(here / "users.yaml") in str(refused.value)
    assert str(here / "profiles.yaml") in str(refused.value)
    # A mark whose job file is gone is taken over.
    (here / "users.yaml").unlink()
    check_owner(output, "report file", "output.report", second)


def _state_with_snapshot(path: Path, job: JobConfig, customers: int) -> None:
    StateStore(path, job_scope(job)).close()  # the schema
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO snapshot_scopes(scope) VALUES (?)", (job_scope(job),))
        (sid,) = db.execute("SELECT id FROM snapshot_scopes").fetchone()
        db.executemany(
            "INSERT INTO snapshot(scope_id, customer, fingerprint) VALUES (?, ?, ?)",
            [(sid, n, n) for n in range(customers)],
        )
    db.close()


def test_the_old_default_state_is_found_and_copied_into_the_job_folder(here: Path) -> None:
    job = load_job(_write(here, "users.yaml"))
    assert legacy_state(job) is None and carry_over(job) is None  # nothing to carry over
    (here / "out").mkdir()
    _state_with_snapshot(here / "out" / "state.db", job, 5)
    assert legacy_state(job) == Path("out/state.db")
    # A dry run reads it where it is.
    assert dry_run_outputs(job, dead_letter=None, report=None)["state"] == "out/state.db"
    assert carry_over(job) == Path("out/state.db")
    assert (here / "out" / "users" / "state.db").is_file()
    assert (here / "out" / "state.db").is_file()  # left as it was
    assert legacy_state(job) is None  # once carried over, the job's own file is used
    changed = load_job(_write(here, "users.yaml", sync={"mode": "changed"}))
    assert check_first_sync(changed) is None  # the snapshot carried over is found


def test_first_sync_names_a_snapshot_of_the_same_target_and_mapping_elsewhere(
    here: Path,
) -> None:
    spec = {"sync": {"mode": "changed"}}
    users = load_job(_write(here, "users.yaml", **spec))
    assert check_first_sync(load_job(_write(here, "all.yaml"))) is None  # sync.mode all
    first = check_first_sync(users)
    assert first is not None and first.elsewhere == []
    assert first.notes() == [
        f"{FIRST_SYNC} (no snapshot of this target and mapping in out/users/state.db)"
    ]
    (here / "out" / "old").mkdir(parents=True)
    _state_with_snapshot(here / "out" / "old" / "state.db", users, 7)
    first = check_first_sync(users)
    assert first is not None
    assert first.elsewhere == [(Path("out/old/state.db"), 7)]
    assert "set output.state: out/old/state.db" in first.notes()[1]
    # Another mapping's snapshot is not this job's.
    other = load_job(
        _write(here, "other.yaml", **spec),
        overrides={"mapping": {"customer_id": "first_name"}},
    )
    found = check_first_sync(other)
    assert found is not None and found.elsewhere == []
