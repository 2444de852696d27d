"""The overlay: where remote ports live and how a packet reaches their chassis (pure).

Shared by the classifier (packets from a tunnel), l2 (head-end replication) and output
(packets to a remote port). Nothing here does I/O: the agent creates the tunnel ports
with the OpenFlow numbers of wyvern.ir.ofports (wyvern.southbound.tunnels), and apps only
read the view.

Encapsulation per network, from its provider:network_type:

- geneve: VNI = network key; the 8-byte option (tun_metadata0) carries the source port
  key in bits 32..63 and the destination port key in bits 0..31, so the receiving chassis
  goes straight to the egress half for that port. A flood copy carries the option
  `FLOOD_OPTION` (all ones) and the receiver runs l2_lookup's flood for its local ports.
- vxlan: VNI = network key only; the receiver looks the destination MAC up (l2_lookup).

A port is remote when its binding status (view.port_chassis, ACTIVE only) names another
chassis that the view knows, with a tunnel IP and the network's encap among its encaps.
A chassis that is down (its lease ran out: the store deleted its record) is not in the
view, so its ports
are unreachable from here (no tunnel flow, no flood copy) until its record returns.
Receivers never send a packet from a tunnel into a tunnel again (output matches
flag_from_tunnel=0), so head-end replication cannot loop.
"""

from __future__ import annotations

from wyvern.ir import Action, Bits, Move, Output, SetField
from wyvern.ir.ofports import ENCAPS, GENEVE, TUNNEL_OFPORTS
from wyvern.model.view import Chassis, LocalView, Network

# dst_port_key of a flood copy for remote chassis (port keys are small integers).
FLOOD_KEY = 0xFFFFFFFF
FLOOD_OPTION = 0xFFFFFFFFFFFFFFFF


def encap_of(net: Network) -> str | None:
    """The tunnel type of a network, None for networks that never use tunnels."""
    return net.network_type if net.network_type in ENCAPS else None


def local_encap(view: LocalView, net: Network) -> str | None:
    """The network's encap if this chassis has its tunnel port: our own chassis record
    (written once the agent set the tunnels up) lists it."""
    encap = encap_of(net)
    me = view.chassis.get(view.chassis_name)
    if encap is None or me is None or not me.tunnel_ip or encap not in me.encaps:
        return None
    return encap


def _encap_usable(view: LocalView, chassis: Chassis, encap: str) -> bool:
    if not chassis.tunnel_ip or encap not in chassis.encaps:
        return False
    me = view.chassis.get(view.chassis_name)
    return me is not None and bool(me.tunnel_ip) and encap in me.encaps


def remote_chassis(view: LocalView, port_id: str) -> Chassis | None:
    """The chassis a port is bound on, when it is not this one and is reachable."""
    if port_id in view.bindings:
        return None
    name = view.port_chassis.get(port_id)
    port = view.ports.get(port_id)
    if not name or name == view.chassis_name or port is None:
        return None
    net = view.networks.get(port.network_id)
    chassis = view.chassis.get(name)
    encap = encap_of(net) if net is not None else None
    if chassis is None or encap is None or not _encap_usable(view, chassis, encap):
        return None
    return chassis


def network_chassis(view: LocalView, network_id: str) -> list[Chassis]:
    """Other chassis hosting ports of a network (head-end replication targets), by name."""
    names: set[str] = set()
    for pid in view.ports_by_network.get(network_id, ()):
        chassis = remote_chassis(view, pid)
        if chassis is not None:
            names.add(chassis.name)
    return [view.chassis[n] for n in sorted(names)]


def tunnel_to(net: Network, chassis: Chassis, *, flood: bool = False) -> tuple[Action, ...]:
    """Set the tunnel header for one copy of a packet to `chassis`, and send it."""
    encap = encap_of(net)
    assert encap is not None
    acts: list[Action] = [
        SetField("tun_id", net.key),
        SetField("tun_dst", chassis.tunnel_ip),
    ]
    if encap == GENEVE:
        if flood:
            acts.append(SetField("tun_metadata0", FLOOD_OPTION))
        else:
            acts += [
                Move("src_port_key", Bits("tun_metadata0", 32, 32)),
                Move("dst_port_key", Bits("tun_metadata0", 0, 32)),
            ]
    acts.append(Output(TUNNEL_OFPORTS[encap]))
    return tuple(acts)
