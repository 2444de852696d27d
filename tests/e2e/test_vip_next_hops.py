"""A VRRP/keepalived VIP behind a router, on real OVS across two chassis.

Two VMs on one network are both allowed the VIP by an allowed address pair, the VIP
reserved by an unbound port's fixed IP (the usual keepalived/Octavia setup). A VM on
another network behind the router reaches whichever VM holds the VIP now: the router
asks for it (its who-has flooded into the network from the router interface, across the
tunnel too) and learns the holder's answer; when the VIP moves, the new holder's
gratuitous ARP is learned (and still flooded), and the traffic follows at once, well
with no refresh. Which VM answers is proven by a TCP service answering its name. A VM
on the network without the pair cannot take the VIP over by announcing it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import system
from tests.e2e.multichassis import Cluster, cluster
from tests.e2e.test_dataplane import eventually, ident_server, probe
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

PY = sys.executable
VIP = "10.72.0.100"
PORT = 7000


@pytest.fixture
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two chassis whose agents never refresh a binding during the test: what moves the
    traffic is the new holder's announcement, nothing else."""
    system.require(request)
    with cluster(tmp_path, 0) as c:
        for _ in range(2):
            c.add_chassis(env={"WYVERN_AGENT_MAC_BINDING_REFRESH": "3600"})
        c.wait_tunnels()
        yield c


def network(c: Cluster, name: str, cidr: str) -> dict[str, Any]:
    net = c.post("networks", name=name)
    c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return c.get("networks", net["id"])


def take_vip(ns: str) -> None:
    """What keepalived does on becoming master: the VIP on eth0, then a gratuitous ARP
    (busybox arping -U: sender = target = the VIP, broadcast)."""
    out = in_netns(ns, "ip", "addr", "add", f"{VIP}/32", "dev", "eth0")
    assert out.returncode == 0, out.stderr
    garp(ns)


def garp(ns: str) -> None:
    out = in_netns(
        ns, "busybox", "arping", "-U", "-c", "1", "-w", "1", "-I", "eth0", "-s", VIP, VIP
    )
    assert "Sent 1 probe" in out.stdout + out.stderr, out.stdout + out.stderr


def drop_vip(ns: str) -> None:
    out = in_netns(ns, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0")
    assert out.returncode == 0, out.stderr


def test_a_vip_is_resolved_by_arp_and_follows_its_gratuitous_arp(two: Cluster) -> None:
    c = two
    vrrp = network(c, "vrrp", "10.72.0.0/24")
    clients = network(c, "clients", "10.73.0.0/24")
    router = c.post("routers", name="r")
    for net in (vrrp, clients):
        c.action("routers", router["id"], "add_router_interface", subnet_id=net["subnets"][0])
    c.post("ports", network_id=vrrp["id"], name="vip", fixed_ips=[{"ip_address": VIP}])
    pairs = [{"ip_address": VIP}]
    _, ns_a = c.hv[0].vm(vrrp, "a", allowed_address_pairs=pairs)
    _, ns_b = c.hv[1].vm(vrrp, "b", allowed_address_pairs=pairs)
    _, ns_d = c.hv[1].vm(vrrp, "d")  # on the network, without the pair
    _, ns_c = c.hv[0].vm(clients, "c")
    ident_server(c.hv[0], ns_a, "a", PORT)
    ident_server(c.hv[1], ns_b, "b", PORT)
    # Nobody holds the VIP yet: nothing answers (and the reserved port is never used).
    assert probe(ns_c, VIP, PORT) == "timeout"
    # A holds it: the router asks, A answers, the binding is learned, C reaches A.
    in_netns(ns_a, "ip", "addr", "add", f"{VIP}/32", "dev", "eth0")
    eventually(lambda: probe(ns_c, VIP, PORT) == "a", "C reaches A at the VIP", timeout=20)
    # B takes over (A gives it up, B announces it): the next connection reaches B (no
    # refresh runs meanwhile: the GARP moved it).
    drop_vip(ns_a)
    # (so A's kernel keeps what a gratuitous ARP says: the proof that it was flooded)
    in_netns(ns_a, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
    take_vip(ns_b)
    eventually(lambda: probe(ns_c, VIP, PORT) == "b", "C reaches B after the GARP", timeout=15)
    # The GARP was still flooded (across the tunnel): A's kernel has B's MAC for the VIP.
    neigh = in_netns(ns_a, "ip", "neigh", "show", VIP).stdout
    mac_b = in_netns(ns_b, "cat", "/sys/class/net/eth0/address").stdout.strip()
    assert mac_b in neigh, neigh
    # D, without the pair, announces the VIP: port security drops it, B keeps it.
    in_netns(ns_d, "ip", "addr", "add", f"{VIP}/32", "dev", "eth0")
    in_netns(ns_d, "busybox", "arping", "-U", "-c", "3", "-w", "1", "-I", "eth0", "-s", VIP, VIP)
    for _ in range(3):
        assert probe(ns_c, VIP, PORT) == "b", c.logs()
    # And back to A, by its GARP.
    drop_vip(ns_b)
    take_vip(ns_a)
    eventually(lambda: probe(ns_c, VIP, PORT) == "a", "C reaches A again", timeout=15)


VIP6 = "fd72::100"
IDENT6 = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[2]))); s.listen(16); print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(sys.argv[1].encode()); conn.close()
"""
SEND_RAW = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
s.send(bytes.fromhex(sys.argv[1]))
"""


