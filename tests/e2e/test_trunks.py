"""Trunks on real OVS: one VIF carries the parent's network untagged and each subport's
network on its VLAN, proven with real ping, TCP and dhclient.

This kernel has no 8021q module, so the "VM" cannot make VLAN subinterfaces. Its VLAN
demultiplexer is a small OVS bridge of its own (on the chassis's ovs-vswitchd, NORMAL
forwarding): its trunk port is the VIF's far end (the parent's VLAN native and
untagged, the subports' VLANs tagged), and one access port per VLAN leads into a
namespace of its own, eth0 with the MAC of that VLAN's port. So each namespace is what
a guest's VLAN subinterface would be.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.dhcpclients import DHCLIENT_SCRIPT
from tests.e2e.conftest import Chassis
from tests.e2e.multichassis import Cluster, cluster
from tests.southbound.conftest import in_netns, unique
from wyvern.southbound.ovs import netns_exists

pytestmark = pytest.mark.system

NATIVE = 4000  # the VM bridge's VLAN for the parent's untagged frames


def ip_of(port: dict[str, Any]) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


class TrunkVm:
    """The guest: a VM bridge and a namespace per VLAN (0: the parent's, untagged)."""

    def __init__(self, c: Chassis, parent: dict[str, Any], vlans: dict[int, dict[str, Any]]):
        self.c = c
        self.tag = unique("")[:6]
        self.bridge = f"wvb{self.tag}"
        self.vif = f"wvt{self.tag}"  # br-int's end, the parent's iface-id
        self.ns: dict[int, str] = {}
        ovs, ovs_ns = c.ovs, c.ovs.netns or ""
        vm_end = f"wvv{self.tag}"
        trunks = ",".join(str(v) for v in [*sorted(v for v in vlans if v), NATIVE])
        ovs.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev")
        self._ip(ovs_ns, "link", "add", self.vif, "type", "veth", "peer", "name", vm_end)
        for dev in (self.vif, vm_end):
            self._ip(ovs_ns, "link", "set", dev, "up")
            subprocess.run(["ip", "netns", "exec", ovs_ns, "ethtool", "-K", dev, "tx", "off"],
                           capture_output=True, check=False)  # fmt: skip
        ovs.vsctl(
            "add-port", self.bridge, vm_end, "--", "set", "Port", vm_end,
            "vlan_mode=native-untagged", f"tag={NATIVE}", f"trunks=[{trunks}]",
        )  # fmt: skip
        for vlan, port in {0: parent, **vlans}.items():
            ns = unique("wve-trk-")
            self.ns[vlan] = ns
            subprocess.run(["ip", "netns", "add", ns], check=True)
            access = f"wva{self.tag}{vlan % 10000:04d}"[:15]
            self._ip(ovs_ns, "link", "add", access, "type", "veth", "peer", "name", "eth0",
                     "netns", ns)  # fmt: skip
            self._ip(ovs_ns, "link", "set", access, "up")
            self._ip(ns, "link", "set", "lo", "up")
            self._ip(ns, "link", "set", "eth0", "address", port["mac_address"], "mtu", "1400")
            in_netns(ns, "ethtool", "-K", "eth0", "tx", "off")
            self._ip(ns, "link", "set", "eth0", "up")
            ovs.vsctl("add-port", self.bridge, access, "--", "set", "Port", access,
                      f"tag={vlan or NATIVE}")  # fmt: skip
        # last: plugged into br-int as the parent's VIF
        ovs.vsctl("add-port", "br-int", self.vif, "--", "set", "Interface", self.vif,
                  f"external_ids:iface-id={parent['id']}")  # fmt: skip

    @staticmethod
    def _ip(ns: str, *args: str) -> None:
        cmd = ["ip", *(["-n", ns] if ns else []), *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def static(self, vlan: int, port: dict[str, Any], gateway: str | None = None) -> None:
        self._ip(self.ns[vlan], "addr", "add", f"{ip_of(port)}/24", "dev", "eth0")
        if gateway:
            self._ip(self.ns[vlan], "route", "add", "default", "via", gateway)

    def close(self) -> None:
        subprocess.run(
            ["ovs-vsctl", f"--db=unix:{self.c.ovs.db_sock}", "--if-exists", "del-port",
             "br-int", self.vif, "--", "--if-exists", "del-br", self.bridge],
            capture_output=True, check=False,
        )  # fmt: skip
        for ns in self.ns.values():
            if netns_exists(ns):
                subprocess.run(["ip", "netns", "del", ns], check=False)


def dhclient(c: Chassis, ns: str) -> dict[str, str]:
    """A real dhclient's lease in NS (applied: the address, then a default route)."""
    work = c.scratch_dir()
    (work / "dhclient.sh").write_text(DHCLIENT_SCRIPT.format(dir=work))
    (work / "dhclient.sh").chmod(0o755)
    (work / "dhclient.conf").write_text(
        "timeout 15;\nrequest subnet-mask, broadcast-address, routers, interface-mtu;\n"
    )
    out = in_netns(
        ns, "dhclient", "-1", "-v", "-cf", str(work / "dhclient.conf"),
        "-sf", str(work / "dhclient.sh"), "-pf", str(work / "dhclient.pid"),
        "-lf", str(work / "dhclient.leases"), "eth0", timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    env = {}
    for line in (work / "dhclient.BOUND").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value.strip("'\"")
    if env.get("new_routers"):
        in_netns(ns, "ip", "route", "replace", "default", "via", env["new_routers"].split()[0])
    return env


def ping(ns: str, ip: str, count: int = 2) -> subprocess.CompletedProcess[str]:
    return in_netns(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", ip)


TCP_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); total = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""
TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5001), timeout=10)
c.sendall(b"x" * 1_000_000); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def tcp(c: Chassis, client_ns: str, server_ns: str, ip: str) -> str:
    server = c.background(server_ns, sys.executable, "-c", TCP_SERVER)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    out = in_netns(client_ns, sys.executable, "-c", TCP_CLIENT, ip, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def heard(c: Chassis, ns: str, cmd_ns: str, cmd: list[str], what: str) -> bool:
    """Whether a capture in NS sees WHAT while CMD runs in CMD_NS."""
    cap = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-l", "-n", "-i", "eth0", "-c", "1", what],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # (tcpdump is listening)
        in_netns(cmd_ns, *cmd)
        try:
            out, _ = cap.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            return False
        return bool(out.strip())
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()


def test_trunk_vlans_ping_tcp_dhcp_isolation_routing_and_forced_delete(chassis: Chassis) -> None:
    c = chassis
    nets, subnets = [], []
    for i in range(3):
        net = c.post("networks", name=f"trk{i}", mtu=1400)
        nets.append(net)
        subnets.append(
            c.post("subnets", network_id=net["id"], cidr=f"10.6{i}.0.0/24", ip_version=4)
        )
    parent = c.post("ports", network_id=nets[0]["id"], name="parent")
    s1 = c.post("ports", network_id=nets[1]["id"], name="sub101")
    s2 = c.post("ports", network_id=nets[2]["id"], name="sub102")
    trunk = c.post(
        "trunks",
        port_id=parent["id"],
        sub_ports=[
            {"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 101},
            {"port_id": s2["id"], "segmentation_type": "vlan", "segmentation_id": 102},
        ],
    )
    # the other VMs, one per network
    (a, ns_a), (b, ns_b), (other, ns_c) = (
        c.vm(nets[1], "a"),
        c.vm(nets[2], "b"),
        c.vm(nets[0], "c"),
    )
    router = c.post("routers", name="trk")
    for sn in (subnets[0], subnets[2]):
        c.action("routers", router["id"], "add_router_interface", subnet_id=sn["id"])
    vm = TrunkVm(c, parent, {101: s1, 102: s2})
    try:
        for port in (parent, s1, s2):
            c.wait_active(port)
        shown = c.get("trunks", trunk["id"])
        assert shown["status"] == "ACTIVE", shown
        host = c.get("ports", parent["id"])["binding:host_id"]
        assert host and c.get("ports", s1["id"])["binding:host_id"] == host

        # the parent's network, untagged
        vm.static(0, parent)
        out = ping(vm.ns[0], ip_of(other))
        assert out.returncode == 0, out.stdout + c.agent_log()
        # DHCP per subport: each VLAN's dhclient gets its own subport's address
        lease1 = dhclient(c, vm.ns[101])
        assert lease1["new_ip_address"] == ip_of(s1)
        lease2 = dhclient(c, vm.ns[102])
        assert lease2["new_ip_address"] == ip_of(s2)
        assert lease2["new_routers"] == subnets[2]["gateway_ip"]
        # ping and TCP from each subport's network to a VM of it
        for vlan, peer, peer_ns in ((101, a, ns_a), (102, b, ns_b)):
            out = ping(vm.ns[vlan], ip_of(peer))
            assert out.returncode == 0, out.stdout + c.agent_log()
            assert tcp(c, vm.ns[vlan], peer_ns, ip_of(peer)) == "1000000"
        # routed: VLAN 102's network through the router to the parent's network's VM
        out = ping(vm.ns[102], ip_of(other))
        assert out.returncode == 0, out.stdout + c.agent_log()
        assert tcp(c, vm.ns[102], ns_c, ip_of(other)) == "1000000"

        # isolation: a's broadcast (ARP for an address nobody has) reaches VLAN 101's
        # guest (the probe works), never VLAN 102's nor the parent's
        arp = ["ping", "-c", "2", "-W", "1", "10.61.0.250"]  # (a's who-has: flooded)
        assert heard(c, vm.ns[101], ns_a, arp, "arp and host 10.61.0.250")
        assert not heard(c, vm.ns[102], ns_a, arp, "arp and host 10.61.0.250")
        assert not heard(c, vm.ns[0], ns_a, arp, "arp and host 10.61.0.250")

        # the subport leaves the trunk: its VLAN goes dark, the other one stays
        assert ping(vm.ns[101], ip_of(a)).returncode == 0
        c.action("trunks", trunk["id"], "remove_subports", sub_ports=[{"port_id": s1["id"]}])
        deadline = time.monotonic() + 10
        while ping(vm.ns[101], ip_of(a), count=1).returncode == 0:
            assert time.monotonic() < deadline, "VLAN 101 still forwards"
        assert ping(vm.ns[102], ip_of(b)).returncode == 0

        # forced delete of a subport: 409 without the option, gone with it
        resp = requests.delete(f"{c.base}/ports/{s2['id']}", timeout=5)
        assert resp.status_code == 409, resp.text
        resp = requests.delete(f"{c.base}/ports/{s2['id']}?force=true", timeout=5)
        assert resp.status_code == 204, resp.text
        assert c.get("trunks", trunk["id"])["sub_ports"] == []
        deadline = time.monotonic() + 10
        while ping(vm.ns[102], ip_of(b), count=1).returncode == 0:
            assert time.monotonic() < deadline, "VLAN 102 still forwards"
        assert ping(vm.ns[0], ip_of(other)).returncode == 0  # the parent is untouched
    finally:
        vm.close()


@pytest.fixture
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    system.require(request)
    with cluster(tmp_path, 2) as c:
        yield c


def test_a_subport_reaches_a_vm_on_another_chassis(two: Cluster) -> None:
    """Across a Geneve tunnel, on etcd (selective distribution: the trunk's chassis
    learns the subport's network from the subport's own binding)."""
    c = two
    hv0, hv1 = c.hv
    net0 = c.post("networks", name="trk-parent")
    c.post("subnets", network_id=net0["id"], cidr="10.63.0.0/24", ip_version=4)
    net1 = c.post("networks", name="trk-sub")
    c.post("subnets", network_id=net1["id"], cidr="10.64.0.0/24", ip_version=4)
    parent = c.post("ports", network_id=net0["id"], name="parent")
    sub = c.post("ports", network_id=net1["id"], name="sub")
    c.post(
        "trunks",
        port_id=parent["id"],
        sub_ports=[{"port_id": sub["id"], "segmentation_type": "vlan", "segmentation_id": 300}],
    )
    remote, remote_ns = hv1.vm(net1, "remote")
    vm = TrunkVm(hv0, parent, {300: sub})
    try:
        hv0.wait_active(parent)
        hv0.wait_active(sub, timeout=30)
        vm.static(300, sub)
        deadline = time.monotonic() + 15
        while ping(vm.ns[300], ip_of(remote), count=1).returncode != 0:
            assert time.monotonic() < deadline, c.logs()
        with hv1.capture(f"udp and dst host {hv1.tunnel_ip}") as crossed:
            assert ping(vm.ns[300], ip_of(remote)).returncode == 0
        assert [line for line in crossed if "ICMP echo request" in line], crossed
        assert tcp(hv1, vm.ns[300], remote_ns, ip_of(remote)) == "1000000"
        # the reply came back tagged: the guest's VLAN 300 namespace got it
        back = in_netns(remote_ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", ip_of(sub))
        assert back.returncode == 0, back.stdout + c.logs()
    finally:
        vm.close()
