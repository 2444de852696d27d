"""Checks: what makes a flow valid in its stage, and the memo of valid shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from wyvern.ir import pipeline, registers
from wyvern.ir.actions import (
    Action,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Goto,
    Group,
    Load,
    Meter,
    Move,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    field_bits,
    setfield_value,
)
from wyvern.ir.fields import ETH_TYPE_IP, ETH_TYPE_IPV6, FIELDS, VLAN_PRESENT, IRError, valid_port
from wyvern.ir.matches import Match, satisfies
from wyvern.ir.pipeline import Stage

if TYPE_CHECKING:
    pass


def check_actions(
    stage: Stage, m: Match, actions: Sequence[Action], *, in_group: bool = False
) -> None:
    """Raise IRError unless `actions` are valid for a flow of `stage` with match `m`."""
    if not actions:
        return
    where = f"stage {stage.name}"
    n_conj = sum(1 for a in actions if type(a) is Conjunction)
    if n_conj and (n_conj != len(actions) or in_group):
        raise IRError(
            f"{where}: conjunction actions cannot be mixed with other actions"
            + (" or used in a group bucket" if in_group else "")
        )
    vlan = m.get("vlan_vid")
    vlan_present = vlan is not None and bool(vlan[0] & VLAN_PRESENT)
    last = len(actions) - 1
    for i, a in enumerate(actions):
        t = type(a)
        if t is Load:
            assert isinstance(a, Load)
            _check_write(where, stage, a.register)
            reg = registers.register(a.register)
            if not 0 <= a.value <= reg.max_value:
                raise IRError(f"{where}: {a.value} does not fit {reg.width}-bit {reg.name}")
        elif t is Goto:
            assert isinstance(a, Goto)
            _check_target(where, stage, a.stage)
            if in_group:
                raise IRError(f"{where}: goto_table in a group bucket (use Resubmit)")
            if i != last:
                raise IRError(f"{where}: Goto must be the last action")
            if not pipeline.is_forward(stage.name, a.stage):
                raise IRError(f"{where}: goto {a.stage} goes backwards (use Resubmit)")
        elif t is Output:
            assert isinstance(a, Output)
            if not valid_port(a.port):
                raise IRError(f"{where}: bad port {a.port}")
        elif t is Resubmit:
            assert isinstance(a, Resubmit)
            _check_target(where, stage, a.stage)
        elif t is SetField:
            assert isinstance(a, SetField)
            _check_write(where, stage, a.field)
            spec = FIELDS.get(a.field)
            if spec is None or spec.writable != "yes":
                raise IRError(f"{where}: {a.field} is not settable (registers take Load)")
            value, _ = setfield_value(a)
            if a.field == "vlan_vid":
                if not value & VLAN_PRESENT:
                    raise IRError(f"{where}: vlan_vid values carry VLAN_PRESENT (0x1000)")
                if not vlan_present:
                    raise IRError(f"{where}: {a} needs a VLAN header (match one or PushVlan)")
            if not in_group:
                _need(where, m, a.field, a)
        elif t is Move:
            assert isinstance(a, Move)
            src, _, sw = field_bits(a.src)
            dst, _, dw = field_bits(a.dst)
            _check_write(where, stage, dst)
            if sw != dw:
                raise IRError(f"{where}: move of {sw} bits into {dw} bits")
            if dst in FIELDS and FIELDS[dst].writable != "yes":
                raise IRError(f"{where}: {dst} is not writable")
            if not in_group:
                _need(where, m, src, a)
                _need(where, m, dst, a)
        elif t is Ct:
            assert isinstance(a, Ct)
            if a.table is not None:
                _check_target(where, stage, a.table)
                if i != last:
                    raise IRError(f"{where}: Ct(table=...) must be the last action")
            for sf in a.exec:
                _check_write(where, stage, sf.field)
                setfield_value(sf)
            if not in_group:
                _need_ip(where, m, "ct", a.nat.family if a.nat else None)
            if isinstance(a.zone, str):
                reg = registers.register(a.zone)
                if reg.width != 16:
                    raise IRError(f"{where}: ct zone register {reg.name} must be 16 bits")
        elif t is DecTtl:
            _check_write(where, stage, "nw_ttl")
            if not in_group:
                _need_ip(where, m, "dec_ttl")
        elif t is CheckPktLarger:
            assert isinstance(a, CheckPktLarger)
            _check_write(where, stage, a.register)
            if registers.register(a.register).width != 1:
                raise IRError(f"{where}: check_pkt_larger writes one bit, not {a.register}")
        elif t is PushVlan:
            _check_write(where, stage, "vlan_vid")
            vlan_present = True
        elif t is PopVlan:
            _check_write(where, stage, "vlan_vid")
            if not vlan_present:
                raise IRError(f"{where}: {a} needs a VLAN header (match one or PushVlan)")
            vlan_present = False
        elif t is OutputReg:
            assert isinstance(a, OutputReg)
            registers.register(a.register)
        elif t is Controller:
            assert isinstance(a, Controller)
            if not 0 <= a.max_len <= 0xFFFF:
                raise IRError(f"{where}: bad controller max_len {a.max_len}")
        elif t is Meter:
            if i != 0 or in_group:
                raise IRError(f"{where}: Meter must be a flow's first action")
        elif t is Group:
            assert isinstance(a, Group)
            if not 0 <= a.group_id <= 0xFFFFFF00:
                raise IRError(f"{where}: bad group id {a.group_id}")
        elif t not in (Conjunction, CtClear):
            raise IRError(f"{where}: {a!r} is not an action")


def _check_write(where: str, stage: Stage, name: str) -> None:
    if name not in stage.writes:
        raise IRError(f"{where}: writes {name}, not declared in its writes")


def _check_target(where: str, stage: Stage, target: str) -> None:
    if target not in stage.next:
        raise IRError(f"{where}: may not continue to {target} (declared: {stage.next})")


def _need(where: str, m: Match, name: str, what: object) -> None:
    if not satisfies(m, name):
        raise IRError(f"{where}: {what} needs the match to establish {name}'s prerequisites")


_IP_FAMILIES = {4: {ETH_TYPE_IP}, 6: {ETH_TYPE_IPV6}, 0: {ETH_TYPE_IP, ETH_TYPE_IPV6}}


def _need_ip(where: str, m: Match, what: object, family: int | None = None) -> None:
    allowed = _IP_FAMILIES[family or 0]
    if m.exact("eth_type") not in allowed:
        raise IRError(f"{where}: {what} needs an IP match (eth_type in {sorted(allowed)})")


# What of a match a flow's validity can depend on: which fields it has, and the values
# of the fields that are prerequisites (ip_proto, icmpv6_type, ...), vlan_vid and conj_id.
_SHAPE_FIELDS = frozenset(
    {pre for spec in FIELDS.values() for pre, _ in spec.prereqs} | {"vlan_vid", "conj_id"}
)
_VALID_SHAPES: set[object] = set()
_VALID_SHAPES_MAX = 1 << 16


def _match_shape(m: Match) -> tuple[object, ...]:
    sf = _SHAPE_FIELDS
    return tuple([item if item[0] in sf else item[0] for item in m.items])


_REG_MAX = {r.name: r.max_value for r in registers.REGISTERS}
# SetFields whose validity does not depend on the value once it parses (vlan_vid's does).
_SETFIELD_SHAPED = frozenset(n for n in FIELDS if n != "vlan_vid")


def _ct_shape(ct: Ct) -> tuple[object, ...] | None:
    """A Ct as far as validity depends on it: its NAT address is checked when the Nat is
    made and its exec values here, so per-port translations and labels (a floating IP's,
    the metadata service's) share one validated shape. None: check it fully."""
    try:
        for sf in ct.exec:
            setfield_value(sf)
    except (IRError, TypeError, ValueError):
        return None
    nat = ct.nat
    nat_shape = (
        None
        if nat is None
        else (
            nat.kind,
            # (the address was checked when the Nat was made: its form tells the family)
            None if nat.addr is None else 6 if ":" in nat.addr else 4,
            nat.addr_max is None,
            nat.port is None,
            nat.port_max is None,
        )
    )
    exec_shape = tuple((sf.field, sf.mask) for sf in ct.exec)
    return (Ct, ct.commit, ct.zone, ct.table, nat_shape, exec_shape)


def _actions_shape(actions: tuple[Action, ...]) -> tuple[object, ...] | None:
    """The actions as far as validity depends on them: Load, Output and Conjunction
    values only need a range check (done here; Conjunction checks itself), so flows
    that differ only in those share one validated shape. None: check this flow fully."""
    out: list[object] = []
    for a in actions:
        t = type(a)
        if t is Load:
            load = cast(Load, a)
            top = _REG_MAX.get(load.register)
            if top is None or type(load.value) is not int or not 0 <= load.value <= top:
                return None
            out.append((Load, load.register))
        elif t is Output:
            port = cast(Output, a).port
            if type(port) is not int or not valid_port(port):
                return None
            out.append(Output)
        elif t is Conjunction:
            out.append(Conjunction)
        elif t is SetField and cast(SetField, a).field in _SETFIELD_SHAPED:
            sf = cast(SetField, a)
            try:
                setfield_value(sf)
            except (IRError, TypeError, ValueError):
                return None
            out.append((SetField, sf.field, sf.mask))
        elif t is Ct:
            shape = _ct_shape(cast(Ct, a))
            if shape is None:
                return None
            out.append(shape)
        else:
            out.append(a)
    return tuple(out)
