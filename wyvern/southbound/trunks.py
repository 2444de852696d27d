"""A trunk's subports on br-int: one patch pair each (wyvern.apps.trunk says why).

    wys<id>  external_ids:iface-id=<subport>           the subport's own port, bound
                                                       like a VIF (its ofport, zone, meter)
    wyt<id>  external_ids:wyvern-trunk-subport=<sub>   where the trunk app tags its frames
                                                       out of the parent's VIF

Both ends sit on br-int itself, peers of each other (checked on the userspace datapath:
a frame output to one comes back into table 0 by the other, with in_port the peer, so
output to the parent's VIF is never output to the input port). Names are 15 characters
(a prefix and the subport id's first 12 hex digits); the agent adds the pairs of the
subports of every parent bound here and removes the others (`TrunkPatches.sync`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from wyvern.southbound.ovs import OvsError, OvsInstance

LOG = logging.getLogger(__name__)

TRUNK_SUBPORT_ID = "wyvern-trunk-subport"  # the trunk end's external_ids key
PORT_PREFIX, TRUNK_PREFIX = "wys", "wyt"


def names(subport_id: str) -> tuple[str, str]:
    """(the subport's end, the trunk's end) of a subport's patch pair."""
    short = subport_id.replace("-", "")[:12]
    return f"{PORT_PREFIX}{short}", f"{TRUNK_PREFIX}{short}"


class TrunkPatches:
    """The patch pairs on one bridge, kept equal to what the view asks for."""

    def __init__(self, ovs: OvsInstance, bridge: str) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.current: dict[str, str] | None = None  # subport id -> its end's name

    def _read(self) -> dict[str, str]:
        out = self.ovs.vsctl(
            "--format=json", "--columns=name,external_ids", "list", "Interface", timeout=10
        )
        found: dict[str, str] = {}
        for name, ext in json.loads(out).get("data") or []:
            ids = dict(ext[1]) if isinstance(ext, list) and len(ext) == 2 else {}
            if str(name).startswith(PORT_PREFIX) and ids.get("iface-id"):
                found[str(ids["iface-id"])] = str(name)
        return found

    def sync(self, wanted: Mapping[str, str]) -> bool:
        """Make the pairs those of WANTED (subport id -> parent id); True if it changed
        anything. OVS errors are logged and the next call tries again."""
        try:
            if self.current is None:
                self.current = self._read()
            current = self.current
            add = sorted(set(wanted) - set(current))
            gone = sorted(set(current) - set(wanted))
            if not add and not gone:
                return False
            cmd: list[str] = []
            for sub in gone:
                end, trunk_end = names(sub)
                cmd += ["--", "--if-exists", "del-port", self.bridge, current[sub]]
                cmd += ["--", "--if-exists", "del-port", self.bridge, trunk_end]
            for sub in add:
                end, trunk_end = names(sub)
                cmd += [
                    "--", "--may-exist", "add-port", self.bridge, trunk_end,
                    "--", "set", "Interface", trunk_end, "type=patch",
                    f"options:peer={end}", f"external_ids:{TRUNK_SUBPORT_ID}={sub}",
                    "--", "--may-exist", "add-port", self.bridge, end,
                    "--", "set", "Interface", end, "type=patch", f"options:peer={trunk_end}",
                    f"external_ids:iface-id={sub}",
                ]  # fmt: skip
            self.ovs.vsctl(*cmd[1:], timeout=10)
            for sub in gone:
                del current[sub]
            for sub in add:
                current[sub] = names(sub)[0]
            LOG.info("bridge %s: trunk subports plugged %s, unplugged %s", self.bridge, add, gone)
            return True
        except (OvsError, ValueError) as exc:
            LOG.warning("bridge %s: trunk subport patches: %s", self.bridge, exc)
            self.current = None  # (read again next time)
            return False
