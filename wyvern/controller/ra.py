"""IPv6 router advertisements from the router interfaces, sent by the VM's own chassis.

Neutron's l3 agent runs radvd on each router interface with an IPv6 subnet; Wyvern's
routers are distributed, so the agent of the chassis a VM is bound to speaks for them
(as OVN's pinctrl does), out of that VM's port only: nothing is flooded nor tunnelled.

- Solicited: the services app punts a router solicitation (RS) with PUNT_ND_RA; the
  packet-in dispatcher answers it with a unicast RA to the soliciting VM (radvd's
  default, AdvRASolicitedUnicast), or to all-nodes out of that port when the RS came
  from the unspecified address (RFC 4861 §6.2.6).
- Unsolicited (`Schedule`): each local port of a network with advertising interfaces
  (administratively up) gets an RA to all-nodes (ff02::1, 33:33:00:00:00:01) every
  uniform(min, max) seconds (`min_rtr_adv_interval` / `max_rtr_adv_interval`, Neutron's
  l3 agent settings), and soon after it appears on the chassis or its network's advertisements
  change, three times (RFC 4861 §6.2.4: MAX_INITIAL_RTR_ADVERTISEMENTS), so a booting
  VM does not wait for the period. An interface that stops advertising (removed,
  administratively down, its last IPv6 subnet gone) sends each port a final RA with
  router lifetime 0 (RFC 4861 §6.2.5), so the VMs drop that default route at once.

What an RA says (`Advertisement`), as Neutron's radvd configuration does for the
interface (`wyvern.apps.services.ra_interfaces` lists the interfaces):

- the M flag when one of its subnets is dhcpv6-stateful, the O flag when one is
  dhcpv6-stateless;
- one prefix information option per slaac or dhcpv6-stateless subnet (on-link,
  autonomous) and per dhcpv6-stateful subnet (on-link, not autonomous); a subnet without
  ipv6_ra_mode is not advertised, though the interface still is a default router;
  lifetimes are radvd's defaults (valid 86400 s, preferred 14400 s);
- router lifetime 3 x max_rtr_adv_interval (radvd's AdvDefaultLifetime), hop limit 64,
  reachable time and retransmission timer unspecified (0);
- the MTU option: the network's MTU (when at least IPv6's minimum, 1280);
- RDNSS (RFC 8106): the IPv6 dns_nameservers of its slaac subnets, at most three (as
  Neutron: stateless and stateful subnets give DNS by DHCPv6); with them a DNSSL of the
  DNS domain DHCP gives (the network's `dns_domain`, else the `dns_domain` setting,
  Neutron's default `openstacklocal`). Neutron's radvd sends no DNSSL: a VM on a slaac
  subnet has no other way to learn its search domain. Both live 3 x max_rtr_adv_interval
  (radvd's default, RFC 8106 §5.1);
- source: the interface's link-local address (fe80::/64 + EUI-64 of its MAC), from its
  MAC, with the source link-layer address option, hop limit 255.

Pure: view records and bytes in, frames out; the dispatcher and the agent do the I/O.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.services import ra_interfaces
from wyvern.controller import frames
from wyvern.model.dns import dhcp_domain
from wyvern.model.view import Change, LocalView, Network

ND_ROUTER_SOLICIT, ND_ROUTER_ADVERT = 133, 134
ND_OPT_SLLA, ND_OPT_PREFIX, ND_OPT_MTU = 1, 3, 5
ND_OPT_RDNSS, ND_OPT_DNSSL = 25, 31
ALL_NODES, ALL_NODES_MAC = "ff02::1", "33:33:00:00:00:01"
ND_HOP_LIMIT = 255
CUR_HOP_LIMIT = 64  # radvd's AdvCurHopLimit
VALID_LIFETIME, PREFERRED_LIFETIME = 86400, 14400  # radvd's prefix defaults
IPV6_MIN_MTU = 1280
MAX_RDNSS = 3  # Neutron writes at most three servers into radvd's RDNSS line
RA_MANAGED, RA_OTHER = 0x80, 0x40
PI_ON_LINK, PI_AUTONOMOUS = 0x80, 0x40
SLAAC, STATEFUL, STATELESS = "slaac", "dhcpv6-stateful", "dhcpv6-stateless"
DEFAULT_MIN_INTERVAL, DEFAULT_MAX_INTERVAL = 30.0, 100.0  # Neutron's l3 agent defaults
INITIAL_ADVERTISEMENTS = 3  # RFC 4861 §6.2.4
INITIAL_INTERVAL = 16.0  # MAX_INITIAL_RTR_ADVERT_INTERVAL: the cap between them
DEFAULT_DOMAIN = "openstacklocal"  # (the `dns_domain` setting's default, as DHCP)


@dataclass(frozen=True, slots=True)
class RaSettings:
    min_interval: float = DEFAULT_MIN_INTERVAL
    max_interval: float = DEFAULT_MAX_INTERVAL
    dns_domain: str = DEFAULT_DOMAIN

    @property
    def router_lifetime(self) -> int:
        """radvd's AdvDefaultLifetime: 3 x MaxRtrAdvInterval (at least 1, at most the
        16-bit field)."""
        return max(1, min(0xFFFF, int(3 * self.max_interval)))

    @property
    def dns_lifetime(self) -> int:
        """radvd's AdvRDNSSLifetime and AdvDNSSLLifetime: 3 x MaxRtrAdvInterval."""
        return int(3 * self.max_interval)


