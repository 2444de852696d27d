"""The agent's metering counters: flow statistics parsed, summed per label, router and
direction, carried across an agent restart, re-based when a flow is new, never lower."""

from __future__ import annotations

import orjson

from wyvern.apps.metering import P_COUNTED, P_EXCLUDED, slot
from wyvern.controller.metering import MeterCounters, parse_dump
from wyvern.ir.cookies import entry_cookie
from wyvern.model.keys import STATUS_METERING, metering_status_key
from wyvern.model.metering import sum_reports
from wyvern.model.view import LocalView, MeteringLabel, Router
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Put

COOKIE = entry_cookie("metering", ("metering_label", "L1"))


def line(*, age: float, packets: int, nbytes: int, prio: int = P_COUNTED + 24,
         router: int = 7, direction: str = "egress", net: str = "10.0.0.0/24") -> str:  # fmt: skip
    s = slot(3, direction) << 16
    return (
        f" cookie={COOKIE:#x}, duration={age:.3f}s, table=26, n_packets={packets}, "
        f"n_bytes={nbytes}, idle_age=0, priority={prio},ip,reg8={s:#x}/0xffff0000,"
        f"reg12={router:#x}/0xffffff,nw_src={net} actions=drop"
    )


def view() -> LocalView:
    v = LocalView(chassis_name="hv1")
    v.apply("router", "r", Router.from_obj({"id": "r", "_key": 7, "project_id": "p1"}))
    label = {"id": "L1", "_key": 3, "project_id": "p1", "_rules": {}}
    v.apply("metering_label", "L1", MeteringLabel.from_obj(label))
    return v


def test_parse_keeps_counting_flows_only() -> None:
    text = "\n".join([
        "OFPST_FLOW reply (OF1.5) (xid=0x2):",
        line(age=2.5, packets=3, nbytes=3 * 98),
        line(age=2.5, packets=9, nbytes=900, prio=P_EXCLUDED + 32),  # excluded: never counted
        " cookie=0x100000000000000, duration=9s, table=26, n_packets=4, n_bytes=400, "
        "priority=0 actions=drop",  # the stage's miss
        line(age=1.0, packets=1, nbytes=98, direction="ingress", net="10.0.1.0/24"),
    ])  # fmt: skip
    got = parse_dump(text)
    assert [(r.router_key, r.slot, r.packets, r.bytes, r.age) for r in got] == [
        (7, slot(3, "egress"), 3, 294, 2.5),
        (7, slot(3, "ingress"), 1, 98, 1.0),
    ]
    assert all(r.cookie == COOKIE for r in got)


def test_counters_add_deltas_survive_restarts_and_never_go_down() -> None:
    store = MemoryStore()
    v = view()
    c = MeterCounters(store, "hv1")
    t0 = 1000.0
    c.update(v, parse_dump(line(age=5, packets=2, nbytes=2 * 114)), now=t0)
    assert c.totals == {"L1": {"r": {"egress": [2, 200]}}}  # IP bytes: 14 a frame off
    assert c.report()
    assert not c.report()  # (nothing moved: nothing written)
    c.update(v, parse_dump(line(age=15, packets=5, nbytes=5 * 114)), now=t0 + 10)
    assert c.totals["L1"]["r"]["egress"] == [5, 500]
    c.report()
    # The agent restarts; the flow lived on in OVS with its counts: only what is new adds.
    c2 = MeterCounters(store, "hv1")
    c2.update(v, parse_dump(line(age=25, packets=6, nbytes=6 * 114)), now=t0 + 20)
    assert c2.totals["L1"]["r"]["egress"] == [6, 600]
    c2.report()
    # ovs-vswitchd restarted: the flow is new (a later creation time), from 0 again.
    c2.update(v, parse_dump(line(age=2, packets=1, nbytes=114)), now=t0 + 30)
    assert c2.totals["L1"]["r"]["egress"] == [7, 700]
    # A flow reinstalled between two readings with more than it had: still a new flow.
    c2.update(v, parse_dump(line(age=1, packets=9, nbytes=9 * 114)), now=t0 + 40)
    assert c2.totals["L1"]["r"]["egress"] == [16, 1600]
    c2.report()
    # What the API sums from the store
    reports = [(kv.key, kv.value) for kv in store.list(STATUS_METERING).items]
    assert sum_reports(reports) == {"L1": {"r": {"egress": [16, 1600]}}}
    # Two chassis add up
    other = {"chassis": "hv2", "labels": {"L1": {"r": {"egress": [4, 400], "ingress": [1, 84]}}}}
    store.txn([], [Put(metering_status_key("hv2"), orjson.dumps(other))])
    reports = [(kv.key, kv.value) for kv in store.list(STATUS_METERING).items]
    assert sum_reports(reports) == {"L1": {"r": {"egress": [20, 2000], "ingress": [1, 84]}}}


def test_a_deleted_label_leaves_the_report() -> None:
    store = MemoryStore()
    v = view()
    c = MeterCounters(store, "hv1")
    c.update(v, parse_dump(line(age=5, packets=2, nbytes=228)), now=10.0)
    assert c.report()
    v.apply("metering_label", "L1", None)
    c.update(v, [], now=20.0)
    assert c.report()
    assert c.totals == {}
    kv = store.get(metering_status_key("hv1"))
    assert kv is not None and orjson.loads(kv.value)["labels"] == {}
