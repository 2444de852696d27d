"""Userspace tunnelling on a chassis: the underlay bridge, the tunnel ports, the TLV map.

The recipe (docs/dataplane.md: tunnels), for ovs-vswitchd's userspace
datapath, with one OVS per chassis network namespace:

- The tunnel IP lives on an OVS bridge (`br-phy`, NORMAL forwarding) that holds the
  underlay NIC: OVS's native tunnelling routes encapsulated packets through the kernel
  routing table of its namespace and the bridge that owns the source address, and
  terminates tunnel packets arriving there. The address goes on the bridge's internal
  (tap) port in OVS's namespace; its MAC is fixed (from the IP) so neighbours never see
  it change.
- br-int gets one flow-based port per encap (remote_ip=flow, key=flow) at a fixed
  OpenFlow number (wyvern.ir.ofports.TUNNEL_OFPORTS), so apps can name it purely.
- Geneve's 8-byte option is mapped to tun_metadata0 on br-int before any flow uses it.
- Userspace tunnels need the remote underlay address in OVS's tunnel neighbour table
  (docs/dataplane.md: tunnel neighbour): `prime()` pings a new remote once from OVS's
  namespace; OVS snoops the ARP exchange on br-phy. Without it, the first packets to a
  chassis would be lost while OVS resolves the neighbour itself.

Everything is idempotent: an agent restarting under traffic changes nothing that exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
import time
from collections.abc import Iterable

from wyvern.ir.ofports import TUNNEL_OFPORTS, TUNNEL_PORT_NAMES
from wyvern.southbound.ovs import OvsError, OvsInstance, run_cmd

LOG = logging.getLogger(__name__)

# class 0xffff (experimental), type 0, 8 bytes: see ir.FIELDS["tun_metadata0"].
TLV_MAP = "{class=0xffff,type=0,len=8}->tun_metadata0"


def underlay_mac(tunnel_ip: str) -> str:
    """A stable, locally administered MAC for the underlay bridge (from its IPv4)."""
    packed = ipaddress.IPv4Address(tunnel_ip).packed
    return "02:57:" + ":".join(f"{b:02x}" for b in packed)


def ensure_underlay(
    ovs: OvsInstance, bridge: str, nic: str, tunnel_ip: str, prefixlen: int, mtu: int = 0
) -> None:
    """`bridge` with `nic` in it and `tunnel_ip/prefixlen` on its internal port, up."""
    ovs.vsctl(
        "--may-exist", "add-br", bridge,
        "--", "set", "Bridge", bridge, "datapath_type=netdev",
        f"other_config:hwaddr={underlay_mac(tunnel_ip)}",
        "--", "--may-exist", "add-port", bridge, nic,
    )  # fmt: skip
    if mtu:
        ovs.vsctl("set", "Interface", bridge, f"mtu_request={mtu}")
    deadline = time.monotonic() + 10
    while run_cmd(ovs.netns_cmd("ip", "link", "show", bridge), check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise OvsError(f"{bridge}: its internal port never appeared")
        time.sleep(0.05)
    addr = f"{tunnel_ip}/{prefixlen}"
    shown = run_cmd(ovs.netns_cmd("ip", "-o", "addr", "show", "dev", bridge)).stdout
    if f" {addr} " not in shown:
        run_cmd(ovs.netns_cmd("ip", "addr", "add", addr, "dev", bridge))
    run_cmd(ovs.netns_cmd("ip", "link", "set", bridge, "up"))
    run_cmd(ovs.netns_cmd("ip", "link", "set", nic, "up"))
    LOG.info("underlay: %s on %s (%s)", addr, bridge, nic)


def ensure_tunnel_ports(ovs: OvsInstance, bridge: str, encaps: Iterable[str]) -> None:
    """One flow-based tunnel port per encap on br-int, and Geneve's option map."""
    for encap in encaps:
        name = TUNNEL_PORT_NAMES[encap]
        ovs.vsctl(
            "--may-exist", "add-port", bridge, name,
            "--", "set", "Interface", name, f"type={encap}",
            f"ofport_request={TUNNEL_OFPORTS[encap]}",
            "options:remote_ip=flow", "options:key=flow",
        )  # fmt: skip
        got = ovs.vsctl("get", "Interface", name, "ofport").strip()
        if got != str(TUNNEL_OFPORTS[encap]):
            raise OvsError(f"{name}: ofport {got}, wanted {TUNNEL_OFPORTS[encap]}")
    if "geneve" in encaps:
        mapped = ovs.ofctl("-O", "OpenFlow14", "dump-tlv-map", bridge)
        if "0xffff" not in mapped or "tun_metadata0" not in mapped:
            ovs.ofctl("-O", "OpenFlow14", "add-tlv-map", bridge, TLV_MAP)
    LOG.info("tunnels: %s on %s", ", ".join(encaps) or "none", bridge)


