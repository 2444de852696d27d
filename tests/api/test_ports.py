"""Ports through the HTTP API: defaults, IPAM, MACs, port security, policy, delete rules."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type
from wyvern.api.context import admin_context
from wyvern.model.keys import ROOT

NET_KEYS = ("ip", "mac", "portkey")


def net(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> str:
    return str(create(client, "networks", headers=headers, **attrs)["id"])


def subnet(
    client: TestClient,
    network_id: str,
    cidr: str = "10.0.0.0/24",
    headers: dict[str, str] | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    attrs.setdefault("ip_version", 6 if ":" in cidr else 4)
    return create(client, "subnets", headers=headers, network_id=network_id, cidr=cidr, **attrs)


def post_port(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    return client.post("/v2.0/ports", json={"port": attrs}, headers=headers)


def port(client: TestClient, network_id: str, **attrs: Any) -> dict[str, Any]:
    return create(client, "ports", network_id=network_id, **attrs)


def put_port(
    client: TestClient, port_id: str, headers: dict[str, str] | None = None, **attrs: Any
) -> Any:
    return client.put(f"/v2.0/ports/{port_id}", json={"port": attrs}, headers=headers)


def binding(host: str, **more: Any) -> dict[str, Any]:
    return {"binding:host_id": host, **more}


def failure(resp: Any, status: int, type_: str) -> str:
    assert resp.status_code == status, resp.text
    assert error_type(resp) == type_, resp.text
    return str(resp.json()["NeutronError"]["message"])


def claims(client: TestClient, kind: str) -> dict[str, str]:
    """The uniq claims of one namespace in the store: key suffix -> owner."""
    store = client.app.state.api.store  # type: ignore[attr-defined]
    prefix = f"{ROOT}uniq/{kind}/"
    return {kv.key[len(prefix) :]: kv.value.decode() for kv in store.list(prefix).items}


def ips(p: dict[str, Any]) -> list[str]:
    return [ip["ip_address"] for ip in p["fixed_ips"]]


@pytest.fixture
def lan(any_client: TestClient) -> tuple[TestClient, str, dict[str, Any]]:
    n = net(any_client)
    return any_client, n, subnet(any_client, n)


# ---- defaults ---------------------------------------------------------------------------------
def test_defaults(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, s = lan
    p = port(client, n, name="vm1")
    assert p["status"] == "DOWN" and p["admin_state_up"] is True
    assert p["mac_address"].startswith("fa:16:3e:")
    assert len(p["fixed_ips"]) == 1 and p["fixed_ips"][0]["subnet_id"] == s["id"]
    ip = ipaddress.IPv4Address(p["fixed_ips"][0]["ip_address"])
    assert ipaddress.IPv4Address("10.0.0.2") <= ip <= ipaddress.IPv4Address("10.0.0.254")
    assert p["device_id"] == "" and p["device_owner"] == ""
    assert p["binding:vnic_type"] == "normal" and p["binding:vif_type"] == "unbound"
    assert p["binding:host_id"] == "" and p["binding:profile"] == {}
    assert p["binding:vif_details"] == {}
    assert p["port_security_enabled"] is True
    assert p["allowed_address_pairs"] == [] and p["extra_dhcp_opts"] == []
    assert p["project_id"] == p["tenant_id"] == "default"
    assert p["revision_number"] == 0
    assert not any(k.startswith("_") for k in p)
    if "security_group" in client.app.state.api.state.resources:  # type: ignore[attr-defined]
        groups = client.get("/v2.0/security-groups?name=default").json()["security_groups"]
        assert p["security_groups"] == [groups[0]["id"]]
    assert client.get(f"/v2.0/ports/{p['id']}").json()["port"] == p
    # The claims the port holds, owned by it.
    assert claims(client, "ip") == {f"{s['id']}/{ips(p)[0]}": p["id"]}
    assert claims(client, "mac") == {f"{n}/{p['mac_address']}": p["id"]}
    assert list(claims(client, "portkey").values()) == [p["id"]]


def test_member_does_not_see_binding_details(client: TestClient) -> None:
    n = net(client, headers=as_project("p1"))
    r = post_port(client, headers=as_project("p1"), network_id=n)
    assert r.status_code == 201, r.text
    p = r.json()["port"]
    assert "binding:host_id" not in p and "binding:vif_type" not in p
    assert p["binding:vnic_type"] == "normal"
    failure(
        post_port(client, headers=as_project("p1"), network_id=n, **{"binding:host_id": "h1"}),
        403,
        "PolicyNotAuthorized",
    )


def test_port_without_subnets_has_no_ips(client: TestClient) -> None:
    assert port(client, net(client))["fixed_ips"] == []


def test_dual_stack_and_multiple_v4_subnets(client: TestClient) -> None:
    n = net(client)
    a = subnet(client, n, "10.0.0.0/24")
    subnet(client, n, "10.0.1.0/24")
    v6 = subnet(client, n, "2001:db8::/64", ipv6_address_mode="dhcpv6-stateful")
    p = port(client, n)
    # Neutron: one IPv4 address (from the first subnet with room) and one stateful IPv6.
    assert [ip["subnet_id"] for ip in p["fixed_ips"]] == [a["id"], v6["id"]]


def test_first_v4_subnet_full_falls_to_the_next(client: TestClient) -> None:
    n = net(client)
    subnet(client, n, "10.0.0.0/30")
    b = subnet(client, n, "10.0.1.0/24")
    port(client, n)
    assert port(client, n)["fixed_ips"][0]["subnet_id"] == b["id"]


def test_slaac_gets_eui64_address(client: TestClient) -> None:
    n = net(client)
    s = subnet(client, n, "2001:db8::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    p = port(client, n, mac_address="fa:16:3e:11:22:33")
    assert p["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "2001:db8::f816:3eff:fe11:2233"}]
    r = post_port(client, network_id=n, fixed_ips=[{"ip_address": "2001:db8::99"}])
    assert "automatic addresses" in failure(r, 400, "InvalidInput")
    # A subnet-only request for a SLAAC subnet just means its EUI-64 address.
    q = port(client, n, fixed_ips=[{"subnet_id": s["id"]}], mac_address="fa:16:3e:00:00:01")
    assert ips(q) == ["2001:db8::f816:3eff:fe00:1"]


def test_new_slaac_subnet_addresses_existing_ports(client: TestClient) -> None:
    n = net(client)
    subnet(client, n)
    p = port(client, n, mac_address="fa:16:3e:aa:bb:cc")
    s6 = subnet(client, n, "2001:db8::/64", ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    shown = client.get(f"/v2.0/ports/{p['id']}").json()["port"]
    assert {"subnet_id": s6["id"], "ip_address": "2001:db8::f816:3eff:feaa:bbcc"} in shown[
        "fixed_ips"
    ]
    assert shown["revision_number"] == 1


# ---- requested addresses ----------------------------------------------------------------------
def test_requested_ip_and_subnet(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, s = lan
    p = port(client, n, fixed_ips=[{"ip_address": "10.0.0.77"}])
    assert p["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.0.0.77"}]
    q = port(client, n, fixed_ips=[{"subnet_id": s["id"]}])
    assert q["fixed_ips"][0]["subnet_id"] == s["id"] and ips(q) != ["10.0.0.77"]
    r = post_port(client, network_id=n, fixed_ips=[{"ip_address": "10.0.0.77"}])
    msg = failure(r, 409, "IpAddressInUse")
    assert (
        msg == f"Unable to complete operation for network {n}. The IP address 10.0.0.77 is in use."
    )
    # Outside the pools but inside the CIDR is allowed when asked for.
    g = port(client, n, fixed_ips=[{"subnet_id": s["id"], "ip_address": "10.0.0.1"}])
    assert ips(g) == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("fixed", "status", "type_"),
    [
        ([{"ip_address": "10.9.9.9"}], 400, "InvalidIpForNetwork"),
        ([{"ip_address": "10.0.0.0"}], 400, "InvalidIpForNetwork"),
        ([{"ip_address": "10.0.0.255"}], 400, "InvalidIpForNetwork"),
        ([{"subnet_id": "SUBNET", "ip_address": "10.1.0.5"}], 400, "InvalidIpForSubnet"),
        ([{"subnet_id": "00000000-0000-0000-0000-000000000009"}], 404, "SubnetNotFound"),
        ([{"subnet_id": "not-a-uuid"}], 400, "InvalidInput"),
        ([{"ip_address": "10.0.0.300"}], 400, "InvalidInput"),
        ([{}], 400, "InvalidInput"),
        ([{"ip_address": "10.0.0.5", "bogus": 1}], 400, "InvalidInput"),
        ([{"ip_address": "10.0.0.5"}, {"ip_address": "10.0.0.5"}], 400, "InvalidInput"),
        ("10.0.0.5", 400, "InvalidInput"),
        (None, 400, "InvalidInput"),
    ],
)
def test_requested_ip_errors(client: TestClient, fixed: Any, status: int, type_: str) -> None:
    n = net(client)
    s = subnet(client, n)
    if isinstance(fixed, list):
        fixed = [{k: (s["id"] if v == "SUBNET" else v) for k, v in e.items()} for e in fixed]
    failure(post_port(client, network_id=n, fixed_ips=fixed), status, type_)


def test_subnet_of_another_network(client: TestClient) -> None:
    n1, n2 = net(client), net(client)
    subnet(client, n1)
    other = subnet(client, n2, "10.5.0.0/24")
    r = post_port(client, network_id=n1, fixed_ips=[{"subnet_id": other["id"]}])
    assert "invalid subnet" in failure(r, 400, "InvalidInput")


def test_mac_address(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, _ = lan
    p = port(client, n, mac_address="FA-16-3E-00-00-01")
    assert p["mac_address"] == "fa:16:3e:00:00:01"
    r = post_port(client, network_id=n, mac_address="fa:16:3e:00:00:01")
    msg = failure(r, 409, "MacAddressInUse")
    assert msg == (
        f"Unable to complete operation for network {n}. The mac address fa:16:3e:00:00:01 is "
        "in use."
    )
    # The same MAC on another network is fine.
    port(client, net(client), mac_address="fa:16:3e:00:00:01")
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "xx", 5):
        failure(post_port(client, network_id=n, mac_address=bad), 400, "InvalidInput")


def test_exhaustion_and_reuse(any_client: TestClient) -> None:
    n = net(any_client)
    subnet(any_client, n, "10.0.0.0/29")  # .2 - .6: five addresses
    made = [port(any_client, n) for _ in range(5)]
    assert sorted(ip for p in made for ip in ips(p)) == [f"10.0.0.{i}" for i in range(2, 7)]
    r = post_port(any_client, network_id=n)
    msg = failure(r, 409, "IpAddressGenerationFailure")
    assert msg == f"No more IP addresses available on network {n}."
    assert any_client.delete(f"/v2.0/ports/{made[2]['id']}").status_code == 204
    assert ips(port(any_client, n)) == ips(made[2])
    failure(post_port(any_client, network_id=n), 409, "IpAddressGenerationFailure")
    assert len(claims(any_client, "ip")) == 5


# ---- bulk -------------------------------------------------------------------------------------
def test_bulk_is_atomic(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, _ = lan
    good = port(client, n, fixed_ips=[{"ip_address": "10.0.0.10"}])
    before = {k: claims(client, k) for k in NET_KEYS}
    bodies: list[dict[str, Any]] = [{"network_id": n} for _ in range(5)]
    bodies.append({"network_id": n, "fixed_ips": [{"ip_address": "10.0.0.10"}]})
    r = client.post("/v2.0/ports", json={"ports": bodies})
    failure(r, 409, "IpAddressInUse")
    assert [p["id"] for p in client.get("/v2.0/ports").json()["ports"]] == [good["id"]]
    assert {k: claims(client, k) for k in NET_KEYS} == before
    # Two ports of one bulk asking for one MAC: the second one's conflict, nothing created.
    dup = [{"network_id": n, "mac_address": "fa:16:3e:01:02:03"}] * 2
    failure(client.post("/v2.0/ports", json={"ports": dup}), 409, "MacAddressInUse")
    ok = client.post("/v2.0/ports", json={"ports": [{"network_id": n} for _ in range(20)]})
    assert ok.status_code == 201, ok.text
    made = ok.json()["ports"]
    assert len({ips(p)[0] for p in made}) == 20
    assert len({p["mac_address"] for p in made}) == 20
    assert len(claims(client, "portkey")) == 21


# ---- filters ----------------------------------------------------------------------------------
def test_filters(client: TestClient) -> None:
    n = net(client)
    s1 = subnet(client, n, "10.0.0.0/24")
    n2 = net(client)
    subnet(client, n2, "10.0.0.0/24")
    a = port(client, n, fixed_ips=[{"ip_address": "10.0.0.5"}], device_owner="compute:nova")
    b = port(client, n2, fixed_ips=[{"ip_address": "10.0.0.5"}], device_id="vm-b")
    c = port(client, n, fixed_ips=[{"ip_address": "10.0.0.6"}])

    def ids(query: str) -> set[str]:
        r = client.get(f"/v2.0/ports?{query}")
        assert r.status_code == 200, r.text
        return {p["id"] for p in r.json()["ports"]}

    assert ids("fixed_ips=ip_address%3D10.0.0.5") == {a["id"], b["id"]}
    assert ids(f"fixed_ips=ip_address%3D10.0.0.5&fixed_ips=subnet_id%3D{s1['id']}") == {a["id"]}
    assert ids("fixed_ips=ip_address%3D10.0.0.5&fixed_ips=ip_address%3D10.0.0.6") == {
        a["id"],
        b["id"],
        c["id"],
    }
    assert ids("fixed_ips=ip_address_substr%3D0.0.6") == {c["id"]}
    assert ids("ip_address=10.0.0.6") == {c["id"]}
    assert ids(f"network_id={n}") == {a["id"], c["id"]}
    assert ids("device_owner=compute:nova") == {a["id"]}
    assert ids("device_id=vm-b") == {b["id"]}
    assert ids("device_id=") == {a["id"], c["id"]}
    assert ids(f"mac_address={a['mac_address'].upper()}") == {a["id"]}
    assert ids("status=DOWN") == {a["id"], b["id"], c["id"]}
    assert ids("fields=id&fields=fixed_ips&fixed_ips=ip_address%3D10.0.0.6") == {c["id"]}
    r = client.get("/v2.0/ports?fixed_ips=bogus%3D1")
    failure(r, 400, "HTTPBadRequest")
    if "security_group" in client.app.state.api.state.resources:  # type: ignore[attr-defined]
        sg = a["security_groups"][0]
        assert ids(f"security_groups={sg}") == {a["id"], b["id"], c["id"]}


# ---- update -----------------------------------------------------------------------------------
def test_update_fixed_ips(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, s = lan
    p = port(client, n, fixed_ips=[{"ip_address": "10.0.0.20"}])
    r = put_port(client, p["id"], fixed_ips=[{"ip_address": "10.0.0.21"}])
    assert r.status_code == 200, r.text
    assert ips(r.json()["port"]) == ["10.0.0.21"]
    assert claims(client, "ip") == {f"{s['id']}/10.0.0.21": p["id"]}
    # The released address is free for someone else.
    assert ips(port(client, n, fixed_ips=[{"ip_address": "10.0.0.20"}])) == ["10.0.0.20"]
    # Keep one (by subnet), add one exact and one any.
    r = put_port(
        client,
        p["id"],
        fixed_ips=[{"subnet_id": s["id"]}, {"ip_address": "10.0.0.30"}, {"subnet_id": s["id"]}],
    )
    got = ips(r.json()["port"])
    assert got[0] == "10.0.0.21" and "10.0.0.30" in got and len(set(got)) == 3
    failure(
        put_port(client, p["id"], fixed_ips=[{"ip_address": "10.0.0.20"}]), 409, "IpAddressInUse"
    )
    assert ips(client.get(f"/v2.0/ports/{p['id']}").json()["port"]) == got
    r = put_port(client, p["id"], fixed_ips=[])
    assert r.json()["port"]["fixed_ips"] == []
    assert set(claims(client, "ip")) == {f"{s['id']}/10.0.0.20"}


def test_update_plain_attributes(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, _ = lan
    p = port(client, n)
    r = put_port(
        client,
        p["id"],
        name="x",
        device_id="vm",
        device_owner="compute:nova",
        admin_state_up=False,
        **binding("host-1", **{"binding:vnic_type": "direct"}),
    )
    assert r.status_code == 200, r.text
    got = r.json()["port"]
    assert got["name"] == "x" and got["admin_state_up"] is False
    assert got["binding:vif_type"] == "ovs" and got["binding:vif_details"]["port_filter"] is True
    assert got["revision_number"] == 1
    failure(put_port(client, p["id"], network_id=n), 400, "HTTPBadRequest")
    failure(put_port(client, p["id"], status="ACTIVE"), 400, "HTTPBadRequest")
    # A bound port keeps its MAC.
    failure(put_port(client, p["id"], mac_address="fa:16:3e:12:12:12"), 409, "PortBound")
    r = put_port(client, p["id"], **binding(""))
    assert r.json()["port"]["binding:vif_type"] == "unbound"
    r = put_port(client, p["id"], mac_address="fa:16:3e:12:12:12")
    assert r.json()["port"]["mac_address"] == "fa:16:3e:12:12:12"
    assert claims(client, "mac") == {f"{n}/fa:16:3e:12:12:12": p["id"]}


def test_mac_update_is_admin_only(client: TestClient) -> None:
    h = as_project("p1")
    n = net(client, headers=h)
    p = create(client, "ports", headers=h, network_id=n)
    failure(
        put_port(client, p["id"], headers=h, mac_address="fa:16:3e:12:12:12"),
        403,
        "PolicyNotAuthorized",
    )


def test_extra_dhcp_opts(client: TestClient) -> None:
    n = net(client)
    p = port(client, n, extra_dhcp_opts=[{"opt_name": "mtu", "opt_value": "1400"}])
    assert p["extra_dhcp_opts"] == [{"opt_name": "mtu", "opt_value": "1400", "ip_version": 4}]
    r = put_port(
        client,
        p["id"],
        extra_dhcp_opts=[
            {"opt_name": "mtu", "opt_value": None},
            {"opt_name": "dns-server", "opt_value": "::1", "ip_version": 6},
        ],
    )
    assert r.json()["port"]["extra_dhcp_opts"] == [
        {"opt_name": "dns-server", "opt_value": "::1", "ip_version": 6}
    ]
    for bad in (
        [{"opt_name": "", "opt_value": "x"}],
        [{"opt_name": "a"}],
        [{"opt_name": "a", "opt_value": "b", "ip_version": 5}],
    ):
        failure(post_port(client, network_id=n, extra_dhcp_opts=bad), 400, "InvalidInput")


def test_extra_dhcp_opts_v6_are_refused_unless_the_dhcpv6_server_can_send_them(
    client: TestClient,
) -> None:
    """Accepted == served: the API and the agent's DHCPv6 server share one option table."""
    n = net(client)
    ok = [
        {"opt_name": "dns-server", "opt_value": "[fd00::53],fd00::54", "ip_version": 6},
        {"opt_name": "option6:domain-search", "opt_value": "a.example", "ip_version": 6},
        {"opt_name": "59", "opt_value": "http://[fd00::1]/boot", "ip_version": 6},
    ]
    p = port(client, n, extra_dhcp_opts=ok)
    assert p["extra_dhcp_opts"] == ok
    for bad, words in (
        ({"opt_name": "server-id", "opt_value": "x"}, "'server-id' is not supported"),
        ({"opt_name": "mtu", "opt_value": "1400"}, "'mtu' is not supported"),
        ({"opt_name": "4242", "opt_value": "x"}, "'4242' is not supported"),
        ({"opt_name": "dns-server", "opt_value": "10.0.0.1"}, "is not an IPv6 address"),
        ({"opt_name": "domain-search", "opt_value": "a..b"}, "is not a domain name"),
    ):
        opts = [{**bad, "ip_version": 6}]
        message = failure(
            post_port(client, network_id=n, extra_dhcp_opts=opts), 400, "InvalidInput"
        )
        assert "extra_dhcp_opts" in message and words in message, message
        failure(put_port(client, p["id"], extra_dhcp_opts=opts), 400, "InvalidInput")
    # Nothing changed by the refusals; a v6 option can still be deleted with null.
    r = client.get(f"/v2.0/ports/{p['id']}")
    assert r.json()["port"]["extra_dhcp_opts"] == ok
    r = put_port(
        client, p["id"], extra_dhcp_opts=[{"opt_name": "59", "opt_value": None, "ip_version": 6}]
    )
    assert r.status_code == 200 and r.json()["port"]["extra_dhcp_opts"] == ok[:2]
    # The same names for IPv4 are DHCPv4's business (unchanged).
    v4 = [{"opt_name": "server-id", "opt_value": "10.0.0.1", "ip_version": 4}]
    assert port(client, n, extra_dhcp_opts=v4)["extra_dhcp_opts"] == v4


