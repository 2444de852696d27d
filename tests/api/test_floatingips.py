"""Floating IPs through the HTTP API: allocation, association rules, cascades and isolation."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import error_type
from tests.api.test_routers import (
    P1,
    P2,
    READER,
    act,
    external_net,
    port,
    ports_of,
    post,
    private_net,
    router,
)


def fip(client: TestClient, network_id: str, headers: Any = P1, **attrs: Any) -> dict[str, Any]:
    body = {"floating_network_id": network_id, **attrs}
    return dict(post(client, "floatingips", "floatingip", body, headers))


def put_fip(client: TestClient, fip_id: str, body: dict[str, Any], headers: Any = P1) -> Any:
    return client.put(f"/v2.0/floatingips/{fip_id}", json={"floatingip": body}, headers=headers)


def topology(client: TestClient) -> dict[str, str]:
    """External net + router (gateway) + private subnet attached: a reachable VM port."""
    ext_net, ext_sub = external_net(client)
    net, sub = private_net(client)
    r = router(client, external_gateway_info={"network_id": ext_net})
    assert act(client, r["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    vm = port(client, net, device_id="vm-1", device_owner="compute:nova")
    return {
        "ext_net": ext_net,
        "ext_sub": ext_sub,
        "net": net,
        "sub": sub,
        "router": r["id"],
        "port": vm["id"],
        "ip": vm["fixed_ips"][0]["ip_address"],
    }


# ---- allocation --------------------------------------------------------------------------
def test_allocation_from_external_network(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client)
    f = fip(client, ext_net, description="web")
    assert f["floating_network_id"] == ext_net
    assert f["floating_ip_address"].startswith("172.24.4.")
    assert f["floating_ip_address"] != "172.24.4.1"
    assert f["status"] == "DOWN"
    assert f["port_id"] is None and f["fixed_ip_address"] is None and f["router_id"] is None
    assert f["project_id"] == f["tenant_id"] == "p1"
    assert f["description"] == "web" and f["port_details"] is None
    assert f["qos_policy_id"] is None
    assert "name" not in f and "subnet_id" not in f
    # The address is a real port on the external network, owned by no project.
    fports = ports_of(client, device_owner="network:floatingip")
    assert len(fports) == 1
    assert fports[0]["device_id"] == f["id"] and fports[0]["project_id"] == ""
    assert fports[0]["network_id"] == ext_net
    assert fports[0]["fixed_ips"] == [
        {"subnet_id": ext_sub, "ip_address": f["floating_ip_address"]}
    ]

    g = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1)
    assert g.status_code == 200 and g.json()["floatingip"] == f
    # Delete releases the port and the address.
    assert client.delete(f"/v2.0/floatingips/{f['id']}", headers=P1).status_code == 204
    assert ports_of(client, device_owner="network:floatingip") == []
    g = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1)
    assert g.status_code == 404 and error_type(g) == "FloatingIPNotFound"


def test_specific_address_is_admin_only_and_unique(client: TestClient) -> None:
    ext_net, ext_sub = external_net(client)
    r = client.post(
        "/v2.0/floatingips",
        json={"floatingip": {"floating_network_id": ext_net, "floating_ip_address": "172.24.4.9"}},
        headers=P1,
    )
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    f = fip(client, ext_net, headers=None, floating_ip_address="172.24.4.9", project_id="p1")
    assert f["floating_ip_address"] == "172.24.4.9" and f["project_id"] == "p1"
    r = client.post(
        "/v2.0/floatingips",
        json={"floatingip": {"floating_network_id": ext_net, "floating_ip_address": "172.24.4.9"}},
    )
    assert r.status_code == 409 and error_type(r) == "IpAddressInUse", r.text
    assert len(ports_of(client, device_owner="network:floatingip")) == 1
    # After deleting, the address can be taken again.
    assert client.delete(f"/v2.0/floatingips/{f['id']}").status_code == 204
    again = fip(client, ext_net, headers=None, floating_ip_address="172.24.4.9")
    assert again["floating_ip_address"] == "172.24.4.9"
    # A subnet can be chosen (any project).
    s = fip(client, ext_net, subnet_id=ext_sub)
    assert s["floating_ip_address"].startswith("172.24.4.")


@pytest.mark.parametrize(
    ("body", "status", "etype"),
    [
        ({"floating_network_id": None}, 400, "InvalidInput"),
        ({"floating_network_id": "nope"}, 400, "InvalidInput"),
        ({"floating_network_id": "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6d"}, 400, "BadRequest"),
        ({"router_id": "6e3c37c4-5b2f-4bda-9d64-0a4b4a7a0b6d"}, 400, "HTTPBadRequest"),
        ({"status": "ACTIVE"}, 400, "HTTPBadRequest"),
        ({"name": "x"}, 400, "HTTPBadRequest"),
        ({"fixed_ip_address": "10.0.0.3"}, 400, "BadRequest"),
        ({"port_id": "zzz"}, 400, "InvalidInput"),
        ({"fixed_ip_address": "300.1.1.1"}, 400, "InvalidInput"),
    ],
)
def test_bad_create_bodies(
    client: TestClient, body: dict[str, Any], status: int, etype: str
) -> None:
    ext_net, _ = external_net(client)
    body = {"floating_network_id": ext_net, **body}
    r = client.post("/v2.0/floatingips", json={"floatingip": body}, headers=P1)
    assert r.status_code == status, r.text
    assert error_type(r) == etype
    assert client.get("/v2.0/floatingips").json()["floatingips"] == []
    assert ports_of(client, device_owner="network:floatingip") == []


def test_network_id_required(client: TestClient) -> None:
    r = client.post("/v2.0/floatingips", json={"floatingip": {}}, headers=P1)
    assert r.status_code == 400 and error_type(r) == "HTTPBadRequest"


def test_network_must_be_external_with_ipv4(client: TestClient) -> None:
    def create(network_id: str) -> Any:
        body = {"floatingip": {"floating_network_id": network_id}}
        return client.post("/v2.0/floatingips", json=body, headers=P1)

    def nothing_made() -> None:
        assert client.get("/v2.0/floatingips").json()["floatingips"] == []
        assert ports_of(client, device_owner="network:floatingip") == []

    net, _ = private_net(client)
    r = create(net)
    assert r.status_code == 400 and error_type(r) == "BadRequest"
    assert r.json()["NeutronError"]["message"] == (
        f"Bad floatingip request: Network {net} is not a valid external network."
    )
    nothing_made()
    bare = post(client, "networks", "network", {"router:external": True})
    r = create(bare["id"])
    assert r.status_code == 400 and error_type(r) == "BadRequest"
    assert r.json()["NeutronError"]["message"] == (
        f"Bad floatingip request: Network {bare['id']} does not contain any IPv4 subnet."
    )
    nothing_made()
    # An IPv6 subnet is not enough: floating IPs are IPv4.
    post(
        client,
        "subnets",
        "subnet",
        {"network_id": bare["id"], "cidr": "2001:db8::/64", "ip_version": 6},
    )
    r = create(bare["id"])
    assert r.status_code == 400 and "does not contain any IPv4 subnet" in r.text
    nothing_made()

    # The same request succeeds once each network is what it was missing.
    u = client.put(f"/v2.0/networks/{net}", json={"network": {"router:external": True}})
    assert u.status_code == 200, u.text
    post(
        client,
        "subnets",
        "subnet",
        {"network_id": bare["id"], "cidr": "172.24.9.0/24", "ip_version": 4},
    )
    for network_id in (net, bare["id"]):
        r = create(network_id)
        assert r.status_code == 201, r.text
        assert r.json()["floatingip"]["floating_network_id"] == network_id
    assert len(ports_of(client, device_owner="network:floatingip")) == 2


def test_exhausted_external_network(client: TestClient) -> None:
    ext_net, _ = external_net(client, "172.24.4.0/30")  # one usable address besides gateway
    fip(client, ext_net)
    r = client.post(
        "/v2.0/floatingips", json={"floatingip": {"floating_network_id": ext_net}}, headers=P1
    )
    assert r.status_code == 400 and error_type(r) == "ExternalIpAddressExhausted", r.text
    assert len(ports_of(client, device_owner="network:floatingip")) == 1


# ---- association -------------------------------------------------------------------------
def test_associate_disassociate(client: TestClient) -> None:
    t = topology(client)
    f = fip(client, t["ext_net"])
    r = put_fip(client, f["id"], {"port_id": t["port"]})
    assert r.status_code == 200, r.text
    a = r.json()["floatingip"]
    assert a["port_id"] == t["port"] and a["fixed_ip_address"] == t["ip"]
    # Associated, but DOWN: no dataplane flow implements floating IPs yet.
    assert a["router_id"] == t["router"] and a["status"] == "DOWN"
    assert a["floating_ip_address"] == f["floating_ip_address"]
    details = a["port_details"]
    assert details["network_id"] == t["net"] and details["device_id"] == "vm-1"
    assert set(details) == {
        "name",
        "network_id",
        "mac_address",
        "admin_state_up",
        "status",
        "device_id",
        "device_owner",
    }
    # Filters Neutron allows.
    for key, value in [
        ("port_id", t["port"]),
        ("router_id", t["router"]),
        ("fixed_ip_address", t["ip"]),
        ("floating_ip_address", f["floating_ip_address"]),
        ("floating_network_id", t["ext_net"]),
        ("status", "DOWN"),
    ]:
        got = client.get("/v2.0/floatingips", params={key: value}, headers=P1).json()
        assert [x["id"] for x in got["floatingips"]] == [f["id"]], key
    assert client.get("/v2.0/floatingips?status=ACTIVE", headers=P1).json()["floatingips"] == []
    got = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"]
    assert got["port_id"] == t["port"] and got["status"] == "DOWN"

    # The router's gateway and interface are now needed by the floating IP.
    rm = act(client, t["router"], "remove_router_interface", {"subnet_id": t["sub"]})
    assert rm.status_code == 409 and error_type(rm) == "RouterInterfaceInUseByFloatingIP"
    clear = client.put(
        f"/v2.0/routers/{t['router']}",
        json={"router": {"external_gateway_info": None}},
        headers=P1,
    )
    assert clear.status_code == 409
    assert error_type(clear) == "RouterExternalGatewayInUseByFloatingIp"

    # Disassociate with port_id null.
    r = put_fip(client, f["id"], {"port_id": None})
    assert r.status_code == 200, r.text
    d = r.json()["floatingip"]
    assert d["port_id"] is None and d["fixed_ip_address"] is None and d["router_id"] is None
    assert d["status"] == "DOWN" and d["port_details"] is None
    # Now the interface and gateway can go.
    rm = act(client, t["router"], "remove_router_interface", {"subnet_id": t["sub"]})
    assert rm.status_code == 200, rm.text


def test_associate_at_create_and_already_associated(client: TestClient) -> None:
    t = topology(client)
    f1 = fip(client, t["ext_net"], port_id=t["port"])
    assert f1["status"] == "DOWN" and f1["router_id"] == t["router"]
    assert f1["fixed_ip_address"] == t["ip"]
    f2 = fip(client, t["ext_net"])
    r = put_fip(client, f2["id"], {"port_id": t["port"]})
    assert r.status_code == 409 and error_type(r) == "FloatingIPPortAlreadyAssociated", r.text
    assert r.json()["NeutronError"]["message"] == (
        f"Cannot associate floating IP {f2['floating_ip_address']} ({f2['id']}) with port "
        f"{t['port']} using fixed IP {t['ip']}, as that fixed IP already has a floating IP on "
        f"external network {t['ext_net']}."
    )
    r = client.post(
        "/v2.0/floatingips",
        json={"floatingip": {"floating_network_id": t["ext_net"], "port_id": t["port"]}},
        headers=P1,
    )
    assert r.status_code == 409 and error_type(r) == "FloatingIPPortAlreadyAssociated"
    assert len(ports_of(client, device_owner="network:floatingip")) == 2
    # Re-associating the same FIP to the same port is a no-op, not a conflict.
    r = put_fip(client, f1["id"], {"port_id": t["port"], "description": "same"})
    assert r.status_code == 200 and r.json()["floatingip"]["port_id"] == t["port"]
    # Moving: once f1 lets go, f2 can take the fixed IP.
    assert put_fip(client, f1["id"], {"port_id": None}).status_code == 200
    r = put_fip(client, f2["id"], {"port_id": t["port"]})
    assert r.status_code == 200, r.text
    moved = r.json()["floatingip"]
    assert moved["port_id"] == t["port"] and moved["status"] == "DOWN"


def test_empty_update_disassociates(client: TestClient) -> None:
    """Neutron's oldest contract: a PUT whose body names nothing clears the association,
    while one that changes something else keeps it."""
    t = topology(client)
    f = fip(client, t["ext_net"], port_id=t["port"])
    r = put_fip(client, f["id"], {"description": "kept"})
    assert r.status_code == 200 and r.json()["floatingip"]["port_id"] == t["port"], r.text
    r = put_fip(client, f["id"], {})
    assert r.status_code == 200, r.text
    cleared = r.json()["floatingip"]
    assert cleared["port_id"] is None and cleared["fixed_ip_address"] is None
    assert cleared["router_id"] is None and cleared["description"] == "kept"
    # The fixed IP is free again: another floating IP may take it.
    other = fip(client, t["ext_net"], port_id=t["port"])
    assert other["fixed_ip_address"] == t["ip"]
    assert put_fip(client, f["id"], {}).json()["floatingip"]["port_id"] is None


def test_reachability_required(client: TestClient) -> None:
    ext_net, _ = external_net(client)
    net, sub = private_net(client)
    vm = port(client, net)
    f = fip(client, ext_net)
    expected = (
        f"External network {ext_net} is not reachable from subnet {sub}.  Therefore, cannot "
        f"associate Port {vm['id']} with a Floating IP."
    )

    def refused() -> None:
        """Associating on update and on create is refused, and changes nothing."""
        r = put_fip(client, f["id"], {"port_id": vm["id"]})
        assert r.status_code == 404 and error_type(r) == "ExternalGatewayForFloatingIPNotFound"
        assert r.json()["NeutronError"]["message"] == expected
        assert client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"] == f
        r = client.post(
            "/v2.0/floatingips",
            json={"floatingip": {"floating_network_id": ext_net, "port_id": vm["id"]}},
            headers=P1,
        )
        assert r.status_code == 404 and error_type(r) == "ExternalGatewayForFloatingIPNotFound"
        assert [x["id"] for x in client.get("/v2.0/floatingips").json()["floatingips"]] == [f["id"]]
        assert len(ports_of(client, device_owner="network:floatingip")) == 1

    # No router at all.
    refused()
    # A router on the subnet but without a gateway.
    rt = router(client)
    assert act(client, rt["id"], "add_router_interface", {"subnet_id": sub}).status_code == 200
    refused()
    # A gateway on another external network does not help either.
    other_ext, _ = external_net(client, "172.25.0.0/24")
    u = client.put(
        f"/v2.0/routers/{rt['id']}",
        json={"router": {"external_gateway_info": {"network_id": other_ext}}},
        headers=P1,
    )
    assert u.status_code == 200, u.text
    refused()
    # The right gateway makes it reachable (and the router's gateway could move: the
    # refusals left no floating IP holding it).
    u = client.put(
        f"/v2.0/routers/{rt['id']}",
        json={"router": {"external_gateway_info": {"network_id": ext_net}}},
        headers=P1,
    )
    assert u.status_code == 200, u.text
    r = put_fip(client, f["id"], {"port_id": vm["id"]})
    assert r.status_code == 200 and r.json()["floatingip"]["router_id"] == rt["id"]
    got = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"]
    assert got["port_id"] == vm["id"] and got["status"] == "DOWN"
    # The create with a port succeeds too, once f lets the port go.
    assert put_fip(client, f["id"], {"port_id": None}).status_code == 200
    made = fip(client, ext_net, port_id=vm["id"])
    assert made["port_id"] == vm["id"] and made["router_id"] == rt["id"]


def test_fixed_ip_choice(client: TestClient) -> None:
    t = topology(client)
    # A port with two IPv4 addresses on the routed subnet.
    multi = port(
        client,
        t["net"],
        fixed_ips=[
            {"subnet_id": t["sub"], "ip_address": "10.0.0.50"},
            {"subnet_id": t["sub"], "ip_address": "10.0.0.51"},
        ],
    )
    f = fip(client, t["ext_net"])
    r = put_fip(client, f["id"], {"port_id": multi["id"]})
    assert r.status_code == 400 and error_type(r) == "BadRequest"
    assert r.json()["NeutronError"]["message"] == (
        f"Bad floatingip request: Port {multi['id']} has multiple fixed IPv4 addresses.  Must "
        "provide a specific IPv4 address when assigning a floating IP."
    )
    r = put_fip(client, f["id"], {"port_id": multi["id"], "fixed_ip_address": "10.0.0.99"})
    assert r.status_code == 400 and error_type(r) == "BadRequest"
    assert "does not have fixed ip 10.0.0.99" in r.json()["NeutronError"]["message"]
    r = put_fip(client, f["id"], {"port_id": multi["id"], "fixed_ip_address": "10.0.0.51"})
    assert r.status_code == 200, r.text
    assert r.json()["floatingip"]["fixed_ip_address"] == "10.0.0.51"
    # Switching fixed IP on the same port (port_id omitted keeps the port).
    r = put_fip(client, f["id"], {"fixed_ip_address": "10.0.0.50"})
    assert r.status_code == 200, r.text
    assert r.json()["floatingip"]["fixed_ip_address"] == "10.0.0.50"
    # A second FIP can now take the other address of the same port.
    f2 = fip(client, t["ext_net"], port_id=multi["id"], fixed_ip_address="10.0.0.51")
    assert f2["port_id"] == multi["id"] and f2["status"] == "DOWN"
    # fixed_ip_address without a port.
    r = put_fip(client, f2["id"], {"port_id": None, "fixed_ip_address": "10.0.0.51"})
    assert r.status_code == 400 and error_type(r) == "BadRequest"


def test_deleting_associated_port_disassociates(any_client: TestClient) -> None:
    client = any_client
    t = topology(client)
    f = fip(client, t["ext_net"], port_id=t["port"])
    assert client.delete(f"/v2.0/ports/{t['port']}", headers=P1).status_code == 204
    got = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"]
    assert got["port_id"] is None and got["status"] == "DOWN" and got["router_id"] is None
    # The claim is gone too: a new port with the same fixed IP can get a floating IP.
    vm = port(client, t["net"], fixed_ips=[{"subnet_id": t["sub"], "ip_address": t["ip"]}])
    r = put_fip(client, f["id"], {"port_id": vm["id"]})
    assert r.status_code == 200, r.text
    # ...and the router interface is free once disassociated again.
    assert put_fip(client, f["id"], {"port_id": None}).status_code == 200
    rm = act(client, t["router"], "remove_router_interface", {"subnet_id": t["sub"]})
    assert rm.status_code == 200, rm.text


def test_cascade_delete_of_networks(any_client: TestClient) -> None:
    client = any_client
    t = topology(client)
    f = fip(client, t["ext_net"], port_id=t["port"])
    idle = fip(client, t["ext_net"])
    # The private network goes: the FIP is disassociated, the router loses its interface.
    d = client.delete(f"/v2.0/networks/{t['net']}?cascade=true", headers=P1)
    assert d.status_code == 204, d.text
    got = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"]
    assert got["port_id"] is None and got["status"] == "DOWN"
    # The external network goes: its floating IPs and the gateway go with it.
    d = client.delete(f"/v2.0/networks/{t['ext_net']}?cascade=true")
    assert d.status_code == 204, d.text
    for x in (f, idle):
        g = client.get(f"/v2.0/floatingips/{x['id']}", headers=P1)
        assert g.status_code == 404
    r = client.get(f"/v2.0/routers/{t['router']}", headers=P1).json()["router"]
    assert r["external_gateway_info"] is None
    assert client.delete(f"/v2.0/routers/{t['router']}", headers=P1).status_code == 204


def test_external_network_delete_takes_unassociated_floating_ips(any_client: TestClient) -> None:
    """Neutron's rule (tempest's test_delete_external_networks_with_floating_ip): an
    external network holding only unassociated floating IPs can be deleted without
    cascade, and they go with it; a router's gateway there still blocks it (409), and
    then nothing changes."""
    client = any_client
    t = topology(client)
    used = fip(client, t["ext_net"], port_id=t["port"])
    idle = fip(client, t["ext_net"])
    d = client.delete(f"/v2.0/networks/{t['ext_net']}")
    assert d.status_code == 409 and error_type(d) == "NetworkInUse", d.text
    for x in (used, idle):
        assert client.get(f"/v2.0/floatingips/{x['id']}", headers=P1).status_code == 200
    # Only idle floating IPs on a network without a router gateway: the delete goes through.
    bare, _ = external_net(client, "10.77.0.0/24")
    left = fip(client, bare)
    ids = [x["id"] for x in client.get("/v2.0/floatingips").json()["floatingips"]]
    assert left["id"] in ids
    d = client.delete(f"/v2.0/networks/{bare}")
    assert d.status_code == 204, d.text
    assert client.get(f"/v2.0/floatingips/{left['id']}", headers=P1).status_code == 404
    assert client.get(f"/v2.0/networks/{bare}").status_code == 404
    assert [p for p in client.get("/v2.0/ports").json()["ports"] if p["network_id"] == bare] == []


def test_isolation(client: TestClient) -> None:
    t = topology(client)
    f = fip(client, t["ext_net"])
    for method, body in [
        ("GET", None),
        ("PUT", {"floatingip": {"description": "x"}}),
        ("DELETE", None),
    ]:
        r = client.request(method, f"/v2.0/floatingips/{f['id']}", json=body, headers=P2)
        assert r.status_code == 404 and error_type(r) == "FloatingIPNotFound", r.text
    assert client.get("/v2.0/floatingips", headers=P2).json()["floatingips"] == []
    # ... while its own project reads and changes it.
    assert client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).status_code == 200
    assert [x["id"] for x in client.get("/v2.0/floatingips", headers=P1).json()["floatingips"]] == [
        f["id"]
    ]
    assert put_fip(client, f["id"], {"description": "x"}).status_code == 200
    # Another project cannot point its floating IP at p1's port.
    f2 = fip(client, t["ext_net"], headers=P2)
    r = put_fip(client, f2["id"], {"port_id": t["port"]}, headers=P2)
    assert r.status_code == 404 and error_type(r) == "PortNotFound"
    # An admin may map any project's floating IP onto any port.
    r = put_fip(client, f2["id"], {"port_id": t["port"]}, headers=None)
    assert r.status_code == 200, r.text
    # Readers see, but cannot write.
    assert client.get(f"/v2.0/floatingips/{f['id']}", headers=READER).status_code == 200
    for r in [
        client.post(
            "/v2.0/floatingips",
            json={"floatingip": {"floating_network_id": t["ext_net"]}},
            headers=READER,
        ),
        put_fip(client, f["id"], {"port_id": t["port"]}, headers=READER),
        client.delete(f"/v2.0/floatingips/{f['id']}", headers=READER),
    ]:
        assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized", r.text
    # The same writes by a member of the project succeed (once f2 lets the port go).
    assert put_fip(client, f2["id"], {"port_id": None}, headers=None).status_code == 200
    r = client.post(
        "/v2.0/floatingips", json={"floatingip": {"floating_network_id": t["ext_net"]}}, headers=P1
    )
    assert r.status_code == 201, r.text
    assert put_fip(client, f["id"], {"port_id": t["port"]}).status_code == 200
    assert client.delete(f"/v2.0/floatingips/{f['id']}", headers=P1).status_code == 204


def test_floatingip_quota(client: TestClient) -> None:
    ext_net, _ = external_net(client)
    assert client.put("/v2.0/quotas/p1", json={"quota": {"floatingip": 1}}).status_code == 200
    fip(client, ext_net)
    r = client.post(
        "/v2.0/floatingips", json={"floatingip": {"floating_network_id": ext_net}}, headers=P1
    )
    assert r.status_code == 409 and error_type(r) == "OverQuota"
    assert len(ports_of(client, device_owner="network:floatingip")) == 1


def test_concurrent_associations_pick_one(sqlite_client: TestClient) -> None:
    """Two floating IPs raced onto one fixed IP: exactly one wins, on a real store."""
    client = sqlite_client
    t = topology(client)
    fips = [fip(client, t["ext_net"]) for _ in range(4)]
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def go(fip_id: str) -> None:
        r = put_fip(client, fip_id, {"port_id": t["port"]})
        with lock:
            results.append((r.status_code, "" if r.status_code == 200 else error_type(r)))

    threads = [threading.Thread(target=go, args=(f["id"],)) for f in fips]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lost = (409, "FloatingIPPortAlreadyAssociated")
    assert sorted(results) == [(200, ""), lost, lost, lost], results
    mapped = client.get(f"/v2.0/floatingips?port_id={t['port']}", headers=P1).json()
    assert [f["status"] for f in mapped["floatingips"]] == ["DOWN"]


def test_association_racing_port_delete_never_dangles(sqlite_client: TestClient) -> None:
    """Associate while the port is being deleted: either order is fine, but a floating IP
    must never stay mapped to a port that no longer exists."""
    client = sqlite_client
    t = topology(client)
    for _ in range(5):
        vm = port(client, t["net"])
        f = fip(client, t["ext_net"])
        threads = [
            threading.Thread(target=put_fip, args=(client, f["id"], {"port_id": vm["id"]})),
            threading.Thread(
                target=client.delete, args=(f"/v2.0/ports/{vm['id']}",), kwargs={"headers": P1}
            ),
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert client.get(f"/v2.0/ports/{vm['id']}", headers=P1).status_code == 404
        got = client.get(f"/v2.0/floatingips/{f['id']}", headers=P1).json()["floatingip"]
        assert got["port_id"] is None and got["status"] == "DOWN", got
