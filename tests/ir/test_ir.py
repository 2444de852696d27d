"""IR values and the checked table builder: invalid flows cannot be built."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wyvern import ir
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    Bits,
    Bucket,
    Conjunction,
    Ct,
    DecTtl,
    Flow,
    Goto,
    IRError,
    Load,
    Match,
    Meter,
    Move,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    match,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.pipeline import table_of

SG = encode("security_groups", "sg-1")
CL = encode("classifier", 1)


# ---------------------------------------------------------------------------- match


def test_match_is_canonical_and_hashable() -> None:
    a = match(ipv4_src="10.0.0.7/24", src_port_key=5)
    b = match(src_port_key=5, eth_type=0x0800, ipv4_src=("10.0.0.0", "255.255.255.0"))
    assert a == b and hash(a) == hash(b)
    assert a.get("ipv4_src") == (int(ipaddress.IPv4Address("10.0.0.0")), 0xFFFFFF00)
    assert a.exact("eth_type") == ETH_TYPE_IP  # prerequisite completed
    assert a.exact("src_port_key") == 5 and "src_port_key" in a


def test_value_forms() -> None:
    assert match(eth_dst="01:00:00:00:00:00/01:00:00:00:00:00").get("eth_dst") == (1 << 40, 1 << 40)
    assert match(eth_src="2:0:0:0:0:1").exact("eth_src") == 0x020000000001
    assert match(ipv6_dst="fe80::/64").get("ipv6_dst") == (0xFE80 << 112, ((1 << 64) - 1) << 64)
    assert match(ipv4_dst=ipaddress.IPv4Network("10.1.0.0/16")).get("ipv4_dst") == (
        0x0A010000,
        0xFFFF0000,
    )
    assert match(eth_type=ETH_TYPE_IP, tcp_dst=(0x400, 0xFC00)).get("tcp_dst") == (0x400, 0xFC00)
    assert match(ct_state="+trk+est-rel").get("ct_state") == (0x22, 0x26)
    assert match(ipv4_src="10.0.0.1/32").get("ipv4_src") == (0x0A000001, None)  # full mask


def test_bad_values() -> None:
    with pytest.raises(IRError, match="unknown"):
        match(nonesuch=1)
    with pytest.raises(IRError, match="fit"):
        match(in_port=1 << 32)
    with pytest.raises(IRError, match="bad in_port"):
        match(in_port=0xFF00)  # OpenFlow 1.0 reserved: ovs-ofctl would translate it
    with pytest.raises(IRError, match="cannot be masked"):
        match(eth_type=ETH_TYPE_IP, nw_ttl=(0, 0xFE))
    with pytest.raises(IRError, match="mask 0"):
        match(eth_src=(0, 0))
    with pytest.raises(IRError):
        match(ipv4_src="fe80::1")
    with pytest.raises(IRError, match="ct_state"):
        match(ct_state="+trk+bogus")
    with pytest.raises(IRError, match="MAC"):
        match(eth_src="02:00:00:00:01")


def test_prerequisites() -> None:
    m = match(eth_type=ETH_TYPE_IPV6, icmpv6_type=135, nd_target="fe80::1")
    assert m.exact("ip_proto") == 58
    assert match(arp_op=1).exact("eth_type") == ETH_TYPE_ARP
    with pytest.raises(IRError, match="needs eth_type"):
        match(tcp_dst=80)  # IPv4 or IPv6? say which
    with pytest.raises(IRError, match="needs eth_type"):
        match(eth_type=ETH_TYPE_ARP, ipv4_src="10.0.0.1")
    with pytest.raises(IRError, match="needs ip_proto"):
        match(eth_type=ETH_TYPE_IP, ip_proto=17, tcp_dst=80)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_port_range_covers_exactly(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    pairs = ir.port_range(lo, hi)
    covered = 0
    for value, mask in pairs:
        assert value & mask == value
        covered += 0x10000 - mask  # ports per prefix
        first, last = value, value | (0xFFFF ^ mask)
        assert lo <= first <= last <= hi
    assert covered == hi - lo + 1
    assert len(pairs) <= 32


# ---------------------------------------------------------------------------- flows


def test_table_flow_builds_a_flow_with_identity() -> None:
    f = table("acl").flow(
        priority=10, match={"src_port_key": 3}, cookie=SG, actions=[Goto("services")]
    )
    assert isinstance(f, Flow) and f.table == table_of("acl") and f.stage == "acl"
    g = table("acl").flow(priority=10, match=match(src_port_key=3), cookie=SG, actions=[])
    assert f.key == g.key and f != g  # same identity, changed value
    assert {f, g} == {f, g} and len({f, g}) == 2


def test_undeclared_match_field_raises() -> None:
    with pytest.raises(IRError, match=r"undeclared field.*in_port"):
        table("acl").flow(priority=1, match=match(in_port=1), cookie=SG)
    with pytest.raises(IRError, match=r"undeclared field.*router_key"):
        table("acl").flow(priority=1, match=match(router_key=1), cookie=SG)


def test_undeclared_goto_and_backward_goto_raise() -> None:
    with pytest.raises(IRError, match="may not continue to output"):
        table("acl").flow(priority=1, cookie=SG, actions=[Goto("output")])
    with pytest.raises(IRError, match="may not continue to l2_lookup"):
        table("acl").flow(priority=1, cookie=SG, actions=[Resubmit("l2_lookup")])
    snat = encode("nat", 1)
    with pytest.raises(IRError, match="backwards"):
        table("snat").flow(priority=1, cookie=snat, actions=[Goto("l2_lookup")])
    table("snat").flow(priority=1, cookie=snat, actions=[Resubmit("l2_lookup")])  # fine
    with pytest.raises(IRError, match="last"):
        table("acl").flow(priority=1, cookie=SG, actions=[Goto("services"), Output(1)])


def test_ct_recirculation_target_must_be_declared_and_last() -> None:
    ip = match(eth_type=ETH_TYPE_IP)
    table("pre_acl").flow(
        priority=1, match=ip, cookie=SG, actions=[Ct(zone="port_ct_zone", table="acl")]
    )
    with pytest.raises(IRError, match="may not continue to acl_egress"):
        table("pre_acl").flow(
            priority=1, match=ip, cookie=SG, actions=[Ct(zone="port_ct_zone", table="acl_egress")]
        )
    with pytest.raises(IRError, match="must be the last"):
        table("pre_acl").flow(
            priority=1,
            match=ip,
            cookie=SG,
            actions=[Ct(zone="port_ct_zone", table="acl"), Output(1)],
        )


def test_undeclared_register_or_field_write_raises() -> None:
    with pytest.raises(IRError, match="writes router_key"):
        table("acl").flow(priority=1, cookie=SG, actions=[Load("router_key", 1)])
    with pytest.raises(IRError, match="writes eth_dst"):
        table("acl").flow(priority=1, cookie=SG, actions=[SetField("eth_dst", "02:00:00:00:00:01")])
    with pytest.raises(IRError, match="writes dst_port_key"):
        table("acl").flow(priority=1, cookie=SG, actions=[Move("src_port_key", "dst_port_key")])
    with pytest.raises(IRError, match="writes ct_mark"):
        table("pre_acl").flow(
            priority=1,
            match=match(eth_type=ETH_TYPE_IP),
            cookie=SG,
            actions=[Ct(commit=True, exec=(SetField("ct_mark", 1),))],
        )
    with pytest.raises(IRError, match="does not fit"):
        table("classification").flow(priority=1, cookie=CL, actions=[Load("network_key", 1 << 24)])


def test_cookie_must_belong_to_the_stage_owner() -> None:
    with pytest.raises(IRError, match="owned by security_groups"):
        table("acl").flow(priority=1, cookie=encode("l3", 1))
    with pytest.raises(IRError, match="no declared app"):
        table("acl").flow(priority=1, cookie=0)  # conjunction flows too: never cookie 0
    table("acl").flow(priority=0, cookie=encode("pipeline", 3))  # defaults are fine


def test_openflow_prerequisites_of_actions() -> None:
    l3 = encode("l3", 1)
    with pytest.raises(IRError, match="IP match"):
        table("routing").flow(priority=1, cookie=l3, actions=[DecTtl()])
    table("routing").flow(
        priority=1, match=match(eth_type=ETH_TYPE_IPV6), cookie=l3, actions=[DecTtl()]
    )
    with pytest.raises(IRError, match="IP match"):
        table("pre_acl").flow(priority=1, cookie=SG, actions=[Ct(zone="port_ct_zone")])
    with pytest.raises(IRError, match="IP match"):  # an IPv6 NAT address on an IPv4 match
        table("dnat").flow(
            priority=1,
            match=match(eth_type=ETH_TYPE_IP),
            cookie=encode("nat", 1),
            actions=[Ct(commit=True, nat=Nat("dst", "fd00::1"))],
        )
    svc = encode("services", 1)
    with pytest.raises(IRError, match="prerequisites"):
        table("services").flow(priority=1, cookie=svc, actions=[SetField("arp_op", 2)])
    with pytest.raises(IRError, match="prerequisites"):
        table("services").flow(
            priority=1,
            match=match(eth_type=ETH_TYPE_IP),
            cookie=svc,
            actions=[Move("arp_sha", "eth_dst")],
        )


def test_vlan_header_must_exist_for_pop_and_set() -> None:
    cl = table("classification")
    with pytest.raises(IRError, match="VLAN header"):
        cl.flow(priority=1, cookie=CL, actions=[PopVlan()])
    cl.flow(priority=1, match=match(vlan_vid=0x1000 | 5), cookie=CL, actions=[PopVlan()])
    cl.flow(priority=1, cookie=CL, actions=[PushVlan(), SetField("vlan_vid", 0x1000 | 7)])
    with pytest.raises(IRError, match="VLAN_PRESENT"):
        cl.flow(priority=1, cookie=CL, actions=[PushVlan(), SetField("vlan_vid", 7)])


def test_conjunction_rules() -> None:
    ip = match(eth_type=ETH_TYPE_IP, ipv4_src="10.0.0.1")
    table("acl").flow(
        priority=5, match=ip, cookie=SG, actions=[Conjunction(7, 1, 2), Conjunction(8, 2, 3)]
    )
    with pytest.raises(IRError, match="mixed"):
        table("acl").flow(
            priority=5, match=ip, cookie=SG, actions=[Conjunction(7, 1, 2), Goto("services")]
        )
    with pytest.raises(IRError):
        Conjunction(7, 3, 2)
    with pytest.raises(IRError):
        Conjunction(0, 1, 2)
    with pytest.raises(IRError, match="conj_id flow"):
        table("acl").flow(
            priority=5, match=match(conj_id=7), cookie=SG, actions=[Conjunction(8, 1, 2)]
        )


def test_ct_and_nat_values() -> None:
    with pytest.raises(IRError, match="commit"):
        Ct(nat=Nat("src", "10.0.0.1"))
    with pytest.raises(IRError, match="commit"):
        Ct(exec=(SetField("ct_mark", 1),))
    with pytest.raises(IRError, match="ct_mark"):
        Ct(commit=True, exec=(SetField("eth_src", 1),))
    with pytest.raises(IRError):
        Nat("src")
    with pytest.raises(IRError):
        Nat("src", "10.0.0.1", addr_max="fd00::1")
    with pytest.raises(IRError, match="16 bits"):
        table("pre_acl").flow(
            priority=1,
            match=match(eth_type=ETH_TYPE_IP),
            cookie=SG,
            actions=[Ct(zone="src_port_key")],
        )


def test_move_widths_and_bits() -> None:
    out = table("output")
    c = encode("output", 1)
    out.flow(priority=1, cookie=c, actions=[Move("src_port_key", Bits("tun_metadata0", 32, 32))])
    with pytest.raises(IRError, match="16 bits into 32"):
        out.flow(priority=1, cookie=c, actions=[Move(Bits("tun_metadata0", 0, 16), "tun_dst")])
    with pytest.raises(IRError, match="out of range"):
        out.flow(
            priority=1, cookie=c, actions=[Move("src_port_key", Bits("tun_metadata0", 40, 32))]
        )


def test_priority_range_and_groups() -> None:
    with pytest.raises(IRError, match="priority"):
        table("acl").flow(priority=70000, cookie=SG)
    g = table("l2_lookup").group(
        1, "all", [[Load("dst_port_key", 1), Resubmit("pre_acl_egress")], Bucket((Output(9),))]
    )
    assert g.stage == "l2_lookup" and len(g.buckets) == 2
    with pytest.raises(IRError, match="goto_table in a group"):
        table("l2_lookup").group(1, "all", [[Goto("pre_acl_egress")]])
    with pytest.raises(IRError, match="may not continue"):
        table("l2_lookup").group(1, "all", [[Resubmit("acl")]])
    with pytest.raises(IRError, match="exactly one"):
        table("l2_lookup").group(1, "indirect", [[Output(1)], [Output(2)]])


def test_flow_validates_even_without_table() -> None:
    with pytest.raises(IRError):
        Flow("acl", 1, match(in_port=1), (), SG)
    assert Match() == match()


# ---------------------------------------------------------------------------- templates


def test_template_flows_equal_checked_flows() -> None:
    ps = encode("port_security", "p1")
    t = table("port_security").template(
        priority=90,
        cookie_app="port_security",
        varying=("network_key", "src_port_key", "eth_src"),
        masked=("arp_spa",),
        fixed={"eth_type": ETH_TYPE_ARP},
        actions=(Goto("pre_acl"),),
    )
    got = t.flow(ps, 7, 3, 0xFA163E000001, (0x0A000000, 0xFFFFFF00))
    want = table("port_security").flow(
        priority=90,
        cookie=ps,
        match=match(
            network_key=7, src_port_key=3, eth_src="fa:16:3e:00:00:01", arp_spa="10.0.0.0/24"
        ),
        actions=[Goto("pre_acl")],
    )
    assert got == want and hash(got) == hash(want)
    got.validate()
    # a full mask is an exact match, as match() makes it
    assert t.flow(ps, 7, 3, 1, (5, 0xFFFFFFFF)).match.get("arp_spa") == (5, None)


def test_templates_check_shape_once_and_values_always() -> None:
    ps = encode("port_security", "p1")
    t = table("port_security").template(
        priority=90,
        cookie_app="port_security",
        varying=("network_key",),
        masked=("ipv4_src",),
        actions=(Goto("pre_acl"),),
    )
    with pytest.raises(IRError):
        t.flow(ps, 1 << 24, 1)  # network_key is 24 bits
    with pytest.raises(IRError):
        t.flow(ps, 1, (0x0A000001, 0xFFFFFF00))  # host bits under the mask
    with pytest.raises(IRError):
        t.flow(SG, 1, 1)  # another app's cookie
    with pytest.raises(IRError):
        t.flow(ps, 1)  # a value missing
    with pytest.raises(IRError):  # prerequisites decide validity: they are fixed
        table("port_security").template(
            priority=1, cookie_app="port_security", varying=("eth_type",)
        )
    with pytest.raises(IRError):  # the shape is checked like table().flow()
        table("port_security").template(
            priority=1, cookie_app="port_security", varying=("tcp_dst",)
        )
    with pytest.raises(IRError):
        table("port_security").template(
            priority=1, cookie_app="port_security", varying=(), actions=(Goto("output"),)
        )
    with pytest.raises(IRError):  # in_port cannot be masked
        table("classification").template(
            priority=1, cookie_app="classifier", varying=(), masked=("in_port",)
        )
    with pytest.raises(IRError):
        t.flow(ps, -1, (1, None))


def test_template_mask_zero_leaves_the_field_out() -> None:
    ps = encode("port_security", "p1")
    t = table("port_security").template(
        priority=90,
        cookie_app="port_security",
        varying=("network_key",),
        masked=("ipv4_src",),
        actions=(Goto("pre_acl"),),
    )
    assert t.flow(ps, 1, (0, 0)).match == match(network_key=1, eth_type=ETH_TYPE_IP)
    with pytest.raises(IRError):
        t.flow(ps, 1, (5, 0))


def test_template_action_values_equal_checked_flows() -> None:
    sv = encode("services", "p1")
    t = table("services").template(
        priority=100,
        cookie_app="services",
        varying=("network_key", "arp_tpa"),
        fixed={"eth_type": ETH_TYPE_ARP, "arp_op": 1},
        actions=(Move("eth_src", "eth_dst"), SetField("eth_src", 0), Output(1)),
        action_values=(1, 2),
    )
    got = t.flow(sv, 7, 0x0A000005, 0xFA163E000001, 42)
    want = table("services").flow(
        priority=100,
        cookie=sv,
        match=match(network_key=7, eth_type=ETH_TYPE_ARP, arp_op=1, arp_tpa="10.0.0.5"),
        actions=(Move("eth_src", "eth_dst"), SetField("eth_src", 0xFA163E000001), Output(42)),
    )
    assert got == want and hash(got) == hash(want)
    got.validate()
    # the same value twice: equal actions (shared), other values: other actions
    assert t.flow(sv, 7, 6, 1, 2).actions == t.flow(sv, 8, 9, 1, 2).actions
    assert t.flow(sv, 7, 6, 1, 2).actions != t.flow(sv, 7, 6, 1, 3).actions


def test_template_action_values_are_range_checked() -> None:
    cl = encode("classifier", "p1")
    t = table("classification").template(
        priority=100,
        cookie_app="classifier",
        varying=("in_port",),
        actions=(Load("src_port_key", 0), Load("port_ct_zone", 0), Goto("port_security")),
        action_values=(0, 1),
    )
    assert t.flow(cl, 3, 5, 0xFFFF).actions[1] == Load("port_ct_zone", 0xFFFF)
    with pytest.raises(IRError):
        t.flow(cl, 3, 5, 0x10000)  # port_ct_zone is 16 bits
    with pytest.raises(IRError):
        t.flow(cl, 3, -1, 1)
    with pytest.raises(IRError):
        t.flow(cl, 3, "5", 1)  # values are ints
    with pytest.raises(IRError):
        t.flow(cl, 3, 5)  # a value missing
    with pytest.raises(IRError):  # in_port values are OpenFlow port numbers
        t.flow(cl, 0, 5, 1)
    with pytest.raises(IRError):
        t.flow(cl, 0xFF00, 5, 1)
    out = table("output").template(
        priority=100,
        cookie_app="output",
        varying=("network_key",),
        actions=(Output(1),),
        action_values=(0,),
    )
    oc = encode("output", "p1")
    assert out.flow(oc, 1, 0xFFFFFFF8).actions == (Output(0xFFFFFFF8),)  # in_port
    with pytest.raises(IRError):
        out.flow(oc, 1, 0)
    with pytest.raises(IRError):
        out.flow(oc, 1, 0xFF00)
    # only Load, unmasked SetField (not vlan_vid) and Output values vary
    for actions in (
        (Goto("port_security"),),
        (SetField("eth_src", 1, mask=1), Goto("port_security")),
    ):
        with pytest.raises(IRError):
            table("classification").template(
                priority=1,
                cookie_app="classifier",
                varying=(),
                actions=actions,
                action_values=(0,),
            )
    with pytest.raises(IRError):  # no action there
        table("classification").template(
            priority=1, cookie_app="classifier", varying=(), action_values=(0,)
        )
    with pytest.raises(IRError):  # the sample is checked like table().flow()
        table("classification").template(
            priority=1,
            cookie_app="classifier",
            varying=(),
            actions=(Load("next_hop_ipv4", 1),),  # not written by classification
            action_values=(0,),
        )


def test_template_meter_values_equal_checked_flows() -> None:
    from wyvern.apps.punts import METER_FLOW, meter_flow

    cl = encode("classifier", "p1")
    want = table("punt_meter").flow(
        priority=100, cookie=cl, match={"in_port": 7}, actions=(Meter(7), Goto("punt"))
    )
    got = meter_flow(cl, 7)
    assert got == want and hash(got) == hash(want)
    got.validate()
    assert METER_FLOW.flow(cl, 7, 0xFFFF0000).actions[0] == Meter(0xFFFF0000)
    for bad in (0, -1, 0xFFFF0001, "7"):  # Meter's own range, and ints only
        with pytest.raises(IRError):
            METER_FLOW.flow(cl, 7, bad)
        with pytest.raises(IRError):
            METER_FLOW.generic_flow(cl, 7, bad)


def _outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except IRError:
        return IRError


_VALUES = st.one_of(
    st.integers(min_value=-2, max_value=1 << 130),
    st.sampled_from([0, 1, 0xFF00, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFF8, 1 << 24, 1 << 48]),
)
_PAIRS = st.tuples(
    _VALUES, st.one_of(st.none(), _VALUES, st.sampled_from([0, 0xFFFFFF00, (1 << 128) - 1]))
)


@given(st.data())
def test_compiled_templates_equal_the_generic_path(data: st.DataObject) -> None:
    from wyvern.apps import classifier, port_security, punts, services

    template = data.draw(
        st.sampled_from(
            [
                port_security.IN_V4,
                port_security.ND_NA,
                port_security.L2_MAC,
                port_security.IN_ARP_PROBE,
                services.ARP_REPLY,
                services.ND_PUNT,
                classifier.PORT_FLOW,
                punts.METER_FLOW,
            ]
        )
    )
    n_int, n_masked = len(template.names), len(template._masked)
    values: list[object] = [data.draw(_VALUES) for _ in range(n_int)]
    values += [data.draw(_PAIRS) for _ in range(n_masked)]
    values += [data.draw(_VALUES) for _ in range(len(template._slots))]
    if data.draw(st.booleans()):
        values = values[: data.draw(st.integers(0, len(values)))]  # too few
    cookie = data.draw(
        st.sampled_from(
            [
                encode(cookies_app, "p1")
                for cookies_app in ("services", "port_security", "classifier")
            ]
        )
    )
    got = _outcome(template.flow, cookie, *values)
    assert got == _outcome(template.generic_flow, cookie, *values)
    if isinstance(got, Flow):
        got.validate()


def test_template_ct_values_equal_checked_flows_and_keep_their_shape() -> None:
    """A varying Ct (a per-port NAT address and label, the metadata app's): the flow
    equals the checked one; a Ct of another shape is refused."""
    from wyvern.ir import CtClear

    md = encode("metadata", "p1")

    def snat(addr: str, label: int) -> Ct:
        nat = Nat("src", addr)
        return Ct(commit=True, zone=0xEFFF, nat=nat, exec=(SetField("ct_label", label),))

    actions = (CtClear(), snat("169.254.0.1", 0), Output(0xFC00))
    fixed = {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "169.254.169.254", "tcp_dst": 80}
    t = table("metadata").template(
        priority=100,
        cookie_app="metadata",
        varying=("in_port",),
        fixed=fixed,
        actions=actions,
        action_values=(1,),
    )
    got = t.flow(md, 3, snat("169.254.0.3", 1 << 100))
    want = table("metadata").flow(
        priority=100,
        cookie=md,
        match=match(in_port=3, **fixed),
        actions=(CtClear(), snat("169.254.0.3", 1 << 100), Output(0xFC00)),
    )
    assert got == want and got == t.generic_flow(md, 3, snat("169.254.0.3", 1 << 100))
    got.validate()
    for other in (
        snat("fdfe:a9fe:a9fe::3", 1),  # another family: the match is IPv4
        Ct(commit=True, zone=0xEFFE, nat=Nat("src", "169.254.0.3")),  # no exec, other zone
        Ct(zone=0xEFFF, nat=Nat(), table="metadata_out"),
        Output(3),
        3,
    ):
        with pytest.raises(IRError):
            t.flow(md, 3, other)
        with pytest.raises(IRError):
            t.generic_flow(md, 3, other)
    with pytest.raises(IRError):  # a label wider than ct_label
        t.flow(md, 3, snat("169.254.0.3", 1 << 128))
