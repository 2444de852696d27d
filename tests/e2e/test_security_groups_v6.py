"""Security groups for IPv6, and IPv6 routing, across two chassis on real OVS.

One dual-stack network spread over two chassis, seven VMs, real `ping -6`, TCP over IPv6
and crafted ICMPv6 from raw sockets: ingress from a prefix, egress to one port and
address, remote groups with members on both chassis (joining and leaving), an IPv4 rule
that does not open IPv6, ICMPv6 type and code rules, neighbour discovery under a group
with no rules at all, conntrack replies with no ingress rule, and a stateless group.
Then IPv6 routed across chassis, with an extra route whose IPv6 next hop is a VM on
another network. VMs get their IPv6 addresses by static configuration (the API's).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import eventually, ping, pings, probe
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

PY = sys.executable

# Answers every TCP connection on each of its ports, IPv4 or IPv6, with its identity.
SERVER = textwrap.dedent(
    """
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in sys.argv[2:]:
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(port))); s.listen(16); sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            try:
                conn.sendall(sys.argv[1].encode())
            except OSError:
                pass
            conn.close()
    """
)

# Prints "TYPE/CODE" for every ICMPv6 message from SOURCE (argv[1]) that arrives.
ICMP6_LISTENER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(2048)
        if addr[0] == sys.argv[1]:
            print(f"{data[0]}/{data[1]}", flush=True)
    """
)

