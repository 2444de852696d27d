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

Router solicitations (icmpv6 type 133) on a network where a router interface has an
IPv6 subnet (`ra_interfaces`: what Neutron's l3 agent configures radvd on) are punted
with PUNT_ND_RA and go no further; the agent of the soliciting port's chassis answers
with a unicast router advertisement (wyvern/controller/ra.py), which also sends the
periodic ones. Solicitations for a router interface's link-local address (the next hop
those advertisements give) are punted with PUNT_ND_NS like its fixed addresses.

DHCPv4 punt: client packets (udp 68 → 67) in a network with an IPv4 subnet with
enable_dhcp go to the controller with PUNT_DHCP4 and no further. Without such a subnet
they continue to L2 like any broadcast (Neutron: nobody answers).

DHCPv6 punt: client messages (udp 546 → 547 to ff02::1:2, All_DHCP_Relay_Agents_and_
Servers) in a network with an IPv6 subnet with enable_dhcp and an ipv6_address_mode of
dhcpv6-stateful or dhcpv6-stateless go to the controller with PUNT_DHCP6 and no further
(wyvern/controller/dhcp6.py answers them). On slaac-only networks they are flooded.

Everything else goes on to l2_lookup (the stage default in wyvern.apps.defaults).
Owners: ("port", id) for the responder entries of that port's own addresses (so adding a
port recomputes that port and the few ports its addresses or address pairs touch, not its
whole network); ("network", id) for the DHCPv4, DHCPv6 and router solicitation punts.
Where two ports of a network hold the same address, the first by id answers (the others'
entries are left out, so no two owners ever install the same flow key).
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port, single_address, virtual
from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.punts import (
    PUNT_ARP_LEARN,
    PUNT_DHCP4,
    PUNT_DHCP6,
    PUNT_ND_LEARN,
    PUNT_ND_NS,
    PUNT_ND_RA,
    code,
    punt,
    punt_flows,
)
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    PORT_IN_PORT,
    Flow,
    Goto,
    Load,
    MatchValue,
    Move,
    Output,
    Resubmit,
    SetField,
    ip_value,
    match,
    parse_value,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.model.view import LocalView, Port, Router, Subnet

P_ANNOUNCE = 120  # a VIP's gratuitous ARP / unsolicited NA from a port the pair allows
P_ARP_OWN = 110  # a port asking about its own address: not answered
P_ARP_REPLY = 100
P_DHCP = 100
P_ND_OWN = 110  # a port soliciting its own address (DAD): not answered
P_ND_NS = 100
P_RS = 100
ND_ROUTER_SOLICIT = 133
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
DHCP6_MODES = ("dhcpv6-stateful", "dhcpv6-stateless")
ALL_DHCP6_SERVERS = ip_value("ff02::1:2")[1]

_st = table("services")
_ARP_REQUEST: dict[str, MatchValue] = {"eth_type": ETH_TYPE_ARP, "arp_op": 1}
_NS: dict[str, MatchValue] = {
    "eth_type": ETH_TYPE_IPV6,
    "ip_proto": IPPROTO_ICMPV6,
    "icmpv6_type": ND_NEIGHBOR_SOLICIT,
}
# Per-port responder flows: flow(cookie, network key, address[, port key]).
ARP_OWN = _st.template(
    priority=P_ARP_OWN,
    cookie_app="services",
    varying=("network_key", "arp_tpa", "src_port_key"),
    fixed=_ARP_REQUEST,
    actions=(Goto("l2_lookup"),),
)
# ...then the owner's MAC (eth_src, arp_sha) and the address (arp_spa) for the reply.
ARP_REPLY = _st.template(
    priority=P_ARP_REPLY,
    cookie_app="services",
    varying=("network_key", "arp_tpa"),
    fixed=_ARP_REQUEST,
    actions=(
        Move("eth_src", "eth_dst"),
        SetField("eth_src", 0),
        SetField("arp_op", 2),
        Move("arp_sha", "arp_tha"),
        SetField("arp_sha", 0),
        Move("arp_spa", "arp_tpa"),
        SetField("arp_spa", 0),
        Output(PORT_IN_PORT),
    ),
    action_values=(1, 4, 6),
)
ND_OWN = _st.template(
    priority=P_ND_OWN,
    cookie_app="services",
    varying=("network_key", "nd_target", "src_port_key"),
    fixed=_NS,
    actions=(Goto("l2_lookup"),),
)
ND_PUNT = _st.template(
    priority=P_ND_NS,
    cookie_app="services",
    varying=("network_key", "nd_target"),
    fixed=_NS,
    actions=punt(bytes([PUNT_ND_NS])),
)