# ---- port security ----------------------------------------------------------------------------
def test_port_security(client: TestClient) -> None:
    n = net(client)
    subnet(client, n)
    off = port(client, n, port_security_enabled=False)
    assert off["security_groups"] == [] and off["port_security_enabled"] is False
    insecure_net = net(client, port_security_enabled=False)
    assert port(client, insecure_net)["port_security_enabled"] is False
    pairs = [{"ip_address": "10.0.0.200"}]
    r = post_port(client, network_id=n, port_security_enabled=False, allowed_address_pairs=pairs)
    failure(r, 409, "AddressPairAndPortSecurityRequired")
    on = port(
        client,
        n,
        allowed_address_pairs=[
            *pairs,
            {"ip_address": "192.168.0.0/24", "mac_address": "fa:16:3e:00:00:09"},
        ],
    )
    assert on["allowed_address_pairs"] == [
        {"ip_address": "10.0.0.200", "mac_address": on["mac_address"]},
        {"ip_address": "192.168.0.0/24", "mac_address": "fa:16:3e:00:00:09"},
    ]
    too_many = [{"ip_address": f"10.1.0.{i}"} for i in range(11)]
    failure(
        post_port(client, network_id=n, allowed_address_pairs=too_many),
        400,
        "AllowedAddressPairExhausted",
    )
    failure(
        post_port(client, network_id=n, allowed_address_pairs=pairs * 2),
        400,
        "DuplicateAddressPairInRequest",
    )
    failure(
        post_port(client, network_id=n, allowed_address_pairs=[{"ip_address": "10.1.0.1/24"}]),
        400,
        "InvalidInput",
    )
    failure(
        post_port(
            client, network_id=n, allowed_address_pairs=[{"mac_address": "fa:16:3e:00:00:09"}]
        ),
        400,
        "InvalidInput",
    )
    # Turning port security off needs the pairs (and groups) gone in the same request.
    failure(
        put_port(client, on["id"], port_security_enabled=False, security_groups=[]),
        409,
        "AddressPairAndPortSecurityRequired",
    )
    r = put_port(
        client, on["id"], port_security_enabled=False, allowed_address_pairs=[], security_groups=[]
    )
    assert r.status_code == 200, r.text
    assert r.json()["port"]["port_security_enabled"] is False


