"""The metering counters' record, between the agents that write them and the API and
CLI that read them: `/wyvern/status/metering/<chassis>` holds, per label, router and
direction, [packets, IP bytes] counted on that chassis (wyvern.controller.metering), plus
the flow readings they were summed from."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson

LOG = logging.getLogger(__name__)

Totals = dict[str, dict[str, dict[str, list[int]]]]  # label -> router -> direction -> [p, b]


def sum_reports(reports: Iterable[tuple[str, bytes]]) -> Totals:
    """The chassis's reports ((key, value) under keys.STATUS_METERING) summed: label ->
    router -> direction -> [packets, bytes]."""
    out: Totals = {}
    for key, value in reports:
        try:
            labels = orjson.loads(value)["labels"]
            for lb, routers in labels.items():
                for r, dirs in routers.items():
                    for d, (p, b) in dirs.items():
                        counter = out.setdefault(lb, {}).setdefault(r, {}).setdefault(d, [0, 0])
                        counter[0] += int(p)
                        counter[1] += int(b)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            LOG.warning("ignoring unreadable metering report %s", key)
    return out
