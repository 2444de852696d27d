"""ICMPv4 errors the routers send: time exceeded and destination unreachable.

The L3 app punts a packet it cannot forward with userdata (PUNT_ICMP4_ERROR, type,
code); this builds the error the router would send back: from the router's address on
the network the packet came from, to its sender, quoting the offending IP header and the
first 8 bytes of its payload (RFC 792). Pure: records and bytes in, a frame out. The
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
