"""North-south for real: VMs behind a router reach a host on the external network through
the router's gateway, SNATed to the gateway address; the host reaches the gateway.

The physical network is the provider test's switch (tests/e2e/test_provider_networks.py):
an OVS of its own with a host on an access port. Two chassis map physnet1; only the first
is a gateway chassis (WYVERN_GATEWAY_PRIORITY), so it hosts the router's gateway port;
for the failover tests hv1 is one too, at a lower priority (or the same, for the test
of ties); hv2 does not map the physnet.
The host is the external subnet's gateway_ip (the upstream router) and also holds an
address off the subnet, reached through the default route.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import (
    PY,
    STREAM_RECEIVER,
    STREAM_SENDER,
    eventually,
    ip_of,
    ping,
    pings,
)
from tests.e2e.test_ovs_restarts import restart_missing
from tests.e2e.test_provider_networks import PHYSNET, TOR, Segment, attach_nic, sh
from tests.southbound.conftest import in_netns, unique
from wyvern.model.keys import mac_binding_key
from wyvern.nb.etcd import EtcdStore
from wyvern.southbound.ovs import OvsInstance, netns_exists

pytestmark = pytest.mark.system

EXT_CIDR = "203.0.113.0/24"
UPSTREAM = "203.0.113.250"  # the host: the external subnet's gateway
FAR = "198.51.100.7"  # another address of the host, off the external subnet
MAC_BINDING_REFRESH = 1.0  # s between the gateway chassis's probes of learned neighbours

# Prints "ready", then the source address of each TCP connection to port 7100.
PEER_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7100)); s.listen(8); print("ready", flush=True)
while True:
    conn, peer = s.accept(); print(peer[0], flush=True); conn.sendall(b"hi"); conn.close()
"""
CONNECT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7100), timeout=5); print(c.recv(10).decode())
"""


@pytest.fixture
def outside(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Segment]]:
    system.require(request)
    with outside_world(tmp_path) as world:
        yield world


@pytest.fixture
def outside_ha(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Segment]]:
    system.require(request)
    with outside_world(tmp_path, standby=True) as world:
        yield world


@pytest.fixture
def outside_tie(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Cluster, Segment]]:
    system.require(request)
    with outside_world(tmp_path, standby=True, tie=True) as world:
        yield world


@pytest.fixture
def outside_zones(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Cluster, Segment]]:
    system.require(request)
    with outside_world(tmp_path, standby=True, zones=("az-a", "az-b")) as world:
        yield world


@contextlib.contextmanager
def outside_world(
    tmp_path: Path, standby: bool = False, tie: bool = False, zones: tuple[str, str] | None = None
) -> Iterator[tuple[Cluster, Segment]]:
    """A gateway chassis (hv0) and a compute chassis (hv1, a standby gateway chassis with
    STANDBY, of hv0's priority with TIE too) on physnet1, both hosting VMs, the host on
    one switch with them, and a compute chassis without the physnet (hv2). ZONES: the
    availability zones of hv0 and hv1 (else the default)."""
    host = unique("wvm-out-")
    tor = OvsInstance.start(netns=unique("wvm-tor-"))
    try:
        tor.vsctl("add-br", TOR, "--", "set", "Bridge", TOR, "datapath_type=netdev")
        sh("ip", "netns", "add", host)
        with cluster(tmp_path, 0) as c:
            # hv1 takes over from hv0 if standby
            for i, priority in enumerate((2, (2 if tie else 1) if standby else 0)):
                bridge = unique("br-ex-")
                env = {
                    "WYVERN_BRIDGE_MAPPINGS": json.dumps({PHYSNET: bridge}),
                    "WYVERN_GATEWAY_PRIORITY": str(priority),
                    "WYVERN_AGENT_MAC_BINDING_REFRESH": str(MAC_BINDING_REFRESH),
                }
                if zones is not None:
                    env["WYVERN_AVAILABILITY_ZONE"] = zones[i]
                hv = c.add_chassis(env=env)
                attach_nic(hv, bridge, Segment(tor, host, ""))
            c.add_chassis()  # hv2: no bridge mapping, reaches the gateway by Geneve
            c.wait_tunnels()
            nic, host_port = Segment(tor, host, "").veth_to(host)
            sh("ip", "-n", host, "link", "set", nic, "name", "eth0")
            for dev in ("eth0", "lo"):
                sh("ip", "-n", host, "link", "set", dev, "up")
            assert in_netns(host, "ethtool", "-K", "eth0", "tx", "off").returncode == 0
            sh("ip", "-n", host, "addr", "add", f"{UPSTREAM}/24", "dev", "eth0")
            sh("ip", "-n", host, "addr", "add", f"{FAR}/32", "dev", "lo")
            yield c, Segment(tor, host, host_port)
    finally:
        if netns_exists(host):
            subprocess.run(["ip", "netns", "del", host], check=False)
        tor.stop()


def external_network(c: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    net = c.post(
        "networks",
        name=unique("public-"),
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": PHYSNET,
        },
    )
    sub = c.post(
        "subnets",
        network_id=net["id"],
        cidr=EXT_CIDR,
        ip_version=4,
        gateway_ip=UPSTREAM,
        enable_dhcp=False,
        allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.99"}],
    )
    return net, sub


def behind_router(
    c: Cluster, cidr: str, ext: dict[str, Any] | None, **attrs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A network with an IPv4 subnet of CIDR behind a new router (ATTRS; its gateway on
    EXT, if given): (network, router)."""
    net = c.post("networks", name=unique("int-"))
    sub = c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    router = c.post("routers", name=unique("r-"), **attrs)
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    if ext is not None:
        c.put("routers", router["id"], external_gateway_info={"network_id": ext["id"]})
    return net, router


def tcp_open(c: Cluster, port: int) -> list[str]:
    """A security group admitting TCP to PORT from anywhere."""
    sg = c.post("security-groups", name=unique("tcp-"))
    c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
           ethertype="IPv4", protocol="tcp", port_range_min=port, port_range_max=port)  # fmt: skip
    return [sg["id"]]


def gateway_ip(c: Cluster, router: dict[str, Any]) -> str:
    info = c.get("routers", router["id"])["external_gateway_info"]
    return str(info["external_fixed_ips"][0]["ip_address"])


def sources(server: subprocess.Popen[str], count: int) -> list[str]:
    assert server.stdout is not None
    return [server.stdout.readline().strip() for _ in range(count)]


