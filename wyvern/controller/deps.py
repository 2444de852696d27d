"""Derived dependencies: what each computation read of the view, inverted.

The engine hands apps a `ReadingView`: the same tables as the LocalView, each wrapped
in a `_Reads` that logs every key asked for (a lookup, a membership test) or the whole
table (iteration, len) as (table, key), in one list all the tables share. After a
computation the engine files its reads in `Deps.rev`, (table, key) -> the computations
that read it; a full recompute only sets each computation's log aside (`hold`), and
`Deps.settle()` files them later, once per owner with the union of its apps' reads.
A change names the (table, key) entries it altered (`view.touched_keys`), and exactly
the computations filed under them are recomputed (OVN's objdep, recorded rather than
declared). A recomputation files its reads afresh; entries are popped when they fire,
so a computation that stopped reading a key leaves it at its next firing.

`LocalView.derive(fn, *args)` values (pure functions several owners share) are
memoised here with their own reads: when one of those changes the value is recomputed,
and only if it differs are its readers recomputed (an early cutoff, as in Salsa). The
memo lives as long as the reads that made it hold.

Granularity: (table, record id) for records; (index, key) for an index's set;
(table, None) for iterating a table; sg_addresses is (group, CIDR) for membership and
(group, None) for iterating a group's addresses. A read costs one list.extend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from wyvern.model.view import LocalView, T

# Every LocalView table an app may read (the records, then the indexes).
TABLES = (
    "networks", "subnets", "ports", "routers", "security_groups", "rules",
    "address_groups", "chassis", "mac_bindings", "floatingips", "chassis_down", "bindings",
    "port_chassis", "gateway_hosts", "metering_labels",
    "address_groups", "qos_policies", "chassis", "mac_bindings", "floatingips", "chassis_down",
    "bindings", "port_chassis", "gateway_hosts",
    "ports_by_network", "subnets_by_network", "ports_by_sg", "rules_by_sg", "routers_by_network",
    "ports_by_ip", "ports_by_mac", "pair_ports_by_network", "fips_by_fixed",
)  # fmt: skip
MEMO = "memo"  # the pseudo-table of derived values, keyed (fn, args)
SG_ADDRESSES = "sg_addresses"

Node = Any  # an engine entry key (app, owner), or a memo key (fn, args)
# table -> key -> a reader, or a list of them (appended to; repeats dropped as it grows)
Reverse = dict[str, dict[Any, Any]]
Read = tuple[str, Any]  # (table, key); key None: the whole table
_MISSING = object()
_EMPTY: dict[Any, Any] = {}


class _Reads:
    """A read-only stand-in for one table that logs each key read as (table, key)."""

    __slots__ = ("_d", "_get", "_name", "_note")

    def __init__(self, d: dict[Any, Any], name: str, log: list[Any]) -> None:
        self._d = d
        self._name = name
        self._get = d.get  # (bound once: these run ~30 times per port in a recompute)
        self._note = log.extend  # (name, key) go in flat: see ReadingView

    def get(self, key: Any, default: Any = None) -> Any:
        self._note((self._name, key))
        return self._get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._note((self._name, key))
        return self._d[key]

    def __contains__(self, key: Any) -> bool:
        self._note((self._name, key))
        return key in self._d

    def __iter__(self) -> Iterator[Any]:
        self._note((self._name, None))
        return iter(self._d)

    def __len__(self) -> int:
        self._note((self._name, None))
        return len(self._d)

    def keys(self) -> Any:
        self._note((self._name, None))
        return self._d.keys()

    def values(self) -> Any:
        self._note((self._name, None))
        return self._d.values()

    def items(self) -> Any:
        self._note((self._name, None))
        return self._d.items()


class _GroupAddresses:
    """One group's sg_addresses: its CIDRs, read one by one (group, CIDR) or all."""

    __slots__ = ("_d", "_note", "_sg")

    def __init__(self, d: dict[str, int], sg: str, note: Callable[[Read], object]) -> None:
        self._d = d
        self._sg = sg
        self._note = note

    def __contains__(self, cidr: object) -> bool:
        self._note((SG_ADDRESSES, (self._sg, cidr)))
        return cidr in self._d

    def get(self, cidr: str, default: Any = None) -> Any:
        self._note((SG_ADDRESSES, (self._sg, cidr)))
        return self._d.get(cidr, default)

    def __iter__(self) -> Iterator[str]:
        self._note((SG_ADDRESSES, (self._sg, None)))
        return iter(self._d)

    def __len__(self) -> int:
        self._note((SG_ADDRESSES, (self._sg, None)))
        return len(self._d)

    def keys(self) -> Any:
        self._note((SG_ADDRESSES, (self._sg, None)))
        return self._d.keys()

    def items(self) -> Any:
        self._note((SG_ADDRESSES, (self._sg, None)))
        return self._d.items()


