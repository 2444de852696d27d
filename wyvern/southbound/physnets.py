"""Bridge mappings on a chassis: each physical network's OVS bridge, patched to br-int.

For every `physnet → bridge` mapping (ovn-controller's ovn-bridge-mappings), the agent
makes sure, once and idempotently, before its chassis record advertises the mappings:

- the bridge exists (userspace datapath, NORMAL forwarding: it is a plain learning
  switch between the physical NIC, which the operator adds to it, and the patch port);
- a patch port pair joins it to br-int, the br-int end at the OpenFlow number the apps
  derive from the mappings (wyvern.apps.provider.patch_ofports), so flows name it purely.

A bridge that already exists keeps its ports and settings (the operator may have
configured it) but must use the userspace datapath, like br-int; a patch port at the
wrong number (the set of mappings changed) is renumbered by OVS when
its ofport_request changes. Patch ports of mappings that were removed are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from wyvern.ir.ofports import patch_names, patch_ofports
from wyvern.southbound.ovs import OvsError, OvsInstance

LOG = logging.getLogger(__name__)


def ensure_bridge_mappings(
    ovs: OvsInstance, integration: str, mappings: Mapping[str, str]
) -> dict[str, int]:
    """Every mapped bridge, patched to `integration`; returns physnet → patch ofport."""
    ofports = patch_ofports(mappings)
    # One transaction for all of them, so that ports trading numbers (a mapping added
    # in front of the others) are renumbered together.
    cmd: list[str] = []
    for physnet, bridge in sorted(mappings.items()):
        if bridge == integration:
            raise OvsError(f"bridge mapping {physnet}: {bridge} is the integration bridge")
        int_port, ext_port = patch_names(physnet, bridge, integration)
        cmd += [
            "--", "--may-exist", "add-br", bridge,
            "--", "set", "Bridge", bridge, "datapath_type=netdev",
            "--", "--may-exist", "add-port", integration, int_port,
            "--", "set", "Interface", int_port, "type=patch", f"options:peer={ext_port}",
            f"ofport_request={ofports[physnet]}",
            "--", "--may-exist", "add-port", bridge, ext_port,
            "--", "set", "Interface", ext_port, "type=patch", f"options:peer={int_port}",
        ]  # fmt: skip
    if cmd:
        ovs.vsctl(*cmd[1:])
    for physnet, bridge in sorted(mappings.items()):
        int_port, _ = patch_names(physnet, bridge, integration)
        got = ovs.vsctl("get", "Interface", int_port, "ofport").strip()
        if got != str(ofports[physnet]):
            raise OvsError(f"{int_port}: ofport {got}, wanted {ofports[physnet]}")
        LOG.info("bridge mapping: %s → %s (patch ofport %d)", physnet, bridge, ofports[physnet])
    return ofports
