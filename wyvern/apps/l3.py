"""The distributed L3 router: router_input, routing and arp_resolve.

Every chassis routes the packets of its own ports (Neutron's distributed router, OVN
style): the L2 app sends a packet addressed to a router interface MAC to `router_input`
with `router_key` loaded, and the packet leaves the router, rewritten, back into
`l2_lookup` of the output network, which delivers it by destination MAC (so the
destination's egress security groups and port security still apply).

- router_input (owner ("router", id)): an ICMP/ICMPv6 echo request to any of the router's
  own addresses is answered in place (MACs and addresses swapped, TTL 255) and sent back
  to its sender through the output stage (dst_port_key = src_port_key,
  flag_allow_loopback); other traffic to the router's addresses is dropped; IPv4 with
  TTL <= 1 is punted (`PUNT_ICMP4_ERROR`, then ICMP type 11 and code 0 in the userdata)
  for the agent to send a time-exceeded; IPv6 with hop limit <= 1 likewise
  (`PUNT_ICMP6_ERROR`, ICMPv6 type 3 code 0); the rest goes to dnat.
- routing (owner ("router", id)): longest-prefix match on the destination. Priority
  `_route_priority` = base + prefix length * 4 + (2 for a connected subnet, 1 for an
  extra route), so a longer prefix always wins and a connected subnet beats an extra
  route of the same length. A route decrements the TTL, sets the output network key, the
  source port key (the router's port on that network, so the egress half sees the
  packet come from the router port), the router MAC on that network as source MAC and
  the next hop (the destination itself, or the extra route's next hop) in
  `next_hop_ipv4` or, for IPv6, `next_hop_ipv6`.
  IPv4 with no route is punted (`PUNT_ICMP4_ERROR`, type 3 code 0: net unreachable),
  IPv6 with no route too (`PUNT_ICMP6_ERROR`, type 1 code 0), except to link-local and
  multicast destinations (dropped: a router never forwards them).
  An IPv6 route first runs `check_pkt_larger(egress MTU + 14)` (the frame, untagged
  here, is the IP packet + the Ethernet header) into `flag_pkt_larger` and keeps the
  sender's MAC in `routed_eth_src`, then goes to mtu_check.
- mtu_check (owner ("router", id)): a flagged IPv6 packet is punted
  (`PUNT_ICMP6_ERROR`, type 2: packet too big, with the egress network's MTU) instead
  of forwarded; IPv6 has no fragmentation on the path, so this is what makes path-MTU
  discovery work across networks of different MTUs. The rest goes on to arp_resolve
  (the stage's miss), or, redirected to the gateway chassis, to output. IPv4 is not
  checked: OpenFlow cannot match the DF bit, and a frag-needed for every large IPv4
  packet would drop what is forwarded today.
- arp_resolve (owner ("port", id), for every port of a network a router is attached to):
  next hop → MAC of the port that owns that address in the output network (local or
  remote ports alike; an address on two ports resolves to the lower port id). Per port, so
  a port joining a network of thousands adds its own flows and rebuilds nothing else.
  A virtual address (one another port of the network may claim by an allowed address
  pair: a VRRP/keepalived or Octavia VIP, usually reserved by an unbound port's fixed IP)
  is never resolved to the port that reserves it: the holder answers with its own MAC.

Stage defaults (priority 0, from `global_flows`): router_input, routing and arp_resolve
drop; the nat app's pass-throughs continue dnat → meter_ingress → routing and
meter_egress → snat → l2_lookup (wyvern.apps.metering counts what passes there).

Next hops that are no port's address (the external network's upstream router, a host
an extra route names) or are virtual are resolved from learned MAC bindings (priority
PRIO_LEARNED), on external and internal networks alike, and an unknown one is punted for
the agent to ARP for (PUNT_ARP_REQUEST) or, IPv6, to solicit (PUNT_ND_REQUEST): out of
the patch port from the gateway on an external network, into the internal network from
the router interface otherwise (wyvern.controller.neighbours). On an internal network the
answer to the interface's MAC is punted in router_input and learned (PUNT_ARP_LEARN,
PUNT_ND_LEARN), and the holder's gratuitous ARPs and NAs for a VIP are learned as they
are flooded (wyvern.apps.services), so routed traffic follows a failover at once.
On a chassis that does not host the router's gateway, what
leaves by the gateway (its subnets, the default routes, extra routes through an outside
next hop) is redirected to the gateway chassis (wyvern.apps.gateway).

Why a 128-bit register for the IPv6 next hop (`next_hop_ipv6`, in xxreg1; OVN keeps its
own in xxreg0) rather than resolving a route's fixed next hop in the routing flow itself:
with the register, arp_resolve stays one flow per address whatever the routes (a route
through a neighbour is not rebuilt when that neighbour's binding is learned, and the
router's flows do not depend on the bindings), IPv6 extra routes through ports and
outside hosts cost nothing more than IPv4 ones, and the ND punt tells the agent which
next hop to solicit (it reads the register from the packet-in) instead of the agent
redoing the route lookup. The cost was teaching the register map, the renderer and the
simulator the xxreg layout (docs/dataplane.md: IPv6 next-hop register).

Not yet: ECMP (of several extra routes to one destination the lowest next hop wins).
Neighbour solicitations for the router's addresses on internal networks are the services
stage's job (wyvern.controller.nd); those for its gateway's are punted here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from wyvern.apps.base import App, Owner
from wyvern.apps.common import NAT_SCOPE, virtual
from wyvern.apps.gateway import (
    REDIRECT_KEY,
    Gateway,
    LocalFip,
    local_fip,
    local_gateway,
    remote_gateway,
)
from wyvern.apps.punts import (
    PUNT_ARP_LEARN,
    PUNT_ARP_REQUEST,
    PUNT_ICMP4_ERROR,
    PUNT_ICMP6_ERROR,
    PUNT_ND_LEARN,
    PUNT_ND_REQUEST,
    code,
    punt,
)
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    Action,
    CheckPktLarger,
    DecTtl,
    Flow,
    FlowTemplate,
    Goto,
    Load,
    MatchValue,
    Move,
    Resubmit,
    SetField,
    ip_value,
    parse_value,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.model.view import LocalView, Network, Port, Router

# router_input priorities
PRIO_GATEWAY_ARP = 100
PRIO_ECHO = 90
PRIO_UNSNAT = 85
PRIO_TO_ROUTER = 80
PRIO_TTL = 30
PRIO_FORWARD = 10
# routing: above this base, 4 per prefix bit
PRIO_ROUTE_BASE = 100
PRIO_NO_ROUTE = 1
PRIO_OWN_ADDRESS = 400  # (above any route: a /32 is 100 + 32 * 4 + 2)
# arp_resolve
PRIO_RESOLVE = 100
PRIO_LEARNED = 90  # a learned MAC binding: below any port's own address
PRIO_UNRESOLVED = 1

ICMP4_TIME_EXCEEDED = (11, 0)
ICMP4_NET_UNREACHABLE = (3, 0)
ICMP6_TIME_EXCEEDED = (3, 0)
ICMP6_NO_ROUTE = (1, 0)
ICMP6_TOO_BIG = (2, 0)
ETH_HEADER = 14  # check_pkt_larger counts the frame: an untagged header + the IP packet
# mtu_check
PRIO_TOO_BIG = 100
PRIO_REDIRECT = 50
# routing: IPv6 destinations a router never forwards (nor answers unreachable for),
# whatever the routes (the longest, a /128, is 100 + 128 * 4 + 2, a floating IP's + 1)
PRIO_NOT_ROUTED = PRIO_ROUTE_BASE + 129 * 4
_NOT_ROUTED6 = ("fe80::/10", "ff00::/8")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_V6_HOP = ("ipv6_dst", "next_hop_ipv6")
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT = 135, 136


def _route_priority(prefixlen: int, connected: bool) -> int:
    return PRIO_ROUTE_BASE + prefixlen * 4 + (2 if connected else 1)


def _scope_drop_priority(prefixlen: int) -> int:
    """Below every route of that prefix: what no route of it admits (another scope)."""
    return PRIO_ROUTE_BASE + prefixlen * 4


def scope_key(net: Network, version: int) -> int:
    return net.scope4 if version == 4 else net.scope6


def _punt(icmp: tuple[int, int]) -> tuple[Action, ...]:
    return punt(bytes((PUNT_ICMP4_ERROR, *icmp)))


def _punt6(icmp: tuple[int, int]) -> tuple[Action, ...]:
    return punt(bytes((PUNT_ICMP6_ERROR, *icmp)))


def _mtu_check(network: Network) -> tuple[Action, ...]:
    """What a route to NETWORK does first for IPv6: flag a frame over its MTU (for
    mtu_check, which punts it for a packet too big) and keep the sender's MAC, which the
    route then rewrites (the error goes back to it)."""
    return (
        CheckPktLarger(network.mtu + ETH_HEADER, "flag_pkt_larger"),
        Move("eth_src", "routed_eth_src"),
    )


def _dst_match(net: IpNetwork) -> dict[str, MatchValue]:
    """Match on a destination prefix (a /0 matches the whole family)."""
    if net.version == 4:
        return {"ipv4_dst": net} if net.prefixlen else {"eth_type": ETH_TYPE_IP}
    return {"ipv6_dst": net} if net.prefixlen else {"eth_type": ETH_TYPE_IPV6}


class _Itf:
    """A router interface resolved against the view (its port and network exist)."""

    __slots__ = ("addrs", "network", "port")

    def __init__(self, network: Network, port: Port, addrs: list[IpInterface]) -> None:
        self.network = network
        self.port = port
        self.addrs = addrs


def _interfaces(view: LocalView, router: Router) -> list[_Itf]:
    out: list[_Itf] = []
    for itf in router.interfaces:
        net = view.networks.get(itf.network_id)
        port = view.ports.get(itf.port_id)
        if net is None or port is None or port.network_id != itf.network_id:
            continue
        addrs: list[IpInterface] = []
        for ip, cidr in itf.ips:
            try:
                subnet = ipaddress.ip_network(cidr, strict=False)
                addr = ipaddress.ip_interface(f"{ip}/{subnet.prefixlen}")
            except ValueError:
                continue  # a malformed record must not stop the other interfaces
            if addr.version == subnet.version:
                addrs.append(addr)
        out.append(_Itf(net, port, addrs))
    return out


class L3App(App):
    name = "l3"

    # Every router; every port (flows() has none for a port of an unrouted network);
    # every learned MAC binding (a neighbour outside Neutron).
    owner_tables = {
        "router": "routers",
        "port": "ports",
        "mac_binding": "mac_bindings",
        "floatingip": "floatingips",
    }

    @staticmethod
    def _routed(view: LocalView, network_id: str) -> bool:
        """A router has an interface on this network (so it needs next-hop resolution).
        Derived (early cutoff): a router record changes with every floating IP
        association, and every port of its networks would be recomputed otherwise."""
        return view.derive(_routed, network_id)

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, oid = owner
        if kind == "router":
            router = view.routers.get(oid)
            if router is None or not router.admin_state_up:
                return []
            return self._router_flows(view, router)
        if kind == "port":
            port = view.ports.get(oid)
            net = view.networks.get(port.network_id) if port is not None else None
            if port is None or net is None or not self._routed(view, net.id):
                return []
            return self._resolve_flows(view, net, port)
        if kind == "mac_binding":
            return _learned_flows(view, oid)
        if kind == "floatingip":
            lf = local_fip(view, oid)
            return _fip_flows(lf) if lf is not None else []
        return []

    # ---- router_input + routing ----------------------------------------------------------
    def _router_flows(self, view: LocalView, router: Router) -> list[Flow]:
        cookie = encode("l3", router.id)
        rkey = router.key
        itfs = _interfaces(view, router)
        gw = local_gateway(view, router)
        gw_itf = _Itf(gw.network, gw.port, [*gw.addrs, *gw.addrs6]) if gw is not None else None
        if gw_itf is not None:
            itfs.append(gw_itf)
        flows: dict[object, Flow] = {}

        def add(f: Flow) -> None:
            flows.setdefault(f.key, f)

        rd = remote_gateway(view, router) if gw is None else None
        ext = gw.network if gw is not None else rd.gateway.network if rd is not None else None
        # Address scopes (Neutron's l3 agent marks a packet with the scope of the port it
        # came in by, and drops what would leave by a port of another scope unless NAT
        # applies): only for an IP version in which some port of the router has a scope.
        scoped = {
            v: any(scope_key(i.network, v) for i in itfs)
            or (ext is not None and bool(scope_key(ext, v)))
            for v in (4, 6)
        }

        def admitted(itf: _Itf, version: int) -> tuple[int, ...] | None:
            """The addr_scope values a route out of ITF takes (None: any)."""
            if not scoped[version]:
                return None
            if itf is gw_itf and version == 4 and router.enable_snat:
                return None  # (SNATed unless the scopes match: wyvern.apps.nat)
            return (scope_key(itf.network, version), NAT_SCOPE)

        rin = table("router_input")
        own = sorted({a.ip for itf in itfs for a in itf.addrs}, key=lambda a: (a.version, int(a)))
        for itf in itfs:
            nkey = itf.network.key
            mac = itf.port.mac
            for ip in own:
                echo: dict[str, MatchValue]
                if ip.version == 4:
                    echo = {"ipv4_dst": str(ip), "ip_proto": IPPROTO_ICMP, "icmp_type": 8}
                    swap: tuple[Action, ...] = (
                        Move("ipv4_src", "ipv4_dst"),
                        SetField("ipv4_src", str(ip)),
                        SetField("icmp_type", 0),
                    )
                else:
                    echo = {"ipv6_dst": str(ip), "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": 128}
                    swap = (
                        Move("ipv6_src", "ipv6_dst"),
                        SetField("ipv6_src", str(ip)),
                        SetField("icmpv6_type", 129),
                    )
                add(
                    rin.flow(
                        priority=PRIO_ECHO,
                        cookie=cookie,
                        match={"router_key": rkey, "network_key": nkey, "eth_dst": mac, **echo},
                        actions=(
                            Move("eth_src", "eth_dst"),
                            SetField("eth_src", mac),
                            *swap,
                            SetField("nw_ttl", 255),
                            # Back to the sender: the output stage hairpins to in_port.
                            Move("src_port_key", "dst_port_key"),
                            Load("flag_allow_loopback", 1),
                            Goto("output"),
                        ),
                    )
                )
        for ip in own:
            dst = {"ipv4_dst": str(ip)} if ip.version == 4 else {"ipv6_dst": str(ip)}
            add(rin.flow(priority=PRIO_TO_ROUTER, cookie=cookie, match={"router_key": rkey, **dst}))
        if itfs:
            for ttl in (0, 1):
                add(
                    rin.flow(
                        priority=PRIO_TTL,
                        cookie=cookie,
                        match={"router_key": rkey, "eth_type": ETH_TYPE_IP, "nw_ttl": ttl},
                        actions=_punt(ICMP4_TIME_EXCEEDED),
                    )
                )
                add(
                    rin.flow(
                        priority=PRIO_TTL,
                        cookie=cookie,
                        match={"router_key": rkey, "eth_type": ETH_TYPE_IPV6, "nw_ttl": ttl},
                        actions=_punt6(ICMP6_TIME_EXCEEDED),
                    )
                )
            for et in (ETH_TYPE_IP, ETH_TYPE_IPV6):
                add(
                    rin.flow(
                        priority=PRIO_FORWARD,
                        cookie=cookie,
                        match={"router_key": rkey, "eth_type": et},
                        actions=(Goto("dnat"),),
                    )
                )
            for itf in itfs:  # the scope of the port a packet comes in by
                for version, et in ((4, ETH_TYPE_IP), (6, ETH_TYPE_IPV6)):
                    if not scoped[version]:
                        continue
                    add(
                        rin.flow(
                            priority=PRIO_FORWARD + 1,
                            cookie=cookie,
                            match={
                                "router_key": rkey,
                                "network_key": itf.network.key,
                                "eth_type": et,
                            },
                            actions=(
                                Load("addr_scope", scope_key(itf.network, version)),
                                Goto("dnat"),
                            ),
                        )
                    )

        for itf in itfs:
            if itf is not gw_itf:
                for f in _internal_neighbour_flows(rkey, itf.network.key, cookie):
                    add(f)

        rt = table("routing")

        def route(
            net: IpNetwork, itf: _Itf, next_hop: IpAddress | None, connected: bool
        ) -> list[Flow]:
            """The route, once per addr_scope it admits, and the drop of the others."""
            return scoped_flows(
                net, connected, admitted(itf, net.version), route_actions(itf, net, next_hop)
            )

        def scoped_flows(
            net: IpNetwork,
            connected: bool,
            scopes: tuple[int, ...] | None,
            actions: Sequence[Action],
        ) -> list[Flow]:
            prio = _route_priority(net.prefixlen, connected)
            base = {"router_key": rkey, **_dst_match(net)}
            if scopes is None:
                return [rt.flow(priority=prio, cookie=cookie, match=base, actions=tuple(actions))]
            out = [
                rt.flow(
                    priority=prio,
                    cookie=cookie,
                    match={**base, "addr_scope": value},
                    actions=tuple(actions),
                )
                for value in dict.fromkeys(scopes)
            ]
            out.append(
                rt.flow(
                    priority=_scope_drop_priority(net.prefixlen),
                    cookie=cookie,
                    match=base,
                )
            )
            return out

        def route_actions(itf: _Itf, net: IpNetwork, next_hop: IpAddress | None) -> list[Action]:
            v4 = net.version == 4
            actions: list[Action] = [] if v4 else [*_mtu_check(itf.network)]
            actions += [
                DecTtl(),
                Load("network_key", itf.network.key),
                Load("src_port_key", itf.port.key),
                SetField("eth_src", itf.port.mac),
            ]
            if next_hop is None:
                actions.append(Move(*(("ipv4_dst", "next_hop_ipv4") if v4 else _V6_HOP)))
            else:
                actions.append(Load("next_hop_ipv4" if v4 else "next_hop_ipv6", int(next_hop)))
            actions.append(Goto("arp_resolve" if v4 else "mtu_check"))
            return actions

        connected: list[tuple[IpNetwork, _Itf]] = []
        for itf in itfs:
            for a in itf.addrs:
                connected.append((a.network, itf))
                for f in route(a.network, itf, None, True):
                    add(f)
        if rd is not None:  # what leaves by the gateway goes to its chassis, unrouted
            redirect = (
                Load("network_key", rkey),
                Load("dst_port_key", REDIRECT_KEY),
                Goto("output"),
            )
            # IPv6 is checked here against the external network's MTU, where the sender
            # is local (the gateway chassis could not send it the error), then goes on
            # from mtu_check.
            redirect6 = (
                *_mtu_check(rd.gateway.network),
                Load("network_key", rkey),
                Load("dst_port_key", REDIRECT_KEY),
                Goto("mtu_check"),
            )
            add(
                table("mtu_check").flow(
                    priority=PRIO_REDIRECT,
                    cookie=cookie,
                    match={"router_key": rkey, "dst_port_key": REDIRECT_KEY},
                    actions=(Goto("output"),),
                )
            )
            gw_nets: list[IpNetwork] = [a.network for a in rd.gateway.addrs]
            gw_nets += [a.network for a in rd.gateway.addrs6]
            dests: list[tuple[IpNetwork, bool]] = [(n, True) for n in gw_nets]
            dests += [(ipaddress.IPv4Network("0.0.0.0/0"), False)][: len(rd.gateway.upstream)]
            dests += [(ipaddress.IPv6Network("::/0"), False)][: len(rd.gateway.upstream6)]
            # extra routes whose next hop is outside, on the gateway's subnets
            dests += [(d, False) for d in _routes_via(router, gw_nets)]
            for prefix, is_connected in dests:
                v = prefix.version
                scopes: tuple[int, ...] | None = None
                if scoped[v] and not (v == 4 and router.enable_snat):
                    scopes = (scope_key(rd.gateway.network, v), NAT_SCOPE)
                for f in scoped_flows(
                    prefix, is_connected, scopes, redirect if v == 4 else redirect6
                ):
                    add(f)
        if gw is not None and gw_itf is not None:
            for f in _gateway_flows(gw, cookie):
                add(f)
            for f in _gateway_flows6(gw, cookie):
                add(f)
            for upstream in gw.upstream[:1]:  # the default route: the subnet's gateway
                for f in route(ipaddress.IPv4Network("0.0.0.0/0"), gw_itf, upstream, False):
                    add(f)
            for upstream6 in gw.upstream6[:1]:
                for f in route(ipaddress.IPv6Network("::/0"), gw_itf, upstream6, False):
                    add(f)
        # Extra routes: the next hop must sit on a connected subnet (longest match wins).
        for dest, nexthop in sorted(router.routes, key=lambda r: (r[0], _ip_sort(r[1]))):
            try:
                dnet = ipaddress.ip_network(dest, strict=False)
                hop = ipaddress.ip_address(nexthop)
            except ValueError:
                continue
            if dnet.version != hop.version:
                continue
            via = [(n, i) for n, i in connected if n.version == hop.version and hop in n]
            if not via:
                continue
            _, itf = max(via, key=lambda c: c[0].prefixlen)
            for f in route(dnet, itf, hop, False):
                add(f)
        if itfs:
            add(
                rt.flow(
                    priority=PRIO_NO_ROUTE,
                    cookie=cookie,
                    match={"router_key": rkey, "eth_type": ETH_TYPE_IP},
                    actions=_punt(ICMP4_NET_UNREACHABLE),
                )
            )
            add(
                rt.flow(
                    priority=PRIO_NO_ROUTE,
                    cookie=cookie,
                    match={"router_key": rkey, "eth_type": ETH_TYPE_IPV6},
                    actions=_punt6(ICMP6_NO_ROUTE),
                )
            )
            for scope in _NOT_ROUTED6:  # (link-local and multicast: dropped, unanswered)
                add(
                    rt.flow(
                        priority=PRIO_NOT_ROUTED,
                        cookie=cookie,
                        match={"router_key": rkey, "ipv6_dst": scope},
                    )
                )
            add(
                table("mtu_check").flow(
                    priority=PRIO_TOO_BIG,
                    cookie=cookie,
                    match={"router_key": rkey, "eth_type": ETH_TYPE_IPV6, "flag_pkt_larger": 1},
                    actions=_punt6(ICMP6_TOO_BIG),
                )
            )
        return list(flows.values())

    # ---- arp_resolve ---------------------------------------------------------------------
    def _resolve_flows(self, view: LocalView, net: Network, port: Port) -> list[Flow]:
        """One port's addresses as next hops (owned per port: a port coming or going in a
        network of thousands touches only its own flows)."""
        cookie = encode("l3", port.id)
        mac: int | None = None
        flows: dict[object, Flow] = {}
        for ip_text in port.ips:
            if virtual(view, net.id, ip_text, port.id):
                continue  # a VIP: whoever holds it now answers (learned, or asked for)
            holders = view.ports_by_ip.get((net.id, ip_text), ())
            if len(holders) > 1 and min(holders) != port.id:
                continue  # one IP on two ports: the first (by id) wins
            try:
                version, ip = ip_value(ip_text)
            except ValueError:
                continue
            if mac is None:  # (parsed as eth_src: the memo other apps filled)
                mac = parse_value("eth_src", port.mac)[0]
            template = _RESOLVE_V4 if version == 4 else _RESOLVE_V6
            f = template.flow(cookie, net.key, ip, mac)
            flows.setdefault(f.key, f)
        return list(flows.values())


def _routed(view: LocalView, network_id: str) -> bool:
    for rid in view.routers_by_network.get(network_id, ()):
        router = view.routers.get(rid)
        if router is not None and any(i.network_id == network_id for i in router.interfaces):
            return True
    return False


def _routes_via(router: Router, subnets: list[IpNetwork]) -> list[IpNetwork]:
    """The destinations of the router's extra routes whose next hop is on SUBNETS."""
    out: set[IpNetwork] = set()
    for dest, nexthop in router.routes:
        try:
            dnet = ipaddress.ip_network(dest, strict=False)
            hop = ipaddress.ip_address(nexthop)
        except ValueError:
            continue
        if dnet.version == hop.version and any(
            n.version == hop.version and hop in n for n in subnets
        ):
            out.add(dnet)
    return sorted(out, key=lambda n: (n.version, n))


