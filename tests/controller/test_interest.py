"""Selective distribution, with fake chassis (no OVS) on every store backend.

The API (TestClient) writes the topology; three fake-chassis agents share the store.
Each must follow exactly the networks its ports need (plus those behind their routers),
bind the ports requested on it, report them ACTIVE, and drop a network's objects and
flows when its last port there goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import create, make_client
from wyvern.controller.agent import Agent
from wyvern.controller.chassis import ChassisInfo
from wyvern.controller.interest import Interest
from wyvern.model.keys import gateway_status_key, network_prefixes, status_key
from wyvern.model.view import GatewayHost
from wyvern.nb.store import Put, Store
from wyvern.southbound.recorder import RecordingInstaller


@pytest.fixture
def fakes(store: Store) -> Iterator[dict[str, Agent]]:
    agents = {
        name: Agent(
            store,
            None,
            ChassisInfo(name, f"192.0.2.{i + 1}", hostname=name),
            poll_interval=0.05,
            selective=True,
        )
        for i, name in enumerate(("hv1", "hv2", "hv3"))
    }
    started: list[Agent] = []
    try:
        for agent in agents.values():
            agent.start()
            started.append(agent)
        yield agents
    finally:
        for agent in started:
            agent.stop()


def _recorded(agent: Agent) -> set[str]:
    installer = agent.installer
    assert isinstance(installer, RecordingInstaller)
    return installer.installed


def _active(store: Store, port: dict[str, Any], chassis: str) -> bool:
    kv = store.get(status_key(port["network_id"], port["id"]))
    if kv is None:
        return False
    st = orjson.loads(kv.value)
    return bool(st.get("chassis") == chassis and st.get("status") == "ACTIVE")


def _network(client: TestClient, name: str, cidr: str) -> tuple[dict[str, object], str]:
    net = create(client, "networks", name=name)
    sub = create(client, "subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return net, str(sub["id"])


def test_fake_chassis_follow_only_what_their_ports_need(
    store: Store, fakes: dict[str, Agent]
) -> None:
    with make_client(store) as client:
        a, _ = _network(client, "a", "10.1.0.0/24")
        b, sb = _network(client, "b", "10.2.0.0/24")
        c, sc = _network(client, "c", "10.3.0.0/24")
        router = create(client, "routers", name="r")
        for sub in (sb, sc):
            resp = client.put(
                f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub}
            )
            assert resp.status_code == 200, resp.text
        pa = create(client, "ports", network_id=a["id"], **{"binding:host_id": "hv1"})
        pb = create(client, "ports", network_id=b["id"], **{"binding:host_id": "hv2"})

        hv1, hv2, hv3 = fakes["hv1"], fakes["hv2"], fakes["hv3"]
        assert hv1.wait_for(lambda: _active(store, pa, "hv1"))
        assert hv2.wait_for(lambda: _active(store, pb, "hv2"))
        # hv1: only a; hv2: b and, through the router, c; hv3: nothing
        assert hv1.wait_for(lambda: set(hv1.view.networks) == {a["id"]})
        assert hv2.wait_for(lambda: set(hv2.view.networks) == {b["id"], c["id"]})
        assert set(hv3.view.networks) == set() and not hv3.view.ports
        assert set(hv1.view.ports) == {pa["id"]}
        assert pb["id"] in hv2.view.ports and pa["id"] not in hv2.view.ports
        # Port statuses are followed per network too: pb's ACTIVE never woke hv1 or hv3.
        assert hv1.wait_for(lambda: hv1.view.port_chassis == {pa["id"]: "hv1"})
        assert pa["id"] not in hv2.view.port_chassis and not hv3.view.port_chassis
        followed = {f.prefix for f in hv1.sync.followers}
        assert set(network_prefixes(str(a["id"]))) <= followed
        assert not set(network_prefixes(str(b["id"]))) & followed
        # Routers are followed one record each, by those whose networks they attach to;
        # a chassis without ports follows the chassis list and its own host index only.
        assert hv2.wait_for(lambda: set(hv2.view.routers) == {router["id"]})
        assert not hv1.view.routers and not any("/routers/" in p for p in followed)
        assert hv2.interest is not None and hv2.interest.following.routers == {router["id"]}
        assert {f.prefix for f in hv3.sync.followers} == set(Interest.base_prefixes("hv3"))
        # what hv1 installed names its port's MAC, never b's
        assert any(str(pa["mac_address"]) in line for line in _recorded(hv1))
        assert not any(str(pb["mac_address"]) in line for line in _recorded(hv1))
        assert any(str(pb["mac_address"]) in line for line in _recorded(hv2))

        # A port on c requested on hv1: hv1 now follows c, and b behind the router.
        pc = create(client, "ports", network_id=c["id"], **{"binding:host_id": "hv1"})
        assert hv1.wait_for(lambda: _active(store, pc, "hv1"))
        assert hv1.wait_for(lambda: set(hv1.view.networks) == {a["id"], b["id"], c["id"]})
        assert hv1.wait_for(lambda: any(str(pb["mac_address"]) in line for line in _recorded(hv1)))
        assert hv1.wait_for(lambda: hv1.view.port_chassis.get(pb["id"]) == "hv2")
        # ...and hv2 sees the new port on c (it follows c) and installs for it.
        assert hv2.wait_for(lambda: any(str(pc["mac_address"]) in line for line in _recorded(hv2)))

        # The last port of b and c on hv1 goes: their objects and flows leave hv1.
        assert client.delete(f"/v2.0/ports/{pc['id']}").status_code == 204
        assert hv1.wait_for(lambda: set(hv1.view.networks) == {a["id"]})
        assert hv1.wait_for(
            lambda: not any(str(pb["mac_address"]) in line for line in _recorded(hv1))
        )
        assert set(hv1.view.ports) == {pa["id"]}
        assert hv1.view.port_chassis == {pa["id"]: "hv1"}  # b's statuses went with b
        assert hv3.sync.stats.events == 0 or not hv3.view.ports


def test_groups_and_address_groups_are_followed_for_the_local_ports_only(
    store: Store, fakes: dict[str, Agent]
) -> None:
    with make_client(store) as client:
        a, _ = _network(client, "a", "10.1.0.0/24")
        ag = create(client, "address-groups", name="ag", addresses=["203.0.113.0/24"])
        used = create(client, "security-groups", name="used")
        unused = create(client, "security-groups", name="unused")
        create(
            client,
            "security-group-rules",
            security_group_id=used["id"],
            direction="ingress",
            protocol="tcp",
            remote_address_group_id=ag["id"],
        )
        create(client, "security-group-rules", security_group_id=unused["id"], direction="ingress")
        pa = create(
            client,
            "ports",
            network_id=a["id"],
            security_groups=[used["id"]],
            **{"binding:host_id": "hv1"},
        )
        hv1, hv2 = fakes["hv1"], fakes["hv2"]
        assert hv1.wait_for(lambda: _active(store, pa, "hv1"))
        assert hv1.wait_for(lambda: set(hv1.view.address_groups) == {ag["id"]})
        assert used["id"] in hv1.view.security_groups
        assert unused["id"] not in hv1.view.security_groups
        assert not any(r.security_group_id == unused["id"] for r in hv1.view.rules.values())
        # the address group's CIDR reached hv1's flows; hv2 (no ports) follows none of it
        assert hv1.wait_for(lambda: any("203.0.113.0/24" in line for line in _recorded(hv1)))
        assert not hv2.view.security_groups and not hv2.view.address_groups
        # The address group changes: hv1 follows it live.
        resp = client.put(
            f"/v2.0/address-groups/{ag['id']}/add_addresses",
            json={"addresses": ["198.51.100.0/24"]},
        )
        assert resp.status_code == 200, resp.text
        assert hv1.wait_for(lambda: any("198.51.100.0/24" in line for line in _recorded(hv1)))


def test_qos_policies_of_local_ports_and_their_networks_are_followed(
    store: Store, fakes: dict[str, Agent]
) -> None:
    with make_client(store) as client:
        own, of_net, unused = (
            client.post("/v2.0/qos/policies", json={"policy": {"name": n}}).json()["policy"]
            for n in ("own", "net", "unused")
        )
        a = create(client, "networks", name="a", qos_policy_id=of_net["id"])
        create(client, "subnets", network_id=a["id"], cidr="10.1.0.0/24", ip_version=4)
        pa = create(
            client,
            "ports",
            network_id=a["id"],
            qos_policy_id=own["id"],
            **{"binding:host_id": "hv1"},
        )
        hv1, hv2 = fakes["hv1"], fakes["hv2"]
        assert hv1.wait_for(lambda: _active(store, pa, "hv1"))
        assert hv1.wait_for(lambda: set(hv1.view.qos_policies) == {own["id"], of_net["id"]})
        assert unused["id"] not in hv1.view.qos_policies and not hv2.view.qos_policies
        # A rule added to the port's policy reaches hv1's flows live.
        r = client.post(
            f"/v2.0/qos/policies/{own['id']}/dscp_marking_rules",
            json={"dscp_marking_rule": {"dscp_mark": 46}},
        )
        assert r.status_code == 201, r.text
        assert hv1.wait_for(lambda: any("set_field:46->ip_dscp" in ln for ln in _recorded(hv1)))
        # The port leaves its policy: the network's stays followed, its own is dropped.
        r = client.put(f"/v2.0/ports/{pa['id']}", json={"port": {"qos_policy_id": None}})
        assert r.status_code == 200, r.text
        assert hv1.wait_for(lambda: set(hv1.view.qos_policies) == {of_net["id"]})
        assert hv1.wait_for(lambda: not any("ip_dscp" in ln for ln in _recorded(hv1)))


def test_the_gateway_status_of_a_followed_router_is_followed_with_it(
    store: Store, fakes: dict[str, Agent]
) -> None:
    """Which chassis hosts a router's gateway (its status key) reaches the chassis that
    follow the router, and only those: it decides ties of gateway priority."""
    with make_client(store) as client:
        a, sa = _network(client, "a", "10.1.0.0/24")
        ext = create(client, "networks", name="public", **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        })  # fmt: skip
        create(client, "subnets", network_id=ext["id"], cidr="203.0.113.0/24", ip_version=4)
        router = create(client, "routers", name="r")
        resp = client.put(
            f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sa}
        )
        assert resp.status_code == 200, resp.text
        pa = create(client, "ports", network_id=a["id"], **{"binding:host_id": "hv1"})
        hv1, hv3 = fakes["hv1"], fakes["hv3"]
        assert hv1.wait_for(lambda: _active(store, pa, "hv1"))
        assert hv1.wait_for(lambda: set(hv1.view.routers) == {router["id"]})
        report = orjson.dumps({"chassis": "gw9", "status": "ACTIVE"})
        store.txn([], [Put(gateway_status_key(router["id"]), report)])
        # No gateway yet: its status is not followed (a stale key stays out of the view).
        assert hv1.interest is not None and not hv1.interest.following.gateways
        resp = client.put(
            f"/v2.0/routers/{router['id']}",
            json={"router": {"external_gateway_info": {"network_id": ext["id"]}}},
        )
        assert resp.status_code == 200, resp.text
        assert hv1.wait_for(lambda: hv1.view.gateway_hosts.get(router["id"]) == GatewayHost("gw9"))
        assert hv1.interest.following.gateways == {router["id"]}
        assert not hv3.view.gateway_hosts  # (it follows no router)
        store.txn([], [Put(gateway_status_key(router["id"]), report.replace(b"gw9", b"gw8"))])
        assert hv1.wait_for(lambda: hv1.view.gateway_hosts.get(router["id"]) == GatewayHost("gw8"))
        # The gateway goes: so does the report, from the view.
        resp = client.put(
            f"/v2.0/routers/{router['id']}", json={"router": {"external_gateway_info": {}}}
        )
        assert resp.status_code == 200, resp.text
        assert hv1.wait_for(lambda: not hv1.view.gateway_hosts)
        assert set(hv1.view.routers) == {router["id"]}
