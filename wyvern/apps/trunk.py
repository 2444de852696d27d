"""Trunks (VLAN-aware VMs): one VIF carries its parent port's network untagged and each
subport's network tagged with the subport's VLAN (the `trunk` stage, table 0).

Each subport of a trunk whose parent is bound here gets a patch pair on br-int, made by
the agent (wyvern.controller.trunks): one end carries the subport's iface-id, so it is
the subport's own OpenFlow port, bound like any VIF (classification, port security,
security groups, DHCP, metadata and conntrack zone all per subport, unchanged); the
other end (`Binding.trunk_ofport`) is where this app joins it to the parent's VIF::

    in_port=<parent>, vlan_vid=<vlan>|0x1000 → pop_vlan, output:<subport's patch>
    in_port=<subport's patch>                → push_vlan, vlan_vid=<vlan>|0x1000,
                                               output:<parent>
    in_port=<parent>, any other VLAN         → drop (a VLAN no subport has here)

A frame that crosses a patch comes back into table 0 with the peer as its in_port (and
its registers cleared), so a subport's frames to its own parent, or to another subport
of the same VIF, never meet OpenFlow's rule against output to the input port. Untagged
frames of the parent miss this stage and go on to classification as the parent's.

Owner: each bound port ("port", id, over the bindings): a subport's two flows need its
binding (trunk_ofport), its record (parent, VLAN) and its parent's binding; a parent's
drop needs its record (trunk_subports) and binding.
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow, Output, PopVlan, PushVlan, SetField, match, table, valid_port
from wyvern.ir.cookies import encode
from wyvern.ir.fields import VLAN_PRESENT
from wyvern.model.view import LocalView

PRIORITY_SUBPORT = 100
PRIORITY_PARENT_TAGGED = 50


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
        if port.trunk_subports:  # a parent: tagged frames of no subport here go nowhere
            return [
                st.flow(
                    priority=PRIORITY_PARENT_TAGGED,
                    cookie=cookie,
                    match=match(in_port=binding.ofport, vlan_vid=(VLAN_PRESENT, VLAN_PRESENT)),
                    actions=(),
                )
            ]
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
