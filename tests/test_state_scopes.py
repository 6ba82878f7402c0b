"""The state file keeps each job's memory apart, and an older file upgrades keeping its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from importer.state import SCHEMA, SCHEMA_VERSION, Scope, StateStore, job_identity
from importer.state.snapshot import read_snapshot

TARGET = {"url": "https://api-01.moengage.com", "workspace_id": "W", "project_code": None}
OTHER = {**TARGET, "url": "http://127.0.0.1:9"}


def test_job_identity_is_the_job_files_stem() -> None:
    assert job_identity("jobs/users.yaml") == "users"
    assert job_identity("jobs/profiles.yaml") != job_identity("jobs/users.yaml")


def test_each_job_and_target_has_a_key_of_its_own() -> None:
    keys = {
        Scope("users", TARGET).key,
        Scope("profiles", TARGET).key,
        Scope("users", OTHER).key,
        Scope("users", TARGET, {"customer_id": "id"}).key,
    }
    assert len(keys) == 4
    assert Scope("", TARGET).key == Scope("users", TARGET).legacy


def test_fresh_forgets_only_its_own_scope(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    a, b = Scope("a", TARGET), Scope("b", TARGET)
    for scope in (a, b):
        store = StateStore(path, scope.key)
        store.claim(scope)
        store.mark_settled("/in.csv", "fp", [1, 2, 3])
        store.close()
    store = StateStore(path, a.key)
    store.reset()
    assert not store.has_progress() and store.any_progress()
    assert store.with_scope(b.key).settled("/in.csv", "fp").ranges == [(1, 3)]
    store.close()


def test_acceptances_count_only_for_the_same_job_and_target(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rehearsal, real = Scope("users", OTHER), Scope("users", TARGET)
    remapped = Scope("users", TARGET, {"customer_id": "other"})
    store = StateStore(path, rehearsal.key)
    for scope in (rehearsal, real, remapped):
        store.with_scope(scope.key).claim(scope)
    store.mark_settled("/in.csv", "fp", [1, 2, 3])  # the rehearsal accepted rows 1-3
    store.with_scope(remapped.key).mark_settled("/in.csv", "fp", [7])
    assert store.with_scope(real.key).accepted("/in.csv", "fp") == [(7, 7)]
    store.close()


def test_a_version_3_file_upgrades_and_its_job_takes_over_its_progress(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    scope = Scope("users", TARGET, {"customer_id": "id"})
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)
    old.execute("INSERT INTO source_files VALUES (1, ?, '/in.csv', 'fp')", (scope.legacy,))
    old.execute("INSERT INTO settled_rows VALUES (1, 1, 500, 0)")
    old.execute("INSERT INTO snapshot_scopes VALUES (1, ?)", (scope.legacy,))
    old.execute("INSERT INTO snapshot VALUES (1, 42, 7)")
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()
    store = StateStore(path, scope.key)
    (version,) = store.database.db.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 4
    assert not store.has_progress()
    assert store.claim(scope)
    assert store.settled("/in.csv", "fp").ranges == [(1, 500)]
    keys, prints = read_snapshot(store.database.db, scope.key)
    assert keys.tolist() == [42] and prints.tolist() == [7]
    # Another job with the same target and mapping finds it taken: it starts from nothing.
    other = Scope("profiles", TARGET, {"customer_id": "id"})
    assert not store.with_scope(other.key).claim(other)
    store.close()
