"""Templates and tables: the checked builders apps make flows with."""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from wyvern.ir import cookies, pipeline, registers
from wyvern.ir.actions import Action, Ct, Load, Meter, Output, SetField
from wyvern.ir.checks import _SETFIELD_SHAPED, _SHAPE_FIELDS, _VALID_SHAPES, _ct_shape
from wyvern.ir.fields import (
    _BITS,
    _MASKABLE,
    _PARSED,
    FIELDS,
    IRError,
    MatchValue,
    _full,
    _new,
    _setattr,
    valid_port,
)
from wyvern.ir.flows import Bucket, Flow, GroupDef
from wyvern.ir.matches import _ITEMS, _PREREQ_PLANS, Match, _make_match, match
from wyvern.ir.pipeline import Stage, StageName


class FlowTemplate:
    """Many flows of one shape, built fast: the stage, priority, actions, the fixed match
    fields and the NAMES of the varying ones are checked once, at creation (exactly as
    `Table.flow` checks a flow); `flow()` then only checks each varying value's range.

    Varying fields may not be prerequisites of others (eth_type, ip_proto, icmpv6_type):
    those decide a flow's validity, so they belong in `fixed`. `flow()` takes an int
    (exact match) for each of `varying`, then a canonical (value, mask) pair (mask None:
    exact; see `parse_value`) for each of `masked`; (0, 0) leaves that field out (any
    value; its prerequisites stay, and a field left out cannot make a valid flow invalid).

    Action values may vary too: `action_values` lists the positions in `actions` of
    Load, SetField (unmasked, not vlan_vid), Output and Meter actions whose value each
    flow gives, as an int after the match values (a register's range, the field's bits, a
    valid OpenFlow port, a meter id), and of Ct actions, given whole: a Ct of the sample's shape
    (the same commit, zone, table, NAT kind and family, exec fields), e.g. a per-port
    NAT address and label. The actions given there are samples: the shape is checked with
    them, and no other value can make it invalid.
    """

    __slots__ = (
        "_bits",
        "_fixed",
        "_masked",
        "_n",
        "_n_int",
        "_order",
        "_port_at",
        "_slots",
        "actions",
        "app",
        "flow",
        "names",
        "priority",
        "render_plan",
        "stage",
    )
    render_plan: object  # render.py's, made at the first render of one of its flows
    # flow(cookie, *values) -> Flow: `generic_flow`, compiled for this shape (see _compile)
    flow: Callable[..., Flow]

    def __init__(
        self,
        stage: StageName,
        priority: int,
        cookie_app: str,
        varying: Sequence[str],
        masked: Sequence[str],
        fixed: Mapping[str, MatchValue],
        actions: Sequence[Action],
        action_values: Sequence[int] = (),
    ) -> None:
        names = (*varying, *masked)
        if set(names) & set(fixed) or len(set(names)) != len(names):
            raise IRError("FlowTemplate: a field is both fixed and varying, or given twice")
        bad = [n for n in names if n in _SHAPE_FIELDS or n not in _BITS]
        bad += [n for n in masked if n not in _MASKABLE]
        if bad:
            raise IRError(f"FlowTemplate: {bad} cannot vary (unknown, decides validity, or mask)")
        self.stage = stage
        self.priority = priority
        self.render_plan = None
        self.actions = tuple(actions)
        self.app = cookies.APPS[cookie_app]  # type: ignore[index]
        self.names = tuple(varying)
        self._bits = tuple(_BITS[n] for n in varying)
        self._masked = tuple((n, (1 << _BITS[n]) - 1) for n in masked)
        self._n_int = len(varying)
        self._n = len(names)
        self._port_at = varying.index("in_port") if "in_port" in varying else -1
        self._slots = tuple(_action_slot(self.actions, i) for i in action_values)
        if len({slot[0] for slot in self._slots}) != len(self._slots):
            raise IRError("FlowTemplate: an action value given twice")
        # Check the shape once through the ordinary path, with a sample value per field.
        sample = dict.fromkeys(names, 1)
        probe = table(stage).flow(
            priority=priority,
            cookie=cookies.encode(cookie_app, 0),  # type: ignore[arg-type]
            match=match(**fixed, **sample),
            actions=self.actions,
        )
        self._fixed = tuple(i for i in probe.match.items if i[0] not in sample)
        # Match items are (fixed..., varying...): where each goes in name order (names are
        # unique), so an exact template needs no sort.
        all_names = [i[0] for i in self._fixed] + list(varying)
        order = sorted(range(len(all_names)), key=all_names.__getitem__)
        self._order = operator.itemgetter(*order) if len(order) > 1 else None
        self.flow = self._compile()

    @property
    def match_length(self) -> int:
        """How many items its flows' matches have when no masked field is left out."""
        return len(self._fixed) + self._n

    @property
    def varying_actions(self) -> frozenset[int]:
        """The positions in `actions` whose values its flows give."""
        return frozenset(slot[0] for slot in self._slots)

    def _compile(self) -> Callable[..., Flow]:
        """`generic_flow` as straight-line code for this shape (names, bit widths and
        constants inlined), ~2x faster: apps build a quarter million flows so at 10k
        ports. tests/southbound/test_ir.py checks both give equal flows and errors."""
        n_int, n = self._n_int, self._n
        ns: dict[str, object] = {
            "_new": _new,
            "_set": _setattr,
            "Match": Match,
            "Flow": Flow,
            "valid_port": valid_port,
            "IRError": IRError,
            "_slot_action": _slot_action,
            "_fixed": self._fixed,
            "_slots": self._slots,
            "_actions": self.actions,
            "_stage": self.stage,
            "_template": self,
        }
        params = [f"v{i}" for i in range(n_int)]
        params += [f"m{j}" for j in range(n - n_int)]
        params += [f"a{k}" for k in range(len(self._slots))]
        bad = f"raise IRError('FlowTemplate({self.stage}): wrong cookie app, value count or range')"
        body = ["def flow(cookie, *values):"]
        if params:
            body += [
                "    try:",
                f"        {', '.join(params)}{',' if len(params) == 1 else ''} = values",
                "    except ValueError:",
                f"        {bad}",
            ]
        else:
            body += ["    if values:", f"        {bad}"]
        checks = [f"cookie >> {_OBJECT_BITS} != {self.app}"]
        checks += [f"v{i} >> {bits}" for i, bits in enumerate(self._bits)]
        if self._port_at >= 0:
            checks.append(f"not valid_port(v{self._port_at})")
        body += [f"    if {' or '.join(checks)}:", f"        {bad}"]
        # every match item by name, in name order (names are unique)
        named: list[tuple[str, str]] = [(it[0], f"_fixed[{i}]") for i, it in enumerate(self._fixed)]
        named += [(name, f"({name!r}, v{i}, None)") for i, name in enumerate(self.names)]
        omit = []
        for j, (name, full) in enumerate(self._masked):
            x, k, it = f"x{j}", f"k{j}", f"i{j}"
            body += [
                f"    {x}, {k} = m{j}",
                f"    if {k} is None or {k} == {full}:",
                f"        if not 0 <= {x} <= {full}:",
                f"            raise IRError(f'{name}: {{{x}}} does not fit')",
                f"        {it} = ({name!r}, {x}, None)",
                f"    elif {k} == 0 and {x} == 0:",
                f"        {it} = None",
                f"    elif not 0 < {k} < {full} or {x} & ~{k}:",
                f"        raise IRError(f'{name}: {{{x}:#x}}/{{{k}:#x}} is not a canonical mask')",
                "    else:",
                f"        {it} = ({name!r}, {x}, {k})",
            ]
            named.append((name, it))
            omit.append(f"{it} is None")
        items = "(" + "".join(f"{expr}, " for _, expr in sorted(named)) + ")"
        body.append(f"    items = {items}")
        if omit:
            body += [
                f"    if {' or '.join(omit)}:",
                "        items = tuple([i for i in items if i is not None])",
            ]
        acts = [f"_actions[{i}]" for i in range(len(self.actions))]
        for n_slot, slot in enumerate(self._slots):
            b = f"b{n_slot}"
            if slot[2] < 0:  # a whole action (a Ct): checked each time, never remembered
                body.append(f"    {b} = _slots[{n_slot}][1](a{n_slot})")
            else:
                body += [
                    f"    {b} = _slots[{n_slot}][3].get(a{n_slot})",
                    f"    if {b} is None:",
                    f"        {b} = _slot_action(_stage, _slots[{n_slot}], a{n_slot})",
                ]
            acts[slot[0]] = b
        actions = "_actions" if not self._slots else "(" + "".join(f"{a}, " for a in acts) + ")"
        body += [
            "    m = _new(Match)",
            "    _set(m, 'items', items)",
            "    f = _new(Flow)",
            "    _set(f, 'stage', _stage)",
            f"    _set(f, 'priority', {self.priority})",
            "    _set(f, 'match', m)",
            f"    _set(f, 'actions', {actions})",
            "    _set(f, 'cookie', cookie)",
            "    _set(f, 'template', _template)",
            "    return f",
        ]
        exec("\n".join(body), ns)  # (made above from checked field names and ints only)
        return cast(Callable[..., Flow], ns["flow"])

    def generic_flow(self, cookie: int, *values: int | tuple[int, int | None]) -> Flow:
        """The flow with these values (`varying` ints, then `masked` pairs, then the
        `action_values` ints): the reference `flow` is compiled from."""
        n = self._n_int
        ints = values[:n]
        # (v >> bits is 0 exactly when 0 <= v < 2**bits; map/any keep the loop in C)
        if (
            cookie >> _OBJECT_BITS != self.app
            or len(values) != self._n + len(self._slots)
            or any(map(_rshift, ints, self._bits))
            or (self._port_at >= 0 and not valid_port(ints[self._port_at]))  # type: ignore[arg-type]
        ):
            raise IRError(f"FlowTemplate({self.stage}): wrong cookie app, value count or range")
        items: list[tuple[str, int, int | None]] = [
            *self._fixed,
            *zip(self.names, ints, _NONES, strict=False),  # type: ignore[list-item]
        ]
        if self._masked:
            for (name, full), pair in zip(self._masked, values[n : self._n], strict=True):
                value, mask = pair  # type: ignore[misc]
                if mask == full:
                    mask = None
                elif mask == 0 and value == 0:
                    continue  # any value (e.g. a 0.0.0.0/0 address pair): no match on it
                if mask is not None and (not 0 < mask < full or value & ~mask):
                    raise IRError(f"{name}: {value:#x}/{mask:#x} is not a canonical mask")
                if not 0 <= value <= full:
                    raise IRError(f"{name}: {value} does not fit")
                items.append((name, value, mask))
            items.sort()
            match_items = tuple(items)
        elif self._order is not None:
            match_items = self._order(items)
        else:
            match_items = tuple(items)
        actions = self.actions
        if self._slots:
            acts = list(actions)
            for (i, make, top, made), v in zip(self._slots, values[self._n :], strict=True):
                if top < 0:  # a whole action of the sample's shape (a Ct)
                    acts[i] = make(v)
                    continue
                try:  # (keys recur: one action object per value)
                    a = made.get(v)  # type: ignore[arg-type]
                except TypeError:  # unhashable: not an int
                    a = None
                if a is None:
                    if type(v) is not int or not (0 <= v <= top if top else valid_port(v)):
                        raise IRError(f"FlowTemplate({self.stage}): action value {v!r} invalid")
                    a = make(v)
                    if len(made) >= _MADE_MAX:
                        made.clear()
                    made[v] = a
                acts[i] = a
            actions = tuple(acts)
        setattr_ = _setattr
        m: Match = _new(Match)
        setattr_(m, "items", match_items)
        f: Flow = _new(Flow)  # valid by construction: no __init__/__post_init__
        setattr_(f, "stage", self.stage)
        setattr_(f, "priority", self.priority)
        setattr_(f, "match", m)
        setattr_(f, "actions", actions)
        setattr_(f, "cookie", cookie)
        setattr_(f, "template", self)
        return f


