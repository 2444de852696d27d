"""Rendering to ovs-ofctl text, checked by OVS itself (`ovs-ofctl parse-flows`)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    PORT_IN_PORT,
    PORT_LOCAL,
    Bits,
    Bucket,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Goto,
    Group,
    GroupDef,
    Load,
    MatchValue,
    Move,
    Nat,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    match,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.fields import IRError
from wyvern.ir.pipeline import table_of
from wyvern.ir.render import (
    render_actions,
    render_flow,
    render_group,
    render_match,
    render_strict,
)

IP: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IP}
IP6: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IPV6}


def every_kind() -> tuple[list[Flow], list[GroupDef]]:
    """A representative flow of every match kind and action, stage by stage."""
    cl, ps, sg = encode("classifier", 1), encode("port_security", 2), encode("security_groups", 3)
    sv, l2, l3 = encode("services", 4), encode("l2", 5), encode("l3", 6)
    nat, out, dflt = encode("nat", 7), encode("output", 8), encode("pipeline", 9)
    mac = "02:00:00:00:00:01"
    flows = [
        table("classification").flow(
            priority=100,
            match=match(in_port=1),
            cookie=cl,
            actions=[
                Load("src_port_key", 5),
                Load("network_key", 0xABCDEF),
                Load("port_ct_zone", 9),
                Goto("port_security"),
            ],
        ),
        table("classification").flow(
            priority=100,
            match=match(tun_id=0x10, tun_src="192.168.0.2", tun_metadata0=(0x5, 0xFFFFFFFF)),
            cookie=cl,
            actions=[
                Move(Bits("tun_metadata0", 32, 32), "src_port_key"),
                Move(Bits("tun_metadata0", 0, 32), "dst_port_key"),
                Move(Bits("tun_id", 0, 24), "network_key"),
                Load("flag_from_tunnel", 1),
                Goto("pre_acl_egress"),
            ],
        ),
        table("classification").flow(
            priority=100,
            match=match(in_port=PORT_LOCAL, vlan_vid=0x1000 | 100),
            cookie=cl,
            actions=[PopVlan(), Load("network_key", 3), Goto("l2_lookup")],
        ),
        table("classification").flow(priority=0, cookie=dflt),  # drop
        table("port_security").flow(
            priority=90,
            cookie=ps,
            match=match(
                src_port_key=5,
                eth_src=mac,
                arp_op=1,
                arp_spa="10.0.0.5",
                arp_sha=mac,
                arp_tpa="10.0.0.0/24",
            ),
            actions=[Goto("pre_acl")],
        ),
        table("port_security").flow(
            priority=90,
            cookie=ps,
            match=match(
                src_port_key=5,
                eth_type=ETH_TYPE_IPV6,
                ipv6_src="fe80::/64",
                icmpv6_type=135,
                icmpv6_code=0,
                nd_target="fe80::1",
                nd_sll=mac,
            ),
            actions=[Goto("pre_acl")],
        ),
        table("port_security").flow(
            priority=80,
            cookie=ps,
            match=match(
                src_port_key=5,
                ipv4_src="0.0.0.0",
                ipv4_dst="255.255.255.255",
                ip_proto=17,
                udp_src=68,
                udp_dst=67,
            ),
            actions=[Goto("pre_acl")],
        ),
        table("port_security").flow(
            priority=70,
            cookie=ps,
            match=match(eth_dst="01:00:00:00:00:00/01:00:00:00:00:00", vlan_vid=0),
            actions=[],
        ),
        table("pre_acl").flow(
            priority=100, match=IP, cookie=sg, actions=[Ct(zone="port_ct_zone", table="acl")]
        ),
        table("acl").flow(
            priority=2000,
            cookie=sg,
            match={**IP, "ct_state": "+trk+new-est", "ipv4_src": "10.1.0.0/16"},
            actions=[Conjunction(10, 1, 2), Conjunction(11, 1, 3)],
        ),
        table("acl").flow(
            priority=2000,
            cookie=sg,
            match={**IP, "ip_proto": 6, "tcp_dst": (0x400, 0xFC00), "tcp_flags": (0x2, 0x17)},
            actions=[Conjunction(10, 2, 2)],
        ),
        table("acl").flow(
            priority=2000,
            cookie=sg,
            match={**IP, "conj_id": 10},
            actions=[
                Ct(
                    commit=True,
                    zone="port_ct_zone",
                    exec=(SetField("ct_mark", 1, 0x1), SetField("ct_label", 1 << 100)),
                ),
                Load("flag_acl_allowed", 1),
                Goto("services"),
            ],
        ),
        table("acl").flow(
            priority=1000,
            cookie=sg,
            match={
                **IP6,
                "ct_state": "+trk+est-rpl",
                "ct_mark": (1, 1),
                "ct_label": (1 << 127, 1 << 127),
                "ct_zone": 9,
                "ip_proto": 58,
                "icmpv6_type": 128,
            },
            actions=[Goto("services")],
        ),
        table("acl").flow(
            priority=1000,
            match={**IP, "ip_proto": 1, "icmp_type": 8, "icmp_code": 0},
            cookie=sg,
            actions=[],
        ),
        table("services").flow(  # ARP responder
            priority=100,
            cookie=sv,
            match=match(network_key=3, arp_op=1, arp_tpa="10.0.0.1"),
            actions=[
                Move("eth_src", "eth_dst"),
                SetField("eth_src", mac),
                SetField("arp_op", 2),
                Move("arp_sha", "arp_tha"),
                SetField("arp_sha", mac),
                Move("arp_spa", "arp_tpa"),
                SetField("arp_spa", "10.0.0.1"),
                Move("src_port_key", "dst_port_key"),
                Load("flag_allow_loopback", 1),
                Goto("output"),
            ],
        ),
        table("services").flow(  # DHCP punt
            priority=100,
            cookie=sv,
            match={**IP, "ip_proto": 17, "udp_dst": 67},
            actions=[
                Controller(userdata=b"\x01\x00\x05"),
                Controller(reason="no_match", max_len=128),
            ],
        ),
        table("services").flow(  # ND: an advertisement's target link-layer address
            priority=100,
            cookie=sv,
            match={**IP6, "ip_proto": 58, "icmpv6_type": 136, "ipv6_dst": "fd00::/8"},
            actions=[
                SetField("nd_tll", mac),
                SetField("nd_target", "fd00::1"),
                SetField("ipv6_src", "fd00::1"),
                Goto("l2_lookup"),
            ],
        ),
        table("l2_lookup").flow(
            priority=100,
            cookie=l2,
            match=match(network_key=3, eth_dst=mac),
            actions=[Load("dst_port_key", 5), Goto("pre_acl_egress")],
        ),
        table("l2_lookup").flow(
            priority=90,
            cookie=l2,
            match=match(network_key=3, eth_dst="01:00:00:00:00:00/01:00:00:00:00:00"),
            actions=[
                Group(1),
                Load("dst_port_key", 6),
                Resubmit("pre_acl_egress"),
                Load("dst_port_key", 7),
                Resubmit("output"),
            ],
        ),
        table("l2_lookup").flow(
            priority=100,
            cookie=l2,
            match=match(network_key=3, eth_dst="02:00:00:00:ff:01"),
            actions=[Load("router_key", 1), Goto("router_input")],
        ),
        table("router_input").flow(  # ICMP echo reply from the router
            priority=100,
            cookie=l3,
            match={**IP, "router_key": 1, "ipv4_dst": "10.0.0.1", "ip_proto": 1, "icmp_type": 8},
            actions=[
                Move("ipv4_src", "ipv4_dst"),
                SetField("ipv4_src", "10.0.0.1"),
                SetField("icmp_type", 0),
                SetField("nw_ttl", 255),
                Move("eth_src", "eth_dst"),
                SetField("eth_src", "02:00:00:00:ff:01"),
                Load("flag_allow_loopback", 1),
                Goto("output"),
            ],
        ),
        table("router_input").flow(
            priority=90,
            cookie=l3,
            match={**IP, "router_key": 1, "nw_ttl": 1},
            actions=[Controller(reason="invalid_ttl")],
        ),
        table("router_input").flow(
            priority=10,
            cookie=l3,
            match=match(router_key=1),
            actions=[Load("router_ct_zone", 20), Goto("dnat")],
        ),
        table("dnat").flow(
            priority=100,
            cookie=nat,
            match={**IP, "router_key": 1, "ipv4_dst": "172.16.0.200"},
            actions=[
                Ct(commit=True, zone="router_ct_zone", table="routing", nat=Nat("dst", "10.0.0.5"))
            ],
        ),
        table("dnat").flow(
            priority=100,
            cookie=nat,
            match={**IP6, "router_key": 1, "ipv6_dst": "fd00::200"},
            actions=[
                Ct(commit=True, zone=20, table="routing", nat=Nat("dst", "fd00::5", port=8080))
            ],
        ),
        table("dnat").flow(
            priority=10,
            cookie=nat,
            match=IP,
            actions=[Ct(zone="router_ct_zone", table="routing", nat=Nat())],
        ),
        table("routing").flow(
            priority=24,
            cookie=l3,
            match={**IP, "router_key": 1, "ipv4_dst": "10.0.1.0/24"},
            actions=[
                DecTtl(),
                Move("ipv4_dst", "next_hop_ipv4"),
                Load("network_key", 4),
                SetField("eth_src", "02:00:00:00:ff:02"),
                Goto("arp_resolve"),
            ],
        ),
        table("routing").flow(
            priority=64,
            cookie=l3,
            match={**IP6, "router_key": 1, "ipv6_dst": "fd00:1::/64"},
            actions=[
                CheckPktLarger(1414, "flag_pkt_larger"),
                Move("eth_src", "routed_eth_src"),
                DecTtl(),
                Load("network_key", 5),
                Goto("mtu_check"),
            ],
        ),
        table("arp_resolve").flow(
            priority=100,
            cookie=l3,
            match={**IP, "network_key": 4, "next_hop_ipv4": 0x0A000105},
            actions=[SetField("eth_dst", "02:00:00:00:01:05"), Goto("snat")],
        ),
        table("snat").flow(
            priority=100,
            cookie=nat,
            match={**IP, "router_key": 1, "ipv4_src": "10.0.0.0/24", "ct_state": "+trk+new"},
            actions=[
                Ct(
                    commit=True,
                    zone="router_ct_zone",
                    nat=Nat("src", "172.16.0.50", addr_max="172.16.0.60", port=1000, port_max=2000),
                ),
                CtClear(),
                Resubmit("l2_lookup"),
            ],
        ),
        table("pre_acl_egress").flow(
            priority=100,
            cookie=sg,
            match={**IP, "dst_port_key": 5},
            actions=[Load("port_ct_zone", 9), Ct(zone="port_ct_zone", table="acl_egress")],
        ),
        table("acl_egress").flow(
            priority=100,
            cookie=sg,
            match={**IP, "ct_state": "+trk+est", "dst_port_key": 5},
            actions=[Goto("port_security_egress")],
        ),
        table("port_security_egress").flow(
            priority=100,
            cookie=ps,
            match={**IP, "dst_port_key": 5, "eth_dst": mac, "ipv4_dst": "10.0.0.5"},
            actions=[Goto("output")],
        ),
        table("output").flow(
            priority=100, cookie=out, match=match(dst_port_key=5), actions=[Output(3)]
        ),
        table("output").flow(
            priority=110,
            cookie=out,
            match=match(dst_port_key=5, flag_allow_loopback=1),
            actions=[Output(PORT_IN_PORT)],
        ),
        table("output").flow(
            priority=100,
            cookie=out,
            match=match(dst_port_key=6),
            actions=[Output(PORT_LOCAL), OutputReg("scratch")],
        ),
        table("output").flow(  # to a remote chassis over Geneve
            priority=100,
            cookie=out,
            match=match(dst_port_key=7),
            actions=[
                SetField("tun_id", 3),
                SetField("tun_dst", "192.168.0.3"),
                Move("src_port_key", Bits("tun_metadata0", 32, 32)),
                Move("dst_port_key", Bits("tun_metadata0", 0, 32)),
                Output(10),
            ],
        ),
        table("output").flow(  # provider VLAN network
            priority=100,
            cookie=out,
            match=match(dst_port_key=8),
            actions=[PushVlan(), SetField("vlan_vid", 0x1000 | 100), Output(4)],
        ),
        table("acl").flow(  # a later fragment (ip_frag by name, and as value/mask)
            priority=1001,
            match={**IP6, "ip_frag": "later", "ct_state": "+trk+new"},
            cookie=sg,
            actions=[],
        ),
        table("acl").flow(
            priority=1001,
            match={**IP, "ip_frag": (1, 3)},
            cookie=sg,
            actions=[],
        ),
    ]
    flows += [  # security-group clauses: SCTP port ranges (masked), a bare protocol number
        table("acl").flow(
            priority=1000,
            match={**IP, "ip_proto": 132, "sctp_dst": (0x400, 0xFC00)},
            cookie=sg,
            actions=[Conjunction(12, 2, 2)],
        ),
        table("acl_egress").flow(
            priority=1000,
            match={**IP6, "ip_proto": 132, "sctp_dst": 5060, "sctp_src": (0, 0x8000)},
            cookie=sg,
            actions=[Conjunction(13, 2, 2)],
        ),
        table("acl_egress").flow(
            priority=1000, match={**IP6, "ip_proto": 33}, cookie=sg, actions=[Conjunction(14, 2, 2)]
        ),
    ]
    groups = [
        table("l2_lookup").group(
            1,
            "all",
            [
                [Load("dst_port_key", 5), Resubmit("pre_acl_egress")],
                [Load("dst_port_key", 7), Resubmit("output")],
            ],
        ),
        table("dnat").group(
            2,
            "select",
            [
                Bucket((Ct(commit=True, zone="router_ct_zone", nat=Nat("dst", "10.3.0.11")),), 50),
                Bucket((Ct(commit=True, zone="router_ct_zone", nat=Nat("dst", "10.3.0.12")),), 150),
            ],
        ),
    ]
    return flows, groups


def _parse(lines: list[str], tmp_path: Path, protocol: str) -> list[str]:
    """Run ovs-ofctl parse-flows; return the printed flow_mods (fail on any complaint)."""
    path = tmp_path / f"flows-{protocol}.txt"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        ["ovs-ofctl", "-O", protocol, "parse-flows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    # parse-flows exits 0 even when the encoded action does not decode (e.g. ct nat
    # without commit): it then prints a warning and "decode error".
    assert "decode error" not in text and "|WARN|" not in text, text
    mods = [line for line in proc.stdout.splitlines() if "OFPT_FLOW_MOD" in line]
    assert len(mods) == len(lines), text
    return mods


def _bucket_lines(groups: list[GroupDef]) -> list[str]:
    """Bucket actions inside a flow line, so that OVS checks their syntax too."""
    return [f"table=0,ip actions={render_actions(b.actions)}" for g in groups for b in g.buckets]


@pytest.mark.system
@pytest.mark.parametrize("protocol", ["OpenFlow15", "OpenFlow14"])
def test_ovs_ofctl_accepts_every_kind(tmp_path: Path, protocol: str) -> None:
    flows, groups = every_kind()
    lines = [render_flow(f) for f in flows] + _bucket_lines(groups)
    _parse(lines, tmp_path, protocol)


@pytest.mark.system
def test_strict_form_has_the_same_match(tmp_path: Path) -> None:
    flows, _ = every_kind()
    full = _parse([render_flow(f) for f in flows], tmp_path, "OpenFlow15")
    strict = _parse([render_strict(f) + " actions=drop" for f in flows], tmp_path, "OpenFlow15")

    def identity(mod: str) -> str:
        head = mod.split(" ADD ", 1)[1].split(" actions=", 1)[0]
        return re.sub(r" ?cookie:0x[0-9a-f]+", "", head)

    assert [identity(m) for m in full] == [identity(m) for m in strict]


def test_render_examples() -> None:
    flows, groups = every_kind()
    text = [render_flow(f) for f in flows]
    assert text[0] == (
        "table=0,priority=100,cookie=0x200000000000001,in_port=1 actions="
        "load:0x5->reg14[0..31],load:0xabcdef->metadata[0..23],load:0x9->reg13[0..15],"
        f"goto_table:{table_of('port_security')}"
    )
    assert "conjunction(10,1/2),conjunction(11,1/3)" in text[9]
    assert "ct(commit,zone=reg13[0..15],exec(set_field:0x1/0x1->ct_mark," in text[11]
    assert "ct_state=+trk-est-rpl" in text[12] or "ct_state=+est-rpl+trk" in text[12]
    assert "controller(reason=action,max_len=65535,userdata=01.00.05)" in text[15]
    assert f"resubmit(,{table_of('pre_acl_egress')})" in text[18] and "group:1" in text[18]
    assert ",actions=in_port" in text[34].replace(" ", ",")
    assert "nat(src=172.16.0.50-172.16.0.60:1000-2000)" in "".join(text)
    assert "nat(dst=[fd00::5]:8080)" in "".join(text)
    assert "check_pkt_larger(1414)->reg10[3..3],move:eth_src[]->xreg4[0..47]," in "".join(text)
    assert "move:tun_metadata0[32..63]->reg14[0..31]" in text[1]
    assert render_group(groups[1]) == (
        "group_id=2,type=select,"
        "bucket=bucket_id:0,weight:50,actions=ct(commit,zone=reg11[0..15],nat(dst=10.3.0.11)),"
        "bucket=bucket_id:1,weight:150,actions=ct(commit,zone=reg11[0..15],nat(dst=10.3.0.12))"
    )
    assert render_actions(()) == "drop"


def test_register_matches_merge_per_field() -> None:
    m = match(flag_from_tunnel=1, flag_acl_allowed=1, src_port_key=7, network_key=3)
    assert render_match(m) == "metadata=0x3/0xffffff,reg10=0x5/0x5,reg14=0x7"
    strict = render_strict(
        table("acl").flow(
            priority=5,
            cookie=encode("security_groups", 1),
            match={"flag_acl_allowed": 1, "eth_type": ETH_TYPE_ARP},
        )
    )
    assert strict == f"table={table_of('acl')},priority=5,reg10=0x4/0x4,arp"


_FIELD_VALUES: dict[str, st.SearchStrategy[MatchValue]] = {
    "in_port": st.integers(1, 0xFEFF),
    "tun_id": st.integers(0, (1 << 64) - 1),
    "tun_src": st.from_regex(r"10\.0\.[0-9]\.[0-9]/(8|16|24|32)", fullmatch=True),
    "vlan_vid": st.integers(0, 0xFFF).map(lambda v: 0x1000 | v),
    "tun_metadata0": st.tuples(st.integers(0, (1 << 64) - 1), st.integers(1, (1 << 64) - 1)),
}


@pytest.mark.system
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.sampled_from(sorted(_FIELD_VALUES)), st.just(0), min_size=1), st.data())
def test_random_classification_matches_parse(
    tmp_path: Path, names: dict[str, int], data: st.DataObject
) -> None:
    fields = {n: data.draw(_FIELD_VALUES[n]) for n in names}
    md = fields.get("tun_metadata0")
    if isinstance(md, tuple):
        v, m = (int(x) for x in md)
        fields["tun_metadata0"] = (v & m, m)
    f = table("classification").flow(
        priority=data.draw(st.integers(0, 0xFFFF)), cookie=encode("classifier", 1), match=fields
    )
    _parse([render_flow(f)], tmp_path, "OpenFlow15")


def test_template_flows_render_as_the_equal_checked_flows() -> None:
    """render_flow takes a template's plan for its flows: same text as without it."""
    from wyvern.apps import l2, port_security, services

    ps, sv, l2c = (encode(a, "p1") for a in ("port_security", "services", "l2"))
    mac = 0xFA163E000001
    built = [
        port_security.IN_V4.flow(ps, 7, 3, mac, (0x0A000005, None)),
        port_security.IN_V4.flow(ps, 7, 3, mac, (0x0A000000, 0xFFFFFF00)),
        port_security.IN_V4.flow(ps, 7, 3, mac, (0, 0)),  # ipv4_src left out
        port_security.L2_NO_V4.flow(ps, 7, 3, mac),  # drop
        port_security.ND_NA.flow(ps, 7, 3, mac, 0, (1, None)),
        services.ARP_REPLY.flow(sv, 7, 0x0A000005, mac, mac, 0x0A000005),
        services.ARP_OWN.flow(sv, 7, 0x0A000005, 3),
        l2.TO_LOCAL.flow(l2c, 7, mac, 3),
    ]
    for f in built * 2:  # (the second time from the plans the first one made)
        plain = Flow(f.stage, f.priority, f.match, f.actions, f.cookie)
        assert plain == f and plain.template is None and f.template is not None
        assert render_flow(f) == render_flow(plain)


