"""In-process store for fast unit tests. Same semantics as SQLite and etcd, no persistence.

Leases expire on the monotonic clock. Every operation reaps due leases first, and while
leases exist a daemon thread reaps them on time, so a watch (or a doorbell) hears of an
expiry even when nothing else happens.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from wyvern.nb.store import (
    Batch,
    Compare,
    Delete,
    Event,
    Gap,
    KeyValue,
    ListResult,
    Put,
    Store,
    StoreError,
    TxnResult,
    Watch,
    net_effect,
)

_NEVER = float("inf")


@dataclass(slots=True)
class _Lease:
    ttl: float
    expires_at: float  # time.monotonic()
    keys: set[str] = field(default_factory=set)


class MemoryStore(Store):
    def __init__(self) -> None:
        self._kv: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix scans
        self._history: list[Batch] = []
        self._revision = 0
        self._compacted = 0
        self._cond = threading.Condition()
        self._leases: dict[int, _Lease] = {}
        self._last_lease = 0
        self._next_expiry = _NEVER  # the earliest expires_at of any lease
        self._reaper: threading.Thread | None = None

    def get(self, key: str) -> KeyValue | None:
        with self._cond:
            self._expire()
            return self._kv.get(key)

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        with self._cond:
            self._expire()
            start = bisect.bisect_left(self._keys, prefix)
            items: list[KeyValue] = []
            for key in self._keys[start:]:
                if not key.startswith(prefix):
                    break
                kv = self._kv[key]
                items.append(
                    KeyValue(key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                    if keys_only
                    else kv
                )
            return ListResult(self._revision, items)

    def txn(
        self,
        compares: Sequence[Compare],
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        with self._cond:
            self._expire()
            failed = tuple(i for i, c in enumerate(compares) if not c.holds(self._kv.get(c.key)))
            if failed:
                return TxnResult(False, self._revision, failed)
            puts, deleted = net_effect(puts, deletes)
            for p in puts:
                if p.lease and p.lease not in self._leases:
                    raise StoreError(f"requested lease not found: {p.lease}")
            if not puts and not any(k in self._kv for k in deleted):
                return TxnResult(True, self._revision)
            rev = self._revision + 1
            events: list[Event] = []
            for p in puts:
                old = self._kv.get(p.key)
                if old is None:
                    bisect.insort(self._keys, p.key)
                    self._kv[p.key] = KeyValue(p.key, p.value, rev, rev, 1, p.lease)
                else:
                    self._detach(old)
                    self._kv[p.key] = KeyValue(
                        p.key, p.value, old.create_revision, rev, old.version + 1, p.lease
                    )
                if p.lease:
                    self._leases[p.lease].keys.add(p.key)
                events.append(Event("put", p.key, p.value, rev))
            for key in deleted:
                if (gone := self._kv.get(key)) is not None:
                    self._detach(gone)
                    events.append(Event("delete", key, b"", rev))
            self._commit(rev, events, deleted)
            return TxnResult(True, rev)

    def _detach(self, kv: KeyValue) -> None:
        if kv.lease and (lease := self._leases.get(kv.lease)) is not None:
            lease.keys.discard(kv.key)

    def _commit(self, rev: int, events: Sequence[Event], deleted: Sequence[str]) -> None:
        """Drop the deleted keys and publish one revision's events."""
        for key in deleted:
            if self._kv.pop(key, None) is not None:
                self._keys.pop(bisect.bisect_left(self._keys, key))
        self._revision = rev
        self._history.append(Batch(rev, tuple(events)))
        self._cond.notify_all()
        self.ring()

    def _end_lease(self, lease_id: int) -> None:
        """Remove a lease and delete its keys in one revision (sorted, as etcd's lessor)."""
        lease = self._leases.pop(lease_id)
        if lease.keys:
            rev = self._revision + 1
            keys = sorted(lease.keys)
            self._commit(rev, [Event("delete", k, b"", rev) for k in keys], keys)

    def _expire(self) -> None:
        """Reap every due lease (the caller holds _cond): one number compared when none is."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        due = sorted((lease.expires_at, i) for i, lease in self._leases.items())
        for expires_at, lease_id in due:
            if expires_at > now:
                break
            self._end_lease(lease_id)
        self._next_expiry = min((x.expires_at for x in self._leases.values()), default=_NEVER)

    def _reap_loop(self) -> None:
        """Reap on time while any lease exists (then exit; the next grant restarts it)."""
        with self._cond:
            while self._leases:
                self._expire()
                due = self._next_expiry
                self._cond.wait(None if due == _NEVER else max(0.0, due - time.monotonic()))
            self._reaper = None

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ValueError(f"a lease needs a positive TTL, not {ttl}")
        with self._cond:
            self._expire()
            self._last_lease += 1
            expires_at = time.monotonic() + ttl
            self._leases[self._last_lease] = _Lease(ttl, expires_at)
            self._next_expiry = min(self._next_expiry, expires_at)
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap_loop, name="memory-store-leases", daemon=True
                )
                self._reaper.start()
            self._cond.notify_all()
            return self._last_lease

    def keepalive(self, lease: int) -> bool:
        with self._cond:
            self._expire()
            found = self._leases.get(lease)
            if found is None:
                return False
            found.expires_at = time.monotonic() + found.ttl
            self._next_expiry = min(x.expires_at for x in self._leases.values())
            return True

    def revoke(self, lease: int) -> None:
        with self._cond:
            self._expire()
            if lease in self._leases:
                self._end_lease(lease)
                self._next_expiry = min(
                    (x.expires_at for x in self._leases.values()), default=_NEVER
                )
                self._cond.notify_all()  # the reaper may have nothing left to wait for

    def watch(self, prefix: str, start_revision: int) -> Watch:
        with self._cond:
            self._expire()
            start = start_revision if start_revision > 0 else self._revision + 1
        return _MemoryWatch(self, prefix, start)

    def revision(self) -> int:
        with self._cond:
            self._expire()
            return self._revision

    def compact(self, revision: int) -> None:
        with self._cond:
            if revision > self._revision:
                raise StoreError(f"cannot compact to future revision {revision}")
            self._history = [b for b in self._history if b.revision >= revision]
            self._compacted = max(self._compacted, revision)


class _MemoryWatch(Watch):
    def __init__(self, store: MemoryStore, prefix: str, start: int) -> None:
        self._store = store
        self._prefix = prefix
        self._next_rev = start
        self._closed = False
        self._done = False

    def next(self, timeout: float | None = None) -> Batch | Gap | None:
        s = self._store
        with s._cond:
            while not self._closed and not self._done:
                s._expire()
                if self._next_rev < s._compacted:
                    self._done = True
                    return Gap(s._compacted)
                revs = [b.revision for b in s._history]
                i = bisect.bisect_left(revs, self._next_rev)
                for batch in s._history[i:]:
                    self._next_rev = batch.revision + 1
                    events = tuple(e for e in batch.events if e.key.startswith(self._prefix))
                    if events:
                        return Batch(batch.revision, events)
                if not s._cond.wait(timeout):
                    return None
            return None

    def close(self) -> None:
        with self._store._cond:
            self._closed = True
            self._store._cond.notify_all()