def connect(ns: str, ip: str) -> str:
    out = in_netns(ns, PY, "-c", CONNECT, ip, timeout=15)
    return out.stdout.strip() if out.returncode == 0 else f"failed: {out.stderr[-200:]}"


def test_snat_out_through_the_gateway_chassis(outside: tuple[Cluster, Segment]) -> None:
    c, seg = outside
    gw_hv = c.hv[0]
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.90.0.0/24", None)
    port, ns = gw_hv.vm(net, "vm1")
    vm_ip = ip_of(port)

    # Without a gateway the host is out of reach (the same probe succeeds below).
    assert not pings(ns, UPSTREAM)

    c.put("routers", router["id"], external_gateway_info={"network_id": ext["id"]})
    gw_ip = gateway_ip(c, router)
    eventually(lambda: pings(ns, UPSTREAM), "the VM pings the host through SNAT", timeout=15)
    eventually(lambda: pings(ns, FAR), "the VM pings past the upstream router", timeout=10)
    # The host learnt the gateway's MAC from its ARP answer, and pings the gateway.
    out = ping(seg.host, gw_ip, count=3)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout + c.logs()

    # TCP out: the host sees the gateway address, never the VM's.
    server = gw_hv.background(seg.host, PY, "-c", PEER_SERVER)
    assert sources(server, 1) == ["ready"]
    assert connect(ns, UPSTREAM) == "hi"
    assert connect(ns, FAR) == "hi"
    assert sources(server, 2) == [gw_ip, gw_ip]
    # A VM on hv2, which does not map the physnet: the gateway chassis routes and SNATs
    # its packets (Geneve to hv0, VNI = the router's key), and the replies come back.
    _, ns3 = c.hv[2].vm(net, "vm3")
    eventually(lambda: pings(ns3, FAR), "a VM on hv2 pings out through hv0", timeout=15)
    assert connect(ns3, UPSTREAM) == "hi"
    assert sources(server, 1) == [gw_ip]

    # enable_snat=false: the VM's own address goes out (the host routes it back).
    sh("ip", "-n", seg.host, "route", "add", "10.90.0.0/24", "via", gw_ip)
    c.put(
        "routers",
        router["id"],
        external_gateway_info={"network_id": ext["id"], "enable_snat": False},
    )
    eventually(lambda: connect(ns, UPSTREAM) == "hi" and sources(server, 1) == [vm_ip],
               "without SNAT the host sees the VM's address", timeout=15)  # fmt: skip

    # The gateway goes: the host is out of reach again.
    c.put("routers", router["id"], external_gateway_info={})
    eventually(lambda: not pings(ns, UPSTREAM), "no gateway, no way out", timeout=15)


def fip_status(c: Cluster, fip: dict[str, Any]) -> str:
    return str(c.get("floatingips", fip["id"])["status"])


def test_floating_ips_in_and_out_distributed_and_moved(outside: tuple[Cluster, Segment]) -> None:
    """A floating IP is NATed on its port's chassis (both map the physnet): hv1 is no
    gateway, and its VM's floating IP works with no detour through hv0."""
    c, seg = outside
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.91.0.0/24", ext)
    groups = tcp_open(c, 7100)
    p1, ns1 = c.hv[1].vm(net, "vm1", security_groups=groups)
    p2, ns2 = c.hv[0].vm(net, "vm2", security_groups=groups)
    p3, ns3 = c.hv[2].vm(net, "vm3", security_groups=groups)
    for ns in (ns1, ns2, ns3):
        c.hv[0].background(ns, PY, "-c", PEER_SERVER)

    fip = c.post("floatingips", floating_network_id=ext["id"])
    address = fip["floating_ip_address"]
    assert fip["status"] == "DOWN"
    # Not associated: nothing answers at the address (the same probe succeeds below).
    assert connect(seg.host, address).startswith("failed")

    c.put("floatingips", fip["id"], port_id=p1["id"])
    eventually(lambda: fip_status(c, fip) == "ACTIVE", "the floating IP reports ACTIVE")
    eventually(lambda: connect(seg.host, address) == "hi", "TCP in through the floating IP")
    # Out: the host sees the floating address, not the gateway's nor the VM's.
    server = c.hv[0].background(seg.host, PY, "-c", PEER_SERVER)
    assert sources(server, 1) == ["ready"]
    tunnelled = "geneve and tcp port 7100"
    with c.hv[1].capture(tunnelled) as hv1_tunnel:
        assert connect(ns1, UPSTREAM) == "hi"
        assert connect(seg.host, address) == "hi"
    assert sources(server, 1) == [address]
    assert not hv1_tunnel, hv1_tunnel  # no detour: hv1 NATs both ways itself
    # vm2 (no floating IP, on the gateway chassis) is SNATed to the gateway address.
    assert connect(ns2, UPSTREAM) == "hi"
    assert sources(server, 1) == [gateway_ip(c, router)]
    # Distributed: hv1 answered ARP for the address itself, with the floating IP's MAC.
    own = requests.get(f"{c.base}/ports?device_id={fip['id']}", timeout=5).json()["ports"]
    neigh = in_netns(seg.host, "ip", "neigh", "show", address).stdout
    assert [p["mac_address"] for p in own] == [neigh.split("lladdr ")[1].split()[0]], neigh

    # Moved to vm2 on hv0: takes effect at once (gratuitous ARP from hv0).
    c.put("floatingips", fip["id"], port_id=p2["id"])
    eventually(lambda: connect(seg.host, address) == "hi", "TCP in after the move", timeout=20)
    assert connect(ns2, UPSTREAM) == "hi"
    assert sources(server, 1) == [address]
    assert fip_status(c, fip) == "ACTIVE"

    # Moved to vm3 on hv2, which does not map the physnet: NATed on the gateway chassis.
    c.put("floatingips", fip["id"], port_id=p3["id"])
    eventually(lambda: connect(seg.host, address) == "hi", "TCP in, centralized on hv0")
    with c.hv[2].capture(tunnelled) as hv2_tunnel:  # the same count, where it must be > 0
        assert connect(ns3, UPSTREAM) == "hi"
    assert sources(server, 1) == [address]
    assert hv2_tunnel, "hv2 reaches its floating IP's NAT on hv0 through the tunnel"
    eventually(lambda: fip_status(c, fip) == "ACTIVE", "ACTIVE, centralized")

    # Disassociated: nothing answers any more, and the status says so.
    c.put("floatingips", fip["id"], port_id=None)
    eventually(lambda: connect(seg.host, address).startswith("failed"), "no way in")
    assert fip_status(c, fip) == "DOWN"


