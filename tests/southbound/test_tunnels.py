"""The chassis's tunnel setup on a real OVS: idempotent, at the numbers apps rely on."""

from __future__ import annotations

import subprocess

import pytest

from tests.southbound.conftest import in_netns, unique
from wyvern.ir.ofports import TUNNEL_OFPORTS
from wyvern.southbound.ovs import OvsInstance
from wyvern.southbound.tunnels import (
    BFD_BRIDGE,
    BFD_DST_PORTS,
    BfdSessions,
    bfd_port_name,
    ensure_tunnel_ports,
    ensure_underlay,
    underlay_mac,
)


@pytest.mark.system
def test_tunnel_ports_and_underlay_are_set_up_once(ovs: OvsInstance) -> None:
    assert ovs.netns is not None
    nic = unique("wt")
    subprocess.run(
        ["ip", "-n", ovs.netns, "link", "add", nic, "type", "veth", "peer", "name", unique("wt")],
        check=True,
    )
    for _ in range(2):  # an agent restart changes nothing
        ensure_tunnel_ports(ovs, "br-int", ("geneve", "vxlan"))
        ensure_underlay(ovs, "br-phy", nic, "172.31.9.1", 24)
    for encap, ofport in TUNNEL_OFPORTS.items():
        name = f"wy-{encap}"
        assert ovs.vsctl("get", "Interface", name, "ofport").strip() == str(ofport)
        assert ovs.vsctl("get", "Interface", name, "type").strip() == encap
        options = ovs.vsctl("get", "Interface", name, "options")
        assert "key=flow" in options and "remote_ip=flow" in options
    tlv = ovs.ofctl("-O", "OpenFlow14", "dump-tlv-map", "br-int")
    assert tlv.count("tun_metadata0") == 1 and "0xffff" in tlv and " 8 " in f" {tlv} "
    addrs = in_netns(ovs.netns, "ip", "-o", "addr", "show", "dev", "br-phy").stdout
    assert addrs.count("172.31.9.1/24") == 1
    link = in_netns(ovs.netns, "ip", "link", "show", "br-phy").stdout
    assert underlay_mac("172.31.9.1") in link and "UP" in link
    assert nic in ovs.vsctl("list-ports", "br-phy").split()


@pytest.mark.system
def test_bfd_sessions_follow_the_peers_and_go_on_a_clean_stop(ovs: OvsInstance) -> None:
    bfd = BfdSessions(ovs)
    bfd.ensure({})
    assert not ovs.bridge_exists(BFD_BRIDGE)  # a chassis alone gets no bridge
    bfd.ensure({"172.31.9.2": "geneve", "172.31.9.3": "vxlan"})
    ports = set(ovs.vsctl("list-ports", BFD_BRIDGE).split())
    assert ports == {bfd_port_name("172.31.9.2"), bfd_port_name("172.31.9.3")}
    name = bfd_port_name("172.31.9.3")
    assert ovs.vsctl("get", "Interface", name, "type").strip() == "vxlan"
    options = ovs.vsctl("get", "Interface", name, "options")
    assert 'remote_ip="172.31.9.3"' in options and f'dst_port="{BFD_DST_PORTS["vxlan"]}"' in options
    # No peer answers here: both sessions are known, and not forwarding.
    assert bfd.forwarding("172.31.9.2") is False and bfd.forwarding("172.31.9.3") is False
    assert bfd.forwarding("172.31.9.4") is None  # no session to it

    fresh = BfdSessions(ovs)  # an agent restarted: the sessions it finds are kept or gone
    fresh.ensure({"172.31.9.2": "geneve"})
    assert ovs.vsctl("list-ports", BFD_BRIDGE).split() == [bfd_port_name("172.31.9.2")]
    fresh.remove_all()
    assert not ovs.bridge_exists(BFD_BRIDGE)