def _virtual(view: LocalView, network_id: str, ip: str, port_id: str) -> bool:
    """Whether a port other than PORT_ID may claim `ip` through an allowed address pair
    (a VRRP/keepalived VIP): then the current holder answers, not the responder."""
    return virtual(view, network_id, ip, port_id)


RaInterface = tuple[Router, Port, tuple[Subnet, ...]]


def ra_interfaces(view: LocalView, network_id: str) -> list[RaInterface]:
    """The router interfaces on NETWORK_ID that send router advertisements, each with its
    IPv6 subnets: as Neutron's l3 agent configures radvd, every interface (port and
    router administratively up) with an IPv6 subnet, whatever its ipv6_ra_mode (a
    subnet without one is not advertised as a prefix, but the interface still is a
    default router). A network without a router interface gets none."""
    out: list[RaInterface] = []
    for rid in sorted(view.routers_by_network.get(network_id, ())):
        router = view.routers.get(rid)
        if router is None or not router.admin_state_up:
            continue
        for itf in router.interfaces:
            port = view.ports.get(itf.port_id) if itf.network_id == network_id else None
            if port is None or not port.admin_state_up:
                continue
            subs = [view.subnets.get(sid) for sid in itf.subnet_ids]
            v6 = tuple(s for s in subs if s is not None and s.ip_version == 6)
            if v6:
                out.append((router, port, v6))
    return out


def _answers(view: LocalView, network_id: str, ip: str, port_id: str) -> bool:
    """Whether PORT_ID's responder entry for its fixed address `ip` is installed: not a
    VIP, and no port before it (by id) holding the same address answers for it."""
    if _virtual(view, network_id, ip, port_id):
        return False
    holders = view.ports_by_ip.get((network_id, ip), ())
    return not any(p < port_id and not _virtual(view, network_id, ip, p) for p in holders)


class Services(App):
    """Owners: ("port", id) for the responder entries of the port's own addresses (any
    port of a known network: local or remote, router interfaces included) and
    ("network", id) for the DHCPv4 and DHCPv6 punts. A port's entries read the other ports of its
    network only through addresses: the holders of its fixed addresses
    (view.ports_by_ip) and the ports listing address pairs (view.pair_ports_by_network)."""

    name = "services"
    owner_tables = {"network": "networks", "port": "ports"}

    def global_flows(self) -> list[Flow]:
        return punt_flows(encode("services", "codes:punt"))  # (named like stage defaults)

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, id_ = owner
        if kind == "port":
            return self._port_flows(view, id_)
        if kind == "network":
            return self._network_flows(view, id_)
        return []

    def _port_flows(self, view: LocalView, port_id: str) -> list[Flow]:
        port = view.ports.get(port_id)
        net = view.networks.get(port.network_id) if port is not None else None
        if port is None or net is None:
            return []
        cookie = encode("services", port_id)
        nk, pk = net.key, port.key
        mac: int | None = None
        out: dict[object, Flow] = {}
        for ip in port.ips:
            if _virtual(view, net.id, ip, port_id):
                continue
            answers = _answers(view, net.id, ip, port_id)
            version, addr = ip_value(ip)
            if version == 6:
                for f in _nd_flows(nk, pk, addr, cookie, answers=answers):
                    out.setdefault(f.key, f)
                if port.is_router_port:  # (its link-local: the advertised next hop)
                    ll = ND_PUNT.flow(cookie, nk, int(eui64_link_local(port.mac)))
                    out.setdefault(ll.key, ll)
                continue
            own = ARP_OWN.flow(cookie, nk, addr, pk)
            out.setdefault(own.key, own)
            if not answers:
                continue
            if mac is None:
                mac = parse_value("eth_src", port.mac)[0]
            reply = ARP_REPLY.flow(cookie, nk, addr, mac, mac, addr)
            out.setdefault(reply.key, reply)
        for f in _announce_flows(view, port, nk, cookie):
            out.setdefault(f.key, f)
        return list(out.values())

    def _network_flows(self, view: LocalView, net_id: str) -> list[Flow]:
        net = view.networks.get(net_id)
        if net is None:
            return []
        subnets = view.network_subnets(net_id)
        cookie = encode("services", net_id)
        out: list[Flow] = []
        if ra_interfaces(view, net_id):
            out.append(
                table("services").flow(
                    priority=P_RS,
                    cookie=cookie,
                    match=match(
                        network_key=net.key,
                        eth_type=ETH_TYPE_IPV6,
                        ip_proto=IPPROTO_ICMPV6,
                        icmpv6_type=ND_ROUTER_SOLICIT,
                    ),
                    actions=punt(bytes([PUNT_ND_RA])),
                )
            )
        if any(s.ip_version == 4 and s.enable_dhcp for s in subnets):
            out.append(
                table("services").flow(
                    priority=P_DHCP,
                    cookie=cookie,
                    match=match(
                        network_key=net.key,
                        eth_type=ETH_TYPE_IP,
                        ip_proto=IPPROTO_UDP,
                        udp_src=68,
                        udp_dst=67,
                    ),
                    actions=punt(bytes([PUNT_DHCP4])),
                )
            )
        if any(
            s.ip_version == 6 and s.enable_dhcp and s.ipv6_address_mode in DHCP6_MODES
            for s in subnets
        ):
            out.append(
                table("services").flow(
                    priority=P_DHCP,
                    cookie=cookie,
                    match=match(
                        network_key=net.key,
                        eth_type=ETH_TYPE_IPV6,
                        ip_proto=IPPROTO_UDP,
                        ipv6_dst=ALL_DHCP6_SERVERS,
                        udp_src=546,
                        udp_dst=547,
                    ),
                    actions=punt(bytes([PUNT_DHCP6])),
                )
            )
        return out


