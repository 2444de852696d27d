"""L2 lookup: destination MAC within the network → destination port, router, or flood.

Per network (every flow matches its network key, so networks with overlapping MACs or
CIDRs never leak into each other):

- eth_dst = a router interface MAC (the router's port in this network, or its gateway
  port in an external network) → router_key = router.key, dst_port_key = that router
  port's key (the router port the packet enters by), goto router_input (the L3 app's).
- eth_dst = a port's MAC → dst_port_key = port.key, then
  local port: goto pre_acl_egress (egress ACL, egress port security, output);
  remote port: goto output, which tunnels it to the port's chassis (wyvern.apps.overlay).
- on the chassis hosting a router gateway: ARP for its IPv4 addresses and neighbour
  solicitations for its IPv6 ones → router_input (answered there, on this chassis only).
- anything else (broadcast, multicast, unknown unicast) → flood: when other chassis host
  ports of the network, first `dst_port_key = FLOOD; resubmit(output)` (output sends one
  copy per such chassis, and only for packets not from a tunnel); then for each local
  port of the network, `dst_port_key = key; resubmit(pre_acl_egress)`. A provider network
  whose physnet this chassis maps does the same first resubmit: output sends that copy to
  the physical network (wyvern.apps.provider), as it does unicast to ports elsewhere.

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

Owners: ("network", id) for the router MACs and the flood; ("port", id) for a port's own
MAC, so a port coming or going in a network of thousands costs its own flow plus the
flood, never the other ports' flows. A MAC on two ports of a network (the API refuses
it) goes to the lower port id.
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port
from wyvern.apps.gateway import local_fip, local_gateway, local_gateways
from wyvern.apps.overlay import FLOOD_KEY, network_chassis
from wyvern.apps.provider import local_patch
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    Action,
    Flow,
    FlowTemplate,
    Goto,
    Load,
    Resubmit,
    match,
    parse_value,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.pipeline import StageName
from wyvern.model.view import LocalView, Port

P_GATEWAY_ARP = 120
P_ROUTER = 110
P_PORT = 100
P_FLOOD = 10
ND_NEIGHBOR_SOLICIT = 135
GATEWAY_OWNER = "network:router_gateway"


def router_ports(view: LocalView, network_id: str) -> list[tuple[Port, int]]:
    """(router port, router key) for each router interface or gateway in a network.
    Derived (early cutoff): a router record changes with every floating IP association,
    and every port of its networks would be recomputed otherwise."""
    return view.derive(_router_ports, network_id)


def _router_ports(view: LocalView, network_id: str) -> list[tuple[Port, int]]:
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


def _hosted_here(view: LocalView, gateway_port: Port) -> bool:
    """Whether this chassis hosts the router gateway that GATEWAY_PORT is."""
    router = view.routers.get(gateway_port.device_id)
    return router is not None and local_gateway(view, router) is not None


def flood_actions(view: LocalView, network_id: str) -> tuple[Action, ...]:
    """The remote copies (tunnels or the physical network, if any), then dst_port_key +
    resubmit(pre_acl_egress) per local port of the network."""
    acts: list[Action] = []
    net = view.networks.get(network_id)
    physnet = net is not None and local_patch(view, net) is not None
    if physnet or network_chassis(view, network_id):
        acts += [Load("dst_port_key", FLOOD_KEY), Resubmit("output")]
    for port in view.network_ports(network_id):
        if local_port(view, port.id) is not None:
            acts += [Load("dst_port_key", port.key), Resubmit("pre_acl_egress")]
    return tuple(acts)


class L2(App):
    name = "l2"

    owner_tables = {"network": "networks", "port": "ports", "floatingip": "floatingips"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, oid = owner
        if kind == "port":
            return self._port_flows(view, oid)
        if kind == "floatingip":
            return _fip_flows(view, oid)
        net = view.networks.get(oid) if kind == "network" else None
        if net is None:
            return []
        net_id = oid
        cookie = encode("l2", net_id)
        st = table("l2_lookup")
        out: dict[object, Flow] = {}
        routed = router_ports(view, net_id)
        for rport, router_key in routed:
            if rport.device_owner == GATEWAY_OWNER and not _hosted_here(view, rport):
                continue  # it leaves by the physical network, to the gateway chassis
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
        for gw in local_gateways(view, net_id):
            # ARP from the physical network for the gateway (and its forwarded addresses,
            # one priority below: an associated floating IP's would win, l3 does the same)
            mine = [(a.ip, 0) for a in gw.addrs] + [(ip, 1) for ip in gw.forwarded]
            for ip, below in mine:
                f = st.flow(
                    priority=P_GATEWAY_ARP - below,
                    cookie=cookie,
                    match=match(network_key=net.key, eth_type=ETH_TYPE_ARP, arp_tpa=str(ip)),
                    actions=(
                        Load("router_key", gw.router.key),
                        Load("dst_port_key", gw.port.key),
                        Goto("router_input"),
                    ),
                )
                out.setdefault(f.key, f)
            # Neighbour solicitations for its IPv6 addresses (to their solicited-node
            # group, which every chassis on the physnet receives): to the router here
            # only (docs/dataplane.md: neighbour discovery at the gateway).
            for ip6 in (a.ip for a in gw.addrs6):
                f = st.flow(
                    priority=P_GATEWAY_ARP,
                    cookie=cookie,
                    match=match(
                        network_key=net.key,
                        eth_type=ETH_TYPE_IPV6,
                        ip_proto=IPPROTO_ICMPV6,
                        icmpv6_type=ND_NEIGHBOR_SOLICIT,
                        nd_target=str(ip6),
                    ),
                    actions=(
                        Load("router_key", gw.router.key),
                        Load("dst_port_key", gw.port.key),
                        Goto("router_input"),
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

    def _port_flows(self, view: LocalView, port_id: str) -> list[Flow]:
        """eth_dst = the port's MAC → its key, then egress (local) or output (remote)."""
        port = view.ports.get(port_id)
        net = view.networks.get(port.network_id) if port is not None else None
        if port is None or net is None:
            return []
        holders = view.ports_by_mac.get((net.id, port.mac.lower()), ())
        if len(holders) > 1 and min(holders) != port_id:
            return []
        if any(rport.id == port_id for rport, _ in router_ports(view, net.id)):
            return []  # a router interface: its MAC enters the router (the network's flows)
        template = TO_REMOTE if local_port(view, port_id) is None else TO_LOCAL
        mac = parse_value("eth_src", port.mac)[0]  # (the memo other apps filled)
        return [template.flow(encode("l2", port_id), net.key, mac, port.key)]


