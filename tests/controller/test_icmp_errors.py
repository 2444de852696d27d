"""ICMP errors for packets a router cannot forward: built from the punt the L3 app sends."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmp, ipv4, packet, udp

from tests.apps import scenario as sc
from wyvern.apps.punts import PUNT_DHCP4, PUNT_ICMP4_ERROR
from wyvern.controller import icmp_errors
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.ir.registers import register
from wyvern.model.view import LocalView
from wyvern.southbound.ofchannel import PacketIn

MAC_A, MAC_R1, MAC_R2 = "fa:16:3e:00:00:0a", "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
OF_A = 5


def view() -> LocalView:
    return sc.build_view(
        networks=[sc.network("n1", 101), sc.network("n2", 102)],
        subnets=[sc.subnet("s1", "n1", "10.0.1.0/24"), sc.subnet("s2", "n2", "10.0.2.0/24")],
        ports=[
            sc.router_port("rp1", "n1", 1, MAC_R1, "10.0.1.1", "r"),
            sc.router_port("rp2", "n2", 1, MAC_R2, "10.0.2.1", "r"),
            sc.port("a", "n1", 2, MAC_A, ["10.0.1.5"]),
        ],
        routers=[sc.router("r", 7)],
        local={"a": OF_A},
    )


def frame(ttl: int = 1, proto_payload: bytes = b"hello-udp") -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=MAC_R1, src=MAC_A, ethertype=0x0800))
    p.add_protocol(ipv4.ipv4(src="10.0.1.5", dst="10.0.2.9", proto=17, ttl=ttl))
    p.add_protocol(udp.udp(src_port=4000, dst_port=33434))
    p.add_protocol(proto_payload)
    p.serialize()
    return bytes(p.data)


def fields(network_key: int, port_key: int, router_key: int) -> dict[str, int]:
    """Register values as the channel decodes them from NXT_PACKET_IN2."""
    out: dict[str, int] = {}
    for name, value in (
        ("network_key", network_key),
        ("src_port_key", port_key),
        ("router_key", router_key),
    ):
        for seg in register(name).segments():
            out[seg.field] = out.get(seg.field, 0) | (
                ((value >> seg.offset) & ((1 << seg.width) - 1)) << seg.start
            )
    return out


def punt(data: bytes, icmp_type: int = 11, code: int = 0) -> PacketIn:
    return PacketIn(
        in_port=OF_A,
        data=data,
        userdata=bytes((PUNT_ICMP4_ERROR, icmp_type, code)),
        fields=fields(101, 2, 7),
    )


def test_ttl_expiry_gets_time_exceeded_from_the_router() -> None:
    d = PacketInDispatcher(view())
    original = frame()
    (out,) = d.handle(punt(original), now=0.0)
    assert out.ofport == OF_A
    reply = packet.Packet(out.data)
    eth = reply.get_protocol(ethernet.ethernet)
    ip = reply.get_protocol(ipv4.ipv4)
    err = reply.get_protocol(icmp.icmp)
    assert (eth.src, eth.dst) == (MAC_R1, MAC_A)
    assert (ip.src, ip.dst, ip.proto) == ("10.0.1.1", "10.0.1.5", 1)
    assert (err.type, err.code) == (11, 0)
    # RFC 792: the original IP header and the first 8 bytes of its payload are quoted.
    assert err.data.data == original[14 : 14 + 20 + 8]


def test_unreachable_and_the_rules_against_answering() -> None:
    d = PacketInDispatcher(view())
    (out,) = d.handle(punt(frame(ttl=64), icmp_type=3, code=0), now=0.0)
    assert packet.Packet(out.data).get_protocol(icmp.icmp).type == 3
    # An ICMP error is never answered with another error.
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=MAC_R1, src=MAC_A, ethertype=0x0800))
    p.add_protocol(ipv4.ipv4(src="10.0.1.5", dst="10.0.2.9", proto=1, ttl=1))
    p.add_protocol(icmp.icmp(type_=3, code=1, csum=0, data=icmp.dest_unreach(data=b"x" * 28)))
    p.serialize()
    assert d.handle(punt(bytes(p.data)), now=0.0) == []
    # Unknown router or port: nothing is sent.
    stray = PacketIn(OF_A, frame(), bytes((PUNT_ICMP4_ERROR, 11, 0)), fields(101, 2, 99))
    assert d.handle(stray, now=0.0) == []


def test_errors_are_rate_limited_per_port() -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1.0, burst=3.0))
    sent = sum(len(d.handle(punt(frame()), now=0.0)) for _ in range(10))
    assert sent == 3
    assert d.stats["rate_limited"] == 7
    assert len(d.handle(punt(frame()), now=2.0)) == 1  # refilled
    assert PUNT_DHCP4 in d.handlers and PUNT_ICMP4_ERROR in d.handlers


# -- the byte codec against os-ken, the packet library it replaced ---------------------------
def osken_error(
    frame: bytes, icmp_type: int, icmp_code: int, router_ip: str, router_mac: str
) -> bytes | None:
    """build_error as it was written with os-ken (the oracle)."""
    pkt = packet.Packet(frame)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    if ip.proto == 1:
        inner = pkt.get_protocol(icmp.icmp)
        if inner is not None and inner.type in (3, 4, 5, 11, 12):
            return None
    if ip.offset & 0x1FFF:
        return None
    src = ipaddress.ip_address(ip.src)
    if src.is_multicast or src.is_unspecified or ip.src == "255.255.255.255":
        return None
    quoted = frame[14 : 14 + ip.header_length * 4 + 8]
    body = (
        icmp.TimeExceeded(data=quoted)
        if icmp_type == icmp_errors.ICMP_TIME_EXCEEDED
        else icmp.dest_unreach(data=quoted)
    )
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=router_mac, ethertype=0x0800))
    reply.add_protocol(ipv4.ipv4(src=router_ip, dst=ip.src, proto=1, ttl=64))
    reply.add_protocol(icmp.icmp(type_=icmp_type, code=icmp_code, csum=0, data=body))
    reply.serialize()
    return bytes(reply.data)


@given(
    st.ip_addresses(v=4).map(str),
    st.sampled_from([1, 6, 17]),
    st.integers(0, 255),
    st.sampled_from([0, 0x4000, 0x2000, 0x2001, 0x0005]),  # DF, MF, offsets
    # at least the 8 bytes of an ICMP error's header (type, code, checksum, 4 more): os-ken
    # cannot parse a shorter one, and then builds an error where we see the type byte of
    # an ICMP error and do not
    st.binary(min_size=7, max_size=64),
    st.sampled_from([(11, 0), (3, 0), (3, 1), (3, 4)]),
)
def test_errors_are_the_bytes_os_ken_built(
    src: str,
    proto: int,
    inner_type: int,
    flags_offset: int,
    payload: bytes,
    type_code: tuple[int, int],
) -> None:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=MAC_R1, src=MAC_A, ethertype=0x0800))
    p.add_protocol(
        ipv4.ipv4(
            src=src,
            dst="10.0.2.9",
            proto=proto,
            ttl=1,
            flags=flags_offset >> 13,
            offset=flags_offset & 0x1FFF,
        )
    )
    p.add_protocol(bytes([inner_type]) + payload if proto == 1 else payload)
    p.serialize()
    frame = bytes(p.data)
    ours = icmp_errors.build_error(frame, *type_code, "10.0.1.1", MAC_R1)
    assert ours == osken_error(frame, *type_code, "10.0.1.1", MAC_R1)
    addr = ipaddress.ip_address(src)
    answered = not (
        flags_offset & 0x1FFF
        or addr.is_multicast
        or addr.is_unspecified
        or src == "255.255.255.255"
        or (proto == 1 and inner_type in (3, 4, 5, 11, 12))
    )
    assert (ours is not None) == answered
