"""ICMP errors the routers send: time exceeded and destination unreachable (IPv4 and
IPv6), and IPv6's packet too big.

The L3 app punts a packet it cannot forward with userdata (PUNT_ICMP4_ERROR, type,
code); this builds the error the router would send back: from the router's address on
the network the packet came from, to its sender, quoting the offending IP header and the
first 8 bytes of its payload (RFC 792). The IPv6 ones (PUNT_ICMP6_ERROR) follow RFC
4443: as much of the offending packet as fits in 1280 bytes, and a packet too big
carries the egress network's MTU. Pure: records and bytes in, a frame out. The
dispatcher's per-port token bucket rate-limits it like every punt.
"""

from __future__ import annotations

import ipaddress

from wyvern.controller import frames
from wyvern.model.view import LocalView, Network, Router

ICMP_TIME_EXCEEDED = 11
ICMP_DEST_UNREACH = 3
_ERROR_TYPES = {bytes([t]) for t in (3, 4, 5, 11, 12)}  # unreachable ... parameter problem


def router_address(view: LocalView, router: Router, network: Network) -> tuple[str, str] | None:
    """(IPv4 address, MAC) of the router's interface on `network`."""
    for itf in router.interfaces:
        if itf.network_id != network.id:
            continue
        port = view.ports.get(itf.port_id)
        if port is None:
            continue
        for ip, _cidr in itf.ips:
            if ipaddress.ip_address(ip).version == 4:
                return ip, port.mac
    return None


def build_error(
    frame: bytes, icmp_type: int, icmp_code: int, router_ip: str, router_mac: str
) -> bytes | None:
    """The ICMP error for `frame`, or None when RFC 1812 says not to send one."""
    eth = frames.parse_ethernet(frame)
    ip = frames.parse_ipv4(eth.payload) if eth and eth.ethertype == frames.ETH_TYPE_IP else None
    if eth is None or ip is None:
        return None
    if ip.proto == frames.IPPROTO_ICMP and ip.payload[:1] in _ERROR_TYPES:
        return None  # never answer an ICMP error with an error
    if ip.offset:  # only about the first fragment
        return None
    src = ipaddress.ip_address(ip.src)
    if src.is_multicast or src.is_unspecified or ip.src == "255.255.255.255":
        return None
    quoted = frame[14 : 14 + ip.header_length + 8]  # the pipeline punts untagged frames
    # Time exceeded: 4 unused bytes; unreachable: unused, length (0: RFC 792), next-hop MTU.
    message = frames.icmp4(icmp_type, icmp_code, b"\0\0\0\0" + quoted)
    reply = frames.ipv4(router_ip, ip.src, frames.IPPROTO_ICMP, message, ttl=64)
    return frames.ethernet(eth.src, router_mac, frames.ETH_TYPE_IP, reply)


# -- ICMPv6 (RFC 4443) ---------------------------------------------------------------------
ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
MIN_MTU6 = 1280  # an ICMPv6 error, IPv6 header included, never exceeds it
_QUOTE6 = MIN_MTU6 - 40 - 8  # what of the offending packet fits after both headers
_EXTENSION_HEADERS = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_FRAGMENT = 44


def router_address6(
    view: LocalView, router: Router, network: Network, sender: str | None = None
) -> tuple[str, str] | None:
    """(IPv6 address, MAC) of the router's interface on NETWORK that an ICMPv6 error to
    SENDER comes from: its address on the sender's subnet, else its first global one,
    else the interface's EUI-64 link-local address (what its RAs come from)."""
    try:
        who = ipaddress.IPv6Address(sender) if sender else None
    except ValueError:
        who = None
    # (a router may have several ports on one network: one per subnet added by subnet)
    mine: list[tuple[ipaddress.IPv6Interface, str]] = []
    first_mac: str | None = None
    for itf in router.interfaces:
        if itf.network_id != network.id:
            continue
        port = view.ports.get(itf.port_id)
        if port is None:
            continue
        first_mac = first_mac or port.mac
        for ip, cidr in itf.ips:
            try:
                addr = ipaddress.ip_interface(f"{ip}/{ipaddress.ip_network(cidr).prefixlen}")
            except ValueError:
                continue
            if isinstance(addr, ipaddress.IPv6Interface):
                mine.append((addr, port.mac))
    on_link = [m for m in mine if who is not None and who in m[0].network]
    best = on_link or mine
    if best:
        return str(best[0][0].ip), best[0][1]
    return (link_local(first_mac), first_mac) if first_mac is not None else None