def _fip_flows(view: LocalView, fip_id: str) -> list[Flow]:
    """A floating IP NATed here: its MAC, and ARP for its address, enter its router."""
    lf = local_fip(view, fip_id)
    if lf is None:
        return []
    st = table("l2_lookup")
    cookie = encode("l2", fip_id)
    to_router = (
        Load("router_key", lf.router.key),
        Load("dst_port_key", lf.fip.key),
        Goto("router_input"),
    )
    nkey = lf.network.key
    return [
        st.flow(
            priority=P_ROUTER,
            cookie=cookie,
            match=match(network_key=nkey, eth_dst=lf.fip.mac),
            actions=to_router,
        ),
        st.flow(
            priority=P_GATEWAY_ARP,
            cookie=cookie,
            match=match(network_key=nkey, eth_type=ETH_TYPE_ARP, arp_tpa=str(lf.addr.ip)),
            actions=to_router,
        ),
    ]


def _port_template(then: StageName) -> FlowTemplate:
    """eth_dst = a port's MAC → its key, then `then`: flow(cookie, net key, MAC, key)."""
    return table("l2_lookup").template(
        priority=P_PORT,
        cookie_app="l2",
        varying=("network_key", "eth_dst"),
        actions=(Load("dst_port_key", 0), Goto(then)),
        action_values=(0,),
    )


TO_LOCAL = _port_template("pre_acl_egress")
TO_REMOTE = _port_template("output")
