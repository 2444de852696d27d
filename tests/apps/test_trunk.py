"""Trunks through the simulator: one VIF, the parent's network untagged and each
subport's network on its VLAN, with each subport's own port security, security groups,
ARP responder and DHCP, and nothing crossing between VLANs."""

from __future__ import annotations

from typing import Any

from tests.apps import scenario as sc
from wyvern.apps.punts import PUNT_DHCP4
from wyvern.apps.trunk import TrunkApp
from wyvern.ir import VLAN_PRESENT
from wyvern.ir import packet as pk
from wyvern.model.view import LocalView

MAC_P, MAC_S1, MAC_S2, MAC_A, MAC_B, MAC_C = (f"fa:16:3e:00:00:0{c}" for c in "123abc")
BCAST = "ff:ff:ff:ff:ff:ff"
# ofports: the parent's VIF, each subport's patch pair (its own end, the trunk's end),
# and a VM on each network
PARENT, S1, S1_TRUNK, S2, S2_TRUNK, A, B, C = 1, 2, 3, 4, 8, 5, 6, 7


def trunk_view(*, sub2: bool = True, groups: bool = False) -> LocalView:
    nets = [sc.network("n0", key=10), sc.network("n1", key=11), sc.network("n2", key=12)]
    subnets = [
        sc.subnet("sn0", "n0", "10.0.0.0/24"),
        sc.subnet("sn1", "n1", "10.1.0.0/24"),
        sc.subnet("sn2", "n2", "10.2.0.0/24"),
    ]
    subs: list[list[Any]] = [["s1", 101]] + ([["s2", 102]] if sub2 else [])
    extra: dict[str, Any] = {"security_groups": ["web"]} if groups else {}
    ports = [
        sc.port(
            "p", "n0", key=1, mac=MAC_P, ips=["10.0.0.5"], _trunk={"id": "t", "subports": subs}
        ),
        sc.port(
            "s1",
            "n1",
            key=1,
            mac=MAC_S1,
            ips=["10.1.0.5"],
            _subport={"trunk_id": "t", "parent_id": "p", "vlan": 101},
            **extra,
        ),
        sc.port("a", "n1", key=2, mac=MAC_A, ips=["10.1.0.6"]),
        sc.port("b", "n2", key=2, mac=MAC_B, ips=["10.2.0.6"]),
        sc.port("c", "n0", key=2, mac=MAC_C, ips=["10.0.0.6"]),
    ]
    if sub2:
        ports.append(
            sc.port(
                "s2",
                "n2",
                key=1,
                mac=MAC_S2,
                ips=["10.2.0.5"],
                _subport={"trunk_id": "t", "parent_id": "p", "vlan": 102},
            )
        )
    view = sc.build_view(
        networks=nets,
        subnets=subnets,
        ports=ports,
        security_groups=[sc.security_group("web")] if groups else [],
        rules=[
            sc.rule("r1", "web", "ingress", protocol="tcp", port_range_min=80, port_range_max=80)
        ]
        if groups
        else [],
        local={"p": PARENT, "a": A, "b": B, "c": C},
    )
    sc.bind(view, "s1", S1, S1_TRUNK)
    if sub2:
        sc.bind(view, "s2", S2, S2_TRUNK)
    return view


