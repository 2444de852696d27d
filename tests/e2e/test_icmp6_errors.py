"""ICMPv6 errors from a router on real OVS, observed by the kernel of the sending VM:
packet too big when a routed packet exceeds the egress network's MTU (the sender learns
the path MTU: `ip -6 route get` shows it, and smaller packets go through), time
exceeded at hop limit 1, and unreachable without a route.

Two tenant networks with different MTUs (the default, Geneve's 1438, and 1400 set
through the API) behind one router; each VM's interface has its network's MTU (`wyvern
plug`). The check counts the frame (check_pkt_larger(MTU + 14)): a 1400-byte IPv6
packet is forwarded to the 1400 network, a 1401-byte one is not.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import Chassis
from tests.e2e.test_dataplane import eventually
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

ICMP6_HEADERS = 40 + 8  # `ping -s N` sends an IPv6 packet of N + 48 bytes


def ping6(ns: str, ip: str, *args: str, count: int = 1) -> subprocess.CompletedProcess[str]:
    return in_netns(ns, "ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-W", "1", *args, ip)


def v6_vm(c: Chassis, net: dict[str, Any], sub: dict[str, Any], name: str) -> tuple[str, str]:
    """A VM on NET with its IPv6 address on SUB and the router as default route (set by
    hand: no RA here); (its address, its netns)."""
    port = c.post("ports", network_id=net["id"], name=name)
    ns = c.plug(port, static_ip=False)
    c.wait_active(port)
    ip = str(port["fixed_ips"][0]["ip_address"])
    prefix = sub["cidr"].split("/")[1]
    for cmd in (
        ("ip", "-6", "addr", "add", f"{ip}/{prefix}", "dev", "eth0", "nodad"),
        ("ip", "-6", "route", "replace", "default", "via", sub["gateway_ip"]),
    ):
        out = in_netns(ns, *cmd)
        assert out.returncode == 0, out.stderr
    return ip, ns


def test_packet_too_big_time_exceeded_and_unreachable_from_the_router(chassis: Chassis) -> None:
    c = chassis
    net_a = c.post("networks", name="big")
    net_b = c.post("networks", name="small", mtu=1400)
    mtu_a = int(net_a["mtu"])
    assert (mtu_a, net_b["mtu"]) == (1438, 1400)
    sub_a = c.post("subnets", network_id=net_a["id"], cidr="fd00:71::/64", ip_version=6)
    sub_b = c.post("subnets", network_id=net_b["id"], cidr="fd00:72::/64", ip_version=6)
    ip_a, ns_a = v6_vm(c, net_a, sub_a, "a")
    ip_b, ns_b = v6_vm(c, net_b, sub_b, "b")
    assert f"mtu {mtu_a}" in in_netns(ns_a, "ip", "link", "show", "eth0").stdout
    assert "mtu 1400" in in_netns(ns_b, "ip", "link", "show", "eth0").stdout
    router = c.post("routers", name="r")
    for sub in (sub_a, sub_b):
        c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    gw_a = sub_a["gateway_ip"]

    # A small ping goes through the router.
    eventually(lambda: ping6(ns_a, ip_b).returncode == 0, "a routed IPv6 ping", timeout=15)
    out = ping6(ns_a, ip_b, count=2)
    assert out.returncode == 0 and "ttl=63" in out.stdout, out.stdout + c.agent_log()

    # Exactly the small network's MTU (1400 bytes of IPv6) is forwarded, unfragmented.
    at_mtu = str(1400 - ICMP6_HEADERS)
    out = ping6(ns_a, ip_b, "-s", at_mtu, "-M", "do")
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    assert "mtu 1400" not in in_netns(ns_a, "ip", "-6", "route", "get", ip_b).stdout

    # One byte more: the router answers "packet too big" with the egress MTU, and the
    # sender's kernel learns the path MTU.
    over = str(1400 - ICMP6_HEADERS + 1)
    out = ping6(ns_a, ip_b, "-s", over, "-M", "do")
    assert out.returncode != 0
    assert f"From {gw_a} icmp_seq=1 Packet too big: mtu=1400" in out.stdout, (
        out.stdout + out.stderr + c.agent_log()
    )
    route = in_netns(ns_a, "ip", "-6", "route", "get", ip_b).stdout
    assert "mtu 1400" in route, route
    # From then on the sender fits its packets to it: at the MTU it still works, and a
    # bigger one is refused by its own kernel before it leaves.
    out = ping6(ns_a, ip_b, "-s", at_mtu, "-M", "do")
    assert out.returncode == 0, out.stdout + out.stderr
    out = ping6(ns_a, ip_b, "-s", "1300")
    assert out.returncode == 0, out.stdout + out.stderr
    out = ping6(ns_a, ip_b, "-s", over, "-M", "do")
    assert out.returncode != 0 and "Packet too big" not in out.stdout, out.stdout
    # A big ping without -M do is fragmented by the sender to the learned MTU: it works.
    assert ping6(ns_a, ip_b, "-s", "3000").returncode == 0
    # The other way (into the bigger network) nothing is too big at 1400.
    assert ping6(ns_b, ip_a, "-s", at_mtu, "-M", "do").returncode == 0

    # Hop limit 1: "Time exceeded" from the router's address on the sender's subnet.
    out = ping6(ns_a, ip_b, "-t", "1")
    assert out.returncode != 0
    assert f"From {gw_a} icmp_seq=1 Time exceeded: Hop limit" in out.stdout, (
        out.stdout + out.stderr + c.agent_log()
    )

    # No route: "Destination unreachable: No route", from the router too.
    out = ping6(ns_a, "fd00:99::1")
    assert out.returncode != 0
    assert f"From {gw_a} icmp_seq=1 Destination unreachable: No route" in out.stdout, (
        out.stdout + out.stderr + c.agent_log()
    )
