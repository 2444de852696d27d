"""Router gateways: which chassis hosts a router's gateway port, and what it needs (pure).

A router's gateway port sits on an external network, which must be a provider network
(flat or VLAN) on a physnet. Like OVN's gateway_chassis, one chassis hosts it: among
the chassis whose record has a gateway priority above 0 and maps that physnet, the
highest priority whose record is alive; among several of that priority, the one that
reports hosting the network's router gateways (view.gateway_hosts, from the agents'
status keys) keeps them, else the lowest name. Every agent computes the same answer from
the chassis records and those reports, so no election is stored; a chassis whose record
goes (lease lost), or whose dataplane BFD says is down (view.chassis_down, within ~0.3 s),
hands the gateway to the next. A gateway chassis that (re)starts holds back until its
BFD sessions to the other gateway chassis are up, so two never host one gateway at once;
it takes the gateway back only with a strictly higher priority (no preemption on a tie).

On that chassis only:
- l2 sends frames for the gateway port's MAC, and ARP for its addresses, from the
  external network to the router (elsewhere they leave by the physical network, which
  reaches the gateway chassis);
- l3 routes through the gateway: the external subnet is connected, the subnet's
  gateway_ip is the default route, the gateway addresses answer ping and ARP, and the
  neighbours on the external network are resolved from learned MAC bindings;
- nat rewrites sources to the gateway address (SNAT, unless enable_snat is false) and
  reverses it for the replies, in the router's conntrack zone.

Port forwardings are centralized here, as in OVN: the gateway chassis answers ARP for
their floating addresses with the gateway port's MAC (Gateway.forwarded) and DNATs them
(wyvern.apps.nat); replies reach it like SNAT traffic, over the redirect from other chassis.

Floating IPs are distributed: the chassis of the associated port does their NAT when it
maps the external network's physnet (local_fip), answering ARP for the floating address
with the floating IP's own MAC, so the physical network sees each address at one chassis.

IPv6 goes through the gateway routed, never NATed (as in Neutron and OVN): the gateway
port's IPv6 addresses (Gateway.addrs6) make their subnets connected, their gateway_ip
(Gateway.upstream6) is the default route ::/0, neighbour solicitations for them from the
physical network are answered on this chassis only, and IPv6 next hops are learned by ND
like the IPv4 MAC bindings (wyvern.apps.l3, wyvern.controller.neighbours). The outside
reaches a tenant prefix through a route via the gateway's IPv6 address.

Conntrack zones on a chassis: a port's zone is its ofport (below ROUTER_ZONE_BASE); a
router's SNAT zone is ROUTER_ZONE_BASE + the low 12 bits of its key. Router keys are
handed out lowest first from the networks' key space, so two routers share a zone only
once more than 4,096 networks and routers exist.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, cast

from wyvern.apps.common import ROUTER_ZONE_BASE
from wyvern.apps.overlay import remote_chassis
from wyvern.apps.provider import is_provider, local_patch
from wyvern.ir.ofports import GENEVE
from wyvern.model.view import (
    Chassis,
    FloatingIp,
    LocalView,
    Network,
    Port,
    PortForwarding,
    Router,
    Subnet,
)


@dataclass(frozen=True, slots=True)
class RouterFacts:
    """What a floating IP's flows need of its router. The router record carries every
    floating IP (`_fips`), so it changes with each association: read through
    `view.derive(router_facts, id)`, a floating IP's flows are recomputed only when these
    facts change, not when another floating IP is associated (at 1,000 floating IPs on
    a router, one association recomputed all of them: 0.7 s)."""

    id: str
    key: int
    admin_state_up: bool
    gateway_network_id: str | None
    az_hints: tuple[str, ...] = ()


def router_facts(view: LocalView, router_id: str) -> RouterFacts | None:
    r = view.routers.get(router_id)
    if r is None:
        return None
    return RouterFacts(r.id, r.key, r.admin_state_up, r.gateway_network_id, r.az_hints)


def router_zone(router: Router | RouterFacts) -> int:
    """The router's conntrack zone for SNAT (see the module docstring)."""
    return ROUTER_ZONE_BASE | (router.key & 0xFFF)


