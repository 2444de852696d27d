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
recompute does (OVN's I-P engine with its recompute safety net).

No flow text outlives a render. Each entry's flows are rendered with a cookie unique to
the entry (ir/cookies.py: entry_cookie), and the engine keeps only a fingerprint of its
lines and their count: a recomputed entry whose fingerprint is unchanged is dropped, a
changed one is handed on by `render()` (FlowChanges: the cookies to replace, the new
lines), and the switch holds the text. At 10k ports that is ~80k small ints instead of
~260k lines (~52 MiB) and two indexes over them (~40 MiB). The first full recompute (and
one after `forget_installed()`) hands on every line in a few large blocks
(FlowChanges.complete), which the installer compares with the switch.

Costs, measured at 10k local ports (benchmarks/controller_bench.py (b)): logging the
reads adds little to a full recompute; filing them (~150k (key, owner) links) is
~0.25 s of CPU, moved to settle(); rendering inside full() is reported apart
(`full_render_seconds`). A port add stays ~1.5-2 ms of compute.

Pure and synchronous: no I/O. The agent computes here first, then hands `render()` to the
FlowInstaller (never with a bundle open: docs/dataplane.md: bundle idle timeout).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import cast

from wyvern import ir
from wyvern.apps.base import App, Owner
from wyvern.controller.deps import Deps, ReadingView
from wyvern.ir import Flow
from wyvern.ir.cookies import APPS, OBJECT_BITS, AppName, entry_cookie, entry_object
from wyvern.ir.render import clear_caches as clear_render_memos
from wyvern.ir.render import render_flow
from wyvern.model.view import Change, LocalView, touched_keys
from wyvern.southbound.flowtext import FlowChanges, rendered_cookie

LOG = logging.getLogger(__name__)

EntryKey = tuple[str, Owner]  # (app name, owner)

_COUNT_BITS = 24  # an entry's flow count, below its fingerprint
_COUNT_MASK = (1 << _COUNT_BITS) - 1
_FP_MASK = (1 << 64) - 1
_BLOCK = 4096  # lines per block of a complete FlowChanges (~0.7 MB of text)


def cookie_of(key: EntryKey) -> int:
    """The cookie on every installed flow of entry KEY."""
    return entry_cookie(cast(AppName, key[0]), key[1])


def entry_lines(key: EntryKey, flows: Sequence[Flow], cookie: int | None = None) -> list[str]:
    """An entry's flows as installed: rendered with the entry's cookie (COOKIE, if the
    caller knows it: cookie_of(key))."""
    if not flows:
        return []
    if cookie is None:
        cookie = cookie_of(key)
    return [render_flow(f, cookie) for f in flows]


def fingerprint(lines: Sequence[str]) -> int:
    """What the engine keeps of an entry: a hash of its set of lines (a switch holds no
    order nor duplicates), and how many there are (0 for none). Python's string hash:
    fingerprints never leave the process."""
    if not lines:
        return 0
    unique = frozenset(lines)
    return ((hash(unique) & _FP_MASK) << _COUNT_BITS) | len(unique)


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


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim). A first full
    recompute and install allocate ~50 MiB that die at once, between objects that live
    on; glibc keeps those pages mapped until asked. Measured at 10,000 ports: the agent's
    RSS 158 -> 147 MiB (with the call after settle()). Nothing happens where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Engine:
    def __init__(self, apps: Sequence[App]) -> None:
        self.apps = list(apps)
        # Each entry's fingerprint as of the last render() (what the switch holds, once
        # that render is installed), the entries changed since (their new lines, [] when
        # gone), and after a first full(): every entry's lines in large blocks.
        self._installed: dict[EntryKey, int] = {}
        self._pending: dict[EntryKey, tuple[list[str], int]] = {}  # (lines, fingerprint)
        self._bulk: list[str] | None = None
        self._count = 0  # flows in the desired set as it stands
        self._render_lock = threading.Lock()
        self.recomputes = 0
        self.full_render_seconds = 0.0  # of the last full(): the part spent rendering
        self.incremental_updates = 0
        self.deps = Deps()
        self._reader: ReadingView | None = None
        self._kind_apps: dict[str, list[App]] = {}  # owner kind -> the apps that have it

    def _current(self, key: EntryKey) -> int:
        pending = self._pending.get(key)
        return self._installed.get(key, 0) if pending is None else pending[1]

    def _set(self, key: EntryKey, flows: list[Flow]) -> bool:
        """Replace one entry; returns True if it changed."""
        return self._set_lines(key, entry_lines(key, flows))

    def _set_lines(self, key: EntryKey, lines: list[str]) -> bool:
        """_set() for an entry already rendered."""
        fp = fingerprint(lines)
        current = self._current(key)
        if fp == current:
            return False
        if fp == self._installed.get(key, 0):
            del self._pending[key]  # back to what was rendered: nothing to send
        else:
            self._pending[key] = (lines, fp)
        self._count += (fp & _COUNT_MASK) - (current & _COUNT_MASK)
        return True

    def fingerprints(self) -> dict[EntryKey, int]:
        """Every entry's fingerprint as it stands (for tests: fingerprints_full agrees)."""
        out = {k: v for k, v in self._installed.items() if k not in self._pending}
        for key, (lines, fp) in self._pending.items():
            if lines:
                out[key] = fp
        return out

    def forget_installed(self) -> None:
        """The switch lost what it had, or may differ from it: the next full() hands on
        every flow again (FlowChanges.complete)."""
        self._installed.clear()
        self._pending.clear()
        self._bulk = None
        self._count = 0

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
            # A first recompute (nothing rendered before) keeps every entry's lines in
            # a few large blocks for one complete FlowChanges; a later one keeps only
            # the entries that differ from what was rendered.
            first = not self._installed and not self._pending
            fresh: dict[EntryKey, int] = {}
            blocks: list[str] = []
            parts: list[str] = []
            size = 0
            self._kind_apps = {}
            clock, rendering = time.perf_counter, 0.0
            set_lines = self._set_lines
            # Each owner's entry-cookie hash, made once for the apps that list it (a port
            # is in eight): cookie_of(key) is the app's id above it.
            objects: dict[Owner, int] = {}
            app_bits = 0

            def emit(key: EntryKey, flows: Sequence[Flow]) -> None:
                nonlocal size, rendering
                t = clock()
                obj = objects.get(key[1])
                if obj is None:
                    obj = objects[key[1]] = entry_object(key[1])
                lines = entry_lines(key, flows, app_bits | obj)
                rendering += clock() - t
                if not first:
                    fresh[key] = 0
                    set_lines(key, lines)
                    return
                fresh[key] = fingerprint(lines)
                parts.extend(lines)  # (no string per entry: fewer half-empty pools after)
                size += len(lines)
                if size >= _BLOCK:
                    blocks.append("\n".join(parts))
                    parts.clear()
                    size = 0

            # App by app (each app's code and memos stay hot: ~15% faster than owner by
            # owner); each computation's reads are only set aside, and settle() files
            # them, once per owner for all the apps that list it (("port", P) in seven).
            # Each owner's flows are rendered as soon as they are computed, so no IR
            # outlives its owner.
            for app in self.apps:
                name = app.name
                app_bits = APPS[cast(AppName, name)] << OBJECT_BITS
                flows_of = app.flows
                kinds: set[str] = set()
                glob = app.global_flows()
                if glob:
                    emit((name, ("app", name)), glob)
                for owner in app.owners(view):
                    flows = flows_of(rv, owner)
                    hold(owner, owner[1])
                    kinds.add(owner[0])
                    if flows:
                        emit((name, owner), flows)
                for kind in kinds | set(app.owner_tables):
                    self._kind(kind, app)
            if first:
                if parts:
                    blocks.append("\n".join(parts))
                self._installed = fresh
                self._bulk = blocks
                self._count = sum(fp & _COUNT_MASK for fp in fresh.values())
            else:
                for key in [*self._installed, *self._pending]:
                    if key not in fresh:
                        set_lines(key, [])
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

    def render(self) -> FlowChanges:
        """What changed since the previous render, for FlowInstaller.apply(): after a first
        full() (or one after forget_installed()) every flow (FlowChanges.complete)."""
        with self._render_lock:  # a second reader (a test, a tool) must not interleave
            enabled = gc.isenabled()
            gc.disable()  # as in full(): nothing cyclic is made here, only kept
            try:
                return self._render()
            finally:
                if enabled:
                    gc.enable()

    def _render(self) -> FlowChanges:
        installed, pending = self._installed, self._pending
        bulk, self._bulk = self._bulk, None
        if bulk is not None and pending:
            # Changes on top of a first recompute not rendered yet (a test, not the agent):
            # drop the changed entries' lines from the blocks, add their new ones.
            stale = {cookie_of(key) for key in pending}
            keep = [
                line
                for line in FlowChanges(text=bulk).lines()
                if rendered_cookie(line) not in stale
            ]
            bulk = ["\n".join(keep), *("\n".join(v) for v, _ in pending.values() if v)]
        replaced: list[int] = []
        text: list[str] = []
        for key, (lines, fp) in pending.items():
            if bulk is None and key in installed:
                replaced.append(cookie_of(key))
            if lines:
                installed[key] = fp
                text.append("\n".join(lines))
            else:
                installed.pop(key, None)
        pending.clear()
        if bulk is not None:
            return FlowChanges(text=[b for b in bulk if b], complete=True)
        return FlowChanges(replaced=replaced, text=text)

    def flow_count(self) -> int:
        return self._count


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


def rendered_full(apps: Sequence[App], view: LocalView) -> dict[EntryKey, list[str]]:
    """compute_full() as installed lines (each entry's with its cookie)."""
    return {k: entry_lines(k, v) for k, v in compute_full(apps, view).items()}


def fingerprints_full(apps: Sequence[App], view: LocalView) -> dict[EntryKey, int]:
    """What Engine.fingerprints() holds after a full recompute."""
    return {k: fingerprint(v) for k, v in rendered_full(apps, view).items()}


def default_apps() -> list[App]:
    """One instance of every app wyvern.apps lists in ALL_APPS."""
    from wyvern import apps as apps_pkg

    return [cls() for cls in apps_pkg.ALL_APPS]