class _SgAddresses(_Reads):
    """sg_addresses: a missing group reads as an empty one (apps only ask about CIDRs)."""

    __slots__ = ()

    def get(self, key: Any, default: Any = None) -> Any:
        return _GroupAddresses(self._d.get(key) or _EMPTY, key, self._note)

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)

    def __contains__(self, key: Any) -> bool:
        self._note((SG_ADDRESSES, (key, None)))
        return bool(self._d.get(key))


_DONE: tuple[Node, Any, list[Any]] = (None, None, [])


def _pairs(log: list[Any], start: int = 0) -> set[Read]:
    """The distinct (table, key) reads in a flat log, from index START (even)."""
    return set(zip(log[start::2], log[start + 1 :: 2], strict=True))


def _nodes(readers: Any) -> list[Node] | tuple[Node, ...]:
    """A filed reader entry as nodes: a list of them (repeats possible), or one alone."""
    if readers is None:
        return ()
    if readers.__class__ is list:
        nodes: list[Node] = readers
        return nodes
    return (readers,)


def _add(todo: set[Node], readers: Any) -> None:
    if readers is None:
        return
    if readers.__class__ is list:
        todo.update(readers)
    else:
        todo.add(readers)


class Deps:
    """The reverse map of reads and the memoised derived values."""

    def __init__(self) -> None:
        self.rev: Reverse = {}  # reads of engine entries
        self.rev_memo: Reverse = {}  # reads of derived values
        self.memos: dict[Any, Any] = {}
        # table -> the owner kinds that read, in it, the key of their own id
        self.own_kinds: dict[str, set[str]] = {}
        # reads logged but not filed yet (a full recompute's): (node, own id, flat reads)
        self.held: list[tuple[Node, Any, list[Any]]] = []

    def settle(self) -> int:
        """File the held reads (before the next change, or when the agent is idle);
        returns how many computations were filed. A node held several times (one owner
        in several apps) is filed once, with the union of its reads."""
        held = self.held
        if not held:
            return 0
        self.held = []
        # One node at a time, its reads made into pairs and dropped once filed (all of
        # them at once would be ~650k tuples at 10k ports, between the filed entries).
        by_node: dict[Node, list[int]] = {}
        for i, (node, _, _) in enumerate(held):
            at = by_node.get(node)
            if at is None:
                by_node[node] = [i]
            else:
                at.append(i)
        rev, own_kinds = self.rev, self.own_kinds
        for node, at in by_node.items():
            own = held[at[0]][1]
            seen = _pairs(held[at[0]][2])
            for i in at[1:]:
                seen |= _pairs(held[i][2])
            _file(rev, own_kinds, node, own, seen)
            for i in at:
                held[i] = _DONE
        return len(by_node)

    def clear(self) -> None:
        self.held = []
        self.own_kinds.clear()
        self.rev.clear()
        self.rev_memo.clear()
        self.memos.clear()

    def size(self) -> int:
        """How many (table, key) -> reader links are filed (for tests and benchmarks)."""
        self.settle()
        return sum(
            len(_nodes(s))
            for rev in (self.rev, self.rev_memo)
            for t in rev.values()
            for s in t.values()
        )

    def fire(self, touched: dict[str, set[Any]], view: ReadingView) -> set[Node]:
        """The entries to recompute after the view changed at `touched` ({table: keys}):
        the readers of those keys, and the readers of each derived value they altered
        (recomputed here, against the new view)."""
        todo: set[Node] = set()
        stale: dict[Any, Any] = {}
        for name, keys in touched.items():
            rt = self.rev.get(name)
            rm = self.rev_memo.get(name)
            for key in keys:
                if rt is not None:
                    readers = rt.pop(key, None)
                    if readers is not None:
                        _add(todo, readers)
                if rm is not None:
                    readers = rm.pop(key, None)
                    if readers is not None:
                        for m in _nodes(readers):
                            if m not in stale:
                                stale[m] = self.memos.pop(m, _MISSING)
        # values computed from stale values are stale too
        queue = list(stale)
        rmm = self.rev_memo.get(MEMO)
        while queue and rmm:
            for m in _nodes(rmm.pop(queue.pop(), None)):
                if m not in stale:
                    stale[m] = self.memos.pop(m, _MISSING)
                    queue.append(m)
        rme = self.rev.get(MEMO)
        for m, old in stale.items():
            fn, args = m
            new = view.derive(fn, *args)
            view.discard()
            if new != old and rme is not None:
                _add(todo, rme.pop(m, None))
        return todo


