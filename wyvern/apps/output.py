"""Output (the last stage): logical destination port → OpenFlow port.

For every local port (bound here, admin up, network admin up)::

    network_key=N, dst_port_key=K                                  → output:<ofport>
    network_key=N, dst_port_key=K, in_port=<ofport>, flag_allow_loopback=1 → output:in_port

OpenFlow never sends a packet back out of its input port unless told `in_port`: that
is what keeps a flood from echoing to its sender, and `flag_allow_loopback` is how a
stage that answers a packet (router_input's ARP/ICMP replies) asks for hairpin.

Remote ports and floods go through a tunnel (wyvern.apps.overlay), only for packets that
did not come from one (flag_from_tunnel=0: receivers never forward to a third chassis)::

    network_key=N, dst_port_key=K, flag_from_tunnel=0   → tun_id=N, tun_dst=<its chassis>,
                                  (geneve) tun_metadata0=<src key:dst key>, output:<tunnel>
    network_key=N, dst_port_key=FLOOD, flag_from_tunnel=0 → one such copy per other
                                  chassis hosting ports of N (head-end replication)

A provider network whose physnet this chassis maps (wyvern.apps.provider) sends what has
no local destination (flood copies, ports on other chassis, unknown MACs) to the physical
network, VLAN networks tagged (and untagged again after, for the flood's local copies)::

    network_key=N (priority below the local ports') → [push_vlan, vlan_vid=<seg>|0x1000,]
                                  output:<patch> [, pop_vlan]

Owners: ("port", id) of local ports, ("remote", id) of ports bound elsewhere, ("flood",
network id) of networks with ports elsewhere, ("physnet", network id) of provider
networks on a mapped physnet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port, port_is_up
from wyvern.apps.gateway import REDIRECT_KEY, remote_gateway
from wyvern.apps.overlay import FLOOD_KEY, network_chassis, remote_chassis, tunnel_to
from wyvern.apps.provider import local_patch, vlan_vid
from wyvern.ir import (
    PORT_IN_PORT,
    Action,
    Bits,
    Flow,
    Move,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    match,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.ofports import GENEVE, TUNNEL_OFPORTS
from wyvern.model.view import LocalView

P_LOOPBACK = 110
P_PORT = 100
P_PHYSNET = 50


class OutputApp(App):
    name = "output"

    owner_tables = {
        "port": "bindings",
        "remote": "port_chassis",
        "flood": "networks",
        "physnet": "networks",
        "router": "routers",
    }

    # ("remote", P) only for a port bound elsewhere, not every port_chassis key: at 10k
    # local ports that is 10k empty owners and ~40k reads less to file in a recompute.
    def owners(self, view: LocalView) -> Iterable[Owner]:
        return (o for o in super().owners(view) if o[0] != "remote" or o[1] not in view.bindings)

    def owns(self, view: LocalView, owner: Owner) -> bool:
        local = owner[0] == "remote" and owner[1] in view.bindings
        return not local and super().owns(view, owner)

    def owners_of(self, view: LocalView, table: str, key: Any) -> Iterable[Owner]:
        out = list(super().owners_of(view, table, key))
        if table == "bindings":  # unbound here: maybe bound elsewhere
            out.append(("remote", key))
        return out

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        if kind == "remote":
            return remote_flows(view, port_id)
        if kind == "flood":
            return flood_flows(view, port_id)
        if kind == "physnet":
            return physnet_flows(view, port_id)
        if kind == "router":
            return redirect_flows(view, port_id)
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, ofport = found
        cookie = encode("output", port_id)
        st = table("output")
        if not port_is_up(port, net):
            if local_patch(view, net) is None:
                return []
            # not to the physical network either (its catch-all is below this)
            return [
                st.flow(
                    priority=P_PORT,
                    cookie=cookie,
                    match=match(network_key=net.key, dst_port_key=port.key),
                    actions=(),
                )
            ]
        return [
            LOOPBACK.flow(cookie, net.key, port.key, ofport),
            TO_PORT.flow(cookie, net.key, port.key, ofport),
        ]


# A local port's flows: flow(cookie, network key, port key, ofport).
LOOPBACK = table("output").template(
    priority=P_LOOPBACK,
    cookie_app="output",
    varying=("network_key", "dst_port_key", "in_port"),
    fixed={"flag_allow_loopback": 1},
    actions=(Output(PORT_IN_PORT),),
)
TO_PORT = table("output").template(
    priority=P_PORT,
    cookie_app="output",
    varying=("network_key", "dst_port_key"),
    actions=(Output(1),),
    action_values=(0,),
)


def remote_flows(view: LocalView, port_id: str) -> list[Flow]:
    """A port bound on another chassis: straight into the tunnel to that chassis."""
    chassis = remote_chassis(view, port_id)
    port = view.ports.get(port_id)
    net = view.networks.get(port.network_id) if port is not None else None
    if chassis is None or port is None or net is None or not port_is_up(port, net):
        return []
    return [
        table("output").flow(
            priority=P_PORT,
            cookie=encode("output", port_id),
            match=match(network_key=net.key, dst_port_key=port.key, flag_from_tunnel=0),
            actions=tunnel_to(net, chassis),
        )
    ]


def flood_flows(view: LocalView, network_id: str) -> list[Flow]:
    """The remote half of a flood: one copy per other chassis hosting the network."""
    net = view.networks.get(network_id)
    if net is None or not net.admin_state_up:
        return []
    targets = network_chassis(view, network_id)
    if not targets:
        return []
    acts: list[Action] = []
    for chassis in targets:
        acts += tunnel_to(net, chassis, flood=True)
    return [
        table("output").flow(
            priority=P_PORT,
            cookie=encode("output", network_id),
            match=match(network_key=net.key, dst_port_key=FLOOD_KEY, flag_from_tunnel=0),
            actions=tuple(acts),
        )
    ]


def redirect_flows(view: LocalView, router_id: str) -> list[Flow]:
    """A router whose gateway another chassis hosts: what routing sent there (network key
    = the router's key, REDIRECT_KEY) goes by Geneve, VNI = the router's key."""
    router = view.routers.get(router_id)
    rd = remote_gateway(view, router) if router is not None else None
    if router is None or rd is None:
        return []
    return [
        table("output").flow(
            priority=P_PORT,
            cookie=encode("output", router_id),
            match=match(network_key=router.key, dst_port_key=REDIRECT_KEY, flag_from_tunnel=0),
            actions=(
                SetField("tun_id", router.key),
                SetField("tun_dst", rd.chassis.tunnel_ip),
                Move("src_port_key", Bits("tun_metadata0", 32, 32)),
                Move("dst_port_key", Bits("tun_metadata0", 0, 32)),
                Output(TUNNEL_OFPORTS[GENEVE]),
            ),
        )
    ]


def physnet_flows(view: LocalView, network_id: str) -> list[Flow]:
    """A provider network: everything without a local destination goes to the physical
    network through the patch port (tagged on a VLAN network). OpenFlow drops the copy
    of a packet that came in by the patch port itself."""
    net = view.networks.get(network_id)
    patch = local_patch(view, net) if net is not None else None
    if net is None or patch is None or not net.admin_state_up:
        return []
    vid = vlan_vid(net)
    tag: tuple[Action, ...] = () if vid is None else (PushVlan(), SetField("vlan_vid", vid))
    untag: tuple[Action, ...] = () if vid is None else (PopVlan(),)
    st = table("output")
    cookie = encode("output", network_id)
    return [
        st.flow(
            priority=P_PHYSNET,
            cookie=cookie,
            match=match(network_key=net.key),
            actions=(*tag, Output(patch), *untag),
        ),
        # An answer to the physical network (a router gateway's ARP and echo replies).
        st.flow(
            priority=P_LOOPBACK,
            cookie=cookie,
            match=match(network_key=net.key, in_port=patch, flag_allow_loopback=1),
            actions=(*tag, Output(PORT_IN_PORT)),
        ),
    ]
