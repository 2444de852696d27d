"""The reference simulator: OpenFlow table semantics, conntrack, groups, traces."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wyvern.ir import (
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    PORT_IN_PORT,
    VLAN_PRESENT,
    Action,
    Bucket,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    DecTtl,
    Flow,
    Goto,
    Group,
    GroupDef,
    IRError,
    Load,
    MatchValue,
    Move,
    Nat,
    Output,
    OutputReg,
    PopVlan,
    Resubmit,
    SetField,
    match,
    port_range,
    table,
)
from wyvern.ir import packet as pk
from wyvern.ir.cookies import AppName, CookieIndex, encode
from wyvern.ir.packet import Packet
from wyvern.ir.pipeline import StageName, stage, table_of
from wyvern.ir.simulator import Conntrack, Simulator, Trace

MAC_A, MAC_B, MAC_R = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:ff:01"
IP: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IP}


def flow(
    st_name: StageName,
    priority: int,
    m: Mapping[str, MatchValue] | None = None,
    actions: Sequence[Action] = (),
    obj: int | str = 1,
) -> Flow:
    owner: AppName = stage(st_name).owner
    return table(st_name).flow(
        priority=priority,
        match=match(**(m or {})),
        actions=actions,
        cookie=encode(owner, obj),
    )


def walk(*stages: StageName) -> list[Flow]:
    """Priority-0 pass-through flows along a path of stages (the pipeline defaults)."""
    return [
        table(a).flow(priority=0, cookie=encode("pipeline", i), actions=[Goto(b)])
        for i, (a, b) in enumerate(itertools.pairwise(stages))
    ]


def ports(trace: Trace) -> list[int]:
    return trace.output_ports


def tcp(in_port: int, src: str, dst: str, sport: int, dport: int, flags: str = "S") -> Packet:
    return pk.tcp(in_port, MAC_A, MAC_B, src, dst, sport, dport, flags)


# ------------------------------------------------------------------------- lookup


def test_highest_priority_wins_and_a_miss_drops() -> None:
    sim = Simulator(
        [
            flow("classification", 10, {"in_port": 1}, [Output(2)]),
            flow("classification", 20, {"in_port": 1, "eth_type": ETH_TYPE_IP}, [Output(3)]),
        ]
    )
    t = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    assert ports(t) == [3] and t.steps[0].note == ""  # a lower-priority match is no tie
    assert ports(sim.run(pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2"))) == [2]
    miss = sim.run(tcp(5, "10.0.0.1", "10.0.0.2", 1, 2))
    assert miss.dropped and miss.drops == ["no flow matched in table 0 (classification)"]


def test_masks_prefixes_and_port_ranges() -> None:
    flows = walk("classification", "port_security", "pre_acl", "acl")
    flows += [
        flow("port_security", 100, {"ipv4_src": "10.0.0.0/24"}, [Output(2)]),
        flow("port_security", 90, {"ipv4_src": "10.0.0.0/8"}, [Goto("pre_acl")]),
        flow("port_security", 80, {"eth_dst": "01:00:00:00:00:00/01:00:00:00:00:00"}, [Output(4)]),
    ]
    flows += [
        flow("acl", 10, {**IP, "ip_proto": 6, "tcp_dst": r}, [Output(5)])
        for r in port_range(1000, 1999)
    ]
    sim = Simulator(flows)
    assert ports(sim.run(tcp(1, "10.0.0.9", "10.0.0.2", 1, 2))) == [2]
    for dport, expect in ((999, []), (1000, [5]), (1500, [5]), (1999, [5]), (2000, [])):
        assert ports(sim.run(tcp(1, "10.7.0.9", "10.0.0.2", 1, dport))) == expect, dport
    bcast = pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2")
    assert ports(sim.run(bcast)) == [4]
    unicast = pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2", eth_dst=MAC_B)
    assert sim.run(unicast).dropped


def test_ambiguous_equal_priorities_are_noted() -> None:
    sim = Simulator(
        [
            flow("classification", 5, {"in_port": 1}, [Output(2)]),
            flow("classification", 5, {"eth_type": ETH_TYPE_ARP}, [Output(3)]),
        ]
    )
    t = sim.run(pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2"))
    assert ports(t) == [2] and "ambiguous: 2 flows" in t.steps[0].note


# ------------------------------------------------------------------------- actions


def test_goto_ends_the_list_resubmit_returns() -> None:
    sim = Simulator(
        [
            flow("classification", 10, {"in_port": 1}, [Resubmit("l2_lookup"), Output(7)]),
            flow("classification", 10, {"in_port": 2}, [Output(6), Goto("l2_lookup")]),
            flow("l2_lookup", 10, {}, [Output(8)]),
        ]
    )
    t = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    assert ports(t) == [8, 7]
    assert [(s.stage, s.depth) for s in t.steps] == [("classification", 0), ("l2_lookup", 1)]
    t = sim.run(tcp(2, "10.0.0.1", "10.0.0.2", 1, 2))
    assert ports(t) == [6, 8]
    assert [(s.stage, s.depth) for s in t.steps] == [("classification", 0), ("l2_lookup", 0)]


def test_registers_carry_across_tables() -> None:
    sim = Simulator(
        [
            flow(
                "classification",
                10,
                {"in_port": 1},
                [
                    Load("src_port_key", 0x55),
                    Load("flag_from_tunnel", 1),
                    Load("network_key", 9),
                    Goto("l2_lookup"),
                ],
            ),
            flow(
                "l2_lookup",
                10,
                {"flag_from_tunnel": 1, "network_key": 9},
                [Move("src_port_key", "dst_port_key"), Goto("output")],
            ),
            flow("output", 10, {"dst_port_key": 0x55}, [OutputReg("dst_port_key")]),
        ]
    )
    t = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    assert ports(t) == [0x55]
    out = t.outputs[0].packet
    assert out["reg14"] == out["reg15"] == 0x55 and out["reg10"] == 1 and out["metadata"] == 9
    assert t.packet["reg14"] == 0  # the trace keeps the packet as it came in


def test_flooding_outputs_several_times_but_not_back_to_the_input_port() -> None:
    flood: list[Action] = []
    for key in (1, 2, 3):
        flood += [Load("dst_port_key", key), Resubmit("output")]
    sim = Simulator(
        [
            flow("classification", 10, {}, [Goto("l2_lookup")]),
            flow("l2_lookup", 10, {"eth_dst": pk.BROADCAST}, flood),
            *[flow("output", 10, {"dst_port_key": k}, [Output(k)], obj=k) for k in (1, 2, 3)],
        ]
    )
    t = sim.run(pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2"))
    assert ports(t) == [2, 3]
    assert any("input port" in d for d in t.drops)


def test_in_port_output_needs_the_reserved_port() -> None:
    sim = Simulator([flow("classification", 10, {"in_port": 4}, [Output(PORT_IN_PORT)])])
    assert ports(sim.run(tcp(4, "10.0.0.1", "10.0.0.2", 1, 2))) == [4]


def test_set_field_and_move_rewrite_headers() -> None:
    sim = Simulator(
        [
            *walk("classification", "port_security", "pre_acl", "services"),
            flow(
                "services",
                100,
                {"arp_op": 1, "arp_tpa": "10.0.0.1"},
                [
                    Move("eth_src", "eth_dst"),
                    SetField("eth_src", MAC_R),
                    SetField("arp_op", 2),
                    Move("arp_sha", "arp_tha"),
                    SetField("arp_sha", MAC_R),
                    Move("arp_spa", "arp_tpa"),
                    SetField("arp_spa", "10.0.0.1"),
                    Output(PORT_IN_PORT),
                ],
            ),
        ]
    )
    t = sim.run(pk.arp(3, MAC_A, "10.0.0.7", "10.0.0.1"))
    assert ports(t) == [3]
    reply = t.outputs[0].packet
    assert reply == pk.arp(3, MAC_R, "10.0.0.1", "10.0.0.7", op=2, eth_dst=MAC_A, tha=MAC_A)


def test_dec_ttl() -> None:
    sim = Simulator(
        [
            *walk("classification", "l2_lookup", "router_input", "dnat", "routing"),
            flow("routing", 10, IP, [Output(2), DecTtl(), Output(3)]),
        ]
    )
    t = sim.run(pk.icmp_echo(1, MAC_A, MAC_R, "10.0.0.1", "10.0.1.1", ttl=64))
    assert ports(t) == [2, 3] and t.outputs[1].packet["nw_ttl"] == 63
    t = sim.run(pk.icmp_echo(1, MAC_A, MAC_R, "10.0.0.1", "10.0.1.1", ttl=1))
    assert ports(t) == [2]
    assert t.drops == [f"TTL expired (dec_ttl) at table {table_of('routing')} (routing)"]


def test_check_pkt_larger_compares_the_frame_length() -> None:
    """As OVS: the frame, Ethernet header included, over N sets the bit; a VLAN tag
    pushed or popped counts too."""
    ip6 = {"eth_type": ETH_TYPE_IPV6}
    sim = Simulator(
        [
            *walk("classification", "l2_lookup", "router_input", "dnat"),
            flow("dnat", 5, ip6, [Goto("routing")]),
            flow("routing", 10, ip6, [CheckPktLarger(1414, "flag_pkt_larger"), Goto("mtu_check")]),
            flow("mtu_check", 100, {**ip6, "flag_pkt_larger": 1}, [Output(9)]),
            flow("mtu_check", 1, ip6, [Output(2)]),
        ]
    )
    for ip_length, port in ((1400, 2), (1401, 9), (64, 2), (9000, 9)):
        p = pk.sized(pk.udp(1, MAC_A, MAC_R, "2001:db8::1", "2001:db8::2", 1, 2), ip_length)
        assert p.length == ip_length + 14
        assert ports(sim.run(p)) == [port], ip_length
    tagged = pk.sized(pk.udp(1, MAC_A, MAC_R, "2001:db8::1", "2001:db8::2", 1, 2, vlan=5), 1400)
    assert tagged.length == 1418  # (not popped here: 4 bytes more than the check allows)
    assert ports(sim.run(tagged)) == [9]
    popping = Simulator(
        [
            flow(
                "classification", 5, {"vlan_vid": VLAN_PRESENT | 5}, [PopVlan(), Goto("l2_lookup")]
            ),
            *walk("l2_lookup", "router_input", "dnat"),
            flow("dnat", 5, ip6, [Goto("routing")]),
            flow("routing", 10, ip6, [CheckPktLarger(1414, "flag_pkt_larger"), Goto("mtu_check")]),
            flow("mtu_check", 100, {**ip6, "flag_pkt_larger": 1}, [Output(9)]),
            flow("mtu_check", 1, ip6, [Output(2)]),
        ]
    )
    assert ports(popping.run(tagged)) == [2]
    with pytest.raises(IRError, match="one bit"):
        flow("routing", 10, ip6, [CheckPktLarger(1414, "network_key"), Goto("mtu_check")])
    with pytest.raises(IRError, match="not declared in its writes"):
        flow("mtu_check", 10, ip6, [CheckPktLarger(1414, "flag_pkt_larger")])
    with pytest.raises(IRError, match="does not fit"):
        CheckPktLarger(0x10000, "flag_pkt_larger")


def test_controller_punts_are_collected() -> None:
    sim = Simulator(
        [
            *walk("classification", "port_security", "pre_acl", "services"),
            flow(
                "services",
                100,
                {**IP, "ip_proto": 17, "udp_dst": 67},
                [Controller(userdata=b"\x01\x07")],
            ),
        ]
    )
    t = sim.run(pk.udp(1, MAC_A, pk.BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67))
    assert not t.dropped and not t.outputs
    (punt,) = t.punts
    assert (punt.userdata, punt.stage, punt.reason) == (b"\x01\x07", "services", "action")
    assert punt.packet["udp_dst"] == 67


def test_resubmit_loops_are_cut() -> None:
    sim = Simulator(
        [
            *walk(
                "classification",
                "l2_lookup",
                "router_input",
                "dnat",
                "routing",
                "arp_resolve",
                "snat",
            ),
            flow("snat", 10, {}, [Resubmit("l2_lookup")]),
        ]
    )
    t = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    assert t.dropped and any("depth" in d for d in t.drops)


# ------------------------------------------------------------------------- conjunction


def _conj_sim(extra: Sequence[Flow] = ()) -> Simulator:
    flows = walk("classification", "port_security", "pre_acl", "acl")
    clause1 = ("10.0.0.1", "10.0.0.2", "10.0.1.0/24")
    flows += [
        flow("acl", 100, {**IP, "ipv4_src": s}, [Conjunction(10, 1, 2)], obj=s) for s in clause1
    ]
    flows += [
        flow("acl", 100, {**IP, "ip_proto": 6, "tcp_dst": d}, [Conjunction(10, 2, 2)], obj=d)
        for d in (22, 80)
    ]
    flows += [flow("acl", 100, {"conj_id": 10}, [Output(10)]), flow("acl", 1, {}, [Output(99)])]
    return Simulator([*flows, *extra])


@pytest.mark.parametrize(
    ("src", "dport", "out"),
    [
        ("10.0.0.2", 80, 10),
        ("10.0.1.77", 22, 10),
        ("10.0.0.2", 443, 99),  # clause 1 only
        ("10.9.9.9", 80, 99),  # clause 2 only
        ("10.9.9.9", 443, 99),  # neither
    ],
)
def test_two_clause_conjunction(src: str, dport: int, out: int) -> None:
    t = _conj_sim().run(tcp(1, src, "10.0.0.100", 5555, dport))
    assert ports(t) == [out]
    if out == 10:
        assert "conjunction 10 matched" in t.steps[-1].note


def test_conjunction_against_ordinary_flows() -> None:
    higher = flow("acl", 3000, {**IP, "ipv4_src": "10.0.0.1"}, [Output(50)], obj="hi")
    sim = _conj_sim([higher])
    assert ports(sim.run(tcp(1, "10.0.0.1", "10.0.0.100", 1, 80))) == [50]
    same = flow("acl", 100, {**IP, "ipv4_dst": "10.0.0.100"}, [Output(60)], obj="same")
    sim = _conj_sim([same])  # an ordinary match at the same priority beats the soft match
    assert ports(sim.run(tcp(1, "10.0.0.2", "10.0.0.100", 1, 80))) == [60]


def test_conjunction_without_conj_id_flow_falls_through() -> None:
    def sim(conj_11: bool, clause_3: bool) -> Simulator:
        c11 = [Conjunction(11, 1, 2), Conjunction(11, 2, 2)] if conj_11 else []
        flows = [
            *walk("classification", "port_security", "pre_acl", "acl"),
            flow("acl", 100, {**IP, "ipv4_src": "10.0.0.1"}, [*c11[:1], Conjunction(12, 1, 3)]),
            flow("acl", 100, {**IP, "ipv4_dst": "10.0.0.2"}, [*c11[1:], Conjunction(12, 2, 3)]),
            flow("acl", 100, {"conj_id": 12}, [Output(12)]),
            flow("acl", 5, {}, [Output(5)]),
        ]
        if clause_3:
            flows.append(flow("acl", 100, {**IP, "ip_proto": 6}, [Conjunction(12, 3, 3)]))
        return Simulator(flows)

    pkt = tcp(1, "10.0.0.1", "10.0.0.2", 1, 2)
    # 12 lacks clause 3 and 11 is satisfied but has no conj_id flow: priority 5 it is.
    assert ports(sim(conj_11=True, clause_3=False).run(pkt)) == [5]
    assert ports(sim(conj_11=False, clause_3=False).run(pkt)) == [5]
    assert ports(sim(conj_11=False, clause_3=True).run(pkt)) == [12]
    assert ports(sim(conj_11=False, clause_3=True).run(tcp(1, "10.0.0.1", "10.0.0.3", 1, 2))) == [5]


def test_duplicate_identities_are_refused() -> None:
    a = flow("classification", 5, {"in_port": 1}, [Output(2)])
    b = flow("classification", 5, {"in_port": 1}, [Output(3)])
    Simulator([a, a])  # the same flow twice is one flow
    with pytest.raises(ValueError, match="same table, priority and match"):
        Simulator([a, b])


# ------------------------------------------------------------------------- conntrack


def _firewall(
    zone_b: int = 5,
    nat: Nat | None = None,
    mark: int | None = None,
    extra: Sequence[Flow] = (),
) -> Simulator:
    """A (port 1) may open connections to B (port 2); B may only answer."""
    reply_nat = Nat() if nat is not None else None
    exec_ = (SetField("ct_mark", mark),) if mark is not None else ()
    flows = [
        *walk("classification", "port_security", "pre_acl"),
        flow(
            "classification",
            10,
            {"in_port": 1},
            [Load("src_port_key", 1), Load("port_ct_zone", 5), Goto("port_security")],
        ),
        flow(
            "classification",
            10,
            {"in_port": 2},
            [Load("src_port_key", 2), Load("port_ct_zone", zone_b), Goto("port_security")],
            obj=2,
        ),
        flow("pre_acl", 10, IP, [Ct(zone="port_ct_zone", table="acl", nat=reply_nat)]),
        flow("acl", 300, {**IP, "ct_state": "+trk+inv"}, []),
        flow(
            "acl",
            200,
            {**IP, "ct_state": "+trk+new", "src_port_key": 1},
            [Ct(commit=True, zone="port_ct_zone", nat=nat, exec=exec_), Output(2)],
        ),
        flow("acl", 150, {**IP, "ct_state": "+trk+rel", "src_port_key": 2}, [Output(1)]),
        flow("acl", 100, {**IP, "ct_state": "+trk+est", "src_port_key": 1}, [Output(2)]),
        flow("acl", 100, {**IP, "ct_state": "+trk+est", "src_port_key": 2}, [Output(1)]),
        *extra,
    ]
    return Simulator(flows)


def _ct_state(t: Trace) -> str:
    return next(s.note for s in t.steps if "ct_state" in s.note).split("ct_state=")[1]


def test_conntrack_new_commit_reply_established() -> None:
    sim = _firewall()
    syn = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 40000, 80, "S"))
    assert ports(syn) == [2] and _ct_state(syn) == "+new+trk"
    assert len(sim.conntrack) == 1
    synack = sim.run(tcp(2, "10.0.0.2", "10.0.0.1", 80, 40000, "SA"))
    assert ports(synack) == [1] and _ct_state(synack) == "+est+rpl+trk"
    ack = sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 40000, 80, "A"))
    assert ports(ack) == [2] and _ct_state(ack) == "+est+trk"
    # B may not open a connection of its own...
    assert sim.run(tcp(2, "10.0.0.2", "10.0.0.1", 5000, 22, "S")).dropped
    # ...and a SYN-ACK nobody asked for is invalid.
    stray = sim.run(tcp(2, "10.0.0.2", "10.0.0.1", 81, 40000, "SA"))
    assert stray.dropped and "+inv" in _ct_state(stray)


def test_conntrack_uncommitted_is_forgotten_and_original_stays_new_until_a_reply() -> None:
    sim = _firewall()
    sim.run(pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5000, 53))
    again = sim.run(pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5000, 53))
    assert _ct_state(again) == "+new+trk"  # committed, but no reply seen yet
    blocked = sim.run(pk.udp(2, MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", 6000, 53))
    assert blocked.dropped and _ct_state(blocked) == "+new+trk"  # never committed


def test_conntrack_zones_are_separate() -> None:
    sim = _firewall(zone_b=6)
    sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 40000, 80, "S"))
    synack = sim.run(tcp(2, "10.0.0.2", "10.0.0.1", 80, 40000, "SA"))
    assert synack.dropped and "+inv" in _ct_state(synack)
    sim.run(pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5000, 53))
    reply = sim.run(pk.udp(2, MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", 53, 5000))
    assert reply.dropped and _ct_state(reply) == "+new+trk"


def test_related_icmp_error() -> None:
    sim = _firewall()
    probe = pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5000, 9999)
    sim.run(probe)
    err = sim.run(pk.icmp_error(2, MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", probe))
    assert ports(err) == [1] and _ct_state(err) == "+rel+rpl+trk"
    unrelated = pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.3", 5000, 9999)
    err = sim.run(pk.icmp_error(2, MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", unrelated))
    assert err.dropped and "+inv" in _ct_state(err)


def test_conntrack_mark_set_by_commit_is_seen_after_recirculation() -> None:
    marked = flow(
        "acl", 250, {**IP, "ct_state": "+trk+est", "ct_mark": (2, 2)}, [Output(7)], obj="mark"
    )
    sim = _firewall(mark=0x3, extra=[marked])
    sim.run(pk.udp(1, MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5000, 53))
    reply = sim.run(pk.udp(2, MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", 53, 5000))
    assert ports(reply) == [7]
    assert next(s for s in reply.steps if s.stage == "acl").flow == marked
    (conn,) = sim.conntrack.connections()
    assert conn.mark == 3 and conn.seen_reply


def test_snat_rewrites_both_directions() -> None:
    sim = _firewall(nat=Nat("src", "172.16.0.50", port=41000))
    out = sim.run(tcp(1, "10.0.0.1", "172.16.0.100", 40000, 80, "S"))
    assert ports(out) == [2]
    sent = out.outputs[0].packet
    assert (sent["ipv4_src"], sent["tcp_src"]) == (0xAC100032, 41000)
    back = sim.run(tcp(2, "172.16.0.100", "172.16.0.50", 80, 41000, "SA"))
    assert ports(back) == [1] and _ct_state(back) == "+est+rpl+trk+dnat"
    got = back.outputs[0].packet
    assert (got["ipv4_dst"], got["tcp_dst"]) == (0x0A000001, 40000)
    more = sim.run(tcp(1, "10.0.0.1", "172.16.0.100", 40000, 80, "A"))
    assert more.outputs[0].packet["ipv4_src"] == 0xAC100032
    assert "+snat" in _ct_state(more)


def test_dnat_floating_ip() -> None:
    sim = _firewall(nat=Nat("dst", "10.0.0.5"))
    out = sim.run(pk.icmp_echo(1, MAC_A, MAC_B, "172.16.0.100", "172.16.0.200"))
    assert out.outputs[0].packet["ipv4_dst"] == 0x0A000005
    back = sim.run(pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.5", "172.16.0.100", reply=True))
    assert ports(back) == [1] and back.outputs[0].packet["ipv4_src"] == 0xAC1000C8


def test_conntrack_model_directly() -> None:
    ct = Conntrack()
    arp = pk.arp(1, MAC_A, "10.0.0.1", "10.0.0.2")
    assert ct.execute(Ct(commit=True), 0, arp) == (CT_TRK | CT_INV, None)
    syn = tcp(1, "fd00::1", "fd00::2", 1, 2)
    state, conn = ct.execute(Ct(commit=True), 3, syn)
    assert state == CT_TRK | CT_NEW and conn is not None and conn.zone == 3
    state, _ = ct.execute(Ct(), 3, tcp(2, "fd00::2", "fd00::1", 2, 1, "SA"))
    assert state & CT_EST
    ct.flush()
    assert len(ct) == 0


def icmp6(type_: int, code: int = 0, src: str = "fd00::1", dst: str = "fd00::2") -> Packet:
    return pk.packet(in_port=1, eth_src=MAC_A, eth_dst=MAC_A, eth_type=0x86DD, ipv6_src=src,
                     ipv6_dst=dst, ip_proto=58, nw_ttl=64, icmpv6_type=type_,
                     icmpv6_code=code)  # fmt: skip


def test_conntrack_tracks_icmp_queries_and_nothing_else_of_icmp() -> None:
    """As OVS's userspace conntrack: echo requests open connections, their replies are
    +est; a reply without its request and any message that is neither a query nor an
    error (type 200, MLD) is +inv, even between addresses with a connection."""
    ct = Conntrack()
    assert ct.execute(Ct(), 0, icmp6(129)) == (CT_TRK | CT_INV, None)  # no request
    state, conn = ct.execute(Ct(commit=True), 0, icmp6(128))
    assert state == CT_TRK | CT_NEW and conn is not None
    state, _ = ct.execute(Ct(), 0, icmp6(129, src="fd00::2", dst="fd00::1"))
    assert state == CT_TRK | CT_EST | CT_RPL
    for type_ in (200, 143, 139):
        assert ct.execute(Ct(commit=True), 0, icmp6(type_, 1)) == (CT_TRK | CT_INV, None)
    assert len(ct) == 1  # nothing committed of those
    # ICMPv4 in IPv6 is just another protocol: tracked by its addresses.
    other = pk.packet(in_port=1, eth_src=MAC_A, eth_dst=MAC_A, eth_type=0x86DD,
                      ipv6_src="fd00::1", ipv6_dst="fd00::2", ip_proto=1, nw_ttl=64)  # fmt: skip
    assert ct.execute(Ct(), 0, other)[0] == CT_TRK | CT_NEW
    ping4 = pk.icmp_echo(1, MAC_A, MAC_A, "10.0.0.1", "10.0.0.2", reply=True)
    assert ct.execute(Ct(), 0, ping4) == (CT_TRK | CT_INV, None)


# ------------------------------------------------------------------------- groups


def _group_sim(groups: Sequence[GroupDef], l2_actions: Sequence[Action]) -> Simulator:
    return Simulator(
        [
            flow("classification", 10, {}, [Goto("l2_lookup")]),
            flow("l2_lookup", 10, {}, l2_actions),
            *[flow("output", 10, {"dst_port_key": k}, [Output(k)], obj=k) for k in range(2, 6)],
        ],
        groups,
    )


def test_all_group_runs_every_bucket_on_a_copy() -> None:
    g = table("l2_lookup").group(
        1,
        "all",
        [
            [Load("dst_port_key", 2), Resubmit("output")],
            [Load("dst_port_key", 3), Resubmit("output")],
        ],
    )
    sim = _group_sim([g], [Load("dst_port_key", 4), Group(1), Resubmit("output")])
    assert ports(sim.run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))) == [2, 3, 4]


def test_select_group_is_deterministic_weighted_and_spreads() -> None:
    g = table("l2_lookup").group(
        2,
        "select",
        [
            Bucket((Load("dst_port_key", 2), Resubmit("output"))),
            Bucket((Load("dst_port_key", 3), Resubmit("output"))),
            Bucket((Load("dst_port_key", 4), Resubmit("output")), weight=0),
        ],
    )
    sim = _group_sim([g], [Group(2)])
    seen = set()
    for sport in range(1000, 1064):
        first = ports(sim.run(tcp(1, "10.0.0.1", "10.0.0.2", sport, 80)))
        assert first == ports(sim.run(tcp(1, "10.0.0.1", "10.0.0.2", sport, 80)))
        seen.update(first)
    assert seen == {2, 3}


def test_missing_group_drops() -> None:
    t = _group_sim([], [Group(9)]).run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    assert t.dropped and t.drops == ["group 9 does not exist"]


# ------------------------------------------------------------------------- a scenario


def test_routed_packet_through_the_whole_pipeline_and_its_trace() -> None:
    """A (net 1) → router → B (net 2): TTL, MACs, stage walk, and the trace's provenance."""
    idx = CookieIndex()
    port_a, router, port_b = "port-aaaa", "router-rrrr", "port-bbbb"

    def owned(
        st_name: StageName,
        priority: int,
        m: Mapping[str, MatchValue],
        actions: Sequence[Action],
        obj: str,
    ) -> Flow:
        cookie = idx.register(stage(st_name).owner, obj)
        return table(st_name).flow(
            priority=priority,
            match=match(**m),
            actions=actions,
            cookie=cookie,
        )

    flows = [
        owned(
            "classification",
            100,
            {"in_port": 1},
            [Load("src_port_key", 1), Load("network_key", 1), Goto("port_security")],
            port_a,
        ),
        *walk("port_security", "pre_acl", "services", "l2_lookup"),
        owned(
            "l2_lookup",
            100,
            {"network_key": 1, "eth_dst": MAC_R},
            [Load("router_key", 7), Goto("router_input")],
            router,
        ),
        owned(
            "l2_lookup",
            100,
            {"network_key": 2, "eth_dst": MAC_B},
            [Load("dst_port_key", 2), Goto("pre_acl_egress")],
            port_b,
        ),
        *walk("router_input", "dnat", "routing"),
        owned(
            "routing",
            24,
            {**IP, "router_key": 7, "ipv4_dst": "10.0.2.0/24"},
            [
                DecTtl(),
                Move("ipv4_dst", "next_hop_ipv4"),
                Load("network_key", 2),
                SetField("eth_src", MAC_R),
                Goto("arp_resolve"),
            ],
            router,
        ),
        owned(
            "arp_resolve",
            100,
            {**IP, "network_key": 2, "next_hop_ipv4": 0x0A000205},
            [SetField("eth_dst", MAC_B), Goto("snat")],
            port_b,
        ),
        owned("snat", 0, {}, [Resubmit("l2_lookup")], router),
        *walk("pre_acl_egress", "port_security_egress", "output"),
        owned("output", 100, {"dst_port_key": 2}, [Output(2)], port_b),
    ]
    sim = Simulator(flows, cookies=idx)
    t = sim.run(pk.icmp_echo(1, MAC_A, MAC_R, "10.0.1.5", "10.0.2.5", ttl=64))
    assert ports(t) == [2]
    got = t.outputs[0].packet
    assert got["nw_ttl"] == 63 and got["eth_dst"] == 0x02000000000B and got["network_key"] == 2
    assert t.stages() == [
        "classification",
        "port_security",
        "pre_acl",
        "services",
        "l2_lookup",
        "router_input",
        "dnat",
        "routing",
        "arp_resolve",
        "snat",
        "l2_lookup",
        "pre_acl_egress",
        "port_security_egress",
        "output",
    ]
    routing = t.steps[7]
    assert routing.origin is not None and routing.origin.object_id == router
    assert (routing.origin.app, routing.stage, routing.table) == (
        "l3",
        "routing",
        table_of("routing"),
    )
    assert isinstance(routing.actions[0], DecTtl)
    text = t.format()
    assert "table 0 (classification) priority 100" in text
    assert f"classifier {port_a}" in text and f"l3 {router}" in text
    assert "pipeline key" in text and "output: port 2" in text


