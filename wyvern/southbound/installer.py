"""The flow installer: desired vs installed, only the difference, in one atomic bundle.

The agent hands `sync()` the complete set of flows it wants (rendered `ovs-ofctl` text).
The installer keeps what the switch has, keyed by flow identity (table, priority,
match; see flowtext.py), and sends only the additions, changes and deletions, all in ONE
ordered, atomic OpenFlow bundle. Traffic never sees a half-applied state, nor a moment
without flows. On start (agent restart, OVS reconnect) it reads the switch's flows back
first and again sends only the difference. It never deletes all flows and never
touches the controller setting: OVS flushes flows when a controller comes or goes.

Wire: a changed flow is sent as `add`, which in OpenFlow 1.2+ replaces the flow with the
same identity in place and keeps its counters. `modify_strict` cannot change the cookie
in OpenFlow 1.1+, and the cookie says which app and object a flow belongs to. (A flow
with `check_overlap` would be refused as an overlap of itself, so it is deleted and
re-added inside the same bundle.) Removed flows go as `delete_strict`, without a cookie
match, so exactly that identity goes.

Transport, measured (2 vCPUs, OVS 3.1, userspace datapath): we stream the bundle into
`ovs-ofctl -O OpenFlow14 --bundle add-flows BRIDGE -`, whose flow file takes per-line
`add` / `delete_strict` keywords. ovs-ofctl parses the whole input before it opens the
bundle (so the 10 s bundle idle timeout can't bite), sends OPEN, the flow_mods, a
barrier to collect per-message errors, then COMMIT, and exits 0 only on COMMIT_REPLY,
which OVS sends after the bundle is applied to the flow tables: that reply is our
barrier. An OpenFlow connection of our own through os-ken managed ~7k flows/s
(docs/dataplane.md: install throughput), so streamed text is the fast path for now.

Figures (exact-match flows; "raw" is `ovs-ofctl --bundle add-flows FILE` alone;
ranges are an idle vs a busy shared box; tests/southbound/test_installer.py prints them):

    flows   raw bundle   first sync (canonicalise + bundle)    resync    no-op sync
    10k     0.09-0.16 s  0.19-0.36 s (0.08-0.21 + 0.09-0.12)   0.07-0.18 s  0.02 s
    100k    0.72-0.88 s  1.7-2.5 s   (0.85-1.5  + 0.76-0.91)   0.8-1.1 s    0.25 s

The bundle itself runs at 85-130k flows/s, matching the 94k ceiling measured in
docs/dataplane.md: install throughput. The rest of a first sync is canonicalising the
desired text through `ovs-ofctl parse-flows` (cached per line, so later syncs only pay
for new lines). A sync after an agent restart (read the switch, canonicalise, diff, send
nothing) takes 0.1-0.25 s for 10k flows.

Rendered lines (flowtext.RenderedLines, what Engine.render() returns) take two faster
paths. Their text is deterministic per IR flow, so when the installed view came from an
empty switch (or a canonical sync of the same lines proved both spellings agree) the
installer keys flows by that text and skips `parse-flows`: a first install of 100k
flows costs the bundle plus ~0.3 s of Python. That view (LineIndex) keeps each line
itself under the hash of its identity text, no parsed copy: ~65 B a flow beside the
line, which the engine holds anyway. And a render that names the previous render as its
base carries the lines added and removed since, so a sync after a port add touches only
those instead of the whole set. Plain text lines always go through OVS's canonical form
(after re-reading the switch if the view was keyed by text).

Not thread-safe, and blocking: one owner (the agent's southbound worker) calls it, off
the event loop.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import overload

from wyvern.southbound.flowtext import (
    DEFAULT_PROTOCOL,
    Flow,
    FlowKey,
    FlowSyntaxError,
    RenderedLines,
    canonicalize,
    clean_lines,
    key_identity,
    parse_dump_line,
    parse_rendered,
    rendered_identity,
)
from wyvern.southbound.ovs import OvsCommandError, OvsError, OvsInstance

LOG = logging.getLogger(__name__)

_OF_ERROR_RE = re.compile(r"^Error (\S+) for: .*?: (?:ADD|DEL_STRICT|DEL)\b ?(.*)$", re.MULTILINE)


def _ignore(line: str) -> None:
    """ovs-ofctl --bundle prints nothing on success; errors come on stderr."""


class FlowInstallError(OvsError):
    """The switch refused the bundle; nothing in it was applied (bundles are atomic)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        self.errors = errors or []  # (OpenFlow error, flow text as OVS printed it)
        super().__init__(message)


