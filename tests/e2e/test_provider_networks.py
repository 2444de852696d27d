"""Provider networks for real: VMs on a VLAN and on a flat network reach a host on the
physical segment, and each other across chassis through it, never through a tunnel.

Two chassis of the multi-chassis harness (tests/e2e/multichassis.py), each with the
bridge mapping physnet1 → br-ex-<unique> (the agent creates the bridge and its patch to
br-int). The physical network is a "top-of-rack switch": an OVS of its own (NORMAL
forwarding, 802.1Q) in a namespace of its own, since this kernel has neither VLAN
subinterfaces (8021q) nor VLAN-filtering bridges nor tc. Each chassis's mapped bridge
holds one veth to a trunk port of it (added by the test, as an operator adds a NIC), and
a namespace acting as a host on the segment sits on an access port: `tag=<segmentation
id>` for the VLAN network (the switch tags and untags, so the frames between switch and
chassis are 802.1Q-tagged on the wire), no tag for the flat network.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import eventually, ip_of, ping, pings, tcp_transfer
from tests.southbound.conftest import in_netns, unique
from wyvern.ir.ofports import patch_ofports
from wyvern.southbound.ovs import OvsInstance, netns_exists

pytestmark = pytest.mark.system

PHYSNET = "physnet1"
TOR = "tor"  # the switch's bridge


def sh(*cmd: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{cmd}: {out.stderr}"


class Segment:
    """The physical network: a switch, and the host's access port on it."""

    def __init__(self, tor: OvsInstance, host: str, host_port: str) -> None:
        self.tor = tor
        self.host = host  # the host's namespace (its NIC is eth0)
        self.host_port = host_port  # the switch port the host is on

    def access(self, vlan: int | None) -> None:
        """Put the host on VLAN (None: untagged, VLAN 0)."""
        if vlan is None:
            self.tor.vsctl("clear", "Port", self.host_port, "tag")
        else:
            self.tor.vsctl("set", "Port", self.host_port, f"tag={vlan}")

    def address(self, cidr: str) -> str:
        addr = cidr.rsplit(".", 1)[0] + ".250"
        sh("ip", "-n", self.host, "addr", "add", f"{addr}/24", "dev", "eth0")
        return addr

    def veth_to(self, netns: str) -> tuple[str, str]:
        """A veth from a new switch port to NETNS: (its name there, the switch port)."""
        nic, peer = unique("wx"), unique("wt")
        assert self.tor.netns is not None
        sh("ip", "link", "add", nic, "netns", netns, "type", "veth", "peer", "name", peer,
           "netns", self.tor.netns)  # fmt: skip
        sh("ip", "-n", self.tor.netns, "link", "set", peer, "up")
        self.tor.vsctl("add-port", TOR, peer)
        return nic, peer


@pytest.fixture
def segment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Segment]]:
    """Two chassis mapping physnet1 to their br-ex, and a host, all on one switch."""
    system.require(request)
    host = unique("wvm-host-")
    tor = OvsInstance.start(netns=unique("wvm-tor-"))
    try:
        tor.vsctl("add-br", TOR, "--", "set", "Bridge", TOR, "datapath_type=netdev")
        sh("ip", "netns", "add", host)
        with cluster(tmp_path, 0) as c:
            for _ in range(2):
                bridge = unique("br-ex-")
                hv = c.add_chassis(env={"WYVERN_BRIDGE_MAPPINGS": json.dumps({PHYSNET: bridge})})
                attach_nic(hv, bridge, Segment(tor, host, ""))
                agents = requests.get(f"{c.base}/agents", timeout=5).json()["agents"]
                mine = [a for a in agents if a["configurations"]["chassis_name"] == hv.name]
                assert mine[0]["configurations"]["bridge_mappings"] == {PHYSNET: bridge}
            nic, host_port = Segment(tor, host, "").veth_to(host)
            sh("ip", "-n", host, "link", "set", nic, "name", "eth0")
            for dev in ("eth0", "lo"):
                sh("ip", "-n", host, "link", "set", dev, "up")
            assert in_netns(host, "ethtool", "-K", "eth0", "tx", "off").returncode == 0
            yield c, Segment(tor, host, host_port)
    finally:
        if netns_exists(host):
            subprocess.run(["ip", "netns", "del", host], check=False)
        tor.stop()


def attach_nic(hv: Hv, bridge: str, seg: Segment) -> None:
    """The operator's part: a NIC on the segment, in the chassis's mapped bridge."""
    # The agent made the bridge and its patch to br-int before it registered.
    ports = hv.ovs.vsctl("list-ports", bridge).split()
    assert [p for p in ports if p.startswith("wy-patch-")], ports
    assert hv.ovs.netns is not None
    nic, _ = seg.veth_to(hv.ovs.netns)
    sh("ip", "-n", hv.ovs.netns, "link", "set", nic, "up")
    hv.ovs.vsctl("add-port", bridge, nic)


