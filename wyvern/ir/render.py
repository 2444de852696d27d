"""Render IR flows and groups to `ovs-ofctl` text (OpenFlow 1.3+ with Nicira extensions).

The text is what `ovs-ofctl -O OpenFlow15 add-flows/--bundle` reads; tests feed every kind
of flow to `ovs-ofctl parse-flows`. Forward continuations render as `goto_table:N`,
`Resubmit` as `resubmit(,N)`. Register matches are merged per OVS field (two flag bits of
reg10 become one `reg10=0x5/0x5`). `render_strict` gives the identity part
(`table,priority,match`) that `del-flows --strict` and `mod-flows --strict` take.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import cast

from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FIELDS,
    PORT_IN_PORT,
    PORT_LOCAL,
    Action,
    Bits,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    FlowTemplate,
    Goto,
    Group,
    GroupDef,
    Load,
    Match,
    Meter,
    Move,
    Nat,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    format_value,
    ip_version,
    pipeline,
    registers,
    setfield_value,
)

_PROTO_NAMES: dict[tuple[int, int | None], str] = {
    (ETH_TYPE_IP, None): "ip",
    (ETH_TYPE_IPV6, None): "ipv6",
    (ETH_TYPE_ARP, None): "arp",
    (ETH_TYPE_IP, 1): "icmp",
    (ETH_TYPE_IP, 6): "tcp",
    (ETH_TYPE_IP, 17): "udp",
    (ETH_TYPE_IP, 132): "sctp",
    (ETH_TYPE_IPV6, 58): "icmp6",
    (ETH_TYPE_IPV6, 6): "tcp6",
    (ETH_TYPE_IPV6, 17): "udp6",
    (ETH_TYPE_IPV6, 132): "sctp6",
}
_FIELD_ORDER = {name: i for i, name in enumerate(FIELDS)}


def _reg_sort(field: str) -> tuple[int, int]:
    if field == "metadata":
        return (0, 0)
    kind = 1 if field.startswith("reg") else 3 if field.startswith("xx") else 2
    return (kind, int(field.lstrip("xreg")))


# Memos of pure functions (one MAC or address shows up in many flows): (name, value,
# mask) -> "ovs_name=text", and an action tuple -> its text. They start over when full.
# Bounded at 1 << 14 (and cleared after a full recompute, with the IR's parse memos):
# at 1 << 17 they held ~17 MiB more RSS at 10k ports even once cleared (their entries
# had spread over the allocator's pools), for no measurable render time.
_FIELD_TEXT: dict[tuple[str, int, int | None], str] = {}
_ACTIONS_TEXT: dict[tuple[Action, ...], str] = {}
_VALUE_TEXT: dict[tuple[str, int, int | None], str] = {}  # (kind, value, mask) -> text
_MEMO_MAX = 1 << 14


def clear_caches() -> None:
    """Forget the memos (tests compare a cold render with a warm one)."""
    _FIELD_TEXT.clear()
    _ACTIONS_TEXT.clear()
    _VALUE_TEXT.clear()
    _PLANS.clear()


def _field_text(name: str, value: int, mask: int | None) -> str:
    """ "ovs_name=text" of one match item (memoised: a MAC or address recurs)."""
    key = (name, value, mask)
    got = _FIELD_TEXT.get(key)
    if got is None:
        spec = FIELDS[name]
        # (one MAC or address shows up under several names: eth_src, arp_sha, nd_sll...)
        vkey = (spec.kind, value, mask)
        text = _VALUE_TEXT.get(vkey)
        if text is None:
            if spec.kind == "ipv4" and mask is None:  # (ipaddress is slow)
                text = f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
            else:
                text = format_value(spec.kind, spec.bits, value, mask)
            if len(_VALUE_TEXT) >= _MEMO_MAX:
                _VALUE_TEXT.clear()
            _VALUE_TEXT[vkey] = text
        got = f"{spec.ovs}={text}"
        if len(_FIELD_TEXT) >= _MEMO_MAX:
            _FIELD_TEXT.clear()
        _FIELD_TEXT[key] = got
    return got


def render_match(m: Match) -> str:
    """The match part of a flow (no table/priority), e.g. `reg14=0x5,tcp,tcp_dst=80`."""
    items = m.items
    return _render_items(items, _plan_of(items))


def _plan_of(items: tuple[tuple[str, int, int | None], ...]) -> _Plan:
    names = tuple(map(_first, items))
    entry = _PLANS.get(names)
    if entry is None:
        if len(_PLANS) >= _MEMO_MAX:
            _PLANS.clear()
        pos = tuple(i for i, n in enumerate(names) if n in _PROTO_FIELDS)
        entry = _PLANS[names] = (pos, {})
    pos, by_proto = entry
    proto_key = tuple([items[i][1] for i in pos]) if pos else ()
    plan = by_proto.get(proto_key)
    if plan is None:
        plan = by_proto[proto_key] = _plan(items)
    return plan


def _render_items(items: tuple[tuple[str, int, int | None], ...], plan: _Plan) -> str:
    regs, proto, fields, constants = plan
    parts: list[str] = []
    for fld, pieces, width_mask, exact_fmt in regs:
        if exact_fmt is not None:  # one register, matched exactly: the common case
            i, shift = pieces[0][0], pieces[0][1]
            it = items[i]
            if it[2] is None:
                parts.append(exact_fmt % (it[1] << shift))
                continue
        v = msk = 0
        for i, shift, full in pieces:
            _, value, mask = items[i]
            v |= value << shift
            msk |= (full if mask is None else mask) << shift
        parts.append(f"{fld}={v:#x}" if msk == width_mask else f"{fld}={v:#x}/{msk:#x}")
    if proto:
        parts.append(proto)
    texts = _FIELD_TEXT
    if constants:  # (a protocol without a keyword: nw_proto=N among the fields)
        for f in fields:
            if isinstance(f, str):
                parts.append(f)
            else:
                parts.append(texts.get(items[f]) or _field_text(*items[f]))
    else:
        parts += [texts.get(items[f]) or _field_text(*items[f]) for f in fields]  # type: ignore[index]
    return ",".join(parts)


_first = operator.itemgetter(0)


# eth_type and ip_proto are rendered as a protocol keyword (tcp, ip6, ...): their values
# are part of a plan's key; every other field's value is filled in per flow.
_PROTO_FIELDS = frozenset({"eth_type", "ip_proto"})
_RegPlan = tuple[str, tuple[tuple[int, int, int], ...], int, str | None]
_Plan = tuple[tuple[_RegPlan, ...], str, tuple[int | str, ...], bool]
# field names -> (positions of eth_type/ip_proto, their values -> plan)
_PLANS: dict[tuple[str, ...], tuple[tuple[int, ...], dict[tuple[int, ...], _Plan]]] = {}


def _plan(items: tuple[tuple[str, int, int | None], ...]) -> _Plan:
    """How to render matches with these fields (and protocol values): register pieces
    merged per OVS field, the protocol keyword, then the fields in ovs-ofctl order."""
    regs: dict[str, list[tuple[int, int, int]]] = {}
    fields: list[tuple[int, int | str]] = []
    eth_type = proto = None
    for i, (name, value, _) in enumerate(items):
        if name not in FIELDS:
            reg = registers.register(name)
            regs.setdefault(reg.field, []).append((i, reg.start, reg.max_value))
        elif name == "eth_type":
            eth_type = value
        elif name == "ip_proto":
            proto = value
        else:
            fields.append((_FIELD_ORDER[name], i))
    proto_text = ""
    if eth_type is not None:
        both = _PROTO_NAMES.get((eth_type, proto)) if proto is not None else None
        if both is not None:
            proto_text = both
        else:
            proto_text = _PROTO_NAMES.get((eth_type, None)) or f"eth_type={eth_type:#06x}"
            if proto is not None:
                fields.append((_FIELD_ORDER["ip_proto"], f"nw_proto={proto}"))
    reg_plans: list[_RegPlan] = []
    for fld in sorted(regs, key=_reg_sort):
        bits = 32 if fld.startswith("reg") else 128 if fld.startswith("xx") else 64
        width_mask = (1 << bits) - 1
        pieces = tuple(regs[fld])
        exact_fmt = None
        if len(pieces) == 1:
            _, shift, full = pieces[0]
            reg_mask = full << shift
            exact_fmt = f"{fld}=%#x" if reg_mask == width_mask else f"{fld}=%#x/{reg_mask:#x}"
        reg_plans.append((fld, pieces, width_mask, exact_fmt))
    ordered = tuple(i for _, i in sorted(fields, key=lambda f: f[0]))
    return tuple(reg_plans), proto_text, ordered, any(isinstance(f, str) for f in ordered)


def _subfield(ref: str | Bits) -> str:
    if isinstance(ref, Bits):
        return f"{FIELDS[ref.field].ovs}[{ref.start}..{ref.start + ref.width - 1}]"
    if ref in FIELDS:
        return f"{FIELDS[ref].ovs}[]"
    return registers.register(ref).subfield


def _set_field(sf: SetField) -> str:
    spec = FIELDS[sf.field]
    value, mask = setfield_value(sf)
    return f"set_field:{format_value(spec.kind, spec.bits, value, mask)}->{spec.ovs}"


def _nat(nat: Nat) -> str:
    if nat.kind is None or nat.addr is None:
        return "nat"
    v6 = ip_version(nat.addr) == 6
    addr = nat.addr + (f"-{nat.addr_max}" if nat.addr_max else "")
    if nat.port is not None:
        if v6:
            addr = f"[{addr}]"
        addr += f":{nat.port}" + (f"-{nat.port_max}" if nat.port_max is not None else "")
    return f"nat({nat.kind}={addr})"


_SUBFIELD = {r.name: r.subfield for r in registers.REGISTERS}


def render_action(a: Action) -> str:
    t = type(a)  # the frequent kinds first, by exact type
    if t is Load:
        load = cast(Load, a)
        return f"load:{load.value:#x}->{_SUBFIELD[load.register]}"
    if t is Resubmit:
        return f"resubmit(,{_TABLES[cast(Resubmit, a).stage]})"
    if t is Conjunction:
        c = cast(Conjunction, a)
        return f"conjunction({c.conj_id},{c.clause}/{c.n_clauses})"
    if isinstance(a, Output):
        if a.port == PORT_IN_PORT:
            return "in_port"
        if a.port == PORT_LOCAL:
            return "LOCAL"
        return f"output:{a.port}"
    if isinstance(a, OutputReg):
        return f"output:{registers.register(a.register).subfield}"
    if isinstance(a, Goto):
        return f"goto_table:{pipeline.table_of(a.stage)}"
    if isinstance(a, Resubmit):
        return f"resubmit(,{pipeline.table_of(a.stage)})"
    if isinstance(a, SetField):
        return _set_field(a)
    if isinstance(a, Load):
        return f"load:{a.value:#x}->{registers.register(a.register).subfield}"
    if isinstance(a, Move):
        return f"move:{_subfield(a.src)}->{_subfield(a.dst)}"
    if isinstance(a, DecTtl):
        return "dec_ttl"
    if isinstance(a, CheckPktLarger):
        return f"check_pkt_larger({a.length})->{registers.register(a.register).subfield}"
    if isinstance(a, CtClear):
        return "ct_clear"
    if isinstance(a, Ct):
        args = ["commit"] if a.commit else []
        zone = a.zone if isinstance(a.zone, int) else registers.register(a.zone).subfield
        args.append(f"zone={zone}")
        if a.table is not None:
            args.append(f"table={pipeline.table_of(a.table)}")
        if a.nat is not None:
            args.append(_nat(a.nat))
        if a.exec:
            args.append("exec(" + ",".join(_set_field(sf) for sf in a.exec) + ")")
        return "ct(" + ",".join(args) + ")"
    if isinstance(a, Controller):
        args = [f"reason={a.reason}", f"max_len={a.max_len}"]
        if a.userdata:
            args.append("userdata=" + ".".join(f"{b:02x}" for b in a.userdata))
        return "controller(" + ",".join(args) + ")"
    if isinstance(a, Meter):
        return f"meter:{a.meter_id}"
    if isinstance(a, Group):
        return f"group:{a.group_id}"
    if isinstance(a, Conjunction):
        return f"conjunction({a.conj_id},{a.clause}/{a.n_clauses})"
    if isinstance(a, PushVlan):
        return f"push_vlan:{a.tpid:#x}"
    if isinstance(a, PopVlan):
        return "pop_vlan"
    raise TypeError(f"cannot render {a!r}")


def render_actions(actions: Iterable[Action]) -> str:
    """The action list; an empty one is `drop`."""
    if type(actions) is not tuple:
        return ",".join(render_action(a) for a in actions) or "drop"
    try:
        text = _ACTIONS_TEXT.get(actions)
    except TypeError:  # something unhashable inside: render it every time
        return ",".join(render_action(a) for a in actions) or "drop"
    if text is None:
        text = ",".join(render_action(a) for a in actions) or "drop"
        if len(_ACTIONS_TEXT) >= _MEMO_MAX:
            _ACTIONS_TEXT.clear()
        _ACTIONS_TEXT[actions] = text
    return text


def render_strict(flow: Flow) -> str:
    """`table=N,priority=P[,match]`: the flow's identity, for del-flows/mod-flows --strict."""
    m = render_match(flow.match)
    return f"table={_TABLES[flow.stage]},priority={flow.priority}" + (f",{m}" if m else "")