class FlowConflictError(ValueError):
    """The desired set holds two different flows with the same identity."""


@dataclass(frozen=True)
class FlowDiff:
    """What one sync must send: flows to add, to rewrite, and identities to delete."""

    add: tuple[Flow, ...] = ()
    modify: tuple[Flow, ...] = ()
    delete: tuple[Flow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def bundle_lines(self) -> list[str]:
        """The bundle as an ovs-ofctl flow file: deletions, then rewrites, then adds."""
        lines = [f.delete_line() for f in self.delete]
        for f in self.modify:
            if "check_overlap" in f.flags:
                lines.append(f.delete_line())
            lines.append(f.add_line())
        lines.extend(f.add_line() for f in self.add)
        return lines


@dataclass(frozen=True)
class SyncStats:
    """What a sync did, and how long each step took (seconds)."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    parse_seconds: float = 0.0
    bundle_seconds: float = 0.0
    seconds: float = 0.0
    resynced: bool = False

    @property
    def changed(self) -> int:
        return self.added + self.modified + self.deleted


def diff_flows(installed: Mapping[FlowKey, Flow], desired: Mapping[FlowKey, Flow]) -> FlowDiff:
    """Pure: the difference that turns INSTALLED into DESIRED."""
    add: list[Flow] = []
    modify: list[Flow] = []
    for key, flow in desired.items():
        have = installed.get(key)
        if have is None:
            add.append(flow)
        elif have.value != flow.value:
            modify.append(flow)
    delete = [flow for key, flow in installed.items() if key not in desired]
    return FlowDiff(tuple(add), tuple(modify), tuple(delete))


@dataclass
class _Plan:
    """A trusted sync's changes: lines to add or rewrite, (identity, line) to delete."""

    add: list[str] = field(default_factory=list)
    modify: list[str] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def bundle_lines(self) -> Sequence[str]:
        """As FlowDiff.bundle_lines: deletions (by identity), then rewrites, then adds.

        Made a chunk at a time as the bundle is fed to ovs-ofctl: at 250k flows a list of
        every "add LINE" and their joined text would take ~120 MiB at the peak.
        """
        return _BundleLines(
            [
                ("delete_strict ", [ident for ident, _ in self.delete]),
                ("add ", self.modify),
                ("add ", self.add),
            ]
        )


class _BundleLines(Sequence[str]):
    """PREFIX + item for each item of each part, in order, built only when sliced."""

    def __init__(self, parts: list[tuple[str, Sequence[str]]]) -> None:
        self._parts = [(prefix, items) for prefix, items in parts if items]
        self._len = sum(len(items) for _, items in self._parts)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, int):
            got = self[index : index + 1] if index >= 0 else self[self._len + index :][:1]
            if not got:
                raise IndexError(index)
            return got[0]
        start, stop, step = index.indices(self._len)
        if step != 1:
            return [self[i] for i in range(start, stop, step)]
        out: list[str] = []
        base = 0
        for prefix, items in self._parts:
            lo, hi = max(start - base, 0), min(stop - base, len(items))
            if lo < hi:
                out.extend(prefix + item for item in items[lo:hi])
            base += len(items)
        return out