def _arp_answer(mac: str, ip: str) -> tuple[Action, ...]:
    """An ARP request turned into the reply from MAC/IP, back out of its input port,
    after a copy to the agent (it learns the asker)."""
    return (
        Load("punt_code", code(bytes([PUNT_ARP_LEARN]))),
        Resubmit("punt_meter"),
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        SetField("arp_op", 2),
        Move("arp_sha", "arp_tha"),
        SetField("arp_sha", mac),
        Move("arp_spa", "arp_tpa"),
        SetField("arp_spa", ip),
        Load("flag_allow_loopback", 1),
        Goto("output"),
    )


def _fip_flows(lf: LocalFip) -> list[Flow]:
    """A floating IP NATed on this chassis (wyvern.apps.gateway.local_fip): ARP for it
    answered with its own MAC, traffic to it to dnat, and its port's traffic routed out
    of the external network from here (source-specific routes, one priority above the
    same prefix without a source), with the floating IP's MAC as the source."""
    fip, rkey, nkey = lf.fip, lf.router.key, lf.network.key
    cookie = encode("l3", fip.id)
    ip = str(lf.addr.ip)
    rin = table("router_input")
    arp: dict[str, MatchValue] = {
        "router_key": rkey,
        "network_key": nkey,
        "eth_type": ETH_TYPE_ARP,
        "arp_tpa": ip,
    }
    out = [
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={**arp, "arp_op": 1},
            actions=_arp_answer(fip.mac, ip),
        ),
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={**arp, "arp_op": 2},
            actions=punt(bytes([PUNT_ARP_LEARN])),
        ),
        rin.flow(
            priority=PRIO_UNSNAT,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "ipv4_dst": ip},
            actions=(Load("addr_scope", NAT_SCOPE), Goto("dnat")),
        ),
    ]
    routes: list[tuple[ipaddress.IPv4Network, list[Action]]] = [
        (lf.addr.network, [Move("ipv4_dst", "next_hop_ipv4")])
    ]
    if lf.upstream is not None:
        routes.append(
            (ipaddress.IPv4Network("0.0.0.0/0"), [Load("next_hop_ipv4", int(lf.upstream))])
        )
    for dst, hop in routes:
        out.append(
            table("routing").flow(
                priority=_route_priority(dst.prefixlen, True) + 1,
                cookie=cookie,
                match={"router_key": rkey, "ipv4_src": fip.fixed_ip, **_dst_match(dst)},
                actions=(
                    DecTtl(),
                    Load("network_key", nkey),
                    Load("src_port_key", fip.key),
                    SetField("eth_src", fip.mac),
                    *hop,
                    Goto("arp_resolve"),
                ),
            )
        )
    out.append(  # (what the router's own miss flow does, for this source)
        table("arp_resolve").flow(
            priority=PRIO_UNRESOLVED + 1,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "ipv4_src": fip.fixed_ip},
            actions=punt(bytes([PUNT_ARP_REQUEST])),
        )
    )
    return out