def gateway_chassis(view: LocalView, network: Network, zones: tuple[str, ...] = ()) -> str | None:
    """The chassis that hosts the gateways on NETWORK's physnet of routers hinted to
    ZONES (their availability_zone_hints; (): any zone). None: no chassis may: not a
    provider network, or no enabled gateway chassis of those zones maps its physnet (the
    router then has no gateway, as Neutron leaves it unscheduled). Read it through
    `view.derive`: a report that changes no answer then recomputes no flow."""
    if not is_provider(network) or not network.physical_network:
        return None
    top = 0
    tied: list[str] = []  # the live chassis of the highest priority
    down = view.chassis_down
    for name, ch in view.chassis.items():
        if ch.gateway_priority <= 0 or ch.gateway_priority < top or down.get(name):
            continue
        if not ch.enabled or (zones and ch.availability_zone not in zones):
            continue
        if network.physical_network not in dict(ch.bridge_mappings):
            continue
        if ch.gateway_priority > top:
            top, tied = ch.gateway_priority, []
        tied.append(name)
    if len(tied) <= 1:
        return tied[0] if tied else None
    return _incumbent(view, network.id, sorted(tied))


def _incumbent(view: LocalView, network_id: str, tied: list[str]) -> str:
    """Among TIED (sorted names) the one a router gateway on the network is reported
    hosted by (the lowest, should reports differ for a moment), else the first: no
    preemption on a tie, as OVN's and keepalived's equal priorities. Every agent reads
    the same reports, and a chassis writes its report only once it hosts the gateway, so
    two chassis that both took it (each seeing the other down) agree on the last report;
    the other one removes its own only if it is still its own (HostedStatusWriter)."""
    hosts = view.gateway_hosts
    found: str | None = None
    for rid in sorted(view.routers_by_network.get(network_id, ())):
        facts = view.derive(router_facts, rid)
        if facts is None or facts.gateway_network_id != network_id:
            continue
        host = hosts.get(rid)
        if host is None or host.chassis not in tied:
            continue
        if host.chassis == tied[0]:
            return host.chassis  # (no report can pick a lower one)
        if found is None or host.chassis < found:
            found = host.chassis
    return found if found is not None else tied[0]


@dataclass(frozen=True, slots=True)
class Gateway:
    """A router gateway hosted on this chassis, resolved against the view."""

    router: Router
    network: Network  # the external network
    port: Port  # the gateway port
    addrs: tuple[ipaddress.IPv4Interface, ...]  # its IPv4 addresses, with their prefix
    upstream: tuple[ipaddress.IPv4Address, ...]  # each such subnet's gateway_ip
    patch: int  # the patch port to the physical network
    # The floating addresses the router's port forwardings use (not a gateway address):
    # centralized here, answered to ARP with the gateway port's MAC (as OVN does).
    forwarded: tuple[ipaddress.IPv4Address, ...] = ()
    # Its IPv6 addresses and their subnets' gateway_ip: routed, never NATed.
    addrs6: tuple[ipaddress.IPv6Interface, ...] = ()
    upstream6: tuple[ipaddress.IPv6Address, ...] = ()

    @property
    def zone(self) -> int:
        return router_zone(self.router)


def local_gateway(view: LocalView, router: Router) -> Gateway | None:
    """ROUTER's gateway when this chassis hosts it, else None."""
    found = _gateway_parts(view, router)
    if found is None:
        return None
    net, port = found
    patch = local_patch(view, net)
    if patch is None or view.derive(gateway_chassis, net, router.az_hints) != view.chassis_name:
        return None
    return _resolve(view, router, net, port, patch)


