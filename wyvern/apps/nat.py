"""NAT: SNAT through a router's gateway, in the router's conntrack zone.

On the chassis hosting a router's gateway (wyvern.apps.gateway), owner ("router", id):

- snat: IPv4 from one of the router's internal subnets leaving by the external network
  gets the gateway address as its source, `ct(commit, zone=<router zone>,
  nat(src=<gateway IP>))`, then continues to l2_lookup of the external network (unless
  the router's enable_snat is false: Neutron then routes the internal addresses as they
  are, and so do we). Nor is a subnet in the external network's address scope SNATed
  (Neutron's l3 agent: no SNAT within a scope): the outside sees its own addresses, and
  reaches them through the router (wyvern.apps.l3 admits that scope in).
- dnat: IPv4 from the external network to the gateway address goes through the same zone
  with a bare `ct(nat)`: the reply of a connection SNAT committed comes back with its
  internal destination and is routed to it; anything else is still addressed to the
  gateway, which routing drops (wyvern.apps.l3 answers pings to it before).

Each starts with ct_clear: the packet was tracked in its port's zone before (security
groups), and the router's zone must look it up afresh.

Port forwardings (centralized, on the chassis hosting the router's gateway, as in OVN):
- dnat: TCP/UDP to the floating address on an external port is
  `ct(commit, zone=<router zone>, nat(dst=<internal IP>[:<port>]))`, then routing. An
  external range is matched as the fewest value/mask pairs (`ir.port_range`); the
  internal side keeps the port (same range), is one port (N-1), or, shifted, is one
  flow per port (docs/dataplane.md: port forwarding NAT; the API bounds those);
- snat: the replies (from the internal IP and port, leaving by the external network) go
  through the same zone, which undoes the DNAT: the outside sees the floating address and
  external port, with or without enable_snat (with it, the commit that SNATs the VM's
  other connections, whose arguments a reply ignores; without, a bare `ct(nat)`).
What dnat forwards nowhere is dropped in routing (wyvern.apps.l3: an own address).

Both stages hold only their declared misses otherwise (wyvern.ir.pipeline): dnat
continues to routing (through meter_ingress), snat returns the packet to l2_lookup of
the output network.
"""

from __future__ import annotations

import ipaddress

from wyvern.apps.base import App, Owner
from wyvern.apps.gateway import Gateway, forwarded_address, local_fip, local_gateway
from wyvern.ir import (
    ETH_TYPE_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Ct,
    CtClear,
    Flow,
    MatchValue,
    Nat,
    port_range,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.model.view import LocalView, PortForwarding

P_SNAT = 100
P_FIP = 110  # a floating IP's port: its own address, not the router's
P_UNSNAT = 100
P_FORWARD = 120  # a port forwarding: above a floating IP or SNAT of the same address


def _fip_flows(view: LocalView, fip_id: str) -> list[Flow]:
    """A floating IP NATed here: DNAT of what comes to it, SNAT of what its port sends
    out of the external network, both in the router's zone (one connection, either way)."""
    lf = local_fip(view, fip_id)
    if lf is None:
        return []
    cookie = encode("nat", fip_id)
    rkey, nkey, zone, fip = lf.router.key, lf.network.key, lf.zone, lf.fip
    return [
        table("dnat").flow(
            priority=P_FIP,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "ipv4_dst": str(lf.addr.ip)},
            actions=(
                CtClear(),
                Ct(commit=True, zone=zone, nat=Nat("dst", fip.fixed_ip), table="meter_ingress"),
            ),
        ),
        table("snat").flow(
            priority=P_FIP,
            cookie=cookie,
            match={"router_key": rkey, "network_key": nkey, "ipv4_src": fip.fixed_ip},
            actions=(
                CtClear(),
                Ct(commit=True, zone=zone, nat=Nat("src", str(lf.addr.ip)), table="l2_lookup"),
            ),
        ),
    ]