def test_two_routers_with_overlapping_internal_cidrs(outside: tuple[Cluster, Segment]) -> None:
    """Two routers on one external network, each with 10.94.0.0/24 behind it and a VM at
    10.94.0.10 on the gateway chassis: each goes out as its own router's gateway address
    (each router NATs in its own conntrack zone), and each floating IP reaches its own
    VM."""
    c, seg = outside
    ext, _ = external_network(c)
    server = c.hv[0].background(seg.host, PY, "-c", PEER_SERVER)
    assert sources(server, 1) == ["ready"]
    groups = tcp_open(c, 7100)
    vms = []
    for i in range(2):
        net, router = behind_router(c, "10.94.0.0/24", ext)
        port, ns = c.hv[0].vm(
            net, f"vm{i}", fixed_ips=[{"ip_address": "10.94.0.10"}], security_groups=groups
        )
        # the VM's server names itself, so that the way in shows which VM answered
        c.hv[0].background(ns, PY, "-c", PEER_SERVER.replace('b"hi"', f'b"vm{i}"'))
        vms.append((router, port, ns))
    gateways = [gateway_ip(c, router) for router, _, _ in vms]
    assert len(set(gateways)) == 2
    for (_, _, ns), gw in zip(vms, gateways, strict=True):
        eventually(lambda ns=ns: pings(ns, UPSTREAM), "SNAT out", timeout=15)
        assert connect(ns, UPSTREAM) == "hi"
        assert sources(server, 1) == [gw]
    for i, (_, port, _) in enumerate(vms):
        fip = c.post("floatingips", floating_network_id=ext["id"], port_id=port["id"])
        address = fip["floating_ip_address"]
        eventually(lambda a=address, i=i: connect(seg.host, a) == f"vm{i}", f"in to vm{i}")


def test_extra_route_through_an_outside_router(outside: tuple[Cluster, Segment]) -> None:
    """An extra route whose next hop is a second router on the external segment (not the
    subnet's gateway): VMs on the gateway chassis and on a chassis that redirects to it
    reach the network behind it, SNATed (the far router saw the gateway address)."""
    c, seg = outside
    far = unique("wvm-r2-")
    sh("ip", "netns", "add", far)
    try:
        nic, _ = seg.veth_to(far)
        sh("ip", "-n", far, "link", "set", nic, "name", "eth0")
        for dev in ("eth0", "lo"):
            sh("ip", "-n", far, "link", "set", dev, "up")
        assert in_netns(far, "ethtool", "-K", "eth0", "tx", "off").returncode == 0
        sh("ip", "-n", far, "addr", "add", "203.0.113.251/24", "dev", "eth0")
        sh("ip", "-n", far, "addr", "add", "100.64.7.7/32", "dev", "lo")
        ext, _ = external_network(c)
        net, router = behind_router(c, "10.95.0.0/24", ext)
        vms = [hv.vm(net, f"vm-{i}")[1] for i, hv in ((0, c.hv[0]), (2, c.hv[2]))]
        for ns in vms:
            eventually(lambda ns=ns: pings(ns, UPSTREAM), "SNAT out", timeout=15)
            # the upstream host has no route to 100.64.7.0/24: not without the extra route
            assert not pings(ns, "100.64.7.7")
        c.put(
            "routers",
            router["id"],
            routes=[{"destination": "100.64.7.0/24", "nexthop": "203.0.113.251"}],
        )
        for ns in vms:
            eventually(lambda ns=ns: pings(ns, "100.64.7.7"), "through the extra route", timeout=15)
        neigh = in_netns(far, "ip", "neigh", "show", gateway_ip(c, router)).stdout
        assert "lladdr" in neigh, neigh  # the far router answered the gateway address itself
    finally:
        subprocess.run(["ip", "netns", "del", far], check=False)


def test_a_replaced_upstream_router_is_followed(outside: tuple[Cluster, Segment]) -> None:
    """The upstream router changes its MAC (a replaced box): the gateway chassis's
    periodic probe learns the new one, the MAC binding in the store follows, and SNAT
    traffic flows again (the host's kernel drops frames to its old MAC)."""
    c, seg = outside
    ext, _ = external_network(c)
    net, _ = behind_router(c, "10.96.0.0/24", ext)
    _, ns = c.hv[0].vm(net, "vm")
    eventually(lambda: pings(ns, UPSTREAM), "SNAT out", timeout=15)
    store = EtcdStore(c.etcd_endpoints)
    try:
        key = mac_binding_key(ext["id"], UPSTREAM)

        def bound() -> str:
            kv = store.get(key)
            return str(json.loads(kv.value)["mac"]) if kv is not None else ""

        old = bound()
        assert old  # learned by ARP when the first packet went out
        new = "02:00:5e:00:77:01"
        sh("ip", "-n", seg.host, "link", "set", "eth0", "address", new)
        eventually(lambda: bound() == new, "the binding follows the new MAC", timeout=15)
        eventually(lambda: pings(ns, UPSTREAM), "SNAT out to the new MAC")
    finally:
        store.close()