def test_security_groups(client: TestClient) -> None:
    h1, h2 = as_project("p1"), as_project("p2")
    n = net(client, headers=h1)
    mine = create(client, "security-groups", headers=h1, name="web")
    theirs = create(client, "security-groups", headers=h2, name="db")
    # neutron-lib's list validator: the same group twice is a 400, on create and update.
    r = post_port(client, headers=h1, network_id=n, security_groups=[mine["id"], mine["id"]])
    assert f"Duplicate items in the list: '{mine['id']}'" in failure(r, 400, "InvalidInput")
    p = create(client, "ports", headers=h1, network_id=n, security_groups=[mine["id"]])
    r = put_port(client, p["id"], headers=h1, security_groups=[mine["id"], mine["id"]])
    failure(r, 400, "InvalidInput")
    r = post_port(client, headers=h1, network_id=n, security_groups=[theirs["id"]])
    failure(r, 404, "SecurityGroupNotFound")
    r = post_port(
        client, headers=h1, network_id=n, security_groups=["00000000-0000-0000-0000-000000000001"]
    )
    failure(r, 404, "SecurityGroupNotFound")
    r = post_port(
        client, headers=h1, network_id=n, port_security_enabled=False, security_groups=[mine["id"]]
    )
    failure(r, 400, "PortSecurityAndIPRequiredForSecurityGroups")
    failure(
        put_port(client, p["id"], headers=h1, port_security_enabled=False),
        409,
        "PortSecurityPortHasSecurityGroup",
    )
    r = put_port(client, p["id"], headers=h1, security_groups=[])
    assert r.json()["port"]["security_groups"] == []
    dhcp = create(client, "ports", headers=h1, network_id=n, device_owner="network:dhcp")
    assert dhcp["security_groups"] == []


