"""Many chassis for real: Geneve and VXLAN overlays between OVS instances in namespaces.

One etcd, one `wyvern api`, and chassis that are each a namespace with their own OVS and
`wyvern agent` (tests/e2e/multichassis.py). VMs on different chassis ping, talk TCP
(multi-megabyte, which only works when the MTU leaves room for the encapsulation), get
DHCP leases from their own chassis, are routed across chassis without a detour, and
are filtered by security groups whose members live elsewhere. A broadcast reaches only
the chassis that host the network: a third chassis sees nothing on its underlay NIC.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import system
from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import (
    dhclient,
    dhcp_dir,
    eventually,
    ident_server,
    ip_of,
    ping,
    pings,
    probe,
    read_env,
    rule,
)
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

PY = sys.executable


@pytest.fixture
def three(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Three chassis on one underlay."""
    system.require(request)
    with cluster(tmp_path, 3) as c:
        yield c


@pytest.fixture
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    system.require(request)
    with cluster(tmp_path, 2) as c:
        yield c


def network(c: Cluster, name: str, cidr: str, **attrs: Any) -> dict[str, Any]:
    net = c.post("networks", name=name, **attrs)
    c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return c.get("networks", net["id"])


# A sender of N bytes and a counting receiver (multi-megabyte TCP across chassis).
SINK = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); conn.settimeout(30); total = 0
while data := conn.recv(65536):
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""
SOURCE = """
import os, socket, sys
n = int(sys.argv[2])
c = socket.create_connection((sys.argv[1], 5001), timeout=10); c.settimeout(30)
c.sendall(os.urandom(n)); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def transfer(hv_server: Hv, server_ns: str, client_ns: str, server_ip: str, n: int) -> None:
    server = hv_server.background(server_ns, PY, "-c", SINK)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    out = in_netns(client_ns, PY, "-c", SOURCE, server_ip, str(n), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == str(n)


@pytest.mark.parametrize("network_type", ["geneve", "vxlan"])
def test_ping_and_multi_megabyte_tcp_across_chassis(two: Cluster, network_type: str) -> None:
    c = two
    net = network(c, network_type, "10.61.0.0/24", **{"provider:network_type": network_type})
    assert net["mtu"] == {"geneve": 1438, "vxlan": 1450}[network_type]
    p1, ns1 = c.hv[0].vm(net, "vm1")
    p2, ns2 = c.hv[1].vm(net, "vm2")
    eventually(lambda: pings(ns1, ip_of(p2)), "a ping across chassis", timeout=15)
    # ARP for the remote VM is answered on chassis 0: only the ping itself crosses.
    assert in_netns(ns1, "ip", "neigh", "flush", "all").returncode == 0
    with c.hv[1].capture(f"udp and dst host {c.hv[1].tunnel_ip}") as crossed:
        assert pings(ns1, ip_of(p2))
    assert [line for line in crossed if "ICMP echo request" in line], crossed
    assert not [line for line in crossed if "ARP" in line], crossed
    out = ping(ns2, ip_of(p1), count=3)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout + c.logs()
    # Full-size segments both ways: 8 MB from chassis 0 to 1, 3 MB back.
    transfer(c.hv[1], ns2, ns1, ip_of(p2), 8_000_000)
    transfer(c.hv[0], ns1, ns2, ip_of(p1), 3_000_000)
    # It really went through the tunnel of the network's type, keyed by the network.
    # (the VMs' flows only: BFD between the chassis runs over Geneve whatever the network)
    macs = (p1["mac_address"], p2["mac_address"])
    dump = "\n".join(
        line
        for line in c.hv[0].ovs.appctl("dpctl/dump-flows").splitlines()
        if any(mac in line for mac in macs)
    )
    assert "tnl_push(tnl_port(" in dump, dump
    assert (network_type == "geneve") == ("geneve" in dump), dump
    # And `wyvern trace --ovs` on chassis 0 shows it leave by the tunnel to chassis 1.
    out = c.hv[0].wyvern("trace", "--ovs", "--from", "vm1", "--to", "vm2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"set_field:{c.hv[1].tunnel_ip}->tun_dst" in out.stdout, out.stdout
    assert f"set_field:{hex(net['provider:segmentation_id'])}->tun_id" in out.stdout, out.stdout


def ipv4_inside(lines: list[str]) -> list[str]:
    """Captured tunnel packets that carry IPv4 (VMs also send IPv6 router solicitations
    and MLD reports of their own, which flood legitimately)."""
    return [line for line in lines if re.search(r"(Geneve|VXLAN).*: IP \d", line)]


def geneve_to(hv: Hv) -> str:
    """tcpdump filter: Geneve packets addressed to HV's tunnel IP."""
    return f"udp port 6081 and dst host {hv.tunnel_ip}"


