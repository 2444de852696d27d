"""Plug a "VM" into br-int the way Nova and os-vif do, so real hypervisors plug in unchanged.

A VM here is a network namespace whose `eth0` is one end of a veth pair. The other end
is the tap device the hypervisor would create, named `tap<first 11 chars of the port
id>` (Nova's `get_vif_devname`), added to br-int with the os-vif external_ids that the
agent binds ports by:

    external_ids:iface-id=<neutron port id>
    external_ids:attached-mac=<port MAC>
    external_ids:iface-status=active

Two things make it work on a userspace (netdev) bridge: the VM side has TX checksum
offload turned off (`ethtool -K eth0 tx off`; otherwise TCP leaves with bad checksums
while ping still works), and the host end is created directly inside the OVS instance's
namespace, because ovs-vswitchd opens it there (and no name ever appears in the root
namespace, where parallel test runs would collide).

What this module created is recorded in the Interface row
(`external_ids:wyvern-netns`, `external_ids:wyvern-netns-created`), so `unplug` works
from another process, e.g. `wyvern plug` then `wyvern unplug`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from wyvern.southbound.ovs import OvsError, OvsInstance, netns_exists, run_cmd

LOG = logging.getLogger(__name__)

NIC_NAME_LEN = 14  # Nova: "tap" + 11 characters of the port id
VM_IFNAME = "eth0"
EXT_NETNS = "wyvern-netns"
EXT_NETNS_CREATED = "wyvern-netns-created"


class VifError(OvsError):
    """A VIF could not be plugged or found."""


@dataclass(frozen=True)
class Vif:
    """A plugged port: where its two ends are and which OpenFlow port it got."""

    port_id: str
    mac: str
    netns: str
    devname: str
    ofport: int
    mtu: int
    netns_created: bool


def devname(port_id: str) -> str:
    """The host-side device name Nova gives a port: `tap` + the first 11 characters."""
    return ("tap" + port_id)[:NIC_NAME_LEN]


def _ip(netns: str | None, *args: str, check: bool = True) -> str:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run_cmd([*prefix, *args], check=check).stdout


def _link_exists(netns: str | None, ifname: str) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run_cmd([*prefix, "link", "show", "dev", ifname], check=False).returncode == 0


def plug(
    ovs: OvsInstance,
    port_id: str,
    mac: str,
    netns: str,
    mtu: int = 1500,
    ip_cidr: str | None = None,
    bridge: str = "br-int",
    *,
    gateway: str | None = None,
    vm_id: str | None = None,
) -> Vif:
    """Create the VM end (eth0 in NETNS) and plug the tap end into BRIDGE; idempotent.

    NETNS is created if absent. IP_CIDR (e.g. "10.0.0.5/24") and GATEWAY are optional:
    without them the VM can still get its address by DHCP. Plugging a port that is
    already plugged re-applies the settings and returns the same Vif.
    """
    tap = devname(port_id)
    mac = mac.lower()
    new_ns = not netns_exists(netns)
    if new_ns:
        run_cmd(["ip", "netns", "add", netns])
    created_ns = new_ns or _recorded_netns_created(ovs, tap, netns)
    new_veth = False
    try:
        _ip(netns, "link", "set", "lo", "up")
        if not _link_exists(ovs.netns, tap):
            if _link_exists(netns, VM_IFNAME):
                raise VifError(f"{netns} already has an {VM_IFNAME} that is not {tap}'s peer")
            # Both ends are born in their final namespaces: no name in the root namespace.
            _ip(ovs.netns, "link", "add", tap, "type", "veth",
                "peer", "name", VM_IFNAME, "netns", netns)  # fmt: skip
            new_veth = True
        _ip(netns, "link", "set", VM_IFNAME, "address", mac, "mtu", str(mtu))
        # Userspace datapath + veth: TX checksum offload leaves TCP/UDP checksums unfilled.
        run_cmd(["ip", "netns", "exec", netns, "ethtool", "-K", VM_IFNAME, "tx", "off"])
        _ip(netns, "link", "set", VM_IFNAME, "up")
        if ip_cidr:
            _ip(netns, "addr", "replace", ip_cidr, "dev", VM_IFNAME)
        if gateway:
            _ip(netns, "route", "replace", "default", "via", gateway, "dev", VM_IFNAME)
        _ip(ovs.netns, "link", "set", tap, "mtu", str(mtu), "up")

        ext = {
            "iface-id": port_id,
            "attached-mac": mac,
            "iface-status": "active",
            EXT_NETNS: netns,
            EXT_NETNS_CREATED: "true" if created_ns else "false",
        }
        if vm_id:
            ext["vm-uuid"] = vm_id
        sets = [f"external_ids:{k}={json.dumps(v)}" for k, v in ext.items()]
        ovs.vsctl("--may-exist", "add-port", bridge, tap, "--", "set", "Interface", tap, *sets)
        ofport = _ofport(ovs, tap)
    except BaseException:
        # Leave nothing half-plugged that this call created.
        if new_veth:
            with contextlib.suppress(OvsError):
                ovs.vsctl("--if-exists", "del-port", bridge, tap)
            _ip(ovs.netns, "link", "del", tap, check=False)
        if new_ns:
            run_cmd(["ip", "netns", "del", netns], check=False)
        raise
    LOG.info(
        "vif %s: plugged %s (ofport %d) netns=%s mac=%s ovs=%s",
        port_id,
        tap,
        ofport,
        netns,
        mac,
        ovs.run_dir,
    )
    return Vif(port_id, mac, netns, tap, ofport, mtu, created_ns)


def _ofport(ovs: OvsInstance, tap: str) -> int:
    """The OpenFlow port number vswitchd assigned (-1 means it failed to open the tap)."""
    raw = ovs.vsctl("get", "Interface", tap, "ofport").strip()
    ofport = int(raw) if raw.lstrip("-").isdigit() else -1
    if ofport <= 0:
        error = ovs.vsctl("get", "Interface", tap, "error").strip()
        raise VifError(f"{tap}: vswitchd could not open it (ofport={raw}): {error}")
    return ofport


def _external_ids(ovs: OvsInstance, tap: str) -> dict[str, str]:
    try:
        out = ovs.vsctl("--format=json", "--columns=external_ids", "list", "Interface", tap)
    except OvsError:
        return {}
    data = json.loads(out).get("data") or []
    if not data:
        return {}
    # OVSDB JSON: ["map", [[key, value], ...]]
    return {str(k): str(v) for k, v in data[0][0][1]}


def _recorded_netns_created(ovs: OvsInstance, tap: str, netns: str) -> bool:
    """On a re-plug, keep the record of whether we created the namespace."""
    ext = _external_ids(ovs, tap)
    return ext.get(EXT_NETNS) == netns and ext.get(EXT_NETNS_CREATED) == "true"


def find(ovs: OvsInstance, port_id: str) -> str | None:
    """The Interface name bound to PORT_ID (by iface-id), or None."""
    out = ovs.vsctl(
        "--bare",
        "--columns=name",
        "find",
        "Interface",
        f"external_ids:iface-id={json.dumps(port_id)}",
    )
    names = out.split()
    return names[0] if names else None


def unplug(
    ovs: OvsInstance,
    port_id: str,
    *,
    delete_netns: bool | None = None,
    bridge: str | None = None,
) -> None:
    """Remove the OVS port and the veth pair; idempotent.

    The VM namespace goes too if DELETE_NETNS, or (when it is None) if `plug` created
    it and nothing but `lo` is left in it. A namespace someone else made is kept.
    """
    tap = find(ovs, port_id) or devname(port_id)
    ext = _external_ids(ovs, tap)
    netns = ext.get(EXT_NETNS)
    if bridge is None:
        ovs.vsctl("--if-exists", "del-port", tap)
    else:
        ovs.vsctl("--if-exists", "del-port", bridge, tap)
    if _link_exists(ovs.netns, tap):
        _ip(ovs.netns, "link", "del", tap)  # takes the peer (eth0) with it
    if netns and netns_exists(netns):
        remove = delete_netns
        if remove is None:
            remove = ext.get(EXT_NETNS_CREATED) == "true" and _netns_is_empty(netns)
        if remove:
            run_cmd(["ip", "netns", "del", netns])
    LOG.info("vif %s: unplugged %s ovs=%s", port_id, tap, ovs.run_dir)


def _netns_is_empty(netns: str) -> bool:
    """True if the namespace holds no interface but loopback."""
    out = _ip(netns, "-o", "link", "show", check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return all(name == "lo" for name in names)


def attach_host(
    ovs: OvsInstance, bridge: str, netns: str, ip_cidr: str, *, routes: Sequence[str] = ()
) -> str:
    """A host on a physical network: NETNS (created if absent) gets eth0 with IP_CIDR on
    a veth whose other end is a port of BRIDGE (a physnet's mapped bridge), as an
    operator cables a NIC to it; ROUTES ("CIDR via IP") are added in NETNS. Idempotent.
    Returns the bridge port's name."""
    port = "wo-" + hashlib.sha256(netns.encode()).hexdigest()[:10]
    if not netns_exists(netns):
        run_cmd(["ip", "netns", "add", netns])
    _ip(netns, "link", "set", "lo", "up")
    if not _link_exists(ovs.netns, port):
        if _link_exists(netns, VM_IFNAME):
            raise VifError(f"{netns} already has an {VM_IFNAME}")
        _ip(ovs.netns, "link", "add", port, "type", "veth",
            "peer", "name", VM_IFNAME, "netns", netns)  # fmt: skip
    run_cmd(["ip", "netns", "exec", netns, "ethtool", "-K", VM_IFNAME, "tx", "off"])
    _ip(netns, "link", "set", VM_IFNAME, "up")
    _ip(netns, "addr", "replace", ip_cidr, "dev", VM_IFNAME)
    for route in routes:
        _ip(netns, "route", "replace", *route.split())
    _ip(ovs.netns, "link", "set", port, "up")
    ovs.vsctl("--may-exist", "add-port", bridge, port)
    return port
