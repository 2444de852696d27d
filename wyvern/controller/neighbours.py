"""Neighbours outside Neutron (and VIPs): ARP for them, learn their MACs.

OVN's MAC_Binding, by punts (wyvern.apps.l3): a routed packet whose next hop on an
external network has no MAC yet is punted with PUNT_ARP_REQUEST (and dropped, as OVN
drops it); the agent sends a who-has from the router's gateway out of the patch port to
the physical network. ARP to a gateway address from the physical network (the answer to
that, or someone asking for the gateway) is punted with PUNT_ARP_LEARN; the agent
writes the sender's MAC to the store (wyvern.model.keys.mac_binding_key), every agent
following the network gets it, and l3 resolves the next hop from then on.

Bindings are refreshed (OVN re-resolves too): every `agent_mac_binding_refresh` seconds a
chassis hosting a gateway on the binding's network probes it with a broadcast who-has from
the gateway (`refreshes`); the answer is learned like any other, so a neighbour that
changed its MAC (a replaced upstream router) is followed within one period. Bindings are
not aged out (OVN's default, mac_binding_age_threshold=0): one whose neighbour stopped
answering stays until its network goes.

IPv6 next hops the same way by ND (wyvern.controller.nd): an IPv6 next hop without a MAC
is punted with PUNT_ND_REQUEST and solicited from the gateway's IPv6 address (to the
target's solicited-node group, out of the patch port); an NS for a gateway address from
the physical network (answered here with an NA, from the gateway chassis only) and an NA
to the gateway are punted with PUNT_ND_LEARN and teach the sender's (the target's) MAC.
Refreshes probe IPv6 bindings with such an NS. The bindings are the same records.

Next hops on internal (tenant) networks that are no port's own address, such as a
VRRP/keepalived VIP that ports may claim by an allowed address pair, take the same path
(wyvern.apps.l3): punted without a binding, asked for from the router interface's
address and MAC into the network (`ask`: an `Inject` packet-out resubmitted to
l2_lookup, which floods it like a VM's broadcast to every chassis of the network), the
answer to the interface punted on the holder's chassis and learned, and the holder's
gratuitous ARP / unsolicited NA learned as it is flooded (wyvern.apps.services). A
virtual address is learned only from a port whose pairs allow it. Their refresh goes
into the network too, from the first chassis by name with a port there (`_prober`).

Pure functions of the view and the punted frame: the packet-in dispatcher and the agent
call them and do the I/O.
"""

from __future__ import annotations

import ipaddress

from wyvern.apps.common import claims, virtual
from wyvern.apps.gateway import local_fip, local_gateway, local_gateways
from wyvern.apps.l3 import resolved_by_port
from wyvern.apps.overlay import network_chassis
from wyvern.apps.provider import vlan_vid
from wyvern.controller import frames, nd
from wyvern.ir.pipeline import table_of
from wyvern.model.keys import mac_binding_id
from wyvern.model.view import LocalView, MacBinding, Network, Port
from wyvern.southbound.ofchannel import Inject

# Where a frame goes: out of an OpenFlow port (the patch to the physical network), or
# into the pipeline as a router interface's (flooded into its internal network).
Destination = int | Inject


def network_by_key(view: LocalView, key: int) -> Network | None:
    for net in view.networks.values():
        if net.key == key:
            return net
    return None


def learned(
    view: LocalView, network: Network, frame: bytes, sender: Port | None = None
) -> MacBinding | None:
    """The binding an ARP packet to one of our gateways, to a router interface, or a
    VIP's gratuitous ARP teaches (None: nothing new, or nothing we may learn: not ARP,
    a sender outside the network's subnets, a port's own address, a VIP from a port no
    address pair allows it, a multicast or zero MAC). SENDER: the logical port it came
    from (None: the physical network)."""
    eth = frames.parse_ethernet(frame)
    arp = frames.parse_arp(eth.payload) if eth is not None else None
    if eth is None or eth.ethertype != frames.ETH_TYPE_ARP or arp is None:
        return None
    return _binding(view, network, arp.spa, arp.sha, sender)


def _binding(
    view: LocalView, network: Network, ip: str, mac: str, sender: Port | None
) -> MacBinding | None:
    """The binding IP → MAC on NETWORK if it may be learned and is new: a unicast MAC, an
    address on one of the network's subnets of its family that no port resolves, and, for
    a virtual address (a VIP some port may claim by an address pair), only from a port
    whose pairs allow it (port security stops the others' spoofs; this stops a port
    without port security from taking a VIP it was not given)."""
    first = int(mac.split(":")[0], 16)
    if first & 1 or mac == "00:00:00:00:00:00":
        return None
    try:
        found = ipaddress.ip_address(ip)
    except ValueError:
        return None
    subnets = [s.network for s in view.network_subnets(network.id) if s.ip_version == found.version]
    if not any(found in n for n in subnets):
        return None
    ip = str(found)
    if resolved_by_port(view, network.id, ip):
        return None  # a port's address: resolved from the port, never learned
    if virtual(view, network.id, ip) and (sender is None or not claims(sender, ip)):
        return None
    binding = MacBinding(mac_binding_id(network.id, ip), network.id, ip, mac)
    if view.mac_bindings.get(binding.id) == binding:
        return None
    return binding


