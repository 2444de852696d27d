"""Meters on br-int (per-port punt meters, QoS meters): configured here, named by flows.

The punt_meter stage (wyvern/apps/punts.py) sends each local port's punts through meter
<ofport> before they become packet-ins, so a VM flooding DHCP, ND or TTL-1 packets is
held to its own rate in the datapath: it cannot fill the switch's packet-in queue (which
OVS shares between all ports and trims at 100 messages) nor the agent's CPU. A meter
must exist before a flow names it (OVS refuses the flow), and deleting one deletes the
flows that name it, so the agent adds the meters of new local ports before an install
and deletes those of gone ports after it. Meter changes go as OpenFlow METER_MODs on one
connection to the bridge's management socket, all followed by one barrier (an
`ovs-ofctl add-meter` per port would cost a process per port: seconds for a chassis
with a thousand ports); only reading the meters back uses ovs-ofctl.

QoS meters (wyvern/apps/qos.py) are kept the same way, with their rates: a changed rule
is a METER_MOD modify, which keeps the flows naming the meter. wyvern/ir/meters.py
declares each user's id space.

Meter statistics are the per-port view of punts for an operator: `wyvern punts`, or
`ovs-ofctl -O OpenFlow15 meter-stats br-int` (meter N is the port on ofport N; its
packet_in_count is what the port punted, band 0's packet_count what the meter dropped).
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wyvern.ir.meters import MeterSpec
from wyvern.southbound import openflow as ofp
from wyvern.southbound.ovs import OvsError, OvsInstance

PROTOCOL = "OpenFlow15"
_METER = re.compile(r"^meter[=:](\d+)\b")
_STATS = re.compile(r"^meter:(\d+) .*packet_in_count:(\d+)")
_BAND = re.compile(r"^\s*0: packet_count:(\d+)")


OFPT_METER_MOD = 29
OFPMC_ADD, OFPMC_MODIFY, OFPMC_DELETE = 0, 1, 2
OFPMF_KBPS, OFPMF_PKTPS, OFPMF_BURST, OFPMF_STATS = 1, 2, 4, 8
OFPMBT_DROP = 1
OFPET_METER_MOD_FAILED = 12
OFPMMFC_METER_EXISTS, OFPMMFC_UNKNOWN_METER = 1, 7
_METER_MOD = struct.Struct("!HHI")  # command, flags, meter id
_DROP_BAND = struct.Struct("!HHII4x")  # type, length, rate, burst size
_ERROR = struct.Struct("!HH")  # type, code


def meter_mod(xid: int, command: int, meter_id: int, spec: MeterSpec | None = None) -> bytes:
    """One METER_MOD: add or modify (one drop band: SPEC's rate and burst, in kbit/s and
    kbit or packets/s and packets) or delete."""
    if command == OFPMC_DELETE or spec is None:
        return ofp.message(OFPT_METER_MOD, xid, _METER_MOD.pack(OFPMC_DELETE, 0, meter_id))
    unit = OFPMF_KBPS if spec.unit == "kbps" else OFPMF_PKTPS
    flags = unit | OFPMF_BURST | OFPMF_STATS
    band = _DROP_BAND.pack(OFPMBT_DROP, _DROP_BAND.size, spec.rate, spec.burst)
    return ofp.message(OFPT_METER_MOD, xid, _METER_MOD.pack(command, flags, meter_id) + band)


def send_meter_mods(ovs: OvsInstance, bridge: str, mods: list[bytes], timeout: float = 10) -> None:
    """Send MODS (xids 2..) and a barrier on one connection; raise OvsError on a refusal
    (adding a meter that exists or deleting one that does not is no refusal)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(ovs.mgmt_path(bridge)))
            sock.sendall(ofp.hello(1))
            barrier = len(mods) + 2
            sock.sendall(b"".join(mods) + ofp.message(ofp.OFPT_BARRIER_REQUEST, barrier))
            buf = b""
            while True:
                while len(buf) < ofp.HEADER.size or len(buf) < _length(buf):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise OvsError(f"{bridge}: connection closed before the barrier")
                    buf += chunk
                size = _length(buf)
                _, msg_type, _, xid = ofp.HEADER.unpack_from(buf)
                body, buf = buf[ofp.HEADER.size : size], buf[size:]
                if msg_type == ofp.OFPT_ERROR:
                    kind, code = _ERROR.unpack_from(body)
                    benign = (OFPMMFC_METER_EXISTS, OFPMMFC_UNKNOWN_METER)
                    if kind != OFPET_METER_MOD_FAILED or code not in benign:
                        raise OvsError(f"{bridge}: meter mod {xid} refused ({kind}, {code})")
                elif msg_type == ofp.OFPT_BARRIER_REPLY and xid == barrier:
                    return
        except OSError as exc:
            raise OvsError(f"{bridge}: meters: {exc}") from exc


