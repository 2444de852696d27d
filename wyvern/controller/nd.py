"""IPv6 neighbour advertisements for known addresses (the services stage's ND responder).

The services app punts a neighbour solicitation (NS) whose target is a fixed IPv6 address
of a port of the network with PUNT_ND_NS (OpenFlow cannot rewrite ND options, so the
advertisement is built here, as OVN's pinctrl does). This finds the port owning the
target in the local view and builds the neighbour advertisement (NA, RFC 4861 §7.2.4)
it would send:

- Ethernet: from the owner's MAC to the solicitor's MAC;
- IPv6: from the target address to the solicitation's source, or to all-nodes
  (ff02::1) when that was the unspecified address (a DAD probe), hop limit 255;
- ICMPv6 136: flags Router (the owner is a router interface), Solicited (unless sent to
  all-nodes) and Override; target link-layer address option = the owner's MAC.

A router interface's link-local address (EUI-64 of its MAC: the default router its
advertisements name, wyvern.controller.ra) is answered like its fixed addresses.

The metadata app punts solicitations for the metadata service's fe80::a9fe:a9fe the
same way: they are answered with METADATA_MAC (wyvern.apps.metadata).

It also speaks ND for router gateways (wyvern.controller.neighbours): the neighbour
solicitation a gateway sends for a next hop without a MAC (`build_solicitation`: from the
gateway's address to the target's solicited-node group, RFC 4861 §7.2.2, with the source
link-layer address option), and what a neighbour tells a gateway (`parse_neighbour`: the
sender of an NS with its source link-layer option, the target of an NA with its target
link-layer option), which the agent learns like an ARP sender.

Pure: records and bytes in, a frame out. The dispatcher's per-port token bucket
rate-limits it like every punt.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from wyvern.apps.port_security import eui64_link_local
from wyvern.controller import frames
from wyvern.ir.metadata import METADATA_MAC, SERVICE_V6
from wyvern.model.view import LocalView, Network, Port

ETH_TYPE_IPV6 = frames.ETH_TYPE_IPV6
IPPROTO_ICMPV6 = frames.IPPROTO_ICMPV6
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT = 135, 136
ND_OPTION_SLA = 1  # source link-layer address
ND_OPTION_TLA = 2  # target link-layer address
ALL_NODES = "ff02::1"
ND_HOP_LIMIT = 255
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0b100, 0b010, 0b001  # nd_neighbor.res bits


@dataclass(frozen=True, slots=True)
class Solicitation:
    eth_src: str
    ipv6_src: str
    target: str


def parse_solicitation(frame: bytes) -> Solicitation | None:
    """The fields of a valid NS (RFC 4861 §7.1.1: hop limit 255, code 0), else None."""
    eth = frames.parse_ethernet(frame)
    ip6 = frames.parse_ipv6(eth.payload) if eth and eth.ethertype == ETH_TYPE_IPV6 else None
    if eth is None or ip6 is None or ip6.next_header != IPPROTO_ICMPV6:
        return None
    icmp6 = ip6.payload
    if len(icmp6) < 24 or icmp6[0] != ND_NEIGHBOR_SOLICIT or icmp6[1] != 0:
        return None  # (24: type, code, checksum, reserved, target)
    if ip6.hop_limit != ND_HOP_LIMIT:
        return None
    target = ipaddress.IPv6Address(icmp6[8:24])
    if target.is_multicast or target.is_unspecified:
        return None
    return Solicitation(eth.src, ip6.src, str(target))


def _claims(port: Port, addr: ipaddress.IPv6Address) -> bool:
    """Whether an allowed address pair of PORT covers ADDR (a VRRP/keepalived VIP)."""
    return any(
        addr in ipaddress.ip_network(p.ip_address, strict=False) for p in port.allowed_address_pairs
    )


def _ll(port: Port) -> ipaddress.IPv6Address | None:
    """PORT's EUI-64 link-local address if it has an IPv6 address (a router interface
    advertises it as the default router's)."""
    if not any(":" in ip for ip in port.ips):
        return None
    return eui64_link_local(port.mac)


def target_owner(view: LocalView, network: Network, target: str, solicitor: Port) -> Port | None:
    """The port of NETWORK with fixed IPv6 address TARGET, if the responder answers for it:
    not the solicitor itself (DAD) and not an address another port claims as a VIP."""
    addr = ipaddress.IPv6Address(target)
    ports = view.network_ports(network.id)
    owner = next(
        (
            p
            for p in ports
            for ip in p.ips
            if ipaddress.ip_address(ip).version == 6 and ipaddress.ip_address(ip) == addr
        ),
        None,
    )
    if owner is None and addr.is_link_local:  # a router interface's (wyvern.controller.ra)
        owner = next((p for p in ports if p.is_router_port and _ll(p) == addr), None)
    if owner is None or owner.id == solicitor.id:
        return None
    if any(_claims(p, addr) for p in ports if p.id != owner.id):
        return None
    return owner