def ipv6_source(frame: bytes) -> str | None:
    """The IPv6 source address of an untagged Ethernet FRAME, if it holds IPv6."""
    eth = frames.parse_ethernet(frame)
    if eth is None or eth.ethertype != frames.ETH_TYPE_IPV6:
        return None
    ip = frames.parse_ipv6(eth.payload)
    return ip.src if ip is not None else None


def link_local(mac: str) -> str:
    """The EUI-64 link-local address of MAC (RFC 4291 appendix A)."""
    raw = bytearray(frames.mac_bytes(mac))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid))


def _is_icmp6_error(ip: frames.IPv6) -> bool:
    """Whether the packet is an ICMPv6 error (type < 128), past extension headers."""
    nxt, rest = ip.next_header, ip.payload
    for _ in range(8):  # (a chain longer than this is not worth answering either)
        if nxt in _EXTENSION_HEADERS and len(rest) >= 2:
            nxt, rest = rest[0], rest[(rest[1] + 1) * 8 :]
        elif nxt == _FRAGMENT and len(rest) >= 8:
            if int.from_bytes(rest[2:4], "big") >> 3:  # not the first fragment: unknown
                return False
            nxt, rest = rest[0], rest[8:]
        else:
            break
    return nxt == frames.IPPROTO_ICMPV6 and rest[:1] != b"" and rest[0] < 128


def build_error6(
    frame: bytes,
    icmp_type: int,
    icmp_code: int,
    router_ip: str,
    router_mac: str,
    *,
    mtu: int = 0,
    dst_mac: str | None = None,
) -> bytes | None:
    """The ICMPv6 error for FRAME (an untagged Ethernet frame holding IPv6), or None when
    RFC 4443 section 2.4 says not to send one: about an ICMPv6 error, from an unspecified
    or multicast source, or (but packet too big) to a multicast destination. MTU is the
    packet too big's MTU field; DST_MAC the sender's MAC when the frame's source MAC is
    no longer it (routing rewrote it)."""
    eth = frames.parse_ethernet(frame)
    if eth is None or eth.ethertype != frames.ETH_TYPE_IPV6:
        return None
    ip = frames.parse_ipv6(eth.payload)
    if ip is None:
        return None
    src, dst = ipaddress.IPv6Address(ip.src), ipaddress.IPv6Address(ip.dst)
    if src.is_multicast or src.is_unspecified or src.is_loopback:
        return None
    if dst.is_multicast and icmp_type != ICMP6_PACKET_TOO_BIG:
        return None
    if _is_icmp6_error(ip):
        return None  # never answer an ICMPv6 error with an error
    # The offending packet as far as it goes (its payload length, not the frame's
    # padding), cut so that the error fits the minimum MTU.
    quoted = eth.payload[: 40 + len(ip.payload)][:_QUOTE6]
    param = mtu if icmp_type == ICMP6_PACKET_TOO_BIG else 0
    message = frames.icmp6(
        router_ip, ip.src, icmp_type, icmp_code, param.to_bytes(4, "big") + quoted
    )
    reply = frames.ipv6(router_ip, ip.src, frames.IPPROTO_ICMPV6, message, hop_limit=64)
    return frames.ethernet(dst_mac or eth.src, router_mac, frames.ETH_TYPE_IPV6, reply)