def _learn_and_flood(userdata: int) -> tuple[Load | Resubmit | Goto, ...]:
    """A copy to the agent (through the port's meter), and the packet goes on to
    l2_lookup as before: resubmit returns, so punting does not stop the flood."""
    return (Load("punt_code", code(bytes([userdata]))), Resubmit("punt_meter"), Goto("l2_lookup"))


def _announce_flows(view: LocalView, port: Port, net_key: int, cookie: int) -> list[Flow]:
    """A local port announcing a VIP its address pairs allow, on a routed network: its
    gratuitous ARP (request or reply, sender = target = the VIP) or its unsolicited NA
    for it (to a multicast group) is copied to the agent, which learns the VIP's MAC
    binding (wyvern.controller.neighbours), so routers follow a VRRP failover at once;
    the packet is flooded as before. Only the
    holder's chassis sees it here (the ingress half), so one agent writes the binding.
    Pairs naming a prefix rather than one address are not announced this way (OpenFlow
    cannot match sender = target): they are learned when a router asks."""
    if not port.allowed_address_pairs or not _routed(view, port.network_id):
        return []
    if local_port(view, port.id) is None:
        return []
    out: list[Flow] = []
    for pair in port.allowed_address_pairs:
        addr = single_address(pair.ip_address)
        if addr is None:
            continue
        m: dict[str, MatchValue]
        if addr.version == 4:
            m = {"eth_type": ETH_TYPE_ARP, "arp_spa": str(addr), "arp_tpa": str(addr)}
            actions = _learn_and_flood(PUNT_ARP_LEARN)
        else:
            m = {
                "eth_type": ETH_TYPE_IPV6,
                "ip_proto": IPPROTO_ICMPV6,
                "icmpv6_type": ND_NEIGHBOR_ADVERT,
                "nd_target": str(addr),
                # unsolicited (to all-nodes); a solicited one to a router interface is
                # learned there (wyvern.apps.l3), and one to a VM is none of ours
                "ipv6_dst": "ff00::/8",
            }
            actions = _learn_and_flood(PUNT_ND_LEARN)
        out.append(
            _st.flow(
                priority=P_ANNOUNCE,
                cookie=cookie,
                match={"network_key": net_key, "src_port_key": port.key, **m},
                actions=actions,
            )
        )
    return out


def _routed(view: LocalView, network_id: str) -> bool:
    """A router has an interface on the network (derived: early cutoff)."""
    return view.derive(_has_interface, network_id)


def _has_interface(view: LocalView, network_id: str) -> bool:
    for rid in view.routers_by_network.get(network_id, ()):
        router = view.routers.get(rid)
        if router is not None and any(i.network_id == network_id for i in router.interfaces):
            return True
    return False


def _nd_flows(net_key: int, port_key: int, ip: int, cookie: int, *, answers: bool) -> list[Flow]:
    """Punt neighbour solicitations for a port's IPv6 address IP (if the port `answers`
    for it), except the port's own."""
    out = [ND_OWN.flow(cookie, net_key, ip, port_key)]
    if answers:
        out.append(ND_PUNT.flow(cookie, net_key, ip))
    return out