def _file(
    rev: Reverse, own_kinds: dict[str, set[str]], node: Node, own: Any, reads: set[Read]
) -> None:
    """File `reads` under `node`, those of the key `own` by owner kind only."""
    tables: dict[str, dict[Any, Any]] = {}
    for name, key in reads:
        if key == own:
            kinds = own_kinds.get(name)
            if kinds is None:
                own_kinds[name] = {node[0]}
            elif node[0] not in kinds:
                kinds.add(node[0])
            continue
        table = tables.get(name)
        if table is None:
            table = rev.get(name)
            if table is None:
                table = rev[name] = {}
            tables[name] = table
        readers = table.setdefault(key, node)  # one reader: no list (most keys have one)
        if readers is node:
            continue
        if readers.__class__ is list:
            readers.append(node)
            n = len(readers)
            if n >= 8 and not n & (n - 1):  # amortised: drop repeats
                readers[:] = dict.fromkeys(readers)
        else:
            table[key] = [readers, node]


class ReadingView(LocalView):
    """A LocalView whose tables log what is read (one per engine and view)."""

    def __init__(self, view: LocalView, deps: Deps) -> None:  # no dataclass fields set
        self.__dict__["_view"] = view
        self.__dict__["_deps"] = deps
        # Reads go in flat, table then key ([t0, k0, t1, k1, ...]): a (table, key) tuple
        # per read, kept until settle() files a full recompute's reads, took ~40 MiB at
        # 10k ports and left the allocator's pools of its size half empty after.
        log: list[Any] = []
        self.__dict__["_log"] = log
        for name in TABLES:
            self.__dict__[name] = _Reads(getattr(view, name), name, log)
        self.__dict__[SG_ADDRESSES] = _SgAddresses(view.sg_addresses, SG_ADDRESSES, log)
        self.chassis_name = view.chassis_name

    @property
    def base(self) -> LocalView:
        view: LocalView = self.__dict__["_view"]
        return view

    def derive(self, fn: Callable[..., T], *args: Any) -> T:
        key = (fn, args)
        log: list[Any] = self.__dict__["_log"]
        deps: Deps = self.__dict__["_deps"]
        try:
            value: T = deps.memos[key]
        except KeyError:
            start = len(log)
            try:
                value = fn(self, *args)
                _file(deps.rev_memo, deps.own_kinds, key, _MISSING, _pairs(log, start))
            finally:
                del log[start:]  # the reader depends on the value, not on what made it
            deps.memos[key] = value
        log.append(MEMO)
        log.append(key)
        return value

    def file(self, node: Node, rev: Reverse, own: Any = _MISSING) -> None:
        """File the reads since the last file(), hold() or discard() under `node`, but
        those of the key `own` (an owner's own id): for those only the (table, owner
        kind) is kept, in Deps.own_kinds, and a change of that key recomputes the owner
        of that id."""
        log: list[Any] = self.__dict__["_log"]
        _file(rev, self.__dict__["_deps"].own_kinds, node, own, _pairs(log))
        log.clear()

    def hold(self, node: Node, own: Any = _MISSING) -> None:
        """file() later (Deps.settle()): the reads are only set aside, as logged."""
        log: list[Any] = self.__dict__["_log"]
        self.__dict__["_deps"].held.append((node, own, log.copy()))
        log.clear()

    def discard(self) -> None:
        """Forget the reads since the last file() (a computation of nothing to follow)."""
        self.__dict__["_log"].clear()
