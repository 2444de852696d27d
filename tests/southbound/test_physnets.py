"""Bridge mappings on a real OVS: each mapped bridge patched to br-int once, at the
OpenFlow number the apps derive from the mappings, and renumbered when they change."""

from __future__ import annotations

import pytest

from wyvern.ir.ofports import patch_names, patch_ofports
from wyvern.southbound.ovs import OvsInstance
from wyvern.southbound.physnets import ensure_bridge_mappings

pytestmark = pytest.mark.system


def patch_state(ovs: OvsInstance, physnet: str, bridge: str) -> tuple[str, str, str]:
    int_port, ext_port = patch_names(physnet, bridge)
    return (
        ovs.vsctl("get", "Interface", int_port, "ofport").strip(),
        ovs.vsctl("get", "Interface", int_port, "options:peer").strip().strip('"'),
        ovs.vsctl("get", "Interface", ext_port, "options:peer").strip().strip('"'),
    )


def test_mapped_bridges_are_patched_to_br_int_once(ovs: OvsInstance) -> None:
    mappings = {"physnet1": "br-ex"}
    for _ in range(2):  # an agent restart changes nothing
        assert ensure_bridge_mappings(ovs, "br-int", mappings) == patch_ofports(mappings)
    int_port, ext_port = patch_names("physnet1", "br-ex")
    assert patch_state(ovs, "physnet1", "br-ex") == (
        str(patch_ofports(mappings)["physnet1"]),
        ext_port,
        int_port,
    )
    assert ovs.vsctl("get", "Bridge", "br-ex", "datapath_type").strip() == "netdev"
    assert ovs.vsctl("list-ports", "br-ex").split() == [ext_port]
    assert ovs.vsctl("list-ports", "br-int").split().count(int_port) == 1
    # A mapping sorting before it: physnet1's patch moves to the number the apps expect.
    mappings = {"physnet0": "br-ex0", "physnet1": "br-ex"}
    ensure_bridge_mappings(ovs, "br-int", mappings)
    for physnet, bridge in mappings.items():
        assert patch_state(ovs, physnet, bridge)[0] == str(patch_ofports(mappings)[physnet])
