"""The metadata service's fixed addresses: what the metadata app's flows, the agent's
plumbing (wyvern.southbound.metadata) and the proxy (wyvern.controller.metadata) agree on.

A VM reaches the service at 169.254.169.254:80 (IPv4) or [fe80::a9fe:a9fe]:80 (IPv6).
The flows answer ARP/ND for those addresses with METADATA_MAC, source-NAT each local
port's connection (conntrack zone METADATA_ZONE) to an address derived from the port's
ofport, and hand it to the chassis's metadata port (METADATA_OFPORT: a veth whose other
end sits in a private namespace holding the two service addresses). The proxy reads the
OpenFlow port back from the peer address of each connection it accepts, so the VM is
known by the port its packets came in on, never by anything it chose.

Per-port addresses: 169.254.<ofport high byte>.<ofport low byte> and PORT_PREFIX_V6 +
ofport. Ports reach at most METADATA_ZONE - 1 (a port's conntrack zone is its ofport,
wyvern.apps.common), so the high byte stays below 240 and NEXT_HOP_V4 (169.254.255.1)
is never a port's; the one ofport whose address would be the service's own (43518) gets
no metadata.
"""

from __future__ import annotations

import ipaddress

SERVICE_V4 = "169.254.169.254"
SERVICE_V6 = "fe80::a9fe:a9fe"
SERVICE_PORT = 80
# The metadata end's MAC (locally administered, the same on every chassis: only local
# VMs ever see it, each from its own chassis).
METADATA_MAC = "0a:58:a9:fe:a9:fe"
# The conntrack zone of the SNAT to per-port addresses: just below the routers' zones
# (wyvern.apps.common.ROUTER_ZONE_BASE); port zones stay below it.
METADATA_ZONE = 0xEFFF
PORT_NET_V4 = ipaddress.IPv4Network("169.254.0.0/16")
PORT_PREFIX_V6 = ipaddress.IPv6Network("fdfe:a9fe:a9fe::/64")
# The metadata namespace routes the per-port ranges via these (a permanent neighbour
# entry with NEXT_HOP_MAC), so it never asks ARP or ND for a per-port address.
NEXT_HOP_V4 = "169.254.255.1"
NEXT_HOP_V6 = "fe80::1"
NEXT_HOP_MAC = "0a:58:a9:fe:00:01"

_SERVICE_V4_INT = int(ipaddress.IPv4Address(SERVICE_V4))


def has_metadata(ofport: int) -> bool:
    """Whether a port on OFPORT can be given per-port addresses."""
    return 0 < ofport < METADATA_ZONE and _v4_int(ofport) != _SERVICE_V4_INT


def _v4_int(ofport: int) -> int:
    return int(PORT_NET_V4.network_address) + ofport


def port_address_v4(ofport: int) -> str:
    """The IPv4 address the VM on OFPORT is seen from by the proxy."""
    if not has_metadata(ofport):
        raise ValueError(f"ofport {ofport} has no metadata address")
    return f"169.254.{ofport >> 8}.{ofport & 0xFF}"  # (PORT_NET_V4 + ofport, made fast)


def port_address_v6(ofport: int) -> str:
    """The IPv6 address the VM on OFPORT is seen from by the proxy."""
    if not has_metadata(ofport):
        raise ValueError(f"ofport {ofport} has no metadata address")
    return f"fdfe:a9fe:a9fe::{ofport:x}"  # (PORT_PREFIX_V6 + ofport, compressed, made fast)


def ofport_of(peer: str) -> int | None:
    """The OpenFlow port behind a per-port address (None: not one)."""
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        if addr not in PORT_NET_V4:
            return None
        ofport = int(addr) - int(PORT_NET_V4.network_address)
    else:
        if addr not in PORT_PREFIX_V6:
            return None
        ofport = int(addr) - int(PORT_PREFIX_V6.network_address)
    return ofport if has_metadata(ofport) else None