class LineIndex:
    """Rendered lines by identity, kept as the text alone: hash(identity) -> line.

    A parsed Flow per installed line cost ~440 B (the object, its key, and copies of the
    match and actions text); this costs a dict slot and an int, ~70 B, and shares the line
    with whoever rendered it. Two identities whose hashes collide (never seen, but
    possible) keep the second one by its full identity in a small side table.
    """

    __slots__ = ("_by_hash", "_hash", "_spill")

    def __init__(self, hash_of: Callable[[str], int] = hash) -> None:
        self._hash = hash_of  # (a test gives a weak one, to make collisions happen)
        self._by_hash: dict[int, str] = {}
        self._spill: dict[str, str] = {}

    def get(self, ident: str, hint: str | None = None) -> str | None:
        """The line of identity IDENT; HINT, a line of that identity, saves re-deriving
        the identity of a stored line equal to it (the usual case: unchanged)."""
        line = self._by_hash.get(self._hash(ident))
        if line is not None and (line == hint or rendered_identity(line)[0] == ident):
            return line
        return self._spill.get(ident) if self._spill else None

    def put(self, ident: str, line: str) -> str | None:
        """Store LINE under IDENT; returns the line it replaced, if any."""
        h = self._hash(ident)
        have = self._by_hash.get(h)
        if have is not None and have != line and rendered_identity(have)[0] != ident:
            old = self._spill.get(ident)  # another identity holds the slot
            self._spill[ident] = line
            return old
        if self._spill and have is None:
            have = self._spill.pop(ident, None)  # its slot was taken when it came
        self._by_hash[h] = line
        return have

    def pop(self, ident: str) -> None:
        h = self._hash(ident)
        have = self._by_hash.get(h)
        if have is not None and rendered_identity(have)[0] == ident:
            del self._by_hash[h]
        else:
            self._spill.pop(ident, None)

    def __len__(self) -> int:
        return len(self._by_hash) + len(self._spill)

    def lines(self) -> Iterator[str]:
        yield from self._by_hash.values()
        yield from self._spill.values()


class _IndexView(Mapping[FlowKey, Flow]):
    """The installed view over a LineIndex: Flow objects made on demand, for inspection."""

    def __init__(self, index: LineIndex) -> None:
        self._index = index

    def __getitem__(self, key: FlowKey) -> Flow:
        line = self._index.get(key_identity(key))
        if line is None:
            raise KeyError(key)
        return parse_rendered(line)

    def __iter__(self) -> Iterator[FlowKey]:
        return (parse_rendered(line).key for line in self._index.lines())

    def __len__(self) -> int:
        return len(self._index)


