"""The incremental engine: the desired flow table, kept per (app, owner).

A change in the view asks every app which owners it affects, then asks for each of those
owners' complete flow list and replaces just that entry. `full(view)` recomputes the whole
table from scratch; the hypothesis test in tests/controller/test_engine.py checks that any
sequence of incremental `apply` calls ends where a full recompute does (OVN's I-P engine
with its recompute safety net). Rendering to `ovs-ofctl` text is cached per entry (and
per unchanged Flow object within an entry), so a change re-renders only what it touched;
`render()` also returns the lines added and removed since the previous render, which
the FlowInstaller sends without looking at the rest (tests/controller/test_fastpaths.py
checks them against the set difference).

Pure and synchronous: no I/O. The agent computes here first, then hands `render()` to the
FlowInstaller (never with a bundle open: docs/dataplane.md: bundle idle timeout).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow
from wyvern.ir.render import render_flow
from wyvern.model.view import Change, LocalView
from wyvern.southbound.flowtext import RenderedLines

LOG = logging.getLogger(__name__)

EntryKey = tuple[str, Owner]  # (app name, owner)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC pass inside: a change's compute, render and install stay free of
    collector pauses (a gen-1 pass costs ~10 ms at 10k ports); the collector catches up
    on the first allocations after, while the agent writes statuses or waits."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Engine:
    def __init__(self, apps: Sequence[App]) -> None:
        self.apps = list(apps)
        self.desired: dict[EntryKey, list[Flow]] = {}
        # The text of each entry as of the last render(), how many entries render each
        # line, and the entries changed since: render() re-renders only those and says
        # which lines came and went (RenderedLines.added/removed).
        self._rendered: dict[EntryKey, list[str]] = {}
        self._rendered_from: dict[EntryKey, list[Flow]] = {}  # what _rendered was made of
        self._line_count: dict[str, int] = {}
        self._dirty: set[EntryKey] = set()
        self._token = object()
        self._render_lock = threading.Lock()
        self._generation = 0
        self.recomputes = 0
        self.incremental_updates = 0

    def _set(self, key: EntryKey, flows: list[Flow]) -> bool:
        """Replace one entry; returns True if it changed."""
        if not flows:
            if key in self.desired:
                del self.desired[key]
                self._dirty.add(key)
                return True
            return False
        if self.desired.get(key) == flows:
            return False
        self.desired[key] = list(flows)
        self._dirty.add(key)
        return True

    def full(self, view: LocalView) -> None:
        """Recompute the whole desired table from the view."""
        # Millions of long-lived objects and no garbage cycles to speak of: the cyclic
        # GC would walk the growing heap again and again (~20% of the time at 10k ports).
        enabled = gc.isenabled()
        gc.disable()
        try:
            fresh = compute_full(self.apps, view)
            # (still without the GC: storing the new entries allocates again, and a
            # collection now would walk every flow just made, ~0.5 s at 10k ports)
            for key in [k for k in self.desired if k not in fresh]:
                self._set(key, [])
            for key, flows in fresh.items():
                self._set(key, flows)
        finally:
            if enabled:
                gc.enable()
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
        """apply() for a batch the view already holds: each affected owner is computed
        once, however many of the changes name it (a port and its binding, say)."""
        changes = list(changes)
        changed = 0
        with gc_paused():
            changed = self._apply_all(view, changes)
        self.incremental_updates += len(changes)
        return changed

    def _apply_all(self, view: LocalView, changes: list[Change]) -> int:
        changed = 0
        for app in self.apps:
            owners: set[Owner] = set()
            for change in changes:
                owners.update(app.affected(view, change))
            for owner in owners:
                if self._set((app.name, owner), app.flows(view, owner)):
                    changed += 1
        return changed

    def render(self) -> RenderedLines:
        """The whole desired set as ovs-ofctl flow lines, for FlowInstaller.sync(); with
        the lines added and removed since the previous render (for a delta sync)."""
        with self._render_lock:  # a second reader (a test, a tool) must not interleave
            enabled = gc.isenabled()
            gc.disable()  # as in full(): nothing cyclic is made here, only kept
            try:
                return self._render()
            finally:
                if enabled:
                    gc.enable()

    def _render(self) -> RenderedLines:
        count = self._line_count
        added: dict[str, None] = {}
        removed: dict[str, None] = {}
        # Render first, change nothing until every dirty entry rendered (no half state).
        fresh: list[tuple[EntryKey, list[Flow] | None, list[str]]] = []
        for key in self._dirty:
            flows = self.desired.get(key)
            old_flows = self._rendered_from.get(key)
            if not flows:
                text = []
            elif old_flows:  # most of a big entry is often unchanged: reuse that text
                # (by object identity: apps that memoise hand back the same Flow objects;
                # old_flows stays referenced here, so no id is reused meanwhile)
                old_text = self._rendered[key]
                known = {id(f): t for f, t in zip(old_flows, old_text, strict=True)}
                maybe = [known.get(id(f)) for f in flows]
                missing = [i for i, t in enumerate(maybe) if t is None]
                # Apps that build fresh objects: equal flows render equally, and hashing
                # a flow is cheaper than rendering it (not worth it for a few misses).
                by_value = (
                    dict(zip(old_flows, old_text, strict=True))
                    if len(missing) * 4 > len(old_flows)
                    else {}
                )
                for i in missing:
                    maybe[i] = by_value.get(flows[i]) or render_flow(flows[i])
                text = [t for t in maybe if t is not None]
            else:
                text = [render_flow(f) for f in flows]
            fresh.append((key, flows, text))
        for key, flows, text in fresh:
            self._rendered_from.pop(key, None)
            for line in self._rendered.pop(key, ()):
                n = count[line] - 1
                if n:
                    count[line] = n
                else:
                    del count[line]
                    if added.pop(line, 0) is None:
                        continue  # came and went since the last render
                    removed[line] = None
            for line in text:
                n = count.get(line, 0)
                count[line] = n + 1
                if not n and removed.pop(line, 0) is not None:
                    added[line] = None
            if flows:
                self._rendered[key] = text
                self._rendered_from[key] = flows
        self._dirty.clear()
        base = (self._token, self._generation)
        self._generation += 1
        return RenderedLines(
            # Not copied (80k entries at 10k ports: a copy per port add cost more than the
            # add): read before the next render() or not at all (the agent syncs at once).
            chunks=_LiveChunks(self, self._generation),
            generation=(self._token, self._generation),
            base=base,
            added=list(added),
            removed=list(removed),
        )

    def flow_count(self) -> int:
        return sum(len(f) for f in self.desired.values())


class _LiveChunks(Sequence[list[str]]):
    """The engine's rendered entries as of one render(), valid until the next one."""

    __slots__ = ("_engine", "_generation")

    def __init__(self, engine: Engine, generation: int) -> None:
        self._engine = engine
        self._generation = generation

    def _chunks(self) -> list[list[str]]:
        if self._engine._generation != self._generation:
            raise RuntimeError("these rendered lines were superseded by a later render()")
        return list(self._engine._rendered.values())

    def __len__(self) -> int:
        return len(self._chunks())

    def __getitem__(self, index: int) -> list[str]:  # type: ignore[override]
        return self._chunks()[index]

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self._chunks())


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

    return [cls() for cls in apps_pkg.ALL_APPS]
