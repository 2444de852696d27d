"""NAT: SNAT through a router's gateway, in the router's conntrack zone.

On the chassis hosting a router's gateway (wyvern.apps.gateway), owner ("router", id):

- snat: IPv4 from one of the router's internal subnets leaving by the external network
  gets the gateway address as its source, `ct(commit, zone=<router zone>,
  nat(src=<gateway IP>))`, then continues to l2_lookup of the external network (unless
  the router's enable_snat is false: Neutron then routes the internal addresses as they
  are, and so do we).
- dnat: IPv4 from the external network to the gateway address goes through the same zone
  with a bare `ct(nat)`: the reply of a connection SNAT committed comes back with its
  internal destination and is routed to it; anything else is still addressed to the
  gateway, which routing drops (wyvern.apps.l3 answers pings to it before).

Each starts with ct_clear: the packet was tracked in its port's zone before (security
groups), and the router's zone must look it up afresh.

Both stages hold only their declared misses otherwise (wyvern.ir.pipeline): dnat
continues to routing, snat returns the packet to l2_lookup of the output network.
Floating IPs are still to come.
"""

from __future__ import annotations

import ipaddress

from wyvern.apps.base import App, Owner
from wyvern.apps.gateway import local_fip, local_gateway
from wyvern.ir import ETH_TYPE_IP, Ct, CtClear, Flow, Nat, table
from wyvern.ir.cookies import encode
from wyvern.model.view import LocalView

P_SNAT = 100
P_FIP = 110  # a floating IP's port: its own address, not the router's
P_UNSNAT = 100


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
                Ct(commit=True, zone=zone, nat=Nat("dst", fip.fixed_ip), table="routing"),
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
        for addr in gw.addrs:
            out.append(
                table("dnat").flow(
                    priority=P_UNSNAT,
                    cookie=cookie,
                    match={"router_key": rkey, "network_key": nkey, "ipv4_dst": str(addr.ip)},
                    actions=(CtClear(), Ct(zone=zone, nat=Nat(), table="routing")),
                )
            )
        if not router.enable_snat:
            return out
        source = str(gw.addrs[0].ip)
        internal: set[ipaddress.IPv4Network] = set()
        for itf in router.interfaces:
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
