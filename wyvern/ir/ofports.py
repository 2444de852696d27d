"""The OpenFlow port numbers the chassis setup reserves on br-int, which apps name in
their flows: the one place both the OVS driver (which requests them) and the apps (which
output to them) read them from. All are high, so they never collide with VIFs, which OVS
numbers from 1 up."""

from __future__ import annotations

from collections.abc import Iterable

GENEVE = "geneve"
VXLAN = "vxlan"
ENCAPS = (GENEVE, VXLAN)
# The flow-based tunnel ports, one per encap.
TUNNEL_OFPORTS: dict[str, int] = {GENEVE: 0xFE00, VXLAN: 0xFE01}
TUNNEL_PORT_NAMES: dict[str, str] = {GENEVE: "wy-geneve", VXLAN: "wy-vxlan"}

# The patch ports to the bridge-mapped physical networks (below the tunnel ports): the
# number is PATCH_OFPORT_BASE + the physnet's index in the chassis's sorted mapped
# physnets, so the agent and the apps both derive it from the chassis record alone.
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


# The metadata port (wyvern.ir.metadata): a veth to the chassis's metadata namespace.
METADATA_OFPORT = 0xFC00
