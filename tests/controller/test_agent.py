"""The agent against a real store and a real userspace OVS: objects in, flows and status out.

The API (TestClient over the same SQLite store) writes networks and ports; VMs are
namespaces plugged the os-vif way; the agent binds them, installs flows and writes the
port status the API then shows. A second agent on the same OVS (a restart) sends nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests import system
from tests.api.conftest import create, make_client
from tests.southbound.conftest import in_netns, unique
from wyvern.controller.agent import Agent
from wyvern.controller.chassis import ChassisInfo
from wyvern.model.keys import chassis_key, registry_key, status_key
from wyvern.nb.sqlite import SqliteStore
from wyvern.southbound import vif
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsInstance, netns_exists


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, SqliteStore]]:
    store = SqliteStore(str(tmp_path / "wyvern.db"))
    with make_client(store) as client:
        yield client, store


@pytest.fixture
def ovs(request: pytest.FixtureRequest) -> Iterator[OvsInstance]:
    """A private OVS with br-int in its own netns (as tests/southbound's fixture)."""
    system.require(request)
    instance = OvsInstance.start(netns=unique("wvt-agt-"))
    try:
        instance.ensure_bridge("br-int")
        yield instance
    finally:
        instance.stop()


@contextlib.contextmanager
def plugged(ovs: OvsInstance, port: dict[str, Any], mtu: int) -> Iterator[str]:
    ns = unique("wvt-vm-")
    ip = port["fixed_ips"][0]["ip_address"]
    vif.plug(ovs, port["id"], port["mac_address"], ns, mtu, ip_cidr=f"{ip}/24")
    try:
        yield ns
    finally:
        vif.unplug(ovs, port["id"], delete_netns=True)
        if netns_exists(ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def status(store: SqliteStore, port: dict[str, Any]) -> dict[str, Any] | None:
    kv = store.get(status_key(port["network_id"], port["id"]))
    return orjson.loads(kv.value) if kv else None


@pytest.mark.system
def test_agent_binds_plugged_ports_installs_flows_and_reports_active(
    api: tuple[TestClient, SqliteStore], ovs: OvsInstance
) -> None:
    client, store = api
    net = create(client, "networks", name="n")
    create(client, "subnets", network_id=net["id"], cidr="10.7.0.0/24", ip_version=4)
    p1 = create(client, "ports", network_id=net["id"], name="vm1")
    p2 = create(client, "ports", network_id=net["id"], name="vm2")
    info = ChassisInfo("chassis-a", "127.0.0.1", hostname="host-a")
    agent = Agent(store, ovs, info, lease_ttl=3, poll_interval=0.05, packet_in=False)
    agent.start()
    try:
        chassis = orjson.loads(store.get(chassis_key("chassis-a")).value)  # type: ignore[union-attr]
        assert chassis["tunnel_ip"] == "127.0.0.1" and chassis["encaps"] == ["geneve", "vxlan"]
        assert isinstance(agent.installer, FlowInstaller)
        assert agent.installer.dump(), "global flows installed at start"
        with plugged(ovs, p1, net["mtu"]) as ns1, plugged(ovs, p2, net["mtu"]):

            def both_active() -> bool:
                return all((status(store, p) or {}).get("status") == "ACTIVE" for p in (p1, p2))

            assert agent.wait_for(both_active, 10), (agent.stats, agent.view.bindings)
            st1 = status(store, p1)
            assert st1 is not None
            assert st1["chassis"] == "chassis-a" and st1["host"] == "host-a"
            assert st1["installed_revision"] >= agent.sync.mod_revision[("port", p1["id"])]
            assert st1["ofport"] == agent.view.bindings[p1["id"]].ofport
            # The API shows the agent's facts without them ever entering the port object.
            shown = client.get(f"/v2.0/ports/{p1['id']}").json()["port"]
            assert shown["status"] == "ACTIVE"
            assert shown["binding:host_id"] == "host-a"
            assert shown["binding:vif_type"] == "ovs"
            listed = client.get("/v2.0/ports", params={"status": "ACTIVE"}).json()["ports"]
            assert {p["id"] for p in listed} == {p1["id"], p2["id"]}
            # Installed = desired, and the switch holds them.
            assert len(agent.installer.dump()) == agent.engine.flow_count()
            ip2 = p2["fixed_ips"][0]["ip_address"]
            ping = in_netns(ns1, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip2)
            assert ping.returncode == 0, ping.stdout + ping.stderr

            # A restarted agent (same OVS) reads the switch and sends nothing (this one sent
            # the flows and the statuses).
            assert agent.stats.flows_sent > 0 and agent.stats.status_writes > 0
            agent.stop()
            again = Agent(store, ovs, info, lease_ttl=3, poll_interval=0.05, packet_in=False)
            again.start()
            agent = again
            assert agent.stats.flows_sent == 0
            assert agent.stats.status_writes == 0

        # Unplugged: the status keys go, and the API shows the ports DOWN again.
        assert agent.wait_for(lambda: status(store, p1) is None, 10)
        shown = client.get(f"/v2.0/ports/{p1['id']}").json()["port"]
        assert shown["status"] == "DOWN"
    finally:
        agent.stop()
    # A clean stop revokes the lease: the chassis record is gone, the registry stays.
    assert store.get(chassis_key("chassis-a")) is None
    assert store.get(registry_key("chassis-a")) is not None


def test_registered_chassis_are_listed_as_neutron_agents_for_admins_only() -> None:
    from tests.api.conftest import as_project
    from wyvern.controller.chassis import ChassisRegistration
    from wyvern.nb.memory import MemoryStore

    store = MemoryStore()
    reg = ChassisRegistration(store, ChassisInfo("c1", "192.0.2.7", hostname="h1"), ttl=30)
    reg.register()
    dead = ChassisRegistration(store, ChassisInfo("c2", "192.0.2.8", hostname="h2"), ttl=30)
    dead.register()
    dead.stop()  # a clean stop expires the lease at once
    with make_client(store) as client:
        agents = client.get("/v2.0/agents").json()["agents"]
        by_host = {a["host"]: a for a in agents}
        assert set(by_host) == {"h1", "h2"}
        a = by_host["h1"]
        assert a["alive"] is True and by_host["h2"]["alive"] is False
        assert a["agent_type"] == "Wyvern agent" and a["binary"] == "wyvern-agent"
        assert a["admin_state_up"] is True and a["topic"] == "N/A"
        assert a["configurations"]["tunnel_ip"] == "192.0.2.7"
        assert a["configurations"]["bridge_mappings"] == {}
        for stamp in ("heartbeat_timestamp", "created_at", "started_at"):
            assert a[stamp]
        one = client.get(f"/v2.0/agents/{a['id']}")
        assert one.status_code == 200 and one.json()["agent"] == a
        alive = client.get("/v2.0/agents", params={"alive": "false"}).json()["agents"]
        assert [x["host"] for x in alive] == ["h2"]
        assert client.get("/v2.0/agents/nope").status_code == 404
        member = as_project("p1")
        assert client.get("/v2.0/agents", headers=member).json() == {"agents": []}
        assert client.get(f"/v2.0/agents/{a['id']}", headers=member).status_code == 403


def test_router_interface_ports_are_active_while_a_live_chassis_routes_them(
    tmp_path: Path,
) -> None:
    """A router interface port is bound nowhere (our routers are distributed): DOWN until
    a chassis that follows its network has the router's flows for it installed, then
    ACTIVE while that chassis lives (as OVN shows a router port up once programmed)."""
    from wyvern.model.keys import router_port_status_key

    store = SqliteStore(str(tmp_path / "wyvern.db"))
    with make_client(store) as client:
        net = create(client, "networks", name="n")
        sub = create(client, "subnets", network_id=net["id"], cidr="10.8.0.0/24", ip_version=4)
        router = create(client, "routers", name="r")
        r = client.put(
            f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
        )
        assert r.status_code == 200, r.text
        port_id = r.json()["port_id"]

        def shown() -> str:
            return str(client.get(f"/v2.0/ports/{port_id}").json()["port"]["status"])

        def listed() -> set[str]:
            ports = client.get("/v2.0/ports", params={"status": "ACTIVE"}).json()["ports"]
            return {p["id"] for p in ports}

        assert shown() == "DOWN"  # no chassis routes for it yet
        info = ChassisInfo("chassis-r", "127.0.0.1", hostname="host-r")
        agent = Agent(store, None, info, lease_ttl=3, poll_interval=0.05, packet_in=False)
        agent.start()
        try:
            assert agent.wait_for(lambda: shown() == "ACTIVE", 10), agent.stats
            assert store.get(router_port_status_key(port_id, "chassis-r")) is not None
            assert listed() == {port_id}
            # The chassis holds the router's flows for that interface (its address).
            from wyvern.southbound.recorder import RecordingInstaller

            assert isinstance(agent.installer, RecordingInstaller)
            assert any("10.8.0.1" in line for line in agent.installer.installed)
            # Removed: its status key goes with the port.
            r = client.put(
                f"/v2.0/routers/{router['id']}/remove_router_interface",
                json={"subnet_id": sub["id"]},
            )
            assert r.status_code == 200, r.text
            key = router_port_status_key(port_id, "chassis-r")
            assert agent.wait_for(lambda: store.get(key) is None, 10)
            r = client.put(
                f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
            )
            port_id = r.json()["port_id"]
            assert agent.wait_for(lambda: shown() == "ACTIVE", 10), agent.stats
        finally:
            agent.stop()
        # A chassis that is gone routes nothing: its key no longer counts.
        assert store.get(chassis_key("chassis-r")) is None
        assert shown() == "DOWN" and listed() == set()