class NeighbourPrimer:
    """Pings each new remote tunnel address once from OVS's namespace (never waits)."""

    def __init__(self, ovs: OvsInstance, own_ip: str) -> None:
        self.ovs = ovs
        self.own_ip = own_ip
        self.primed: set[str] = set()
        self._running: list[subprocess.Popen[bytes]] = []

    def prime(self, ip: str) -> None:
        self._running = [p for p in self._running if p.poll() is None]
        if not ip or ip == self.own_ip or ip in self.primed:
            return
        self.primed.add(ip)
        try:
            self._running.append(
                subprocess.Popen(
                    self.ovs.netns_cmd("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", ip),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        except OSError as exc:
            LOG.warning("cannot prime the tunnel neighbour %s: %s", ip, exc)

    def close(self) -> None:
        for p in self._running:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._running.clear()


# Dataplane liveness (docs/dataplane.md: BFD): one BFD-only tunnel port per remote chassis
# on a bridge of its own, on a UDP port of its own, so it never takes a data packet.
BFD_BRIDGE = "br-bfd"
BFD_DST_PORTS = {"geneve": 6082, "vxlan": 4799}
BFD_INTERVAL_MS = 500  # detection time: 3 of these without a packet
# Sessions with a gateway chassis at either end: a gateway's failover waits for its BFD
# (docs/dataplane.md: BFD); both ends must ask for it.
BFD_FAST_MS = 100


def bfd_port_name(ip: str) -> str:
    """`wyb-` and the remote IPv4 in hex (a name under 16 bytes, stable per peer)."""
    return "wyb-" + ipaddress.IPv4Address(ip).packed.hex()


class BfdSessions:
    """BFD to each remote chassis's tunnel IP: whether its OVS answers over the underlay,
    whatever the store says. Sessions live in OVSDB, so they outlive the agent (and an
    ovs-vswitchd restart); `ensure` makes them exactly the given peers."""

    def __init__(self, ovs: OvsInstance) -> None:
        self.ovs = ovs
        self.peers: dict[str, str] = {}  # tunnel IP -> encap of its session
        self.fast: frozenset[str] = frozenset()  # tunnel IPs of BFD_FAST_MS sessions
        self._bridge_ready = False
        self._states: dict[str, bool] = {}  # port name -> Forwarding (last bfd/show)
        self._read_at = float("-inf")

    def _ensure_bridge(self) -> None:
        if self._bridge_ready:
            return
        self.ovs.vsctl(
            "--may-exist", "add-br", BFD_BRIDGE,
            "--", "set", "Bridge", BFD_BRIDGE, "datapath_type=netdev", "fail_mode=secure",
        )  # fmt: skip
        self._bridge_ready = True

    def existing(self) -> dict[str, str]:
        """The sessions OVSDB holds: port name -> remote IP."""
        if not self.ovs.bridge_exists(BFD_BRIDGE):
            return {}
        names = self.ovs.vsctl("list-ports", BFD_BRIDGE).split()
        out: dict[str, str] = {}
        for name in names:
            if name.startswith("wyb-"):
                with contextlib.suppress(ValueError):
                    out[name] = str(ipaddress.IPv4Address(bytes.fromhex(name[4:])))
        return out

    def ensure(self, peers: dict[str, str], fast: frozenset[str] = frozenset()) -> None:
        """PEERS: remote tunnel IP -> encap (geneve or vxlan); FAST: those at BFD_FAST_MS
        (the others at BFD_INTERVAL_MS). Adds, retunes and removes sessions."""
        fast = frozenset(ip for ip in fast if ip in peers)
        if peers == self.peers and fast == self.fast:
            return
        have = self.existing()
        if not peers and not have:
            self.peers = {}
            return  # (no bridge for a chassis alone)
        self._ensure_bridge()
        args: list[str] = []
        for name, ip in have.items():
            if ip not in peers:
                args += ["--", "--if-exists", "del-port", BFD_BRIDGE, name]
        for ip, encap in peers.items():
            name = bfd_port_name(ip)
            retune = (ip in fast) != (ip in self.fast)
            if name in have and self.peers.get(ip, encap) == encap and not retune:
                continue
            ms = BFD_FAST_MS if ip in fast else BFD_INTERVAL_MS
            args += [
                "--", "--may-exist", "add-port", BFD_BRIDGE, name,
                "--", "set", "Interface", name, f"type={encap}",
                f"options:remote_ip={ip}", f"options:dst_port={BFD_DST_PORTS[encap]}",
                "bfd:enable=true", f"bfd:min_rx={ms}", f"bfd:min_tx={ms}",
            ]  # fmt: skip
        if args:
            self.ovs.vsctl(*args[1:])
        self.peers = dict(peers)
        self.fast = fast

    def forwarding(self, ip: str, max_age: float = 0.1) -> bool | None:
        """Whether BFD to IP says the path forwards; None: no session to it. One
        `bfd/show` answers for every session (read again after MAX_AGE seconds), so a
        hundred chassis losing their leases at once cost one call, not a hundred."""
        if ip not in self.peers:
            return None
        now = time.monotonic()
        if now - self._read_at > max_age:
            self._states = self._read_all()
            self._read_at = now
        return self._states.get(bfd_port_name(ip))

    def _read_all(self) -> dict[str, bool]:
        """Port name -> Forwarding, from `ovs-appctl bfd/show` (`---- <port> ----` blocks)."""
        try:
            shown = self.ovs.appctl("bfd/show")
        except OvsError:
            return {}
        states: dict[str, bool] = {}
        name = ""
        for line in shown.splitlines():
            line = line.strip()
            if line.startswith("----") and line.endswith("----"):
                name = line.strip("- ")
            elif line.startswith("Forwarding:") and name:
                states[name] = line.split(":", 1)[1].strip() == "true"
        return states

    def remove_all(self) -> None:
        """A clean stop: the others' sessions to us go down (they drop us)."""
        with contextlib.suppress(OvsError):
            if self.ovs.bridge_exists(BFD_BRIDGE):
                self.ovs.vsctl("--if-exists", "del-br", BFD_BRIDGE)
        self.peers = {}
        self.fast = frozenset()
        self._bridge_ready = False
