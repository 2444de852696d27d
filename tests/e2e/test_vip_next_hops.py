"""A VRRP/keepalived VIP behind a router, on real OVS across two chassis.

Two VMs on one network are both allowed the VIP by an allowed address pair, the VIP
reserved by an unbound port's fixed IP (the usual keepalived/Octavia setup). A VM on
another network behind the router reaches whichever VM holds the VIP now: the router
asks for it (its who-has flooded into the network from the router interface, across the
tunnel too) and learns the holder's answer; when the VIP moves, the new holder's
gratuitous ARP is learned (and still flooded), and the traffic follows at once, well
before any refresh. Which VM answers is proven by a TCP service answering its name. A VM
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
    system.require(request)
    with cluster(tmp_path, 2) as c:
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
    # B takes over (A gives it up, B announces it): the next connection reaches B, within
    # seconds (the refresh is once a minute).
    drop_vip(ns_a)
    # (so A's kernel keeps what a gratuitous ARP says: the proof that it was flooded)
    in_netns(ns_a, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
    take_vip(ns_b)
    eventually(lambda: probe(ns_c, VIP, PORT) == "b", "C reaches B after the GARP", timeout=5)
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
    eventually(lambda: probe(ns_c, VIP, PORT) == "a", "C reaches A again", timeout=5)