def test_streams_through_snat_and_a_floating_ip_survive_agent_restarts(
    outside: tuple[Cluster, Segment],
) -> None:
    """Both agents SIGKILLed mid-stream and started again: a TCP stream from a VM out
    through SNAT (on the gateway chassis) and one from the host in through a floating
    IP (on the other chassis) lose no byte and are not reset."""
    c, seg = outside
    ext, _ = external_network(c)
    net, _ = behind_router(c, "10.92.0.0/24", ext)
    groups = tcp_open(c, 6000)
    _, ns_out = c.hv[0].vm(net, "out", security_groups=groups)
    p_in, ns_in = c.hv[1].vm(net, "in", security_groups=groups)
    fip = c.post("floatingips", floating_network_id=ext["id"], port_id=p_in["id"])
    eventually(lambda: fip_status(c, fip) == "ACTIVE", "the floating IP reports ACTIVE")
    eventually(lambda: pings(ns_out, UPSTREAM), "SNAT works before the restart", timeout=15)

    streams = []
    for receiver_ns, sender_ns, target in (
        (seg.host, ns_out, UPSTREAM),  # out through SNAT
        (ns_in, seg.host, fip["floating_ip_address"]),  # in through the floating IP
    ):
        receiver = c.hv[0].background(receiver_ns, PY, "-c", STREAM_RECEIVER)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        sender = c.hv[0].background(sender_ns, PY, "-c", STREAM_SENDER, target)
        assert sender.stdout is not None and sender.stdout.readline().strip() == "connected"
        streams.append((sender, receiver))
        if receiver_ns == seg.host:  # (both listen on port 6000: one at a time)
            time.sleep(0.2)

    time.sleep(1.0)  # streaming; then both agents die mid-stream and come back
    for hv in c.hv:
        assert hv.agent is not None
        hv.agent.signal(signal.SIGKILL)
        hv.agent.process.wait(timeout=10)
    time.sleep(0.5)
    for hv in c.hv:
        hv.start_agent()

    for sender, receiver in streams:
        sent, _ = sender.communicate(timeout=40)
        received, _ = receiver.communicate(timeout=40)
        assert sent.startswith("sent "), sent + c.logs()
        assert received.startswith("received "), received + c.logs()
        assert sent.split()[1:] == received.split()[1:]  # every byte, in order, no reset
    for hv in c.hv:
        hv.wait_agent_alive()


def kill_chassis(hv: Hv) -> None:
    """The chassis dies: its agent and its ovs-vswitchd, SIGKILLed (no clean stop)."""
    assert hv.agent is not None
    hv.agent.signal(signal.SIGKILL)
    pid = hv.ovs.pid("ovs-vswitchd")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_gateway_failover_when_the_active_gateway_chassis_dies_and_returns(
    outside_ha: tuple[Cluster, Segment],
) -> None:
    """A VM on hv2 pings the host every 10 ms through the gateway on hv0; hv0 dies; hv1
    takes the gateway over (BFD, not the store lease) and announces it, hv2 redirects
    there, and the pings come back, never twice. Then hv0 comes back: its priority (2 over
    hv1's 1) says it takes the gateway back, and it does so without a moment where both
    answer. The window is measured by benchmarks/gateway_failover.py, not asserted here."""
    c, _ = outside_ha
    failover = run_failover(c)
    assert failover.before == {c.hv[0].name: "active", c.hv[1].name: "standby"}
    assert failover.duplicates == 0, failover.summary
    # replies again after the failover, to the last few sent
    assert failover.seqs and max(failover.seqs) >= failover.sent - 10, failover.summary + c.logs()
    assert pings(failover.ns, FAR), c.logs()  # through hv1 from now on
    # what `openstack network agent list --router R --long` shows: hv1 is active now
    eventually(
        lambda: ha_states(c, failover.router) == {c.hv[0].name: "standby", c.hv[1].name: "active"},
        "hv1 reported active",
    )

    def alive() -> dict[str, bool]:
        return {
            a["configurations"]["chassis_name"]: a["alive"] for a in l3_agents(c, failover.router)
        }

    eventually(lambda: not alive()[c.hv[0].name], "hv0 shown dead once its lease ran out", 30)
    assert alive()[c.hv[1].name]

    # hv0 returns (its OVS on the same database, then its agent) under the same pings
    with pinging(c.hv[2], failover.ns, UPSTREAM) as back:
        time.sleep(0.5)
        restart_missing(c.hv[0].ovs)
        c.hv[0].start_agent()
        eventually(
            lambda: (
                ha_states(c, failover.router) == {c.hv[0].name: "active", c.hv[1].name: "standby"}
            ),
            "hv0 active again",
            timeout=30,
        )
        time.sleep(1.0)  # pings through hv0 from here on
    assert back.duplicates == 0, back.summary
    assert back.seqs and max(back.seqs) >= back.sent - 10, back.summary + c.logs()
    redirected = f"geneve and icmp and host {UPSTREAM}"  # hv2's pings, tunnelled
    with c.hv[0].capture(redirected) as to_hv0, c.hv[1].capture(redirected) as to_hv1:
        assert pings(failover.ns, UPSTREAM), c.logs()
    assert to_hv0, "hv2 redirects to hv0"
    assert not to_hv1, to_hv1  # and no longer to the standby


HOSTING = "hosting gateways from now on"  # an agent's log once its hold-back is over


def test_a_disabled_gateway_chassis_hands_its_gateways_over(
    outside_ha: tuple[Cluster, Segment],
) -> None:
    """hv0 (priority 2) hosts the gateway, hv1 (priority 1) stands by. `openstack network
    agent set --disable hv0` (admin_state_up false): hv0 is no candidate any more, hv1
    hosts the gateway and the VM's SNAT traffic goes through it; enabled again, hv0 (the
    higher priority) takes it back."""
    c, _ = outside_ha
    hv0, hv1 = c.hv[0].name, c.hv[1].name
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.95.0.0/24", ext)
    _, ns = c.hv[2].vm(net, "vm")
    redirected = f"geneve and icmp and host {UPSTREAM}"  # the VM's pings, tunnelled

    def through() -> tuple[list[str], list[str]]:
        with c.hv[0].capture(redirected) as to_hv0, c.hv[1].capture(redirected) as to_hv1:
            assert pings(ns, UPSTREAM), c.logs()
        return to_hv0, to_hv1

    def set_agent(name: str, up: bool) -> None:
        body = {"agent": {"admin_state_up": up}}
        r = requests.put(f"{c.base}/agents/{name}", json=body, timeout=10)
        assert r.status_code == 200 and r.json()["agent"]["admin_state_up"] is up, r.text

    # The probe first: through hv0.
    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv0", timeout=15)
    eventually(lambda: ha_states(c, router).get(hv0) == "active", "hv0 active")
    to_hv0, to_hv1 = through()
    assert to_hv0 and not to_hv1, (to_hv0, to_hv1)

    set_agent(hv0, False)
    eventually(lambda: ha_states(c, router) == {hv1: "active"}, "hv1 active, hv0 no candidate")
    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv1", timeout=15)
    to_hv0, to_hv1 = through()
    assert to_hv1 and not to_hv0, (to_hv0, to_hv1)
    shown = requests.get(f"{c.base}/routers/{router['id']}", timeout=10).json()["router"]
    assert shown["availability_zones"] == ["nova"]  # (hv1's zone: the default)

    set_agent(hv0, True)
    eventually(lambda: ha_states(c, router).get(hv0) == "active", "hv0 active again", 30)
    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv0 again", timeout=15)
    to_hv0, to_hv1 = through()
    assert to_hv0 and not to_hv1, (to_hv0, to_hv1)