def _internal_neighbour_flows(rkey: int, nkey: int, cookie: int) -> list[Flow]:
    """Next hops on an internal network that no port resolves (a VIP some port may claim
    by an address pair, an address no port holds): without a learned binding they are
    punted (PUNT_ARP_REQUEST / PUNT_ND_REQUEST, the packet dropped, as OVN does) and the
    agent asks for them from the router interface into the network; the answer (an ARP
    reply or an NA to the interface's MAC) is punted to be learned (PUNT_ARP_LEARN /
    PUNT_ND_LEARN). A holder's gratuitous announcements are learned in services."""
    rin = table("router_input")
    ar = table("arp_resolve")
    here: dict[str, MatchValue] = {"router_key": rkey, "network_key": nkey}
    return [
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={**here, "eth_type": ETH_TYPE_ARP, "arp_op": 2},
            actions=punt(bytes([PUNT_ARP_LEARN])),
        ),
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={
                **here,
                "eth_type": ETH_TYPE_IPV6,
                "ip_proto": IPPROTO_ICMPV6,
                "icmpv6_type": ND_NEIGHBOR_ADVERT,
            },
            actions=punt(bytes([PUNT_ND_LEARN])),
        ),
        ar.flow(
            priority=PRIO_UNRESOLVED,
            cookie=cookie,
            match={**here, "eth_type": ETH_TYPE_IP},
            actions=punt(bytes([PUNT_ARP_REQUEST])),
        ),
        ar.flow(
            priority=PRIO_UNRESOLVED,
            cookie=cookie,
            match={**here, "eth_type": ETH_TYPE_IPV6},
            actions=punt(bytes([PUNT_ND_REQUEST])),
        ),
    ]