def provider_network(c: Cluster, name: str, cidr: str, **provider: Any) -> dict[str, Any]:
    net = c.post("networks", name=name, **provider)
    prefix = cidr.rsplit(".", 1)[0]
    c.post(
        "subnets",
        network_id=net["id"],
        cidr=cidr,
        ip_version=4,
        allocation_pools=[{"start": f"{prefix}.10", "end": f"{prefix}.99"}],
    )
    return c.get("networks", net["id"])


def open_to(c: Cluster, cidr: str) -> list[str]:
    """A security group admitting everything from CIDR (the host is in no group)."""
    sg = c.post("security-groups", name=unique("seg-"))
    c.post(
        "security-group-rules",
        security_group_id=sg["id"],
        direction="ingress",
        ethertype="IPv4",
        remote_ip_prefix=cidr,
    )
    return [sg["id"]]


@pytest.mark.parametrize("network_type", ["vlan", "flat"])
def test_vms_reach_a_host_on_the_physical_segment_and_each_other_through_it(
    segment: tuple[Cluster, Segment], network_type: str
) -> None:
    c, seg = segment
    cidr = "10.71.0.0/24"
    attrs: dict[str, Any] = {
        "provider:network_type": network_type,
        "provider:physical_network": PHYSNET,
    }
    if network_type == "vlan":
        attrs["provider:segmentation_id"] = 171
    net = provider_network(c, network_type, cidr, **attrs)
    assert net["mtu"] == 1500
    seg.access(171 if network_type == "vlan" else None)
    host_ip = seg.address(cidr)
    sgs = open_to(c, cidr)
    p1, ns1 = c.hv[0].vm(net, "vm1", security_groups=sgs)
    p2, ns2 = c.hv[1].vm(net, "vm2", security_groups=sgs)

    # VM -> host on the segment (ARP answered by the host itself), and back.
    eventually(lambda: pings(ns1, host_ip), "vm1 pings the host", timeout=15)
    out = ping(seg.host, ip_of(p1), count=3)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout + c.logs()
    assert pings(ns2, host_ip), c.logs()
    # TCP (2 MB, full-size segments) both ways between a VM and the host.
    tcp_transfer(c.hv[0], seg.host, ns1, ip_of(p1))
    tcp_transfer(c.hv[1], ns2, seg.host, host_ip)

    # VM on chassis 0 <-> VM on chassis 1, through the physical network, not a tunnel.
    eventually(lambda: pings(ns1, ip_of(p2)), "vm1 pings vm2 across chassis", timeout=15)
    tcp_transfer(c.hv[1], ns1, ns2, ip_of(p2))
    dumps = [hv.ovs.appctl("dpctl/dump-flows") for hv in c.hv]
    assert not [d for d in dumps if "tnl_push" in d], dumps
    # `wyvern trace --ovs` on chassis 0 shows vm1 -> vm2 leave by the patch port.
    out = c.hv[0].wyvern("trace", "--ovs", "--from", "vm1", "--to", "vm2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"output:{patch_ofports([PHYSNET])[PHYSNET]}" in out.stdout, out.stdout
    assert ("push_vlan" in out.stdout) == (network_type == "vlan"), out.stdout
    # On the wire between chassis and switch the frames carry the VLAN (or none).
    if network_type == "vlan":
        assert all("push_vlan(vid=171" in d and "vlan(vid=171" in d for d in dumps), dumps
    else:
        assert not [d for d in dumps if "vlan(" in d], dumps


def test_a_vlan_network_hears_nothing_from_another_vlan(
    segment: tuple[Cluster, Segment],
) -> None:
    """The host has the VM's subnet: on VLAN 173, the network's, it is heard; moved to
    VLAN 172, its broadcasts reach the chassis tagged 172 and no VM."""
    c, seg = segment
    cidr = "10.73.0.0/24"
    net = provider_network(
        c,
        "v173",
        cidr,
        **{
            "provider:network_type": "vlan",
            "provider:physical_network": PHYSNET,
            "provider:segmentation_id": 173,
        },
    )
    p1, ns1 = c.hv[0].vm(net, "vm1", security_groups=open_to(c, cidr))
    seg.access(173)
    host_ip = seg.address(cidr)
    eventually(lambda: pings(seg.host, ip_of(p1)), "the host pings vm1 on VLAN 173", timeout=15)
    # A VM that hears an ARP request for itself learns the sender: vm1 learnt the host.
    assert host_ip in in_netns(ns1, "ip", "neigh", "show").stdout

    seg.access(172)
    for ns in (ns1, seg.host):
        assert in_netns(ns, "ip", "neigh", "flush", "all").returncode == 0
    assert not pings(seg.host, ip_of(p1))
    # vm1 heard no ARP request this time: it learnt nothing.
    assert host_ip not in in_netns(ns1, "ip", "neigh", "show").stdout
    # The chassis did receive them (tagged 172), and dropped them at classification.
    dump = c.hv[0].ovs.appctl("dpctl/dump-flows")
    assert "vlan(vid=172" in dump, dump
