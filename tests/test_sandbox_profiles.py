"""The sandbox keeps profiles as MoEngage does and serves the Delete and Get User APIs, so
tests judge the end state; it also plays 2xx answers that are not MoEngage's."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from importer import moengage
from importer.sandbox import SandboxServer
from importer.sandbox.profiles import ProfileStore
from tests.test_sandbox import KEY, WORKSPACE, bulk, customer, in_process, post


def delete(url: str, customer_id: str, workspace: str = WORKSPACE) -> requests.Response:
    body = {"identity_type": "customer_id", "identity_value": customer_id}
    return requests.post(
        f"{url}{moengage.DELETE_PATH}",
        params={"app_id": workspace},
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
        auth=(workspace, KEY),
        timeout=10,
    )


def export(url: str, ids: list[str]) -> requests.Response:
    return requests.post(
        f"{url}{moengage.EXPORT_PATH}",
        params={"app_id": WORKSPACE},
        data=orjson.dumps({"identity_type": "customer_id", "identity_values": ids}),
        headers={"Content-Type": "application/json"},
        auth=(WORKSPACE, KEY),
        timeout=10,
    )


def profiles(server: SandboxServer) -> dict[str, Any]:
    got = requests.get(f"{server.url}/_sandbox/profiles", timeout=10).json()
    return dict(got["profiles"])


def test_updates_merge_arrays_add_and_remove_and_unsets_clear(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        post(server.url, bulk(customer("c1", u_em="a@x.io", tags=["a"], points=3)))
        second = customer("c1", points=4)
        second["attributes"][moengage.ADD_TO_ARRAY_KEY] = {"tags": ["b", "a"]}
        post(server.url, bulk(second))
        third = customer("c1")
        third["attributes"][moengage.REMOVE_FROM_ARRAY_KEY] = {"tags": ["a"]}
        third[moengage.UNSET_ATTRIBUTES_KEY] = [{"type": "equals", "attr": "u_em"}]
        assert post(server.url, bulk(third)).status_code == 200
        assert profiles(server) == {"c1": {"points": 4, "tags": ["b"]}}
        assert server.stats()["unsets_applied"] == 1


def test_a_workspace_without_unset_ignores_it(tmp_path: Path) -> None:
    with in_process(tmp_path, unset_supported=False) as server:
        post(server.url, bulk(customer("c1", u_em="a@x.io")))
        blank = customer("c1")
        blank[moengage.UNSET_ATTRIBUTES_KEY] = [{"type": "equals", "attr": "u_em"}]
        assert post(server.url, bulk(blank)).status_code == 200
        assert profiles(server) == {"c1": {"u_em": "a@x.io"}}


def test_update_existing_only_never_creates() -> None:
    store = ProfileStore()
    element = customer("c9", name="x")
    element["update_existing_only"] = True
    store.apply(element, 0.0)
    assert store.profiles == {}


def test_delete_then_not_found_and_the_window_loses_updates(tmp_path: Path) -> None:
    with in_process(tmp_path, delete_window=3600.0) as server:
        post(server.url, bulk(customer("c1", a=1), customer("c2", a=2)))
        first = delete(server.url, "c1")
        assert first.status_code == 200 and first.json()["status"] == "success"
        again = delete(server.url, "c1")
        assert again.status_code == 400
        assert again.json()["error"]["message"] == moengage.USER_NOT_FOUND_MESSAGE
        post(server.url, bulk(customer("c1", a=5)))  # inside the day before the hard delete
        assert profiles(server) == {"c2": {"a": 2}}
        assert server.stats()["deletes"] == 1 and server.stats()["deletes_not_found"] == 1


def test_delete_needs_the_workspace_credentials(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        post(server.url, bulk(customer("c1", a=1)))
        assert delete(server.url, "c1", workspace="OTHER").status_code == 401
        assert profiles(server) == {"c1": {"a": 1}}


def test_deletes_have_their_own_limit(tmp_path: Path) -> None:
    with in_process(tmp_path, delete_rate=2) as server:
        post(server.url, bulk(*(customer(f"c{i}", a=i) for i in range(4))))
        statuses = [delete(server.url, f"c{i}").status_code for i in range(4)]
        assert statuses == [200, 200, 429, 429]
        assert post(server.url, bulk(customer("c9", a=9))).status_code == 200


def test_get_user_reads_back_at_most_twenty(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        post(server.url, bulk(customer("c1", a=1)))
        answer = export(server.url, ["c1", "nobody"]).json()
        assert answer["data"] == [{"customer_id": "c1", "attributes": {"a": 1}}]
        assert answer["not_found"] == ["nobody"]
        assert export(server.url, [f"c{i}" for i in range(21)]).status_code == 400


@pytest.mark.parametrize("kind", ["html", "fail", "empty", "202", "204"])
def test_a_2xx_that_is_not_moengage_keeps_nothing(tmp_path: Path, kind: str) -> None:
    with in_process(tmp_path, success_body=kind) as server:
        answer = post(server.url, bulk(customer("c1", a=1)))
        assert 200 <= answer.status_code < 300
        assert b'"status":"success"' not in answer.content
        assert profiles(server) == {}
        assert (tmp_path / "record.jsonl").read_text() == ""


def test_rate_limit_headers_say_the_room_left(tmp_path: Path) -> None:
    with in_process(tmp_path, rate=10, ratelimit_headers=True) as server:
        answer = post(server.url, bulk(*(customer(f"c{i}", a=i) for i in range(4))))
        assert answer.headers[moengage.RATE_LIMIT_LIMIT_HEADER] == "10"
        assert answer.headers[moengage.RATE_LIMIT_REMAINING_HEADER] == "6"
        assert 1 <= int(answer.headers[moengage.RATE_LIMIT_RESET_HEADER]) <= 60


def test_records_and_profiles_dump_are_private(tmp_path: Path) -> None:
    dump = tmp_path / "profiles.json"
    with in_process(tmp_path, profiles=dump) as server:
        post(server.url, bulk(customer("c1", u_em="a@x.io")))
    assert stat.S_IMODE(os.stat(tmp_path / "record.jsonl").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    assert orjson.loads(dump.read_bytes())["profiles"] == {"c1": {"u_em": "a@x.io"}}