def test_a_subports_vlan_reaches_its_network_untagged_and_comes_back_tagged() -> None:
    s = sc.Scenario(trunk_view())
    out = s.outcome(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.5", "10.1.0.6", vlan=101))
    assert out.ports == [A], out.trace.format()
    assert out.packets[A]["vlan_vid"] == 0
    assert "trunk" in out.trace.stages()
    back = s.outcome(pk.icmp_echo(A, MAC_A, MAC_S1, "10.1.0.6", "10.1.0.5", reply=True))
    assert back.ports == [PARENT], back.trace.format()
    assert back.packets[PARENT]["vlan_vid"] == VLAN_PRESENT | 101
    # the second VLAN, to its own network
    out = s.outcome(pk.icmp_echo(PARENT, MAC_S2, MAC_B, "10.2.0.5", "10.2.0.6", vlan=102))
    assert out.ports == [B] and out.packets[B]["vlan_vid"] == 0
    back = s.outcome(pk.icmp_echo(B, MAC_B, MAC_S2, "10.2.0.6", "10.2.0.5", reply=True))
    assert back.packets[PARENT]["vlan_vid"] == VLAN_PRESENT | 102


def test_untagged_frames_are_the_parents() -> None:
    s = sc.Scenario(trunk_view())
    out = s.outcome(pk.icmp_echo(PARENT, MAC_P, MAC_C, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [C] and out.packets[C]["vlan_vid"] == 0
    back = s.outcome(pk.icmp_echo(C, MAC_C, MAC_P, "10.0.0.6", "10.0.0.5", reply=True))
    assert back.ports == [PARENT] and back.packets[PARENT]["vlan_vid"] == 0


def test_vlans_stay_apart() -> None:
    s = sc.Scenario(trunk_view())
    # the probe works on the right VLAN...
    assert s.outcome(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.5", "10.1.0.6", vlan=101)).ports
    # ...and the same frame on the other VLAN never reaches a (it is in n2: s2's port
    # security refuses s1's addresses there)
    wrong = s.outcome(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.5", "10.1.0.6", vlan=102))
    assert A not in wrong.ports and wrong.dropped, wrong.trace.format()
    # nor untagged (the parent's network has no a)
    untagged = s.outcome(pk.icmp_echo(PARENT, MAC_P, MAC_A, "10.0.0.5", "10.1.0.6"))
    assert A not in untagged.ports
    # a VLAN of no subport is dropped at once
    none = s.run(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.5", "10.1.0.6", vlan=103))
    assert none.dropped and none.stages() == ["classification", "trunk"], none.format()
    # a's broadcast reaches the VIF on VLAN 101 only
    flood = s.outcome(pk.arp(A, MAC_A, "10.1.0.6", "10.1.0.99"))
    assert flood.ports == [PARENT], flood.trace.format()
    assert flood.packets[PARENT]["vlan_vid"] == VLAN_PRESENT | 101


def test_port_security_arp_and_dhcp_per_subport() -> None:
    s = sc.Scenario(trunk_view())
    ok = s.outcome(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.5", "10.1.0.6", vlan=101))
    assert ok.ports == [A]
    spoofed = s.outcome(pk.icmp_echo(PARENT, MAC_S1, MAC_A, "10.1.0.77", "10.1.0.6", vlan=101))
    assert spoofed.dropped, spoofed.trace.format()
    # the subport's ARP is answered on its own VLAN
    arp = s.outcome(pk.arp(PARENT, MAC_S1, "10.1.0.5", "10.1.0.6", vlan=101))
    assert arp.ports == [PARENT], arp.trace.format()
    assert arp.packets[PARENT]["vlan_vid"] == VLAN_PRESENT | 101
    assert arp.packets[PARENT]["arp_sha"] == int(MAC_A.replace(":", ""), 16)
    # DHCP is punted as the subport's (through its own meter)
    discover = pk.udp(PARENT, MAC_S2, BCAST, "0.0.0.0", "255.255.255.255", 68, 67, vlan=102)
    trace = s.run(discover)
    assert [p.userdata for p in trace.punts] == [bytes([PUNT_DHCP4])], trace.format()
    assert trace.punts[0].packet["in_port"] == S2


def test_security_groups_per_subport() -> None:
    s = sc.Scenario(trunk_view(groups=True), apps=sc.default_apps())
    http = pk.tcp(A, MAC_A, MAC_S1, "10.1.0.6", "10.1.0.5", 40000, 80)
    out = s.outcome(http)
    assert out.ports == [PARENT], out.trace.format()
    assert out.packets[PARENT]["vlan_vid"] == VLAN_PRESENT | 101
    ssh = s.outcome(pk.tcp(A, MAC_A, MAC_S1, "10.1.0.6", "10.1.0.5", 40001, 22))
    assert ssh.dropped, ssh.trace.format()
    # s2 has no groups: open
    s2 = s.outcome(pk.tcp(B, MAC_B, MAC_S2, "10.2.0.6", "10.2.0.5", 40002, 22))
    assert s2.ports == [PARENT]


def test_a_removed_subport_takes_its_vlan_away() -> None:
    s = sc.Scenario(trunk_view(sub2=True))
    assert s.outcome(pk.icmp_echo(PARENT, MAC_S2, MAC_B, "10.2.0.5", "10.2.0.6", vlan=102)).ports
    s = sc.Scenario(trunk_view(sub2=False))
    gone = s.run(pk.icmp_echo(PARENT, MAC_S2, MAC_B, "10.2.0.5", "10.2.0.6", vlan=102))
    assert gone.dropped, gone.format()
    # the parent unplugged: its subports get no trunk flows
    view = trunk_view()
    assert len(TrunkApp().flows(view, ("port", "s1"))) == 2
    sc.unbind(view, "p")
    assert TrunkApp().flows(view, ("port", "s1")) == []