@dataclass(frozen=True, slots=True)
class Prefix:
    cidr: str
    autonomous: bool
    subnet_id: str


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What one router interface advertises on its network."""

    router_id: str
    port_id: str  # the router interface port
    mac: str
    source: str  # its link-local address
    managed: bool
    other: bool
    prefixes: tuple[Prefix, ...]
    subnet_ids: tuple[str, ...]  # every IPv6 subnet of the interface
    mtu: int | None
    dns: tuple[str, ...]
    domains: tuple[str, ...]


def advertisements(
    view: LocalView, network: Network, settings: RaSettings | None = None
) -> list[Advertisement]:
    """Every router interface's advertisement on NETWORK (none: no RA, no RS answered)."""
    domain = dhcp_domain(network.dns_domain, (settings or RaSettings()).dns_domain)
    out = []
    for router, port, subnets in ra_interfaces(view, network.id):
        modes = {s.ipv6_ra_mode for s in subnets}
        auto = [Prefix(s.cidr, True, s.id) for s in subnets if s.ipv6_ra_mode in (SLAAC, STATELESS)]
        stateful = [Prefix(s.cidr, False, s.id) for s in subnets if s.ipv6_ra_mode == STATEFUL]
        dns = [
            ns for s in subnets if s.ipv6_ra_mode == SLAAC for ns in s.dns_nameservers if _is_v6(ns)
        ][:MAX_RDNSS]
        out.append(
            Advertisement(
                router_id=router.id,
                port_id=port.id,
                mac=port.mac,
                source=str(eui64_link_local(port.mac)),
                managed=STATEFUL in modes,
                other=STATELESS in modes,
                prefixes=(*auto, *stateful),
                subnet_ids=tuple(s.id for s in subnets),
                mtu=network.mtu if network.mtu >= IPV6_MIN_MTU else None,
                dns=tuple(dns),
                domains=(domain,) if dns and domain else (),
            )
        )
    return out


