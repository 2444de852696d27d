"""ICMPv6 errors for packets a router cannot forward (RFC 4443): built from the punt the
L3 app sends, byte for byte against os-ken; who answers, to whom, from which address;
and the handler fed random bytes and mutated frames, which it drops and counts."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet, udp

from tests.apps import scenario as sc
from tests.apps.test_gateway import MAC_GW, MAC_HOST, PATCH
from tests.apps.test_gateway_v6 import GW6, HOST6, VM6, view_of
from wyvern.apps.punts import PUNT_ICMP6_ERROR
from wyvern.controller import frames, icmp_errors
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.ir.registers import register
from wyvern.model.view import LocalView
from wyvern.southbound.ofchannel import PacketIn

MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
MAC_R1, MAC_R2 = "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
A6, B6, R1, R2 = "2001:db8:1::5", "2001:db8:2::5", "2001:db8:1::1", "2001:db8:2::1"
OF_A, OF_B = 5, 6


def view() -> LocalView:
    """VM a on n1 (MTU 1500) and b on n2 (MTU 1400) behind router r (key 7)."""
    return sc.build_view(
        networks=[sc.network("n1", 101), sc.network("n2", 102, mtu=1400)],
        subnets=[
            sc.subnet("s1", "n1", "2001:db8:1::/64", ip_version=6),
            sc.subnet("s2", "n2", "2001:db8:2::/64", ip_version=6),
        ],
        ports=[
            sc.router_port("rp1", "n1", 1, MAC_R1, R1, "r"),
            sc.router_port("rp2", "n2", 1, MAC_R2, R2, "r"),
            sc.port("a", "n1", 2, MAC_A, [A6]),
            sc.port("b", "n2", 2, MAC_B, [B6]),
        ],
        routers=[sc.router("r", 7)],
        local={"a": OF_A, "b": OF_B},
    )


def frame(
    src: str = A6,
    dst: str = B6,
    *,
    eth_src: str = MAC_A,
    hop_limit: int = 1,
    payload: bytes = b"hello-udp",
    nxt: int = 17,
) -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=MAC_R1, src=eth_src, ethertype=0x86DD))
    p.add_protocol(ipv6.ipv6(src=src, dst=dst, nxt=nxt, hop_limit=hop_limit))
    if nxt == 17:
        p.add_protocol(udp.udp(src_port=4000, dst_port=33434))
    p.add_protocol(payload)
    p.serialize()
    return bytes(p.data)


def regs(**values: int) -> dict[str, int]:
    """Register values as the channel decodes them from NXT_PACKET_IN2."""
    out: dict[str, int] = {}
    for name, value in values.items():
        for seg in register(name).segments():
            out[seg.field] = out.get(seg.field, 0) | (
                ((value >> seg.offset) & ((1 << seg.width) - 1)) << seg.start
            )
    return out


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def punt(data: bytes, icmp_type: int = 3, *, in_port: int = OF_A, **values: int) -> PacketIn:
    fields = regs(**{"router_key": 7, "network_key": 101, "src_port_key": 2, **values})
    return PacketIn(in_port, data, bytes((PUNT_ICMP6_ERROR, icmp_type, 0)), fields)


def parsed(data: bytes) -> tuple[ethernet.ethernet, ipv6.ipv6, icmpv6.icmpv6]:
    pkt = packet.Packet(data)
    return (
        pkt.get_protocol(ethernet.ethernet),
        pkt.get_protocol(ipv6.ipv6),
        pkt.get_protocol(icmpv6.icmpv6),
    )


# -- the builder against os-ken ---------------------------------------------------------------
def osken_error6(
    offending: bytes, icmp_type: int, code: int, src: str, mac: str, dst_mac: str, mtu: int
) -> bytes:
    """The error as os-ken builds it (checksum over the pseudo-header its own)."""
    dst = str(ipaddress.IPv6Address(offending[22:38]))
    body = (mtu if icmp_type == 2 else 0).to_bytes(4, "big") + offending[14:][:1232]
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=dst_mac, src=mac, ethertype=0x86DD))
    p.add_protocol(ipv6.ipv6(src=src, dst=dst, nxt=58, hop_limit=64))
    p.add_protocol(icmpv6.icmpv6(type_=icmp_type, code=code, csum=0, data=body))
    p.serialize()
    return bytes(p.data)


@given(
    st.ip_addresses(v=6).filter(lambda a: not (a.is_multicast or a.is_unspecified)).map(str),
    st.binary(max_size=1600),
    st.sampled_from([(3, 0), (1, 0), (2, 0)]),
    st.integers(1280, 9000),
)
def test_errors_are_the_bytes_os_ken_builds(
    src: str, payload: bytes, type_code: tuple[int, int], mtu: int
) -> None:
    offending = frame(src, B6, payload=payload)
    ours = icmp_errors.build_error6(offending, *type_code, R1, MAC_R1, mtu=mtu, dst_mac=MAC_A)
    if ipaddress.IPv6Address(src).is_loopback:
        assert ours is None
        return
    assert ours == osken_error6(offending, *type_code, R1, MAC_R1, MAC_A, mtu)
    assert ours is not None and len(ours) - 14 <= 1280  # RFC 4443 2.4(c)


def test_time_exceeded_quotes_the_packet_and_comes_from_the_router() -> None:
    d = PacketInDispatcher(view())
    original = frame()
    (out,) = d.handle(punt(original), now=0.0)
    assert out.ofport == OF_A
    eth, ip, err = parsed(out.data)
    assert (eth.src, eth.dst) == (MAC_R1, MAC_A)
    assert (ip.src, ip.dst, ip.nxt) == (R1, A6, 58)
    assert (err.type_, err.code) == (3, 0)
    assert out.data[14 + 40 + 8 :] == original[14:]  # the whole packet: it fits
    assert d.stats["icmp6_error_3"] == 1


def test_no_route_is_unreachable() -> None:
    d = PacketInDispatcher(view())
    (out,) = d.handle(punt(frame(dst="2001:db8:99::1", hop_limit=64), 1), now=0.0)
    _, ip, err = parsed(out.data)
    assert (ip.src, ip.dst, err.type_, err.code) == (R1, A6, 1, 0)


def test_packet_too_big_carries_the_egress_mtu_and_goes_to_the_sender() -> None:
    d = PacketInDispatcher(view())
    # after routing: the frame's source MAC is the router's on n2, hop limit decremented,
    # the network key n2's; the sender's MAC is in routed_eth_src
    big = frame(eth_src=MAC_R2, hop_limit=63, payload=b"x" * 1400)
    pin = punt(big, 2, network_key=102, src_port_key=1, routed_eth_src=mac_int(MAC_A))
    (out,) = d.handle(pin, now=0.0)
    assert out.ofport == OF_A
    eth, ip, err = parsed(out.data)
    assert (eth.src, eth.dst, ip.src, ip.dst) == (MAC_R1, MAC_A, R1, A6)
    assert (err.type_, err.code) == (2, 0)
    assert out.data[14 + 40 + 4 : 14 + 40 + 8] == (1400).to_bytes(4, "big")
    assert len(out.data) - 14 == 1280  # quoted as far as fits
    assert out.data[14 + 48 :] == big[14 : 14 + 1232]


def test_the_router_answers_from_its_address_on_the_senders_subnet() -> None:
    v = sc.build_view(
        networks=[sc.network("n1", 101)],
        subnets=[
            sc.subnet("s1", "n1", "2001:db8:1::/64", ip_version=6),
            sc.subnet("s3", "n1", "2001:db8:3::/64", ip_version=6),
        ],
        ports=[
            sc.port(
                "rp",
                "n1",
                1,
                MAC_R1,
                [R1, "2001:db8:3::1"],
                device_owner="network:router_interface",
                device_id="r",
            ),
            sc.port("a", "n1", 2, MAC_A, [A6, "2001:db8:3::5"]),
        ],
        routers=[sc.router("r", 7)],
        local={"a": OF_A},
    )
    r = v.routers["r"]
    n1 = v.networks["n1"]
    assert icmp_errors.router_address6(v, r, n1, "2001:db8:3::5") == ("2001:db8:3::1", MAC_R1)
    assert icmp_errors.router_address6(v, r, n1, A6) == (R1, MAC_R1)
    assert icmp_errors.router_address6(v, r, n1, "fe80::5") in {
        (R1, MAC_R1),
        ("2001:db8:3::1", MAC_R1),
    }
    assert icmp_errors.link_local("fa:16:3e:00:01:01") == "fe80::f816:3eff:fe00:101"


def test_what_is_never_answered() -> None:
    d = PacketInDispatcher(view())
    # an ICMPv6 error, also behind extension headers
    error = frame(nxt=58, payload=bytes((1, 0, 0, 0)) + b"\0" * 44)
    hop_by_hop = bytes((58, 0)) + b"\x01\x04\0\0\0\0"  # next header ICMPv6, PadN
    behind = frame(nxt=0, payload=hop_by_hop + bytes((3, 0, 0, 0)) + b"\0" * 44)
    echo = frame(nxt=58, payload=bytes((128, 0, 0, 0)) + b"ping")
    assert d.handle(punt(echo), now=0.0) != []  # (an echo request is answered)
    for data in (
        error,
        behind,
        frame(src="::"),
        frame(src="ff02::1"),
        frame(dst="ff0e::1"),  # (to multicast: only a packet too big)
    ):
        assert d.handle(punt(data), now=0.0) == [], data.hex()
    # no such router; a sender that is no local port nor the gateway's patch
    assert d.handle(punt(frame(), router_key=99), now=0.0) == []
    assert d.handle(punt(frame(), in_port=77), now=0.0) == []
    assert d.stats["icmp6_error_dropped"] == 7


def test_from_outside_through_the_gateway_back_out_of_the_patch() -> None:
    v = view_of()
    d = PacketInDispatcher(v)
    big = frame(HOST6, VM6, eth_src=MAC_GW, hop_limit=63, payload=b"y" * 1500)
    pin = punt(
        big,
        2,
        in_port=PATCH,
        router_key=7,
        network_key=100,
        routed_eth_src=mac_int(MAC_HOST),
    )
    (out,) = d.handle(pin, now=0.0)
    assert out.ofport == PATCH
    eth, ip, err = parsed(out.data)
    assert (eth.src, eth.dst, ip.src, ip.dst) == (MAC_GW, MAC_HOST, GW6, HOST6)
    assert err.type_ == 2 and out.data[58:62] == (1500).to_bytes(4, "big")


def test_errors_are_rate_limited_per_port() -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1.0, burst=3.0))
    sent = sum(len(d.handle(punt(frame()), now=0.0)) for _ in range(10))
    assert sent == 3 and d.stats["rate_limited"] == 7
    assert len(d.handle(punt(frame(), in_port=OF_B), now=0.0)) == 1  # another port's own


# -- bad input: random bytes and mutated frames never crash the agent ---------------------------
@settings(max_examples=300)
@given(
    st.binary(max_size=200),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([OF_A, OF_B, PATCH, 1, 0xFFFF]),
    st.integers(0, (1 << 48) - 1),
)
def test_random_bytes_are_dropped_and_counted(
    data: bytes, icmp_type: int, code: int, in_port: int, eth_src: int
) -> None:
    d = PacketInDispatcher(view())
    pin = PacketIn(
        in_port,
        data,
        bytes((PUNT_ICMP6_ERROR, icmp_type, code)),
        regs(router_key=7, network_key=102, routed_eth_src=eth_src),
    )
    outs = d.handle(pin, now=0.0)
    assert outs == [] or len(outs) == 1
    assert (
        d.stats["icmp6_error_dropped"]
        + sum(n for k, n in d.stats.items() if k.startswith("icmp6_error_") and k[12:].isdigit())
        == 1
    )


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    st.integers(0, 400),
    st.sampled_from([1, 2, 3]),
    st.binary(max_size=3),
)
def test_mutated_frames_are_answered_well_formed_or_dropped(
    flips: list[tuple[int, int]], cut: int, icmp_type: int, userdata_tail: bytes
) -> None:
    data = bytearray(frame(payload=b"z" * 120, hop_limit=1))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    d = PacketInDispatcher(view())
    pin = PacketIn(
        OF_A,
        bytes(data[:cut]),
        bytes((PUNT_ICMP6_ERROR, icmp_type, 0))[: 1 + len(userdata_tail)],
        regs(router_key=7, network_key=102, routed_eth_src=mac_int(MAC_A)),
    )
    outs = d.handle(pin, now=0.0)
    for out in outs:  # whatever is sent is a valid ICMPv6 error from the router
        eth = frames.parse_ethernet(out.data)
        assert eth is not None and eth.src == MAC_R1
        ip = frames.parse_ipv6(eth.payload)
        assert ip is not None and ip.next_header == 58 and ip.src == R1
        pseudo = (
            ipaddress.IPv6Address(ip.src).packed
            + ipaddress.IPv6Address(ip.dst).packed
            + len(ip.payload).to_bytes(4, "big")
            + b"\0\0\0\x3a"
        )
        assert frames.checksum(pseudo + ip.payload) == 0
        assert len(eth.payload) <= 1280
    if not outs:
        assert d.stats["icmp6_error_dropped"] == 1


def test_a_router_with_one_port_per_subnet_answers_from_its_ipv6_port() -> None:
    """(add_router_interface by subnet gives each subnet its own port on the network)"""
    v = sc.build_view(
        networks=[sc.network("n1", 101)],
        subnets=[
            sc.subnet("s4", "n1", "10.0.1.0/24"),
            sc.subnet("s1", "n1", "2001:db8:1::/64", ip_version=6),
        ],
        ports=[
            sc.router_port("rp4", "n1", 1, MAC_R2, "10.0.1.1", "r"),
            sc.router_port("rp6", "n1", 3, MAC_R1, R1, "r"),
            sc.port("a", "n1", 2, MAC_A, [A6, "10.0.1.5"]),
        ],
        routers=[sc.router("r", 7)],
        local={"a": OF_A},
    )
    found = icmp_errors.router_address6(v, v.routers["r"], v.networks["n1"], A6)
    assert found == (R1, MAC_R1)
    (out,) = PacketInDispatcher(v).handle(punt(frame()), now=0.0)
    eth, ip, _ = parsed(out.data)
    assert (eth.src, ip.src) == (MAC_R1, R1)
