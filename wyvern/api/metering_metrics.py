"""`GET /metrics`: the metering labels' counters in Prometheus's exposition format.

The agents report what they count per chassis (wyvern.controller.metering); this sums
the chassis and labels each sample with the label, the router, the router's project and
the direction. A label counts from its creation: every (label, router it meters,
direction of one of its rules) has a sample, 0 until traffic passes.

It is served by the API, behind the API's authentication (noauth only on loopback, a
token otherwise; Keystone's middleware guards /metrics as /v2.0), and shows only the
labels the caller may read (`get_metering_label`: an admin all of them, a project's
reader its own). The agents have no listening socket (wyvern.controller.metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from wyvern.api.context import RequestContext
from wyvern.api.resource import ApiState
from wyvern.model.keys import STATUS_METERING
from wyvern.model.metering import sum_reports

PATH = "/metrics"
LABELS = ["label_id", "router_id", "project_id", "direction"]


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def metered(label: dict[str, Any], router: dict[str, Any]) -> bool:
    """What wyvern.apps.metering counts: the label's project's routers (every router's,
    shared), up, with a gateway."""
    if not router.get("admin_state_up", True) or not router.get("external_gateway_info"):
        return False
    return bool(label.get("shared")) or label.get("project_id") == router.get("project_id")


def samples(state: ApiState, ctx: RequestContext) -> list[tuple[list[str], int, int]]:
    """([label, router, project, direction], packets, bytes) for what the caller may read."""
    res = state.resources["metering_label"]
    labels = {o["id"]: o for o in res.all_objects() if res.readable(ctx, o)}
    if not labels:
        return []
    routers = {o["id"]: o for o in state.repo.objects("routers")}
    store = state.repo.store
    totals = sum_reports((kv.key, kv.value) for kv in store.list(STATUS_METERING).items)
    out = []
    for lid, label in sorted(labels.items()):
        directions = sorted({r["direction"] for r in (label.get("_rules") or {}).values()})
        counted = totals.get(lid, {})
        for rid, router in sorted(routers.items()):
            if not metered(label, router) and rid not in counted:
                continue
            for d in sorted(set(directions) | set(counted.get(rid, {}))):
                packets, nbytes = counted.get(rid, {}).get(d, [0, 0])
                out.append(([lid, rid, str(router.get("project_id") or ""), d], packets, nbytes))
    return out


def render(state: ApiState, ctx: RequestContext) -> bytes:
    packets = CounterMetricFamily(
        "wyvern_metering_label_packets",
        "Packets through router gateways counted by a metering label, all chassis summed",
        labels=LABELS,
    )
    nbytes = CounterMetricFamily(
        "wyvern_metering_label_bytes",
        "IP bytes through router gateways counted by a metering label, all chassis summed",
        labels=LABELS,
    )
    for names, p, b in samples(state, ctx):
        packets.add_metric(names, p)
        nbytes.add_metric(names, b)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([packets, nbytes]))
    return generate_latest(registry)