def local_gateways(view: LocalView, network_id: str) -> list[Gateway]:
    """The router gateways on this network that this chassis hosts, by router id."""
    out = []
    for rid in sorted(view.routers_by_network.get(network_id, ())):
        router = view.routers.get(rid)
        gw = local_gateway(view, router) if router is not None else None
        if gw is not None and gw.network.id == network_id:
            out.append(gw)
    return out


def _gateway_parts(view: LocalView, router: Router) -> tuple[Network, Port] | None:
    if not router.gateway_network_id or not router.gateway_port_id:
        return None
    net = view.networks.get(router.gateway_network_id)
    port = view.ports.get(router.gateway_port_id)
    if net is None or port is None or port.network_id != net.id:
        return None
    return net, port


def _on_subnet(
    subnet: Subnet | None, ip: str
) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address | None] | None:
    """IP with SUBNET's prefix, and the subnet's gateway_ip as its next hop out (None when
    there is none, or it is IP itself); None when SUBNET is no IPv4 subnet holding IP."""
    return cast(
        "tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address | None] | None",
        _placed(subnet, ip, 4),
    )


def _on_subnet6(
    subnet: Subnet | None, ip: str
) -> tuple[ipaddress.IPv6Interface, ipaddress.IPv6Address | None] | None:
    """_on_subnet for an IPv6 subnet."""
    return cast(
        "tuple[ipaddress.IPv6Interface, ipaddress.IPv6Address | None] | None",
        _placed(subnet, ip, 6),
    )


def _placed(subnet: Subnet | None, ip: str, version: int) -> tuple[Any, Any] | None:
    """_on_subnet and _on_subnet6: SUBNET of IP version VERSION."""
    if subnet is None or subnet.ip_version != version:
        return None
    try:
        addr = ipaddress.ip_interface(f"{ip}/{subnet.network.prefixlen}")
        hop = ipaddress.ip_address(subnet.gateway_ip) if subnet.gateway_ip else None
    except ValueError:
        return None
    if addr.version != version or addr.ip not in subnet.network:
        return None
    if hop is not None and hop.version != version:
        return None  # (a malformed gateway_ip: as unparseable)
    if hop is not None and (hop not in addr.network or hop == addr.ip):
        hop = None
    return addr, hop


def _resolve(view: LocalView, router: Router, net: Network, port: Port, patch: int) -> Gateway:
    addrs: list[ipaddress.IPv4Interface] = []
    upstream: list[ipaddress.IPv4Address] = []
    addrs6: list[ipaddress.IPv6Interface] = []
    upstream6: list[ipaddress.IPv6Address] = []
    for fixed in port.fixed_ips:
        subnet = view.subnets.get(fixed.subnet_id)
        found6 = _on_subnet6(subnet, fixed.ip_address)
        if found6 is not None:
            addrs6.append(found6[0])
            if found6[1] is not None:
                upstream6.append(found6[1])
            continue
        found = _on_subnet(subnet, fixed.ip_address)
        if found is None:
            continue
        addrs.append(found[0])
        if found[1] is not None:
            upstream.append(found[1])
    own = {a.ip for a in addrs}
    forwarded: set[ipaddress.IPv4Address] = set()
    for pf in router.port_forwardings:
        ip = forwarded_address(view, net, pf)
        if ip is not None and ip not in own:
            forwarded.add(ip)
    return Gateway(
        router,
        net,
        port,
        tuple(addrs),
        tuple(upstream),
        patch,
        tuple(sorted(forwarded)),
        tuple(addrs6),
        tuple(upstream6),
    )


def forwarded_address(
    view: LocalView, net: Network, pf: PortForwarding
) -> ipaddress.IPv4Address | None:
    """PF's floating address when it is an IPv4 address on one of NET's subnets (what the
    API guarantees; anything else is not forwarded), else None."""
    for sid in sorted(view.subnets_by_network.get(net.id, ())):
        found = _on_subnet(view.subnets.get(sid), pf.ip)
        if found is not None:
            return found[0].ip
    return None


# dst_port_key of a packet a chassis sends to the gateway chassis to be routed there
# (port keys are small integers; FLOOD_KEY is all ones).
REDIRECT_KEY = 0xFFFFFFFE


