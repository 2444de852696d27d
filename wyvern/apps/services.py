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
Owners: ("port", id) for the responder entries of that port's own addresses (so adding a
port recomputes that port and the few ports its addresses or address pairs touch, not its
whole network); ("network", id) for the DHCPv4 punt. Where two ports of a network hold
the same address, the first by id answers (the others' entries are left out, so no two
owners ever install the same flow key).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from wyvern.apps.base import App, Owner
from wyvern.apps.punts import PUNT_DHCP4, PUNT_ND_NS
from wyvern.ir import (
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
    ip_value,
    match,
    parse_value,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.model.view import Change, LocalView, Port

P_ARP_OWN = 110  # a port asking about its own address: not answered
P_ARP_REPLY = 100
P_DHCP = 100
P_ND_OWN = 110  # a port soliciting its own address (DAD): not answered
P_ND_NS = 100
ND_NEIGHBOR_SOLICIT = 135

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
    actions=(Controller(userdata=bytes([PUNT_ND_NS])),),
)


def network_affected(view: LocalView, change: Change) -> list[Owner]:
    """("network", id) owners a change of a network, subnet or port may touch."""
    if change.kind == "network":
        return [("network", change.id)]
    if change.kind in ("port", "subnet"):
        nets = {r.network_id for r in (change.old, change.new) if r is not None}
        return [("network", n) for n in sorted(nets)]
    return []


@functools.lru_cache(maxsize=1 << 16)
def _pair_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


@dataclass
class _NetIndex:
    """Who in one network holds which fixed address, and who lists address pairs."""

    by_ip: dict[str, set[str]] = field(default_factory=dict)  # fixed ip -> port ids
    pairs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # port id -> pair cidrs

    held: dict[str, Port] = field(default_factory=dict)  # port id -> record indexed

    def put(self, port_id: str, port: Port | None) -> None:
        """Index PORT (None: nothing) as PORT_ID's record, replacing what was indexed."""
        old = self.held.pop(port_id, None)
        if old is not None:
            for ip in old.ips:
                holders = self.by_ip.get(ip)
                if holders is not None:
                    holders.discard(port_id)
                    if not holders:
                        del self.by_ip[ip]
            self.pairs.pop(port_id, None)
        if port is None:
            return
        self.held[port_id] = port
        for ip in port.ips:
            self.by_ip.setdefault(ip, set()).add(port_id)
        if port.allowed_address_pairs:
            self.pairs[port_id] = tuple(p.ip_address for p in port.allowed_address_pairs)

    def virtual(self, ip: str, port_id: str) -> bool:
        """Whether a port other than PORT_ID may claim `ip` through an allowed address
        pair (a VRRP/keepalived VIP): then the current holder answers, not the responder."""
        if not self.pairs:
            return False
        addr = _address(ip)
        for pid, cidrs in self.pairs.items():
            if pid == port_id:
                continue
            for cidr in cidrs:
                net = _pair_network(cidr)
                if net is not None and addr in net:
                    return True
        return False

    def answers(self, ip: str, port_id: str) -> bool:
        """Whether PORT_ID's responder entry for its fixed address `ip` is installed: not
        a VIP, and no port before it (by id) holding the same address answers for it."""
        if self.virtual(ip, port_id):
            return False
        holders = self.by_ip.get(ip, ())
        return not any(p < port_id and not self.virtual(ip, p) for p in holders)


