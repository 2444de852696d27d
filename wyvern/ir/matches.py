"""Matches: canonical field → value/mask sets, prerequisites completed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wyvern.ir.fields import (
    _BITS,
    _MASKABLE,
    _PARSED_MAX,
    _PREREQS,
    FIELDS,
    IRError,
    MatchValue,
    _new,
    _setattr,
    parse_value,
    valid_port,
)

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class Match:
    """Field → value or value/mask, canonical (sorted, prerequisites completed, masked).

    Keys are `FIELDS` names or register names. `mask` is None for an exact match.
    Build with `match(...)`.
    """

    items: tuple[tuple[str, int, int | None], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, int, int | None]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _, _ in self.items)

    def get(self, name: str) -> tuple[int, int | None] | None:
        for n, v, m in self.items:
            if n == name:
                return v, m
        return None

    def exact(self, name: str) -> int | None:
        """The value if `name` is matched exactly, else None."""
        got = self.get(name)
        return got[0] if got is not None and got[1] is None else None

    def names(self) -> frozenset[str]:
        return frozenset(n for n, _, _ in self.items)


def match(**fields: MatchValue) -> Match:
    """A canonical Match. Unambiguous OpenFlow prerequisites are added (ipv4_src → eth_type)."""
    items: list[tuple[str, int, int | None]] = []
    prereqs = False
    memo = _ITEMS
    plain = _PLAIN_INT
    for name, raw in fields.items():
        if raw.__class__ is int:  # a key or register value: no parsing, no prerequisites
            top = plain.get(name)
            if top is not None and 0 <= raw <= top:
                items.append((name, raw, None))
                continue
        try:
            got = memo.get((name, type(raw), raw))
        except TypeError:  # unhashable: not a MatchValue, _match_item says why
            got = None
        if got is None:
            got = _match_item(name, raw)
        items.append(got[0])
        prereqs = prereqs or got[1]
    if prereqs:
        # What completing the prerequisites adds (or why it fails) depends only on which
        # fields are present and the values of those that are prerequisites themselves.
        targets = _PREREQ_TARGETS
        shape = tuple([it if it[0] in targets else it[0] for it in items])
        plan = _PREREQ_PLANS.get(shape)
        if plan is None:
            plan = _prereq_plan({n: (v, m) for n, v, m in items})
            if len(_PREREQ_PLANS) >= 4096:
                _PREREQ_PLANS.clear()
            _PREREQ_PLANS[shape] = plan
        if isinstance(plan, str):
            raise IRError(plan)
        items.extend(plan)
    items.sort()
    m: Match = _new(Match)
    _setattr(m, "items", tuple(items))
    return m


# Fields and registers whose int values need only a range check (no prerequisites, no
# port-number rules): name -> largest value.
_PLAIN_INT = {n: (1 << b) - 1 for n, b in _BITS.items() if n not in _PREREQS and n != "in_port"}


# (name, type, raw value) -> (the Match item, whether the field has prerequisites)
_ITEMS: dict[tuple[str, type, object], tuple[tuple[str, int, int | None], bool]] = {}


def _match_item(name: str, raw: MatchValue) -> tuple[tuple[str, int, int | None], bool]:
    """One field of match(): checked, canonical, and memoised when hashable."""
    bits = _BITS.get(name)
    if bits is None:
        raise IRError(f"match: unknown field or register {name!r}")
    if type(raw) is int and raw >= 0 and not raw >> bits:
        value, mask = raw, (1 << bits) - 1  # the common case, fast
    else:
        value, mask = parse_value(name, raw)
        if mask == 0:
            raise IRError(f"match: {name} with mask 0 matches anything; leave it out")
    full = mask == (1 << bits) - 1
    if not full and name not in _MASKABLE:
        raise IRError(f"match: {name} cannot be masked")
    if name == "in_port" and not valid_port(value):
        raise IRError(f"match: bad in_port {value}")
    got = ((name, value, None if full else mask), name in _PREREQS)
    try:
        if len(_ITEMS) >= _PARSED_MAX:
            _ITEMS.clear()
        _ITEMS[(name, type(raw), raw)] = got
    except TypeError:
        pass
    return got


_PREREQ_TARGETS = frozenset(pre for pres in _PREREQS.values() for pre, _ in pres)
_PREREQ_PLANS: dict[tuple[object, ...], tuple[tuple[str, int, None], ...] | str] = {}


def _prereq_plan(
    fields: Mapping[str, tuple[int, int | None]],
) -> tuple[tuple[str, int, None], ...] | str:
    """The prerequisites to add to a match's fields (as items), or the error message."""
    table = dict(fields)
    added: dict[str, tuple[int, None]] = {}
    prereqs = True
    while prereqs:
        prereqs = False
        for name in [n for n in table if n in _PREREQS]:
            for pre, allowed in _PREREQS[name]:
                if pre not in table:
                    if len(allowed) != 1:
                        choices = ", ".join(f"{v:#x}" for v in sorted(allowed))
                        return f"match: {name} needs {pre} (one of {choices})"
                    table[pre] = added[pre] = (next(iter(allowed)), None)
                    prereqs = True
                elif table[pre][1] is not None or table[pre][0] not in allowed:
                    return f"match: {name} needs {pre} in {sorted(allowed)}"
    return tuple((n, v, None) for n, (v, _) in added.items())


_make_match = match  # Table.flow's `match` parameter shadows the function


def satisfies(m: Match, name: str) -> bool:
    """Whether the match meets the OpenFlow prerequisites of touching field `name`."""
    spec = FIELDS.get(name)
    for pre, allowed in spec.prereqs if spec else ():
        value = m.exact(pre)
        if value is None or value not in allowed or not satisfies(m, pre):
            return False
    return True
