"""A read-only store over one listing: what `wyvern trace` feeds the agent's own sync code,
so the view it simulates is built exactly as an agent builds its own, from the one read
it also names objects by."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from wyvern.nb.store import (
    Compare,
    Delete,
    KeyValue,
    ListResult,
    Put,
    Store,
    StoreError,
    TxnResult,
    Watch,
    prefix_end,
)


class SnapshotStore(Store):
    """Every key of one `list()` result at its revision; writes and watches refuse."""

    def __init__(self, listed: ListResult) -> None:
        self._items = sorted(listed.items, key=lambda kv: kv.key)
        self._keys = [kv.key for kv in self._items]
        self._revision = listed.revision

    def get(self, key: str) -> KeyValue | None:
        i = bisect.bisect_left(self._keys, key)
        return self._items[i] if i < len(self._keys) and self._keys[i] == key else None

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        lo = bisect.bisect_left(self._keys, prefix)
        end = prefix_end(prefix)
        hi = bisect.bisect_left(self._keys, end) if end else len(self._keys)
        return ListResult(self._revision, self._items[lo:hi])

    def revision(self) -> int:
        return self._revision

    def txn(
        self, compares: Sequence[Compare], puts: Sequence[Put] = (), deletes: Sequence[Delete] = ()
    ) -> TxnResult:
        raise StoreError("a snapshot is read-only")

    def watch(self, prefix: str, start_revision: int) -> Watch:
        raise StoreError("a snapshot has no history to watch")

    def compact(self, revision: int) -> None:
        raise StoreError("a snapshot is read-only")

    def grant(self, ttl: float) -> int:
        raise StoreError("a snapshot is read-only")

    def keepalive(self, lease: int) -> bool:
        raise StoreError("a snapshot is read-only")

    def revoke(self, lease: int) -> None:
        raise StoreError("a snapshot is read-only")