def test_format_of_a_drop() -> None:
    t = Simulator([]).run(tcp(1, "10.0.0.1", "10.0.0.2", 1, 2))
    text = t.format()
    assert "table 0 (classification): no match" in text and "outcome: dropped" in text


# ------------------------------------------------------------------------- property


_DOMAIN = {
    "in_port": st.integers(1, 3),
    "eth_type": st.sampled_from([ETH_TYPE_IP, ETH_TYPE_ARP]),
    "tun_id": st.integers(0, 3),
    "tun_metadata0": st.integers(0, 7),
}


@st.composite
def _flow_table(draw: st.DrawFn) -> list[tuple[int, dict[str, tuple[int, int]]]]:
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        names = draw(st.sets(st.sampled_from(sorted(_DOMAIN))))
        fields = {n: (draw(_DOMAIN[n]), 0) for n in names}
        if "tun_metadata0" in fields and draw(st.booleans()):
            mask = draw(st.integers(1, 7))
            fields["tun_metadata0"] = (fields["tun_metadata0"][0] & mask, mask)
        rows.append((draw(st.integers(0, 6)), fields))
    return rows


@settings(max_examples=100, deadline=None)
@given(_flow_table(), st.fixed_dictionaries(_DOMAIN))
def test_chosen_flow_is_a_highest_priority_match(
    rows: list[tuple[int, dict[str, tuple[int, int]]]], pkt_fields: dict[str, int]
) -> None:
    pairs: dict[tuple[object, ...], tuple[Flow, dict[str, tuple[int, int]]]] = {}
    for i, (prio, fields) in enumerate(rows):
        f = table("classification").flow(
            priority=prio,
            cookie=encode("classifier", i),
            actions=[Output(100 + i)],
            match={n: (v if not m else (v, m)) for n, (v, m) in fields.items()},
        )
        pairs.setdefault(f.key, (f, fields))  # OVS keeps one flow per identity

    def hits(fields: dict[str, tuple[int, int]]) -> bool:
        return all((pkt_fields[n] & m if m else pkt_fields[n]) == v for n, (v, m) in fields.items())

    flows = [f for f, _ in pairs.values()]
    matching = [f for f, fields in pairs.values() if hits(fields)]
    best = max((f.priority for f in matching), default=None)
    oracle = {f for f in matching if f.priority == best}
    p = Packet(pkt_fields)
    chosen = Simulator(flows).lookup(0, p)
    if not oracle:
        assert chosen is None
    else:
        assert chosen in oracle
        first = chosen.actions[0]
        assert isinstance(first, Output)
        assert ports(Simulator(flows).run(p)) == [first.port]