def test_availability_zone_hints_choose_the_gateway_chassis_per_router(
    outside_zones: tuple[Cluster, Segment],
) -> None:
    """hv0 (az-a, priority 2) and hv1 (az-b, priority 1) are gateway chassis. A router
    hinted to az-b has its gateway on hv1, while one without hints, on the same external
    network, has it on hv0: the VMs' SNAT traffic goes through each router's own chassis,
    and each router's availability_zones and l3-agents say so."""
    c, _ = outside_zones
    hv0, hv1 = c.hv[0].name, c.hv[1].name
    ext, _ = external_network(c)
    net_b, router_b = behind_router(c, "10.96.0.0/24", ext, availability_zone_hints=["az-b"])
    net_any, router_any = behind_router(c, "10.97.0.0/24", ext)
    _, ns_b = c.hv[2].vm(net_b, "vm-b")
    _, ns_any = c.hv[2].vm(net_any, "vm-any")
    redirected = f"geneve and icmp and host {UPSTREAM}"  # the VMs' pings, tunnelled

    eventually(lambda: ha_states(c, router_b) == {hv1: "active"}, "router_b on hv1")
    eventually(lambda: ha_states(c, router_any).get(hv0) == "active", "router_any on hv0")
    for ns, there, elsewhere in ((ns_b, 1, 0), (ns_any, 0, 1)):
        eventually(lambda ns=ns: pings(ns, UPSTREAM), "SNAT through its gateway", timeout=15)
        with (
            c.hv[there].capture(redirected) as to_it,
            c.hv[elsewhere].capture(redirected) as to_other,
        ):
            assert pings(ns, UPSTREAM), c.logs()
        assert to_it and not to_other, (ns, to_it, to_other)
    for router, zone in ((router_b, "az-b"), (router_any, "az-a")):
        shown = requests.get(f"{c.base}/routers/{router['id']}", timeout=10).json()["router"]
        assert shown["availability_zones"] == [zone], shown


def test_a_returning_gateway_chassis_of_equal_priority_does_not_take_the_gateway_back(
    outside_tie: tuple[Cluster, Segment],
) -> None:
    """hv0 and hv1 are gateway chassis of the same priority: hv0 (the lower name) hosts
    the gateway, dies, and hv1 takes over; when hv0 returns, ready to host gateways, the
    gateway stays on hv1 (no preemption on a tie, as OVN and keepalived): the VM's SNAT
    traffic still goes through hv1, never duplicated, and l3-agents still shows hv1."""
    c, seg = outside_tie
    hv0, hv1 = c.hv[0].name, c.hv[1].name
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.94.0.0/24", ext)
    gw_ip = gateway_ip(c, router)
    _, ns = c.hv[2].vm(net, "vm")
    redirected = f"geneve and icmp and host {UPSTREAM}"  # the VM's pings, tunnelled

    def through() -> tuple[list[str], list[str]]:
        """The pings that hv2 redirects to hv0 and to hv1 while the VM pings the host."""
        with c.hv[0].capture(redirected) as to_hv0, c.hv[1].capture(redirected) as to_hv1:
            assert pings(ns, UPSTREAM), c.logs()
        return to_hv0, to_hv1

    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv0", timeout=15)
    eventually(
        lambda: ha_states(c, router) == {hv0: "active", hv1: "standby"},
        "hv0 (the lower name, nothing reported yet) active",
    )
    to_hv0, to_hv1 = through()
    assert to_hv0 and not to_hv1, (to_hv0, to_hv1)  # (the capture sees it where it goes)

    # hv0 dies: hv1 takes over (the same probes, the other way round).
    kill_chassis(c.hv[0])
    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv1", timeout=15)
    eventually(
        lambda: ha_states(c, router) == {hv0: "standby", hv1: "active"}, "hv1 reported active"
    )
    with c.hv[1].capture(redirected) as to_hv1:
        assert pings(ns, UPSTREAM), c.logs()
    assert to_hv1, "hv2 redirects to hv1"

    # hv0 returns under pings, and is ready to host gateways (its BFD up, its hold-back
    # over: where a higher priority takes the gateway back, as in the test above).
    agent = c.hv[0].agent
    assert agent is not None
    hosting = agent.log_path.read_text(errors="replace").count(HOSTING)
    with pinging(c.hv[2], ns, UPSTREAM) as back:
        time.sleep(0.5)
        restart_missing(c.hv[0].ovs)
        c.hv[0].start_agent()
        c.hv[0].wait_agent_alive()
        eventually(
            lambda: agent.log_path.read_text(errors="replace").count(HOSTING) > hosting,
            "hv0 ready to host gateways again",
            timeout=30,
        )
        time.sleep(2.0)  # (a preemption would have happened by now)
    assert back.duplicates == 0, back.summary
    assert back.seqs and max(back.seqs) >= back.sent - 10, back.summary + c.logs()
    assert ha_states(c, router) == {hv0: "standby", hv1: "active"}, c.logs()
    to_hv0, to_hv1 = through()
    assert to_hv1 and not to_hv0, (to_hv0, to_hv1)
    # and it is SNAT there: the host sees the gateway address
    server = c.hv[2].background(seg.host, PY, "-c", PEER_SERVER)
    assert sources(server, 1) == ["ready"]
    assert connect(ns, UPSTREAM) == "hi"
    assert sources(server, 1) == [gw_ip]


@dataclasses.dataclass
class PingRun:
    sent: int = 0
    seqs: list[int] = dataclasses.field(default_factory=list)  # the icmp_seq of each reply
    duplicates: int = 0
    summary: str = ""

    @property
    def lost(self) -> int:
        return self.sent - len(set(self.seqs))


