"""ICMPv4 errors the routers send: time exceeded and destination unreachable.

The L3 app punts a packet it cannot forward with userdata (PUNT_ICMP4_ERROR, type,
code); this builds the error the router would send back: from the router's address on
the network the packet came from, to its sender, quoting the offending IP header and the
first 8 bytes of its payload (RFC 792). Pure: records and bytes in, a frame out. The
dispatcher's per-port token bucket rate-limits it like every punt.
"""

from __future__ import annotations

import ipaddress

from os_ken.lib.packet import ethernet, icmp, ipv4, packet

from wyvern.model.view import LocalView, Network, Router

ICMP_TIME_EXCEEDED = 11
ICMP_DEST_UNREACH = 3


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
    pkt = packet.Packet(frame)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    if ip.proto == 1:  # never answer an ICMP error with an error
        inner = pkt.get_protocol(icmp.icmp)
        if inner is not None and inner.type in (3, 4, 5, 11, 12):
            return None
    if ip.offset & 0x1FFF:  # only about the first fragment
        return None
    src = ipaddress.ip_address(ip.src)
    if src.is_multicast or src.is_unspecified or ip.src == "255.255.255.255":
        return None
    quoted = frame[14 : 14 + ip.header_length * 4 + 8]  # the pipeline punts untagged frames
    if icmp_type == ICMP_TIME_EXCEEDED:
        body = icmp.TimeExceeded(data=quoted)
    else:
        body = icmp.dest_unreach(data=quoted)
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=router_mac, ethertype=0x0800))
    reply.add_protocol(ipv4.ipv4(src=router_ip, dst=ip.src, proto=1, ttl=64))
    reply.add_protocol(icmp.icmp(type_=icmp_type, code=icmp_code, csum=0, data=body))
    reply.serialize()
    return bytes(reply.data)
