"""Derived dependencies: what each computation read of the view, inverted.

The engine hands apps a `ReadingView`: the same tables as the LocalView, each wrapped
in a `_Reads` that notes every key asked for (a lookup, a membership test) or the whole
table (iteration, len). After a computation the engine files its reads in `Deps.rev`,
(table, key) -> the computations that read it. A change names the (table, key) entries
it altered (`view.touched_keys`), and exactly the computations filed under them are
recomputed (OVN's objdep, recorded rather than declared). A recomputation files its
reads afresh; entries are popped when they fire, so a computation that stopped reading
a key leaves it at its next firing.

`LocalView.derive(fn, *args)` values (pure functions several owners share) are
memoised here with their own reads: when one of those changes the value is recomputed,
and only if it differs are its readers recomputed (an early cutoff, as in Salsa). The
memo lives as long as the reads that made it hold.

Granularity: (table, record id) for records; (index, key) for an index's set;
(table, None) for iterating a table; sg_addresses is (group, CIDR) for membership and
(group, None) for iterating a group's addresses. Reads cost one set.add each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from wyvern.model.view import LocalView, T

# Every LocalView table an app may read (the records, then the indexes).
TABLES = (
    "networks", "subnets", "ports", "routers", "security_groups", "rules",
    "address_groups", "chassis", "bindings", "port_chassis", "ports_by_network",
    "subnets_by_network", "ports_by_sg", "rules_by_sg", "routers_by_network",
    "ports_by_ip", "ports_by_mac", "pair_ports_by_network",
)  # fmt: skip
MEMO = "memo"  # the pseudo-table of derived values, keyed (fn, args)

Node = Any  # an engine entry key (app, owner), or a memo key (fn, args)
# table -> key -> a reader, or a list of them (appended to; repeats dropped as it grows)
Reverse = dict[str, dict[Any, Any]]
_MISSING = object()
_EMPTY: dict[Any, Any] = {}


class _Reads:
    """A read-only stand-in for one table that notes the keys read in `seen`."""

    __slots__ = ("_d", "_get", "_note", "seen")

    def __init__(self, d: dict[Any, Any]) -> None:
        self._d = d
        self.seen: set[Any] = set()
        self._get = d.get  # (bound once: these run ~40 times per port in a recompute)
        self._note = self.seen.add

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return self._get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return self._d[key]

    def __contains__(self, key: Any) -> bool:
        self._note(key)
        return key in self._d

    def __iter__(self) -> Iterator[Any]:
        self._note(None)
        return iter(self._d)

    def __len__(self) -> int:
        self._note(None)
        return len(self._d)

    def keys(self) -> Any:
        self._note(None)
        return self._d.keys()

    def values(self) -> Any:
        self._note(None)
        return self._d.values()

    def items(self) -> Any:
        self._note(None)
        return self._d.items()


class _GroupAddresses:
    """One group's sg_addresses: its CIDRs, read one by one (group, CIDR) or all."""

    __slots__ = ("_d", "_seen", "_sg")

    def __init__(self, d: dict[str, int], sg: str, seen: set[Any]) -> None:
        self._d = d
        self._sg = sg
        self._seen = seen

    def __contains__(self, cidr: object) -> bool:
        self._seen.add((self._sg, cidr))
        return cidr in self._d

    def get(self, cidr: str, default: Any = None) -> Any:
        self._seen.add((self._sg, cidr))
        return self._d.get(cidr, default)

    def __iter__(self) -> Iterator[str]:
        self._seen.add((self._sg, None))
        return iter(self._d)

    def __len__(self) -> int:
        self._seen.add((self._sg, None))
        return len(self._d)

    def keys(self) -> Any:
        self._seen.add((self._sg, None))
        return self._d.keys()

    def items(self) -> Any:
        self._seen.add((self._sg, None))
        return self._d.items()


class _SgAddresses(_Reads):
    """sg_addresses: a missing group reads as an empty one (apps only ask about CIDRs)."""

    __slots__ = ()

    def get(self, key: Any, default: Any = None) -> Any:
        return _GroupAddresses(self._d.get(key) or _EMPTY, key, self.seen)

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)

    def __contains__(self, key: Any) -> bool:
        self.seen.add((key, None))
        return bool(self._d.get(key))


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

    def clear(self) -> None:
        self.own_kinds.clear()
        self.rev.clear()
        self.rev_memo.clear()
        self.memos.clear()

    def size(self) -> int:
        """How many (table, key) -> reader links are filed (for tests and benchmarks)."""
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


class ReadingView(LocalView):
    """A LocalView whose tables note what is read (one per engine and view)."""

    def __init__(self, view: LocalView, deps: Deps) -> None:  # no dataclass fields set
        self.__dict__["_view"] = view
        self.__dict__["_deps"] = deps
        readers: list[tuple[str, _Reads]] = []
        for name in TABLES:
            r = _Reads(getattr(view, name))
            self.__dict__[name] = r
            readers.append((name, r))
        sga = _SgAddresses(view.sg_addresses)
        self.__dict__["sg_addresses"] = sga
        readers.append(("sg_addresses", sga))
        memo = _Reads(deps.memos)
        readers.append((MEMO, memo))
        self.__dict__["_readers"] = readers
        self.__dict__["_memo_reads"] = memo
        self.chassis_name = view.chassis_name

    @property
    def base(self) -> LocalView:
        view: LocalView = self.__dict__["_view"]
        return view

    def derive(self, fn: Callable[..., T], *args: Any) -> T:
        key = (fn, args)
        memo: _Reads = self.__dict__["_memo_reads"]
        memo.seen.add(key)  # the reader depends on the value, not on what made it
        deps: Deps = self.__dict__["_deps"]
        try:
            value: T = deps.memos[key]
            return value
        except KeyError:
            pass
        readers: list[tuple[str, _Reads]] = self.__dict__["_readers"]
        saved = [(r, set(r.seen)) for _, r in readers if r.seen]
        for r, _ in saved:
            r.seen.clear()
        try:
            value = fn(self, *args)
            self.file(key, deps.rev_memo)
        finally:
            for r, seen in saved:
                r.seen |= seen
        deps.memos[key] = value
        return value

    def file(self, node: Node, rev: Reverse, own: Any = _MISSING) -> None:
        """File the reads since the last file() or discard() under `node`, but those of
        the key `own` (an owner's own id): for those only the (table, owner kind) is kept,
        in Deps.own_kinds, and a change of that key recomputes the owner of that id."""
        own_kinds = self.__dict__["_deps"].own_kinds
        for name, r in self.__dict__["_readers"]:
            seen = r.seen
            if seen:
                table = rev.get(name)
                if table is None:
                    table = rev[name] = {}
                put = table.setdefault
                for key in seen:
                    if key == own:
                        kinds = own_kinds.get(name)
                        if kinds is None:
                            own_kinds[name] = {node[0]}
                        elif node[0] not in kinds:
                            kinds.add(node[0])
                        continue
                    readers = put(key, node)  # one reader: no list (most keys have one)
                    if readers is node:
                        continue
                    if readers.__class__ is list:
                        readers.append(node)
                        n = len(readers)
                        if n >= 8 and not n & (n - 1):  # amortised: drop repeats
                            readers[:] = dict.fromkeys(readers)
                    elif readers is not node:
                        table[key] = [readers, node]
                seen.clear()

    def discard(self) -> None:
        """Forget the reads since the last file() (a computation of nothing to follow)."""
        for _, r in self.__dict__["_readers"]:
            r.seen.clear()