def _length(buf: bytes) -> int:
    return int(ofp.HEADER.unpack_from(buf)[2]) if len(buf) >= ofp.HEADER.size else 1 << 30


@dataclass(frozen=True, slots=True)
class MeterStats:
    meter_id: int
    punted: int  # packets that reached the meter (the port's punts)
    dropped: int  # of those, dropped by the meter over its rate


class Meters:
    """The bridge's meters, kept equal to a wanted {meter id: MeterSpec}."""

    def __init__(self, ovs: OvsInstance, bridge: str) -> None:
        self.ovs = ovs
        self.bridge = bridge
        # id -> its band as we set it (None: found on the switch, band unknown);
        # None: read the switch first
        self._have: dict[int, MeterSpec | None] | None = None

    def forget(self) -> None:
        """The switch may have lost or changed meters (a failed install, a restart)."""
        self._have = None

    def _present(self) -> dict[int, MeterSpec | None]:
        if self._have is None:
            text = self.ovs.ofctl("-O", PROTOCOL, "dump-meters", self.bridge)
            found = (_METER.match(line) for line in text.splitlines())
            self._have = {int(m.group(1)): None for m in found if m}
        return self._have

    def add(self, wanted: Mapping[int, MeterSpec]) -> int:
        """Add the wanted meters the bridge lacks and set those whose band differs (before
        flows name them); returns how many were added or changed."""
        have = self._present()
        todo = sorted((m, s) for m, s in wanted.items() if m not in have or have[m] != s)
        mods = [
            meter_mod(i + 2, OFPMC_MODIFY if m in have else OFPMC_ADD, m, s)
            for i, (m, s) in enumerate(todo)
        ]
        self._send(mods)
        have.update(todo)
        return len(todo)

    def remove_others(self, wanted: Iterable[int]) -> int:
        """Delete the meters not wanted (after the flows naming them are gone)."""
        have = self._present()
        gone = sorted(set(have) - set(wanted))
        self._send([meter_mod(i + 2, OFPMC_DELETE, m) for i, m in enumerate(gone)])
        for m in gone:
            del have[m]
        return len(gone)

    def _send(self, mods: list[bytes]) -> None:
        if not mods:
            return
        try:
            send_meter_mods(self.ovs, self.bridge, mods)
        except OvsError:
            self.forget()
            raise


def meter_stats(ovs: OvsInstance, bridge: str) -> dict[int, MeterStats]:
    """Every meter's packets in and packets dropped (band 0), by meter id."""
    text = ovs.ofctl("-O", PROTOCOL, "meter-stats", bridge)
    out: dict[int, MeterStats] = {}
    current: tuple[int, int] | None = None
    for line in text.splitlines():
        if m := _STATS.match(line):
            current = (int(m.group(1)), int(m.group(2)))
            out[current[0]] = MeterStats(current[0], current[1], 0)
        elif current is not None and (b := _BAND.match(line)):
            out[current[0]] = MeterStats(current[0], current[1], int(b.group(1)))
    return out


def port_punts(ovs: OvsInstance, bridge: str) -> list[tuple[str, str, int, MeterStats]]:
    """(port id, interface, ofport, its meter's stats) per interface with a meter."""
    stats = meter_stats(ovs, bridge)
    listing = ovs.vsctl("--format=json", "--columns=name,ofport,external_ids", "list", "Interface")
    rows = []
    for name, ofport, ext in json.loads(listing)["data"]:
        if not isinstance(ofport, int) or ofport not in stats:
            continue
        ids = dict(ext[1]) if isinstance(ext, list) and ext[0] == "map" else {}
        rows.append((str(ids.get("iface-id", "")), str(name), ofport, stats[ofport]))
    return sorted(rows, key=lambda r: r[2])
