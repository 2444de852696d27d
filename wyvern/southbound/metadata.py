"""The chassis's metadata port: a veth from br-int into a private metadata namespace.

One end is a br-int port like a VM's (ofports.METADATA_OFPORT, requested; external_ids
`wyvern-metadata=<chassis>`, no iface-id, so it is never taken for a VIF); the other end,
`md0`, sits in a namespace of its own (`namespace(chassis)`, unique per chassis) that
holds the service addresses 169.254.169.254/32 and fe80::a9fe:a9fe with METADATA_MAC.
Nothing lands in the host's own namespace, which may itself be a cloud VM using
169.254.169.254. The namespace routes the per-port ranges (wyvern.ir.metadata) via a
fake next hop with a permanent neighbour entry: it never asks ARP or ND for a VM.

`listen()` opens the proxy's listening sockets inside that namespace from a helper thread
that enters it (setns: Python 3.11 has no os.setns) and returns: a socket keeps the
namespace it was made in, so the proxy serves them from anywhere (docs/dataplane.md:
metadata port).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import socket
import threading

from wyvern.ir.metadata import (
    METADATA_MAC,
    NEXT_HOP_MAC,
    NEXT_HOP_V4,
    NEXT_HOP_V6,
    PORT_NET_V4,
    PORT_PREFIX_V6,
    SERVICE_PORT,
    SERVICE_V4,
    SERVICE_V6,
)
from wyvern.ir.ofports import METADATA_OFPORT
from wyvern.southbound.ovs import OvsError, OvsInstance, netns_exists, run_cmd

LOG = logging.getLogger(__name__)

IFNAME = "md0"  # the namespace's end
EXT_ID = "wyvern-metadata"
CLONE_NEWNET = 0x40000000


def _digest(chassis: str) -> str:
    return hashlib.sha256(chassis.encode()).hexdigest()


def namespace(chassis: str) -> str:
    """The metadata namespace of CHASSIS (names are unique, so is this)."""
    return "wyvern-md-" + _digest(chassis)[:12]


def port_name(chassis: str) -> str:
    """The br-int end's device name (15 characters at most)."""
    return "wy-md-" + _digest(chassis)[:8]


def _ip(netns: str | None, *args: str, check: bool = True) -> str:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run_cmd([*prefix, *args], check=check).stdout


def _exists(netns: str | None, ifname: str) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run_cmd([*prefix, "link", "show", "dev", ifname], check=False).returncode == 0


def _usable(ns: str) -> bool:
    return run_cmd(["ip", "-n", ns, "link", "show", "lo"], check=False).returncode == 0


def ensure_port(ovs: OvsInstance, bridge: str, chassis: str) -> str:
    """Create (or keep) the metadata namespace and its veth on BRIDGE; idempotent.
    Returns the namespace name."""
    ns, dev = namespace(chassis), port_name(chassis)
    if netns_exists(ns) and not _usable(ns):
        # An `ip netns add` killed half-way (an agent stopped while starting) leaves the
        # name without a namespace behind it: make it again.
        LOG.warning("metadata namespace %s: not a namespace; made again", ns)
        run_cmd(["ip", "netns", "del", ns], check=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/run/netns/{ns}")
    if not netns_exists(ns):
        run_cmd(["ip", "netns", "add", ns])
    _ip(ns, "link", "set", "lo", "up")
    if not _exists(ovs.netns, dev) or not _exists(ns, IFNAME):
        _ip(ovs.netns, "link", "del", dev, check=False)
        _ip(ns, "link", "del", IFNAME, check=False)
        # Both ends are born in their final namespaces (as vif.plug does).
        _ip(ovs.netns, "link", "add", dev, "type", "veth",
            "peer", "name", IFNAME, "netns", ns)  # fmt: skip
    _ip(ns, "link", "set", IFNAME, "address", METADATA_MAC)
    _ip(ns, "link", "set", IFNAME, "addrgenmode", "none", check=False)  # (no SLAAC, no DAD)
    # Userspace datapath + veth: without this, TCP leaves with unfilled checksums
    # (docs/dataplane.md: checksum offload).
    run_cmd(["ip", "netns", "exec", ns, "ethtool", "-K", IFNAME, "tx", "off"])
    _ip(ns, "link", "set", IFNAME, "up")
    _ip(ns, "addr", "replace", f"{SERVICE_V4}/32", "dev", IFNAME)
    _ip(ns, "-6", "addr", "replace", f"{SERVICE_V6}/64", "dev", IFNAME, "nodad")
    _ip(ns, "neigh", "replace", NEXT_HOP_V4, "lladdr", NEXT_HOP_MAC, "dev", IFNAME,
        "nud", "permanent")  # fmt: skip
    _ip(ns, "route", "replace", str(PORT_NET_V4), "via", NEXT_HOP_V4, "dev", IFNAME, "onlink")
    _ip(ns, "-6", "neigh", "replace", NEXT_HOP_V6, "lladdr", NEXT_HOP_MAC, "dev", IFNAME,
        "nud", "permanent")  # fmt: skip
    _ip(ns, "-6", "route", "replace", str(PORT_PREFIX_V6), "via", NEXT_HOP_V6, "dev", IFNAME)
    _ip(ovs.netns, "link", "set", dev, "up")
    ovs.vsctl(
        "--may-exist", "add-port", bridge, dev, "--", "set", "Interface", dev,
        f"ofport_request={METADATA_OFPORT}", f'external_ids:{EXT_ID}="{chassis}"',
    )  # fmt: skip
    raw = ovs.vsctl("get", "Interface", dev, "ofport").strip()
    if raw != str(METADATA_OFPORT):
        raise OvsError(f"{dev}: ofport {raw}, not the requested {METADATA_OFPORT}")
    return ns


def remove_port(ovs: OvsInstance, bridge: str, chassis: str) -> None:
    """Remove the metadata veth and namespace (a clean stop); idempotent."""
    dev = port_name(chassis)
    with contextlib.suppress(OvsError):
        ovs.vsctl("--if-exists", "del-port", bridge, dev)
    _ip(ovs.netns, "link", "del", dev, check=False)
    ns = namespace(chassis)
    if netns_exists(ns):
        run_cmd(["ip", "netns", "del", ns], check=False)


def listen(ns: str, port: int = SERVICE_PORT) -> list[socket.socket]:
    """Listening TCP sockets on every address of namespace NS (IPv4 and IPv6), made
    there by a helper thread; they keep NS whichever thread or namespace serves them."""
    made: list[socket.socket] = []
    error: list[BaseException] = []

    def enter_and_bind() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                s = socket.socket(family, socket.SOCK_STREAM)
                made.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
                s.listen(128)
                s.setblocking(False)
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=enter_and_bind, name=f"metadata-listen-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        for s in made:
            s.close()
        raise OvsError(f"metadata namespace {ns}: cannot listen: {error[0]}")
    return made
