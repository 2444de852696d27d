"""OpenFlow meter ids: every id space on br-int, declared here and nowhere else.

Meters are per bridge and named by flows (`ir.Meter(id)`); the southbound configures
them (wyvern/southbound/meters.py). Each user gets its own range so ids can never clash:

    1 .. 0xfeff                  punt meter of the local port on ofport N: N (apps/punts.py)
    QOS_BASE + kind << 16 + N    QoS meter of one kind for the local port on ofport N
                                 (apps/qos.py); N < 0xff00, as every ofport of a VIF
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_OFPORT = 0xFEFF
QOS_BASE = 0x100000
QosMeterKind = Literal["bw_from_vm", "bw_to_vm", "pps_from_vm", "pps_to_vm"]
_QOS_KINDS: dict[str, int] = {"bw_from_vm": 0, "bw_to_vm": 1, "pps_from_vm": 2, "pps_to_vm": 3}


def punt_meter(ofport: int) -> int:
    """The punt meter of a local port: its ofport (unique per bridge, never 0)."""
    if not 0 < ofport <= MAX_OFPORT:
        raise ValueError(f"ofport {ofport} has no punt meter")
    return ofport


def qos_meter(kind: QosMeterKind, ofport: int) -> int:
    """The QoS meter of one kind (bandwidth or packet rate, each direction) of a port."""
    if not 0 < ofport <= MAX_OFPORT:
        raise ValueError(f"ofport {ofport} has no QoS meter")
    return QOS_BASE + (_QOS_KINDS[kind] << 16) + ofport


def is_punt_meter(meter_id: int) -> bool:
    return 0 < meter_id <= MAX_OFPORT


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """One meter's single drop band: RATE kbit/s (burst in kbit) or packets/s (burst in
    packets), as OpenFlow's METER_MOD flags (OFPMF_KBPS or OFPMF_PKTPS) say."""

    unit: Literal["kbps", "pktps"]
    rate: int
    burst: int