@contextlib.contextmanager
def pinging(hv: Hv, ns: str, ip: str, interval: float = 0.01) -> Iterator[PingRun]:
    """`ping -i INTERVAL IP` from NS while the block runs; the run is filled in after."""
    run = PingRun()
    pinger = hv.background(ns, "ping", "-n", "-i", str(interval), ip)
    try:
        yield run
    finally:
        os.killpg(pinger.pid, signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
    replies = [line for line in out.splitlines() if "bytes from" in line]
    run.summary = next(line for line in out.splitlines() if "packets transmitted" in line)
    run.sent = int(run.summary.split()[0])
    run.seqs = [int(line.split("icmp_seq=")[1].split()[0]) for line in replies]
    run.duplicates = len([line for line in replies if "DUP!" in line])


def l3_agents(c: Cluster, router: dict[str, Any]) -> list[dict[str, Any]]:
    r = requests.get(f"{c.base}/routers/{router['id']}/l3-agents", timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json()["agents"])


def ha_states(c: Cluster, router: dict[str, Any]) -> dict[str, str]:
    """Chassis name -> ha_state, as the l3-agents list of the router shows them."""
    return {a["configurations"]["chassis_name"]: a["ha_state"] for a in l3_agents(c, router)}


@dataclasses.dataclass
class Failover(PingRun):
    ns: str = ""  # the VM's namespace
    router: dict[str, Any] = dataclasses.field(default_factory=dict)
    before: dict[str, str] = dataclasses.field(default_factory=dict)  # ha_state before


def run_failover(c: Cluster, interval: float = 0.01) -> Failover:
    """A VM on hv2 behind a router with its gateway on hv0 pings the host every INTERVAL
    seconds; 1 s in, hv0 dies; 4 s later the pinger stops."""
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.93.0.0/24", ext)
    _, ns = c.hv[2].vm(net, "vm")
    eventually(lambda: pings(ns, UPSTREAM), "SNAT through hv0", timeout=15)
    eventually(lambda: "active" in ha_states(c, router).values(), "a gateway reported active")
    before = ha_states(c, router)
    with pinging(c.hv[2], ns, UPSTREAM, interval) as run:
        time.sleep(1.0)
        kill_chassis(c.hv[0])
        time.sleep(4.0)
    return Failover(**dataclasses.asdict(run), ns=ns, router=router, before=before)


# ---- port forwarding ------------------------------------------------------------------
# Listens on each "tcp/<port>" and "udp/<port>" given; logs "<proto> <port> <peer>" to the
# file argv[1]; answers TCP with "hi <port>" and echoes UDP as "echo <data>".
FORWARDED_SERVER = """
import selectors, socket, sys
log = open(sys.argv[1], "a", buffering=1)
sel = selectors.DefaultSelector()
for spec in sys.argv[2:]:
    proto, port = spec.split("/")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    if proto == "tcp":
        s.listen(8)
    sel.register(s, selectors.EVENT_READ, (proto, port))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        proto, port = key.data
        if proto == "tcp":
            conn, peer = key.fileobj.accept()
            log.write(f"tcp {port} {peer[0]}\\n"); conn.sendall(f"hi {port}".encode()); conn.close()
        else:
            data, peer = key.fileobj.recvfrom(2048)
            log.write(f"udp {port} {peer[0]}\\n"); key.fileobj.sendto(b"echo " + data, peer)
"""
# argv: ip proto port. TCP prints what the server sent; UDP prints the echo and where it
# came from (the floating address and external port, if un-DNATed).
FORWARDED_CLIENT = """
import socket, sys
ip, proto, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if proto == "tcp":
    c = socket.create_connection((ip, port), timeout=3); print(c.recv(20).decode())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"x", (ip, port)); data, peer = s.recvfrom(100)
    print(data.decode(), f"{peer[0]}:{peer[1]}")
"""


def probe(ns: str, ip: str, proto: str, port: int) -> str:
    out = in_netns(ns, PY, "-c", FORWARDED_CLIENT, ip, proto, str(port), timeout=15)
    return out.stdout.strip() if out.returncode == 0 else "failed"


def forward(c: Cluster, fip: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    resp = requests.post(
        f"{c.base}/floatingips/{fip['id']}/port_forwardings",
        json={"port_forwarding": attrs},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()["port_forwarding"]
    return body


def open_ports(c: Cluster) -> list[str]:
    """A security group admitting TCP 7100..7400 and UDP 7200 from anywhere."""
    sg = c.post("security-groups", name=unique("pf-"))
    for proto, lo, hi in (("tcp", 7100, 7400), ("udp", 7200, 7200)):
        c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
               ethertype="IPv4", protocol=proto, port_range_min=lo, port_range_max=hi)  # fmt: skip
    return [sg["id"]]


def test_port_forwarding_tcp_udp_ranges_and_a_vm_on_another_chassis(
    outside: tuple[Cluster, Segment],
) -> None:
    """From the host, the floating address's forwarded ports reach servers in VMs: TCP and
    UDP (the servers see the host's address; the UDP echo comes back from the floating
    address and external port), a range, and a VM on hv2 (no physnet: its traffic goes
    through the gateway chassis hv0). Ports not forwarded go nowhere; deleting a
    forwarding stops it."""
    c, seg = outside
    ext, _ = external_network(c)
    net, router = behind_router(c, "10.97.0.0/24", ext)
    groups = open_ports(c)
    p0, ns0 = c.hv[0].vm(net, "pf0", security_groups=groups)
    p2, ns2 = c.hv[2].vm(net, "pf2", security_groups=groups)
    logs = {}
    for ns in (ns0, ns2):
        logs[ns] = c.hv[0].scratch_dir() / "log"
        server = c.hv[0].background(
            ns, PY, "-c", FORWARDED_SERVER, str(logs[ns]),
            "tcp/7100", "udp/7200", "tcp/7300", "tcp/7301", "tcp/7302",
        )  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    fip = c.post("floatingips", floating_network_id=ext["id"])
    addr = fip["floating_ip_address"]
    # Nothing answers at the address before it forwards (the same probe succeeds below).
    assert probe(seg.host, addr, "tcp", 8022) == "failed"

    web = forward(c, fip, protocol="tcp", internal_port_id=p0["id"], internal_port=7100,
                  external_port=8022)  # fmt: skip
    eventually(lambda: probe(seg.host, addr, "tcp", 8022) == "hi 7100", "TCP in", timeout=20)
    eventually(lambda: fip_status(c, fip) == "ACTIVE", "the floating IP reports ACTIVE")
    # A port with no forwarding, right after the forwarded one worked: nothing.
    assert probe(seg.host, addr, "tcp", 8023) == "failed"
    assert probe(seg.host, addr, "tcp", 7100) == "failed"
    # The gateway chassis answered ARP for the address, with the gateway port's MAC.
    gw_port = requests.get(
        f"{c.base}/ports?device_owner=network:router_gateway&network_id={ext['id']}", timeout=5
    ).json()["ports"]
    neigh = in_netns(seg.host, "ip", "neigh", "show", addr).stdout
    assert [p["mac_address"] for p in gw_port] == [neigh.split("lladdr ")[1].split()[0]], neigh

    # UDP: the echo comes back from the floating address and the external port.
    forward(c, fip, protocol="udp", internal_port_id=p0["id"], internal_port=7200,
            external_port=8053)  # fmt: skip
    eventually(lambda: probe(seg.host, addr, "udp", 8053) == f"echo x {addr}:8053", "UDP in")
    assert probe(seg.host, addr, "udp", 8054) == "failed"

    # A range, kept as it is (7300..7302 on both sides).
    forward(c, fip, protocol="tcp", internal_port_id=p0["id"],
            internal_port_range="7300:7302", external_port_range="7300:7302")  # fmt: skip
    for port in (7300, 7301, 7302):
        eventually(lambda port=port: probe(seg.host, addr, "tcp", port) == f"hi {port}",
                   f"TCP in on {port} of the range")  # fmt: skip
    assert probe(seg.host, addr, "tcp", 7303) == "failed"

    # The VM on hv2: the gateway chassis DNATs, sends it by tunnel, gets the answer back.
    forward(c, fip, protocol="tcp", internal_port_id=p2["id"], internal_port=7100,
            external_port=9022)  # fmt: skip
    eventually(lambda: probe(seg.host, addr, "tcp", 9022) == "hi 7100", "TCP in to hv2")
    eventually(lambda: probe(seg.host, addr, "udp", 8053) == f"echo x {addr}:8053", "UDP still")

    # Every server saw the host's own address, never a translated one.
    for ns in (ns0, ns2):
        seen = logs[ns].read_text().split("\n")
        assert {line.split()[2] for line in seen if line} == {UPSTREAM}, seen
    assert "tcp 7100" in logs[ns2].read_text()

    # Deleting the forwarding stops it; the others still work.
    resp = requests.delete(
        f"{c.base}/floatingips/{fip['id']}/port_forwardings/{web['id']}", timeout=10
    )
    assert resp.status_code == 204, resp.text
    eventually(lambda: probe(seg.host, addr, "tcp", 8022) == "failed", "forwarding gone")
    assert probe(seg.host, addr, "tcp", 9022) == "hi 7100"
    # Without SNAT on the router, the replies are un-DNATed all the same.
    c.put("routers", router["id"],
          external_gateway_info={"network_id": ext["id"], "enable_snat": False})  # fmt: skip
    gw = f"nat(src={gateway_ip(c, router)}"
    eventually(lambda: not any(gw in f for f in c.hv[0].flows()), "SNAT gone from hv0")
    eventually(lambda: probe(seg.host, addr, "udp", 8053) == f"echo x {addr}:8053", "no SNAT")
    assert probe(seg.host, addr, "tcp", 7301) == "hi 7301"


EXT6_CIDR = "2001:db8:ff::/64"
UPSTREAM6 = "2001:db8:ff::250"  # the host, the external IPv6 subnet's gateway
FAR6 = "2001:db8:99::7"  # another address of the host, off the subnet (the default route)
# Prints "ready", then the source address of each TCP connection to [::]:7100.
PEER_SERVER6 = PEER_SERVER.replace("socket.socket()", "socket.socket(socket.AF_INET6)").replace(
    '("0.0.0.0", 7100)', '("::", 7100)'
)


def v6_address(port: dict[str, Any]) -> str:
    return next(str(f["ip_address"]) for f in port["fixed_ips"] if ":" in f["ip_address"])


def test_ipv6_routed_through_the_gateway_both_ways(outside: tuple[Cluster, Segment]) -> None:
    """IPv6 through the router's gateway, routed without NAT, from a VM on the gateway
    chassis and one on a chassis without the physnet (redirected to the gateway chassis):
    the VMs reach the host (resolved by ND) and past it (the default route via the v6
    subnet's gateway), the host sees their own addresses and reaches them back through a
    route to the tenant prefix via the gateway's v6 address; IPv4 SNAT works alongside."""
    c, seg = outside
    ext, _ = external_network(c)
    c.post("subnets", network_id=ext["id"], cidr=EXT6_CIDR, ip_version=6,
           gateway_ip=UPSTREAM6, enable_dhcp=False)  # fmt: skip
    sh("ip", "-n", seg.host, "-6", "addr", "add", f"{UPSTREAM6}/64", "dev", "eth0", "nodad")
    sh("ip", "-n", seg.host, "-6", "addr", "add", f"{FAR6}/128", "dev", "lo")
    net, router = behind_router(c, "10.96.0.0/24", None)
    sub6 = c.post("subnets", network_id=net["id"], cidr="2001:db8:96::/64", ip_version=6)
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub6["id"])
    c.put("routers", router["id"], external_gateway_info={"network_id": ext["id"]})
    info = c.get("routers", router["id"])["external_gateway_info"]
    gw6 = [f["ip_address"] for f in info["external_fixed_ips"] if ":" in f["ip_address"]]
    assert len(gw6) == 1, info  # the gateway port has an address on the IPv6 subnet too
    sg = c.post("security-groups", name=unique("v6-"))
    for proto, ports in (
        ("ipv6-icmp", {}),
        ("tcp", {"port_range_min": 7100, "port_range_max": 7100}),
    ):
        c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
               ethertype="IPv6", protocol=proto, **ports)  # fmt: skip
    vms = []
    for i in (0, 2):  # the gateway chassis; a chassis without the physnet
        port, ns = c.hv[i].vm(net, f"vm6-{i}", security_groups=[sg["id"]])
        vm6 = v6_address(port)
        sh("ip", "-n", ns, "-6", "addr", "add", f"{vm6}/64", "dev", "eth0", "nodad")
        # (replace: the router's RA may have given it a default route via its
        # link-local address already, as Neutron's radvd does for a subnet without modes)
        sh("ip", "-n", ns, "-6", "route", "replace", "default", "via", sub6["gateway_ip"])
        vms.append((ns, vm6))
    # The host knows no way to the tenant prefix yet: the VMs are out of its reach.
    assert not pings(seg.host, vms[0][1], "-6")
    sh("ip", "-n", seg.host, "-6", "route", "add", "2001:db8:96::/64", "via", gw6[0])

    for ns, vm6 in vms:
        eventually(lambda ns=ns: pings(ns, UPSTREAM6, "-6"), "the VM pings the host", timeout=15)
        eventually(lambda ns=ns: pings(ns, FAR6, "-6"), "past the upstream", timeout=10)
        eventually(lambda vm6=vm6: pings(seg.host, vm6, "-6"), "the host pings the VM", timeout=10)
        eventually(lambda ns=ns: pings(ns, UPSTREAM), "IPv4 SNAT alongside", timeout=15)
    out = ping(seg.host, gw6[0], "-6", count=3)  # the gateway's own v6 address answers
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout + c.logs()
    neigh = in_netns(seg.host, "ip", "-6", "neigh", "show", gw6[0]).stdout
    assert "lladdr" in neigh, neigh  # answered by ND, from the gateway chassis

    # TCP both ways, no NAT: the host sees the VMs' own addresses.
    server = c.hv[0].background(seg.host, PY, "-c", PEER_SERVER6)
    assert sources(server, 1) == ["ready"]
    for ns, _ in vms:
        assert connect(ns, UPSTREAM6) == "hi"
        assert connect(ns, FAR6) == "hi"
    assert sources(server, 4) == [vms[0][1]] * 2 + [vms[1][1]] * 2
    for i, (ns, vm6) in enumerate(vms):
        vm_server = c.hv[2 * i].background(ns, PY, "-c", PEER_SERVER6)
        assert sources(vm_server, 1) == ["ready"]
        assert connect(seg.host, vm6) == "hi"
        assert sources(vm_server, 1) == [UPSTREAM6]

    # The host's MAC is learned like an ARP sender's; replaced, the refresh (an NS probe
    # each MAC_BINDING_REFRESH) follows it and the VMs reach the host again.
    store = EtcdStore(c.etcd_endpoints)
    try:
        key = mac_binding_key(ext["id"], UPSTREAM6)

        def bound() -> str:
            kv = store.get(key)
            return str(json.loads(kv.value)["mac"]) if kv is not None else ""

        host_mac = in_netns(seg.host, "cat", "/sys/class/net/eth0/address").stdout.strip()
        assert bound() == host_mac
        new = "02:00:5e:00:66:01"
        sh("ip", "-n", seg.host, "link", "set", "eth0", "address", new)
        eventually(lambda: bound() == new, "the IPv6 binding follows the new MAC", timeout=15)
        for ns, _ in vms:
            eventually(lambda ns=ns: pings(ns, FAR6, "-6"), "out to the new MAC", timeout=10)
    finally:
        store.close()