def _gateway_flows(gw: Gateway, cookie: int) -> list[Flow]:
    """What a router needs on the chassis hosting its gateway, besides the routes: its
    gateway addresses answer ARP from the external network (and teach the router the
    asker's MAC), ARP replies to them are learned, traffic to them from outside goes to
    dnat (un-SNAT of replies), and an external next hop without a MAC is ARPed for.
    The floating addresses of its port forwardings (gw.forwarded) are treated alike:
    answered with the gateway's MAC, and what dnat does not forward goes nowhere."""
    rkey, nkey, mac = gw.router.key, gw.network.key, gw.port.mac
    rin = table("router_input")
    out: list[Flow] = []
    # A forwarded address one priority below: were it also an associated floating IP's
    # (the API refuses that), the association's flows win and no two owners share a flow.
    mine = [(a.ip, 0) for a in gw.addrs] + [(ip, 1) for ip in gw.forwarded]
    for ip_addr, below in mine:
        ip = str(ip_addr)
        arp: dict[str, MatchValue] = {
            "router_key": rkey,
            "network_key": nkey,
            "eth_type": ETH_TYPE_ARP,
            "arp_tpa": ip,
        }
        out.append(
            rin.flow(
                priority=PRIO_GATEWAY_ARP - below,
                cookie=cookie,
                match={**arp, "arp_op": 1},
                actions=_arp_answer(mac, ip),
            )
        )
        out.append(
            rin.flow(
                priority=PRIO_GATEWAY_ARP - below,
                cookie=cookie,
                match={**arp, "arp_op": 2},
                actions=punt(bytes([PUNT_ARP_LEARN])),
            )
        )
        out.append(
            rin.flow(
                priority=PRIO_UNSNAT - below,
                cookie=cookie,
                match={"router_key": rkey, "network_key": nkey, "ipv4_dst": ip},
                actions=(Load("addr_scope", NAT_SCOPE), Goto("dnat")),
            )
        )
        # what un-SNAT left addressed to the gateway itself: not a reply, nowhere to go
        out.append(
            table("routing").flow(
                priority=PRIO_OWN_ADDRESS,
                cookie=cookie,
                match={"router_key": rkey, "ipv4_dst": ip},
            )
        )
    out.append(
        table("arp_resolve").flow(
            priority=PRIO_UNRESOLVED,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "eth_type": ETH_TYPE_IP},
            actions=punt(bytes([PUNT_ARP_REQUEST])),
        )
    )
    return out