def render_flow(flow: Flow, cookie: int | None = None) -> str:
    """The full add-flows line; with COOKIE in place of the flow's own (the installed
    flows carry their entry's cookie: ir/cookies.py)."""
    template = flow.template
    if template is not None:
        return _render_templated(flow, template, flow.cookie if cookie is None else cookie)
    return _render_plain(flow, flow.cookie if cookie is None else cookie)


def _render_plain(flow: Flow, cookie: int) -> str:
    m = render_match(flow.match)
    actions = flow.actions
    try:
        acts = _ACTIONS_TEXT.get(actions)
    except TypeError:  # something unhashable inside: render it every time
        acts = None
    if acts is None:
        acts = render_actions(actions)
    head = f"table={_TABLES[flow.stage]},priority={flow.priority},cookie={cookie:#x}"
    return f"{head},{m} actions={acts}" if m else f"{head} actions={acts}"


_TABLES: dict[str, int] = {s.name: pipeline.table_of(s.name) for s in pipeline.PIPELINE}


def render_group(g: GroupDef) -> str:
    """The add-groups line (OpenFlow 1.5 bucket syntax)."""
    parts = [f"group_id={g.group_id}", f"type={g.type}"]
    for i, b in enumerate(g.buckets):
        weight = f",weight:{b.weight}" if g.type == "select" else ""
        parts.append(f"bucket=bucket_id:{i}{weight},actions={render_actions(b.actions)}")
    return ",".join(parts)