def test_ipv6_packet_too_big_on_the_gateway_leg(outside: tuple[Cluster, Segment]) -> None:
    """Packet too big through the gateway, both ways: a VM sending more than the external
    network's MTU (1300, set through the API) gets it from its router's address, on the
    gateway chassis and on a chassis without the physnet (checked there, before the
    redirect); the host sending more than the tenant network's MTU gets it from the
    gateway's address on the physical network. Each sender learns the path MTU."""
    c, seg = outside
    ext, _ = external_network(c)
    c.post("subnets", network_id=ext["id"], cidr=EXT6_CIDR, ip_version=6,
           gateway_ip=UPSTREAM6, enable_dhcp=False)  # fmt: skip
    sh("ip", "-n", seg.host, "-6", "addr", "add", f"{UPSTREAM6}/64", "dev", "eth0", "nodad")
    net, router = behind_router(c, "10.97.0.0/24", None)
    sub6 = c.post("subnets", network_id=net["id"], cidr="2001:db8:97::/64", ip_version=6)
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub6["id"])
    c.put("routers", router["id"], external_gateway_info={"network_id": ext["id"]})
    info = c.get("routers", router["id"])["external_gateway_info"]
    gw6 = next(f["ip_address"] for f in info["external_fixed_ips"] if ":" in f["ip_address"])
    sh("ip", "-n", seg.host, "-6", "route", "add", "2001:db8:97::/64", "via", gw6)
    sg = c.post("security-groups", name=unique("v6-"))
    c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
           ethertype="IPv6", protocol="ipv6-icmp")  # fmt: skip
    tenant_mtu = int(net["mtu"])
    vms = []
    for i in (0, 2):  # the gateway chassis; a chassis without the physnet
        port, ns = c.hv[i].vm(net, f"vm6-{i}", security_groups=[sg["id"]])
        vm6 = v6_address(port)
        sh("ip", "-n", ns, "-6", "addr", "add", f"{vm6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "-6", "route", "replace", "default", "via", sub6["gateway_ip"])
        vms.append((ns, vm6))
    for ns, _ in vms:
        eventually(lambda ns=ns: pings(ns, UPSTREAM6, "-6"), "the VM pings the host", timeout=15)

    c.put("networks", ext["id"], mtu=1300)
    fits = ("-6", "-s", str(1300 - 48), "-M", "do")
    big = ("-6", "-s", str(1300 - 48 + 1), "-M", "do")
    for ns, _ in vms:
        # 1300 bytes of IPv6 fit; the router is told of the new MTU by the API
        eventually(lambda ns=ns: pings(ns, UPSTREAM6, *fits), "at the MTU", timeout=10)

        def too_big(ns: str = ns) -> bool:
            out = ping(ns, UPSTREAM6, *big, count=1)
            return f"From {sub6['gateway_ip']} icmp_seq=1 Packet too big: mtu=1300" in out.stdout

        eventually(too_big, "packet too big from the router", timeout=10)
        route = in_netns(ns, "ip", "-6", "route", "get", UPSTREAM6).stdout
        assert "mtu 1300" in route, route + c.logs()

    # From outside, over the tenant network's MTU: from the gateway's address.
    vm0 = vms[0][1]
    assert pings(seg.host, vm0, "-6", "-s", str(tenant_mtu - 48), "-M", "do")
    out = ping(seg.host, vm0, "-6", "-s", str(tenant_mtu - 48 + 1), "-M", "do", count=1)
    assert f"From {gw6} icmp_seq=1 Packet too big: mtu={tenant_mtu}" in out.stdout, (
        out.stdout + out.stderr + c.logs()
    )
    route = in_netns(seg.host, "ip", "-6", "route", "get", vm0).stdout
    assert f"mtu {tenant_mtu}" in route, route