@dataclass(frozen=True, slots=True)
class Redirect:
    """A router whose gateway another chassis hosts, reachable by Geneve from here: what
    would leave by the gateway is sent there to be routed (OVN's chassis-redirect port).
    The tunnel carries the router's key as the VNI and REDIRECT_KEY as the destination."""

    gateway: Gateway  # as hosted there (patch: 0, not ours)
    chassis: Chassis


def remote_gateway(view: LocalView, router: Router) -> Redirect | None:
    """ROUTER's gateway when another chassis hosts it and Geneve reaches it, else None."""
    found = _gateway_parts(view, router)
    if found is None:
        return None
    net, port = found
    name = view.derive(gateway_chassis, net, router.az_hints)
    if name is None or name == view.chassis_name:
        return None
    there, me = view.chassis.get(name), view.chassis.get(view.chassis_name)
    for ch in (there, me):
        if ch is None or not ch.tunnel_ip or GENEVE not in ch.encaps:
            return None
    assert there is not None
    return Redirect(_resolve(view, router, net, port, 0), there)


def _centralized_here(view: LocalView, net: Network, port_id: str, zones: tuple[str, ...]) -> bool:
    """Whether this chassis NATs floating IPs of PORT_ID: the gateway chassis (of a
    router hinted to ZONES), for a port bound on a chassis that does not map NET's physnet
    and that Geneve reaches."""
    if view.derive(gateway_chassis, net, zones) != view.chassis_name:
        return False
    name = view.port_chassis.get(port_id)
    there = view.chassis.get(name) if name else None
    me = view.chassis.get(view.chassis_name)
    if there is None or me is None or name == view.chassis_name:
        return False
    if net.physical_network in dict(there.bridge_mappings):
        return False  # distributed: that chassis NATs it
    if not all(c.tunnel_ip and GENEVE in c.encaps for c in (there, me)):
        return False
    return remote_chassis(view, port_id) is not None  # (its replies go back by tunnel)


@dataclass(frozen=True, slots=True)
class LocalFip:
    """A floating IP whose NAT this chassis does: its port is bound here and this chassis
    maps the external network's physnet (DVR-style: no detour through the gateway)."""

    fip: FloatingIp
    router: RouterFacts
    network: Network  # the external network
    addr: ipaddress.IPv4Interface  # the floating address, with its subnet's prefix
    upstream: ipaddress.IPv4Address | None  # that subnet's gateway_ip
    patch: int

    @property
    def zone(self) -> int:
        return router_zone(self.router)


def local_fip(view: LocalView, fip_id: str) -> LocalFip | None:
    """The floating IP FIP_ID when this chassis NATs it, else None: its port's chassis
    when that maps the external physnet (distributed), else the gateway chassis when
    Geneve reaches the port's chassis (centralized: that chassis sends the port's
    external traffic here, remote_gateway)."""
    fip = view.floatingips.get(fip_id)
    if fip is None:
        return None
    if min(view.fips_by_fixed.get((fip.router_id, fip.fixed_ip), (fip_id,))) != fip_id:
        return None  # two on one fixed IP (the API refuses it): the first by id wins
    router = view.derive(router_facts, fip.router_id)
    net = view.networks.get(fip.network_id)
    if router is None or net is None or router.gateway_network_id != net.id:
        return None
    if not router.admin_state_up:
        return None
    patch = local_patch(view, net)
    if patch is None:
        return None
    if fip.port_id not in view.bindings and not _centralized_here(
        view, net, fip.port_id, router.az_hints
    ):
        return None
    try:
        ipaddress.IPv4Address(fip.fixed_ip)  # (the floating address: _on_subnet checks it)
    except ValueError:
        return None
    for sid in sorted(view.subnets_by_network.get(net.id, ())):
        found = _on_subnet(view.subnets.get(sid), fip.ip)
        if found is not None:
            return LocalFip(fip, router, net, found[0], found[1], patch)
    return None