# Sends one ICMPv6 message of TYPE and CODE to DST (the kernel fills in the checksum).
ICMP6_SEND = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.sendto(bytes([int(sys.argv[2]), int(sys.argv[3]), 0, 0]) + b"wyvern", (sys.argv[1], 0))
    """
)


@pytest.fixture
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    system.require(request)
    with cluster(tmp_path, 2) as c:
        yield c


def sh(ns: str, *cmd: str) -> None:
    out = in_netns(ns, *cmd)
    assert out.returncode == 0, f"{cmd}: {out.stdout}{out.stderr}"


def v6_of(port: dict[str, Any]) -> str:
    return next(str(f["ip_address"]) for f in port["fixed_ips"] if ":" in f["ip_address"])


def v4_of(port: dict[str, Any]) -> str:
    return next(str(f["ip_address"]) for f in port["fixed_ips"] if ":" not in f["ip_address"])


def add_v6(ns: str, address: str, gateway: str | None = None) -> None:
    """The port's IPv6 address, statically (RAs and DHCPv6 are not what this tests)."""
    sh(ns, "ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
    if gateway:
        sh(ns, "ip", "-6", "route", "replace", "default", "via", gateway, "dev", "eth0")


def group(c: Cluster, name: str, *rules: dict[str, Any], egress: bool = False,
          **attrs: Any) -> dict[str, Any]:  # fmt: skip
    """A security group with exactly RULES (and the automatic egress rules if EGRESS)."""
    sg = c.post("security-groups", name=name, **attrs)
    if not egress:
        for r in sg["security_group_rules"]:
            c.delete("security-group-rules", r["id"])
    for attrs_ in rules:
        add_rule(c, sg, **attrs_)
    return sg


def add_rule(c: Cluster, sg: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    attrs.setdefault("ethertype", "IPv6")
    return c.post("security-group-rules", security_group_id=sg["id"], **attrs)


def tcp(port: int, direction: str = "ingress", **attrs: Any) -> dict[str, Any]:
    return {"direction": direction, "protocol": "tcp", "port_range_min": port,
            "port_range_max": port, **attrs}  # fmt: skip


def serve(hv: Hv, ns: str, ident: str, *ports: int) -> None:
    server = hv.background(ns, PY, "-c", SERVER, ident, *map(str, ports))
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"


class Lines:
    """The lines a background process prints, read with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def next(self, timeout: float = 5) -> str:
        """The next line ("" if none came within TIMEOUT seconds)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return ""
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return ""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode().strip()


def neigh(ns: str, address: str) -> str:
    return in_netns(ns, "ip", "-6", "neigh", "show", address, "dev", "eth0").stdout.strip()


def test_ipv6_security_groups_across_chassis(two: Cluster) -> None:
    c = two
    net = c.post("networks", name="sg6")
    sub4 = c.post("subnets", network_id=net["id"], cidr="10.71.0.0/24", ip_version=4)
    sub6 = c.post("subnets", network_id=net["id"], cidr="2001:db8:71::/64", ip_version=6,
                  enable_dhcp=False)  # fmt: skip
    prefix = "2001:db8:71::10/124"  # A is inside it, B is not

    member = group(c, "G")  # no rules: a membership tag
    out = group(c, "out", egress=True)  # talks to anyone, admits nothing
    server = group(c, "server", egress=True)
    for r in (
        tcp(22, remote_ip_prefix=prefix),
        tcp(5000, remote_group_id=member["id"]),
        tcp(5003, ethertype="IPv4", remote_group_id=member["id"]),  # IPv4 only
        tcp(5001),
        tcp(5002),
        {"direction": "ingress", "protocol": "ipv6-icmp", "port_range_min": 128},  # echo
        {"direction": "ingress", "protocol": "icmp", "port_range_min": 8, "ethertype": "IPv4"},
    ):
        add_rule(c, server, **r)
    t_server = group(c, "t", tcp(5001))
    egress_only = group(c, "egress-only")  # its rule comes once the server's address is known
    deny = group(c, "deny")  # no rules at all, either way
    stateless = group(c, "stateless", tcp(7000), egress=True, stateful=False)
    vip = "2001:db8:71::99"

    def vm(hv: Hv, name: str, groups: list[str], v6: str | None = None,
           **attrs: Any) -> tuple[dict[str, Any], str, str]:  # fmt: skip
        fixed: list[dict[str, Any]] = [{"subnet_id": sub4["id"]}, {"subnet_id": sub6["id"]}]
        if v6:
            fixed[1]["ip_address"] = v6
        port, ns = hv.vm(net, name, security_groups=groups, fixed_ips=fixed, **attrs)
        # `wyvern plug` configured the first fixed IP; the others too.
        for f in port["fixed_ips"]:
            plen = "64" if ":" in f["ip_address"] else "24"
            sh(ns, "ip", "addr", "replace", f"{f['ip_address']}/{plen}", "dev", "eth0", "nodad")
        return port, ns, v6_of(port)

    ps, ns_s, s6 = vm(c.hv[0], "S", [server["id"]])
    _, ns_m0, m0_6 = vm(c.hv[0], "M0", [member["id"], t_server["id"], out["id"]])
    _, ns_l, l6 = vm(c.hv[0], "L", [stateless["id"]])
    _, ns_a, a6 = vm(c.hv[1], "A", [member["id"], out["id"]], "2001:db8:71::11")
    pb, ns_b, _ = vm(c.hv[1], "B", [out["id"]], "2001:db8:71::21")
    _, ns_e, e6 = vm(c.hv[1], "E", [egress_only["id"]])
    pd, ns_d, d6 = vm(c.hv[1], "D", [deny["id"]],
                      allowed_address_pairs=[{"ip_address": vip}])  # fmt: skip
    sh(ns_d, "ip", "-6", "addr", "add", f"{vip}/64", "dev", "eth0", "nodad")
    add_rule(c, egress_only, **tcp(5001, "egress", remote_ip_prefix=f"{s6}/128"))
    serve(c.hv[0], ns_s, "S", 22, 5000, 5001, 5002, 5003)
    serve(c.hv[0], ns_m0, "M0", 5001)
    serve(c.hv[0], ns_l, "L", 7000, 7001)
    serve(c.hv[1], ns_e, "E", 6000)

    # Ingress from a prefix: A (inside) connects across chassis, B (outside) does not.
    eventually(lambda: probe(ns_a, s6, 22) == "S", "A inside the prefix reaches S:22", 20)
    assert probe(ns_b, s6, 22) == "timeout"
    assert probe(ns_b, s6, 5001) == "S"  # B reaches S at all (a port open to everyone)

    # Remote group G, members on both chassis; B is not in it.
    assert probe(ns_a, s6, 5000) == "S"
    assert probe(ns_m0, s6, 5000) == "S"
    assert probe(ns_b, s6, 5000) == "timeout"
    # The group's IPv4 rule admits G over IPv4 only.
    assert probe(ns_a, v4_of(ps), 5003) == "S"
    assert probe(ns_a, s6, 5003) == "timeout"
    # B joins G (on the other chassis): admitted; leaves: refused again.
    c.put("ports", pb["id"], security_groups=[out["id"], member["id"]])
    eventually(lambda: probe(ns_b, s6, 5000) == "S", "B, now in G, reaches S:5000")
    assert probe(ns_b, s6, 22) == "timeout"  # G says nothing about the prefix rule
    c.put("ports", pb["id"], security_groups=[out["id"]])
    eventually(lambda: probe(ns_b, s6, 5000) == "timeout", "B, out of G, is refused")

    # Egress to one port of one address: E reaches S:5001 (and the reply comes back
    # although E admits nothing: conntrack), not S:5002 nor M0:5001, which A reaches.
    assert probe(ns_e, s6, 5001) == "S"
    assert probe(ns_a, s6, 5002) == "S"
    assert probe(ns_e, s6, 5002) == "timeout"
    assert probe(ns_a, m0_6, 5001) == "M0"
    assert probe(ns_e, m0_6, 5001) == "timeout"
    assert probe(ns_s, e6, 6000) == "timeout"  # nothing comes in to E unasked...
    add_rule(c, egress_only, **tcp(6000))
    eventually(lambda: probe(ns_s, e6, 6000) == "E", "...until E admits it")

    # ICMPv6 types and codes: S admits echo requests (type 128) only.
    heard = Lines(c.hv[0].background(ns_s, PY, "-u", "-c", ICMP6_LISTENER, a6))
    assert heard.next() == "ready"

    def send(type_: int, code: int) -> None:
        sh(ns_a, PY, "-c", ICMP6_SEND, s6, str(type_), str(code))

    assert pings(ns_a, s6, "-6"), ping(ns_a, s6, "-6").stdout
    assert [heard.next(), heard.next()] == ["128/0", "128/0"]
    # Fragmented both ways (3000 bytes over a 1438 MTU): the later fragments carry no
    # ICMPv6 header, yet the request is admitted by its first fragment, and the reply.
    out = ping(ns_a, s6, "-6", "-s", "3000", count=3)
    assert " 0% packet loss" in out.stdout, out.stdout + out.stderr
    assert [heard.next() for _ in range(3)] == ["128/0"] * 3
    out = in_netns(ns_a, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-s", "3000", v4_of(ps))
    assert " 0% packet loss" in out.stdout, out.stdout  # IPv4 too (an echo-request rule)
    send(200, 1)  # not admitted...
    add_rule(c, server, direction="ingress", protocol="ipv6-icmp", port_range_min=200,
             port_range_max=1)  # fmt: skip
    arrived: list[str] = []

    def code_1_arrives() -> bool:
        send(200, 2)  # a code the rule does not name: never admitted
        send(200, 1)
        arrived.append(heard.next(timeout=1))
        return arrived[-1] == "200/1"

    eventually(code_1_arrives, "type 200 code 1 admitted once its rule exists")
    assert set(arrived) <= {"", "200/1"}, arrived  # neither the first 200/1 nor any 200/2
    add_rule(c, server, direction="ingress", protocol="icmp", port_range_min=201)  # any code

    def any_code_arrives() -> bool:
        send(201, 7)
        return heard.next(timeout=1) == "201/7"

    eventually(any_code_arrives, "type 201 with any code")
    send(202, 0)
    assert pings(ns_a, s6, "-6")
    assert heard.next() == "128/0"  # the echo requests after it: no 202 in between

    # A group with no rules: nothing in or out, but neighbour discovery works across
    # chassis. S's solicitation for D's VIP (an address pair: nobody answers for it but
    # D itself) crosses to D, and D's advertisement comes back.
    assert probe(ns_a, s6, 5001) == "S" and pings(ns_a, s6, "-6")  # the probes work
    assert not pings(ns_s, vip, "-6")
    assert not pings(ns_s, d6, "-6")
    assert not pings(ns_d, s6, "-6")  # D may send nothing either, S admits pings
    assert pd["mac_address"] in neigh(ns_s, vip) and "REACHABLE" in neigh(ns_s, vip), neigh(
        ns_s, vip
    )
    assert "lladdr" in neigh(ns_d, s6), neigh(ns_d, s6)
    # An ingress rule for echo requests: pings to D come in, and the replies go out
    # (conntrack, with no egress rule), without a new resolution.
    add_rule(c, deny, direction="ingress", protocol="ipv6-icmp", port_range_min=128)
    eventually(lambda: pings(ns_s, vip, "-6"), "S pings D's VIP once D admits echo requests")
    assert pings(ns_s, d6, "-6")
    assert not pings(ns_d, s6, "-6")  # D still sends nothing of its own
    # MLD queries pass a group without rules too (Neutron lets them), MLD reports do not.
    at_d = Lines(c.hv[1].background(ns_d, PY, "-u", "-c", ICMP6_LISTENER, s6))
    assert at_d.next() == "ready"
    for type_ in (143, 130):  # a report, then a query
        sh(ns_s, PY, "-c", ICMP6_SEND, d6, str(type_), "0")
    assert at_d.next() == "130/0"  # (the report, sent first, never came)

    # Stateless: the group's rules are all there is, replies included.
    assert probe(ns_a, l6, 7000) == "L"
    assert probe(ns_a, l6, 7001) == "timeout"
    egress6 = next(
        r
        for r in requests.get(f"{c.base}/security-group-rules", timeout=5).json()[
            "security_group_rules"
        ]
        if r["security_group_id"] == stateless["id"]
        and r["direction"] == "egress"
        and r["ethertype"] == "IPv6"
    )
    c.delete("security-group-rules", egress6["id"])
    eventually(lambda: probe(ns_a, l6, 7000) == "timeout", "no reply without an egress rule")


def test_ipv6_routed_across_chassis_and_an_extra_route_via_a_vm(two: Cluster) -> None:
    """A router between two IPv6 networks, its VMs on different chassis: ping and TCP
    routed (one hop: hop limit 63), and an extra route whose IPv6 next hop is a VM on the
    other network, which holds the route's prefix (an allowed address pair)."""
    c = two
    beyond = "2001:db8:74::1"  # on Y's loopback, behind the extra route
    nets, subs = [], []
    for i, cidr in enumerate(("2001:db8:72::/64", "2001:db8:73::/64")):
        net = c.post("networks", name=f"r6-{i}")
        subs.append(c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=6,
                           enable_dhcp=False))  # fmt: skip
        nets.append(net)
    router = c.post("routers", name="r6")
    for sub in subs:
        c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    px, ns_x = c.hv[0].vm(nets[0], "X")
    py, ns_y = c.hv[1].vm(nets[1], "Y", allowed_address_pairs=[{"ip_address": "2001:db8:74::/64"}])
    x6, y6 = v6_of(px), v6_of(py)
    for ns, addr, sub in ((ns_x, x6, subs[0]), (ns_y, y6, subs[1])):
        sh(ns, "ip", "-6", "addr", "replace", f"{addr}/64", "dev", "eth0", "nodad")
        sh(ns, "ip", "-6", "route", "replace", "default", "via", sub["gateway_ip"], "dev", "eth0")
    sh(ns_y, "ip", "-6", "addr", "add", f"{beyond}/128", "dev", "lo")
    serve(c.hv[1], ns_y, "Y", 7200)

    eventually(lambda: pings(ns_x, y6, "-6"), "a routed ping -6 across chassis", timeout=20)
    out = ping(ns_x, y6, "-6", count=3)
    assert " 0% packet loss" in out.stdout and "ttl=63" in out.stdout, out.stdout + c.logs()
    assert pings(ns_y, x6, "-6")  # and back
    assert probe(ns_x, y6, 7200) == "Y"
    # Nothing routes the prefix yet: it is not on any subnet of the router.
    assert not pings(ns_x, beyond, "-6")
    c.put("routers", router["id"], routes=[{"destination": "2001:db8:74::/64", "nexthop": y6}])
    eventually(lambda: pings(ns_x, beyond, "-6"), "through the extra route via Y", timeout=15)
    assert probe(ns_x, beyond, 7200) == "Y"
    c.put("routers", router["id"], routes=[])
    eventually(lambda: not pings(ns_x, beyond, "-6"), "the route removed")
    assert pings(ns_x, y6, "-6")