def build_advertisement(sol: Solicitation, owner_mac: str, router: bool) -> bytes:
    """The NA answering SOL for its target, owned by OWNER_MAC (a router port if ROUTER)."""
    unspecified = ipaddress.IPv6Address(sol.ipv6_src).is_unspecified
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0) | (0 if unspecified else NA_SOLICITED)
    dst = ALL_NODES if unspecified else sol.ipv6_src
    body = struct.pack("!I16s", flags << 29, ipaddress.IPv6Address(sol.target).packed)
    body += struct.pack("!BB6s", ND_OPTION_TLA, 1, frames.mac_bytes(owner_mac))
    icmp6 = frames.icmp6(sol.target, dst, ND_NEIGHBOR_ADVERT, 0, body)
    ip6 = frames.ipv6(sol.target, dst, IPPROTO_ICMPV6, icmp6, hop_limit=ND_HOP_LIMIT)
    return frames.ethernet(sol.eth_src, owner_mac, ETH_TYPE_IPV6, ip6)


METADATA_SERVICE = ipaddress.IPv6Address(SERVICE_V6)


def answer(view: LocalView, network: Network, solicitor: Port, frame: bytes) -> bytes | None:
    """The NA for the NS FRAME sent by SOLICITOR on NETWORK, or None (not ours to answer)."""
    sol = parse_solicitation(frame)
    if sol is None:
        return None
    if ipaddress.IPv6Address(sol.target) == METADATA_SERVICE:  # (apps/metadata.py)
        return build_advertisement(sol, METADATA_MAC, False)
    owner = target_owner(view, network, sol.target, solicitor)
    if owner is None:
        return None
    return build_advertisement(sol, owner.mac, owner.is_router_port)


def solicited_node(target: str) -> tuple[str, str]:
    """(IPv6 address, MAC) of TARGET's solicited-node multicast group (RFC 4291 §2.7.1,
    RFC 2464 §7): ff02::1:ffXX:XXXX from its low 24 bits, 33:33 + the group's low 32."""
    low = ipaddress.IPv6Address(target).packed[13:]
    group = ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + low)
    mac = frames.mac_text(b"\x33\x33" + group.packed[12:])
    return str(group), mac


def build_solicitation(src_mac: str, src_ip: str, target: str) -> bytes:
    """A multicast NS for TARGET from SRC_IP/SRC_MAC (with the source link-layer option,
    so the answer comes straight back), hop limit 255."""
    group, mac = solicited_node(target)
    body = bytes(4) + ipaddress.IPv6Address(target).packed
    body += struct.pack("!BB6s", ND_OPTION_SLA, 1, frames.mac_bytes(src_mac))
    icmp6 = frames.icmp6(src_ip, group, ND_NEIGHBOR_SOLICIT, 0, body)
    ip6 = frames.ipv6(src_ip, group, IPPROTO_ICMPV6, icmp6, hop_limit=ND_HOP_LIMIT)
    return frames.ethernet(mac, src_mac, ETH_TYPE_IPV6, ip6)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """What an NS or NA says about its sender: IP is at MAC."""

    kind: int  # ND_NEIGHBOR_SOLICIT or ND_NEIGHBOR_ADVERT
    ip: str
    mac: str | None  # None: an NS without a source link-layer option (nothing to learn)
    target: str  # the NS's or NA's target


def _link_options(options: bytes) -> dict[int, str] | None:
    """The link-layer address options (RFC 4861 §4.6.1) by type, the first of each; None
    when an option is malformed (zero length or past the end: §7.1 drops the packet)."""
    out: dict[int, str] = {}
    while options:
        if len(options) < 2 or options[1] == 0 or len(options) < options[1] * 8:
            return None
        otype, olen = options[0], options[1]
        if otype in (ND_OPTION_SLA, ND_OPTION_TLA) and olen == 1:
            out.setdefault(otype, frames.mac_text(options[2:8]))
        options = options[olen * 8 :]
    return out


def parse_neighbour(frame: bytes) -> Neighbour | None:
    """A valid NS or NA (hop limit 255, code 0; RFC 4861 §7.1) and what it teaches: an
    NS's sender (its source, unless unspecified: DAD) at its source link-layer address;
    an NA's target at its target link-layer address, else the frame's source MAC."""
    eth = frames.parse_ethernet(frame)
    ip6 = frames.parse_ipv6(eth.payload) if eth and eth.ethertype == ETH_TYPE_IPV6 else None
    if eth is None or ip6 is None or ip6.next_header != IPPROTO_ICMPV6:
        return None
    icmp6 = ip6.payload
    if len(icmp6) < 24 or icmp6[1] != 0 or ip6.hop_limit != ND_HOP_LIMIT:
        return None
    target = ipaddress.IPv6Address(icmp6[8:24])
    options = _link_options(icmp6[24:])
    if target.is_multicast or target.is_unspecified or options is None:
        return None
    if icmp6[0] == ND_NEIGHBOR_SOLICIT:
        if ipaddress.IPv6Address(ip6.src).is_unspecified:
            return Neighbour(ND_NEIGHBOR_SOLICIT, ip6.src, None, str(target))
        return Neighbour(ND_NEIGHBOR_SOLICIT, ip6.src, options.get(ND_OPTION_SLA), str(target))
    if icmp6[0] == ND_NEIGHBOR_ADVERT:
        mac = options.get(ND_OPTION_TLA) or eth.src
        return Neighbour(ND_NEIGHBOR_ADVERT, str(target), mac, str(target))
    return None