def test_broadcast_reaches_exactly_the_chassis_hosting_the_network(three: Cluster) -> None:
    c = three
    net = network(c, "bcast", "10.62.0.0/24")
    other = network(c, "elsewhere", "10.63.0.0/24")
    _, ns0 = c.hv[0].vm(net, "a")
    p1, ns1 = c.hv[1].vm(net, "b")
    p2, _ = c.hv[2].vm(other, "c")  # chassis 2 is busy, but with another network only
    _, ns3 = c.hv[0].vm(other, "d")  # chassis 0 hosts both networks
    eventually(lambda: pings(ns0, ip_of(p1)), "unicast across chassis first", timeout=15)
    eventually(lambda: pings(ns3, ip_of(p2)), "unicast to chassis 2", timeout=15)
    hv1, hv2 = c.hv[1], c.hv[2]
    with (
        hv1.capture(geneve_to(hv1)) as at1,
        hv2.capture(geneve_to(hv2)) as at2,
        hv1.capture("icmp", vm=ns1) as in_vm,
    ):
        out = in_netns(ns0, "ping", "-n", "-b", "-c", "3", "-i", "0.3", "-W", "1", "10.62.0.255")
        assert "3 packets transmitted" in out.stdout, out.stdout + out.stderr
        assert pings(ns3, ip_of(p2))  # meanwhile, the other network's traffic does arrive
    echo = [line for line in at1 if "ICMP echo request" in line and "10.62.0.255" in line]
    assert len(echo) == 3, "\n".join(at1)  # one copy per broadcast, no re-flooding
    assert len([line for line in in_vm if "10.62.0.255" in line]) == 3, in_vm  # delivered
    # The chassis without the network gets nothing of it; the capture there works.
    assert [line for line in at2 if f"> {ip_of(p2)}: ICMP echo request" in line], at2
    vni = f"vni {hex(net['provider:segmentation_id'])}"
    assert [line for line in at2 if vni in line or "10.62." in line] == [], at2
    # Once chassis 1 hosts no port of the network any more, chassis 0 stops sending there.
    assert any(hv1.tunnel_ip in f for f in c.hv[0].flows())
    c.delete("ports", p1["id"])
    eventually(lambda: not any(hv1.tunnel_ip in f for f in c.hv[0].flows()), "no tunnel left")


def test_routed_across_chassis_without_a_detour(three: Cluster) -> None:
    c = three
    left = network(c, "left", "10.64.0.0/24")
    right = network(c, "right", "10.65.0.0/24")
    router = c.post("routers", name="r")
    for net in (left, right):
        c.action("routers", router["id"], "add_router_interface", subnet_id=net["subnets"][0])
    pa, nsa = c.hv[0].vm(left, "a")
    pb, nsb = c.hv[1].vm(right, "b")
    pc, _ = c.hv[2].vm(left, "c")  # hosts the left network (and the router) too
    eventually(lambda: pings(nsa, ip_of(pb)), "a routed ping across chassis", timeout=15)
    eventually(lambda: pings(nsa, ip_of(pc)), "a ping to chassis 2", timeout=15)
    with c.hv[2].capture("udp port 6081") as at2:
        out = ping(nsa, ip_of(pb), count=5)
        assert " 0% packet loss" in out.stdout, out.stdout + c.logs()
        transfer(c.hv[1], nsb, nsa, ip_of(pb), 4_000_000)
        assert pings(nsa, ip_of(pc))  # the capture on chassis 2 sees what is for it
    assert [line for line in ipv4_inside(at2) if ip_of(pc) in line], at2
    # Routed on chassis 0, delivered by 1, no detour through 2.
    assert [line for line in ipv4_inside(at2) if ip_of(pb) in line] == [], at2
    out = ping(nsb, ip_of(pa), "-t", "64", count=1)
    assert "ttl=63" in out.stdout, out.stdout  # one router hop, done on the sender


