"""Concurrent port creates on real SQLite: no duplicate IP, MAC or port key, every create
accounted for, exhaustion reported as 409 IpAddressGenerationFailure (never a 500), and a
network deleted under racing creates leaves nothing behind.

Two `Api` instances over one SQLite file stand in for two API servers: each has its own
connections and its own in-memory claim hints, so each allocates blind to the other's picks
and only the store's create-if-absent guards keep addresses unique.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from wyvern.api.app import Api, create_app
from wyvern.api.context import admin_context
from wyvern.api.errors import NeutronError
from wyvern.config import Settings
from wyvern.model.keys import ROOT
from wyvern.nb.sqlite import SqliteStore

THREADS = 16
CTX = admin_context("default")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Api]]:
    """Two API servers' worth of controllers on one SQLite database, quotas off."""
    path = str(tmp_path / "shared.db")
    apis = [Api(Settings(store="memory"), SqliteStore(path)) for _ in range(2)]
    quotas = apis[0].state.resources["quota"]
    quotas.update_quota(CTX, {"project": "default"}, {"quota": {"port": -1}})  # type: ignore[attr-defined]
    yield apis
    for api in apis:
        api.store.close()


def run_threads(n: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # surfaced below, with its traceback
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def network_with_subnet(api: Api, cidr: str) -> tuple[str, str]:
    res = api.state.resources
    net = res["network"].create_many(CTX, [{"name": "race"}])[0]
    sub = res["subnet"].create_many(CTX, [{"network_id": net["id"], "cidr": cidr, "ip_version": 4}])
    return str(net["id"]), str(sub[0]["id"])


def claims(api: Api, kind: str) -> dict[str, str]:
    prefix = f"{ROOT}uniq/{kind}/"
    return {kv.key[len(prefix) :]: kv.value.decode() for kv in api.store.list(prefix).items}


def check_consistent(api: Api, network_id: str) -> list[dict[str, Any]]:
    """Every port's values are distinct and claimed by it; no claim without its port."""
    ports = api.state.repo.objects("ports", network_id)
    ips = [(ip["subnet_id"], ip["ip_address"]) for p in ports for ip in p["fixed_ips"]]
    assert len(ips) == len(set(ips)), Counter(ips).most_common(3)
    macs = [p["mac_address"] for p in ports]
    assert len(macs) == len(set(macs))
    keys = [p["_key"] for p in ports]
    assert len(keys) == len(set(keys))
    assert claims(api, "ip") == {f"{s}/{ip}": p["id"] for p in ports for s, ip in _ips(p)}
    assert {k: v for k, v in claims(api, "mac").items() if k.startswith(network_id)} == {
        f"{network_id}/{p['mac_address']}": p["id"] for p in ports
    }
    assert {k: v for k, v in claims(api, "portkey").items() if k.startswith(network_id)} == {
        f"{network_id}/{p['_key']}": p["id"] for p in ports
    }
    return ports


def _ips(port: dict[str, Any]) -> list[tuple[str, str]]:
    return [(ip["subnet_id"], ip["ip_address"]) for ip in port["fixed_ips"]]


def test_racing_creates_exhaust_a_small_subnet(servers: list[Api]) -> None:
    """48 creates from 16 threads on two servers for the 29 addresses of a /27."""
    network_id, _ = network_with_subnet(servers[0], "10.1.0.0/27")
    made: list[str] = []
    failures: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        ports = servers[i % 2].state.resources["port"]
        for _ in range(3):
            try:
                port = ports.create_many(CTX, [{"network_id": network_id}])[0]
            except NeutronError as exc:
                with lock:
                    failures.append((exc.status, exc.type))
            else:
                with lock:
                    made.append(port["id"])

    run_threads(THREADS, work)
    assert len(made) == 29, failures
    assert failures == [(409, "IpAddressGenerationFailure")] * (48 - 29)
    ports = check_consistent(servers[1], network_id)
    assert sorted(p["id"] for p in ports) == sorted(made)


def test_racing_creates_through_http(tmp_path: Path) -> None:
    """16 HTTP clients, 10 creates each, on a /24: all 201, all distinct; then exhaustion."""
    app = create_app(Settings(store="memory"), SqliteStore(str(tmp_path / "http.db")))
    admin = TestClient(app)
    admin.put("/v2.0/quotas/default", json={"quota": {"port": -1}})
    net = admin.post("/v2.0/networks", json={"network": {"name": "n"}}).json()["network"]
    r = admin.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": net["id"], "cidr": "10.2.0.0/24", "ip_version": 4}},
    )
    assert r.status_code == 201
    statuses: Counter[tuple[int, str]] = Counter()
    lock = threading.Lock()

    def work(i: int, count: int) -> None:
        client = TestClient(app)
        for _ in range(count):
            resp = client.post("/v2.0/ports", json={"port": {"network_id": net["id"]}})
            kind = "" if resp.status_code == 201 else resp.json()["NeutronError"]["type"]
            with lock:
                statuses[(resp.status_code, kind)] += 1

    run_threads(THREADS, lambda i: work(i, 10))
    assert statuses == {(201, ""): 160}
    # 253 addresses in the pool: 93 left, asked for by 16 x 7 = 112 creates.
    statuses.clear()
    run_threads(THREADS, lambda i: work(i, 7))
    assert statuses == {(201, ""): 93, (409, "IpAddressGenerationFailure"): 19}
    ports = admin.get("/v2.0/ports").json()["ports"]
    assert len(ports) == 253
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 253
    assert len({p["mac_address"] for p in ports}) == 253
    app.state.api.store.close()


def test_cascade_delete_racing_creates_leaves_nothing(servers: list[Api]) -> None:
    """Creates keep coming while the other server cascade-deletes the network: afterwards no
    port, subnet or claim of that network remains, and creates failed only with 404."""
    network_id, subnet_id = network_with_subnet(
        servers[0], "10.3.0.0/20"
    )  # room for every racing create
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    gone = threading.Event()

    def work(i: int) -> None:
        if i == 0:
            for _ in range(5):
                servers[0].state.resources["port"].create_many(CTX, [{"network_id": network_id}])
            servers[1].state.resources["network"].delete(CTX, network_id, None, {"cascade": "true"})
            gone.set()
            return
        ports = servers[i % 2].state.resources["port"]
        for _ in range(200):
            try:
                ports.create_many(CTX, [{"network_id": network_id}])
                outcome = "created"
            except NeutronError as exc:
                outcome = exc.type
            with lock:
                seen[outcome] += 1
            if outcome == "NetworkNotFound" and gone.is_set():
                return

    run_threads(6, work)
    assert set(seen) <= {"created", "NetworkNotFound"}, seen
    api = servers[0]
    assert api.state.repo.get("networks", network_id) is None
    assert api.state.repo.objects("ports", network_id) == []
    assert api.state.repo.get("subnets", subnet_id) is None
    assert claims(api, "ip") == {}
    assert not [k for k in claims(api, "mac") if k.startswith(network_id)]
    assert not [k for k in claims(api, "portkey") if k.startswith(network_id)]
