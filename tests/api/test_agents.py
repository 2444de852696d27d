"""Agents (enable/disable, delete) and availability zones through the HTTP API, over real
chassis registrations (wyvern.controller.chassis) in a memory store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, error_type, make_client
from wyvern.controller.chassis import ChassisInfo, ChassisRegistration
from wyvern.model.keys import chassis_key, gateway_status_key, registry_key, status_key
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Put

P1 = as_project("p1")
EXT = {
    "name": "public",
    "router:external": True,
    "provider:network_type": "flat",
    "provider:physical_network": "physnet1",
}


def register(store: MemoryStore, name: str, zone: str, priority: int = 0) -> ChassisRegistration:
    info = ChassisInfo(
        name,
        "192.0.2.7",
        hostname=name,
        bridge_mappings={"physnet1": "br-ex"},
        gateway_priority=priority,
        availability_zone=zone,
    )
    reg = ChassisRegistration(store, info, ttl=30)
    reg.register()
    return reg


@pytest.fixture
def cloud() -> Iterator[tuple[MemoryStore, dict[str, ChassisRegistration], TestClient]]:
    """gw-a (az1, priority 2), gw-b (az2, priority 1), compute (az3, no gateway), and
    dead (az4, its agent stopped)."""
    store = MemoryStore()
    regs = {
        "gw-a": register(store, "gw-a", "az1", 2),
        "gw-b": register(store, "gw-b", "az2", 1),
        "compute": register(store, "compute", "az3"),
        "dead": register(store, "dead", "az4"),
    }
    regs["dead"].stop()
    with make_client(store) as client:
        yield store, regs, client


def agents(client: TestClient) -> dict[str, dict[str, Any]]:
    return {a["host"]: a for a in client.get("/v2.0/agents").json()["agents"]}


def record(store: MemoryStore, key: str) -> dict[str, Any]:
    kv = store.get(key)
    assert kv is not None
    out: dict[str, Any] = orjson.loads(kv.value)
    return out


def put_agent(client: TestClient, agent_id: str, headers: Any = None, **attrs: Any) -> Any:
    return client.put(f"/v2.0/agents/{agent_id}", json={"agent": attrs}, headers=headers)


def test_agents_show_their_zone(cloud: Any) -> None:
    _, _, client = cloud
    shown = agents(client)
    assert {h: a["availability_zone"] for h, a in shown.items()} == {
        "gw-a": "az1",
        "gw-b": "az2",
        "compute": "az3",
        "dead": "az4",
    }
    assert all(a["admin_state_up"] is True for a in shown.values())
    listed = client.get("/v2.0/agents", params={"availability_zone": "az2"}).json()["agents"]
    assert [a["host"] for a in listed] == ["gw-b"]


def test_disable_an_agent_and_it_stays_disabled(cloud: Any) -> None:
    store, regs, client = cloud
    a = agents(client)["gw-a"]
    r = put_agent(client, a["id"], admin_state_up=False, description="maintenance")
    assert r.status_code == 200, r.text
    assert r.json()["agent"]["admin_state_up"] is False
    assert r.json()["agent"]["description"] == "maintenance"
    assert agents(client)["gw-a"]["admin_state_up"] is False
    # What other agents follow (the chassis record, its lease kept) says so too.
    assert record(store, chassis_key("gw-a"))["admin_state_up"] is False
    kv = store.get(chassis_key("gw-a"))
    assert kv is not None and kv.lease == regs["gw-a"].lease
    # The agent's registry refresh and a re-registration keep it.
    regs["gw-a"]._last_registry = float("-inf")
    regs["gw-a"].heartbeat()
    regs["gw-a"].stop()
    again = register(store, "gw-a", "az1", 2)
    assert again.admin_state_up is False
    assert record(store, chassis_key("gw-a"))["admin_state_up"] is False
    shown = agents(client)["gw-a"]
    assert shown["admin_state_up"] is False and shown["description"] == "maintenance"
    # enabled again, by name too
    r = put_agent(client, "gw-a", admin_state_up=True)
    assert r.status_code == 200 and record(store, chassis_key("gw-a"))["admin_state_up"] is True
    # a dead agent can be disabled (its registry record only)
    r = put_agent(client, agents(client)["dead"]["id"], admin_state_up=False)
    assert r.status_code == 200 and store.get(chassis_key("dead")) is None


def test_agent_update_errors_change_nothing(cloud: Any) -> None:
    store, _, client = cloud
    a = agents(client)["gw-a"]
    before = record(store, registry_key("gw-a"))
    for attrs, headers, status, kind in (
        ({"admin_state_up": False}, P1, 403, "PolicyNotAuthorized"),
        ({"host": "other"}, None, 400, None),
        ({"admin_state_up": "maybe"}, None, 400, "InvalidInput"),
    ):
        r = put_agent(client, a["id"], headers, **attrs)
        assert r.status_code == status, r.text
        if kind:
            assert error_type(r) == kind
    r = put_agent(client, "00000000-0000-0000-0000-000000000000", admin_state_up=False)
    assert r.status_code == 404 and error_type(r) == "AgentNotFound"
    assert record(store, registry_key("gw-a")) == before


def test_delete_an_agent(cloud: Any) -> None:
    """Neutron deletes any agent; one still alive registers again (enabled) on its next
    registry refresh."""
    store, regs, client = cloud
    shown = agents(client)
    r = client.delete(f"/v2.0/agents/{shown['dead']['id']}", headers=P1)
    assert r.status_code == 403 and "dead" in agents(client)
    r = client.delete(f"/v2.0/agents/{shown['dead']['id']}")
    assert r.status_code == 204
    assert "dead" not in agents(client) and store.get(registry_key("dead")) is None
    r = client.delete(f"/v2.0/agents/{shown['dead']['id']}")
    assert r.status_code == 404 and error_type(r) == "AgentNotFound"

    assert put_agent(client, "compute", admin_state_up=False).status_code == 200
    assert client.delete("/v2.0/agents/compute").status_code == 204
    assert "compute" not in agents(client)
    regs["compute"]._last_registry = float("-inf")
    regs["compute"].heartbeat()
    back = agents(client)["compute"]
    assert back["alive"] is True and back["admin_state_up"] is True
    assert record(store, chassis_key("compute"))["admin_state_up"] is True


def test_availability_zones_list(cloud: Any) -> None:
    _, _, client = cloud
    assert put_agent(client, "gw-b", admin_state_up=False).status_code == 200
    listed = client.get("/v2.0/availability_zones", headers=P1).json()["availability_zones"]
    got = {(z["name"], z["resource"]): z["state"] for z in listed}
    assert got == {
        ("az1", "network"): "available",
        ("az1", "router"): "available",
        ("az2", "network"): "unavailable",
        ("az2", "router"): "unavailable",
        ("az3", "network"): "available",
        ("az4", "network"): "available",  # (dead, but enabled: as Neutron)
    }
    routers = client.get("/v2.0/availability_zones", params={"resource": "router"}).json()
    assert [z["name"] for z in routers["availability_zones"]] == ["az1", "az2"]
    down = client.get("/v2.0/availability_zones", params={"state": "unavailable"}).json()
    assert {z["name"] for z in down["availability_zones"]} == {"az2"}


def test_hints_must_name_known_zones(cloud: Any) -> None:
    _, _, client = cloud
    r = client.post("/v2.0/networks", json={"network": {"availability_zone_hints": ["az9"]}})
    assert r.status_code == 404 and error_type(r) == "AvailabilityZoneNotFound"
    assert r.json()["NeutronError"]["message"] == "AvailabilityZone az9 could not be found."
    # az3 has no gateway chassis: no router zone
    r = client.post("/v2.0/routers", json={"router": {"availability_zone_hints": ["az3"]}})
    assert r.status_code == 404 and error_type(r) == "AvailabilityZoneNotFound"
    assert client.get("/v2.0/networks").json()["networks"] == []
    assert client.get("/v2.0/routers").json()["routers"] == []
    n = client.post(
        "/v2.0/networks", json={"network": {"availability_zone_hints": ["az3", "az1"]}}, headers=P1
    )
    assert n.status_code == 201 and n.json()["network"]["availability_zone_hints"] == ["az3", "az1"]
    r = client.post(
        "/v2.0/routers", json={"router": {"availability_zone_hints": ["az2"]}}, headers=P1
    )
    assert r.status_code == 201 and r.json()["router"]["availability_zone_hints"] == ["az2"]
    # hints are set at creation only (Neutron: allow_put false)
    r = client.put(
        f"/v2.0/routers/{r.json()['router']['id']}",
        json={"router": {"availability_zone_hints": ["az1"]}},
        headers=P1,
    )
    assert r.status_code == 400


def test_availability_zones_are_where_things_run(cloud: Any) -> None:
    store, _, client = cloud
    net = client.post("/v2.0/networks", json={"network": EXT}).json()["network"]
    client.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": net["id"], "cidr": "203.0.113.0/24", "ip_version": 4}},
    )
    r = client.post(
        "/v2.0/routers",
        json={
            "router": {
                "availability_zone_hints": ["az2"],
                "external_gateway_info": {"network_id": net["id"]},
            }
        },
    ).json()["router"]
    assert r["availability_zones"] == []  # not hosted yet
    # l3-agents lists the candidates: gw-b only (gw-a is not in az2)
    l3 = client.get(f"/v2.0/routers/{r['id']}/l3-agents").json()["agents"]
    assert [a["host"] for a in l3] == ["gw-b"]
    store.txn([], [Put(gateway_status_key(r["id"]), orjson.dumps({"chassis": "gw-b"}))])
    assert client.get(f"/v2.0/routers/{r['id']}").json()["router"]["availability_zones"] == ["az2"]
    # disabled: no longer a candidate
    assert put_agent(client, "gw-b", admin_state_up=False).status_code == 200
    assert client.get(f"/v2.0/routers/{r['id']}/l3-agents").json()["agents"] == []

    # A network spans the zones of the chassis its ports are bound to.
    n = client.post("/v2.0/networks", json={"network": {}}).json()["network"]
    assert n["availability_zones"] == []
    ports = [
        client.post("/v2.0/ports", json={"port": {"network_id": n["id"]}}).json()["port"]
        for _ in range(3)
    ]
    for p, where in zip(ports, ("compute", "gw-a", "compute"), strict=True):
        value = orjson.dumps({"chassis": where, "status": "ACTIVE"})
        store.txn([], [Put(status_key(n["id"], p["id"]), value)])
    shown = client.get(f"/v2.0/networks/{n['id']}").json()["network"]
    assert shown["availability_zones"] == ["az1", "az3"]
    listed = client.get("/v2.0/networks").json()["networks"]
    assert {x["id"]: x["availability_zones"] for x in listed}[n["id"]] == ["az1", "az3"]