def _is_v6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _dns_name(domain: str) -> bytes | None:
    """DOMAIN in DNS wire format (RFC 1035 §3.1), None if it cannot be encoded."""
    out = b""
    for label in domain.strip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            return None
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _options(adv: Advertisement, settings: RaSettings) -> bytes:
    """In radvd's order: prefixes, RDNSS, DNSSL, MTU, source link-layer address."""
    out = b""
    for p in adv.prefixes:
        net = ipaddress.IPv6Network(p.cidr)
        flags = PI_ON_LINK | (PI_AUTONOMOUS if p.autonomous else 0)
        out += struct.pack(
            "!BBBBIII16s", ND_OPT_PREFIX, 4, net.prefixlen, flags, VALID_LIFETIME,
            PREFERRED_LIFETIME, 0, net.network_address.packed,
        )  # fmt: skip
    if adv.dns:
        addrs = b"".join(ipaddress.IPv6Address(a).packed for a in adv.dns)
        out += struct.pack("!BBHI", ND_OPT_RDNSS, 1 + 2 * len(adv.dns), 0, settings.dns_lifetime)
        out += addrs
    names = b"".join(n for n in (_dns_name(d) for d in adv.domains) if n is not None)
    if names:
        names += bytes(-(8 + len(names)) % 8)  # (padded to the option's 8-byte units)
        out += struct.pack("!BBHI", ND_OPT_DNSSL, (8 + len(names)) // 8, 0, settings.dns_lifetime)
        out += names
    if adv.mtu is not None:
        out += struct.pack("!BBHI", ND_OPT_MTU, 1, 0, adv.mtu)
    return out + struct.pack("!BB6s", ND_OPT_SLLA, 1, frames.mac_bytes(adv.mac))


def build(
    adv: Advertisement, eth_dst: str, ip_dst: str, settings: RaSettings, *, final: bool = False
) -> bytes:
    """The RA frame ADV describes, from the interface to ETH_DST / IP_DST; FINAL: its
    router lifetime is 0 (the interface stops advertising, RFC 4861 §6.2.5)."""
    flags = (RA_MANAGED if adv.managed else 0) | (RA_OTHER if adv.other else 0)
    lifetime = 0 if final else settings.router_lifetime
    body = struct.pack("!BBHII", CUR_HOP_LIMIT, flags, lifetime, 0, 0)
    icmp6 = frames.icmp6(adv.source, ip_dst, ND_ROUTER_ADVERT, 0, body + _options(adv, settings))
    ip6 = frames.ipv6(adv.source, ip_dst, frames.IPPROTO_ICMPV6, icmp6, hop_limit=ND_HOP_LIMIT)
    return frames.ethernet(eth_dst, adv.mac, frames.ETH_TYPE_IPV6, ip6)


@dataclass(frozen=True, slots=True)
class Solicitation:
    eth_src: str
    ipv6_src: str


def parse_solicitation(frame: bytes) -> Solicitation | None:
    """A valid RS (RFC 4861 §6.1.1: hop limit 255, code 0, at least 8 bytes, a correct
    checksum, options of non-zero length within the packet, no source link-layer option
    from the unspecified address), else None."""
    eth = frames.parse_ethernet(frame)
    ip6 = frames.parse_ipv6(eth.payload) if eth and eth.ethertype == frames.ETH_TYPE_IPV6 else None
    if eth is None or ip6 is None or ip6.next_header != frames.IPPROTO_ICMPV6:
        return None
    msg = ip6.payload
    if len(msg) < 8 or msg[0] != ND_ROUTER_SOLICIT or msg[1] != 0 or ip6.hop_limit != ND_HOP_LIMIT:
        return None
    if frames.icmp6(ip6.src, ip6.dst, msg[0], msg[1], msg[4:]) != msg:
        return None  # (the checksum: recomputed over the same bytes, it must agree)
    options, sll = msg[8:], False
    while options:
        if len(options) < 2 or options[1] == 0 or len(options) < options[1] * 8:
            return None
        sll = sll or options[0] == ND_OPT_SLLA
        options = options[options[1] * 8 :]
    source = ipaddress.IPv6Address(ip6.src)
    if source.is_unspecified and sll:
        return None
    if source.is_multicast:
        return None
    return Solicitation(eth.src, ip6.src)


def answer(
    view: LocalView, network: Network, frame: bytes, settings: RaSettings
) -> list[bytes] | None:
    """The RAs answering the RS FRAME on NETWORK (one per advertising interface), or None
    when FRAME is no valid RS."""
    sol = parse_solicitation(frame)
    if sol is None:
        return None
    if ipaddress.IPv6Address(sol.ipv6_src).is_unspecified:
        eth_dst, ip_dst = ALL_NODES_MAC, ALL_NODES
    else:
        eth_dst, ip_dst = sol.eth_src, sol.ipv6_src
    return [build(a, eth_dst, ip_dst, settings) for a in advertisements(view, network, settings)]


def unsolicited(view: LocalView, network: Network, settings: RaSettings) -> list[bytes]:
    """NETWORK's RAs to all-nodes (one per advertising interface)."""
    return [
        build(a, ALL_NODES_MAC, ALL_NODES, settings)
        for a in advertisements(view, network, settings)
    ]


@dataclass
class Schedule:
    """When each local port gets its next unsolicited RA. `update` with every batch of
    view changes (new ports and changed advertisements are due at once; only the
    networks the changes touch are looked at), `due` every step. Time is passed in; the
    jitter comes from RNG."""

    settings: RaSettings = field(default_factory=RaSettings)
    rng: Callable[[float, float], float] = random.uniform
    # port id -> (network id, when next, initial RAs still to send)
    _next: dict[str, tuple[str, float, int]] = field(default_factory=dict)
    _ports: dict[str, set[str]] = field(default_factory=dict)  # network id -> its ports
    _ads: dict[str, list[Advertisement]] = field(default_factory=dict)  # by network id
    _final: list[tuple[str, Advertisement]] = field(default_factory=list)  # (port, gone)

    def update(self, view: LocalView, now: float, changes: Iterable[Change] | None = None) -> None:
        """Follow CHANGES (None: look at every network with local ports)."""
        if changes is None:
            ports = view.ports
            nets = {ports[p].network_id for p in view.bindings if p in ports}
            nets |= set(self._ports)
        else:
            nets = set()
            for ch in changes:
                nets |= self._networks(view, ch)
        for net_id in nets:
            self._refresh(view, net_id, now)

    def _networks(self, view: LocalView, ch: Change) -> set[str]:
        """The networks whose advertisements or local ports CH may change."""
        out: set[str] = set()
        if ch.kind == "network":
            out.add(ch.id)
        elif ch.kind in ("subnet", "port"):
            out |= {r.network_id for r in (ch.old, ch.new) if r is not None}
        elif ch.kind == "router":
            for r in (ch.old, ch.new):
                out |= {i.network_id for i in r.interfaces} if r is not None else set()
        elif ch.kind == "binding":
            port = view.ports.get(ch.id)
            if port is not None:
                out.add(port.network_id)
            if ch.id in self._next:
                out.add(self._next[ch.id][0])
        return out

    def _refresh(self, view: LocalView, net_id: str, now: float) -> None:
        bindings, ports = view.bindings, view.ports
        local = {
            p
            for p in view.ports_by_network.get(net_id, ())
            if p in bindings and p in ports and ports[p].admin_state_up
        }
        net = view.networks.get(net_id)
        ads = advertisements(view, net, self.settings) if net is not None and local else []
        old = self._ads.get(net_id, [])
        changed = ads != old
        if changed:  # interfaces that stopped advertising say so (to ports still here)
            kept = {(a.router_id, a.port_id) for a in ads}
            gone = [a for a in old if (a.router_id, a.port_id) not in kept]
            self._final += [(p, a) for p in sorted(local) for a in gone]
        scheduled = self._ports.pop(net_id, set())
        self._ads.pop(net_id, None)
        for p in scheduled - (local if ads else set()):
            if self._next.get(p, ("",))[0] == net_id:
                del self._next[p]
        if not ads:
            return
        self._ads[net_id] = ads
        self._ports[net_id] = local
        for p in local:
            if changed or p not in scheduled or self._next.get(p, ("",))[0] != net_id:
                self._next[p] = (net_id, now, INITIAL_ADVERTISEMENTS)

    def due(self, view: LocalView, now: float) -> list[tuple[int, bytes]]:
        """The RAs due by NOW: (ofport, frame); each port's next one scheduled."""
        out: list[tuple[int, bytes]] = []
        s = self.settings
        for port_id, gone in self._final:
            binding = view.bindings.get(port_id)
            if binding is not None:
                out.append((binding.ofport, build(gone, ALL_NODES_MAC, ALL_NODES, s, final=True)))
        self._final = []
        built: dict[str, list[bytes]] = {}  # network id -> its RAs (the same for each port)
        for port_id, (net_id, when, initial) in list(self._next.items()):
            if when > now:
                continue
            binding = view.bindings.get(port_id)
            if binding is not None:
                if net_id not in built:
                    ads = self._ads.get(net_id, [])
                    built[net_id] = [build(a, ALL_NODES_MAC, ALL_NODES, s) for a in ads]
                out += [(binding.ofport, f) for f in built[net_id]]
            interval = self.rng(s.min_interval, s.max_interval)
            if initial > 1:
                interval = min(interval, INITIAL_INTERVAL)
            self._next[port_id] = (net_id, now + interval, max(0, initial - 1))
        return out

    def next_due(self) -> float | None:
        """When the next RA is due (None: none scheduled)."""
        if self._final:
            return float("-inf")
        return min((when for _, when, _ in self._next.values()), default=None)