def test_stateful_and_stateless_groups_never_share_a_port(client: TestClient) -> None:
    """Neutron's SecurityGroupConflict: one port cannot both track connections and not."""
    n = net(client)
    full = create(client, "security-groups", name="full")
    also = create(client, "security-groups", name="also")
    bare = create(client, "security-groups", name="bare", stateful=False)
    both = [full["id"], bare["id"]]
    p = create(client, "ports", network_id=n, security_groups=[full["id"], also["id"]])
    assert p["security_groups"] == [full["id"], also["id"]]
    message = failure(
        post_port(client, network_id=n, security_groups=both), 409, "SecurityGroupConflict"
    )
    assert "both stateful and stateless" in message
    failure(put_port(client, p["id"], security_groups=both), 409, "SecurityGroupConflict")
    lone = create(client, "ports", network_id=n, security_groups=[bare["id"]])
    r = put_port(client, lone["id"], security_groups=[bare["id"], full["id"]])
    failure(r, 409, "SecurityGroupConflict")
    shown = client.get(f"/v2.0/ports/{lone['id']}").json()["port"]
    assert shown["security_groups"] == [bare["id"]]
    assert len(client.get(f"/v2.0/ports?network_id={n}").json()["ports"]) == 2


# ---- delete -----------------------------------------------------------------------------------
def test_network_in_use_and_cascade(any_client: TestClient) -> None:
    client = any_client
    n = net(client)
    s = subnet(client, n)
    for _ in range(3):
        port(client, n)
    r = client.delete(f"/v2.0/networks/{n}")
    assert "one or more ports still in use" in failure(r, 409, "NetworkInUse")
    assert len(claims(client, "ip")) == 3
    assert client.delete(f"/v2.0/networks/{n}?cascade=true").status_code == 204
    assert client.get("/v2.0/ports").json()["ports"] == []
    assert client.get(f"/v2.0/subnets/{s['id']}").status_code == 404
    for kind in NET_KEYS:
        assert claims(client, kind) == {}, kind


