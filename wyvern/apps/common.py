"""Helpers several apps share: what makes a port local, its conntrack zone, and the
owners of apps that keep flows per local port."""

from __future__ import annotations

import functools
import ipaddress

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


@functools.lru_cache(maxsize=1 << 16)
def _pair_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def claims(port: Port, ip: str) -> bool:
    """Whether PORT may use `ip` through one of its allowed address pairs."""
    addr = _address(ip)
    if addr is None:
        return False
    for pair in port.allowed_address_pairs:
        net = _pair_network(pair.ip_address)
        if net is not None and addr in net:
            return True
    return False


def virtual(view: LocalView, network_id: str, ip: str, port_id: str = "") -> bool:
    """Whether a port of the network other than PORT_ID may claim `ip` through an allowed
    address pair (a VRRP/keepalived or Octavia VIP): then whoever holds it now answers
    ARP/ND for it (not the responder), and routers resolve it by asking (wyvern.apps.l3),
    never from the port that reserves it."""
    for pid in view.pair_ports_by_network.get(network_id, ()):
        port = view.ports.get(pid)
        if pid != port_id and port is not None and claims(port, ip):
            return True
    return False


def single_address(cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The one address an allowed address pair names (None: a wider prefix)."""
    net = _pair_network(cidr)
    if net is None or net.num_addresses != 1:
        return None
    return net.network_address
