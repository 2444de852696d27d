"""Services (after the ingress ACL): ARP responder and DHCPv4 punt, per network.

ARP responder: an ARP request (arp_op=1) for a fixed IPv4 address of any port of the
network (local or remote, router interfaces included) is turned into the reply right
here and sent back out of the input port, so it is never flooded::

    eth_dst ← eth_src, eth_src ← owner MAC, arp_op ← 2,
    arp_tha ← arp_sha, arp_sha ← owner MAC, arp_tpa ← arp_spa, arp_spa ← IP, output:in_port

Addresses that another port of the network may also use through an allowed address pair
(the VIP of a VRRP/keepalived pair, usually reserved by an unbound port) are not
answered either: the VM currently holding the VIP answers, so failover works.

A port's own requests for its addresses (gratuitous ARP, duplicate address detection)
are not answered: they continue to l2_lookup like any broadcast.

ND responder: the IR cannot rewrite ND options, so a neighbour solicitation (icmpv6
type 135) whose nd_target is a fixed IPv6 address of a port of the network (same rules
as ARP: local or remote, router interfaces included, not VIPs of allowed address pairs,
not the sender's own address — DAD) is punted with PUNT_ND_NS; the agent
(wyvern/controller/nd.py) finds the owner by the target and sends the advertisement
back to the soliciting port. Solicitations for other targets continue to l2_lookup
(flooded; the target answers itself).

DHCPv4 punt: client packets (udp 68 → 67) in a network with an IPv4 subnet with
enable_dhcp go to the controller with PUNT_DHCP4 and no further. Without such a subnet
they continue to L2 like any broadcast (Neutron: nobody answers).

Everything else goes on to l2_lookup (the stage default in wyvern.apps.defaults).
Owner: ("network", id).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.apps.punts import PUNT_DHCP4, PUNT_ND_NS
from wyvern.controller.view import Change, LocalView, Port
from wyvern.southbound.cookies import encode
from wyvern.southbound.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    PORT_IN_PORT,
    Controller,
    Flow,
    Goto,
    MatchValue,
    Move,
    Output,
    SetField,
    match,
    table,
)

P_ARP_OWN = 110  # a port asking about its own address: not answered
P_ARP_REPLY = 100
P_DHCP = 100
P_ND_OWN = 110  # a port soliciting its own address (DAD): not answered
P_ND_NS = 100
ND_NEIGHBOR_SOLICIT = 135


def network_affected(view: LocalView, change: Change) -> list[Owner]:
    """("network", id) owners a change of a network, subnet or port may touch."""
    if change.kind == "network":
        return [("network", change.id)]
    if change.kind in ("port", "subnet"):
        nets = {r.network_id for r in (change.old, change.new) if r is not None}
        return [("network", n) for n in sorted(nets)]
    return []


def _virtual(ip: str, owner: Port, ports: Iterable[Port]) -> bool:
    """Whether another port of the network may claim `ip` through an allowed address pair
    (a VRRP/keepalived VIP): then the current holder answers ARP, not the responder."""
    addr = ipaddress.ip_address(ip)
    return any(
        addr in ipaddress.ip_network(pair.ip_address, strict=False)
        for p in ports
        if p.id != owner.id
        for pair in p.allowed_address_pairs
    )


class Services(App):
    name = "services"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return [("network", nid) for nid in sorted(view.networks)]

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return network_affected(view, change)

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, net_id = owner
        net = view.networks.get(net_id) if kind == "network" else None
        if net is None:
            return []
        cookie = encode("services", net_id)
        st = table("services")
        out: dict[object, Flow] = {}
        ports = view.network_ports(net_id)
        for port in ports:
            for ip in port.ips:
                if _virtual(ip, port, ports):
                    continue
                if ipaddress.ip_address(ip).version == 6:
                    for f in _nd_flows(net.key, port, ip, cookie):
                        out.setdefault(f.key, f)
                    continue
                req: dict[str, MatchValue] = {
                    "network_key": net.key,
                    "eth_type": ETH_TYPE_ARP,
                    "arp_op": 1,
                    "arp_tpa": ip,
                }
                own = st.flow(
                    priority=P_ARP_OWN,
                    cookie=cookie,
                    match=match(**req, src_port_key=port.key),
                    actions=(Goto("l2_lookup"),),
                )
                reply = st.flow(
                    priority=P_ARP_REPLY,
                    cookie=cookie,
                    match=match(**req),
                    actions=(
                        Move("eth_src", "eth_dst"),
                        SetField("eth_src", port.mac),
                        SetField("arp_op", 2),
                        Move("arp_sha", "arp_tha"),
                        SetField("arp_sha", port.mac),
                        Move("arp_spa", "arp_tpa"),
                        SetField("arp_spa", ip),
                        Output(PORT_IN_PORT),
                    ),
                )
                for f in (own, reply):
                    out.setdefault(f.key, f)
        if any(s.ip_version == 4 and s.enable_dhcp for s in view.network_subnets(net_id)):
            f = st.flow(
                priority=P_DHCP,
                cookie=cookie,
                match=match(
                    network_key=net.key,
                    eth_type=ETH_TYPE_IP,
                    ip_proto=IPPROTO_UDP,
                    udp_src=68,
                    udp_dst=67,
                ),
                actions=(Controller(userdata=bytes([PUNT_DHCP4])),),
            )
            out[f.key] = f
        return list(out.values())


def _nd_flows(network_key: int, port: Port, ip: str, cookie: int) -> list[Flow]:
    """Punt neighbour solicitations for PORT's IPv6 address IP, except PORT's own."""
    st = table("services")
    ns: dict[str, MatchValue] = {
        "network_key": network_key,
        "eth_type": ETH_TYPE_IPV6,
        "ip_proto": IPPROTO_ICMPV6,
        "icmpv6_type": ND_NEIGHBOR_SOLICIT,
        "nd_target": ip,
    }
    return [
        st.flow(
            priority=P_ND_OWN,
            cookie=cookie,
            match=match(**ns, src_port_key=port.key),
            actions=(Goto("l2_lookup"),),
        ),
        st.flow(
            priority=P_ND_NS,
            cookie=cookie,
            match=match(**ns),
            actions=(Controller(userdata=bytes([PUNT_ND_NS])),),
        ),
    ]
