"""Helpers several apps share: what makes a port local, its conntrack zone, and the
owners of apps that keep flows per local port."""

from __future__ import annotations

from wyvern.ir import valid_port
from wyvern.ir.metadata import METADATA_ZONE
from wyvern.model.view import LocalView, Network, Port

# Conntrack zones on a chassis: a port's is its ofport, below METADATA_ZONE (0xEFFF, the
# metadata service's SNAT); routers' SNAT zones are this and above
# (wyvern.apps.gateway.router_zone).
ROUTER_ZONE_BASE = 0xF000


def port_ct_zone(view: LocalView, port_id: str) -> int | None:
    """The conntrack zone of a local port (None when the port is not bound here)."""
    binding = view.bindings.get(port_id)
    if binding is None or not valid_port(binding.ofport) or binding.ofport >= METADATA_ZONE:
        return None
    return binding.ofport


def local_port(view: LocalView, port_id: str) -> tuple[Port, Network, int] | None:
    """(port, network, ofport) when the port is bound here, with a usable OpenFlow port
    number, and both records are known."""
    binding = view.bindings.get(port_id)
    port = view.ports.get(port_id)
    if binding is None or port is None or not valid_port(binding.ofport):
        return None  # not here, not synced yet, or an interface OVS failed to add (-1)
    net = view.networks.get(port.network_id)
    if net is None:
        return None
    return port, net, binding.ofport


def port_is_up(port: Port, net: Network) -> bool:
    return port.admin_state_up and net.admin_state_up


# addr_scope of a packet a router translated (a floating IP's DNAT, un-SNAT, a port
# forwarding), or one another chassis routed and checked already (the gateway redirect):
# any router port may take it, as Neutron's l3 agent gives such packets the scope of their
# destination. Scope keys are below it (wyvern.api.resources.address_scopes).
NAT_SCOPE = 0xFFFFFF