def _gateway_flows6(gw: Gateway, cookie: int) -> list[Flow]:
    """The IPv6 half of _gateway_flows (routed: no NAT). OpenFlow cannot write ND
    options, so the agent answers: a neighbour solicitation for a gateway address, and
    an advertisement to the gateway, are punted with PUNT_ND_LEARN (the agent answers the
    solicitation with an NA and learns the sender's or the target's MAC); an IPv6 next
    hop on the external network without a MAC is punted with PUNT_ND_REQUEST (the agent
    solicits it from the gateway's address, next_hop_ipv6 says which)."""
    if not gw.addrs6:
        return []
    rkey, nkey = gw.router.key, gw.network.key
    rin = table("router_input")
    icmp6: dict[str, MatchValue] = {
        "router_key": rkey,
        "network_key": nkey,
        "eth_type": ETH_TYPE_IPV6,
        "ip_proto": IPPROTO_ICMPV6,
    }
    learn = punt(bytes([PUNT_ND_LEARN]))
    out = [
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={**icmp6, "icmpv6_type": ND_NEIGHBOR_SOLICIT, "nd_target": str(a.ip)},
            actions=learn,
        )
        for a in gw.addrs6
    ]
    out.append(
        rin.flow(
            priority=PRIO_GATEWAY_ARP,
            cookie=cookie,
            match={**icmp6, "icmpv6_type": ND_NEIGHBOR_ADVERT},
            actions=learn,
        )
    )
    out.append(
        table("arp_resolve").flow(
            priority=PRIO_UNRESOLVED,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "eth_type": ETH_TYPE_IPV6},
            actions=punt(bytes([PUNT_ND_REQUEST])),
        )
    )
    return out


