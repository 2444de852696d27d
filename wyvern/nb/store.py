"""The northbound store interface: versioned keys, all-or-nothing transactions, ordered watches.

Every backend (memory, SQLite, etcd) implements exactly these semantics, which are etcd's:
a global revision that every successful write transaction bumps by one, per-key
create/mod revisions and versions, and watches that deliver every change in revision
order or say explicitly that history is gone (`Gap`).

Leases are etcd's too: a key put with a lease is deleted by the store, with ordinary delete
events, when the lease expires (no keepalive within its TTL) or is revoked. Liveness then
costs no events while alive, and every watcher sees the death in revision order.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

CompareTarget = Literal["version", "create", "mod", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


class StoreError(Exception):
    """The store could not be reached or refused the request."""


class StoreUnavailable(StoreError):
    """The store cannot serve the request now (unreachable, read-only, disk full); the same
    request may succeed later, so the API answers 503 with Retry-After."""


class TxnTooLarge(StoreError):
    """A transaction has more operations than the store accepts in one (etcd's
    --max-txn-ops): nothing was applied, and retrying the same request cannot help."""

    def __init__(self, ops: int, limit: int) -> None:
        super().__init__(
            f"the request needs {ops} operations in one store transaction, more than the"
            f" store's limit of {limit} (etcd --max-txn-ops; Wyvern's etcd_max_txn_ops)"
        )
        self.ops = ops
        self.limit = limit


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0  # the lease the key is attached to (0: none)


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction, evaluated against the key's current state.

    An absent key has version, create and mod revision 0 and value b"".
    """

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | bytes

    def holds(self, kv: KeyValue | None) -> bool:
        current: int | bytes
        if self.target == "value":
            current = kv.value if kv else b""
        elif self.target == "version":
            current = kv.version if kv else 0
        elif self.target == "create":
            current = kv.create_revision if kv else 0
        else:
            current = kv.mod_revision if kv else 0
        operand = self.operand
        if type(current) is not type(operand):
            return False
        if self.op == "==":
            return current == operand
        if self.op == "!=":
            return current != operand
        if self.op == "<":
            return current < operand  # type: ignore[operator]
        return current > operand  # type: ignore[operator]


def absent(key: str) -> Compare:
    """Create-if-absent guard: the building block of every uniqueness claim."""
    return Compare(key, "version", "==", 0)


def unchanged(key: str, mod_revision: int) -> Compare:
    """Optimistic-concurrency guard: the key still has the revision we read."""
    return Compare(key, "mod", "==", mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    """Write a key; with a lease the key dies with it, without one it is detached (as etcd)."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    # Indexes (into the compares given) of the guards that did not hold.
    failed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one revision (one transaction), in the order it wrote them."""

    revision: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """History before `compact_revision` is gone: the watcher must resync its prefix."""

    compact_revision: int


@dataclass(slots=True)
class ListResult:
    revision: int
    items: list[KeyValue] = field(default_factory=list)


class Watch(abc.ABC):
    """An ordered stream of changes under one prefix.

    `next()` returns the next Batch (strictly increasing revisions, none skipped for the
    prefix), a Gap (after which the watch is finished), or None on timeout.
    """

    @abc.abstractmethod
    def next(self, timeout: float | None = None) -> Batch | Gap | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Batch | Gap]:
        while True:
            item = self.next(timeout=None)
            if item is None:  # without a timeout, None only means the watch was closed
                return
            yield item
            if isinstance(item, Gap):
                return


class Store(abc.ABC):
    #: The most operations one txn may hold (guards, or puts plus deletes), or None for no
    #: limit. A bigger txn raises TxnTooLarge and applies nothing; callers that can split
    #: their work safely (a cascade delete) stay within it.
    max_txn_ops: int | None = None

    #: How often a reader waiting on `doorbell` must look anyway (None: the doorbell is
    #: rung for every change a watch of this store can see; SQLite: not for changes
    #: other processes commit).
    doorbell_poll: float | None = None

    #: False while requests are known to go unanswered (etcd: since one failed, until
    #: one succeeds). Work that can wait (an agent's status writes, its interest lookups)
    #: is skipped meanwhile instead of blocking a loop for a request timeout each time.
    reachable: bool = True

    def add_doorbell(self, bell: threading.Event) -> None:
        """Set `bell` whenever a watch of this store may have something new, so one reader
        can wait on many watches at once (Sync.pump with dozens of followed prefixes)."""
        bells: set[threading.Event] = self.__dict__.setdefault("_doorbells", set())
        bells.add(bell)

    def remove_doorbell(self, bell: threading.Event) -> None:
        self.__dict__.get("_doorbells", set()).discard(bell)

    def ring(self) -> None:
        for bell in list(self.__dict__.get("_doorbells", ())):
            bell.set()

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        """All keys under prefix, sorted by key, read at one revision."""

    @abc.abstractmethod
    def txn(
        self,
        compares: Sequence[Compare],
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        """Apply puts then deletes if every compare holds; otherwise change nothing.

        A put naming a lease that does not exist (expired, revoked, never granted) raises
        StoreError and nothing is applied (etcd checks this only when the compares hold).
        """

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Events under prefix with revision >= start_revision, in revision order."""

    @abc.abstractmethod
    def revision(self) -> int: ...

    @abc.abstractmethod
    def compact(self, revision: int) -> None:
        """Forget history before revision (watches from earlier get a Gap)."""

    @abc.abstractmethod
    def grant(self, ttl: float) -> int:
        """A new lease (id > 0) that expires `ttl` seconds from now unless kept alive; its
        keys then go in one revision per lease, as on revoke. etcd rounds up to whole
        seconds and to its minimum TTL."""

    @abc.abstractmethod
    def keepalive(self, lease: int) -> bool:
        """Push the lease's expiry to a full TTL from now, without any event; False if it is
        gone (expired or revoked), and then the caller must grant a new one. StoreError when
        the store cannot tell (etcd without a leader)."""

    @abc.abstractmethod
    def revoke(self, lease: int) -> None:
        """End the lease now: its keys are deleted in one revision (as etcd does). An
        unknown lease is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def prefix_end(prefix: str) -> str:
    """The first string after every string that starts with prefix.

    Increments the last code point: UTF-8 byte order equals code point order, so this is
    right for SQLite's binary collation. "" means no upper bound.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be encoded
            last = 0xE000
        if last <= 0x10FFFF:
            return "".join(chars) + chr(last)
    return ""


def net_effect(puts: Sequence[Put], deletes: Sequence[Delete]) -> tuple[list[Put], list[str]]:
    """What a txn does per key: the last put wins, a delete beats a put (as in our etcd
    backend, since etcd itself refuses a txn naming a key twice)."""
    deleted = list(dict.fromkeys(d.key for d in deletes))
    gone = set(deleted)
    final: dict[str, Put] = {}
    for p in puts:
        if p.key not in gone:
            final[p.key] = p
    return list(final.values()), deleted