def unsolicited_na(mac: str) -> bytes:
    """What keepalived sends for an IPv6 VIP on becoming master: an NA for it to all-nodes
    (Override set, the target link-layer option), from the link-local address; built by
    os-ken (not by the code under test)."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

    from wyvern.apps.port_security import eui64_link_local

    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="33:33:00:00:00:01", src=mac, ethertype=0x86DD))
    pkt.add_protocol(
        ipv6.ipv6(src=str(eui64_link_local(mac)), dst="ff02::1", nxt=58, hop_limit=255)
    )
    na = icmpv6.nd_neighbor(res=0b001, dst=VIP6, option=icmpv6.nd_option_tla(hw_src=mac))
    pkt.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_ADVERT, code=0, data=na))
    pkt.serialize()
    return bytes(pkt.data)


def configure6(ns: str, port: dict[str, Any], gateway: str) -> str:
    """The port's IPv6 address and a default route via the router's, statically."""
    [ip6] = [f["ip_address"] for f in port["fixed_ips"] if ":" in f["ip_address"]]
    for cmd in (
        ["ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"],
        ["ip", "-6", "route", "replace", "default", "via", gateway, "dev", "eth0"],
    ):
        out = in_netns(ns, *cmd)
        assert out.returncode == 0, out.stderr
    return str(ip6)


def test_an_ipv6_vip_is_solicited_and_follows_its_unsolicited_na(two: Cluster) -> None:
    c = two
    nets = []
    for name, v4, v6 in (
        ("vrrp", "10.72.0.0/24", "fd72::/64"),
        ("clients", "10.73.0.0/24", "fd73::/64"),
    ):
        net = c.post("networks", name=name)
        c.post("subnets", network_id=net["id"], cidr=v4, ip_version=4)
        c.post("subnets", network_id=net["id"], cidr=v6, ip_version=6)
        nets.append(c.get("networks", net["id"]))
    vrrp, clients = nets
    router = c.post("routers", name="r")
    for net in nets:
        for sid in net["subnets"]:
            c.action("routers", router["id"], "add_router_interface", subnet_id=sid)
    c.post("ports", network_id=vrrp["id"], name="vip", fixed_ips=[{"ip_address": VIP6}])
    pairs = [{"ip_address": VIP6}]
    pa, ns_a = c.hv[0].vm(vrrp, "a", allowed_address_pairs=pairs)
    pb, ns_b = c.hv[1].vm(vrrp, "b", allowed_address_pairs=pairs)
    pc, ns_c = c.hv[0].vm(clients, "c")
    for ns, port, gw in ((ns_a, pa, "fd72::1"), (ns_b, pb, "fd72::1"), (ns_c, pc, "fd73::1")):
        configure6(ns, port, gw)
    for hv, ns, name in ((c.hv[0], ns_a, "a"), (c.hv[1], ns_b, "b")):
        server = hv.background(ns, PY, "-c", IDENT6, name, str(PORT))
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    assert probe(ns_c, VIP6, PORT) == "timeout"
    # A holds it: the router solicits it into the network, A's NA is learned.
    out = in_netns(ns_a, "ip", "-6", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad")
    assert out.returncode == 0, out.stderr
    eventually(lambda: probe(ns_c, VIP6, PORT) == "a", "C reaches A at the VIP", timeout=20)
    # B takes over and announces it with an unsolicited NA: C follows within seconds.
    in_netns(ns_a, "ip", "-6", "addr", "del", f"{VIP6}/128", "dev", "eth0")
    out = in_netns(ns_b, "ip", "-6", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad")
    assert out.returncode == 0, out.stderr
    out = in_netns(ns_b, PY, "-c", SEND_RAW, unsolicited_na(pb["mac_address"]).hex())
    assert out.returncode == 0, out.stderr
    eventually(lambda: probe(ns_c, VIP6, PORT) == "b", "C reaches B after the NA", timeout=15)
