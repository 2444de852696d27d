"""Deletes are crash-safe: a process that dies between marking an object `_deleting` and
deleting it leaves no zombie (issue 11, defect 1). Its intent key lives on its lease; once
the lease is gone, the next reader (or an API start) undoes the mark, and nothing was
deleted, so the object, its ports and its claims are whole and the delete can run again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import create, make_client
from tests.conftest import BACKENDS, open_store
from wyvern.api.repo import INTENT_TTL, Repo
from wyvern.model.keys import intent_key, obj_key, uniq_prefix
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Store


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    store = open_store(request.param, request, tmp_path)
    with make_client(store) as client:
        yield client, store


def _marked_by_a_dead_process(store: Store, kind: str, id_: str, lease: int) -> None:
    """What a process leaves when it dies right after its mark: the mark and its intent."""
    repo = Repo(store)
    stored = repo.get(kind, id_)
    assert stored is not None
    stored.obj["_deleting"] = True
    txn = repo.txn()
    txn.update(stored)
    txn.put_leased(intent_key(kind, id_), b"delete", lease)
    txn.commit()


def _network_with_a_port(client: TestClient) -> tuple[str, str]:
    net = create(client, "networks", name="n")
    create(client, "subnets", network_id=net["id"], cidr="10.9.0.0/24", ip_version=4)
    port = create(client, "ports", network_id=net["id"])
    return net["id"], port["id"]


@pytest.mark.parametrize(
    ("kind", "path"),
    [("networks", "networks"), ("security_groups", "security-groups")],
)
def test_a_mark_whose_process_died_is_undone_and_the_delete_can_run_again(
    world: tuple[TestClient, Store], kind: str, path: str
) -> None:
    client, store = world
    if kind == "networks":
        obj_id, port_id = _network_with_a_port(client)
    else:
        obj_id, port_id = create(client, "security-groups", name="g")["id"], ""
    lease = store.grant(30)
    _marked_by_a_dead_process(store, kind, obj_id, lease)
    # While the deleting process lives (its lease holds), the object is being deleted.
    assert client.get(f"/v2.0/{path}/{obj_id}").status_code == 404
    store.revoke(lease)  # the process died: the store drops its intent with the lease
    got = client.get(f"/v2.0/{path}/{obj_id}")
    assert got.status_code == 200, got.text  # the mark was undone by this read
    raw = store.get(Repo(store).get(kind, obj_id).key)  # type: ignore[union-attr]
    assert raw is not None and "_deleting" not in orjson.loads(raw.value)
    if port_id:
        assert client.get(f"/v2.0/ports/{port_id}").status_code == 200
    params = "?cascade=true" if kind == "networks" else ""
    assert client.delete(f"/v2.0/{path}/{obj_id}{params}").status_code == 204
    assert client.get(f"/v2.0/{path}/{obj_id}").status_code == 404
    assert store.get(intent_key(kind, obj_id)) is None
    if port_id:
        assert client.get(f"/v2.0/ports/{port_id}").status_code == 404
        assert store.list(uniq_prefix("mac", obj_id)).items == []


def _raw_network(store: Store, net_id: str) -> dict[str, object]:
    """The stored network as it is, read without the repository (which would settle it)."""
    kv = store.get(obj_key("networks", net_id))
    assert kv is not None
    got: dict[str, object] = orjson.loads(kv.value)
    return got


def test_a_mark_left_without_an_intent_is_undone_when_an_api_starts(tmp_path: Path) -> None:
    """A bare mark (older code, or a lost intent) is settled by an API's start."""
    db = tmp_path / "w.db"
    with make_client(SqliteStore(db)) as client:
        net_id, _ = _network_with_a_port(client)
    store = SqliteStore(db)
    repo = Repo(store)
    stored = repo.get("networks", net_id)
    assert stored is not None
    stored.obj["_deleting"] = True
    txn = repo.txn()
    txn.update(stored)
    txn.commit()
    assert _raw_network(store, net_id).get("_deleting") is True  # (the zombie, as stored)
    with make_client(store) as client:  # an API starts on it
        assert "_deleting" not in _raw_network(store, net_id)
        assert client.get(f"/v2.0/networks/{net_id}").status_code == 200


def test_a_delete_killed_between_its_mark_and_its_delete_leaves_no_zombie(tmp_path: Path) -> None:
    """A real process, killed (SIGKILL) right after the mark committed: its lease stops
    being kept alive, and a fresh API on the same file then serves the network whole."""
    db = tmp_path / "w.db"
    script = textwrap.dedent(
        f"""
        import os
        from wyvern.api.app import create_app
        from wyvern.config import Settings
        from wyvern.nb.sqlite import SqliteStore
        from fastapi.testclient import TestClient

        store = SqliteStore({str(db)!r})
        client = TestClient(create_app(Settings(store="memory"), store))
        net = client.post("/v2.0/networks", json={{"network": {{"name": "n"}}}}).json()
        nid = net["network"]["id"]
        client.post("/v2.0/subnets", json={{"subnet": {{"network_id": nid,
                    "cidr": "10.9.0.0/24", "ip_version": 4}}}})
        client.post("/v2.0/ports", json={{"port": {{"network_id": nid}}}})
        print(nid, flush=True)
        def die(*args, **kwargs):  # the step boundary: marked, nothing deleted yet
            os._exit(137)
        import wyvern.api.resources.networks as networks
        networks.Networks.delete_ops = die
        client.delete(f"/v2.0/networks/{{nid}}?cascade=true")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 137, run.stderr
    net_id = run.stdout.split()[0]
    store = SqliteStore(db)
    assert _raw_network(store, net_id).get("_deleting") is True  # (what the kill left)
    try:
        with make_client(store) as client:
            # (the dead process's lease runs out after INTENT_TTL; until then, deleting)
            deadline = time.monotonic() + INTENT_TTL + 5
            while client.get(f"/v2.0/networks/{net_id}").status_code == 404:
                assert time.monotonic() < deadline, "the abandoned mark was never undone"
                time.sleep(0.2)
            ports = client.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]
            assert len(ports) == 1
            assert client.delete(f"/v2.0/networks/{net_id}?cascade=true").status_code == 204
            assert client.get(f"/v2.0/ports?network_id={net_id}").json()["ports"] == []
    finally:
        store.close()
