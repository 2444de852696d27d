"""Metering counters: the statistics of the metering app's counting flows, summed per
label, router and direction, reported to the store for the API (`/metrics`) and
`wyvern meters`.

Every `metering_interval` seconds the agent dumps the meter_count stage (`ovs-ofctl
dump-flows`, with statistics) and hands the lines to `MeterCounters.update`. A line is
one (router, label rule) flow of wyvern.apps.metering: its cookie is its label's entry
cookie, its match names the router (router_key) and the label's slot (meter_slot: key *
2 + direction), and excluded rules sit at P_EXCLUDED and above (never counted).

Counters never go down. Each flow's reading is kept with the time the flow was created
(now - its duration): the next reading of the same flow (same cookie, priority and
match, same creation time) adds its difference; a flow created anew (reinstalled, or
ovs-vswitchd restarted) adds all it shows. The report holds those readings, so an agent
that restarts carries on from them: the flows, untouched by its restart (the installer
sends nothing when nothing changed), add only what they counted since. What a flow
counted between the last reading and its removal is lost (at most one interval).

Bytes are IP bytes, as Neutron's iptables counters: the datapath counts the frame as it
entered the pass (an untagged Ethernet frame by then: 14 bytes a packet are taken off).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from wyvern.apps.metering import P_EXCLUDED, direction_of
from wyvern.ir import registers
from wyvern.ir.cookies import entry_cookie
from wyvern.model.keys import metering_status_key
from wyvern.model.metering import Totals
from wyvern.model.view import LocalView
from wyvern.nb.store import Put, Store

LOG = logging.getLogger(__name__)

ETH_HEADER = 14
# A flow whose creation time moved by more than this is a new flow (durations are read
# with millisecond precision, a few ms apart from the clock reading).
SAME_FLOW_SLACK = 1.0

_STAT = re.compile(r"\b(cookie|duration|n_packets|n_bytes|priority)=([0-9a-fx.]+)s?")


@dataclass(frozen=True, slots=True)
class Reading:
    """One counting flow as dumped."""

    key: str  # cookie, priority and match: the flow's identity on the switch
    cookie: int
    priority: int
    router_key: int
    slot: int
    age: float  # seconds since it was installed (its duration)
    packets: int
    bytes: int


def _register_value(match: str, name: str) -> int | None:
    reg = registers.register(name)
    m = re.search(rf"\b{reg.field}=(0x[0-9a-f]+|\d+)(?:/(0x[0-9a-f]+|\d+))?", match)
    if m is None:
        return None
    value = int(m.group(1), 0)
    mask = int(m.group(2), 0) if m.group(2) else (1 << reg.field_bits) - 1
    return (value & mask) >> reg.start & ((1 << reg.width) - 1)


def parse_dump(text: str) -> list[Reading]:
    """The counting flows of `ovs-ofctl dump-flows <bridge> table=<meter_count>` output
    (statistics on): the stage's miss and excluded rules are left out."""
    out = []
    for line in text.splitlines():
        head, sep, _ = line.strip().partition(" actions=")
        if not sep or "priority=" not in head:
            continue
        stats = dict(_STAT.findall(head))
        priority = int(stats.get("priority", "0"))
        if priority == 0 or priority >= P_EXCLUDED:
            continue
        match = head.split(f"priority={priority}", 1)[1].lstrip(",")
        router_key = _register_value(match, "router_key")
        slot = _register_value(match, "meter_slot")
        if router_key is None or slot is None:
            continue
        cookie = int(stats.get("cookie", "0"), 16)
        out.append(
            Reading(
                key=f"{cookie:x}/{priority}/{match}",
                cookie=cookie,
                priority=priority,
                router_key=router_key,
                slot=slot,
                age=float(stats.get("duration", "0").rstrip("s")),
                packets=int(stats.get("n_packets", "0")),
                bytes=int(stats.get("n_bytes", "0")),
            )
        )
    return out


class MeterCounters:
    """This chassis's counters: what it reports under metering_status_key(chassis)."""

    def __init__(self, store: Store, chassis: str) -> None:
        self.store = store
        self.chassis = chassis
        self.totals: Totals = {}
        self.flows: dict[str, list[float]] = {}  # key -> [created, packets, bytes]
        self._loaded = False
        self._dirty = False

    def load(self) -> None:
        """Carry on from the last report (an agent restart)."""
        self._loaded = True
        kv = self.store.get(metering_status_key(self.chassis))
        if kv is None:
            return
        try:
            obj: Any = orjson.loads(kv.value)
            totals, flows = obj["labels"], obj["flows"]
            self.totals = {
                str(lb): {
                    str(r): {str(d): [int(v[0]), int(v[1])] for d, v in dirs.items()}
                    for r, dirs in routers.items()
                }
                for lb, routers in totals.items()
            }
            self.flows = {str(k): [float(v[0]), int(v[1]), int(v[2])] for k, v in flows.items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            LOG.warning("chassis %s: unreadable metering report; counting afresh", self.chassis)

    def update(
        self, view: LocalView, readings: Iterable[Reading], now: float | None = None
    ) -> bool:
        """Add what the flows counted since their last reading; True if anything moved."""
        if not self._loaded:
            self.load()
        now = time.time() if now is None else now
        labels = {
            entry_cookie("metering", ("metering_label", lid)): lid for lid in view.metering_labels
        }
        routers = {r.key: rid for rid, r in view.routers.items()}
        seen: dict[str, list[float]] = {}
        changed = False
        for rd in readings:
            label, router = labels.get(rd.cookie), routers.get(rd.router_key)
            if label is None or router is None:
                continue  # (a flow of a label or router this view no longer has)
            created = now - rd.age
            last = self.flows.get(rd.key)
            same = (
                last is not None
                and abs(last[0] - created) <= SAME_FLOW_SLACK
                and rd.packets >= last[1]
                and rd.bytes >= last[2]
            )
            if same:
                assert last is not None
                dp, db = rd.packets - int(last[1]), rd.bytes - int(last[2])
                created = last[0]
            else:
                dp, db = rd.packets, rd.bytes
            seen[rd.key] = [created, rd.packets, rd.bytes]
            if dp or db:
                counter = (
                    self.totals.setdefault(label, {})
                    .setdefault(router, {})
                    .setdefault(direction_of(rd.slot), [0, 0])
                )
                counter[0] += dp
                counter[1] += max(0, db - ETH_HEADER * dp)
                changed = True
        gone_labels = [lb for lb in self.totals if lb not in view.metering_labels]
        for lb in gone_labels:
            del self.totals[lb]
        if seen != self.flows or gone_labels:
            self._dirty = True
        self.flows = seen
        self._dirty = self._dirty or changed
        return changed

    def report(self) -> bool:
        """Write the report if it changed since the last write; True if written."""
        if not self._dirty:
            return False
        value = {"chassis": self.chassis, "labels": self.totals, "flows": self.flows}
        self.store.txn([], [Put(metering_status_key(self.chassis), orjson.dumps(value))])
        self._dirty = False
        return True
