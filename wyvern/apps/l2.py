"""L2 lookup: destination MAC within the network → destination port, router, or flood.

Per network (every flow matches its network key, so networks with overlapping MACs or
CIDRs never leak into each other):

- eth_dst = a router interface MAC (the router's port in this network, or its gateway
  port in an external network) → router_key = router.key, dst_port_key = that router
  port's key (the router port the packet enters by), goto router_input (the L3 app's).
- eth_dst = a port's MAC → dst_port_key = port.key, then
  local port: goto pre_acl_egress (egress ACL, egress port security, output);
  remote port: goto output, which tunnels it to the port's chassis (wyvern.apps.overlay).
- anything else (broadcast, multicast, unknown unicast) → flood: when other chassis host
  ports of the network, first `dst_port_key = FLOOD; resubmit(output)` (output sends one
  copy per such chassis, and only for packets not from a tunnel); then for each local
  port of the network, `dst_port_key = key; resubmit(pre_acl_egress)`.

Why a resubmit sequence and not an ALL group: each copy must run the whole egress half
(egress security groups, egress port security) for its own destination, exactly like a
unicast packet does; a resubmit per destination does that, and the app contract deals in
flows only. The packet returns from each resubmit and the next destination's key is
loaded before the next one; the egress stages must therefore load what they read for the
destination (pre_acl_egress loads port_ct_zone) rather than rely on state a previous
destination left. The input port is in the list too: its copy goes through egress and is
dropped by OVS at `output:<in_port>` (OpenFlow never outputs to the input port unless told
`in_port`), as the simulator models.

The remote copy goes first: it needs nothing the egress stages may leave behind.
Owner: ("network", id).
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.apps.classifier import local_port
from wyvern.apps.overlay import FLOOD_KEY, network_chassis
from wyvern.controller.view import Change, LocalView, Port
from wyvern.southbound.cookies import encode
from wyvern.southbound.ir import Action, Flow, Goto, Load, Resubmit, match, table

P_ROUTER = 110
P_PORT = 100
P_FLOOD = 10


def router_ports(view: LocalView, network_id: str) -> list[tuple[Port, int]]:
    """(router port, router key) for each router interface or gateway in a network."""
    out: dict[str, tuple[Port, int]] = {}
    for rid in sorted(view.routers_by_network.get(network_id, ())):
        r = view.routers.get(rid)
        if r is None:
            continue
        pids = [i.port_id for i in r.interfaces if i.network_id == network_id]
        if r.gateway_network_id == network_id and r.gateway_port_id:
            pids.append(r.gateway_port_id)
        for pid in pids:
            p = view.ports.get(pid)
            if p is not None and p.network_id == network_id:
                out.setdefault(pid, (p, r.key))
    return [out[k] for k in sorted(out)]


def flood_actions(view: LocalView, network_id: str) -> tuple[Action, ...]:
    """The remote copies (if any), then dst_port_key + resubmit(pre_acl_egress) per local
    port of the network."""
    acts: list[Action] = []
    if network_chassis(view, network_id):
        acts += [Load("dst_port_key", FLOOD_KEY), Resubmit("output")]
    for port in view.network_ports(network_id):
        if local_port(view, port.id) is not None:
            acts += [Load("dst_port_key", port.key), Resubmit("pre_acl_egress")]
    return tuple(acts)


class L2(App):
    name = "l2"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return [("network", nid) for nid in sorted(view.networks)]

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        nets: set[str] = set()
        if change.kind == "network":
            nets.add(change.id)
        elif change.kind in ("port", "subnet"):
            nets.update(r.network_id for r in (change.old, change.new) if r is not None)
        elif change.kind == "binding" or (
            change.kind == "port_chassis" and {change.old, change.new} - {None, view.chassis_name}
        ):
            port = view.ports.get(change.id)
            if port is not None:
                nets.add(port.network_id)
        elif change.kind == "chassis":
            names = {c.name for c in (change.old, change.new) if c is not None}
            if view.chassis_name in names:
                nets.update(view.networks)
            for pid, name in view.port_chassis.items():
                port = view.ports.get(pid)
                if name in names and port is not None:
                    nets.add(port.network_id)
        elif change.kind == "router":
            for r in (change.old, change.new):
                if r is not None:
                    nets.update(i.network_id for i in r.interfaces)
                    if r.gateway_network_id:
                        nets.add(r.gateway_network_id)
        return [("network", n) for n in sorted(nets)]

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, net_id = owner
        net = view.networks.get(net_id) if kind == "network" else None
        if net is None:
            return []
        cookie = encode("l2", net_id)
        st = table("l2_lookup")
        out: dict[object, Flow] = {}
        routed = router_ports(view, net_id)
        for rport, router_key in routed:
            f = st.flow(
                priority=P_ROUTER,
                cookie=cookie,
                match=match(network_key=net.key, eth_dst=rport.mac),
                actions=(
                    Load("router_key", router_key),
                    Load("dst_port_key", rport.key),
                    Goto("router_input"),
                ),
            )
            out.setdefault(f.key, f)
        skip = {rport.id for rport, _ in routed}
        for port in view.network_ports(net_id):
            if port.id in skip:
                continue
            f = st.flow(
                priority=P_PORT,
                cookie=cookie,
                match=match(network_key=net.key, eth_dst=port.mac),
                actions=(
                    Load("dst_port_key", port.key),
                    Goto("output" if local_port(view, port.id) is None else "pre_acl_egress"),
                ),
            )
            out.setdefault(f.key, f)
        f = st.flow(
            priority=P_FLOOD,
            cookie=cookie,
            match=match(network_key=net.key),
            actions=flood_actions(view, net_id),
        )
        out[f.key] = f
        return list(out.values())
