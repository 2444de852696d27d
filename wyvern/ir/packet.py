"""Packets for the reference simulator: header fields as ints, plus builders.

A `Packet` maps IR field names (`ir.FIELDS`: eth_src, ipv4_dst, tcp_flags, ct_state…)
and the physical registers (reg0..reg15, metadata) to ints. Anything absent reads 0, so
registers start zeroed and an untagged packet has vlan_vid 0. Register names from
`registers.py` (src_port_key…) read and write their bits of the physical register.

An ICMP error carries the packet it is about in `inner`, which lets the conntrack model
mark it +rel. `length` is the frame's size in bytes, Ethernet header included (what
`check_pkt_larger` compares); builders make small frames unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FIELDS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VLAN_PRESENT,
    MatchValue,
    format_value,
    parse_value,
    registers,
)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_TCP_LETTERS = {"F": TCP_FIN, "S": TCP_SYN, "R": TCP_RST, "P": TCP_PSH, "A": TCP_ACK}
BROADCAST = "ff:ff:ff:ff:ff:ff"
MIN_FRAME = 64  # bytes: a packet's length unless a test or trace says otherwise
ETH_HEADER = 14  # an untagged Ethernet header: a frame is its IP packet + 14 bytes
VLAN_HEADER = 4  # an 802.1Q tag (push_vlan/pop_vlan change a frame's length by it)

_PHYSICAL = {f"reg{i}": 32 for i in range(16)} | {"metadata": 64}


class Packet:
    """Mutable header fields of one packet (see the module docstring)."""

    __slots__ = ("_f", "inner", "length")

    def __init__(
        self,
        fields: Mapping[str, int] | None = None,
        inner: Packet | None = None,
        length: int = MIN_FRAME,
    ):
        self._f: dict[str, int] = {}
        self.inner = inner
        self.length = length
        for name, value in (fields or {}).items():
            self[name] = value

    def __getitem__(self, name: str) -> int:
        if name in FIELDS or name in _PHYSICAL:
            return self._f.get(name, 0)
        reg = registers.register(name)
        value = 0
        for seg in reg.segments():
            bits = (self._f.get(seg.field, 0) >> seg.start) & ((1 << seg.width) - 1)
            value |= bits << seg.offset
        return value

    def __setitem__(self, name: str, value: int) -> None:
        if name in FIELDS or name in _PHYSICAL:
            bits = FIELDS[name].bits if name in FIELDS else _PHYSICAL[name]
            if not 0 <= value < (1 << bits):
                raise ValueError(f"{name}={value:#x} does not fit {bits} bits")
            if value:
                self._f[name] = value
            else:
                self._f.pop(name, None)
            return
        reg = registers.register(name)
        if not 0 <= value <= reg.max_value:
            raise ValueError(f"{name}={value:#x} does not fit {reg.width} bits")
        for seg in reg.segments():
            mask = ((1 << seg.width) - 1) << seg.start
            bits = ((value >> seg.offset) << seg.start) & mask
            self[seg.field] = (self._f.get(seg.field, 0) & ~mask) | bits

    def get(self, name: str, default: int = 0) -> int:
        return self._f.get(name, default)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._f.items()))

    def copy(self) -> Packet:
        p = Packet(inner=self.inner, length=self.length)
        p._f = dict(self._f)
        return p

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Packet)
            and self._f == other._f
            and self.inner == other.inner
            and self.length == other.length
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for name, value in self:
            spec = FIELDS.get(name)
            text = format_value(spec.kind, spec.bits, value) if spec else hex(value)
            parts.append(f"{name}={text}")
        return "Packet(" + ",".join(parts) + (",inner=…" if self.inner else "") + ")"


def sized(p: Packet, ip_length: int) -> Packet:
    """P with an IP packet of IP_LENGTH bytes (header included) inside its frame (and its
    802.1Q tag, if it has one): what a `ping -s` or a TCP segment of that size is on the
    wire, for MTU checks."""
    p.length = ip_length + ETH_HEADER + (VLAN_HEADER if p["vlan_vid"] else 0)
    return p


def packet(**fields: MatchValue) -> Packet:
    """A packet from field values in the forms `ir.match` takes ("10.0.0.1", MACs…)."""
    return _packet(fields)


def _packet(fields: Mapping[str, MatchValue], inner: Packet | None = None) -> Packet:
    p = Packet(inner=inner)
    for name, raw in fields.items():
        value, mask = parse_value(name, raw)
        full = 1 << (FIELDS[name].bits if name in FIELDS else registers.register(name).width)
        if mask != full - 1:
            raise ValueError(f"packet field {name} cannot be masked")
        p[name] = value
    return p


def _l3(src: str, dst: str) -> dict[str, MatchValue]:
    if ":" in src:
        return {"eth_type": ETH_TYPE_IPV6, "ipv6_src": src, "ipv6_dst": dst}
    return {"eth_type": ETH_TYPE_IP, "ipv4_src": src, "ipv4_dst": dst}


def _vlan(vlan: int | None) -> dict[str, MatchValue]:
    return {} if vlan is None else {"vlan_vid": VLAN_PRESENT | vlan}


def tcp_flags(letters: str) -> int:
    """ "SA" → SYN|ACK."""
    return sum(_TCP_LETTERS[c] for c in set(letters.upper()))


def tcp(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str = "S",
    *,
    ttl: int = 64,
    vlan: int | None = None,
) -> Packet:
    """A TCP segment (IPv4 or IPv6 by the address form); flags as letters: S, SA, A, F, R."""
    l4 = {"tcp_src": sport, "tcp_dst": dport, "tcp_flags": tcp_flags(flags)}
    return ip(in_port, eth_src, eth_dst, src, dst, IPPROTO_TCP, ttl=ttl, vlan=vlan, l4=l4)


def udp(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    ttl: int = 64,
    vlan: int | None = None,
) -> Packet:
    l4 = {"udp_src": sport, "udp_dst": dport}
    return ip(in_port, eth_src, eth_dst, src, dst, IPPROTO_UDP, ttl=ttl, vlan=vlan, l4=l4)


def sctp(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    ttl: int = 64,
    vlan: int | None = None,
) -> Packet:
    """An SCTP packet (IPv4 or IPv6 by the address form)."""
    l4 = {"sctp_src": sport, "sctp_dst": dport}
    return ip(in_port, eth_src, eth_dst, src, dst, IPPROTO_SCTP, ttl=ttl, vlan=vlan, l4=l4)


def ip(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    proto: int,
    *,
    ttl: int = 64,
    vlan: int | None = None,
    l4: Mapping[str, MatchValue] | None = None,
) -> Packet:
    """An IP packet of any protocol number (GRE, ESP, DCCP...), with the L4 fields given
    (tcp, udp and sctp fill them in)."""
    return _packet(
        {
            "in_port": in_port,
            "eth_src": eth_src,
            "eth_dst": eth_dst,
            "ip_proto": proto,
            "nw_ttl": ttl,
            **(l4 or {}),
            **_l3(src, dst),
            **_vlan(vlan),
        }
    )


def icmp_echo(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    *,
    reply: bool = False,
    ttl: int = 64,
    vlan: int | None = None,
) -> Packet:
    """An ICMP (or ICMPv6) echo request, or reply."""
    if ":" in src:
        icmp: dict[str, MatchValue] = {
            "ip_proto": IPPROTO_ICMPV6,
            "icmpv6_type": 129 if reply else 128,
        }
    else:
        icmp = {"ip_proto": IPPROTO_ICMP, "icmp_type": 0 if reply else 8}
    return _packet(
        {
            "in_port": in_port,
            "eth_src": eth_src,
            "eth_dst": eth_dst,
            "nw_ttl": ttl,
            **_l3(src, dst),
            **icmp,
            **_vlan(vlan),
        }
    )


def icmp_error(
    in_port: int,
    eth_src: str,
    eth_dst: str,
    src: str,
    dst: str,
    about: Packet,
    *,
    type: int = 3,
    code: int = 3,
    ttl: int = 64,
) -> Packet:
    """An ICMP error (default: port unreachable) about packet `about`."""
    if ":" in src:
        icmp: dict[str, MatchValue] = {
            "ip_proto": IPPROTO_ICMPV6,
            "icmpv6_type": type,
            "icmpv6_code": code,
        }
    else:
        icmp = {"ip_proto": IPPROTO_ICMP, "icmp_type": type, "icmp_code": code}
    return _packet(
        {
            "in_port": in_port,
            "eth_src": eth_src,
            "eth_dst": eth_dst,
            "nw_ttl": ttl,
            **_l3(src, dst),
            **icmp,
        },
        inner=about.copy(),
    )


def arp(
    in_port: int,
    eth_src: str,
    spa: str,
    tpa: str,
    *,
    op: int = 1,
    eth_dst: str = BROADCAST,
    sha: str | None = None,
    tha: str = "00:00:00:00:00:00",
    vlan: int | None = None,
) -> Packet:
    """An ARP request (op=1, broadcast) or reply (op=2)."""
    return _packet(
        {
            "in_port": in_port,
            "eth_src": eth_src,
            "eth_dst": eth_dst,
            "eth_type": ETH_TYPE_ARP,
            "arp_op": op,
            "arp_spa": spa,
            "arp_tpa": tpa,
            "arp_sha": sha or eth_src,
            "arp_tha": tha,
            **_vlan(vlan),
        }
    )


def nd_solicit(
    in_port: int, eth_src: str, src: str, target: str, *, eth_dst: str = "33:33:ff:00:00:01"
) -> Packet:
    """An IPv6 neighbour solicitation for `target`."""
    return packet(
        in_port=in_port,
        eth_src=eth_src,
        eth_dst=eth_dst,
        eth_type=ETH_TYPE_IPV6,
        ipv6_src=src,
        ipv6_dst="ff02::1:ff00:1",
        ip_proto=IPPROTO_ICMPV6,
        nw_ttl=255,
        icmpv6_type=135,
        nd_target=target,
        nd_sll=eth_src,
    )


def router_solicit(in_port: int, eth_src: str, src: str) -> Packet:
    """An IPv6 router solicitation from `src` (a link-local address, or ::) to all-routers."""
    return packet(
        in_port=in_port,
        eth_src=eth_src,
        eth_dst="33:33:00:00:00:02",
        eth_type=ETH_TYPE_IPV6,
        ipv6_src=src,
        ipv6_dst="ff02::2",
        ip_proto=IPPROTO_ICMPV6,
        nw_ttl=255,
        icmpv6_type=133,
        icmpv6_code=0,
    )


def router_advert(in_port: int, eth_src: str, src: str) -> Packet:
    """An IPv6 router advertisement from `src` to all-nodes."""
    return packet(
        in_port=in_port,
        eth_src=eth_src,
        eth_dst="33:33:00:00:00:01",
        eth_type=ETH_TYPE_IPV6,
        ipv6_src=src,
        ipv6_dst="ff02::1",
        ip_proto=IPPROTO_ICMPV6,
        nw_ttl=255,
        icmpv6_type=134,
        icmpv6_code=0,
    )