def test_subnet_in_use(any_client: TestClient) -> None:
    n = net(any_client)
    s = subnet(any_client, n)
    p = port(any_client, n)
    failure(any_client.delete(f"/v2.0/subnets/{s['id']}"), 409, "SubnetInUse")
    assert any_client.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    assert any_client.delete(f"/v2.0/subnets/{s['id']}").status_code == 204
    assert claims(any_client, "ip") == {}


def test_router_port_needs_its_router(client: TestClient) -> None:
    n = net(client)
    subnet(client, n)
    if "router" in client.app.state.api.state.resources:  # type: ignore[attr-defined]
        router = create(client, "routers", name="r")
        live = port(client, n, device_owner="network:router_interface", device_id=router["id"])
        r = client.delete(f"/v2.0/ports/{live['id']}")
        msg = failure(r, 409, "ServicePortInUse")
        assert msg == (
            f"Port {live['id']} cannot be deleted directly via the port API: has device owner "
            "network:router_interface."
        )
    # A router port whose router is gone is stale: deleting it is fine.
    stale = port(client, n, device_owner="network:router_interface", device_id="gone")
    assert client.delete(f"/v2.0/ports/{stale['id']}").status_code == 204


def test_delete_releases_claims(lan: tuple[TestClient, str, dict[str, Any]]) -> None:
    client, n, _ = lan
    p = port(client, n, mac_address="fa:16:3e:00:00:42", fixed_ips=[{"ip_address": "10.0.0.42"}])
    assert client.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    assert all(claims(client, k) == {} for k in NET_KEYS)
    assert client.get(f"/v2.0/ports/{p['id']}").status_code == 404
    assert client.delete(f"/v2.0/ports/{p['id']}").status_code == 404
    again = port(
        client, n, mac_address="fa:16:3e:00:00:42", fixed_ips=[{"ip_address": "10.0.0.42"}]
    )
    assert ips(again) == ["10.0.0.42"]


