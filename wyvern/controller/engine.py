"""The incremental engine: the desired flow table, kept per (app, owner).

A change in the view asks every app which owners it affects, then asks for each of those
owners' complete flow list and replaces just that entry. `full(view)` recomputes the whole
table from scratch; the hypothesis test in tests/controller/test_engine.py checks that any
sequence of incremental `apply` calls ends where a full recompute does (OVN's I-P engine
with its recompute safety net). Rendering to `ovs-ofctl` text is cached per entry, so a
change re-renders only the owners it touched.

Pure and synchronous: no I/O. The agent computes here first, then hands `render()` to the
FlowInstaller (never with a bundle open: DATAPLANE.md trap 9).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from wyvern.apps.base import App, Owner
from wyvern.controller.view import Change, LocalView
from wyvern.southbound.ir import Flow
from wyvern.southbound.render import render_flow

LOG = logging.getLogger(__name__)

EntryKey = tuple[str, Owner]  # (app name, owner)


class Engine:
    def __init__(self, apps: Sequence[App]) -> None:
        self.apps = list(apps)
        self.desired: dict[EntryKey, list[Flow]] = {}
        self._rendered: dict[EntryKey, list[str]] = {}
        self.recomputes = 0
        self.incremental_updates = 0

    def _set(self, key: EntryKey, flows: list[Flow]) -> bool:
        """Replace one entry; returns True if it changed."""
        if not flows:
            if key in self.desired:
                del self.desired[key]
                self._rendered.pop(key, None)
                return True
            return False
        if self.desired.get(key) == flows:
            return False
        self.desired[key] = list(flows)
        self._rendered.pop(key, None)
        return True

    def full(self, view: LocalView) -> None:
        """Recompute the whole desired table from the view."""
        fresh = compute_full(self.apps, view)
        for key in [k for k in self.desired if k not in fresh]:
            self._set(key, [])
        for key, flows in fresh.items():
            self._set(key, flows)
        self.recomputes += 1

    def apply(self, view: LocalView, change: Change) -> int:
        """Update the entries a change affects (the view already holds it); returns how
        many entries changed."""
        changed = 0
        for app in self.apps:
            for owner in set(app.affected(view, change)):
                if self._set((app.name, owner), app.flows(view, owner)):
                    changed += 1
        self.incremental_updates += 1
        return changed

    def apply_all(self, view: LocalView, changes: Iterable[Change]) -> int:
        return sum(self.apply(view, c) for c in changes)

    def render(self) -> list[str]:
        """The whole desired set as ovs-ofctl flow lines, for FlowInstaller.sync()."""
        lines: list[str] = []
        for key, flows in self.desired.items():
            text = self._rendered.get(key)
            if text is None:
                text = [render_flow(f) for f in flows]
                self._rendered[key] = text
            lines.extend(text)
        return lines

    def flow_count(self) -> int:
        return sum(len(f) for f in self.desired.values())


def compute_full(apps: Sequence[App], view: LocalView) -> dict[EntryKey, list[Flow]]:
    """Every app's flows for every owner it names, plus its global (stage default) flows."""
    out: dict[EntryKey, list[Flow]] = {}
    for app in apps:
        glob = app.global_flows()
        if glob:
            out[(app.name, ("app", app.name))] = list(glob)
        for owner in app.owners(view):
            flows = app.flows(view, owner)
            if flows:
                out[(app.name, owner)] = flows
    return out


def default_apps() -> list[App]:
    """One instance of every app wyvern.apps lists in ALL_APPS."""
    from wyvern import apps as apps_pkg

    listed: list[type[App]] = list(getattr(apps_pkg, "ALL_APPS", []))
    return [cls() for cls in listed]
