"""ICMP errors for packets a router cannot forward: built from the punt the L3 app sends."""

from __future__ import annotations

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, udp

from tests.apps import scenario as sc
from wyvern.apps.punts import PUNT_DHCP4, PUNT_ICMP4_ERROR
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
