"""Helpers several apps share: what makes a port local, its conntrack zone, and the
owners of apps that keep flows per local port."""

from __future__ import annotations

from wyvern.apps.base import Owner
from wyvern.ir import valid_port
from wyvern.model.view import Change, LocalView, Network, Port


def port_ct_zone(view: LocalView, port_id: str) -> int | None:
    """The conntrack zone of a local port (None when the port is not bound here)."""
    binding = view.bindings.get(port_id)
    if binding is None or not valid_port(binding.ofport) or binding.ofport > 0xFFFF:
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


def per_port_owners(view: LocalView) -> list[Owner]:
    return [("port", pid) for pid in sorted(view.bindings)]


def per_port_affected(view: LocalView, change: Change) -> list[Owner]:
    """Owners of per-local-port apps that a change may touch: the port itself (port or
    binding change) or every port of a network (network change)."""
    if change.kind in ("port", "binding"):
        return [("port", change.id)]
    if change.kind == "network":
        return [("port", pid) for pid in sorted(view.ports_by_network.get(change.id, ()))]
    return []