class Services(App):
    """Owners: ("port", id) for the responder entries of the port's own addresses (any
    port of a known network: local or remote, router interfaces included) and
    ("network", id) for the DHCPv4 punt. A port's entries depend on the other ports of
    its network only through addresses: a change of port X marks X and every port of the
    network that shares one of X's (old or new) fixed addresses or holds an address
    inside one of X's (old or new) allowed address pairs."""

    name = "services"

    def __init__(self) -> None:
        # Per network: _NetIndex, for the view last seen. Built lazily from the view,
        # kept in step by affected() (the engine calls it for every change before any
        # flows(): it re-reads the changed port from the view), dropped by owners() (a
        # full recompute) and when another view is seen.
        self._view: LocalView | None = None
        self._index: dict[str, _NetIndex] = {}

    def _net_index(self, view: LocalView, net_id: str) -> _NetIndex:
        if view is not self._view:
            self._view = view
            self._index = {}
        idx = self._index.get(net_id)
        if idx is None:
            idx = self._index[net_id] = _NetIndex()
            for pid in view.ports_by_network.get(net_id, ()):
                port = view.ports.get(pid)
                if port is not None:
                    idx.put(pid, port)
        return idx

    def owners(self, view: LocalView) -> Iterable[Owner]:
        self._view = view
        self._index = {}
        out: list[Owner] = [("network", nid) for nid in sorted(view.networks)]
        out.extend(
            ("port", pid)
            for pid, port in sorted(view.ports.items())
            if port.network_id in view.networks
        )
        return out

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        kind = change.kind
        if kind == "subnet":
            return network_affected(view, change)
        if kind == "network":
            return [("network", change.id)] + [
                ("port", pid) for pid in view.ports_by_network.get(change.id, ())
            ]
        if kind != "port":
            return []
        out: set[Owner] = {("port", change.id)}
        if view is not self._view:
            self._view = view
            self._index = {}
        current = view.ports.get(change.id)
        records = [r for r in (change.old, change.new, current) if r is not None]
        for net_id in {r.network_id for r in records}:
            idx = self._index.get(net_id)
            if idx is not None:  # keep it in step with the view (a new one is built from it)
                idx.put(change.id, current if current and current.network_id == net_id else None)
            idx = self._net_index(view, net_id)
            mine = [r for r in records if r.network_id == net_id]
            for ip in {ip for r in mine for ip in r.ips}:
                out.update(("port", p) for p in idx.by_ip.get(ip, ()))
            cidrs = {pair.ip_address for r in mine for pair in r.allowed_address_pairs}
            nets = [n for n in map(_pair_network, sorted(cidrs)) if n is not None]
            if nets:
                for ip, holders in idx.by_ip.items():
                    addr = _address(ip)
                    if any(addr in n for n in nets):
                        out.update(("port", p) for p in holders)
        return sorted(out)

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
        idx = self._net_index(view, port.network_id)
        cookie = encode("services", port_id)
        nk, pk = net.key, port.key
        mac: int | None = None
        out: dict[object, Flow] = {}
        for ip in port.ips:
            if idx.virtual(ip, port_id):
                continue
            answers = idx.answers(ip, port_id)
            version, addr = ip_value(ip)
            if version == 6:
                for f in _nd_flows(nk, pk, addr, cookie, answers=answers):
                    out.setdefault(f.key, f)
                continue
            own = ARP_OWN.flow(cookie, nk, addr, pk)
            out.setdefault(own.key, own)
            if not answers:
                continue
            if mac is None:
                mac = parse_value("eth_src", port.mac)[0]
            reply = ARP_REPLY.flow(cookie, nk, addr, mac, mac, addr)
            out.setdefault(reply.key, reply)
        return list(out.values())

    def _network_flows(self, view: LocalView, net_id: str) -> list[Flow]:
        net = view.networks.get(net_id)
        if net is None:
            return []
        if not any(s.ip_version == 4 and s.enable_dhcp for s in view.network_subnets(net_id)):
            return []
        f = table("services").flow(
            priority=P_DHCP,
            cookie=encode("services", net_id),
            match=match(
                network_key=net.key,
                eth_type=ETH_TYPE_IP,
                ip_proto=IPPROTO_UDP,
                udp_src=68,
                udp_dst=67,
            ),
            actions=(Controller(userdata=bytes([PUNT_DHCP4])),),
        )
        return [f]


def _nd_flows(net_key: int, port_key: int, ip: int, cookie: int, *, answers: bool) -> list[Flow]:
    """Punt neighbour solicitations for a port's IPv6 address IP (if the port `answers`
    for it), except the port's own."""
    out = [ND_OWN.flow(cookie, net_key, ip, port_key)]
    if answers:
        out.append(ND_PUNT.flow(cookie, net_key, ip))
    return out