# ---- policy -----------------------------------------------------------------------------------
def test_project_isolation(client: TestClient) -> None:
    h1, h2 = as_project("p1"), as_project("p2")
    n = net(client, headers=h1)
    subnet(client, n, headers=h1)
    p = create(client, "ports", headers=h1, network_id=n)
    assert client.get(f"/v2.0/ports/{p['id']}", headers=h2).status_code == 404
    assert client.get("/v2.0/ports", headers=h2).json()["ports"] == []
    failure(post_port(client, headers=h2, network_id=n), 404, "NetworkNotFound")
    assert put_port(client, p["id"], headers=h2, name="x").status_code == 404
    assert client.delete(f"/v2.0/ports/{p['id']}", headers=h2).status_code == 404
    reader = as_project("p1", "reader")
    assert client.get(f"/v2.0/ports/{p['id']}", headers=reader).status_code == 200
    failure(post_port(client, headers=reader, network_id=n), 403, "PolicyNotAuthorized")
    # Another project named in the body: neutron-lib's 400, not a policy decision.
    failure(post_port(client, headers=h1, network_id=n, project_id="p2"), 400, "HTTPBadRequest")
    # The same requests succeed for the port's own project.
    assert client.get(f"/v2.0/ports/{p['id']}", headers=h1).status_code == 200
    assert [x["id"] for x in client.get("/v2.0/ports", headers=h1).json()["ports"]] == [p["id"]]
    assert put_port(client, p["id"], headers=h1, name="x").status_code == 200
    assert client.delete(f"/v2.0/ports/{p['id']}", headers=h1).status_code == 204
    assert post_port(client, headers=h1, network_id=n).status_code == 201