def learned_nd(
    view: LocalView, network: Network, frame: bytes, sender: Port | None = None
) -> MacBinding | None:
    """The binding an NS or NA to one of our gateways, an NA to a router interface, or a
    VIP's unsolicited NA teaches (as `learned`)."""
    found = nd.parse_neighbour(frame)
    if found is None or found.mac is None:
        return None
    return _binding(view, network, found.ip, found.mac, sender)


def _interface(
    view: LocalView,
    network: Network,
    router_key: int,
    target: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> tuple[Port, str] | None:
    """(router port, its address) of the router with ROUTER_KEY on the internal NETWORK,
    on the subnet of TARGET (another address); None if it has none."""
    for rid in sorted(view.routers_by_network.get(network.id, ())):
        router = view.routers.get(rid)
        if router is None or router.key != router_key:
            continue
        for itf in router.interfaces:
            port = view.ports.get(itf.port_id)
            if itf.network_id != network.id or port is None:
                continue
            for ip, cidr in itf.ips:
                try:
                    on = target in ipaddress.ip_network(cidr, strict=False)
                    mine = ipaddress.ip_address(ip)
                except (TypeError, ValueError):
                    continue
                if on and mine.version == target.version and mine != target:
                    return port, str(mine)
    return None


def into(network: Network, port: Port) -> Inject:
    """A frame from router interface PORT into its NETWORK: through l2_lookup, which
    floods a broadcast or multicast to the network's ports here and on every chassis."""
    return Inject(table_of("l2_lookup"), (("network_key", network.key), ("src_port_key", port.key)))


def ask(
    view: LocalView, network: Network, router_key: int, target: str
) -> tuple[Inject, bytes] | None:
    """(where, frame) asking for TARGET on the internal NETWORK from the interface of the
    router with ROUTER_KEY: a who-has, or an NS to its solicited-node group."""
    addr = ipaddress.ip_address(target)
    found = _interface(view, network, router_key, addr)
    if found is None:
        return None
    port, source = found
    if addr.version == 4:
        return into(network, port), frames.arp_request(port.mac, source, target)
    return into(network, port), nd.build_solicitation(port.mac, source, target)


def nd_answer(
    view: LocalView, network: Network, router_key: int, frame: bytes
) -> tuple[int, bytes] | None:
    """(patch ofport, NA) answering an NS from the physical network for an IPv6 address
    of the gateway of the router with ROUTER_KEY, hosted here; None otherwise."""
    sol = nd.parse_solicitation(frame)
    if sol is None:
        return None
    gw = next((g for g in local_gateways(view, network.id) if g.router.key == router_key), None)
    if gw is None or not any(str(a.ip) == sol.target for a in gw.addrs6):
        return None
    na = nd.build_advertisement(sol, gw.port.mac, router=True)
    return gw.patch, frames.tagged(na, vlan_tag(network))


def vlan_tag(network: Network) -> int | None:
    vid = vlan_vid(network)
    return None if vid is None else vid & 0xFFF


def solicit(
    view: LocalView, network: Network, router_key: int, next_hop: int
) -> tuple[Destination, bytes] | None:
    """(patch ofport, NS) for an IPv6 next hop on NETWORK that the router with ROUTER_KEY
    could not resolve, from its gateway's address on the next hop's subnet; None when
    the gateway is not here or the next hop is on none of its subnets."""
    target = ipaddress.IPv6Address(next_hop)
    gw = next((g for g in local_gateways(view, network.id) if g.router.key == router_key), None)
    if gw is None:
        return ask(view, network, router_key, str(target))
    for addr in gw.addrs6:
        if target in addr.network and target != addr.ip:
            ns = nd.build_solicitation(gw.port.mac, str(addr.ip), str(target))
            return gw.patch, frames.tagged(ns, vlan_tag(network))
    return None


def request(
    view: LocalView, network: Network, router_key: int, next_hop: int, frame: bytes
) -> tuple[Destination, bytes] | None:
    """(patch ofport, who-has frame) for a next hop on NETWORK that the router with
    ROUTER_KEY could not resolve for the punted FRAME: asked from the floating IP of its
    source when this chassis NATs one (the physical network must see each MAC at one
    chassis), else from the gateway; None when neither is here or the next hop is on
    none of their subnets."""
    target = ipaddress.IPv4Address(next_hop)
    vid = vlan_vid(network)
    tag = None if vid is None else vid & 0xFFF
    eth = frames.parse_ethernet(frame)
    ip4 = frames.parse_ipv4(eth.payload) if eth is not None else None
    if ip4 is not None:
        for fid in sorted(view.floatingips):
            fip = view.floatingips[fid]
            if fip.fixed_ip != ip4.src or fip.network_id != network.id:
                continue
            lf = local_fip(view, fid)
            if lf is not None and lf.router.key == router_key and target in lf.addr.network:
                return lf.patch, frames.arp_request(fip.mac, str(lf.addr.ip), str(target), tag)
    gw = next((g for g in local_gateways(view, network.id) if g.router.key == router_key), None)
    if gw is None:
        return ask(view, network, router_key, str(target))
    for addr in gw.addrs:
        if target in addr.network and target != addr.ip:
            return gw.patch, frames.arp_request(gw.port.mac, str(addr.ip), str(target), tag)
    return None


def announcement(view: LocalView, fip_id: str) -> tuple[int, bytes] | None:
    """(patch ofport, gratuitous ARP) announcing floating IP FIP_ID from this chassis,
    which NATs it now: the physical network's switches move its MAC here at once, and
    hosts refresh their caches, instead of waiting for either to expire."""
    lf = local_fip(view, fip_id)
    if lf is None:
        return None
    vid = vlan_vid(lf.network)
    ip = str(lf.addr.ip)
    frame = frames.arp_request(lf.fip.mac, ip, ip, None if vid is None else vid & 0xFFF)
    return lf.patch, frame


def gateway_announcements(view: LocalView, router_id: str) -> list[tuple[int, bytes]]:
    """Gratuitous ARPs for a router gateway this chassis hosts now, and the floating
    addresses of its port forwardings (after a failover: the physical network moves the
    gateway's MAC here at once)."""
    router = view.routers.get(router_id)
    gw = local_gateway(view, router) if router is not None else None
    if gw is None:
        return []
    vid = vlan_vid(gw.network)
    tag = None if vid is None else vid & 0xFFF
    ips = [str(a.ip) for a in gw.addrs] + [str(ip) for ip in gw.forwarded]
    out = [(gw.patch, frames.arp_request(gw.port.mac, ip, ip, tag)) for ip in ips]
    for a in gw.addrs6:  # an unsolicited NA to all-nodes, Override set (RFC 4861 §7.2.6)
        sol = nd.Solicitation("33:33:00:00:00:01", "::", str(a.ip))
        out.append((gw.patch, frames.tagged(nd.build_advertisement(sol, gw.port.mac, True), tag)))
    return out


def _prober(view: LocalView, network_id: str) -> bool:
    """Whether this chassis probes the learned bindings of an internal network: of the
    chassis with a port of the network, the first by name (every agent agrees on it
    from the same view, so one probe per period goes out, not one per chassis)."""
    if not any(pid in view.bindings for pid in view.ports_by_network.get(network_id, ())):
        return False
    others = network_chassis(view, network_id)
    return all(view.chassis_name < c.name for c in others)


def _internal_probe(view: LocalView, binding: MacBinding) -> tuple[Inject, bytes] | None:
    """A who-has or NS for an internal network's binding, from the first router (by id)
    with an interface address on its subnet, flooded into the network."""
    network = view.networks.get(binding.network_id)
    if network is None or not _prober(view, network.id):
        return None
    for rid in sorted(view.routers_by_network.get(network.id, ())):
        router = view.routers.get(rid)
        if router is not None and router.admin_state_up:
            found = ask(view, network, router.key, binding.ip)
            if found is not None:
                return found
    return None


def refreshes(view: LocalView) -> list[tuple[Destination, bytes]]:
    """(where, who-has or NS) probing each learned binding: on a network where this
    chassis hosts a gateway, from the first of them with an address on its subnet, out of
    the patch port; on an internal network, from a router interface into the network, by
    the chassis `_prober` names."""
    out: list[tuple[Destination, bytes]] = []
    for binding in sorted(view.mac_bindings.values(), key=lambda b: (b.network_id, b.ip)):
        try:
            found = ipaddress.ip_address(binding.ip)
        except ValueError:
            continue
        if not local_gateways(view, binding.network_id):
            probe = _internal_probe(view, binding)
            if probe is not None:
                out.append(probe)
            continue
        if isinstance(found, ipaddress.IPv6Address):
            for gw in local_gateways(view, binding.network_id):
                addr6 = next((a for a in gw.addrs6 if found in a.network and found != a.ip), None)
                if addr6 is not None:
                    ns = nd.build_solicitation(gw.port.mac, str(addr6.ip), str(found))
                    out.append((gw.patch, frames.tagged(ns, vlan_tag(gw.network))))
                    break
            continue
        target = found
        for gw in local_gateways(view, binding.network_id):
            addr = next((a for a in gw.addrs if target in a.network and target != a.ip), None)
            if addr is None:
                continue
            vid = vlan_vid(gw.network)
            tag = None if vid is None else vid & 0xFFF
            out.append((gw.patch, frames.arp_request(gw.port.mac, str(addr.ip), str(target), tag)))
            break
    return out
