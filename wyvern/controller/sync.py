"""Follow the store into the local view: list, then watch; hold back dangling references.

For each followed prefix the agent lists once, then watches from the list's revision + 1,
and applies every batch in revision order. There is no periodic full sync: when a watch
reports a `Gap` (history compacted away), only that prefix is listed again and diffed
against what we hold, and only the differences become changes.

References may arrive out of order (a port before its network, e.g. two prefixes resynced
at different times). The engine must never see a port whose network is missing, so the
view only ever holds objects whose references it also holds; the others wait here and are
applied when what they reference appears. Removing a referenced object first removes
(and parks again) what depends on it.

    sync = Sync(store, view)                   # follows /wyvern/ (minus claims and indexes)
    changes = sync.pump(timeout=0.2)           # blocking part: the store's watch
    sync.set_binding(port_id, Binding(...))    # local facts from OVS go through here too

Single-threaded: the agent's loop thread calls `pump`; nothing here touches asyncio, so
the OpenFlow channel's event loop never waits on the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from wyvern.model.keys import (
    HOST_PORTS,
    ROOT,
    decode_key,
    requested_port,
)
from wyvern.model.view import Binding, Change, Kind, LocalView, record_from_obj
from wyvern.nb.store import Batch, Event, Gap, KeyValue, Store, Watch

LOG = logging.getLogger(__name__)

Key = tuple[str, str]  # (view kind, id)
IDLE_PROOF = 0.25  # seconds (see Sync.pump)
HEAD_EVERY = 5.0  # seconds between reads of the store's revision for idle proofs


def references(kind: str, record: Any) -> list[Key]:
    """What a record needs in the view before the engine may see it."""
    if kind == "subnet":
        return [("network", record.network_id)]
    if kind == "port":
        refs: list[Key] = [("network", record.network_id)]
        refs += [("subnet", f.subnet_id) for f in record.fixed_ips]
        return refs
    if kind == "security_group_rule":
        return [("security_group", record.security_group_id)]
    if kind == "router":
        nets = {itf.network_id for itf in record.interfaces}
        if record.gateway_network_id:
            nets.add(record.gateway_network_id)
        return [("network", n) for n in sorted(nets)]
    if kind == "binding":
        return [("port", record.port_id)]
    return []


@dataclass(slots=True)
class Snapshot:
    """The full content of one prefix at `revision` (a first list, or a resync after a Gap)."""

    prefix: str
    revision: int
    items: list[KeyValue]


@dataclass
class _Follower:
    prefix: str
    revision: int = 0  # everything under the prefix up to here is applied
    seen: int = 0  # the last revision listed or received (the watch goes on from here)
    watch: Watch | None = None
    resyncs: int = 0
    idle_head: int = 0  # store revision read one pump ago, with the watch open (see pump)
    idle_at: float = 0.0


@dataclass
class SyncStats:
    batches: int = 0
    events: int = 0
    resyncs: int = 0


class Sync:
    """The view's only writer: store objects, port binding statuses and local bindings."""

    def __init__(
        self,
        store: Store,
        view: LocalView,
        prefixes: Sequence[str] = (ROOT,),
    ) -> None:
        self.store = store
        self.view = view
        self.followers = [_Follower(p) for p in prefixes]
        self.stats = SyncStats()
        # The latest state of everything followed (the view holds the subset whose
        # references are satisfied); its store mod revision; and who references what.
        self.latest: dict[Key, Any] = {}
        self.mod_revision: dict[Key, int] = {}
        self._by_store_key: dict[str, Key] = {}
        self._store_key: dict[Key, str] = {}
        self._refs: dict[Key, list[Key]] = {}
        self._dependents: dict[Key, set[Key]] = defaultdict(set)
        self._removing: set[Key] = set()
        # port id -> status object as stored (ours and other chassis's), and its key
        self.port_status: dict[str, dict[str, Any]] = {}
        self._status_store_key: dict[str, str] = {}
        # Ports requested on our host (if a host_ports prefix is followed) -> network id;
        # and a counter that moves whenever that set or any router record changes (what
        # selective distribution decides from, held-back records included).
        self.requested: dict[str, str] = {}
        self.interest_version = 0
        self._bell = threading.Event()  # rung by the store when a watch may have news
        self._prefix_index: dict[str, _Follower] | None = None
        self._head_rev = 0  # the highest store revision known to exist (see _head)
        self._head_at = -HEAD_EVERY
        # Chassis liveness (the agent's): asked when another chassis's record is deleted
        # (its lease ran out); True keeps it in the view, held in lease_gone (name ->
        # store key, revision) until drop_chassis.
        self.keep_chassis: Callable[[str], bool] | None = None
        self.lease_gone: dict[str, tuple[str, int]] = {}
        self._woken = False
        store.add_doorbell(self._bell)
        # Held while the view changes: readers on other threads (packet-in handlers) take
        # it too. Never held while waiting on the store.
        self.lock = threading.RLock()

    # -- following ------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        """Every followed prefix is applied at least up to this store revision."""
        return min((f.revision for f in self.followers), default=0)

    def applied_revision(self, key: Key) -> int:
        """How far the store is applied for one object: its own prefix's revision (with
        many prefixes, the slowest other prefix may lag behind by IDLE_PROOF until it
        proves it is caught up; a port's status need not wait for that)."""
        store_key = self._store_key.get(key)
        if store_key is not None and len(self.followers) > 1:
            parent = store_key.rsplit("/", 1)[0] + "/"
            f = self._by_prefix.get(parent) or self._by_prefix.get(store_key)
            if f is not None:
                return f.revision
        return self.revision

    @property
    def _by_prefix(self) -> dict[str, _Follower]:
        if self._prefix_index is None:
            self._prefix_index = {f.prefix: f for f in self.followers}
        return self._prefix_index

    def start(self) -> list[Change]:
        """List every prefix and apply it; then watches start from there."""
        changes: list[Change] = []
        with self.lock:
            for f in self.followers:
                changes += self._resync(f)
        return changes

    def follow(self, prefix: str) -> list[Change]:
        """Start following one more prefix (e.g. a network's keys): list it, then watch."""
        with self.lock:
            if any(f.prefix == prefix for f in self.followers):
                return []
            f = _Follower(prefix)
            self.followers.append(f)
            self._prefix_index = None
            return self._resync(f)

    def unfollow(self, prefix: str) -> list[Change]:
        """Stop following a prefix: what only it brought leaves the view (as deletions)."""
        with self.lock:
            f = next((f for f in self.followers if f.prefix == prefix), None)
            if f is None:
                return []
            if f.watch is not None:
                f.watch.close()
            self.followers.remove(f)
            self._prefix_index = None
            others = [o.prefix for o in self.followers]
            empty = Snapshot(prefix, f.seen, [])
            changes = []
            keys = [k for k in self._by_store_key if k.startswith(prefix)]
            keys += [k for k in self._status_store_key.values() if k.startswith(prefix)]
            for key in keys:
                if not any(key.startswith(o) for o in others):
                    changes += self._apply_event(Event("delete", key, b"", empty.revision))
            return changes

    def close(self) -> None:
        """Close the watches (pump reopens them from the applied revision)."""
        for f in self.followers:
            if f.watch is not None:
                f.watch.close()
                f.watch = None

    def pump(self, timeout: float = 0.2, max_batches: int = 1000) -> list[Change]:
        """Wait up to `timeout` for store changes (or a `wake()`), apply all that are
        ready, return them."""
        changes: list[Change] = []
        # Watches report changes only, so with several prefixes a quiet one must prove it
        # is caught up: its watch has nothing, and was open when the store was at
        # `idle_head` at least IDLE_PROOF seconds ago (an etcd watch streams in the
        # background; etcd's progress notifications would make this exact).
        head = self._head() if len(self.followers) > 1 else 0
        was_watching = {id(f): f.watch is not None for f in self.followers}
        busy: set[int] = set()
        got = 0
        bell = self._bell
        deadline = time.monotonic() + timeout
        while True:
            bell.clear()  # before looking: a change landing meanwhile rings it again
            for f in list(self.followers):
                while got < max_batches:
                    item = self._next(f, 0.0)
                    if item is None:
                        break
                    got += 1
                    busy.add(id(f))
                    with self.lock:
                        changes += self.apply_item(f, item)
            left = deadline - time.monotonic()
            if busy or got >= max_batches or left <= 0 or self._woken:
                break
            poll = self.store.doorbell_poll
            bell.wait(left if poll is None else min(left, poll))
        self._woken = False
        now = time.monotonic()
        for f in self.followers:
            if id(f) not in busy and now - f.idle_at >= IDLE_PROOF and f.idle_head > f.revision:
                f.revision = f.idle_head
            if not was_watching.get(id(f)) or f.watch is None:  # (re)opened: prove nothing yet
                f.idle_head = 0
            elif f.idle_head <= f.revision:
                f.idle_head, f.idle_at = head, now
        return changes

    def _head(self) -> int:
        """A store revision that exists now, for idle proofs: the highest one any watch or
        list has shown us, or a read of the store's at most every HEAD_EVERY seconds (for
        writes under prefixes nobody here follows). Most proofs need no read: hundreds of
        idle agents would otherwise ask etcd several times a second."""
        now = time.monotonic()
        if now - self._head_at >= HEAD_EVERY and self.store.reachable:
            # (not while the store is unreachable: the read would only time out)
            self.saw_revision(self.store.revision())
            self._head_at = now
        return self._head_rev

    def saw_revision(self, revision: int) -> None:
        """Note that the store has reached `revision` (a caller who read it, or our own
        watches and lists)."""
        if revision > self._head_rev:
            self._head_rev = revision

    def wake(self) -> None:
        """Make a pump() waiting for the store return now (another thread has news: an
        OVS interface came or went)."""
        self._woken = True
        self._bell.set()

    def _next(self, f: _Follower, timeout: float) -> Batch | Gap | None:
        if f.watch is None:
            f.watch = self.store.watch(f.prefix, f.seen + 1)
        return f.watch.next(timeout=timeout)

    def apply_item(self, f: _Follower, item: Batch | Gap | Snapshot) -> list[Change]:
        if isinstance(item, Gap):
            LOG.warning(
                "watch of %s lost history (compacted at %d, we had %d): resyncing that prefix",
                f.prefix,
                item.compact_revision,
                f.revision,
            )
            if f.watch is not None:
                f.watch.close()
                f.watch = None
            return self._resync(f)
        if isinstance(item, Snapshot):
            return self._apply_snapshot(f, item)
        changes: list[Change] = []
        if item.revision <= f.seen:  # already covered by a list
            return changes
        self.stats.batches += 1
        self.saw_revision(item.revision)
        for event in item.events:
            changes += self._apply_event(event)
        f.seen = item.revision
        f.revision = max(f.revision, item.revision)
        return changes

    def _resync(self, f: _Follower) -> list[Change]:
        result = self.store.list(f.prefix)
        self.saw_revision(result.revision)
        f.resyncs += 1
        self.stats.resyncs += 1
        return self._apply_snapshot(f, Snapshot(f.prefix, result.revision, result.items))

    def _apply_snapshot(self, f: _Follower, snap: Snapshot) -> list[Change]:
        """Diff a prefix's full content against what we hold: only differences change."""
        changes: list[Change] = []
        present = {kv.key for kv in snap.items}
        for key in [k for k in self._by_store_key if k.startswith(snap.prefix)]:
            if key not in present:
                changes += self._apply_event(Event("delete", key, b"", snap.revision))
        for port_id, key in list(self._status_store_key.items()):
            if key.startswith(snap.prefix) and key not in present:
                changes += self._set_status(port_id, None)
        if snap.prefix.startswith(HOST_PORTS):
            listed = {requested_port(k) for k in present}
            for port_id in [p for p in self.requested if p not in listed]:
                self._set_requested(port_id, None)
        for kv in snap.items:
            changes += self._apply_kv(kv.key, kv.value, kv.mod_revision)
        f.seen = snap.revision
        f.revision = max(f.revision, snap.revision)
        return changes

    # -- applying ---------------------------------------------------------------------------
    def _apply_event(self, event: Event) -> list[Change]:
        self.stats.events += 1
        if event.type == "delete":
            requested = requested_port(event.key)
            if requested is not None:
                self._set_requested(requested, None)
                return []
            decoded = decode_key(event.key)
            if decoded is None:
                return []
            if decoded.kind == "status":
                if self._status_store_key.get(decoded.id) != event.key:
                    return []  # (not the key we hold for that port)
                return self._set_status(decoded.id, None)
            if decoded.kind == "chassis" and decoded.id == self.view.chassis_name:
                # Our own record's lease ran out in the store (we were cut off, or frozen,
                # for a whole TTL): the registration puts it back; our flows must not
                # depend on it meanwhile.
                return []
            keep = self.keep_chassis
            if decoded.kind == "chassis" and event.key in self._by_store_key and keep:
                if decoded.id in self.lease_gone:
                    return []  # (held already: a resync listing it gone again)
                if keep(decoded.id):
                    # Its lease is gone but its dataplane answers: kept until it does
                    # not (the agent asks again, then drop_chassis).
                    self.lease_gone[decoded.id] = (event.key, event.revision)
                    return []
            key = self._by_store_key.pop(event.key, None)
            if key is None:
                return []
            self._store_key.pop(key, None)
            return self._set_latest(key, None, event.revision)
        return self._apply_kv(event.key, event.value, event.revision)

    def drop_chassis(self, name: str) -> list[Change]:
        """Apply the held delete of a chassis whose lease ran out (see keep_chassis)."""
        held = self.lease_gone.pop(name, None)
        if held is None:
            return []
        store_key, revision = held
        key = self._by_store_key.pop(store_key, None)
        if key is None:
            return []
        self._store_key.pop(key, None)
        return self._set_latest(key, None, revision)

    def _apply_kv(self, store_key: str, value: bytes, mod_revision: int) -> list[Change]:
        requested = requested_port(store_key)
        if requested is not None:
            self._set_requested(requested, value.decode(errors="replace"))
            return []
        decoded = decode_key(store_key)
        if decoded is None:
            return []
        if decoded.kind == "chassis":
            self.lease_gone.pop(decoded.id, None)  # (its agent put it back)
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            LOG.warning("ignoring %s: not JSON", store_key)
            return []
        if decoded.kind == "status":
            status = obj if isinstance(obj, dict) else None
            return self._set_status(decoded.id, status, store_key)
        key: Key = (decoded.kind, decoded.id)
        try:
            record = record_from_obj(decoded.kind, obj)
        except (KeyError, TypeError, ValueError) as exc:
            LOG.warning("ignoring %s: cannot read it (%s)", store_key, exc)
            record = None
        old_store_key = self._store_key.get(key)
        if old_store_key is not None and old_store_key != store_key:
            self._by_store_key.pop(old_store_key, None)
        if record is None:
            self._by_store_key.pop(store_key, None)
            self._store_key.pop(key, None)
        else:
            self._by_store_key[store_key] = key
            self._store_key[key] = store_key
        if self.latest.get(key) == record and (record is None or key in self.mod_revision):
            self.mod_revision[key] = mod_revision
            return []
        return self._set_latest(key, record, mod_revision)

    def _set_requested(self, port_id: str, network_id: str | None) -> None:
        if self.requested.get(port_id) == network_id:
            return
        if network_id is None:
            del self.requested[port_id]
        else:
            self.requested[port_id] = network_id
        self.interest_version += 1

    def _set_status(
        self, port_id: str, status: dict[str, Any] | None, store_key: str = ""
    ) -> list[Change]:
        """A port's binding status; a change of where it is bound (ACTIVE) is a Change."""
        old = self.view.port_chassis.get(port_id)
        new: str | None = None
        if status is None:
            self.port_status.pop(port_id, None)
            self._status_store_key.pop(port_id, None)
        else:
            self.port_status[port_id] = status
            if store_key:
                self._status_store_key[port_id] = store_key
            chassis = status.get("chassis")
            if chassis and status.get("status") == "ACTIVE":
                new = str(chassis)
        if new is None:
            self.view.port_chassis.pop(port_id, None)
        else:
            self.view.port_chassis[port_id] = new
        if old == new:
            return []
        return [Change("port_chassis", port_id, old, new)]

    def put_status(self, port_id: str, status: dict[str, Any] | None) -> list[Change]:
        """Apply a port's binding status (None: gone) as a store event would."""
        with self.lock:
            return self._set_status(port_id, status)

    def set_binding(self, port_id: str, binding: Binding | None) -> list[Change]:
        """A local fact from OVS: the port is plugged here (with its ofport), or no more."""
        with self.lock:
            return self._set_latest(("binding", port_id), binding, 0)

    def set_chassis_down(self, name: str, down: bool) -> list[Change]:
        """A local fact from BFD: chassis NAME must not host gateways now (or again may)."""
        with self.lock:
            return self._set_latest(("chassis_down", name), True if down else None, 0)

    def put_record(self, kind: Kind, id_: str, record: Any) -> list[Change]:
        """Apply one record (None: gone) with the same reference rules as store events."""
        with self.lock:
            return self._set_latest((kind, id_), record, self.mod_revision.get((kind, id_), 0))

    def _set_latest(self, key: Key, record: Any, mod_revision: int) -> list[Change]:
        if key[0] == "router":
            self.interest_version += 1
        for ref in self._refs.pop(key, ()):
            self._dependents[ref].discard(key)
            if not self._dependents[ref]:
                del self._dependents[ref]
        if record is None:
            self.latest.pop(key, None)
            self.mod_revision.pop(key, None)
        else:
            self.latest[key] = record
            self.mod_revision[key] = mod_revision
            refs = references(key[0], record)
            self._refs[key] = refs
            for ref in refs:
                self._dependents[ref].add(key)
        out: list[Change] = []
        self._settle(key, out)
        return out

    def _present(self, key: Key) -> bool:
        kind, id_ = key
        return key not in self._removing and id_ in self.view._table(kind)  # type: ignore[arg-type]

    def _settle(self, key: Key, out: list[Change]) -> None:
        """Bring one object's view state in line with its latest state and references."""
        kind: Kind = key[0]  # type: ignore[assignment]
        id_ = key[1]
        record = self.latest.get(key)
        current = self.view._table(kind).get(id_)
        ok = record is not None and all(self._present(r) for r in self._refs.get(key, ()))
        if ok:
            if current != record:
                out.append(self.view.apply(kind, id_, record))
                if current is None:  # objects waiting for this one may go in now
                    for dep in sorted(self._dependents.get(key, ())):
                        self._settle(dep, out)
        elif current is not None:
            # Dependents leave the view first: the engine never sees a dangling reference.
            self._removing.add(key)
            try:
                for dep in sorted(self._dependents.get(key, ())):
                    self._settle(dep, out)
            finally:
                self._removing.discard(key)
            out.append(self.view.apply(kind, id_, None))

    def held(self) -> list[Key]:
        """Objects waiting for a reference to appear."""
        return sorted(
            k
            for k in self.latest
            if k[1] not in self.view._table(k[0])  # type: ignore[arg-type]
        )


def wait_caught_up(sync: Sync, revision: int, timeout: float = 5.0) -> list[Change]:
    """Pump until the sync has applied `revision` (tests and one-shot tools)."""
    changes: list[Change] = []
    deadline = time.monotonic() + timeout
    sync.saw_revision(revision)
    while sync.revision < revision:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sync at {sync.revision}, wanted {revision}")
        changes += sync.pump(timeout=0.05)
    return changes


def kinds_of(changes: Iterable[Change]) -> list[tuple[str, str, bool]]:
    """(kind, id, present after) per change: compact for logs and tests."""
    return [(c.kind, c.id, c.new is not None) for c in changes]
