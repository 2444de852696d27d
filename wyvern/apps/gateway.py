"""Router gateways: which chassis hosts a router's gateway port, and what it needs (pure).

A router's gateway port sits on an external network, which must be a provider network
(flat or VLAN) on a physnet. Like OVN's gateway_chassis, one chassis hosts it: among
the chassis whose record has a gateway priority above 0 and maps that physnet, the
highest priority (then the lowest name) whose record is alive. Every agent computes the
same answer from the chassis records, so no election is stored; a chassis whose record
goes (lease lost) hands the gateway to the next.

On that chassis only:
- l2 sends frames for the gateway port's MAC, and ARP for its addresses, from the
  external network to the router (elsewhere they leave by the physical network, which
  reaches the gateway chassis);
- l3 routes through the gateway: the external subnet is connected, the subnet's
  gateway_ip is the default route, the gateway addresses answer ping and ARP, and the
  neighbours on the external network are resolved from learned MAC bindings;
- nat rewrites sources to the gateway address (SNAT, unless enable_snat is false) and
  reverses it for the replies, in the router's conntrack zone.

Floating IPs are distributed: the chassis of the associated port does their NAT when it
maps the external network's physnet (local_fip), answering ARP for the floating address
with the floating IP's own MAC, so the physical network sees each address at one chassis.

Not yet (issue 12): VMs on chassis without the physnet reaching the gateway, or their
floating IPs, over the tunnel (chassis-redirect); IPv6 through the gateway.

Conntrack zones on a chassis: a port's zone is its ofport (below ROUTER_ZONE_BASE); a
router's SNAT zone is ROUTER_ZONE_BASE + the low 12 bits of its key. Router keys are
handed out lowest first from the networks' key space, so two routers share a zone only
once more than 4,096 networks and routers exist.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from wyvern.apps.common import ROUTER_ZONE_BASE
from wyvern.apps.provider import is_provider, local_patch
from wyvern.model.view import FloatingIp, LocalView, Network, Port, Router


def router_zone(router: Router) -> int:
    """The router's conntrack zone for SNAT (see the module docstring)."""
    return ROUTER_ZONE_BASE | (router.key & 0xFFF)


def gateway_chassis(view: LocalView, network: Network) -> str | None:
    """The chassis that hosts router gateways on NETWORK's physnet (None: no chassis
    may: not a provider network, or no gateway chassis maps its physnet)."""
    if not is_provider(network) or not network.physical_network:
        return None
    best: tuple[int, str] | None = None
    for name, ch in view.chassis.items():
        if ch.gateway_priority <= 0:
            continue
        if network.physical_network not in dict(ch.bridge_mappings):
            continue
        rank = (-ch.gateway_priority, name)
        if best is None or rank < best:
            best = rank
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Gateway:
    """A router gateway hosted on this chassis, resolved against the view."""

    router: Router
    network: Network  # the external network
    port: Port  # the gateway port
    addrs: tuple[ipaddress.IPv4Interface, ...]  # its IPv4 addresses, with their prefix
    upstream: tuple[ipaddress.IPv4Address, ...]  # each such subnet's gateway_ip
    patch: int  # the patch port to the physical network

    @property
    def zone(self) -> int:
        return router_zone(self.router)


def local_gateway(view: LocalView, router: Router) -> Gateway | None:
    """ROUTER's gateway when this chassis hosts it, else None."""
    if not router.gateway_network_id or not router.gateway_port_id:
        return None
    net = view.networks.get(router.gateway_network_id)
    port = view.ports.get(router.gateway_port_id)
    if net is None or port is None or port.network_id != net.id:
        return None
    patch = local_patch(view, net)
    if patch is None or view.derive(gateway_chassis, net) != view.chassis_name:
        return None
    addrs: list[ipaddress.IPv4Interface] = []
    upstream: list[ipaddress.IPv4Address] = []
    for fixed in port.fixed_ips:
        subnet = view.subnets.get(fixed.subnet_id)
        if subnet is None or subnet.ip_version != 4:
            continue
        try:
            addr = ipaddress.IPv4Interface(f"{fixed.ip_address}/{subnet.network.prefixlen}")
            hop = ipaddress.IPv4Address(subnet.gateway_ip) if subnet.gateway_ip else None
        except ValueError:
            continue
        addrs.append(addr)
        if hop is not None and hop in addr.network and hop != addr.ip:
            upstream.append(hop)
    return Gateway(router, net, port, tuple(addrs), tuple(upstream), patch)


@dataclass(frozen=True, slots=True)
class LocalFip:
    """A floating IP whose NAT this chassis does: its port is bound here and this chassis
    maps the external network's physnet (DVR-style: no detour through the gateway)."""

    fip: FloatingIp
    router: Router
    network: Network  # the external network
    addr: ipaddress.IPv4Interface  # the floating address, with its subnet's prefix
    upstream: ipaddress.IPv4Address | None  # that subnet's gateway_ip
    patch: int

    @property
    def zone(self) -> int:
        return router_zone(self.router)


def local_fip(view: LocalView, fip_id: str) -> LocalFip | None:
    """The floating IP FIP_ID when this chassis NATs it, else None. A floating IP whose
    port is on a chassis without the physnet is NATed nowhere yet (it would need the
    gateway chassis and a tunnel to it: issue 12), and reports DOWN."""
    fip = view.floatingips.get(fip_id)
    if fip is None or fip.port_id not in view.bindings:
        return None
    router = view.routers.get(fip.router_id)
    net = view.networks.get(fip.network_id)
    if router is None or net is None or router.gateway_network_id != net.id:
        return None
    if not router.admin_state_up:
        return None
    patch = local_patch(view, net)
    if patch is None:
        return None
    try:
        ip = ipaddress.IPv4Address(fip.ip)
        ipaddress.IPv4Address(fip.fixed_ip)
    except ValueError:
        return None
    for sid in sorted(view.subnets_by_network.get(net.id, ())):
        subnet = view.subnets.get(sid)
        if subnet is None or subnet.ip_version != 4 or ip not in subnet.network:
            continue
        addr = ipaddress.IPv4Interface(f"{ip}/{subnet.network.prefixlen}")
        hop = ipaddress.IPv4Address(subnet.gateway_ip) if subnet.gateway_ip else None
        if hop is not None and (hop not in addr.network or hop == ip):
            hop = None
        return LocalFip(fip, router, net, addr, hop, patch)
    return None
