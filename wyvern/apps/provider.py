"""Provider networks: flat and VLAN networks on a physical network, through a bridge
mapping (physnet → OVS bridge) and a patch port pair to br-int (pure).

Shared by the classifier (packets from the physical network), l2 (the flood also goes
out to it) and output (to the physical network). Nothing here does I/O: the agent creates
the mapped bridges and patch ports (wyvern.southbound.physnets) with the OpenFlow numbers
below, then advertises its mappings in its chassis record; apps only read the view.

Like ovn-controller's localnet ports:

- A provider network (`flat` or `vlan`) never uses the overlay: ports of the network on
  other chassis are reached through the physical network, which every chassis hosting
  the network is attached to by its own bridge mapping.
- Out (output stage, owner ("physnet", network id)): whatever has no local destination
  (the flood copy, unicast to a port on another chassis, unknown unicast) leaves by the
  patch port, VLAN networks with `push_vlan` and vlan_vid = segmentation id | 0x1000,
  then `pop_vlan` so the flood's next (local) copies are untagged again.
- In (classification, same owner): from the patch port, untagged (flat) or with the
  network's VLAN (popped) → network key, then l2_lookup (MAC lookup or local flood). The
  ingress half (port security, ACLs, the ARP responder, DHCP) is skipped: it belongs to
  the sending port, which is not ours; egress security groups of the destination port
  still run. A frame with another VLAN matches nothing and is dropped.

A patch port's OpenFlow number is PATCH_OFPORT_BASE + the physnet's index in the sorted
list of the chassis's mapped physnets, so both the agent and the apps derive it from the
chassis record alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.controller.view import LocalView, Network
from wyvern.ir import VLAN_PRESENT

FLAT = "flat"
VLAN = "vlan"
PROVIDER_TYPES = (FLAT, VLAN)
# br-int's patch ports (below the tunnel ports' 0xFE00, far above VIFs, which OVS numbers
# from 1 up); at most MAX_PHYSNETS mappings per chassis.
PATCH_OFPORT_BASE = 0xFD00
MAX_PHYSNETS = 0x100


def patch_ofports(physnets: Iterable[str]) -> dict[str, int]:
    """physnet → OpenFlow number of its patch port on br-int."""
    names = sorted(set(physnets))
    if len(names) > MAX_PHYSNETS:
        raise ValueError(f"at most {MAX_PHYSNETS} bridge mappings per chassis")
    return {name: PATCH_OFPORT_BASE + i for i, name in enumerate(names)}


def patch_names(physnet: str, bridge: str, integration: str = "br-int") -> tuple[str, str]:
    """(port on br-int, port on the mapped bridge) of one patch pair."""
    return f"wy-patch-{physnet}-to-{bridge}", f"wy-patch-{bridge}-to-{integration}"


def is_provider(net: Network) -> bool:
    return net.network_type in PROVIDER_TYPES


def vlan_vid(net: Network) -> int | None:
    """The vlan_vid of a VLAN network's frames on the wire (None: untagged)."""
    if net.network_type != VLAN or net.segmentation_id is None:
        return None
    return VLAN_PRESENT | int(net.segmentation_id)


def local_patch(view: LocalView, net: Network) -> int | None:
    """The patch port (OpenFlow number) to the network's physical network, when the
    network is a provider network and our own chassis record maps its physnet."""
    if not is_provider(net) or not net.physical_network:
        return None
    if net.network_type == VLAN and net.segmentation_id is None:
        return None
    me = view.chassis.get(view.chassis_name)
    if me is None:
        return None
    mapped = dict(me.bridge_mappings)
    if net.physical_network not in mapped:
        return None
    return patch_ofports(mapped)[net.physical_network]