def test_only_templates_set_a_flows_template() -> None:
    f = port_security_flow()
    assert Flow(f.stage, f.priority, f.match, f.actions, f.cookie, f.template).template is None
    other = dataclasses.replace(f, match=match(network_key=7, eth_src="fa:16:3e:00:00:02"))
    assert other.template is None and render_flow(other) == render_flow(
        Flow(f.stage, f.priority, other.match, f.actions, f.cookie)
    )


def port_security_flow() -> Flow:
    from wyvern.apps import port_security

    return port_security.L2_MAC.flow(encode("port_security", "p1"), 7, 3, 0xFA163E000001)


def test_ip_frag_renders_by_ovs_name_and_parses_back() -> None:
    """ip_frag's values are OVS's names (the canonical text dump-flows prints)."""
    for name, value, mask in (("later", 3, 3), ("first", 1, 3), ("no", 0, 1), ("yes", 1, 1)):
        m = match(eth_type=0x86DD, ip_frag=name)
        assert render_match(m) == f"ipv6,nw_frag={name}"
        assert m.get("ip_frag") == (value, None if mask == 3 else mask)  # (3: all bits)
        assert match(eth_type=0x86DD, ip_frag=(value, mask)) == m
    with pytest.raises(IRError):
        match(eth_type=0x86DD, ip_frag="sometimes")
