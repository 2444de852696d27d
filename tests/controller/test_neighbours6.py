"""IPv6 neighbours of a router gateway: the NS a gateway chassis sends for a next hop (and
to refresh a learned binding), what an NS or NA from the physical network teaches, the NA
answering an NS for the gateway's address, and the dispatcher's two ND punts. The frames
are checked byte for byte against os-ken (which computes the ICMPv6 checksum itself)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from tests.apps.test_gateway import MAC_GW, MAC_HOST, MAC_UP, PATCH
from tests.apps.test_gateway_v6 import GW6, HOST6, UP6, learn, view_of
from wyvern.apps.punts import PUNT_ND_LEARN, PUNT_ND_REQUEST
from wyvern.controller import frames, nd, neighbours
from wyvern.controller.packetin import PacketInDispatcher
from wyvern.ir.registers import register
from wyvern.southbound.ofchannel import PacketIn

ipv6s = st.ip_addresses(v=6).map(str)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def osken_solicitation(src_mac: str, src_ip: str, target: str) -> bytes:
    """build_solicitation as os-ken builds it (the oracle)."""
    group = ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("ff02::1:ff00:0"))
        | (int(ipaddress.IPv6Address(target)) & 0xFFFFFF)
    )
    mac = "33:33:" + ":".join(f"{b:02x}" for b in group.packed[12:])
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=mac, src=src_mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src_ip, dst=str(group), nxt=58, hop_limit=255))
    pkt.add_protocol(
        icmpv6.icmpv6(
            type_=icmpv6.ND_NEIGHBOR_SOLICIT,
            code=0,
            data=icmpv6.nd_neighbor(dst=target, option=icmpv6.nd_option_sla(hw_src=src_mac)),
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def osken_nd(kind: int, src: str, target: str, eth_src: str, mac: str | None) -> bytes:
    """An NS (with a source link-layer option if MAC) or NA (target link-layer), by os-ken."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=MAC_GW, src=eth_src, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src, dst=GW6, nxt=58, hop_limit=255))
    option: icmpv6.nd_option_la | None = None
    if mac is not None:
        cls = icmpv6.nd_option_sla if kind == 135 else icmpv6.nd_option_tla
        option = cls(hw_src=mac)
    pkt.add_protocol(
        icmpv6.icmpv6(type_=kind, code=0, data=icmpv6.nd_neighbor(dst=target, option=option))
    )
    pkt.serialize()
    return bytes(pkt.data)


@given(macs, ipv6s, ipv6s)
def test_solicitations_match_os_ken(src_mac: str, src_ip: str, target: str) -> None:
    ours = nd.build_solicitation(src_mac, src_ip, target)
    assert ours == osken_solicitation(src_mac, src_ip, target)
    # and os-ken reads back what we meant: its checksum check passes
    parsed = packet.Packet(ours).get_protocol(icmpv6.icmpv6)
    assert parsed is not None and parsed.type_ == 135
    assert ipaddress.ip_address(parsed.data.dst) == ipaddress.ip_address(target)


@given(st.sampled_from([135, 136]), ipv6s, ipv6s, macs, st.one_of(st.none(), macs))
def test_what_an_ns_or_na_teaches(
    kind: int, src: str, target: str, eth: str, mac: str | None
) -> None:
    got = nd.parse_neighbour(osken_nd(kind, src, target, eth, mac))
    t = ipaddress.IPv6Address(target)
    if t.is_multicast or t.is_unspecified:
        assert got is None
        return
    assert got is not None and got.kind == kind
    assert ipaddress.ip_address(got.target) == t
    if kind == 136:  # the target, at its link-layer option (else the frame's source)
        assert (ipaddress.ip_address(got.ip), got.mac) == (t, mac or eth)
    elif ipaddress.IPv6Address(src).is_unspecified:  # DAD: nothing to learn
        assert got.mac is None
    else:
        assert (ipaddress.ip_address(got.ip), got.mac) == (ipaddress.ip_address(src), mac)


def test_malformed_nd_is_not_parsed() -> None:
    good = osken_nd(136, UP6, UP6, MAC_UP, MAC_UP)
    assert nd.parse_neighbour(good) is not None
    assert nd.parse_neighbour(good[:21] + b"\x40" + good[22:]) is None  # hop limit 64
    assert nd.parse_neighbour(good[:70]) is None  # cut inside the target
    assert nd.parse_neighbour(good[:-7] + b"\x00" + good[-6:]) is None  # a zero-length
    assert nd.parse_neighbour(good[:-7] + b"\x02" + good[-6:]) is None  # past the end
    assert nd.parse_neighbour(good[:54] + b"\x80" + good[55:]) is None  # an echo request


def ns_from_host(target: str = GW6, src: str = HOST6) -> bytes:
    return nd.build_solicitation(MAC_HOST, src, target)


