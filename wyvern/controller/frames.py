"""Ethernet, IPv4/IPv6, UDP, ICMP and ICMPv6 as bytes: what the punt handlers read and write.

The DHCP server, the ND responder and the routers' ICMP errors parse one punted frame and
build one reply. os-ken's packet library did this before, but importing it loads every
protocol it knows (BGP, zebra, oslo.config...), ~14 MiB with its ofproto, for a few fixed
headers. These codecs build the same bytes as os-ken's (no IP options, IPv4 identification
0, checksums filled in) and parse what the handlers need; tests keep os-ken as the oracle.

Parsers return None for a frame too short or of another kind, never raise.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_TYPE_IP = 0x0800
ETH_TYPE_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of DATA."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- parsing ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ethernet:
    dst: str
    src: str
    ethertype: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class IPv4:
    header_length: int  # in bytes
    total_length: int
    flags_offset: int  # the flags (3 bits) and fragment offset (13 bits) word
    ttl: int
    proto: int
    src: str
    dst: str
    header: bytes
    payload: bytes  # up to total_length

    @property
    def offset(self) -> int:
        """The fragment offset, in 8-byte units."""
        return self.flags_offset & 0x1FFF


@dataclass(frozen=True, slots=True)
class IPv6:
    next_header: int
    hop_limit: int
    src: str
    dst: str
    payload: bytes  # up to payload_length


@dataclass(frozen=True, slots=True)
class Udp:
    src_port: int
    dst_port: int
    length: int
    payload: bytes  # up to length


def parse_ethernet(frame: bytes) -> Ethernet | None:
    if len(frame) < _ETH.size:
        return None
    dst, src, ethertype = _ETH.unpack_from(frame)
    return Ethernet(mac_text(dst), mac_text(src), ethertype, frame[_ETH.size :])


def parse_ipv4(packet: bytes) -> IPv4 | None:
    if len(packet) < _IPV4.size:
        return None
    ver_ihl, _, total, _, flags_offset, ttl, proto, _, src, dst = _IPV4.unpack_from(packet)
    ihl = (ver_ihl & 0xF) * 4
    if ver_ihl >> 4 != 4 or ihl < _IPV4.size or len(packet) < ihl or total < ihl:
        return None
    return IPv4(
        header_length=ihl,
        total_length=total,
        flags_offset=flags_offset,
        ttl=ttl,
        proto=proto,
        src=str(ipaddress.IPv4Address(src)),
        dst=str(ipaddress.IPv4Address(dst)),
        header=packet[:ihl],
        payload=packet[ihl:total],
    )


def parse_ipv6(packet: bytes) -> IPv6 | None:
    """The fixed header only: a next header other than the payload's is not followed."""
    if len(packet) < _IPV6.size:
        return None
    ver_tc_fl, length, nxt, hop_limit, src, dst = _IPV6.unpack_from(packet)
    if ver_tc_fl >> 28 != 6:
        return None
    return IPv6(
        next_header=nxt,
        hop_limit=hop_limit,
        src=str(ipaddress.IPv6Address(src)),
        dst=str(ipaddress.IPv6Address(dst)),
        payload=packet[_IPV6.size : _IPV6.size + length],
    )


def parse_udp(segment: bytes) -> Udp | None:
    if len(segment) < _UDP.size:
        return None
    sport, dport, length, _ = _UDP.unpack_from(segment)
    if length < _UDP.size:
        return None
    return Udp(sport, dport, length, segment[_UDP.size : length])


