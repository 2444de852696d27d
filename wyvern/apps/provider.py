"""Provider networks: flat and VLAN networks on a physical network, through a bridge
mapping (physnet → OVS bridge) and a patch port pair to br-int (pure).

Shared by the classifier (packets from the physical network), l2 (the flood also goes
out to it) and output (to the physical network). Nothing here does I/O: the agent creates
the mapped bridges and patch ports (wyvern.southbound.physnets) with the OpenFlow numbers
of wyvern.ir.ofports, then advertises its mappings in its chassis record; apps only read the view.

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

A patch port's OpenFlow number comes from the chassis record alone
(wyvern.ir.ofports.patch_ofports), so the agent and the apps agree on it.
"""

from __future__ import annotations

from wyvern.ir import VLAN_PRESENT
from wyvern.ir.ofports import patch_ofports
from wyvern.model.view import LocalView, Network

FLAT = "flat"
VLAN = "vlan"
PROVIDER_TYPES = (FLAT, VLAN)


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
