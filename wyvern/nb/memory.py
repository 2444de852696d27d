"""In-process store for fast unit tests. Same semantics as SQLite and etcd, no persistence."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

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


class MemoryStore(Store):
    def __init__(self) -> None:
        self._kv: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix scans
        self._history: list[Batch] = []
        self._revision = 0
        self._compacted = 0
        self._cond = threading.Condition()

    def get(self, key: str) -> KeyValue | None:
        with self._cond:
            return self._kv.get(key)

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        with self._cond:
            start = bisect.bisect_left(self._keys, prefix)
            items: list[KeyValue] = []
            for key in self._keys[start:]:
                if not key.startswith(prefix):
                    break
                kv = self._kv[key]
                items.append(
                    KeyValue(key, b"", kv.create_revision, kv.mod_revision, kv.version)
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
            failed = tuple(i for i, c in enumerate(compares) if not c.holds(self._kv.get(c.key)))
            if failed:
                return TxnResult(False, self._revision, failed)
            puts, deleted = net_effect(puts, deletes)
            if not puts and not any(k in self._kv for k in deleted):
                return TxnResult(True, self._revision)
            rev = self._revision + 1
            events: list[Event] = []
            for p in puts:
                old = self._kv.get(p.key)
                if old is None:
                    bisect.insort(self._keys, p.key)
                    self._kv[p.key] = KeyValue(p.key, p.value, rev, rev, 1)
                else:
                    self._kv[p.key] = KeyValue(
                        p.key, p.value, old.create_revision, rev, old.version + 1
                    )
                events.append(Event("put", p.key, p.value, rev))
            for key in deleted:
                if self._kv.pop(key, None) is not None:
                    self._keys.pop(bisect.bisect_left(self._keys, key))
                    events.append(Event("delete", key, b"", rev))
            self._revision = rev
            self._history.append(Batch(rev, tuple(events)))
            self._cond.notify_all()
            self.ring()
            return TxnResult(True, rev)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        with self._cond:
            start = start_revision if start_revision > 0 else self._revision + 1
        return _MemoryWatch(self, prefix, start)

    def revision(self) -> int:
        with self._cond:
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
