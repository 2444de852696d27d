"""Packet-in services: route each punt by its userdata byte, rate-limited per port.

The pipeline punts packets with `controller(userdata=<PUNT_x>...)` (wyvern/apps/punts.py);
the channel delivers them with the registers at the time of the punt, so a handler knows
the logical network (metadata = network_key) and port (reg14 = src_port_key) without
looking at the packet. A handler is a function `(PacketIn, now) -> [PacketOut]` over the
local view: no I/O and no clock inside (time is passed in), so it is unit-testable; `run`
is the thin asyncio shell that feeds it from the channel and sends what it returns.

Every port has a token bucket (default 20 packets/s, burst 40) checked before any
parsing, so a VM flooding DHCP costs a dict lookup per packet and cannot starve other
ports or the OpenFlow connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from wyvern.apps import punts
from wyvern.apps.gateway import local_gateway
from wyvern.controller import dhcp, dhcp6, frames, icmp_errors, nd, neighbours, ra
from wyvern.model.view import LocalView, MacBinding, Network, Port, Router
from wyvern.southbound.ofchannel import ChannelError, Inject, PacketIn

LOG = logging.getLogger(__name__)

DEFAULT_RATE = 20.0  # packets per second, per port
DEFAULT_BURST = 40.0


@dataclass(frozen=True, slots=True)
class PacketOut:
    ofport: int | Inject  # (Inject: into the pipeline, e.g. flooded into a network)
    data: bytes


Handler = Callable[[PacketIn, float], list[PacketOut]]


class Channel(Protocol):
    """What `run` needs from wyvern.southbound.ofchannel.OfChannel."""

    def packet_ins(self) -> AsyncIterator[PacketIn]: ...

    async def packet_out(self, ofport: int | Inject, data: bytes) -> None: ...


@dataclass
class TokenBucket:
    """Per-key token buckets: RATE tokens per second, at most BURST; time passed in."""

    rate: float = DEFAULT_RATE
    burst: float = DEFAULT_BURST
    max_keys: int = 65536
    _state: dict[Hashable, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: Hashable, now: float) -> bool:
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(now)
        self._state[key] = (tokens, now)
        return allowed

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they are the same as a new bucket)."""
        full = [
            k
            for k, (tokens, last) in self._state.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._state[k]

    def forget(self, key: Hashable) -> None:
        self._state.pop(key, None)

    def __len__(self) -> int:
        return len(self._state)


def find_port(view: LocalView, network_key: int, port_key: int) -> tuple[Network, Port] | None:
    """The logical network and port a punt came from, by their dataplane keys."""
    network = neighbours.network_by_key(view, network_key)
    if network is None:
        return None
    for pid in view.ports_by_network.get(network.id, ()):
        port = view.ports.get(pid)
        if port is not None and port.key == port_key:
            return network, port
    return None


def _within(ip: str, iface: ipaddress.IPv6Interface) -> bool:
    try:
        return ipaddress.IPv6Address(ip) in iface.network
    except ValueError:
        return False


def dhcp_server_mac(view: LocalView, network: Network, gateway_ip: str | None) -> str:
    """The router interface MAC that owns the gateway IP, else the network's service MAC."""
    if gateway_ip:
        for port in view.network_ports(network.id):
            if port.is_router_port and gateway_ip in port.ips:
                return port.mac
    return dhcp.service_mac(network)


class PacketInDispatcher:
    """Routes punts to handlers by userdata[0]; per-port rate limit in front of them."""

    def __init__(
        self,
        view: LocalView,
        *,
        dhcp_settings: dhcp.DhcpSettings | None = None,
        limiter: TokenBucket | None = None,
        ra_settings: ra.RaSettings | None = None,
    ) -> None:
        self.view = view
        self.dhcp_settings = dhcp_settings or dhcp.DhcpSettings()
        self.ra_settings = ra_settings or ra.RaSettings()
        self.limiter = limiter if limiter is not None else TokenBucket()  # empty is falsy
        self.handlers: dict[int, Handler] = {
            punts.PUNT_DHCP4: self.handle_dhcp4,
            punts.PUNT_DHCP6: self.handle_dhcp6,
            punts.PUNT_ICMP4_ERROR: self.handle_icmp4_error,
            punts.PUNT_ICMP6_ERROR: self.handle_icmp6_error,
            punts.PUNT_ND_NS: self.handle_nd_ns,
            punts.PUNT_ARP_LEARN: self.handle_arp_learn,
            punts.PUNT_ARP_REQUEST: self.handle_arp_request,
            punts.PUNT_ND_LEARN: self.handle_nd_learn,
            punts.PUNT_ND_REQUEST: self.handle_nd_request,
            punts.PUNT_ND_RA: self.handle_router_solicitation,
        }
        self.stats: Counter[str] = Counter()
        # MAC bindings learned and not yet written to the store (the caller drains it,
        # outside the view's lock), and a who-has per next hop at most once a second.
        self.learned: list[MacBinding] = []
        self.arp_limiter = TokenBucket(rate=1.0, burst=2.0)

    def register(self, punt: int, handler: Handler) -> None:
        self.handlers[punt] = handler

    def handle(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """One packet-in -> the packets to send (possibly none)."""
        kind = pin.punt
        handler = self.handlers.get(kind) if kind is not None else None
        if handler is None or kind is None:
            self.stats["unknown"] += 1
            LOG.debug("packet-in from port %d with unknown punt %r", pin.in_port, kind)
            return []
        if not self.limiter.allow(pin.in_port, now):
            self.stats["rate_limited"] += 1
            return []
        self.stats[punts.NAMES.get(kind, str(kind))] += 1
        return handler(pin, now)

    def handle_dhcp4(self, pin: PacketIn, now: float) -> list[PacketOut]:
        view = self.view
        found = find_port(view, pin.network_key, pin.src_port_key)
        if found is None:
            LOG.info(
                "dhcp: no port with key %d on network key %d", pin.src_port_key, pin.network_key
            )
            return []
        network, port = found
        binding = view.bindings.get(port.id)
        if binding is None:
            LOG.info("dhcp port %s: not bound to this chassis", port.id)
            return []
        if not port.admin_state_up:
            return []
        subnets = view.network_subnets(network.id)
        served = dhcp.dhcp_subnet(port, subnets)
        mac = dhcp_server_mac(view, network, served[1].gateway_ip if served else None)
        no_router = mac == dhcp.service_mac(network)  # (the gateway is no router's, or none)
        reply = dhcp.handle(
            pin.data, port, network, subnets, self.dhcp_settings, mac, metadata_route=no_router
        )
        if reply is None:
            return []
        self.stats[f"dhcp4_{reply.name.lower()}"] += 1
        return [PacketOut(binding.ofport, reply.frame)]

    def handle_dhcp6(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A DHCPv6 client message from a local port (wyvern/controller/dhcp6.py); a
        malformed one is dropped and counted (`dhcp6_malformed`)."""
        view = self.view
        found = find_port(view, pin.network_key, pin.src_port_key)
        if found is None:
            return []
        network, port = found
        binding = view.bindings.get(port.id)
        if binding is None or not port.admin_state_up:
            return []
        try:
            req = dhcp6.parse_request(pin.data)
        except dhcp6.Dhcp6Error as exc:
            self.stats["dhcp6_malformed"] += 1
            LOG.debug("dhcp6 port %s: dropped: %s", port.id, exc)
            return []
        reply = dhcp6.answer(
            req, port, network, view.network_subnets(network.id), self.dhcp_settings
        )
        if reply is None:
            self.stats["dhcp6_unanswered"] += 1
            return []
        self.stats[f"dhcp6_{reply.name.lower()}"] += 1
        return [PacketOut(binding.ofport, reply.frame)]

    def handle_icmp4_error(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A router could not forward the packet: answer its sender with the ICMP error
        named in the userdata (type, code), from the router's address on that network."""
        if len(pin.userdata) < 3:
            return []
        view = self.view
        found = find_port(view, pin.network_key, pin.src_port_key)
        router_key = pin.register("router_key")
        router = next((r for r in view.routers.values() if r.key == router_key), None)
        if found is None or router is None:
            return []
        network, port = found
        binding = view.bindings.get(port.id)
        source = icmp_errors.router_address(view, router, network)
        if binding is None or source is None:
            return []
        frame = icmp_errors.build_error(
            pin.data, pin.userdata[1], pin.userdata[2], source[0], source[1]
        )
        if frame is None:
            return []
        self.stats[f"icmp4_error_{pin.userdata[1]}"] += 1
        return [PacketOut(binding.ofport, frame)]

    def handle_icmp6_error(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A router could not forward an IPv6 packet: answer its sender with the ICMPv6
        error the userdata names (time exceeded, no route, packet too big) from the
        router's address on the network the packet came from. The sender is the port the
        packet came in on (in_port: after routing, the network and port registers are
        the egress's), a local VIF or, through the router's gateway, the physical
        network. Anything malformed or unexplained is dropped and counted."""
        sent = self._icmp6_error(pin)
        if sent is None:
            self.stats["icmp6_error_dropped"] += 1
            return []
        self.stats[f"icmp6_error_{pin.userdata[1]}"] += 1
        return [sent]

    def _icmp6_error(self, pin: PacketIn) -> PacketOut | None:
        if len(pin.userdata) < 3:
            return None
        icmp_type, icmp_code = pin.userdata[1], pin.userdata[2]
        view = self.view
        router_key = pin.register("router_key")
        router = next((r for r in view.routers.values() if r.key == router_key), None)
        if router is None:
            return None
        sender_ip = icmp_errors.ipv6_source(pin.data)
        tag: int | None = None
        port_id = next((pid for pid, b in view.bindings.items() if b.ofport == pin.in_port), None)
        port = view.ports.get(port_id) if port_id is not None else None
        if port is not None:
            network = view.networks.get(port.network_id)
            source = (
                icmp_errors.router_address6(view, router, network, sender_ip)
                if network is not None
                else None
            )
        else:  # from the physical network, through the router's gateway here
            gw = local_gateway(view, router)
            if gw is None or gw.patch != pin.in_port or not gw.addrs6:
                return None
            on_link = [a for a in gw.addrs6 if sender_ip and _within(sender_ip, a)]
            source = (str((on_link or list(gw.addrs6))[0].ip), gw.port.mac)
            tag = neighbours.vlan_tag(gw.network)
        if source is None:
            return None
        mtu: int | None = 0
        if icmp_type == icmp_errors.ICMP6_PACKET_TOO_BIG:
            mtu = self._egress_mtu(router, pin.network_key)
        if mtu is None:
            return None
        # After routing the frame's source MAC is the router's: routing kept the sender's.
        sender_mac = pin.register("routed_eth_src")
        frame = icmp_errors.build_error6(
            pin.data,
            icmp_type,
            icmp_code,
            source[0],
            source[1],
            mtu=mtu,
            dst_mac=frames.mac_text(sender_mac.to_bytes(6, "big")) if sender_mac else None,
        )
        if frame is None:
            return None
        return PacketOut(pin.in_port, frames.tagged(frame, tag))

    def _egress_mtu(self, router: Router, network_key: int) -> int | None:
        """The MTU of the network a too-big packet was routed to: its network_key, or,
        redirected to the gateway chassis (network_key = the router's), the gateway's."""
        if network_key == router.key:
            gateway = self.view.networks.get(router.gateway_network_id or "")
            return gateway.mtu if gateway is not None else None
        network = neighbours.network_by_key(self.view, network_key)
        return network.mtu if network is not None else None

    def handle_nd_ns(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A neighbour solicitation for a known address: the owner's advertisement goes
        back to the soliciting port (wyvern/controller/nd.py)."""
        view = self.view
        found = find_port(view, pin.network_key, pin.src_port_key)
        if found is None:
            return []
        network, port = found
        binding = view.bindings.get(port.id)
        if binding is None:
            return []
        frame = nd.answer(view, network, port, pin.data)
        if frame is None:
            self.stats["nd_ns_unanswered"] += 1
            return []
        self.stats["nd_na"] += 1
        return [PacketOut(binding.ofport, frame)]

    def handle_router_solicitation(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A router solicitation: the advertisements of the network's router interfaces
        go back to the soliciting port alone (wyvern/controller/ra.py). A malformed one
        is dropped and counted (`ra_rs_malformed`)."""
        view = self.view
        found = find_port(view, pin.network_key, pin.src_port_key)
        binding = view.bindings.get(found[1].id) if found is not None else None
        if found is None or binding is None or not found[1].admin_state_up:
            return []
        frames = ra.answer(view, found[0], pin.data, self.ra_settings)
        if frames is None:
            self.stats["ra_rs_malformed"] += 1
            return []
        self.stats["ra_solicited"] += len(frames)
        return [PacketOut(binding.ofport, f) for f in frames]

    def _sender(self, pin: PacketIn) -> Port | None:
        """The local port a punt came in by (None: the physical network, a tunnel)."""
        port_id = next((p for p, b in self.view.bindings.items() if b.ofport == pin.in_port), None)
        port = self.view.ports.get(port_id) if port_id is not None else None
        return port if port is not None and port.key == pin.src_port_key else None

    def handle_arp_learn(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """ARP from the physical network to a gateway address, an ARP reply to a router
        interface, or a VIP's gratuitous ARP from its holder: keep the sender's MAC."""
        network = neighbours.network_by_key(self.view, pin.network_key)
        sender = self._sender(pin)
        binding = neighbours.learned(self.view, network, pin.data, sender) if network else None
        if binding is not None and binding not in self.learned:
            self.learned.append(binding)
            self.stats["mac_learned"] += 1
        return []

    def handle_arp_request(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """A next hop without a MAC: ask for it (out of the patch port from the gateway on
        an external network; into an internal network from the router interface)."""
        network = neighbours.network_by_key(self.view, pin.network_key)
        next_hop = pin.register("next_hop_ipv4")
        if network is None or not self.arp_limiter.allow((network.id, next_hop), now):
            return []
        router_key = pin.register("router_key")
        found = neighbours.request(self.view, network, router_key, next_hop, pin.data)
        if found is None:
            return []
        self.stats["arp_who_has"] += 1
        return [PacketOut(found[0], found[1])]

    def handle_nd_learn(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """NS or NA from the physical network to a gateway: keep what it says about its
        sender; an NS for the gateway's address is answered (wyvern.controller.nd)."""
        network = neighbours.network_by_key(self.view, pin.network_key)
        if network is None:
            return []
        binding = neighbours.learned_nd(self.view, network, pin.data, self._sender(pin))
        if binding is not None and binding not in self.learned:
            self.learned.append(binding)
            self.stats["mac_learned"] += 1
        found = neighbours.nd_answer(self.view, network, pin.register("router_key"), pin.data)
        if found is None:
            return []
        self.stats["nd_na"] += 1
        return [PacketOut(found[0], found[1])]

    def handle_nd_request(self, pin: PacketIn, now: float) -> list[PacketOut]:
        """An IPv6 next hop without a MAC: solicit it (as handle_arp_request)."""
        network = neighbours.network_by_key(self.view, pin.network_key)
        next_hop = pin.register("next_hop_ipv6")
        if network is None or not self.arp_limiter.allow((network.id, next_hop), now):
            return []
        found = neighbours.solicit(self.view, network, pin.register("router_key"), next_hop)
        if found is None:
            return []
        self.stats["nd_ns"] += 1
        return [PacketOut(found[0], found[1])]

    async def run(self, channel: Channel, clock: Callable[[], float] = time.monotonic) -> None:
        """Serve packet-ins from CHANNEL until cancelled."""
        count = 0
        async for pin in channel.packet_ins():
            try:
                outs = self.handle(pin, clock())
            except Exception:  # one bad packet must not stop the service
                LOG.exception("packet-in from port %d: handler failed", pin.in_port)
                outs = []
            for out in outs:
                try:
                    await channel.packet_out(out.ofport, out.data)
                except ChannelError as exc:
                    LOG.warning("packet-out to port %d dropped: %s", out.ofport, exc)
            count += 1
            if count % 64 == 0:
                await asyncio.sleep(0)  # a burst of dropped punts must not hog the loop