def test_dhcp_lease_on_each_chassis_from_its_own_agent(two: Cluster) -> None:
    c = two
    net = network(c, "dhcp", "10.66.0.0/24")
    ports = [c.post("ports", network_id=net["id"], name=f"vm{i}") for i in range(2)]
    vms = [hv.plug(port, static_ip=False) for hv, port in zip(c.hv, ports, strict=True)]
    for hv, port in zip(c.hv, ports, strict=True):
        hv.wait_active(port)
    for i, (port, ns) in enumerate(zip(ports, vms, strict=True)):
        peer, peer_ip = c.hv[1 - i], ip_of(ports[1 - i])
        # A dir per dhclient: each daemon's own pidfile, so the teardown kills both.
        work = dhcp_dir(c.hv[i], timeout=15)
        assert in_netns(ns, "ip", "link", "set", "eth0", "mtu", "1500").returncode == 0
        with peer.capture(geneve_to(peer)) as crossed:
            out = dhclient(ns, work)
            # A ping to the peer's port does cross (answered or not): the capture works.
            in_netns(ns, "ping", "-n", "-c", "1", "-W", "1", peer_ip)
        assert out.returncode == 0, out.stdout + out.stderr + c.logs()
        env = read_env(work / "dhclient.BOUND")
        assert env["new_ip_address"] == ip_of(port)
        assert env["new_interface_mtu"] == "1438"  # the overlay's MTU, advertised
        assert [line for line in crossed if f"> {peer_ip}: ICMP echo request" in line], crossed
        # The DHCP exchange was answered on the VM's own chassis: none of it crossed.
        # (tcpdump names port 67/68 UDP "BOOTP/DHCP"; an address ending in .67 is no DHCP)
        assert [line for line in crossed if "BOOTP" in line or "DHCP" in line] == [], crossed


def test_security_group_remote_group_members_on_another_chassis(two: Cluster) -> None:
    c = two
    group_g = c.post("security-groups", name="G")
    server_sg = c.post("security-groups", name="server")
    rule(c.hv[0], server_sg, "ingress", protocol="tcp", port_range_min=5000,
         port_range_max=5000, remote_group_id=group_g["id"])  # fmt: skip
    net = network(c, "sg", "10.67.0.0/24")
    p1, ns1 = c.hv[0].vm(net, "client")  # the default group only
    groups = [*p1["security_groups"], group_g["id"]]
    _, ns3 = c.hv[0].vm(net, "member", security_groups=groups)
    p2, ns2 = c.hv[1].vm(net, "server", security_groups=[server_sg["id"]])
    ip2 = ip_of(p2)
    ident_server(c.hv[1], ns2, "server", 5000)
    eventually(lambda: probe(ns3, ip2, 5000) == "server", "a member from the start")
    assert probe(ns1, ip2, 5000) == "timeout", "a non-member is not admitted"
    c.put("ports", p1["id"], security_groups=[*p1["security_groups"], group_g["id"]])
    eventually(lambda: probe(ns1, ip2, 5000) == "server", "a member on another chassis")
    c.put("ports", p1["id"], security_groups=p1["security_groups"])
    eventually(lambda: probe(ns1, ip2, 5000) == "timeout", "a former member is refused")


def test_chassis_on_a_three_member_etcd_cluster(tmp_path: Path) -> None:
    with cluster(tmp_path, 2, etcd_members=3) as c:
        net = network(c, "etcd3", "10.68.0.0/24")
        _, ns1 = c.hv[0].vm(net, "a")
        p2, _ = c.hv[1].vm(net, "b")
        eventually(lambda: pings(ns1, ip_of(p2)), "a ping across chassis", timeout=15)
