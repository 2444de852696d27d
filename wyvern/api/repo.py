"""Logical objects on the store: key layout, reads, and transactions with claims.

The key layout is wyvern.model.keys (shared with the agents).

Uniqueness is never read-then-write: a claim is an `absent(key)` guard plus a put in the
same transaction as the object that owns it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from wyvern.api.errors import Conflict, NeutronError, RetryRequest
from wyvern.model.keys import (
    CHILD_KINDS,
    index_key,
    intent_key,
    kind_prefix,
    obj_key,
    owner_key,
    owner_prefix,
)
from wyvern.nb.store import Compare, Delete, Put, Store, absent, unchanged

T = TypeVar("T")


@dataclass(slots=True)
class Stored:
    obj: dict[str, Any]
    key: str
    mod_revision: int


@dataclass(slots=True)
class _Guard:
    compare: Compare
    # None: a lost race, so retry the operation; else the error to report.
    error: NeutronError | None


@dataclass
class Txn:
    """Collects guards and writes for one all-or-nothing store transaction."""

    repo: Repo
    guards: list[_Guard] = field(default_factory=list)
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: dict[str, None] = field(default_factory=dict)
    claimed: set[str] = field(default_factory=set)
    created_owned: dict[tuple[str, str], int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)  # key -> the lease it is put with

    def guard(self, compare: Compare, error: NeutronError | None = None) -> None:
        self.guards.append(_Guard(compare, error))

    def put_obj(self, kind: str, obj: dict[str, Any], parent: str | None = None) -> str:
        key = obj_key(kind, obj["id"], parent)
        self.puts[key] = orjson.dumps(obj)
        self.deletes.pop(key, None)
        return key

    def create(
        self, kind: str, obj: dict[str, Any], parent: str | None = None, owned: bool = True
    ) -> None:
        key = obj_key(kind, obj["id"], parent)
        self.guard(absent(key), Conflict(f"{kind} {obj['id']} already exists"))
        self.put_obj(kind, obj, parent)
        if parent:
            self.puts[index_key(kind, obj["id"])] = parent.encode()
        if owned and obj.get("project_id"):
            self.puts[owner_key(obj["project_id"], kind, obj["id"])] = b""
            slot = (obj["project_id"], kind)
            self.created_owned[slot] = self.created_owned.get(slot, 0) + 1

    def update(self, stored: Stored) -> None:
        """Write back a changed object, guarded by the revision it was read at."""
        self.guard(unchanged(stored.key, stored.mod_revision))
        self.puts[stored.key] = orjson.dumps(stored.obj)
        self.deletes.pop(stored.key, None)

    def delete(self, kind: str, stored: Stored, owned: bool = True) -> None:
        self.guard(unchanged(stored.key, stored.mod_revision))
        self.deletes[stored.key] = None
        self.puts.pop(stored.key, None)
        obj = stored.obj
        if stored.key.count("/") > 3:  # a child: drop its id index too
            self.deletes[index_key(kind, obj["id"])] = None
        if owned and obj.get("project_id"):
            self.deletes[owner_key(obj["project_id"], kind, obj["id"])] = None

    def require(self, stored: Stored) -> None:
        """The object must still be exactly as read when this commits."""
        self.guard(unchanged(stored.key, stored.mod_revision))

    def claim(self, key: str, owner: str, error: NeutronError | None) -> None:
        """Create-if-absent `key`; `error` None means: on collision, retry (auto-allocated)."""
        if key in self.claimed:  # two objects of one bulk request want the same value
            raise error if error is not None else RetryRequest()
        self.guard(absent(key), error)
        self.puts[key] = owner.encode()
        self.claimed.add(key)

    def release(self, key: str) -> None:
        self.deletes[key] = None
        self.puts.pop(key, None)

    def put_leased(self, key: str, value: bytes, lease: int) -> None:
        """A key the store deletes when `lease` ends (its process stopped keeping it)."""
        self.puts[key] = value
        self.leases[key] = lease
        self.deletes.pop(key, None)

    def fork(self) -> Txn:
        """A copy to try more operations on (to measure them); this one is unchanged."""
        return Txn(
            self.repo,
            list(self.guards),
            dict(self.puts),
            dict(self.deletes),
            set(self.claimed),
            dict(self.created_owned),
            dict(self.leases),
        )

    def size(self) -> int:
        """Operations as a store with a txn limit counts them (guards, or writes)."""
        return max(len(self.guards), len(self.puts) + len(self.deletes))

    def commit(self) -> int:
        compares = [g.compare for g in self.guards]
        result = self.repo.store.txn(
            compares,
            [Put(k, v, self.leases.get(k, 0)) for k, v in self.puts.items()],
            [Delete(k) for k in self.deletes],
        )
        if result.succeeded:
            return result.revision
        failed = [self.guards[i] for i in result.failed]
        if any(g.error is None for g in failed):
            raise RetryRequest()
        raise failed[0].error  # type: ignore[misc]


class Repo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def txn(self) -> Txn:
        return Txn(self)

    def get(self, kind: str, id_: str, parent: str | None = None) -> Stored | None:
        if parent is None and kind in CHILD_KINDS:
            kv = self.store.get(index_key(kind, id_))
            if kv is None:
                return None
            parent = kv.value.decode()
        key = obj_key(kind, id_, parent)
        kv = self.store.get(key)
        if kv is None:
            return None
        stored = Stored(orjson.loads(kv.value), key, kv.mod_revision)
        return self._settled(kind, stored) if stored.obj.get("_deleting") else stored

    def scan(self, kind: str, parent: str | None = None) -> list[Stored]:
        prefix = kind_prefix(kind, parent)
        out = []
        for kv in self.store.list(prefix).items:
            stored = Stored(orjson.loads(kv.value), kv.key, kv.mod_revision)
            out.append(self._settled(kind, stored) if stored.obj.get("_deleting") else stored)
        return out

    def _settled(self, kind: str, stored: Stored) -> Stored:
        """An object marked `_deleting` whose intent is gone: the process deleting it died
        (its lease ran out) between the mark and the delete, or older code marked it.
        Nothing was deleted (the delete is one transaction, or chunks that each leave a
        consistent store), so the mark is undone here, by whichever process reads it
        first; a live delete keeps its intent and its mark."""
        if self.store.get(intent_key(kind, str(stored.obj["id"]))) is not None:
            return stored
        stored.obj.pop("_deleting", None)
        txn = self.txn()
        txn.update(stored)
        try:
            revision = txn.commit()
        except RetryRequest:  # someone else settled or changed it first: read it again
            kv = self.store.get(stored.key)
            if kv is None:
                return stored
            return Stored(orjson.loads(kv.value), stored.key, kv.mod_revision)
        return Stored(stored.obj, stored.key, revision)

    def settle_marks(self) -> None:
        """Undo every abandoned delete mark (at API start; reads also do it lazily)."""
        for kind in MARKED_KINDS:
            self.scan(kind)

    def objects(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        return [s.obj for s in self.scan(kind, parent)]

    def count_owned(self, project: str, kind: str) -> int:
        return len(self.store.list(owner_prefix(project, kind), keys_only=True).items)

    def claims(self, prefix: str) -> dict[str, str]:
        """Existing claims under a uniq prefix: claimed value -> owner."""
        out: dict[str, str] = {}
        for kv in self.store.list(prefix).items:
            out[kv.key[len(prefix) :]] = kv.value.decode()
        return out

    def claim_owner(self, key: str) -> str | None:
        kv = self.store.get(key)
        return kv.value.decode() if kv else None

    # The store's verb, bound last so `list[...]` annotations above still mean the builtin.
    list = scan


# Kinds stored under a parent id (need the index to be found by id alone).


# Kinds deleted in two steps (mark, then delete): see wyvern.api.resource.delete_marked.
# A deleting process keeps its intent's lease alive every INTENT_TTL/3 seconds; silent for
# INTENT_TTL (dead, or cut off from the store), its mark is undone by the next reader.
INTENT_TTL = 10.0
MARKED_KINDS = ("networks", "subnets", "security_groups", "address_groups")


def with_retries(fn: Callable[[], T], attempts: int = 60) -> T:
    """Run an optimistic operation until its guards hold (lost races are re-run)."""
    for i in range(attempts):
        try:
            return fn()
        except RetryRequest:
            time.sleep(random.uniform(0, min(0.05, 0.002 * (i + 1))))
    raise Conflict("The operation conflicted with concurrent changes; please retry.")