# A FlowTemplate's render plan: (the match plan of its flows with every masked field
# present, "table=N,priority=P,cookie=", the action texts with None where a value varies,
# or all of them joined when none does)
_TemplatePlan = tuple[_Plan, str, tuple[str | None, ...], str | None]


def _render_templated(flow: Flow, template: FlowTemplate, cookie: int) -> str:
    """render_flow of a template's flow: the match plan, head and fixed action texts are
    made once per template (its flows differ only in values)."""
    items = flow.match.items
    if len(items) != template.match_length:  # a masked field left out (any value)
        return _render_plain(flow, cookie)
    plan = cast("_TemplatePlan | None", template.render_plan)
    if plan is None:
        varying = template.varying_actions
        texts = tuple(
            None if i in varying else render_action(a) for i, a in enumerate(template.actions)
        )
        joined = None if varying else (",".join(cast(tuple[str, ...], texts)) or "drop")
        head = f"table={_TABLES[flow.stage]},priority={flow.priority},cookie="
        plan = template.render_plan = (_plan_of(items), head, texts, joined)
    match_plan, head, texts, acts = plan
    m = _render_items(items, match_plan)
    if acts is None:
        pairs = zip(texts, flow.actions, strict=True)
        acts = ",".join([t if t is not None else render_action(a) for t, a in pairs])
    if m:
        return f"{head}{cookie:#x},{m} actions={acts}"
    return f"{head}{cookie:#x} actions={acts}"
