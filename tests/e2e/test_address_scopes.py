"""Address scopes decide routing, on real OVS (Neutron's semantics): a router forwards
between two subnets only within one address scope; towards the outside, a subnet of the
external network's scope is routed with its own address (and reachable from outside),
while a subnet of another scope is SNATed. Subnets come from subnet pools, as in
Neutron, and a pool moved to another scope moves its networks at once."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import system
from tests.e2e.multichassis import Cluster, cluster
from tests.e2e.test_dataplane import PY, eventually, ip_of, pings
from tests.e2e.test_north_south import (
    EXT_CIDR,
    PEER_SERVER,
    UPSTREAM,
    connect,
    gateway_ip,
    outside_world,
    sources,
)
from tests.e2e.test_provider_networks import PHYSNET, sh
from tests.southbound.conftest import unique

pytestmark = pytest.mark.system


def scope(c: Cluster) -> dict[str, Any]:
    return c.post("address-scopes", name=unique("as-"), ip_version=4, shared=True)


def pool(c: Cluster, prefix: str, scope_id: str) -> dict[str, Any]:
    return c.post(
        "subnetpools",
        name=unique("pool-"),
        prefixes=[prefix],
        default_prefixlen=24,
        address_scope_id=scope_id,
        shared=True,
    )


def pooled_network(c: Cluster, router: dict[str, Any], subnetpool: dict[str, Any]) -> Any:
    """A network with a /24 from SUBNETPOOL, on ROUTER: (network, subnet)."""
    net = c.post("networks", name=unique("n-"))
    sub = c.post("subnets", network_id=net["id"], ip_version=4, subnetpool_id=subnetpool["id"])
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    return net, sub


def test_a_router_routes_between_subnets_of_one_scope_only(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    system.require(request)
    with cluster(tmp_path, 2) as c:
        c.wait_tunnels()
        a, b = scope(c), scope(c)
        p1, p2 = pool(c, "10.150.0.0/16", a["id"]), pool(c, "10.151.0.0/16", a["id"])
        router = c.post("routers", name=unique("r-"))
        (n1, s1), (n2, s2) = pooled_network(c, router, p1), pooled_network(c, router, p2)
        assert (s1["cidr"], s2["cidr"]) == ("10.150.0.0/24", "10.151.0.0/24")
        vm1, ns1 = c.hv[0].vm(n1, "vm1")
        vm2, ns2 = c.hv[1].vm(n2, "vm2")
        vm3, ns3 = c.hv[0].vm(n2, "vm3")  # (a neighbour on vm1's chassis too)
        ip1, ip2, ip3 = ip_of(vm1), ip_of(vm2), ip_of(vm3)
        eventually(lambda: pings(ns1, ip2) and pings(ns1, ip3), "one scope: routed", timeout=20)
        assert pings(ns2, ip1)

        c.put("subnetpools", p2["id"], address_scope_id=b["id"])  # n2 moves to scope b
        assert c.get("networks", n2["id"])["ipv4_address_scope"] == b["id"]
        eventually(
            lambda: not pings(ns1, ip2) and not pings(ns1, ip3), "two scopes: no route", timeout=20
        )
        assert not pings(ns2, ip1) and not pings(ns3, ip1)
        assert pings(ns2, ip3)  # (within n2 nothing changed)

        c.put("subnetpools", p2["id"], address_scope_id=a["id"])  # and back
        eventually(lambda: pings(ns1, ip2) and pings(ns3, ip1), "one scope again", timeout=20)


def test_the_external_scope_is_routed_as_is_and_another_is_snatted(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    system.require(request)
    with outside_world(tmp_path) as (c, seg):
        public, private = scope(c), scope(c)
        ext_pool = pool(c, EXT_CIDR, public["id"])
        ext = c.post(
            "networks",
            name=unique("public-"),
            **{
                "router:external": True,
                "provider:network_type": "flat",
                "provider:physical_network": PHYSNET,
            },
        )
        c.post(
            "subnets",
            network_id=ext["id"],
            subnetpool_id=ext_pool["id"],
            cidr=EXT_CIDR,
            ip_version=4,
            gateway_ip=UPSTREAM,
            enable_dhcp=False,
            allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.99"}],
        )
        assert c.get("networks", ext["id"])["ipv4_address_scope"] == public["id"]
        router = c.post("routers", name=unique("r-"))
        inside, s_in = pooled_network(c, router, pool(c, "10.160.0.0/16", public["id"]))
        other, s_out = pooled_network(c, router, pool(c, "10.161.0.0/16", private["id"]))
        c.put("routers", router["id"], external_gateway_info={"network_id": ext["id"]})
        gw = gateway_ip(c, router)
        sg = c.post("security-groups", name=unique("open-"))
        for proto in ("icmp", "tcp"):
            c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
                   ethertype="IPv4", protocol=proto)  # fmt: skip
        groups = [sg["id"]]
        p_in, ns_in = c.hv[0].vm(inside, "vm-in", security_groups=groups)
        p_far, ns_far = c.hv[2].vm(inside, "vm-in2", security_groups=groups)  # by redirect
        p_out, ns_out = c.hv[0].vm(other, "vm-out", security_groups=groups)
        ip_in, ip_far, ip_out = ip_of(p_in), ip_of(p_far), ip_of(p_out)
        for sub in (s_in, s_out):  # the host routes both subnets to the gateway
            sh("ip", "-n", seg.host, "route", "add", sub["cidr"], "via", gw)

        server = c.hv[0].background(seg.host, PY, "-c", PEER_SERVER)
        assert sources(server, 1) == ["ready"]
        eventually(lambda: connect(ns_in, UPSTREAM) == "hi", "out of the public scope", timeout=20)
        assert sources(server, 1) == [ip_in]  # its own address: no SNAT
        eventually(lambda: connect(ns_far, UPSTREAM) == "hi", "through the redirect", timeout=20)
        assert sources(server, 1) == [ip_far]
        eventually(lambda: connect(ns_out, UPSTREAM) == "hi", "out of another scope", timeout=20)
        assert sources(server, 1) == [gw]  # SNATed to the gateway address

        # From outside: the public scope's VMs directly, the other's never (same probe).
        eventually(lambda: pings(seg.host, ip_in), "the host reaches the public scope")
        assert pings(seg.host, ip_far)
        out = subprocess.run(
            ["ip", "netns", "exec", seg.host, "ip", "route", "get", ip_out],
            capture_output=True,
            text=True,
            check=False,
        )
        assert f"via {gw}" in out.stdout, out.stdout  # (the host does route it there)
        assert not pings(seg.host, ip_out)
        assert not pings(ns_out, ip_in)  # nor do the two scopes meet inside
        assert pings(ns_in, ip_far)