def _forwarding_flows(view: LocalView, gw: Gateway, pf: PortForwarding) -> list[Flow]:
    """One port forwarding on the chassis hosting its router's gateway (module doc)."""
    fip = forwarded_address(view, gw.network, pf)
    if fip is None or fip not in gw.forwarded or ":" in pf.internal_ip:
        return []  # (an IPv6 internal address: the API refuses it, NAT64 is no forwarding)
    proto, dst, src = {
        "tcp": (IPPROTO_TCP, "tcp_dst", "tcp_src"),
        "udp": (IPPROTO_UDP, "udp_dst", "udp_src"),
    }[pf.protocol]
    cookie = encode("nat", pf.id)
    rkey, nkey, zone = gw.router.key, gw.network.key, gw.zone
    (elo, ehi), (ilo, ihi) = pf.ext, pf.int_
    base: dict[str, MatchValue] = {
        "router_key": rkey,
        "network_key": nkey,
        "eth_type": ETH_TYPE_IP,
        "ip_proto": proto,
    }
    # (external match, NAT target) pairs
    targets: list[tuple[MatchValue, Nat]] = []
    if ilo == ihi:
        nat = Nat("dst", pf.internal_ip, port=ilo)
        targets = [(vm, nat) for vm in port_range(elo, ehi)]
    elif (ilo, ihi) == (elo, ehi):
        nat = Nat("dst", pf.internal_ip)
        targets = [(vm, nat) for vm in port_range(elo, ehi)]
    elif ihi - ilo == ehi - elo:
        targets = [(p, Nat("dst", pf.internal_ip, port=ilo + p - elo)) for p in range(elo, ehi + 1)]
    out = [
        table("dnat").flow(
            priority=P_FORWARD,
            cookie=cookie,
            match={**base, "ipv4_dst": str(fip), dst: value},
            actions=(CtClear(), Ct(commit=True, zone=zone, nat=nat, table="meter_ingress")),
        )
        for value, nat in targets
    ]
    # Replies: the connection's own translation, reversed. With SNAT on, committed with
    # the gateway address as for any internal source: a reply keeps its connection's
    # translation (the arguments only apply to a new one), and a connection the VM opens
    # from a forwarded port is SNATed like its others instead of leaking its address.
    if gw.router.enable_snat:
        back = Ct(commit=True, zone=zone, nat=Nat("src", str(gw.addrs[0].ip)), table="l2_lookup")
    else:
        back = Ct(zone=zone, nat=Nat(), table="l2_lookup")
    if targets:
        out += [
            table("snat").flow(
                priority=P_FORWARD,
                cookie=cookie,
                match={**base, "ipv4_src": pf.internal_ip, src: value},
                actions=(CtClear(), back),
            )
            for value in port_range(ilo, ihi)
        ]
    return out


class NatApp(App):
    name = "nat"

    owner_tables = {"router": "routers", "floatingip": "floatingips"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, rid = owner
        if kind == "floatingip":
            return _fip_flows(view, rid)
        router = view.routers.get(rid) if kind == "router" else None
        if router is None or not router.admin_state_up:
            return []
        gw = local_gateway(view, router)
        if gw is None or not gw.addrs:
            return []
        cookie = encode("nat", rid)
        rkey, nkey, zone = router.key, gw.network.key, gw.zone
        out: list[Flow] = []
        for pf in router.port_forwardings:
            out += _forwarding_flows(view, gw, pf)
        for addr in gw.addrs:
            out.append(
                table("dnat").flow(
                    priority=P_UNSNAT,
                    cookie=cookie,
                    match={"router_key": rkey, "network_key": nkey, "ipv4_dst": str(addr.ip)},
                    actions=(CtClear(), Ct(zone=zone, nat=Nat(), table="meter_ingress")),
                )
            )
        if not router.enable_snat:
            return out
        source = str(gw.addrs[0].ip)
        internal: set[ipaddress.IPv4Network] = set()
        ext_scope = gw.network.scope4
        for itf in router.interfaces:
            itf_net = view.networks.get(itf.network_id)
            if ext_scope and itf_net is not None and itf_net.scope4 == ext_scope:
                continue  # same address scope as the outside: routed as is (no SNAT)
            for _, cidr in itf.ips:
                try:
                    net = ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    continue
                if isinstance(net, ipaddress.IPv4Network):
                    internal.add(net)
        for net in sorted(internal):
            out.append(
                table("snat").flow(
                    priority=P_SNAT,
                    cookie=cookie,
                    match={
                        "router_key": rkey,
                        "network_key": nkey,
                        "eth_type": ETH_TYPE_IP,
                        "ipv4_src": str(net),
                    },
                    actions=(
                        CtClear(),
                        Ct(commit=True, zone=zone, nat=Nat("src", source), table="l2_lookup"),
                    ),
                )
            )
        return out
