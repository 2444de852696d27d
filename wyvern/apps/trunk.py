"""Trunks (VLAN-aware VMs): one VIF carries its parent port's network untagged and each
subport's network tagged with the subport's VLAN (the `trunk` stage).

Each subport of a trunk whose parent is bound here gets a patch pair on br-int, made by
the agent (wyvern.southbound.trunks): one end carries the subport's iface-id, so it is
the subport's own OpenFlow port, bound like any VIF (classification, port security,
security groups, DHCP, metadata and conntrack zone all per subport, unchanged); the
other end (`Binding.trunk_ofport`) is where this app joins it to the parent's VIF.
Classification sends both kinds of frames here (wyvern.apps.classifier.trunk_flows)::

    in_port=<parent>, vlan_vid=<vlan>|0x1000 → pop_vlan, output:<subport's trunk end>
    in_port=<subport's trunk end>            → push_vlan, vlan_vid=<vlan>|0x1000,
                                               output:<parent>
    anything else (a VLAN of no subport here) → the stage's miss: drop

A frame that crosses a patch comes back into table 0 with the peer as its in_port (and
its registers cleared), so a subport's frames to its own parent, or to another subport
of the same VIF, never meet OpenFlow's rule against output to the input port. Untagged
frames of the parent are classified as the parent's, as any VIF's.

Owner: each bound subport ("port", id, over the bindings): its two flows need its
binding (trunk_ofport), its record (parent, VLAN) and its parent's binding.
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow, Output, PopVlan, PushVlan, SetField, match, table, valid_port
from wyvern.ir.cookies import encode
from wyvern.ir.fields import VLAN_PRESENT
from wyvern.model.view import LocalView

PRIORITY_SUBPORT = 100


class TrunkApp(App):
    name = "trunk"
    owner_tables = {"port": "bindings"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        binding = view.bindings.get(port_id)
        port = view.ports.get(port_id)
        if kind != "port" or binding is None or port is None or not valid_port(binding.ofport):
            return []
        st = table("trunk")
        cookie = encode("trunk", port_id)
        if not port.trunk_parent or not valid_port(binding.trunk_ofport):
            return []
        parent = view.bindings.get(port.trunk_parent)
        if parent is None or not valid_port(parent.ofport):
            return []
        vid = VLAN_PRESENT | port.trunk_vlan
        return [
            st.flow(
                priority=PRIORITY_SUBPORT,
                cookie=cookie,
                match=match(in_port=parent.ofport, vlan_vid=vid),
                actions=(PopVlan(), Output(binding.trunk_ofport)),
            ),
            st.flow(
                priority=PRIORITY_SUBPORT,
                cookie=cookie,
                match=match(in_port=binding.trunk_ofport),
                actions=(PushVlan(), SetField("vlan_vid", vid), Output(parent.ofport)),
            ),
        ]


def local_subports(view: LocalView) -> dict[str, str]:
    """Subport id -> parent id for every subport of a parent bound here: the patch pairs
    this chassis must have (wyvern.southbound.trunks)."""
    out: dict[str, str] = {}
    for port_id, binding in view.bindings.items():
        port = view.ports.get(port_id)
        if port is None or binding.trunk_ofport or not valid_port(binding.ofport):
            continue
        for sub_id, _vlan in port.trunk_subports:
            out[sub_id] = port_id
    return out


def patch_peers(view: LocalView) -> dict[int, int]:
    """Each end of the local subports' patch pairs -> the other (for the simulator)."""
    out: dict[int, int] = {}
    for binding in view.bindings.values():
        if valid_port(binding.trunk_ofport) and valid_port(binding.ofport):
            out[binding.ofport] = binding.trunk_ofport
            out[binding.trunk_ofport] = binding.ofport
    return out


def entry_point(view: LocalView, port_id: str) -> tuple[int, int] | None:
    """Where a subport's frames really enter: (its parent's ofport, its tagged vlan_vid);
    None for any other port, or a subport whose trunk is not wired here."""
    port = view.ports.get(port_id)
    binding = view.bindings.get(port_id)
    if port is None or binding is None or not port.trunk_parent or not binding.trunk_ofport:
        return None
    parent = view.bindings.get(port.trunk_parent)
    if parent is None or not valid_port(parent.ofport):
        return None
    return parent.ofport, VLAN_PRESENT | port.trunk_vlan