def _learned_flows(view: LocalView, binding_id: str) -> list[Flow]:
    """A learned neighbour as a next hop, unless a port holds the address (the port's
    own entry resolves it then)."""
    b = view.mac_bindings.get(binding_id)
    net = view.networks.get(b.network_id) if b is not None else None
    if b is None or net is None or resolved_by_port(view, net.id, b.ip):
        return []
    try:
        version, ip = ip_value(b.ip)
        mac = parse_value("eth_src", b.mac)[0]
    except ValueError:
        return []
    template = _LEARNED_V4 if version == 4 else _LEARNED_V6
    return [template.flow(encode("l3", binding_id), net.key, ip, mac)]


def resolved_by_port(view: LocalView, network_id: str, ip: str) -> bool:
    """Whether some port's own arp_resolve entry answers for IP (a fixed address that is
    not virtual: no other port may claim it by an address pair)."""
    return any(
        not virtual(view, network_id, ip, pid) for pid in view.ports_by_ip.get((network_id, ip), ())
    )


def _ip_sort(text: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


def _resolve_template(
    family: dict[str, MatchValue], field: str, priority: int = PRIO_RESOLVE
) -> FlowTemplate:
    """A port's address as a next hop → its MAC: flow(cookie, net key, address, MAC)."""
    return table("arp_resolve").template(
        priority=priority,
        cookie_app="l3",
        varying=("network_key", field),
        fixed=family,
        actions=(SetField("eth_dst", 0), Goto("meter_egress")),
        action_values=(0,),
    )


_RESOLVE_V4 = _resolve_template({"eth_type": ETH_TYPE_IP}, "next_hop_ipv4")
_RESOLVE_V6 = _resolve_template({"eth_type": ETH_TYPE_IPV6}, "next_hop_ipv6")
_LEARNED_V4 = _resolve_template({"eth_type": ETH_TYPE_IP}, "next_hop_ipv4", PRIO_LEARNED)
_LEARNED_V6 = _resolve_template({"eth_type": ETH_TYPE_IPV6}, "next_hop_ipv6", PRIO_LEARNED)
