"""The incremental engine: the desired flow table, kept per (app, owner).

Each owner's flows are computed against a ReadingView that logs what they read; the
reads are filed under the owner (wyvern.controller.deps). A change names the view keys
it altered (view.touched_keys), and the engine recomputes the owners filed under them,
the owners whose id is one of them, and the owners a new record brings (App.owners_of),
then replaces just those entries. Apps write no dependency code. `full(view)`
recomputes the whole table from scratch, app by app, and only sets the reads aside:
`settle()` files them (the agent calls it when idle; the next change does if it comes
first). The hypothesis tests in tests/controller/test_engine.py check that any sequence
of incremental `apply` calls, bursts included, settled or not, ends where a full
recompute does (OVN's I-P engine with its recompute safety net). An entry is kept as
its `ovs-ofctl` lines only: full() renders each owner's flows as soon as it has them, and
a change's flows live until the next render() (a recomputed entry that was rendered is
compared by its text), so a change renders only what it touched and no IR outlives it;
`render()` also returns the lines added and removed since the previous render, which
the FlowInstaller sends without looking at the rest (tests/controller/test_fastpaths.py
checks them against the set difference).

Costs, measured at 10k local ports (benchmarks/controller_bench.py (b)): logging the
reads adds little to a full recompute; filing them (~150k (key, owner) links) is
~0.25 s of CPU, moved to settle(); rendering inside full() is reported apart
(`full_render_seconds`). A port add stays ~1.5-2 ms of compute.

Pure and synchronous: no I/O. The agent computes here first, then hands `render()` to the
FlowInstaller (never with a bundle open: docs/dataplane.md: bundle idle timeout).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from wyvern import ir
from wyvern.apps.base import App, Owner
from wyvern.controller.deps import Deps, ReadingView
from wyvern.ir import Flow
from wyvern.ir.render import clear_caches as clear_render_memos
from wyvern.ir.render import render_flow
from wyvern.model.view import Change, LocalView, touched_keys
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
        # The text of each entry as of the last render(), how many entries render each
        # line, and the entries changed since (their new flows, or lines when they were
        # rendered to compare, [] when gone): render() renders only those, says which
        # lines came and went (RenderedLines.added/removed) and drops the flows. So
        # no IR flow outlives a render (~770 B each, 250k of them at 10k ports).
        self._rendered: dict[EntryKey, list[str]] = {}
        self._line_count: dict[str, int] = {}
        self._pending: dict[EntryKey, list[Flow] | list[str]] = {}
        self._token = object()
        self._render_lock = threading.Lock()
        self._generation = 0
        self.recomputes = 0
        self.full_render_seconds = 0.0  # of the last full(): the part spent rendering
        self.incremental_updates = 0
        self.deps = Deps()
        self._reader: ReadingView | None = None
        self._kind_apps: dict[str, list[App]] = {}  # owner kind -> the apps that have it

    def _set(self, key: EntryKey, flows: list[Flow]) -> bool:
        """Replace one entry; returns True if it changed. An entry rendered before is
        compared by its text (its flows are gone), so the new flows are rendered now."""
        pending = self._pending.get(key)
        current = self._rendered.get(key) if pending is None else pending
        if not flows:
            if not current:
                return False
            self._pending[key] = []
            return True
        if not current:
            self._pending[key] = list(flows)  # rendered by render()
            return True
        if current[0].__class__ is not str:
            if current == flows:
                return False
            self._pending[key] = list(flows)
            return True
        text = [render_flow(f) for f in flows]
        if text == current:
            return False
        self._pending[key] = text
        return True

    def _set_lines(self, key: EntryKey, text: list[str]) -> bool:
        """_set() for an entry already rendered."""
        pending = self._pending.get(key)
        current = self._rendered.get(key) if pending is None else pending
        if not text:
            if not current:
                return False
            self._pending[key] = []
            return True
        if current and _lines(current) == text:
            return False
        self._pending[key] = text
        return True

    @property
    def desired(self) -> dict[EntryKey, list[str]]:
        """Every entry's lines as they stand (rendering any flows not rendered yet)."""
        out = {k: v for k, v in self._rendered.items() if k not in self._pending}
        for key, value in self._pending.items():
            if value:
                out[key] = _lines(value)
        return out

    def _reading(self, view: LocalView) -> ReadingView:
        """The reading view over `view` (a new one, and no reads kept, for another view)."""
        rv = self._reader
        if rv is None or rv.base is not view:
            self.deps.clear()
            rv = self._reader = ReadingView(view, self.deps)
        rv.chassis_name = view.chassis_name
        return rv

    def _kind(self, kind: str, app: App) -> None:
        """Note that `app` has owners of this kind (a changed owner asks each such app)."""
        apps = self._kind_apps.setdefault(kind, [])
        if app not in apps:
            apps.append(app)
            apps.sort(key=self.apps.index)

    def _compute(self, rv: ReadingView, owner: Owner, apps: Sequence[App]) -> int:
        """One owner's flows in each app that may have it; their reads filed together
        under the owner (unless it is gone everywhere); returns how many entries changed."""
        changed = 0
        owned = False
        for app in apps:
            flows = app.flows(rv, owner)
            if self._set((app.name, owner), flows):
                changed += 1
            if not owned and (flows or app.owns(rv.base, owner)):
                owned = True
        if owned:
            rv.file(owner, self.deps.rev, owner[1])
        else:
            rv.discard()
        return changed

    def full(self, view: LocalView) -> None:
        """Recompute the whole desired table from the view."""
        # Millions of long-lived objects and no garbage cycles to speak of: the cyclic
        # GC would walk the growing heap again and again (~20% of the time at 10k ports).
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._reader = None
            rv = self._reading(view)
            hold = rv.hold
            fresh: dict[EntryKey, list[Flow] | list[str]] = {}
            self._kind_apps = {}
            render, clock, rendering = render_flow, time.perf_counter, 0.0
            # App by app (each app's code and memos stay hot: ~15% faster than owner by
            # owner); each computation's reads are only set aside, and settle() files
            # them, once per owner for all the apps that list it (("port", P) in seven).
            # Each owner's flows are rendered as soon as they are computed, so they die at
            # once: kept until the app was done (as before), the IR of the biggest app
            # left ~12 MiB more RSS at 10k ports in half-empty allocator pools.
            for app in self.apps:
                glob = app.global_flows()
                if glob:
                    fresh[(app.name, ("app", app.name))] = [render(f) for f in glob]
                kinds: set[str] = set()
                name = app.name
                flows_of = app.flows
                for owner in app.owners(view):
                    flows = flows_of(rv, owner)
                    if flows:
                        t = clock()
                        fresh[(name, owner)] = [render(f) for f in flows]
                        rendering += clock() - t
                    hold(owner, owner[1])
                    kinds.add(owner[0])
                for kind in kinds | set(app.owner_tables):
                    self._kind(kind, app)
            # (still without the GC: storing the new entries allocates again, and a
            # collection now would walk every flow just made, ~0.5 s at 10k ports)
            if not self._rendered and not self._pending:
                self._pending = fresh  # a first recompute: nothing to compare with
            else:
                gone = {*self._rendered, *self._pending} - fresh.keys()
                for key in gone:
                    self._set(key, [])
                for key, value in fresh.items():
                    self._set_lines(key, _lines(value))
        finally:
            if enabled:
                gc.enable()
        # The IR's memos of parsed values and shapes earn their keep inside a recompute
        # (a port's MAC and addresses recur in every app: ~0.1 s of 1.3 at 10k ports);
        # after it they would hold ~13 MiB for the few values a change parses again.
        ir.clear_caches()
        clear_render_memos()
        self.full_render_seconds = rendering
        self.recomputes += 1

    def settle(self) -> int:
        """File the reads a full recompute set aside (Deps.settle): the agent calls this
        when it has nothing else to do, else the next change pays for it. Returns how
        many computations were filed (0 when nothing was pending)."""
        if not self.deps.held:
            return 0
        with gc_paused():
            return self.deps.settle()

    def apply(self, view: LocalView, change: Change) -> int:
        """Update the entries a change affects (the view already holds it); returns how
        many entries changed."""
        return self.apply_all(view, [change])

    def apply_all(self, view: LocalView, changes: Iterable[Change]) -> int:
        """apply() for a batch the view already holds: each affected owner is computed
        once, however many of the changes name it (a port and its binding, say)."""
        changes = list(changes)
        with gc_paused():
            changed = self._apply_all(view, changes)
        self.incremental_updates += len(changes)
        return changed

    def _apply_all(self, view: LocalView, changes: list[Change]) -> int:
        if self._reader is not None and self._reader.base is not view:
            # What was read was read of another view: nothing to derive from it.
            before = self.flow_count()
            self.full(view)
            return abs(self.flow_count() - before) or len(changes)
        rv = self._reading(view)
        self.deps.settle()
        touched: dict[str, set[object]] = {}
        for change in changes:
            for name, key in touched_keys(change):
                keys = touched.get(name)
                if keys is None:
                    keys = touched[name] = {None}  # and whoever read the whole table
                keys.add(key)
        todo: set[Owner] = self.deps.fire(touched, rv)
        # An owner's reads of keys equal to its id are filed by table and owner kind only
        # (most reads are those: a port's record, its binding).
        own_kinds = self.deps.own_kinds
        for name, keys in touched.items():
            kinds = own_kinds.get(name)
            if kinds:
                for key in keys:
                    if key is not None:
                        todo.update([(kind, key) for kind in kinds])  # type: ignore[misc]
        # Owners a change may bring (a new record): asked of each app by table.
        for app in self.apps:
            for name in app.owner_sources():
                for key in touched.get(name, ()):
                    if key is not None:
                        for owner in app.owners_of(view, name, key):
                            self._kind(owner[0], app)
                            todo.add(owner)
        changed = 0
        kind_apps = self._kind_apps
        for owner in todo:
            changed += self._compute(rv, owner, kind_apps.get(owner[0], ()))
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
        fresh = [(key, _lines(value)) for key, value in self._pending.items()]
        for key, text in fresh:
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
            if text:
                self._rendered[key] = text
        self._pending.clear()
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
        pending = self._pending
        return sum(len(v) for k, v in self._rendered.items() if k not in pending) + sum(
            len(v) for v in pending.values()
        )


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


def _lines(value: list[Flow] | list[str]) -> list[str]:
    """An entry's lines: as they are, or rendered from its flows."""
    if value and value[0].__class__ is not str:
        return [render_flow(f) for f in value]  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def rendered_full(apps: Sequence[App], view: LocalView) -> dict[EntryKey, list[str]]:
    """compute_full() as lines: what Engine.desired holds after a full recompute."""
    return {k: [render_flow(f) for f in v] for k, v in compute_full(apps, view).items()}


def default_apps() -> list[App]:
    """One instance of every app wyvern.apps lists in ALL_APPS."""
    from wyvern import apps as apps_pkg

    return [cls() for cls in apps_pkg.ALL_APPS]
