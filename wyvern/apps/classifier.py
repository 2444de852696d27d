"""Classification (table 0): which logical port and network a packet comes from.

For every LOCAL port (bound on this chassis, admin up, in an admin-up network)::

    in_port=<ofport> → src_port_key=port.key, network_key=network.key,
                       port_ct_zone=<the port's zone>, goto qos_from_vm (→ port_security)

A trunk's frames go to the trunk stage (wyvern.apps.trunk): a parent's VIF's tagged
frames (in_port=<parent>, VLAN present) and whatever comes back by a subport's patch
pair's trunk end (in_port=<trunk end>).

The pipeline is the same whether or not the port has port security: port_security passes
such ports through. Unknown in_ports hit the stage default (drop, wyvern.apps.defaults).

Packets from the metadata port (ofports.METADATA_OFPORT) go to metadata_reply
(wyvern.apps.metadata), a global flow.

Packets from a tunnel port (wyvern.apps.overlay), per overlay network (owner
("tunnel", network id)) whose encap this chassis's record lists, all with
flag_from_tunnel=1 so that they never leave by a tunnel again:

    geneve, tun_id=<key>                   → network key, both port keys from
                                             tun_metadata0, goto pre_acl_egress
    geneve, tun_id=<key>, option=FLOOD     → network key, goto l2_lookup (local flood)
    vxlan,  tun_id=<key>                   → network key, goto l2_lookup (MAC lookup)

Packets from a physical network (wyvern.apps.provider), per provider network whose
physnet this chassis maps (owner ("physnet", network id)):

    in_port=<patch>, untagged              (flat) → network key, goto l2_lookup
    in_port=<patch>, vlan_vid=<seg>|0x1000 (vlan) → pop_vlan, network key, goto l2_lookup

Port keys are unique within a network only, so every flow that matches a port key also
matches the network key. The conntrack zone must be unique per port on this chassis: it is
the port's ofport (OpenFlow port numbers are unique per bridge and below 0xff00, which
fits the 16-bit zone). `wyvern.apps.common.port_ct_zone()` is the one function that says
so; the security-group app uses it to load the destination port's zone in pre_acl_egress.
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.apps.common import NAT_SCOPE, local_port, port_ct_zone, port_is_up
from wyvern.apps.gateway import REDIRECT_KEY, local_gateway
from wyvern.apps.metadata import SERVICE_OBJECT
from wyvern.apps.overlay import FLOOD_OPTION, local_encap
from wyvern.apps.provider import local_patch, vlan_vid
from wyvern.apps.punts import meter_flow
from wyvern.ir import (
    Action,
    Bits,
    Flow,
    Goto,
    Load,
    Move,
    PopVlan,
    match,
    table,
    valid_port,
)
from wyvern.ir.cookies import encode
from wyvern.ir.fields import VLAN_PRESENT
from wyvern.ir.ofports import GENEVE, METADATA_OFPORT, TUNNEL_OFPORTS
from wyvern.model.view import LocalView

PRIORITY_PORT = 100
PRIORITY_TUNNEL = 100
PRIORITY_TUNNEL_FLOOD = 110
PRIORITY_PHYSNET = 100
PRIORITY_TRUNK = 110  # (above the port's own flow: its tagged frames are its subports')


class Classifier(App):
    name = "classifier"
    owner_tables = {
        "port": "bindings",
        "tunnel": "networks",
        "physnet": "networks",
        "router": "routers",
    }

    def global_flows(self) -> list[Flow]:
        """What comes back from the metadata service (wyvern.apps.metadata)."""
        return [
            table("classification").flow(
                priority=PRIORITY_PORT,
                cookie=encode("classifier", SERVICE_OBJECT),
                match=match(in_port=METADATA_OFPORT),
                actions=(Goto("metadata_reply"),),
            )
        ]

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        if kind == "tunnel":
            return tunnel_flows(view, port_id)
        if kind == "physnet":
            return physnet_flows(view, port_id)
        if kind == "router":
            return redirected_flows(view, port_id)
        found = local_port(view, port_id) if kind == "port" else None
        zone = port_ct_zone(view, port_id)
        if found is None or zone is None:
            return []
        port, net, ofport = found
        cookie = encode("classifier", port_id)
        trunked = trunk_flows(view, port_id, cookie)
        if not port_is_up(port, net):
            return trunked  # the stage default drops its own packets
        return [
            PORT_FLOW.flow(cookie, ofport, port.key, net.key, zone),
            meter_flow(cookie, ofport),
            *trunked,
        ]


def trunk_flows(view: LocalView, port_id: str, cookie: int) -> list[Flow]:
    """A trunk's frames go to the trunk stage (wyvern.apps.trunk): those of a parent's
    VIF with a VLAN tag, and all that come back by a subport's patch pair's trunk end."""
    binding = view.bindings.get(port_id)
    port = view.ports.get(port_id)
    if binding is None or port is None:
        return []
    st = table("classification")
    out = []
    if port.trunk_subports:
        out.append(
            st.flow(
                priority=PRIORITY_TRUNK,
                cookie=cookie,
                match=match(in_port=binding.ofport, vlan_vid=(VLAN_PRESENT, VLAN_PRESENT)),
                actions=(Goto("trunk"),),
            )
        )
    if valid_port(binding.trunk_ofport):
        out.append(
            st.flow(
                priority=PRIORITY_TRUNK,
                cookie=cookie,
                match=match(in_port=binding.trunk_ofport),
                actions=(Goto("trunk"),),
            )
        )
    return out


# flow(cookie, ofport, port key, network key, zone)
PORT_FLOW = table("classification").template(
    priority=PRIORITY_PORT,
    cookie_app="classifier",
    varying=("in_port",),
    actions=(
        Load("src_port_key", 0),
        Load("network_key", 0),
        Load("port_ct_zone", 0),
        Goto("qos_from_vm"),
    ),
    action_values=(0, 1, 2),
)


def tunnel_flows(view: LocalView, network_id: str) -> list[Flow]:
    """Classification of packets arriving from other chassis for one overlay network."""
    net = view.networks.get(network_id)
    encap = local_encap(view, net) if net is not None else None
    if net is None or encap is None or not net.admin_state_up:
        return []
    st = table("classification")
    cookie = encode("classifier", network_id)
    in_port = TUNNEL_OFPORTS[encap]
    to_l2 = (Load("network_key", net.key), Load("flag_from_tunnel", 1), Goto("l2_lookup"))
    if encap != GENEVE:
        return [
            st.flow(
                priority=PRIORITY_TUNNEL,
                cookie=cookie,
                match=match(in_port=in_port, tun_id=net.key),
                actions=to_l2,
            )
        ]
    return [
        st.flow(
            priority=PRIORITY_TUNNEL_FLOOD,
            cookie=cookie,
            match=match(in_port=in_port, tun_id=net.key, tun_metadata0=FLOOD_OPTION),
            actions=to_l2,
        ),
        st.flow(
            priority=PRIORITY_TUNNEL,
            cookie=cookie,
            match=match(in_port=in_port, tun_id=net.key),
            actions=(
                Load("network_key", net.key),
                Move(Bits("tun_metadata0", 32, 32), "src_port_key"),
                Move(Bits("tun_metadata0", 0, 32), "dst_port_key"),
                Load("flag_from_tunnel", 1),
                Goto("pre_acl_egress"),
            ),
        ),
    ]


def redirected_flows(view: LocalView, router_id: str) -> list[Flow]:
    """On the chassis hosting a router's gateway: what other chassis sent to be routed
    through it (wyvern.apps.gateway.Redirect) enters the router's routing stage."""
    router = view.routers.get(router_id)
    me = view.chassis.get(view.chassis_name)
    if router is None or me is None or GENEVE not in me.encaps or not me.tunnel_ip:
        return []
    if local_gateway(view, router) is None:
        return []
    return [
        table("classification").flow(
            priority=PRIORITY_TUNNEL,
            cookie=encode("classifier", router_id),
            match=match(
                in_port=TUNNEL_OFPORTS[GENEVE],
                tun_id=router.key,
                tun_metadata0=(REDIRECT_KEY, 0xFFFFFFFF),
            ),
            actions=(
                Load("router_key", router.key),
                Move(Bits("tun_metadata0", 32, 32), "src_port_key"),
                Load("flag_from_tunnel", 1),
                Load("addr_scope", NAT_SCOPE),  # (its address scope was checked there)
                Goto("routing"),
            ),
        )
    ]


def physnet_flows(view: LocalView, network_id: str) -> list[Flow]:
    """Classification of packets arriving from the physical network of a provider
    network: by the patch port and the VLAN (or its absence), then the MAC lookup."""
    net = view.networks.get(network_id)
    patch = local_patch(view, net) if net is not None else None
    if net is None or patch is None or not net.admin_state_up:
        return []
    vid = vlan_vid(net)
    pop: tuple[Action, ...] = () if vid is None else (PopVlan(),)
    return [
        table("classification").flow(
            priority=PRIORITY_PHYSNET,
            cookie=encode("classifier", network_id),
            match=match(in_port=patch, vlan_vid=0 if vid is None else vid),
            actions=(*pop, Load("network_key", net.key), Goto("l2_lookup")),
        )
    ]
