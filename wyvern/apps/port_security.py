"""Port security: anti-spoofing at ingress (port_security) and egress (port_security_egress).

Ingress, for a local port with port_security_enabled (Neutron semantics, as OVN's
ls_in_port_sec_* stages): a packet continues to pre_acl only if

- its eth_src is the port's MAC or an allowed_address_pairs MAC, and
- IPv4: the source is one of that MAC's addresses (fixed IPs for the port MAC, the
  pair's IP or CIDR for a pair MAC), or it is a DHCP discover/request (0.0.0.0:68 →
  255.255.255.255:67);
- ARP: arp_sha is that MAC and arp_spa one of its addresses (or 0.0.0.0: an RFC 5227
  probe);
- IPv6: the source is one of its addresses or its EUI-64 link-local address; neighbour
  solicitations carry nd_sll = the MAC or none, advertisements nd_target = one of its
  addresses and nd_tll = the MAC or none; DAD solicitations and MLD reports from :: to
  ff02::/16 are allowed;
- a MAC with no address at all (a port without fixed IPs) is checked at L2 only.

Everything else from the port is dropped. Without port security everything passes.

Egress (port_security_egress), for a local destination port with port security: eth_dst
must be one of its MACs or a broadcast/multicast address; for its own MACs, IPv4/IPv6
destinations must be its addresses or broadcast/multicast.

Flows match the network key with the port key (port keys are unique per network only).
Owner: ("port", id) of local ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.apps.classifier import local_port, per_port_affected, per_port_owners
from wyvern.controller.view import Change, LocalView, Port
from wyvern.southbound.cookies import encode
from wyvern.southbound.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    Flow,
    Goto,
    MatchValue,
    match,
    table,
)

ZERO_MAC = "00:00:00:00:00:00"
MCAST_MAC = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # group bit: broadcast + multicast

P_ND = 95  # ND with valid options
P_ND_DROP = 93  # any other ND from the port
P_ALLOW = 90
P_L2_ONLY = 80
P_NO_SECURITY = 50
P_DROP = 10

P_EG_MCAST = 100
P_EG_ALLOW = 90
P_EG_IP_DROP = 80
P_EG_L2 = 70

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
M = dict[str, MatchValue]


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80::/64 + modified EUI-64 of a MAC (what a VM's kernel configures by default)."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)


def allowed_addresses(port: Port) -> dict[str, list[Net]]:
    """MAC (lower case) -> the IPv4/IPv6 networks it may use as source (insertion ordered:
    the port's MAC first)."""
    out: dict[str, list[Net]] = {port.mac.lower(): []}
    for ip in port.ips:
        out[port.mac.lower()].append(ipaddress.ip_network(ip))
    for pair in port.allowed_address_pairs:
        nets = out.setdefault(pair.mac_address.lower(), [])
        net = ipaddress.ip_network(pair.ip_address, strict=False)
        if net not in nets:
            nets.append(net)
    return out


class PortSecurity(App):
    name = "port_security"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return per_port_owners(view)

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return per_port_affected(view, change)

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, _ = found
        cookie = encode("port_security", port_id)
        ingress: M = {"network_key": net.key, "src_port_key": port.key}
        egress: M = {"network_key": net.key, "dst_port_key": port.key}
        if not port.port_security_enabled:
            return [
                table("port_security").flow(
                    priority=P_NO_SECURITY, cookie=cookie, match=ingress, actions=(Goto("pre_acl"),)
                ),
                table("port_security_egress").flow(
                    priority=P_NO_SECURITY, cookie=cookie, match=egress, actions=(Goto("output"),)
                ),
            ]
        flows: dict[object, Flow] = {}  # dedupe by (stage, priority, match)

        def add(direction: str, priority: int, m: M, go: bool) -> None:
            if direction == "in":
                f = table("port_security").flow(
                    priority=priority,
                    cookie=cookie,
                    match=match(**m),
                    actions=(Goto("pre_acl"),) if go else (),
                )
            else:
                f = table("port_security_egress").flow(
                    priority=priority,
                    cookie=cookie,
                    match=match(**m),
                    actions=(Goto("output"),) if go else (),
                )
            flows.setdefault(f.key, f)

        for mac, nets in allowed_addresses(port).items():
            v4 = [n for n in nets if n.version == 4]
            v6 = [n for n in nets if n.version == 6]
            base: M = {**ingress, "eth_src": mac}
            # ---- ingress
            if not nets:
                add("in", P_L2_ONLY, base, True)
            for n in v4:
                add("in", P_ALLOW, {**base, "ipv4_src": n}, True)
                add(
                    "in",
                    P_ALLOW,
                    {**base, "eth_type": ETH_TYPE_ARP, "arp_sha": mac, "arp_spa": n},
                    True,
                )
            if v4 or not nets:
                dhcp: M = {
                    **base,
                    "ipv4_src": "0.0.0.0",
                    "ipv4_dst": "255.255.255.255",
                    "ip_proto": IPPROTO_UDP,
                    "udp_src": 68,
                    "udp_dst": 67,
                }
                add("in", P_ALLOW, dhcp, True)
                probe: M = {**base, "eth_type": ETH_TYPE_ARP, "arp_sha": mac, "arp_spa": "0.0.0.0"}
                add("in", P_ALLOW, probe, True)
            v6_src: list[Net] = [*v6, ipaddress.ip_network(eui64_link_local(mac))]
            icmp6: M = {**base, "eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6}
            for a6 in v6_src:
                add("in", P_ALLOW, {**base, "ipv6_src": a6}, True)
                for sll in (mac, ZERO_MAC):
                    ns: M = {**icmp6, "ipv6_src": a6, "icmpv6_type": 135, "nd_sll": sll}
                    add("in", P_ND, ns, True)
                for target in v6_src:
                    for tll in (mac, ZERO_MAC):
                        na: M = {
                            **icmp6,
                            "ipv6_src": a6,
                            "icmpv6_type": 136,
                            "nd_target": target,
                            "nd_tll": tll,
                        }
                        add("in", P_ND, na, True)
            dad: M = {**icmp6, "ipv6_src": "::", "ipv6_dst": "ff02::/16"}
            add("in", P_ND, {**dad, "icmpv6_type": 135, "nd_sll": ZERO_MAC}, True)
            for mld in (131, 143):
                add("in", P_ALLOW, {**dad, "icmpv6_type": mld}, True)
            # ---- egress
            eg: M = {**egress, "eth_dst": mac}
            if not nets:
                add("eg", P_EG_L2, eg, True)
                continue
            for v4dst in (*v4, ipaddress.ip_network("255.255.255.255"), "224.0.0.0/4"):
                add("eg", P_EG_ALLOW, {**eg, "ipv4_dst": v4dst}, True)
            for v6dst in (*v6_src, "ff00::/8"):
                add("eg", P_EG_ALLOW, {**eg, "ipv6_dst": v6dst}, True)
            add("eg", P_EG_IP_DROP, {**eg, "eth_type": ETH_TYPE_IP}, False)
            add("eg", P_EG_IP_DROP, {**eg, "eth_type": ETH_TYPE_IPV6}, False)
            add("eg", P_EG_L2, eg, True)

        for nd_type in (135, 136):  # ND that did not match the checks above
            nd: M = {**ingress, "eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6}
            add("in", P_ND_DROP, {**nd, "icmpv6_type": nd_type}, False)
        add("in", P_DROP, dict(ingress), False)
        add("eg", P_EG_MCAST, {**egress, "eth_dst": MCAST_MAC}, True)
        add("eg", P_DROP, dict(egress), False)
        return list(flows.values())