class FlowInstaller:
    """Keeps one bridge's flows equal to the desired set, touching only what differs.

    OWNED_COOKIE=(value, mask) limits the installer to flows whose cookie & mask ==
    value: others (a developer's debug flow, another agent's) are never read nor
    deleted. By default every flow on the bridge is ours: br-int is the agent's.
    """

    def __init__(
        self,
        ovs: OvsInstance,
        bridge: str = "br-int",
        *,
        protocol: str = DEFAULT_PROTOCOL,
        owned_cookie: tuple[int, int] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.protocol = protocol
        self.owned_cookie = owned_cookie
        self.timeout = timeout
        # Two views of what the switch holds, one in use at a time. _trusted: _index, the
        # rendered lines by their own text (from an empty switch on, or once a canonical
        # sync of rendered lines proved that both spellings agree; only RenderedLines are
        # trusted this way). Otherwise _installed, parsed Flows keyed by OVS's canonical
        # form (after reading a non-empty switch, or for plain text lines).
        self._installed: dict[FlowKey, Flow] = {}
        self._index = LineIndex()
        self._trusted = False
        self._known = False  # False until read from the switch, and after a failure
        # Canonical form per line text: a renderer re-sends mostly the same lines.
        self._cache: dict[str, Flow] = {}
        self._synced: object = None  # RenderedLines.generation of the last good sync

    # -- views ---------------------------------------------------------------------------
    @property
    def installed(self) -> Mapping[FlowKey, Flow]:
        """What we believe the switch has: a live, read-only view keyed by identity."""
        if self._trusted:
            return _IndexView(self._index)
        return MappingProxyType(self._installed)

    @property
    def in_sync_with_switch(self) -> bool:
        """False before the first read and after a failed sync: the next sync re-reads."""
        return self._known

    def mark_stale(self) -> None:
        """Call when OVS reconnected or restarted: the next sync reads the switch first."""
        self._known = False

    def owns(self, cookie: int) -> bool:
        if self.owned_cookie is None:
            return True
        value, mask = self.owned_cookie
        return cookie & mask == value

    # -- reading the switch --------------------------------------------------------------
    def dump(self) -> list[Flow]:
        """The switch's flows (ours only, if OWNED_COOKIE) in canonical form."""
        args = ["-O", self.protocol, "--no-names", "--no-stats", "dump-flows", self.bridge]
        if self.owned_cookie is not None:
            value, mask = self.owned_cookie
            args.append(f"cookie={value:#x}/{mask:#x}")
        flows: list[Flow] = []

        def take(line: str) -> None:
            flow = parse_dump_line(line)
            if flow is not None:
                flows.append(flow)

        self.ovs.ofctl_stream(*args, on_line=take, timeout=self.timeout)
        return flows

    def resync_from_switch(self) -> int:
        """Replace the installed view with what the switch really has; returns the count.

        Read-only: it sends nothing, so it is safe at any time, e.g. after an agent
        restart with the datapath forwarding on the old flows.
        """
        start = time.monotonic()
        enabled = gc.isenabled()
        gc.disable()  # (as in sync)
        try:
            flows = self.dump()
        finally:
            if enabled:
                gc.enable()
        installed: dict[FlowKey, Flow] = {}
        for flow in flows:
            if flow.key in installed:
                LOG.warning(
                    "bridge %s: two flows print the same identity %s", self.bridge, flow.key
                )
            installed[flow.key] = flow
        self._installed = installed
        self._index = LineIndex()
        self._known = True
        self._trusted = not installed  # nothing to compare with OVS's spelling
        self._synced = None
        LOG.info(
            "bridge %s (%s): read %d installed flows in %.3f s",
            self.bridge,
            self.ovs.run_dir,
            len(installed),
            time.monotonic() - start,
        )
        return len(installed)

    # -- desired -------------------------------------------------------------------------
    def canonical(self, desired_lines: Iterable[str]) -> dict[FlowKey, Flow]:
        """The desired set keyed by identity; raises on bad syntax or conflicting flows."""
        if isinstance(desired_lines, str):
            raise TypeError("desired_lines is an iterable of flow lines, not one string")
        lines = clean_lines(list(desired_lines))
        cache = self._cache
        missing = list(dict.fromkeys(line for line in lines if line not in cache))
        try:
            fresh = dict(zip(missing, canonicalize(missing, self.protocol), strict=True))
        except FlowSyntaxError as exc:
            if exc.line is None:
                raise
            # Number the line within the caller's desired set, not our uncached batch.
            raise FlowSyntaxError(exc.message, exc.line, lines.index(exc.line) + 1) from None
        flows: dict[FlowKey, Flow] = {}
        new_cache: dict[str, Flow] = {}
        for line in lines:
            flow = cache.get(line) or fresh[line]
            new_cache[line] = flow
            other = flows.get(flow.key)
            if other is not None and other.value != flow.value:
                raise FlowConflictError(
                    f"two desired flows with identity {flow.key}: {other.text!r} and {line!r}"
                )
            self._check_owned(flow.cookie, line)
            flows[flow.key] = flow
        self._cache = new_cache  # bounded by the desired set
        return flows

    def _check_owned(self, cookie: int, line: str) -> None:
        if not self.owns(cookie):
            value, mask = self.owned_cookie or (0, 0)
            raise FlowSyntaxError(
                f"cookie {cookie:#x} is outside the owned space {value:#x}/{mask:#x}", line
            )

    def _canonical_desired(self, desired_lines: Iterable[str]) -> dict[FlowKey, Flow]:
        """The desired set in OVS's canonical form, with the installed view in it too."""
        if self._trusted and self._index:
            # Plain text while the view is keyed by rendered text: read the switch, so
            # both sides are in OVS's canonical form again.
            self.resync_from_switch()
        self._trusted = False
        self._index = LineIndex()
        return self.canonical(desired_lines)

    def _plan(self, rendered: RenderedLines) -> tuple[LineIndex, _Plan]:
        """The desired set as a LineIndex and what turns the trusted view into it; raises
        on conflicting or foreign lines (before anything is sent)."""
        want = LineIndex()
        have = self._index
        owned = self.owned_cookie is not None
        plan = _Plan()
        for line in rendered:
            ident, cookie = rendered_identity(line)
            if owned:
                self._check_owned(cookie, line)
            other = want.put(ident, line)
            if other is not None:
                if other != line:
                    raise FlowConflictError(
                        f"two desired flows with identity {ident}: {other!r} and {line!r}"
                    )
                continue  # the same line twice
            old = have.get(ident, line)
            if old is None:
                plan.add.append(line)
            elif old != line:
                plan.modify.append(line)
        if len(want) - len(plan.add) != len(have):  # some installed identity is not wanted
            for line in have.lines():
                ident = rendered_identity(line)[0]
                if want.get(ident) is None:
                    plan.delete.append((ident, line))
        return want, plan

    def diff(self, desired_lines: Iterable[str]) -> FlowDiff:
        """What sync() would send now (reads the switch first if needed)."""
        if isinstance(desired_lines, str):
            raise TypeError("desired_lines is an iterable of flow lines, not one string")
        if not self._known:
            self.resync_from_switch()
        if self._trusted and isinstance(desired_lines, RenderedLines):
            _, plan = self._plan(desired_lines)
            return FlowDiff(
                add=tuple(map(parse_rendered, plan.add)),
                modify=tuple(map(parse_rendered, plan.modify)),
                delete=tuple(parse_rendered(line) for _, line in plan.delete),
            )
        return diff_flows(self._installed, self._canonical_desired(desired_lines))

    # -- writing -------------------------------------------------------------------------
    def sync(self, desired_lines: Iterable[str]) -> SyncStats:
        """Make the switch hold exactly DESIRED_LINES (of the flows we own).

        Only the difference is sent, in one atomic bundle; when there is none, nothing
        is sent at all. On failure nothing was applied, a FlowInstallError (switch) or
        FlowSyntaxError (bad line, caught before anything is sent) is raised, and the
        next sync re-reads the switch before diffing.
        """
        # Up to millions of long-lived objects, and no garbage cycles: keep the cyclic GC
        # from walking the whole heap again and again meanwhile.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._sync(desired_lines)
        finally:
            if enabled:
                gc.enable()

    def _sync(self, desired_lines: Iterable[str]) -> SyncStats:
        start = time.monotonic()
        if isinstance(desired_lines, str):
            raise TypeError("desired_lines is an iterable of flow lines, not one string")
        resynced = not self._known
        rendered = desired_lines if isinstance(desired_lines, RenderedLines) else None
        if (
            rendered is not None
            and self._known
            and self._trusted
            and self._synced is not None
            and rendered.base == self._synced
        ):
            return self._sync_delta(rendered, start)
        if not self._known:
            self.resync_from_switch()
        if self._trusted and rendered is not None:
            return self._sync_trusted(rendered, start, resynced)
        desired = self._canonical_desired(desired_lines)
        parsed = time.monotonic()
        diff = diff_flows(self._installed, desired)
        bundle_seconds = 0.0
        if diff:
            bundle_seconds = self._send_bundle(
                diff.bundle_lines(), len(diff.add), len(diff.modify), len(diff.delete)
            )
            for flow in diff.delete:
                del self._installed[flow.key]
            for flow in (*diff.modify, *diff.add):
                self._installed[flow.key] = flow
        if rendered is not None:
            # The switch now holds exactly these lines: key them by their text from here
            # on, unless two of them are one flow for OVS (then stay canonical).
            index = LineIndex()
            try:
                for line in rendered:
                    index.put(rendered_identity(line)[0], line)
            except FlowSyntaxError:
                index = LineIndex()
            if index and len(index) == len(self._installed):
                self._index = index
                self._installed = {}
                self._trusted = True
                self._cache = {}
        self._synced = rendered.generation if rendered is not None else None
        return self._stats(
            len(diff.add),
            len(diff.modify),
            len(diff.delete),
            len(desired),
            parsed - start,
            bundle_seconds,
            start,
            resynced=resynced,
        )

    def _sync_trusted(self, rendered: RenderedLines, start: float, resynced: bool) -> SyncStats:
        """A whole rendered set against the trusted view: no OVS parsing, no Flow objects."""
        want, plan = self._plan(rendered)
        parsed = time.monotonic()
        bundle_seconds = 0.0
        if plan:
            bundle_seconds = self._send_bundle(
                plan.bundle_lines(), len(plan.add), len(plan.modify), len(plan.delete)
            )
        self._index = want  # what the switch holds now
        self._synced = rendered.generation
        return self._stats(
            len(plan.add),
            len(plan.modify),
            len(plan.delete),
            len(want),
            parsed - start,
            bundle_seconds,
            start,
            resynced=resynced,
        )

    def _sync_delta(self, rendered: RenderedLines, start: float) -> SyncStats:
        """Sync from the last synced set, given what was added and removed since."""
        installed = self._index
        gone: dict[str, str] = {}
        for line in rendered.removed:
            ident = rendered_identity(line)[0]
            if installed.get(ident, line) != line:  # not what we hold: start over
                self._synced = None
                return self._sync(RenderedLines(rendered, generation=rendered.generation))
            gone[ident] = line
        new: dict[str, str] = {}
        for line in rendered.added:
            ident, cookie = rendered_identity(line)
            self._check_owned(cookie, line)
            other = new.get(ident)
            if other is None and ident not in gone:
                other = installed.get(ident, line)
            if other is not None and other != line:
                raise FlowConflictError(
                    f"two desired flows with identity {ident}: {other!r} and {line!r}"
                )
            new[ident] = line
        parsed = time.monotonic()
        plan = _Plan(delete=[(i, line) for i, line in gone.items() if i not in new])
        for ident, line in new.items():
            (plan.modify if installed.get(ident) is not None else plan.add).append(line)
        bundle_seconds = 0.0
        if plan:
            bundle_seconds = self._send_bundle(
                plan.bundle_lines(), len(plan.add), len(plan.modify), len(plan.delete)
            )
            for ident, _ in plan.delete:
                installed.pop(ident)
            for ident, line in new.items():
                installed.put(ident, line)
        self._synced = rendered.generation
        return self._stats(
            len(plan.add),
            len(plan.modify),
            len(plan.delete),
            len(installed),
            parsed - start,
            bundle_seconds,
            start,
        )

    def _stats(
        self,
        added: int,
        modified: int,
        deleted: int,
        n_desired: int,
        parse_seconds: float,
        bundle_seconds: float,
        start: float,
        *,
        resynced: bool = False,
    ) -> SyncStats:
        stats = SyncStats(
            added=added,
            modified=modified,
            deleted=deleted,
            unchanged=n_desired - added - modified,
            parse_seconds=parse_seconds,
            bundle_seconds=bundle_seconds,
            seconds=time.monotonic() - start,
            resynced=resynced,
        )
        if stats.changed:
            LOG.info(
                "bridge %s (%s): +%d ~%d -%d flows (=%d) in %.3f s",
                self.bridge,
                self.ovs.run_dir,
                stats.added,
                stats.modified,
                stats.deleted,
                stats.unchanged,
                stats.seconds,
            )
        return stats

    def _send_bundle(self, lines: Sequence[str], adds: int, changes: int, deletes: int) -> float:
        """Send LINES (an ovs-ofctl flow file) as one bundle; returns the seconds it took."""
        t0 = time.monotonic()
        try:
            self.ovs.ofctl_stream(
                "-O",
                self.protocol,
                # Without --no-names, ovs-ofctl first fetches the bridge's port names over
                # a separate connection: 10 of the 14 ms a small bundle costs.
                "--no-names",
                "--bundle",
                "add-flows",
                self.bridge,
                "-",
                on_line=_ignore,
                input_lines=lines,
                timeout=self.timeout,
            )
        except OvsCommandError as exc:
            # Atomic: nothing applied. Still, re-read before the next diff rather than
            # trust a view that a half-understood failure (a timeout, a crash) left.
            self._known = False
            errors = [(m.group(1), m.group(2)) for m in _OF_ERROR_RE.finditer(exc.stderr)]
            first = f"{errors[0][0]} for {errors[0][1]!r}" if errors else exc.stderr.strip()
            raise FlowInstallError(
                f"bridge {self.bridge}: bundle of {adds} adds, {changes} changes, "
                f"{deletes} deletes refused, nothing applied: {first}",
                errors,
            ) from exc
        except BaseException:
            self._known = False
            raise
        return time.monotonic() - t0
