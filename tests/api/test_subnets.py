"""Subnets through the HTTP API: Neutron's defaults, validation errors, policy and delete rules."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type

V4 = "10.0.0.0/24"


def net(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> str:
    return str(create(client, "networks", headers=headers, **attrs)["id"])


def post_subnet(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    return client.post("/v2.0/subnets", json={"subnet": attrs}, headers=headers)


def subnet(client: TestClient, network_id: str, cidr: str = V4, **attrs: Any) -> dict[str, Any]:
    version = 6 if ":" in cidr else 4
    attrs.setdefault("ip_version", version)
    return create(client, "subnets", network_id=network_id, cidr=cidr, **attrs)


def failure(resp: Any, status: int, type_: str) -> str:
    assert resp.status_code == status, resp.text
    assert error_type(resp) == type_, resp.text
    return str(resp.json()["NeutronError"]["message"])


# ---- create: defaults -------------------------------------------------------------------------
def test_v4_defaults_and_network_link(any_client: TestClient) -> None:
    n = net(any_client)
    before = any_client.get(f"/v2.0/networks/{n}").json()["network"]["revision_number"]
    s = subnet(any_client, n, name="s1")
    assert s["cidr"] == V4 and s["ip_version"] == 4
    assert s["gateway_ip"] == "10.0.0.1"
    assert s["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert s["enable_dhcp"] is True
    assert s["dns_nameservers"] == [] and s["host_routes"] == []
    assert s["ipv6_ra_mode"] is None and s["ipv6_address_mode"] is None
    assert s["subnetpool_id"] is None and s["segment_id"] is None
    assert s["project_id"] == s["tenant_id"] == "default"
    assert s["revision_number"] == 0 and s["tags"] == []
    network = any_client.get(f"/v2.0/networks/{n}").json()["network"]
    assert network["subnets"] == [s["id"]]
    assert network["revision_number"] > before
    shown = any_client.get(f"/v2.0/subnets/{s['id']}").json()["subnet"]
    assert shown == s


def test_v6_defaults(client: TestClient) -> None:
    s = subnet(client, net(client), "2001:db8::/64")
    assert s["gateway_ip"] == "2001:db8::1"
    assert s["allocation_pools"] == [
        {"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}
    ]


def test_no_gateway_gives_the_whole_range(client: TestClient) -> None:
    s = subnet(client, net(client), gateway_ip=None)
    assert s["gateway_ip"] is None
    assert s["allocation_pools"] == [{"start": "10.0.0.1", "end": "10.0.0.254"}]


def test_gateway_inside_the_range_splits_the_pool(client: TestClient) -> None:
    s = subnet(client, net(client), gateway_ip="10.0.0.100")
    assert s["allocation_pools"] == [
        {"start": "10.0.0.1", "end": "10.0.0.99"},
        {"start": "10.0.0.101", "end": "10.0.0.254"},
    ]


def test_small_prefixes(client: TestClient) -> None:
    n = net(client)
    s30 = subnet(client, n, "10.1.0.0/30")
    assert s30["gateway_ip"] == "10.1.0.1"
    assert s30["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.2"}]
    s31 = subnet(client, n, "10.2.0.0/31", enable_dhcp=False)
    assert s31["gateway_ip"] is None and s31["allocation_pools"] == []
    r = post_subnet(client, network_id=n, cidr="10.3.0.0/31", ip_version=4)
    assert "incompatible with DHCP" in failure(r, 400, "InvalidInput")


# ---- create: validation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attrs", "status", "type_"),
    [
        ({"cidr": "10.0.0.5/24", "ip_version": 4}, 400, "InvalidInput"),  # host bits
        ({"cidr": "10.0.0.0", "ip_version": 4}, 400, "InvalidInput"),  # no prefix
        ({"cidr": "not-a-cidr", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": 12, "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 5}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24"}, 400, "HTTPBadRequest"),  # ip_version required
        ({"ip_version": 4}, 400, "BadRequest"),  # no cidr and no pool
        ({"cidr": "0.0.0.0/0", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "224.0.0.0/24", "ip_version": 4}, 400, "InvalidInput"),  # multicast + dhcp
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.1.1"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.0"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.255"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "::1"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "x"}, 400, "InvalidInput"),
        (
            {
                "cidr": "10.0.0.0/24",
                "ip_version": 4,
                "subnetpool_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
            },
            404,
            "SubnetPoolNotFound",
        ),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "bogus": 1}, 400, "HTTPBadRequest"),
        ({"cidr": "10.0.0.0/24", "ip_version": 4, "ipv6_ra_mode": "slaac"}, 400, "InvalidInput"),
    ],
)
def test_create_validation(
    client: TestClient, attrs: dict[str, Any], status: int, type_: str
) -> None:
    failure(post_subnet(client, network_id=net(client), **attrs), status, type_)


def test_unknown_network_is_404(client: TestClient) -> None:
    r = post_subnet(
        client, network_id="00000000-0000-0000-0000-000000000001", cidr=V4, ip_version=4
    )
    failure(r, 404, "NetworkNotFound")


@pytest.mark.parametrize(
    ("pools", "status", "type_"),
    [
        ([{"start": "10.0.0.10", "end": "10.0.1.20"}], 400, "OutOfBoundsAllocationPool"),
        ([{"start": "10.0.0.0", "end": "10.0.0.20"}], 400, "OutOfBoundsAllocationPool"),
        ([{"start": "10.0.0.20", "end": "10.0.0.10"}], 400, "InvalidAllocationPool"),
        ([{"start": "::2", "end": "::9"}], 400, "InvalidAllocationPool"),
        ([{"start": "10.0.0.10"}], 400, "InvalidInput"),
        ([{"start": "10.0.0.10", "end": "10.0.0.20", "x": 1}], 400, "InvalidInput"),
        ("10.0.0.10-10.0.0.20", 400, "InvalidInput"),
        (
            [
                {"start": "10.0.0.10", "end": "10.0.0.20"},
                {"start": "10.0.0.20", "end": "10.0.0.30"},
            ],
            409,
            "OverlappingAllocationPools",
        ),
        ([{"start": "10.0.0.1", "end": "10.0.0.20"}], 409, "GatewayConflictWithAllocationPools"),
    ],
)
def test_allocation_pool_errors(client: TestClient, pools: Any, status: int, type_: str) -> None:
    r = post_subnet(client, network_id=net(client), cidr=V4, ip_version=4, allocation_pools=pools)
    failure(r, status, type_)


def test_explicit_pools_are_kept(client: TestClient) -> None:
    pools = [{"start": "10.0.0.50", "end": "10.0.0.60"}, {"start": "10.0.0.10", "end": "10.0.0.20"}]
    s = subnet(client, net(client), allocation_pools=pools)
    assert s["allocation_pools"] == pools


def test_dns_and_host_routes(client: TestClient) -> None:
    n = net(client)
    routes = [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    s = subnet(client, n, dns_nameservers=["8.8.8.8", "1.1.1.1"], host_routes=routes)
    assert s["dns_nameservers"] == ["8.8.8.8", "1.1.1.1"]
    assert s["host_routes"] == routes
    bad: list[tuple[dict[str, Any], str]] = [
        ({"dns_nameservers": [f"10.1.1.{i}" for i in range(6)]}, "DNSNameServersExhausted"),
        ({"dns_nameservers": ["8.8.8.8", "8.8.8.8"]}, "InvalidInput"),
        ({"dns_nameservers": ["dns.example.com"]}, "InvalidInput"),
        (
            {
                "host_routes": [
                    {"destination": f"172.16.{i}.0/24", "nexthop": "10.0.0.9"} for i in range(21)
                ]
            },
            "HostRoutesExhausted",
        ),
        ({"host_routes": [{"destination": "::/0", "nexthop": "10.0.0.9"}]}, "InvalidInput"),
        ({"host_routes": [{"destination": "10.9.0.1/16", "nexthop": "10.0.0.9"}]}, "InvalidInput"),
        ({"host_routes": [{"destination": "10.9.0.0/16"}]}, "InvalidInput"),
    ]
    for i, (attrs, type_) in enumerate(bad):
        r = post_subnet(client, network_id=n, cidr=f"10.{100 + i}.0.0/24", ip_version=4, **attrs)
        failure(r, 400, type_)


def test_ipv6_modes(client: TestClient) -> None:
    n = net(client)
    s = subnet(client, n, "2001:db8:1::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    assert s["ipv6_ra_mode"] == s["ipv6_address_mode"] == "slaac"
    for attrs in (
        {
            "cidr": "2001:db8:2::/64",
            "ipv6_ra_mode": "slaac",
            "ipv6_address_mode": "dhcpv6-stateful",
        },
        {"cidr": "2001:db8:3::/80", "ipv6_address_mode": "slaac"},
        {"cidr": "2001:db8:4::/64", "ipv6_address_mode": "slaac", "enable_dhcp": False},
        {"cidr": "2001:db8:5::/64", "ipv6_address_mode": "bogus"},
    ):
        failure(post_subnet(client, network_id=n, ip_version=6, **attrs), 400, "InvalidInput")
    stateful = subnet(client, n, "2001:db8:6::/80", ipv6_address_mode="dhcpv6-stateful")
    assert stateful["ipv6_address_mode"] == "dhcpv6-stateful"


def test_overlapping_subnets_on_one_network(any_client: TestClient) -> None:
    n = net(any_client)
    subnet(any_client, n, "10.0.0.0/16")
    r = post_subnet(any_client, network_id=n, cidr="10.0.5.0/24", ip_version=4)
    msg = failure(r, 400, "InvalidInput")
    assert f"Requested subnet with cidr: 10.0.5.0/24 for network: {n} overlaps" in msg
    # The same range on another network is fine (overlapping IPs across networks).
    subnet(any_client, net(any_client), "10.0.5.0/24")


def test_bulk_create_is_atomic_and_sees_itself(any_client: TestClient) -> None:
    n = net(any_client)
    body = {
        "subnets": [
            {"network_id": n, "cidr": "10.0.0.0/24", "ip_version": 4},
            {"network_id": n, "cidr": "10.0.1.0/24", "ip_version": 4},
        ]
    }
    r = any_client.post("/v2.0/subnets", json=body)
    assert r.status_code == 201, r.text
    ids = [s["id"] for s in r.json()["subnets"]]
    assert sorted(any_client.get(f"/v2.0/networks/{n}").json()["network"]["subnets"]) == sorted(ids)
    clash = {
        "subnets": [
            {"network_id": n, "cidr": "10.0.2.0/24", "ip_version": 4},
            {"network_id": n, "cidr": "10.0.2.0/25", "ip_version": 4},
        ]
    }
    failure(any_client.post("/v2.0/subnets", json=clash), 400, "InvalidInput")
    assert len(any_client.get("/v2.0/subnets").json()["subnets"]) == 2


def test_list_filters(client: TestClient) -> None:
    n1, n2 = net(client), net(client)
    a = subnet(client, n1, "10.0.0.0/24")
    b = subnet(client, n2, "2001:db8::/64")

    def ids(query: str) -> set[str]:
        return {s["id"] for s in client.get(f"/v2.0/subnets?{query}").json()["subnets"]}

    assert ids(f"network_id={n1}") == {a["id"]}
    assert ids("ip_version=6") == {b["id"]}
    assert ids("cidr=10.0.0.0/24") == {a["id"]}
    assert ids("enable_dhcp=true") == {a["id"], b["id"]}
    assert client.get("/v2.0/subnets?ip_version=x").status_code == 400


# ---- update -----------------------------------------------------------------------------------
def test_update(any_client: TestClient) -> None:
    s = subnet(any_client, net(any_client))

    def put(**attrs: Any) -> Any:
        return any_client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": attrs})

    r = put(name="renamed", dns_nameservers=["9.9.9.9"])
    assert r.status_code == 200, r.text
    assert r.json()["subnet"]["name"] == "renamed"
    assert r.json()["subnet"]["revision_number"] == 1
    r = put(allocation_pools=[{"start": "10.0.0.100", "end": "10.0.0.200"}])
    assert r.json()["subnet"]["allocation_pools"] == [{"start": "10.0.0.100", "end": "10.0.0.200"}]
    r = put(gateway_ip="10.0.0.254")
    assert r.json()["subnet"]["gateway_ip"] == "10.0.0.254"
    failure(put(gateway_ip="10.0.0.150"), 409, "GatewayConflictWithAllocationPools")
    failure(
        put(allocation_pools=[{"start": "10.0.0.200", "end": "10.0.0.254"}]),
        409,
        "GatewayConflictWithAllocationPools",
    )
    failure(put(cidr="10.1.0.0/24"), 400, "HTTPBadRequest")
    failure(put(ip_version=6), 400, "HTTPBadRequest")
    failure(put(gateway_ip="10.9.9.9"), 400, "InvalidInput")
    r = put(gateway_ip=None)
    assert r.json()["subnet"]["gateway_ip"] is None
    r = put(enable_dhcp=False, host_routes=[{"destination": "0.0.0.0/0", "nexthop": "10.0.0.9"}])
    assert r.json()["subnet"]["enable_dhcp"] is False


def test_if_match(client: TestClient) -> None:
    s = subnet(client, net(client))
    r = client.put(
        f"/v2.0/subnets/{s['id']}",
        json={"subnet": {"name": "x"}},
        headers={"If-Match": "revision_number=7"},
    )
    assert r.status_code == 412


# ---- delete -----------------------------------------------------------------------------------
def test_delete_unused_and_in_use(any_client: TestClient) -> None:
    n = net(any_client)
    s = subnet(any_client, n)
    port = create(any_client, "ports", network_id=n)
    r = any_client.delete(f"/v2.0/subnets/{s['id']}")
    msg = failure(r, 409, "SubnetInUse")
    assert s["id"] in msg
    # A failed delete leaves the subnet exactly usable.
    assert any_client.get(f"/v2.0/subnets/{s['id']}").status_code == 200
    create(any_client, "ports", network_id=n)
    any_client.delete(f"/v2.0/ports/{port['id']}")
    for p in any_client.get("/v2.0/ports").json()["ports"]:
        assert any_client.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    assert any_client.delete(f"/v2.0/subnets/{s['id']}").status_code == 204
    assert any_client.get(f"/v2.0/subnets/{s['id']}").status_code == 404
    assert any_client.get(f"/v2.0/networks/{n}").json()["network"]["subnets"] == []
    assert any_client.delete(f"/v2.0/subnets/{s['id']}").status_code == 404


def test_dhcp_port_does_not_block_delete(client: TestClient) -> None:
    n = net(client)
    s = subnet(client, n)
    dhcp = create(client, "ports", network_id=n, device_owner="network:dhcp")
    assert client.delete(f"/v2.0/subnets/{s['id']}").status_code == 204
    assert client.get(f"/v2.0/ports/{dhcp['id']}").json()["port"]["fixed_ips"] == []


def test_network_delete_takes_its_subnets(any_client: TestClient) -> None:
    n = net(any_client)
    s = subnet(any_client, n)
    assert any_client.delete(f"/v2.0/networks/{n}").status_code == 204
    assert any_client.get(f"/v2.0/subnets/{s['id']}").status_code == 404


# ---- policy -----------------------------------------------------------------------------------
def test_project_isolation(client: TestClient) -> None:
    p1, p2 = as_project("p1"), as_project("p2")
    n = net(client, headers=p1)
    s = subnet_as(client, p1, n)
    assert client.get(f"/v2.0/subnets/{s['id']}", headers=p2).status_code == 404
    assert client.get("/v2.0/subnets", headers=p2).json()["subnets"] == []
    r = post_subnet(client, headers=p2, network_id=n, cidr="10.9.0.0/24", ip_version=4)
    failure(r, 404, "NetworkNotFound")
    r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {"name": "x"}}, headers=p2)
    assert r.status_code == 404
    assert client.delete(f"/v2.0/subnets/{s['id']}", headers=p2).status_code == 404
    reader = as_project("p1", "reader")
    assert client.get(f"/v2.0/subnets/{s['id']}", headers=reader).status_code == 200
    r = post_subnet(client, headers=reader, network_id=n, cidr="10.9.0.0/24", ip_version=4)
    failure(r, 403, "PolicyNotAuthorized")
    # An admin sees everything.
    assert len(client.get("/v2.0/subnets").json()["subnets"]) == 1
    # The owner's same requests succeed.
    assert client.get(f"/v2.0/subnets/{s['id']}", headers=p1).status_code == 200
    assert [x["id"] for x in client.get("/v2.0/subnets", headers=p1).json()["subnets"]] == [s["id"]]
    r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {"name": "x"}}, headers=p1)
    assert r.status_code == 200
    r = post_subnet(client, headers=p1, network_id=n, cidr="10.9.0.0/24", ip_version=4)
    assert r.status_code == 201, r.text
    assert client.delete(f"/v2.0/subnets/{s['id']}", headers=p1).status_code == 204


def subnet_as(client: TestClient, headers: dict[str, str], network_id: str) -> dict[str, Any]:
    return create(client, "subnets", headers=headers, network_id=network_id, cidr=V4, ip_version=4)


def test_shared_network_subnets(client: TestClient) -> None:
    n = net(client, shared=True)
    s = subnet(client, n)
    p2 = as_project("p2")
    assert client.get(f"/v2.0/subnets/{s['id']}", headers=p2).status_code == 200
    assert [x["id"] for x in client.get("/v2.0/subnets", headers=p2).json()["subnets"]] == [s["id"]]
    r = post_subnet(client, headers=p2, network_id=n, cidr="10.9.0.0/24", ip_version=4)
    failure(r, 403, "PolicyNotAuthorized")
    r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {"name": "x"}}, headers=p2)
    failure(r, 403, "PolicyNotAuthorized")


def test_external_network_subnets_are_not_shown_to_other_projects(client: TestClient) -> None:
    """Neutron's rule (tempest's test_external_network_visibility): another project sees
    an external network, to put a gateway or floating IP there, but not its subnets,
    unless the network is also shared."""
    ext = net(client, **{"router:external": True})
    s = subnet(client, ext)
    p2 = as_project("p2")
    nets = client.get("/v2.0/networks", headers=p2).json()["networks"]
    assert [n["id"] for n in nets] == [ext]  # the network itself is visible
    assert client.get("/v2.0/subnets", headers=p2).json()["subnets"] == []
    r = client.get(f"/v2.0/subnets/{s['id']}", headers=p2)
    failure(r, 404, "SubnetNotFound")
    shown = client.get(f"/v2.0/networks/{ext}", headers=p2).json()["network"]
    assert shown["subnets"] == [s["id"]]  # Neutron lists the ids on the network
    assert client.get("/v2.0/subnets").json()["subnets"][0]["id"] == s["id"]  # admin
    both = net(client, shared=True, **{"router:external": True})
    shared_sub = subnet(client, both, "10.8.0.0/24")
    listed = client.get("/v2.0/subnets", headers=p2).json()["subnets"]
    assert [x["id"] for x in listed] == [shared_sub["id"]]


def test_null_dns_and_routes_mean_empty(client: TestClient) -> None:
    s = subnet(client, net(client), dns_nameservers=None, host_routes=None)
    assert s["dns_nameservers"] == [] and s["host_routes"] == []
    r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {"dns_nameservers": None}})
    assert r.status_code == 200 and r.json()["subnet"]["dns_nameservers"] == []


MODES = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")


def test_every_ipv6_mode_combination_as_neutron(client: TestClient) -> None:
    """Neutron's table of ipv6_ra_mode x ipv6_address_mode: either alone, or both the
    same, is accepted; two different modes are refused with its message, and nothing
    is stored; neither may be changed later (allow_put False in neutron-lib)."""
    n = net(client)
    before = client.get("/v2.0/subnets").json()["subnets"]
    for i, (ra, addr) in enumerate((r, a) for r in MODES for a in MODES):
        attrs = {"ipv6_ra_mode": ra, "ipv6_address_mode": addr}
        cidr = f"2001:db8:{i + 1:x}::/64"
        if ra and addr and ra != addr:
            msg = failure(post_subnet(client, network_id=n, ip_version=6, cidr=cidr, **attrs),
                          400, "InvalidInput")  # fmt: skip
            assert msg == (
                f"Invalid input for operation: ipv6_ra_mode set to '{ra}' with "
                f"ipv6_address_mode set to '{addr}' is not valid. If both attributes are "
                "set, they must be the same value"
            )
            continue
        s = subnet(client, n, cidr, **attrs)
        assert (s["ipv6_ra_mode"], s["ipv6_address_mode"]) == (ra, addr)
        before.append(s)
        for name, value in attrs.items():
            other = "slaac" if value != "slaac" else "dhcpv6-stateful"
            r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {name: other}})
            failure(r, 400, "HTTPBadRequest")
    after = client.get("/v2.0/subnets").json()["subnets"]
    assert sorted(x["id"] for x in after) == sorted(x["id"] for x in before)
    # a subnet with a mode cannot lose DHCP (Neutron's update rule)
    s = subnet(client, n, "2001:db8:ff::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    r = client.put(f"/v2.0/subnets/{s['id']}", json={"subnet": {"enable_dhcp": False}})
    assert "Cannot disable enable_dhcp with ipv6 attributes set" in failure(r, 400, "InvalidInput")
    got = client.get(f"/v2.0/subnets/{s['id']}").json()["subnet"]
    assert got["enable_dhcp"] is True


def test_shared_filter_is_the_network_sharing_as_the_caller_sees_it(client: TestClient) -> None:
    """Neutron's subnet `shared` is not shown but is a filter: the network is shared with
    the caller's project (a policy for it or for everyone)."""
    p2 = as_project("p2")
    priv = subnet(client, net(client, headers=p2), headers=p2)
    everyone = subnet(client, net(client, shared=True), "10.1.0.0/24")
    to_p2 = net(client)
    policy = {"object_type": "network", "object_id": to_p2, "action": "access_as_shared"}
    create(client, "rbac-policies", **policy, target_tenant="p2")
    only_p2 = subnet(client, to_p2, "10.2.0.0/24")

    def ids(headers: dict[str, str] | None, shared: str) -> set[str]:
        r = client.get(f"/v2.0/subnets?shared={shared}", headers=headers)
        assert r.status_code == 200, r.text
        assert all("shared" not in x for x in r.json()["subnets"])
        return {x["id"] for x in r.json()["subnets"]}

    assert ids(p2, "true") == {everyone["id"], only_p2["id"]}
    assert ids(p2, "false") == {priv["id"]}
    assert ids(None, "true") == {everyone["id"]}  # admin: not a target of p2's policy
    assert ids(None, "false") == {priv["id"], only_p2["id"]}
    r = client.get("/v2.0/subnets?shared=maybe")
    failure(r, 400, "InvalidInput")
    r = post_subnet(client, network_id=to_p2, cidr="10.3.0.0/24", ip_version=4, shared=True)
    assert r.status_code == 400, r.text