_MADE_MAX = 1 << 14  # actions remembered per varying action of a template


def _slot_action(
    stage: str, slot: tuple[int, Callable[[Any], Action], int, dict[int, Action]], v: object
) -> Action:
    """A varying action's action for value v (checked, then remembered)."""
    _, make, top, made = slot
    if top < 0:  # a whole action of the sample's shape (a Ct): checked, not remembered
        return make(v)
    if type(v) is not int or not (0 <= v <= top if top else valid_port(v)):
        raise IRError(f"FlowTemplate({stage}): action value {v!r} invalid")
    a = make(v)
    if len(made) >= _MADE_MAX:
        made.clear()
    made[v] = a
    return a


def _action_slot(
    actions: tuple[Action, ...], i: int
) -> tuple[int, Callable[[Any], Action], int, dict[int, Action]]:
    """(position, maker from a value, largest value or 0 for a port, the actions made so
    far by value: shared by every template varying that kind of action) of a varying
    action."""
    if not 0 <= i < len(actions):
        raise IRError(f"FlowTemplate: no action at position {i}")
    a = actions[i]
    t = type(a)
    if t is Load:
        reg = cast(Load, a).register
        made = _MADE.setdefault((Load, reg), {})
        return i, functools.partial(Load, reg), registers.register(reg).max_value, made
    if t is SetField:
        sf = cast(SetField, a)
        spec = FIELDS.get(sf.field)
        if spec is not None and sf.field in _SETFIELD_SHAPED and sf.mask is None:
            made = _MADE.setdefault((SetField, sf.field), {})
            return i, functools.partial(SetField, sf.field), _full(spec.bits), made
    if t is Output:
        return i, Output, 0, _MADE.setdefault((Output, ""), {})
    if t is Meter:  # (Meter itself refuses 0)
        return i, Meter, 0xFFFF0000, _MADE.setdefault((Meter, ""), {})
    if t is Ct:
        shape = _ct_shape(cast(Ct, a))
        if shape is not None:
            return i, functools.partial(_same_ct, shape), -1, {}
    raise IRError(f"FlowTemplate: the value of {a!r} cannot vary")