def test_the_gateway_chassis_answers_an_ns_for_its_address_and_learns_the_asker() -> None:
    view = view_of()
    net, rkey = view.networks["ext"], view.routers["r"].key
    found = neighbours.nd_answer(view, net, rkey, ns_from_host())
    assert found is not None and found[0] == PATCH
    assert found[1] == nd.build_advertisement(nd.Solicitation(MAC_HOST, HOST6, GW6), MAC_GW, True)
    b = neighbours.learned_nd(view, net, ns_from_host())
    assert b is not None and (b.network_id, b.ip, b.mac) == ("ext", HOST6, MAC_HOST)
    # not for another address, nor on a chassis that does not host the gateway
    assert neighbours.nd_answer(view, net, rkey, ns_from_host(UP6)) is None
    other = view_of(chassis={"hv1": 1, "hv2": 2})
    assert neighbours.nd_answer(other, other.networks["ext"], rkey, ns_from_host()) is None


def test_what_is_not_learned() -> None:
    view = view_of()
    net = view.networks["ext"]
    learn(view, HOST6, MAC_HOST)
    assert neighbours.learned_nd(view, net, ns_from_host()) is None  # nothing new
    assert neighbours.learned_nd(view, net, ns_from_host(src="::")) is None  # DAD
    assert neighbours.learned_nd(view, net, ns_from_host(src="2001:db8:5::1")) is None  # off
    assert neighbours.learned_nd(view, net, ns_from_host(src=GW6)) is None  # a port's
    na = osken_nd(136, UP6, UP6, MAC_UP, "fa:16:3e:00:00:99")
    b = neighbours.learned_nd(view, net, na)
    assert b is not None and (b.ip, b.mac) == (UP6, "fa:16:3e:00:00:99")


def test_an_unknown_next_hop_is_solicited_and_a_learned_one_refreshed() -> None:
    view = view_of()
    net, rkey = view.networks["ext"], view.routers["r"].key
    assert neighbours.solicit(view, net, rkey, int(ipaddress.IPv6Address(UP6))) == (
        PATCH,
        nd.build_solicitation(MAC_GW, GW6, UP6),
    )
    assert neighbours.solicit(view, net, rkey, int(ipaddress.IPv6Address("2001:db8:5::1"))) is None
    assert neighbours.refreshes(view) == []
    learn(view, UP6, MAC_UP)
    assert neighbours.refreshes(view) == [(PATCH, nd.build_solicitation(MAC_GW, GW6, UP6))]
    assert neighbours.refreshes(view_of(chassis={"hv1": 1, "hv2": 2})) == []


def test_takeover_announces_the_ipv6_address_with_an_unsolicited_na() -> None:
    sent = [f for _, f in neighbours.gateway_announcements(view_of(), "r")]
    na = [f for f in sent if frames.parse_ethernet(f).ethertype == frames.ETH_TYPE_IPV6]  # type: ignore[union-attr]
    assert len(sent) == 2 and len(na) == 1
    pkt = packet.Packet(na[0])
    ip6, icmp6 = pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    assert (ip6.src, ip6.dst, icmp6.type_) == (GW6, "ff02::1", 136)
    assert icmp6.data.res == 0b101  # Router and Override, not Solicited
    assert icmp6.data.option.hw_src == MAC_GW


def test_vlan_frames_are_tagged() -> None:
    frame = nd.build_solicitation(MAC_GW, GW6, UP6)
    tagged = frames.tagged(frame, 101)
    assert tagged[12:16] == b"\x81\x00\x00\x65" and tagged[16:] == frame[12:]
    assert frames.tagged(frame, None) == frame


def pin(kind: int, data: bytes, view_key: int, rkey: int, hop: int = 0) -> PacketIn:
    fields = {"in_port": PATCH, "metadata": view_key, "reg12": rkey}
    for seg in register("next_hop_ipv6").segments():
        fields[seg.field] = (hop >> seg.offset) & ((1 << seg.width) - 1)
    return PacketIn(PATCH, data, bytes([kind]), fields)


def test_the_dispatcher_answers_learns_and_solicits() -> None:
    view = view_of()
    d = PacketInDispatcher(view)
    nkey, rkey = view.networks["ext"].key, view.routers["r"].key
    outs = d.handle(pin(PUNT_ND_LEARN, ns_from_host(), nkey, rkey), 0.0)
    assert [(o.ofport, nd.parse_neighbour(o.data)) for o in outs] == [
        (PATCH, nd.Neighbour(136, GW6, MAC_GW, GW6))
    ]
    assert [(b.ip, b.mac) for b in d.learned] == [(HOST6, MAC_HOST)]
    hop = int(ipaddress.IPv6Address(UP6))
    outs = d.handle(pin(PUNT_ND_REQUEST, b"", nkey, rkey, hop), 1.0)
    assert [(o.ofport, o.data) for o in outs] == [(PATCH, nd.build_solicitation(MAC_GW, GW6, UP6))]
    assert pin(PUNT_ND_REQUEST, b"", nkey, rkey, hop).register("next_hop_ipv6") == hop
