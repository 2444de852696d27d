"""Port security: anti-spoofing at ingress and egress, by packet outcome."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.apps import scenario as sc
from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.punts import PUNT_ND_NS
from wyvern.ir import ETH_TYPE_IPV6, IPPROTO_ICMPV6
from wyvern.ir import packet as pk
from wyvern.model.view import Binding, LocalView

MAC_A, MAC_B, MAC_C = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
VIP_MAC = "fa:16:3e:00:00:ee"


def view(**a_extra: Any) -> LocalView:
    return sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("s6", "n1", "2001:db8::/64"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5", "2001:db8::5"], **a_extra),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6", "2001:db8::6"]),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=["10.0.0.7"], port_security_enabled=False),
        ],
        local={"a": 1, "b": 2, "c": 3},
    )


def run(v: LocalView, packet: pk.Packet) -> sc.Outcome:
    return sc.Scenario(v, apps=sc.l2_apps()).outcome(packet)


def test_legitimate_traffic_passes() -> None:
    v = view()
    assert run(v, pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).ports == [2]
    assert run(v, pk.udp(1, MAC_A, MAC_B, "2001:db8::5", "2001:db8::6", 5000, 53)).ports == [2]
    lla = str(eui64_link_local(MAC_A))
    assert run(v, pk.icmp_echo(1, MAC_A, MAC_B, lla, "2001:db8::6")).ports == [2]


def test_eui64_link_local() -> None:
    assert eui64_link_local("52:54:00:12:34:56") == ipaddress.IPv6Address("fe80::5054:ff:fe12:3456")


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.99", "10.0.0.6"), id="spoofed-ip"),
        pytest.param(pk.icmp_echo(1, MAC_C, MAC_B, "10.0.0.5", "10.0.0.6"), id="spoofed-mac"),
        pytest.param(
            pk.udp(1, MAC_A, MAC_B, "2001:db8::99", "2001:db8::6", 1, 2), id="spoofed-ipv6"
        ),
        pytest.param(pk.arp(1, MAC_A, "10.0.0.6", "10.0.0.7"), id="arp-spoofed-spa"),
        pytest.param(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.7", sha=MAC_B), id="arp-spoofed-sha"),
        pytest.param(
            pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.6", op=2, eth_dst=MAC_B, sha=MAC_C),
            id="arp-reply-spoofed-sha",
        ),
        pytest.param(
            pk.udp(1, MAC_A, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 1),
            id="from-0.0.0.0-not-dhcp",
        ),
        pytest.param(
            pk.packet(in_port=1, eth_src=MAC_A, eth_dst=MAC_B, eth_type=0x88CC), id="lldp"
        ),
    ],
)
def test_spoofing_is_dropped(packet: pk.Packet) -> None:
    out = run(view(), packet)
    assert out.dropped, out.trace.format()
    assert "port_security" in out.trace.stages()[-1]


def test_arp_with_the_port_s_own_addresses_passes() -> None:
    out = run(view(), pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert out.ports == [2, 3], out.trace.format()
    probe = pk.arp(1, MAC_A, "0.0.0.0", "10.0.0.5")  # RFC 5227 probe
    assert run(view(), probe).ports == [2, 3]


def test_dhcp_discover_from_unconfigured_port_passes_port_security() -> None:
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24", enable_dhcp=False)],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=["10.0.0.7"], port_security_enabled=False),
        ],
        local={"a": 1, "c": 3},
    )
    discover = pk.udp(1, MAC_A, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67)
    assert run(v, discover).ports == [3]  # no DHCP here: it floods like any broadcast


def test_allowed_address_pairs_ip_and_cidr_with_own_and_other_mac() -> None:
    v = view(
        allowed_address_pairs=[
            {"ip_address": "10.0.0.100"},
            {"ip_address": "192.168.0.0/24"},
            {"ip_address": "10.0.0.200", "mac_address": VIP_MAC},
        ]
    )
    ok = [
        pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.100", "10.0.0.6"),
        pk.icmp_echo(1, MAC_A, MAC_B, "192.168.0.77", "10.0.0.6"),
        pk.icmp_echo(1, VIP_MAC, MAC_B, "10.0.0.200", "10.0.0.6"),
        pk.arp(1, VIP_MAC, "10.0.0.200", "10.0.0.6", op=2, eth_dst=MAC_B),
    ]
    for p in ok:
        assert run(v, p).ports == [2], run(v, p).trace.format()
    bad = [
        pk.icmp_echo(1, MAC_A, MAC_B, "192.168.1.1", "10.0.0.6"),
        pk.icmp_echo(1, VIP_MAC, MAC_B, "10.0.0.5", "10.0.0.6"),  # pair MAC, port's IP
        pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.201", "10.0.0.6"),
    ]
    for p in bad:
        assert run(v, p).dropped
    # egress: the pair's addresses reach the port too
    assert run(v, pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.6", "10.0.0.100")).ports == [1]
    # a pair MAC is not a port MAC for L2 (unknown unicast: flooded), yet a accepts it
    assert run(v, pk.icmp_echo(2, MAC_B, VIP_MAC, "10.0.0.6", "10.0.0.200")).ports == [1, 3]


def test_port_security_disabled_passes_everything() -> None:
    v = view()
    assert run(v, pk.icmp_echo(3, MAC_B, MAC_A, "1.2.3.4", "10.0.0.5")).ports == [1]
    lldp = pk.packet(in_port=3, eth_src=MAC_B, eth_dst=MAC_A, eth_type=0x88CC)
    assert run(v, lldp).ports == [1]
    # and it receives anything addressed to its MAC
    assert run(v, pk.icmp_echo(1, MAC_A, MAC_C, "10.0.0.5", "172.16.0.1")).ports == [3]


def test_egress_port_security() -> None:
    v = view()
    # to b's MAC but another IP: dropped at b's egress
    out = run(v, pk.icmp_echo(3, MAC_C, MAC_B, "10.0.0.7", "10.0.0.99"))
    assert out.dropped and out.trace.stages()[-1] == "port_security_egress"
    # broadcast and multicast IPv4 reach b
    bcast = pk.udp(3, MAC_C, "ff:ff:ff:ff:ff:ff", "10.0.0.7", "255.255.255.255", 1, 2)
    assert run(v, bcast).ports == [1, 2]
    mcast = pk.udp(3, MAC_C, "01:00:5e:00:00:fb", "10.0.0.7", "224.0.0.251", 5353, 5353)
    assert run(v, mcast).ports == [1, 2]


def test_ipv6_neighbour_discovery() -> None:
    v = view()
    ns = pk.nd_solicit(1, MAC_A, "2001:db8::5", "2001:db8::6")
    assert run(v, ns).punts == [bytes([PUNT_ND_NS])]  # passes, to the ND responder
    unknown = pk.nd_solicit(1, MAC_A, "2001:db8::5", "2001:db8::77")
    assert run(v, unknown).ports == [2, 3]
    bad_sll = pk.nd_solicit(1, MAC_A, "2001:db8::5", "2001:db8::6")
    bad_sll["nd_sll"] = int(MAC_C.replace(":", ""), 16)
    assert run(v, bad_sll).dropped
    dad = pk.nd_solicit(1, MAC_A, "::", "2001:db8::5")
    dad["nd_sll"] = 0
    assert run(v, dad).ports == [2, 3]

    def na(target: str, tll: str) -> pk.Packet:
        return pk.packet(
            in_port=1,
            eth_src=MAC_A,
            eth_dst=MAC_B,
            eth_type=ETH_TYPE_IPV6,
            ip_proto=IPPROTO_ICMPV6,
            ipv6_src="2001:db8::5",
            ipv6_dst="2001:db8::6",
            nw_ttl=255,
            icmpv6_type=136,
            nd_target=target,
            nd_tll=tll,
        )

    assert run(v, na("2001:db8::5", MAC_A)).ports == [2]
    assert run(v, na("2001:db8::6", MAC_A)).dropped  # claims b's address
    assert run(v, na("2001:db8::5", MAC_C)).dropped  # wrong link-layer address


# ---- the shared (per-stage) flows: shape-only allows still check the port's MAC


def _mld_report(in_port: int, eth_src: str) -> pk.Packet:
    return pk.packet(
        in_port=in_port,
        eth_src=eth_src,
        eth_dst="33:33:00:00:00:16",
        eth_type=ETH_TYPE_IPV6,
        ip_proto=IPPROTO_ICMPV6,
        ipv6_src="::",
        ipv6_dst="ff02::16",
        nw_ttl=1,
        icmpv6_type=143,
    )


def test_shape_only_allows_check_the_source_mac() -> None:
    v = view()
    discover = pk.udp(1, MAC_A, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67)
    assert not run(v, discover).dropped
    spoofed = pk.udp(1, VIP_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67)
    out = run(v, spoofed)
    assert out.dropped and out.trace.stages()[-1] == "port_security_l2", out.trace.format()
    dad = pk.nd_solicit(1, MAC_A, "::", "2001:db8::5")
    dad["nd_sll"] = 0
    assert not run(v, dad).dropped
    dad_spoofed = pk.nd_solicit(1, VIP_MAC, "::", "2001:db8::5")
    dad_spoofed["nd_sll"] = 0
    assert run(v, dad_spoofed).dropped
    dad_with_sll = pk.nd_solicit(1, MAC_A, "::", "2001:db8::5")  # DAD carries no sll
    assert run(v, dad_with_sll).dropped
    assert run(v, _mld_report(1, MAC_A)).ports == [2, 3]
    assert run(v, _mld_report(1, VIP_MAC)).dropped


def test_neighbour_discovery_from_the_link_local_address() -> None:
    v = view()
    lla = str(eui64_link_local(MAC_A))
    ns = pk.nd_solicit(1, MAC_A, lla, "2001:db8::77")
    assert run(v, ns).ports == [2, 3]
    ns["nd_sll"] = 0  # no source link-layer option
    assert run(v, ns).ports == [2, 3]
    ns["nd_sll"] = int(MAC_B.replace(":", ""), 16)
    out = run(v, ns)
    assert out.dropped and out.trace.stages()[-1] == "port_security_nd"
    na = pk.packet(
        in_port=1,
        eth_src=MAC_A,
        eth_dst=MAC_B,
        eth_type=ETH_TYPE_IPV6,
        ip_proto=IPPROTO_ICMPV6,
        ipv6_src=lla,
        ipv6_dst="2001:db8::6",
        nw_ttl=255,
        icmpv6_type=136,
        nd_target=lla,
        nd_tll=0,
    )
    assert run(v, na).ports == [2]
    na["nd_target"] = int(ipaddress.IPv6Address(eui64_link_local(MAC_B)))
    assert run(v, na).dropped  # claims b's link-local address


def test_pair_mac_with_ipv6_only_sends_no_ipv4() -> None:
    v = view(allowed_address_pairs=[{"ip_address": "2001:db8::100", "mac_address": VIP_MAC}])
    ok = pk.udp(1, VIP_MAC, MAC_B, "2001:db8::100", "2001:db8::6", 1, 2)
    assert run(v, ok).ports == [2]
    discover = pk.udp(1, VIP_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67)
    assert run(v, discover).dropped
    assert run(v, pk.arp(1, VIP_MAC, "0.0.0.0", "10.0.0.5")).dropped  # no probe either
    # the port's own MAC still may
    discover = pk.udp(1, MAC_A, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67)
    assert not run(v, discover).dropped


def test_port_without_addresses_is_checked_at_l2_only() -> None:
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"]),
        ],
        local={"a": 1, "b": 2},
    )
    assert run(v, pk.icmp_echo(1, MAC_A, MAC_B, "192.168.7.7", "10.0.0.6")).ports == [2]
    assert run(v, pk.arp(1, MAC_A, "192.168.7.7", "10.0.0.99", sha=MAC_C)).ports == [2]
    lldp = pk.packet(in_port=1, eth_src=MAC_A, eth_dst=MAC_B, eth_type=0x88CC)
    assert run(v, lldp).ports == [2]
    assert run(v, pk.icmp_echo(1, MAC_C, MAC_B, "192.168.7.7", "10.0.0.6")).dropped
    # and it receives anything sent to its MAC
    assert run(v, pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.6", "172.16.0.1")).ports == [1]


def test_egress_broadcast_ip_and_non_ip_need_the_port_s_mac() -> None:
    v = view()
    # a DHCP-style reply: unicast to b's MAC, broadcast IP destination
    reply = pk.udp(3, MAC_C, MAC_B, "10.0.0.7", "255.255.255.255", 67, 68)
    assert run(v, reply).ports == [2]
    lldp = pk.packet(in_port=3, eth_src=MAC_C, eth_dst=MAC_B, eth_type=0x88CC)
    assert run(v, lldp).ports == [2]
    # unknown unicast is flooded; the secured ports a and b do not take it
    unknown = "fa:16:3e:77:77:77"
    for p in (
        pk.udp(3, MAC_C, unknown, "10.0.0.7", "255.255.255.255", 67, 68),
        pk.udp(3, MAC_C, unknown, "10.0.0.7", "10.0.0.6", 1, 2),
        pk.packet(in_port=3, eth_src=MAC_C, eth_dst=unknown, eth_type=0x88CC),
    ):
        assert run(v, p).dropped, run(v, p).trace.format()
    # IPv6 to b's MAC: its addresses and multicast only
    assert run(v, pk.udp(3, MAC_C, MAC_B, "2001:db8::7", "2001:db8::6", 1, 2)).ports == [2]
    assert run(v, pk.udp(3, MAC_C, MAC_B, "2001:db8::7", "ff02::1", 1, 2)).ports == [2]
    assert run(v, pk.udp(3, MAC_C, MAC_B, "2001:db8::7", "2001:db8::99", 1, 2)).dropped


def test_a_port_costs_few_flows() -> None:
    """Per (MAC, address) checks only; everything port-independent is shared."""
    from wyvern.apps.port_security import PortSecurity

    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"])],
        local={"a": 1},
    )
    assert len(PortSecurity().flows(v, ("port", "a"))) == 11


@pytest.mark.system
def test_ovs_ofctl_accepts_every_port_security_flow(tmp_path: Path) -> None:
    from wyvern.apps.port_security import PortSecurity
    from wyvern.ir.render import render_flow

    v = view(
        allowed_address_pairs=[
            {"ip_address": "10.0.0.100"},
            {"ip_address": "192.168.0.0/24"},
            {"ip_address": "2001:db8:1::/64", "mac_address": VIP_MAC},
            {"ip_address": "10.0.0.200", "mac_address": VIP_MAC},
        ]
    )
    v.apply(
        "port",
        "d",
        sc.record_from_obj("port", sc.port("d", "n1", key=4, mac="fa:16:3e:00:00:0d", ips=[])),
    )
    v.apply("binding", "d", Binding("d", 4))
    app = PortSecurity()
    flows = [*app.global_flows()]
    for owner in app.owners(v):
        flows += app.flows(v, owner)
    assert {f.stage for f in flows} == {
        "port_security",
        "port_security_nd",
        "port_security_l2",
        "port_security_egress",
        "port_security_egress_l2",
    }
    path = tmp_path / "flows.txt"
    path.write_text("\n".join(render_flow(f) for f in flows) + "\n")
    proc = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow15", "parse-flows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "|WARN|" not in proc.stderr, proc.stdout + proc.stderr
    assert proc.stdout.count("OFPT_FLOW_MOD") == len(flows)


def test_address_pairs_for_a_whole_family() -> None:
    """0.0.0.0/0 and ::/0 pairs (routers, VRRP): any source of that family, own MAC."""
    v = view(
        allowed_address_pairs=[
            {"ip_address": "0.0.0.0/0"},
            {"ip_address": "::/0", "mac_address": VIP_MAC},
        ]
    )
    assert run(v, pk.icmp_echo(1, MAC_A, MAC_B, "172.16.9.9", "10.0.0.6")).ports == [2]
    assert run(v, pk.arp(1, MAC_A, "172.16.9.9", "10.0.0.99")).ports == [2, 3]
    assert run(v, pk.udp(1, VIP_MAC, MAC_B, "2001:db8::4242", "2001:db8::6", 1, 2)).ports == [2]
    assert run(v, pk.icmp_echo(1, VIP_MAC, MAC_B, "172.16.9.9", "10.0.0.6")).dropped
    assert run(v, pk.icmp_echo(1, MAC_C, MAC_B, "172.16.9.9", "10.0.0.6")).dropped
    # and the port receives any IPv4 destination on its MAC
    assert run(v, pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.6", "172.16.9.9")).ports == [1]


def test_router_advertisements_from_a_vm_are_dropped() -> None:
    """Only the router interfaces advertise (from the agent): a VM's RA, which would take
    its neighbours' default route, is dropped at port security, as Neutron drops it;
    the same VM's other ICMPv6 to all-nodes gets through, and a port without port
    security (a VM acting as a router) may advertise."""
    v = view()
    lla = str(eui64_link_local(MAC_A))
    echo = pk.icmp_echo(1, MAC_A, "33:33:00:00:00:01", lla, "ff02::1")
    assert run(v, echo).ports == [2, 3]  # the same source, the same group: delivered
    ra = pk.router_advert(1, MAC_A, lla)
    out = run(v, ra)
    assert out.dropped and out.trace.stages()[-1] == "port_security_nd", out.trace.format()
    assert run(v, pk.router_advert(1, MAC_A, "2001:db8::5")).dropped  # from its global one
    assert run(v, pk.router_advert(3, MAC_C, str(eui64_link_local(MAC_C)))).ports == [1, 2]