def test_shared_and_external_networks(client: TestClient) -> None:
    h1, h2 = as_project("p1"), as_project("p2")
    shared = net(client, shared=True)
    subnet(client, shared)
    p = create(client, "ports", headers=h2, network_id=shared)
    assert p["project_id"] == "p2"
    for attrs, rule in (
        ({"fixed_ips": [{"ip_address": "10.0.0.9"}]}, "ip_address"),
        ({"mac_address": "fa:16:3e:00:00:77"}, "mac_address"),
        ({"device_owner": "network:dhcp"}, "device_owner"),
    ):
        r = post_port(client, headers=h2, network_id=shared, **attrs)
        assert rule in failure(r, 403, "PolicyNotAuthorized")
    # p2 sees only its own port on the shared network; the network's owner sees all.
    create(client, "ports", network_id=shared)
    assert [x["id"] for x in client.get("/v2.0/ports", headers=h2).json()["ports"]] == [p["id"]]
    external_attrs: dict[str, Any] = {"router:external": True}
    external = net(client, **external_attrs)
    failure(post_port(client, headers=h1, network_id=external), 403, "PolicyNotAuthorized")
    owner = as_project("netowner")
    owned = net(client, headers=owner)
    theirs = client.post("/v2.0/ports", json={"port": {"network_id": owned, "project_id": "p9"}})
    assert theirs.status_code == 201
    listed = client.get("/v2.0/ports", headers=owner).json()["ports"]
    assert [x["id"] for x in listed] == [theirs.json()["port"]["id"]]
    assert client.delete(f"/v2.0/ports/{listed[0]['id']}", headers=owner).status_code == 204


