"""Routers through the HTTP API: CRUD, gateways, interfaces, extra routes and isolation.

Behaviour is checked by what really exists afterwards (the gateway and interface ports on
their networks), not only by the router's own body.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import as_project, error_type

P1 = as_project("p1")
P2 = as_project("p2")
READER = as_project("p1", "reader")


# ---- helpers -----------------------------------------------------------------------------
def post(client: TestClient, path: str, key: str, body: dict[str, Any], headers: Any = None) -> Any:
    r = client.post(f"/v2.0/{path}", json={key: body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()[key]


def external_net(client: TestClient, cidr: str = "172.24.4.0/24") -> tuple[str, str]:
    """An admin-made external network with one IPv4 subnet: (network id, subnet id)."""
    net = post(
        client,
        "networks",
        "network",
        {
            "name": "public",
            "router:external": True,
            "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
        },
    )
    sub = post(
        client,
        "subnets",
        "subnet",
        {"network_id": net["id"], "cidr": cidr, "ip_version": 4},
    )
    return net["id"], sub["id"]


def private_net(
    client: TestClient, cidr: str = "10.0.0.0/24", headers: Any = P1, **subnet: Any
) -> tuple[str, str]:
    net = post(client, "networks", "network", {"name": "private"}, headers)
    body = {"network_id": net["id"], "cidr": cidr, "ip_version": 4, **subnet}
    sub = post(client, "subnets", "subnet", body, headers)
    return net["id"], sub["id"]


def router(client: TestClient, headers: Any = P1, **attrs: Any) -> dict[str, Any]:
    return dict(post(client, "routers", "router", attrs, headers))


def port(client: TestClient, network_id: str, headers: Any = P1, **attrs: Any) -> dict[str, Any]:
    return dict(post(client, "ports", "port", {"network_id": network_id, **attrs}, headers))


def act(client: TestClient, router_id: str, action: str, body: Any, headers: Any = P1) -> Any:
    return client.put(f"/v2.0/routers/{router_id}/{action}", json=body, headers=headers)


def ports_of(client: TestClient, **filters: str) -> list[dict[str, Any]]:
    r = client.get("/v2.0/ports", params=filters)  # as admin: gateway ports have no project
    assert r.status_code == 200, r.text
    return list(r.json()["ports"])


def get_router(client: TestClient, router_id: str, headers: Any = P1) -> dict[str, Any]:
    r = client.get(f"/v2.0/routers/{router_id}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["router"])


# ---- CRUD --------------------------------------------------------------------------------
def test_create_defaults_update_delete(client: TestClient) -> None:
    r = router(client, name="r1", description="d")
    assert r["status"] == "ACTIVE" and r["admin_state_up"] is True
    assert r["external_gateway_info"] is None
    assert r["routes"] == [] and r["flavor_id"] is None
    assert r["availability_zone_hints"] == [] and r["availability_zones"] == []
    assert r["project_id"] == r["tenant_id"] == "p1"
    assert r["revision_number"] == 0
    # distributed/ha are admin-only to read, as in Neutron's policy.
    assert "distributed" not in r and "ha" not in r
    admin_view = get_router(client, r["id"], headers=None)
    assert admin_view["distributed"] is True and admin_view["ha"] is False

    u = client.put(
        f"/v2.0/routers/{r['id']}",
        json={"router": {"name": "r2", "admin_state_up": False}},
        headers=P1,
    )
    assert u.status_code == 200, u.text
    assert u.json()["router"]["name"] == "r2"
    assert u.json()["router"]["admin_state_up"] is False
    assert u.json()["router"]["revision_number"] == 1

    assert client.delete(f"/v2.0/routers/{r['id']}", headers=P1).status_code == 204
    g = client.get(f"/v2.0/routers/{r['id']}", headers=P1)
    assert g.status_code == 404 and error_type(g) == "RouterNotFound"


@pytest.mark.parametrize(
    ("body", "headers", "status", "etype"),
    [
        ({"routes": []}, P1, 400, "HTTPBadRequest"),
        ({"status": "DOWN"}, P1, 400, "HTTPBadRequest"),
        ({"bogus": 1}, P1, 400, "HTTPBadRequest"),
        ({"distributed": True}, P1, 403, "PolicyNotAuthorized"),
        ({"ha": False}, P1, 403, "PolicyNotAuthorized"),
        ({"distributed": False}, None, 400, "BadRequest"),
        ({"ha": True}, None, 400, "BadRequest"),
        ({"external_gateway_info": {"network_id": "nope"}}, P1, 400, "InvalidInput"),
        ({"external_gateway_info": {"enable_snat": True}}, P1, 400, "InvalidInput"),
        ({"external_gateway_info": {"network_id": None}}, P1, 400, "InvalidInput"),
        ({"external_gateway_info": [1]}, P1, 400, "InvalidInput"),
        ({"external_gateway_info": "x"}, P1, 400, "InvalidInput"),
        ({"admin_state_up": "perhaps"}, P1, 400, "InvalidInput"),
        ({"name": "x" * 256}, P1, 400, "InvalidInput"),
        ({"availability_zone_hints": "nova"}, P1, 400, "InvalidInput"),
    ],
)
def test_bad_create_bodies(
    client: TestClient, body: dict[str, Any], headers: Any, status: int, etype: str
) -> None:
    r = client.post("/v2.0/routers", json={"router": body}, headers=headers)
    assert r.status_code == status, r.text
    assert error_type(r) == etype
    assert client.get("/v2.0/routers").json()["routers"] == []


def test_admin_flags_accept_supported_values(client: TestClient) -> None:
    r = router(client, headers=None, distributed=True, ha=False)
    assert r["distributed"] is True and r["ha"] is False


def test_project_isolation_and_reader(client: TestClient) -> None:
    r = router(client, name="mine")
    rid = r["id"]
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"/v2.0/routers/{rid}", None),
        ("PUT", f"/v2.0/routers/{rid}", {"router": {"name": "x"}}),
        ("DELETE", f"/v2.0/routers/{rid}", None),
        ("PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": rid}),
        ("PUT", f"/v2.0/routers/{rid}/add_extraroutes", {"router": {"routes": []}}),
    ]
    for method, url, body in calls:
        resp = client.request(method, url, json=body, headers=P2)
        assert resp.status_code == 404, (method, url, resp.text)
        assert error_type(resp) == "RouterNotFound"
    assert client.get("/v2.0/routers", headers=P2).json()["routers"] == []
    # A reader of p1 sees it but cannot change it.
    assert client.get(f"/v2.0/routers/{rid}", headers=READER).status_code == 200
    for resp in [
        client.post("/v2.0/routers", json={"router": {}}, headers=READER),
        client.put(f"/v2.0/routers/{rid}", json={"router": {"name": "x"}}, headers=READER),
        client.delete(f"/v2.0/routers/{rid}", headers=READER),
        act(client, rid, "add_router_interface", {"subnet_id": rid}, READER),
        act(client, rid, "remove_extraroutes", {"router": {"routes": []}}, READER),
    ]:
        assert resp.status_code == 403, resp.text
        assert error_type(resp) == "PolicyNotAuthorized"
    assert get_router(client, rid)["name"] == "mine"
    # The owner's same calls find the router (the interface's subnet is what is missing).
    resp = act(client, rid, "add_router_interface", {"subnet_id": rid}, P1)
    assert resp.status_code == 404 and error_type(resp) == "SubnetNotFound", resp.text
    assert act(client, rid, "add_extraroutes", {"router": {"routes": []}}, P1).status_code == 200
    assert act(client, rid, "remove_extraroutes", {"router": {"routes": []}}, P1).status_code == 200
    assert [x["id"] for x in client.get("/v2.0/routers", headers=P1).json()["routers"]] == [rid]
    resp = client.put(f"/v2.0/routers/{rid}", json={"router": {"name": "x"}}, headers=P1)
    assert resp.status_code == 200
    assert client.post("/v2.0/routers", json={"router": {}}, headers=P1).status_code == 201
    assert client.delete(f"/v2.0/routers/{rid}", headers=P1).status_code == 204


def test_router_quota(client: TestClient) -> None:
    r = client.put("/v2.0/quotas/p1", json={"quota": {"router": 1}})
    assert r.status_code == 200, r.text
    router(client)
    r = client.post("/v2.0/routers", json={"router": {}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "OverQuota"


# ---- gateway -----------------------------------------------------------------------------
def test_gateway_set_on_create_and_clear(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    gw = r["external_gateway_info"]
    assert gw["network_id"] == ext_net and gw["enable_snat"] is True
    assert len(gw["external_fixed_ips"]) == 1
    assert gw["external_fixed_ips"][0]["subnet_id"] == ext_sub
    gw_ip = gw["external_fixed_ips"][0]["ip_address"]
    assert gw_ip.startswith("172.24.4.") and gw_ip != "172.24.4.1"

    gw_ports = ports_of(client, device_owner="network:router_gateway")
    assert len(gw_ports) == 1
    gp = gw_ports[0]
    assert gp["device_id"] == r["id"] and gp["network_id"] == ext_net
    assert gp["project_id"] == ""
    assert gp["fixed_ips"] == [{"subnet_id": ext_sub, "ip_address": gw_ip}]
    # The gateway port is not the tenant's: hidden from the project.
    assert client.get("/v2.0/ports", headers=P1).json()["ports"] == []

    clears: list[dict[str, Any] | None] = [None, {}]
    for clear in clears:
        u = client.put(
            f"/v2.0/routers/{r['id']}",
            json={"router": {"external_gateway_info": clear}},
            headers=P1,
        )
        assert u.status_code == 200, u.text
        assert u.json()["router"]["external_gateway_info"] is None
        assert ports_of(client, device_owner="network:router_gateway") == []
        # Set it again through an update.
        u = client.put(
            f"/v2.0/routers/{r['id']}",
            json={"router": {"external_gateway_info": {"network_id": ext_net}}},
            headers=P1,
        )
        assert u.status_code == 200, u.text
        assert u.json()["router"]["external_gateway_info"]["network_id"] == ext_net
        assert len(ports_of(client, device_owner="network:router_gateway")) == 1

    # Deleting the router deletes its gateway port and frees the address.
    assert client.delete(f"/v2.0/routers/{r['id']}", headers=P1).status_code == 204
    assert ports_of(client, device_owner="network:router_gateway") == []


def test_gateway_gets_an_address_on_the_ipv4_and_the_ipv6_subnet(client: TestClient) -> None:
    """As any port: one IPv4 and one IPv6 address (Neutron's gateway port is a port),
    so IPv6 is routed through the gateway beside SNAT (wyvern.apps.gateway)."""
    ext_net, ext_sub = external_net(client)
    sub6 = post(client, "subnets", "subnet", {"network_id": ext_net, "ip_version": 6,
                "cidr": "2001:db8:ff::/64", "gateway_ip": "2001:db8:ff::250"})  # fmt: skip
    r = router(client, external_gateway_info={"network_id": ext_net})
    fixed = r["external_gateway_info"]["external_fixed_ips"]
    assert sorted(f["subnet_id"] for f in fixed) == sorted([ext_sub, sub6["id"]]), fixed
    v6 = next(f["ip_address"] for f in fixed if f["subnet_id"] == sub6["id"])
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("2001:db8:ff::/64")
    assert v6 != "2001:db8:ff::250"
    (gp,) = ports_of(client, device_owner="network:router_gateway")
    assert sorted(f["ip_address"] for f in gp["fixed_ips"]) == sorted(
        f["ip_address"] for f in fixed
    )


def test_a_subnet_added_to_the_external_network_gives_the_gateway_an_address(
    client: TestClient,
) -> None:
    """Neutron's _update_router_gw_port: a new subnet of an IP version the gateway has
    no (stateful) address of gives it one; a second subnet of that version does not."""
    ext_net, ext_sub = external_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    assert len(r["external_gateway_info"]["external_fixed_ips"]) == 1
    sub6 = post(client, "subnets", "subnet", {"network_id": ext_net, "ip_version": 6,
                "cidr": "2001:db8:ff::/64"})  # fmt: skip
    post(client, "subnets", "subnet", {"network_id": ext_net, "ip_version": 6,
         "cidr": "2001:db8:fe::/64"})  # fmt: skip
    fixed = get_router(client, r["id"])["external_gateway_info"]["external_fixed_ips"]
    assert sorted(f["subnet_id"] for f in fixed) == sorted([ext_sub, sub6["id"]]), fixed
    (gp,) = ports_of(client, device_owner="network:router_gateway")
    assert sorted(f["ip_address"] for f in gp["fixed_ips"]) == sorted(
        f["ip_address"] for f in fixed
    )
    v6 = next(f["ip_address"] for f in fixed if f["subnet_id"] == sub6["id"])
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("2001:db8:ff::/64")


def test_a_slaac_subnet_added_to_the_external_network_shows_in_the_gateway(
    client: TestClient,
) -> None:
    """A SLAAC subnet gives every port of the network its EUI-64 address, the gateway
    port included (Neutron's add_auto_addrs_on_network_ports leaves out only router
    interfaces); the router's external_gateway_info lists it, as Neutron's does."""
    ext_net, ext_sub = external_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    (gp,) = ports_of(client, device_owner="network:router_gateway")
    sub6 = post(client, "subnets", "subnet", {"network_id": ext_net, "ip_version": 6,
                "cidr": "2001:db8:fd::/64", "ipv6_address_mode": "slaac",
                "ipv6_ra_mode": "slaac"})  # fmt: skip
    (gp,) = ports_of(client, device_owner="network:router_gateway")
    v6 = next(f["ip_address"] for f in gp["fixed_ips"] if f["subnet_id"] == sub6["id"])
    fixed = get_router(client, r["id"])["external_gateway_info"]["external_fixed_ips"]
    assert sorted((f["subnet_id"], f["ip_address"]) for f in fixed) == sorted(
        (f["subnet_id"], f["ip_address"]) for f in gp["fixed_ips"]
    ), fixed
    assert {f["subnet_id"] for f in fixed} == {ext_sub, sub6["id"]}
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("2001:db8:fd::/64")
    # the router knows the subnet as connected: an extra route through a host on it
    route = {"destination": "2001:db8:aa::/64", "nexthop": "2001:db8:fd::99"}
    ok = client.put(f"/v2.0/routers/{r['id']}", json={"router": {"routes": [route]}})
    assert ok.status_code == 200, ok.text


def test_gateway_admin_only_parts_and_specific_ip(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client)
    for gw in (
        {"network_id": ext_net, "enable_snat": False},
        {"network_id": ext_net, "external_fixed_ips": [{"subnet_id": ext_sub}]},
    ):
        r = client.post("/v2.0/routers", json={"router": {"external_gateway_info": gw}}, headers=P1)
        assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized", r.text
    assert ports_of(client, device_owner="network:router_gateway") == []

    gw = {
        "network_id": ext_net,
        "enable_snat": False,
        "external_fixed_ips": [{"subnet_id": ext_sub, "ip_address": "172.24.4.50"}],
    }
    r = router(client, headers=None, external_gateway_info=gw)
    info = r["external_gateway_info"]
    assert info["enable_snat"] is False
    assert info["external_fixed_ips"] == [{"subnet_id": ext_sub, "ip_address": "172.24.4.50"}]
    # The address is really claimed: a second router cannot take it.
    again = client.post("/v2.0/routers", json={"router": {"external_gateway_info": gw}})
    assert again.status_code == 409 and error_type(again) == "IpAddressInUse", again.text
    assert len(ports_of(client, device_owner="network:router_gateway")) == 1
    # Nor may it be the external subnet's own gateway.
    bad = dict(gw, external_fixed_ips=[{"ip_address": "172.24.4.1"}])
    r2 = client.post("/v2.0/routers", json={"router": {"external_gateway_info": bad}})
    assert r2.status_code == 400 and error_type(r2) == "BadRequest", r2.text
    # Updating without enable_snat resets it to the default (True), as Neutron does.
    u = client.put(
        f"/v2.0/routers/{r['id']}",
        json={"router": {"external_gateway_info": {"network_id": ext_net}}},
    )
    assert u.status_code == 200, u.text
    assert u.json()["router"]["external_gateway_info"]["enable_snat"] is True
    assert (
        u.json()["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        == "172.24.4.50"
    )


def test_gateway_ip_change_on_same_network(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client)
    r = router(client, headers=None, external_gateway_info={"network_id": ext_net})
    old_port = ports_of(client, device_owner="network:router_gateway")[0]
    gw = {"network_id": ext_net, "external_fixed_ips": [{"ip_address": "172.24.4.77"}]}
    u = client.put(f"/v2.0/routers/{r['id']}", json={"router": {"external_gateway_info": gw}})
    assert u.status_code == 200, u.text
    fixed = u.json()["router"]["external_gateway_info"]["external_fixed_ips"]
    assert fixed == [{"subnet_id": ext_sub, "ip_address": "172.24.4.77"}]
    ports = ports_of(client, device_owner="network:router_gateway")
    assert [p["id"] for p in ports] == [old_port["id"]]
    assert ports[0]["fixed_ips"] == fixed


def test_gateway_must_be_an_external_network(client: TestClient) -> None:
    net, _ = private_net(client)
    r = client.post(
        "/v2.0/routers",
        json={"router": {"external_gateway_info": {"network_id": net}}},
        headers=P1,
    )
    assert r.status_code == 400 and error_type(r) == "BadRequest"
    assert r.json()["NeutronError"]["message"] == (
        f"Bad router request: Network {net} is not an external network."
    )
    missing = "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6d"
    r = client.post(
        "/v2.0/routers",
        json={"router": {"external_gateway_info": {"network_id": missing}}},
        headers=P1,
    )
    assert r.status_code == 404 and error_type(r) == "NetworkNotFound"
    # Another project's private network is as good as missing.
    other, _ = private_net(client, headers=P2)
    r = client.post(
        "/v2.0/routers",
        json={"router": {"external_gateway_info": {"network_id": other}}},
        headers=P1,
    )
    assert r.status_code == 404
    assert client.get("/v2.0/routers", headers=P1).json()["routers"] == []


def test_gateway_needs_an_address_on_the_external_network(client: TestClient) -> None:
    """An external network with no subnet has no address for the gateway: refused, on
    create and on update, and nothing is left behind; a subnet (v6 will do) fixes it."""
    bare = post(
        client,
        "networks",
        "network",
        {
            "name": "bare",
            "router:external": True,
            "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
        },
    )["id"]
    expected = f"Bad router request: No IPs available for external network {bare}."
    gw = {"router": {"external_gateway_info": {"network_id": bare}}}
    r = client.post("/v2.0/routers", json=gw, headers=P1)
    assert r.status_code == 400 and error_type(r) == "BadRequest", r.text
    assert r.json()["NeutronError"]["message"] == expected
    assert client.get("/v2.0/routers", headers=P1).json()["routers"] == []
    # An update too: the router keeps no gateway, or the one it had.
    ext_net, _ = external_net(client)
    plain = router(client)
    held = router(client, external_gateway_info={"network_id": ext_net})
    held_port = ports_of(client, device_owner="network:router_gateway")
    for rt in (plain, held):
        u = client.put(f"/v2.0/routers/{rt['id']}", json=gw, headers=P1)
        assert u.status_code == 400 and error_type(u) == "BadRequest", u.text
        assert u.json()["NeutronError"]["message"] == expected
        assert get_router(client, rt["id"]) == rt
    assert ports_of(client, device_owner="network:router_gateway") == held_port
    assert ports_of(client, network_id=bare) == []

    # With a subnet, the same requests succeed (an IPv6 one is enough).
    sub = post(
        client,
        "subnets",
        "subnet",
        {"network_id": bare, "cidr": "2001:db8:5::/64", "ip_version": 6},
    )
    u = client.put(f"/v2.0/routers/{plain['id']}", json=gw, headers=P1)
    assert u.status_code == 200, u.text
    fixed = u.json()["router"]["external_gateway_info"]["external_fixed_ips"]
    assert [f["subnet_id"] for f in fixed] == [sub["id"]]
    r = client.post("/v2.0/routers", json=gw, headers=P1)
    assert r.status_code == 201, r.text
    assert r.json()["router"]["external_gateway_info"]["network_id"] == bare
    assert len(ports_of(client, network_id=bare, device_owner="network:router_gateway")) == 2


# ---- interfaces --------------------------------------------------------------------------
def test_interface_by_subnet(client: TestClient) -> None:
    net, sub = private_net(client)
    r = router(client)
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": sub})
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert set(info) == {
        "id",
        "port_id",
        "subnet_id",
        "subnet_ids",
        "network_id",
        "project_id",
        "tenant_id",
    }
    assert info["id"] == r["id"] and info["subnet_id"] == sub and info["subnet_ids"] == [sub]
    assert info["network_id"] == net and info["project_id"] == info["tenant_id"] == "p1"

    p = client.get(f"/v2.0/ports/{info['port_id']}", headers=P1).json()["port"]
    assert p["device_owner"] == "network:router_interface" and p["device_id"] == r["id"]
    assert p["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.1"}]
    assert p["network_id"] == net
    assert [x["id"] for x in ports_of(client, device_id=r["id"])] == [info["port_id"]]

    # Same subnet again: Neutron's message.
    again = act(client, r["id"], "add_router_interface", {"subnet_id": sub})
    assert again.status_code == 400 and error_type(again) == "BadRequest"
    assert f"Router already has a port on subnet {sub}" in again.json()["NeutronError"]["message"]

    # Remove by subnet: same shape back, port gone.
    rm = act(client, r["id"], "remove_router_interface", {"subnet_id": sub})
    assert rm.status_code == 200, rm.text
    assert rm.json() == info
    assert client.get(f"/v2.0/ports/{info['port_id']}", headers=P1).status_code == 404
    rm = act(client, r["id"], "remove_router_interface", {"subnet_id": sub})
    assert rm.status_code == 404 and error_type(rm) == "RouterInterfaceNotFoundForSubnet"
    # The gateway address is free again: a port can take it.
    port(client, net, fixed_ips=[{"subnet_id": sub, "ip_address": "10.0.0.1"}])


def test_overlapping_interfaces_rejected(client: TestClient) -> None:
    _, sub_a = private_net(client, "10.0.0.0/24")
    _, sub_b = private_net(client, "10.0.0.0/16")
    _, sub_c = private_net(client, "10.1.0.0/24")
    r = router(client)
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub_a}).status_code == 200
    bad = act(client, r["id"], "add_router_interface", {"subnet_id": sub_b})
    assert bad.status_code == 400 and error_type(bad) == "BadRequest"
    assert bad.json()["NeutronError"]["message"] == (
        f"Bad router request: Cidr 10.0.0.0/16 of subnet {sub_b} overlaps with cidr "
        f"10.0.0.0/24 of subnet {sub_a}."
    )
    assert len(ports_of(client, device_id=r["id"])) == 1
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub_c}).status_code == 200
    # The same overlapping subnet on another router is fine.
    r2 = router(client)
    assert act(client, r2["id"], "add_router_interface", {"subnet_id": sub_b}).status_code == 200


def test_interface_by_port(client: TestClient) -> None:
    net, sub = private_net(client)
    p = port(client, net, name="rp")
    r = router(client)
    resp = act(client, r["id"], "add_router_interface", {"port_id": p["id"]})
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info == {
        "id": r["id"],
        "port_id": p["id"],
        "subnet_id": sub,
        "subnet_ids": [sub],
        "network_id": net,
        "project_id": "p1",
        "tenant_id": "p1",
    }
    got = client.get(f"/v2.0/ports/{p['id']}", headers=P1).json()["port"]
    assert got["device_id"] == r["id"] and got["device_owner"] == "network:router_interface"
    assert got["fixed_ips"] == p["fixed_ips"]

    # Already attached: a second router gets PortInUse.
    r2 = router(client)
    busy = act(client, r2["id"], "add_router_interface", {"port_id": p["id"]})
    assert busy.status_code == 409 and error_type(busy) == "PortInUse", busy.text
    assert busy.json()["NeutronError"]["message"] == (
        f"Unable to complete operation on port {p['id']} for network {net}. "
        f"Port already has an attached device {r['id']}."
    )
    # A port with a device is in use too.
    vm = port(client, net, device_id="vm-1", device_owner="compute:nova")
    busy = act(client, r2["id"], "add_router_interface", {"port_id": vm["id"]})
    assert busy.status_code == 409 and error_type(busy) == "PortInUse"

    # Wrong subnet for the port, unknown port: Neutron's errors.
    _, other_sub = private_net(client, "10.5.0.0/24")
    mism = act(
        client, r["id"], "remove_router_interface", {"port_id": p["id"], "subnet_id": other_sub}
    )
    assert mism.status_code == 400 and error_type(mism) == "SubnetMismatchForPort"
    nf = act(client, r["id"], "remove_router_interface", {"port_id": vm["id"]})
    assert nf.status_code == 404 and error_type(nf) == "RouterInterfaceNotFound"

    rm = act(client, r["id"], "remove_router_interface", {"port_id": p["id"]})
    assert rm.status_code == 200, rm.text
    assert rm.json() == info
    # Neutron deletes the port even when it was added by port.
    assert client.get(f"/v2.0/ports/{p['id']}", headers=P1).status_code == 404


def test_interface_by_port_without_ips_and_invisible(client: TestClient) -> None:
    net, _ = private_net(client)
    bare = port(client, net, fixed_ips=[])
    r = router(client)
    resp = act(client, r["id"], "add_router_interface", {"port_id": bare["id"]})
    assert resp.status_code == 400 and error_type(resp) == "BadRequest"
    other_net, other_sub = private_net(client, headers=P2)
    theirs = port(client, other_net, headers=P2)
    resp = act(client, r["id"], "add_router_interface", {"port_id": theirs["id"]})
    assert resp.status_code == 404 and error_type(resp) == "PortNotFound"
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": other_sub})
    assert resp.status_code == 404 and error_type(resp) == "SubnetNotFound"
    assert ports_of(client, device_id=r["id"]) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Bad router request: Either subnet_id or port_id must be specified."),
        ({"x": 1}, "Bad router request: Either subnet_id or port_id must be specified."),
        ([], "Bad router request: Either subnet_id or port_id must be specified."),
        ({"subnet_id": "abc"}, "Bad router request: 'abc' is not a valid UUID."),
        ({"port_id": 5}, "Bad router request: '5' is not a valid UUID."),
        (
            {
                "subnet_id": "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6d",
                "port_id": "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6e",
            },
            "Bad router request: Cannot specify both subnet-id and port-id.",
        ),
    ],
)
def test_interface_body_validation(client: TestClient, body: Any, message: str) -> None:
    r = router(client)
    resp = act(client, r["id"], "add_router_interface", body)
    assert resp.status_code == 400, resp.text
    assert error_type(resp) == "BadRequest"
    assert resp.json()["NeutronError"]["message"] == message


def test_interface_needs_a_free_gateway_ip(client: TestClient) -> None:
    net, sub = private_net(client)
    r = router(client)
    # Subnet without a gateway IP.
    _, nogw = private_net(client, "10.7.0.0/24", gateway_ip=None)
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": nogw})
    assert resp.status_code == 400 and error_type(resp) == "BadRequest"
    assert "must have a gateway IP" in resp.json()["NeutronError"]["message"]
    # The gateway IP is taken by another port.
    port(client, net, fixed_ips=[{"subnet_id": sub, "ip_address": "10.0.0.1"}])
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": sub})
    assert resp.status_code == 409 and error_type(resp) == "IpAddressInUse", resp.text
    assert get_router(client, r["id"])["revision_number"] == 0
    # Unknown subnet.
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": r["id"]})
    assert resp.status_code == 404 and error_type(resp) == "SubnetNotFound"


def test_router_in_use_until_interfaces_removed(client: TestClient) -> None:
    ext_net, _ = external_net(client)
    _, sub = private_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    d = client.delete(f"/v2.0/routers/{r['id']}", headers=P1)
    assert d.status_code == 409 and error_type(d) == "RouterInUse"
    assert d.json()["NeutronError"]["message"] == f"Router {r['id']} still has ports"
    assert len(ports_of(client, device_id=r["id"])) == 2
    assert act(client, r["id"], "remove_router_interface", {"subnet_id": sub}).status_code == 200
    assert client.delete(f"/v2.0/routers/{r['id']}", headers=P1).status_code == 204
    assert ports_of(client, device_id=r["id"]) == []


def test_interface_on_subnet_overlapping_the_gateway(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client, "192.168.0.0/24")
    _, sub = private_net(client, "192.168.0.0/25")
    r = router(client, external_gateway_info={"network_id": ext_net})
    # Interfaces are checked against interfaces (as Neutron does), not the gateway...
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    # ...but not the gateway's own subnet.
    resp = act(client, r["id"], "add_router_interface", {"subnet_id": ext_sub}, headers=None)
    assert resp.status_code == 400 and error_type(resp) == "BadRequest"


def test_router_ports_cannot_be_deleted_directly(client: TestClient) -> None:
    ext_net, _ = external_net(client)
    _, sub = private_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    info = act(client, r["id"], "add_router_interface", {"subnet_id": sub}).json()
    gw_port = ports_of(client, device_owner="network:router_gateway")[0]
    for port_id in (info["port_id"], gw_port["id"]):
        d = client.delete(f"/v2.0/ports/{port_id}")
        assert d.status_code == 409 and error_type(d) == "ServicePortInUse", d.text
    assert len(ports_of(client, device_id=r["id"])) == 2


def test_concurrent_overlapping_interfaces_pick_one(sqlite_client: TestClient) -> None:
    """Overlapping subnets raced onto one router: exactly one lands, on a real store."""
    client = sqlite_client
    subs = [private_net(client, f"10.{i}.0.0/{15 + i % 2}")[1] for i in (0, 1, 2, 3)]
    r = router(client)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def go(subnet_id: str) -> None:
        resp = act(client, r["id"], "add_router_interface", {"subnet_id": subnet_id})
        with lock:
            results.append((resp.status_code, "" if resp.status_code == 200 else error_type(resp)))

    threads = [threading.Thread(target=go, args=(s,)) for s in subs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 10.0/15 overlaps 10.1/16; 10.2/15 overlaps 10.3/16: one of each pair wins.
    assert sorted(results) == [(200, ""), (200, ""), (400, "BadRequest"), (400, "BadRequest")]
    assert len(ports_of(client, device_id=r["id"])) == 2
    assert get_router(client, r["id"])["revision_number"] == 2


# ---- extra routes ------------------------------------------------------------------------
def test_extra_routes_validation(client: TestClient) -> None:
    _, sub = private_net(client)
    r = router(client)
    url = f"/v2.0/routers/{r['id']}"
    routes = [{"destination": "192.168.9.0/24", "nexthop": "10.0.0.5"}]
    bad = client.put(url, json={"router": {"routes": routes}}, headers=P1)
    assert bad.status_code == 400 and error_type(bad) == "InvalidRoutes"
    assert bad.json()["NeutronError"]["message"] == (
        f"Invalid format for routes: {routes}, the nexthop is not connected with router"
    )
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    ok = client.put(url, json={"router": {"routes": routes}}, headers=P1)
    assert ok.status_code == 200, ok.text
    assert ok.json()["router"]["routes"] == routes

    for body, etype in [
        ([*routes, *routes], "InvalidInput"),
        ([{"destination": "192.168.9.0/24", "nexthop": "10.0.0.1"}], "InvalidRoutes"),
        ([{"destination": "192.168.9.0/24", "nexthop": "10.9.0.1"}], "InvalidRoutes"),
        ([{"destination": "fd00::/64", "nexthop": "10.0.0.7"}], "InvalidRoutes"),
        ([{"destination": "192.168.9.0/24"}], "InvalidInput"),
        ([{"destination": "bad", "nexthop": "10.0.0.5"}], "InvalidInput"),
        ([{"destination": "192.168.9.0/24", "nexthop": "10.0.0.5", "x": 1}], "InvalidInput"),
        ("routes", "InvalidInput"),
        (
            [{"destination": f"192.168.{i}.0/24", "nexthop": "10.0.0.5"} for i in range(31)],
            "RoutesExhausted",
        ),
    ]:
        resp = client.put(url, json={"router": {"routes": body}}, headers=P1)
        assert resp.status_code == 400, (body, resp.text)
        assert error_type(resp) == etype, (body, resp.text)
    assert get_router(client, r["id"])["routes"] == routes

    # The interface carrying a nexthop cannot go.
    rm = act(client, r["id"], "remove_router_interface", {"subnet_id": sub})
    assert rm.status_code == 409 and error_type(rm) == "RouterInterfaceInUseByRoute"
    # null clears the routes; then the interface can go.
    cleared = client.put(url, json={"router": {"routes": None}}, headers=P1)
    assert cleared.status_code == 200 and cleared.json()["router"]["routes"] == []
    assert act(client, r["id"], "remove_router_interface", {"subnet_id": sub}).status_code == 200


def test_add_and_remove_extraroutes(client: TestClient) -> None:
    _, sub = private_net(client)
    r = router(client)
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    a = {"destination": "192.168.1.0/24", "nexthop": "10.0.0.5"}
    b = {"destination": "192.168.2.0/24", "nexthop": "10.0.0.6"}
    c = {"destination": "192.168.1.0/24", "nexthop": "10.0.0.7"}
    resp = act(client, r["id"], "add_extraroutes", {"router": {"routes": [a, b]}})
    assert resp.status_code == 200, resp.text
    body = resp.json()["router"]
    assert body["id"] == r["id"] and body["routes"] == [a, b]
    # Idempotent: adding again changes nothing; same destination, other nexthop is kept.
    resp = act(client, r["id"], "add_extraroutes", {"router": {"routes": [a, c]}})
    assert resp.json()["router"]["routes"] == [a, b, c]
    rev = resp.json()["router"]["revision_number"]
    resp = act(client, r["id"], "add_extraroutes", {"router": {"routes": [c]}})
    assert resp.json()["router"]["revision_number"] == rev
    # Removing is idempotent too.
    resp = act(client, r["id"], "remove_extraroutes", {"router": {"routes": [a, a]}})
    assert resp.status_code == 200 and resp.json()["router"]["routes"] == [b, c]
    resp = act(client, r["id"], "remove_extraroutes", {"router": {"routes": [a]}})
    assert resp.json()["router"]["routes"] == [b, c]
    assert get_router(client, r["id"])["routes"] == [b, c]
    # Validation applies to the resulting set.
    far = {"destination": "192.168.3.0/24", "nexthop": "172.16.0.1"}
    resp = act(client, r["id"], "add_extraroutes", {"router": {"routes": [far]}})
    assert resp.status_code == 400 and error_type(resp) == "InvalidRoutes"
    for bad in [{}, {"routes": [a]}, {"router": {}}, {"router": {"routes": "x"}}, {"router": []}]:
        resp = act(client, r["id"], "add_extraroutes", bad)
        assert resp.status_code == 400, (bad, resp.text)
    assert get_router(client, r["id"])["routes"] == [b, c]


# ---- cascades ----------------------------------------------------------------------------
def test_network_cascade_delete_detaches_router(any_client: TestClient) -> None:
    client = any_client
    ext_net, _ = external_net(client)
    net, sub = private_net(client)
    _, sub2 = private_net(client, "10.1.0.0/24")
    r = router(client, external_gateway_info={"network_id": ext_net})
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub2}).status_code == 200
    routes = [{"destination": "192.168.1.0/24", "nexthop": "10.0.0.9"}]
    assert (
        client.put(
            f"/v2.0/routers/{r['id']}", json={"router": {"routes": routes}}, headers=P1
        ).status_code
        == 200
    )

    d = client.delete(f"/v2.0/networks/{net}?cascade=true", headers=P1)
    assert d.status_code == 204, d.text
    got = get_router(client, r["id"])
    assert got["routes"] == []  # its nexthop is no longer connected
    assert len(ports_of(client, device_id=r["id"], device_owner="network:router_interface")) == 1
    # The remaining interface can be removed normally: the router knew the first was gone.
    assert act(client, r["id"], "remove_router_interface", {"subnet_id": sub2}).status_code == 200

    d = client.delete(f"/v2.0/networks/{ext_net}?cascade=true")
    assert d.status_code == 204, d.text
    assert get_router(client, r["id"])["external_gateway_info"] is None
    assert client.delete(f"/v2.0/routers/{r['id']}", headers=P1).status_code == 204


def test_external_network_in_use_by_gateway(client: TestClient) -> None:
    ext_net, _ = external_net(client)
    router(client, external_gateway_info={"network_id": ext_net})
    d = client.delete(f"/v2.0/networks/{ext_net}")
    assert d.status_code == 409 and error_type(d) == "NetworkInUse"


# ---- malformed action bodies never 500 ---------------------------------------------------
_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=20),
        st.sampled_from(["10.0.0.0/24", "10.0.0.5", "::1", "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6d"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["router", "routes", "subnet_id", "port_id", "destination", "nexthop"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=st.sampled_from(
        ["add_router_interface", "remove_router_interface", "add_extraroutes", "remove_extraroutes"]
    ),
    body=_json,
)
def test_random_action_bodies_never_500(client: TestClient, action: str, body: Any) -> None:
    rid = client.get("/v2.0/routers").json()["routers"]
    rid = rid[0]["id"] if rid else router(client, headers=None)["id"]
    r = client.put(f"/v2.0/routers/{rid}/{action}", json=body)
    assert r.status_code in (200, 400, 404, 409), r.text
    if r.status_code != 200:
        assert set(r.json()) == {"NeutronError"}


def test_l3_agents_show_the_gateway_chassis_and_which_is_active() -> None:
    """`openstack network agent list --router R --long`: the gateway chassis that map the
    external network's physnet, the one whose agent reports the gateway installed first
    and "active"; manual scheduling is refused."""
    import orjson

    from tests.api.conftest import make_client
    from wyvern.model.keys import chassis_key, gateway_status_key, registry_key
    from wyvern.nb.memory import MemoryStore
    from wyvern.nb.store import Put

    store = MemoryStore()
    chassis = {
        "gw-a": {"physnet1": "br-ex"},  # priority 2
        "gw-b": {"physnet1": "br-ex"},  # priority 1
        "gw-c": {"physnet2": "br-ex"},  # another physnet
        "compute": {"physnet1": "br-ex"},  # priority 0: never a gateway
    }
    prio = {"gw-a": 2, "gw-b": 1, "gw-c": 5, "compute": 0}
    puts = []
    for name, mappings in chassis.items():
        rec = orjson.dumps(
            {"name": name, "bridge_mappings": mappings, "gateway_priority": prio[name]}
        )
        puts += [Put(registry_key(name), rec), Put(chassis_key(name), rec)]
    store.txn([], puts)
    with make_client(store) as client:
        net_id, _ = external_net(client)  # (on physnet1)
        r = router(client, headers=None, external_gateway_info={"network_id": net_id})
        other = router(client, headers=None)

        def listed(router_id: str, headers: Any = None) -> Any:
            return client.get(f"/v2.0/routers/{router_id}/l3-agents", headers=headers)

        def states(router_id: str) -> list[tuple[str, str]]:
            resp = listed(router_id)
            assert resp.status_code == 200, resp.text
            return [(a["host"], a["ha_state"]) for a in resp.json()["agents"]]

        assert states(r["id"]) == [("gw-a", "standby"), ("gw-b", "standby")]  # none reported
        store.txn([], [Put(gateway_status_key(r["id"]), orjson.dumps({"chassis": "gw-b"}))])
        assert states(r["id"]) == [("gw-b", "active"), ("gw-a", "standby")]
        assert states(other["id"]) == []  # no gateway, no agent hosts it
        # admin only, as in Neutron; an unknown router is a 404
        resp = listed(r["id"], P1)
        assert resp.status_code == 403 and error_type(resp) == "PolicyNotAuthorized"
        resp = listed("00000000-0000-0000-0000-000000000000")
        assert resp.status_code == 404 and error_type(resp) == "RouterNotFound"
        agent_id = client.get("/v2.0/agents").json()["agents"][0]["id"]
        resp = client.post(f"/v2.0/agents/{agent_id}/l3-routers", json={"router_id": r["id"]})
        assert resp.status_code == 400 and error_type(resp) == "RouterSchedulingNotSupported"
        resp = client.delete(f"/v2.0/agents/{agent_id}/l3-routers/{r['id']}")
        assert resp.status_code == 400 and error_type(resp) == "RouterSchedulingNotSupported"
        assert states(r["id"]) == [("gw-b", "active"), ("gw-a", "standby")]  # unchanged


def test_a_subnet_taking_ras_from_an_external_router_is_no_router_interface(
    client: TestClient,
) -> None:
    """Neutron: an IPv6 subnet with ipv6_address_mode but no ipv6_ra_mode expects its RAs
    from a router outside OpenStack, so it cannot be added to a Neutron router; with
    both modes (or neither) it can."""
    net = post(client, "networks", "network", {"name": "v6"}, P1)
    outside = post(client, "subnets", "subnet", {
        "network_id": net["id"], "cidr": "2001:db8:1::/64", "ip_version": 6,
        "ipv6_address_mode": "slaac",
    }, P1)  # fmt: skip
    ours = post(client, "subnets", "subnet", {
        "network_id": net["id"], "cidr": "2001:db8:2::/64", "ip_version": 6,
        "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac",
    }, P1)  # fmt: skip
    r = router(client)
    ok = act(client, r["id"], "add_router_interface", {"subnet_id": ours["id"]})
    assert ok.status_code == 200, ok.text
    bad = act(client, r["id"], "add_router_interface", {"subnet_id": outside["id"]})
    assert bad.status_code == 400 and error_type(bad) == "BadRequest", bad.text
    assert (
        f"IPv6 subnet {outside['id']} configured to receive RAs from an external router "
        "cannot be added to Neutron Router" in bad.json()["NeutronError"]["message"]
    )
    assert [x["id"] for x in ports_of(client, device_id=r["id"])] == [ok.json()["port_id"]]