# -- building -----------------------------------------------------------------------------
def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _ETH.pack(mac_bytes(dst), mac_bytes(src), ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    """An IPv4 packet: no options, identification 0, no fragmentation flags."""
    fields = [0x45, 0, _IPV4.size + len(payload), 0, 0, ttl, proto, 0]
    addrs = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    fields[7] = checksum(_IPV4.pack(*fields, *addrs))
    return _IPV4.pack(*fields, *addrs) + payload


def udp4(src: str, dst: str, src_port: int, dst_port: int, payload: bytes) -> bytes:
    """A UDP datagram (header and PAYLOAD) inside IPv4 SRC -> DST, checksum filled in."""
    length = _UDP.size + len(payload)
    pseudo = struct.pack(
        "!4s4sxBH",
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
        IPPROTO_UDP,
        length,
    )
    segment = _UDP.pack(src_port, dst_port, length, 0) + payload
    return _UDP.pack(src_port, dst_port, length, checksum(pseudo + segment)) + payload


def icmp4(icmp_type: int, code: int, body: bytes) -> bytes:
    """An ICMPv4 message: type, code, checksum, then BODY (rest of header and data)."""
    raw = struct.pack("!BBH", icmp_type, code, 0) + body
    return raw[:2] + struct.pack("!H", checksum(raw)) + raw[4:]


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 255) -> bytes:
    """An IPv6 packet without extension headers (traffic class and flow label 0)."""
    return (
        _IPV6.pack(
            6 << 28,
            len(payload),
            next_header,
            hop_limit,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
        + payload
    )


def udp6(src: str, dst: str, src_port: int, dst_port: int, payload: bytes) -> bytes:
    """A UDP datagram (header and PAYLOAD) inside IPv6 SRC -> DST, checksum filled in (a
    computed 0 is sent as 0xffff: IPv6 forbids an absent UDP checksum, RFC 8200)."""
    length = _UDP.size + len(payload)
    pseudo = struct.pack(
        "!16s16sI3xB",
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
        length,
        IPPROTO_UDP,
    )
    segment = _UDP.pack(src_port, dst_port, length, 0) + payload
    return _UDP.pack(src_port, dst_port, length, checksum(pseudo + segment) or 0xFFFF) + payload


def icmp6(src: str, dst: str, icmp_type: int, code: int, body: bytes) -> bytes:
    """An ICMPv6 message from SRC to DST, its checksum over the IPv6 pseudo-header."""
    raw = struct.pack("!BBH", icmp_type, code, 0) + body
    pseudo = struct.pack(
        "!16s16sI3xB",
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
        len(raw),
        IPPROTO_ICMPV6,
    )
    return raw[:2] + struct.pack("!H", checksum(pseudo + raw)) + raw[4:]


# -- ARP ------------------------------------------------------------------------------------
ETH_TYPE_ARP = 0x0806
ETH_TYPE_VLAN = 0x8100
BROADCAST = "ff:ff:ff:ff:ff:ff"
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, slots=True)
class Arp:
    op: int
    sha: str
    spa: str
    tha: str
    tpa: str


def parse_arp(payload: bytes) -> Arp | None:
    """An Ethernet/IPv4 ARP packet (the Ethernet payload)."""
    if len(payload) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(payload)
    if (htype, ptype, hlen, plen) != (1, ETH_TYPE_IP, 6, 4):
        return None
    return Arp(
        op,
        mac_text(sha),
        str(ipaddress.IPv4Address(spa)),
        mac_text(tha),
        str(ipaddress.IPv4Address(tpa)),
    )


def arp_request(src_mac: str, src_ip: str, target_ip: str, vlan_vid: int | None = None) -> bytes:
    """A broadcast who-has TARGET_IP from SRC_MAC/SRC_IP; 802.1Q-tagged with VLAN_VID
    (the 12-bit VLAN id) when given."""
    body = _ARP.pack(
        1,
        ETH_TYPE_IP,
        6,
        4,
        1,
        mac_bytes(src_mac),
        ipaddress.IPv4Address(src_ip).packed,
        bytes(6),
        ipaddress.IPv4Address(target_ip).packed,
    )
    if vlan_vid is None:
        return ethernet(BROADCAST, src_mac, ETH_TYPE_ARP, body)
    tci_and_type = struct.pack("!HH", vlan_vid & 0x0FFF, ETH_TYPE_ARP)
    return ethernet(BROADCAST, src_mac, ETH_TYPE_VLAN, tci_and_type + body)


def tagged(frame: bytes, vlan_vid: int | None) -> bytes:
    """FRAME with an 802.1Q tag of VLAN_VID (the 12-bit VLAN id) after its MACs; FRAME
    itself when VLAN_VID is None."""
    if vlan_vid is None:
        return frame
    return frame[:12] + struct.pack("!HH", ETH_TYPE_VLAN, vlan_vid & 0x0FFF) + frame[12:]