# ---- internal API for routers and floating IPs ------------------------------------------------
def test_create_internal_shares_the_callers_transaction(client: TestClient) -> None:
    n = net(client)
    s = subnet(client, n)
    api = client.app.state.api  # type: ignore[attr-defined]
    ports = api.state.resources["port"]
    ctx = admin_context("default")
    txn = api.state.repo.txn()
    made = ports.create_internal(
        ctx,
        txn,
        {
            "network_id": n,
            "fixed_ips": [{"subnet_id": s["id"], "ip_address": s["gateway_ip"]}],
            "device_owner": "network:router_interface",
            "device_id": "r1",
            "project_id": "default",
        },
    )
    other = ports.create_internal(
        ctx, txn, {"network_id": n, "device_owner": "network:router_gateway", "project_id": ""}
    )
    assert ips(made) == ["10.0.0.1"] and made["security_groups"] == []
    assert client.get("/v2.0/ports").json()["ports"] == []  # nothing until the caller commits
    txn.commit()
    listed = {p["id"]: p for p in client.get("/v2.0/ports").json()["ports"]}
    assert set(listed) == {made["id"], other["id"]}
    assert listed[other["id"]]["project_id"] == ""
    assert len(claims(client, "ip")) == 2


def test_null_lists_mean_empty(client: TestClient) -> None:
    """Neutron's convert_none_to_empty_list: null groups, pairs and options are []."""
    n = net(client)
    p = port(client, n, security_groups=None, allowed_address_pairs=None, extra_dhcp_opts=None)
    assert p["security_groups"] == [] and p["allowed_address_pairs"] == []
    assert p["extra_dhcp_opts"] == []
    failure(post_port(client, network_id=n, fixed_ips=None), 400, "InvalidInput")