def _same_ct(shape: tuple[object, ...], v: object) -> Action:
    """V, a Ct whose validity is the sample's (other NAT address, other exec values:
    per-port translations made fast), else IRError."""
    if type(v) is not Ct or _ct_shape(v) != shape:
        raise IRError(f"FlowTemplate: {v!r} is not a Ct of the template's shape")
    return v


# (action type, register or field) -> value -> the action: one zone's Load serves the
# classifier's flow and the port's four pre_acl flows
_MADE: dict[tuple[type, str], dict[int, Action]] = {}


_rshift = operator.rshift
_OBJECT_BITS = cookies.OBJECT_BITS
_NONES = itertools.repeat(None)


class Table:
    """The checked builder for one stage's flows (see the module docstring)."""

    __slots__ = ("stage",)

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    @property
    def number(self) -> int:
        return pipeline.table_of(self.stage.name)

    def flow(
        self,
        *,
        priority: int,
        cookie: int,
        match: Match | Mapping[str, MatchValue] = Match(),
        actions: Sequence[Action] = (),
    ) -> Flow:
        m = match if isinstance(match, Match) else _make_match(**match)
        return Flow(self.stage.name, priority, m, tuple(actions), cookie)

    def template(
        self,
        *,
        priority: int,
        cookie_app: str,
        varying: Sequence[str],
        masked: Sequence[str] = (),
        fixed: Mapping[str, MatchValue] | None = None,
        actions: Sequence[Action] = (),
        action_values: Sequence[int] = (),
    ) -> FlowTemplate:
        """A FlowTemplate of this stage (see there)."""
        return FlowTemplate(
            self.stage.name,
            priority,
            cookie_app,
            varying,
            masked,
            fixed or {},
            actions,
            action_values,
        )

    def group(
        self,
        group_id: int,
        type: Literal["all", "select", "indirect"],
        buckets: Sequence[Bucket | Sequence[Action]],
    ) -> GroupDef:
        bs = tuple(b if isinstance(b, Bucket) else Bucket(tuple(b)) for b in buckets)
        return GroupDef(group_id, type, bs, self.stage.name)

    def __repr__(self) -> str:
        return f"Table({self.stage.name}={self.number})"


_TABLES: dict[str, Table] = {s.name: Table(s) for s in pipeline.PIPELINE}


def table(name: StageName) -> Table:
    """The checked flow builder of a stage."""
    try:
        return _TABLES[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}") from None


def _check_declarations() -> None:
    known = set(FIELDS) | set(registers.BY_NAME)
    for st in pipeline.PIPELINE:
        for kind, names in (("match", st.match), ("writes", st.writes)):
            bad = names - known
            if bad:
                raise AssertionError(f"pipeline stage {st.name} {kind}: unknown {sorted(bad)}")


_check_declarations()


def clear_caches() -> None:
    """Forget every memo of values and shapes (benchmarks measure a cold start; tests
    compare cold with warm). FlowTemplates stay valid: they hold their checked shape."""
    _PARSED.clear()
    _ITEMS.clear()
    _PREREQ_PLANS.clear()
    _VALID_SHAPES.clear()
    for made in _MADE.values():
        made.clear()
