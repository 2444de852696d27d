"""The reference simulator: OpenFlow table semantics over IR flows, in Python.

Apps are unit-tested by packet outcome ("is this packet output on port 3?") instead of by
flow text. Semantics follow OVS:

- Lookup starts at table 0. The highest-priority matching flow wins; a table miss drops.
  Two overlapping flows of one priority are undefined in OpenFlow: the simulator takes the
  first added and notes the ambiguity in the trace.
- Conjunctive match as OVS's classifier does it: flows whose actions are `conjunction`
  are soft matches; if at some priority above the best ordinary match every clause
  1..n of an id has a matching flow, the table is searched again with conj_id=id
  (ignoring conjunction flows); if that finds nothing, lower priorities are tried.
- Actions run in order. `Goto` continues in a later table (it is always last);
  `Resubmit` runs the other table and comes back. Depth is limited to 64 like OVS.
- `DecTtl` at TTL ≤ 1 stops the action list and reports the drop.
- `CheckPktLarger(n)` sets its bit when the packet's `length` (the frame's bytes,
  Ethernet header included, as OVS counts them) is over n.
- Output to the input port is ignored unless it is `Output(PORT_IN_PORT)`, as in OVS.
- Groups: every bucket (all), one bucket by a deterministic 5-tuple hash (select), or the
  single bucket (indirect), each on a copy of the packet.
- `Ct` runs the `Conntrack` model; with `table=` the packet, with ct_state/ct_zone/ct_mark/
  ct_label set (and NAT applied), is recirculated into that table after the current pass.

Conntrack model: connections exist once committed, per zone. A packet is +trk plus +new
(no committed connection, or no reply seen yet), +est (reply seen; +rpl in the reply
direction), +rel (an ICMP error about a connection), or +inv (TCP without a clean SYN
and no connection, an unrelated ICMP error, an ICMP reply without its query, any ICMP
message that is neither a query conntrack tracks nor an error, non-IP). NAT given at
commit is recorded and applied by later `ct(nat)` to the connection's packets in both
directions. TCP, UDP and
SCTP connections are told apart by their ports, as the kernel's conntrack does; other
protocols by their addresses alone.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wyvern.ir import (
    CT_DNAT,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_SNAT,
    CT_TRK,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FIELDS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_IN_PORT,
    VLAN_PRESENT,
    Action,
    Bucket,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Flow,
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
    field_bits,
    pipeline,
    registers,
    setfield_value,
)
from wyvern.ir.cookies import CookieIndex, Explanation
from wyvern.ir.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, VLAN_HEADER, Packet
from wyvern.ir.pipeline import StageName
from wyvern.ir.render import render_actions, render_match

MAX_DEPTH = 64
MAX_RESUBMITS = 4096
MAX_RECIRCULATIONS = 32
# Stages only ever resubmitted into, whose flows have no actions: they count the packet
# (flow statistics) and the resubmit returns; no drop.
COUNTING_STAGES = frozenset({"meter_count"})

_TCP_OPENING = TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN
_ICMP_ERRORS = {IPPROTO_ICMP: (3, 4, 5, 11, 12), IPPROTO_ICMPV6: (1, 2, 3, 4)}
# The ICMP queries OVS's userspace conntrack tracks, and their replies (echo; IPv4's
# timestamp and information): every other ICMP message that is not an error is +inv.
_ICMP_QUERIES = {IPPROTO_ICMP: (8, 0, 13, 14, 15, 16), IPPROTO_ICMPV6: (128, 129)}
_ICMP_NEW = {IPPROTO_ICMP: (8, 13, 15), IPPROTO_ICMPV6: (128,)}

# ------------------------------------------------------------------------- conntrack

FiveTuple = tuple[int, int, int, int, int, int]  # eth_type, src, dst, proto, sport, dport


def _five_tuple(p: Packet) -> FiveTuple | None:
    et = p["eth_type"]
    if et == ETH_TYPE_IP:
        src, dst = p["ipv4_src"], p["ipv4_dst"]
    elif et == ETH_TYPE_IPV6:
        src, dst = p["ipv6_src"], p["ipv6_dst"]
    else:
        return None
    proto = p["ip_proto"]
    if proto == IPPROTO_TCP:
        return et, src, dst, proto, p["tcp_src"], p["tcp_dst"]
    if proto == IPPROTO_UDP:
        return et, src, dst, proto, p["udp_src"], p["udp_dst"]
    if proto == IPPROTO_SCTP:
        return et, src, dst, proto, p["sctp_src"], p["sctp_dst"]
    return et, src, dst, proto, 0, 0


def _reverse(t: FiveTuple) -> FiveTuple:
    return t[0], t[2], t[1], t[3], t[5], t[4]


def _icmp_type(p: Packet) -> int:
    return int(p["icmp_type"] if p["ip_proto"] == IPPROTO_ICMP else p["icmpv6_type"])


def _icmp_error(p: Packet) -> bool:
    proto = p["ip_proto"]
    return proto in _ICMP_ERRORS and _icmp_type(p) in _ICMP_ERRORS[proto]


def _icmp_of_family(p: Packet) -> bool:
    """ICMP of the packet's IP version (ICMPv4 in IPv6 is just another protocol)."""
    return (p["eth_type"], p["ip_proto"]) in (
        (ETH_TYPE_IP, IPPROTO_ICMP),
        (ETH_TYPE_IPV6, IPPROTO_ICMPV6),
    )


def _icmp_untracked(p: Packet) -> bool:
    """An ICMP message conntrack cannot track at all (neither a query nor an error)."""
    if not _icmp_of_family(p):
        return False
    proto = p["ip_proto"]
    kind = _icmp_type(p)
    return kind not in _ICMP_QUERIES[proto] and kind not in _ICMP_ERRORS[proto]


def _set_address(p: Packet, side: str, addr: int, port: int | None) -> None:
    ip = "ipv4" if p["eth_type"] == ETH_TYPE_IP else "ipv6"
    p[f"{ip}_{side}"] = addr
    l4 = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(p["ip_proto"])
    if port is not None and l4 is not None:
        p[f"{l4}_{side}"] = port


@dataclass
class Connection:
    """One committed connection: its tuple both ways, NAT, mark and label."""

    zone: int
    original: FiveTuple
    reply: FiveTuple
    nat: Nat | None = None
    mark: int = 0
    label: int = 0
    seen_reply: bool = False


class Conntrack:
    """Connections per zone; persists across `Simulator.run` calls (SYN, then reply)."""

    def __init__(self) -> None:
        self._table: dict[tuple[int, FiveTuple], tuple[Connection, bool]] = {}

    def connections(self) -> list[Connection]:
        seen: dict[int, Connection] = {}
        for conn, _ in self._table.values():
            seen.setdefault(id(conn), conn)
        return list(seen.values())

    def __len__(self) -> int:
        return len(self.connections())

    def flush(self) -> None:
        self._table.clear()

    def execute(self, ct: Ct, zone: int, p: Packet) -> tuple[int, Connection | None]:
        """Track `p` in `zone`, NAT it in place if asked; returns (ct_state, connection)."""
        t = _five_tuple(p)
        if t is None or _icmp_untracked(p):
            return CT_TRK | CT_INV, None
        state = CT_TRK
        conn: Connection | None = None
        reply_dir = False
        hit = self._table.get((zone, t))
        if hit is not None:
            conn, reply_dir = hit
            if reply_dir:
                conn.seen_reply = True
                state |= CT_EST | CT_RPL
            else:
                state |= CT_EST if conn.seen_reply else CT_NEW
        elif _icmp_error(p):
            inner = _five_tuple(p.inner) if p.inner is not None else None
            rel = self._table.get((zone, inner)) if inner is not None else None
            if rel is None:
                return state | CT_INV, None
            conn, inner_reply = rel
            # An error about a packet of the original direction travels in reply direction.
            reply_dir = not inner_reply
            state |= CT_REL | (CT_RPL if reply_dir else 0)
        elif t[3] == IPPROTO_TCP and p["tcp_flags"] & _TCP_OPENING != TCP_SYN:
            return state | CT_INV, None  # no connection and not a clean SYN
        elif _icmp_of_family(p) and _icmp_type(p) not in _ICMP_NEW[t[3]]:
            return state | CT_INV, None  # a reply (echo reply...) with no connection
        else:
            state |= CT_NEW

        if ct.nat is not None:
            if conn is not None and conn.nat is not None:
                state |= self._apply_nat(p, conn, reply_dir)
            elif conn is None and ct.commit and ct.nat.kind is not None:
                new = Connection(zone, t, t, nat=ct.nat)
                state |= self._apply_nat(p, new, False)
                conn = self._commit(new, p)
        if ct.commit and conn is None:
            conn = self._commit(Connection(zone, t, t), p)
        if ct.commit and conn is not None:
            for sf in ct.exec:
                value, mask = setfield_value(sf)
                old = conn.mark if sf.field == "ct_mark" else conn.label
                new_value = (old & ~mask) | value
                if sf.field == "ct_mark":
                    conn.mark = new_value
                else:
                    conn.label = new_value
        return state, conn

    def _commit(self, conn: Connection, p: Packet) -> Connection:
        translated = _five_tuple(p)
        assert translated is not None
        conn.reply = _reverse(translated)
        self._table[(conn.zone, conn.original)] = (conn, False)
        self._table[(conn.zone, conn.reply)] = (conn, True)
        return conn

    @staticmethod
    def _apply_nat(p: Packet, conn: Connection, reply_dir: bool) -> int:
        nat = conn.nat
        assert nat is not None and nat.addr is not None
        _, osrc, odst, _, osport, odport = conn.original
        addr = int(ipaddress.ip_address(nat.addr))
        if not reply_dir:
            side = "src" if nat.kind == "src" else "dst"
            _set_address(p, side, addr, nat.port)
            return CT_SNAT if side == "src" else CT_DNAT
        if nat.kind == "src":  # reply to a SNATed connection: restore the destination
            _set_address(p, "dst", osrc, osport)
            return CT_DNAT
        _set_address(p, "src", odst, odport)
        return CT_SNAT


# ------------------------------------------------------------------------- trace


@dataclass(frozen=True, slots=True)
class Step:
    """One table visit: which flow matched (None: table miss) and what it stood for."""

    table: int
    stage: str
    depth: int
    flow: Flow | None
    origin: Explanation | None = None  # the app and API object behind the flow's cookie
    note: str = ""

    @property
    def actions(self) -> tuple[Action, ...]:
        """The actions this step ran (all of the flow's: a Goto is always last)."""
        return self.flow.actions if self.flow is not None else ()


@dataclass(frozen=True, slots=True)
class Emit:
    port: int
    packet: Packet


@dataclass(frozen=True, slots=True)
class Punt:
    reason: str
    userdata: bytes
    max_len: int
    table: int
    stage: str
    cookie: int
    packet: Packet


@dataclass
class Trace:
    packet: Packet
    steps: list[Step] = field(default_factory=list)
    outputs: list[Emit] = field(default_factory=list)
    punts: list[Punt] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)  # every meter the packet passed

    @property
    def dropped(self) -> bool:
        """Nothing left the switch: no output and no packet-in."""
        return not self.outputs and not self.punts

    @property
    def output_ports(self) -> list[int]:
        return [o.port for o in self.outputs]

    def stages(self) -> list[str]:
        """Stage names visited, in order (handy in assertions)."""
        return [s.stage for s in self.steps]

    def format(self) -> str:
        return format_trace(self)


def format_trace(trace: Trace) -> str:
    """Each step with its table, stage, priority and the app/object behind the flow."""
    lines = [f"packet: {trace.packet!r}"]
    for s in trace.steps:
        ind = "  " * (s.depth + 1)
        if s.note:
            lines.append(f"{ind}-- {s.note}")
        if s.flow is None:
            lines.append(f"{ind}table {s.table} ({s.stage}): no match")
            continue
        lines.append(
            f"{ind}table {s.table} ({s.stage}) priority {s.flow.priority}"
            f" cookie {s.flow.cookie:#x}: {s.origin}"
        )
        lines.append(f"{ind}    match: {render_match(s.flow.match) or '(any)'}")
        lines.append(f"{ind}    actions: {render_actions(s.flow.actions)}")
    for o in trace.outputs:
        lines.append(f"output: port {o.port}")
    for pi in trace.punts:
        lines.append(
            f"controller: reason={pi.reason} userdata={pi.userdata.hex() or '-'}"
            f" from table {pi.table} ({pi.stage})"
        )
    lines.extend(f"drop: {d}" for d in trace.drops)
    if trace.dropped:
        lines.append("outcome: dropped")
    return "\n".join(lines)


# ------------------------------------------------------------------------- simulator

_Check = tuple[str, int, int]  # packet field, value, mask


def compile_match(m: Match) -> tuple[_Check, ...]:
    """The match as checks on packet fields; registers become physical bits."""
    phys: dict[str, tuple[int, int]] = {}
    checks: list[_Check] = []
    for name, value, mask in m:
        if name in FIELDS:
            checks.append((name, value, (1 << FIELDS[name].bits) - 1 if mask is None else mask))
            continue
        reg = registers.register(name)
        full = reg.max_value if mask is None else mask
        for seg in reg.segments():
            width = (1 << seg.width) - 1
            v, msk = phys.get(seg.field, (0, 0))
            phys[seg.field] = (
                v | ((value >> seg.offset) & width) << seg.start,
                msk | ((full >> seg.offset) & width) << seg.start,
            )
    checks.extend((f, v, msk) for f, (v, msk) in phys.items())
    return tuple(checks)


@dataclass(frozen=True, slots=True)
class _Entry:
    flow: Flow
    order: int  # insertion order: among equal priorities the first added wins
    conj: tuple[Conjunction, ...]


class _Subtable:
    """Flows with the same (field, mask) set, hashed by their values: OVS's tuple space
    search, so that a lookup costs one dict probe per distinct mask set."""

    __slots__ = ("fields", "index")

    def __init__(self, fields: tuple[tuple[str, int], ...]) -> None:
        self.fields = fields
        self.index: dict[tuple[int, ...], list[_Entry]] = {}

    def hits(self, p: Packet) -> list[_Entry] | None:
        get = p.get
        return self.index.get(tuple(get(f) & msk for f, msk in self.fields))


@dataclass
class _Pass:
    trace: Trace
    recirculate: list[tuple[int, Packet, str]] = field(default_factory=list)
    resubmits: int = 0
    patched: int = 0


_CLEARED_BY_PATCH = frozenset({f"reg{i}" for i in range(16)} | {"metadata"})


class Simulator:
    """Runs packets through a set of flows and groups; the conntrack persists."""

    def __init__(
        self,
        flows: Iterable[Flow],
        groups: Iterable[GroupDef] = (),
        *,
        conntrack: Conntrack | None = None,
        cookies: CookieIndex | None = None,
        patches: Mapping[int, int] | None = None,
    ) -> None:
        # Patch ports on the bridge itself: a packet output to one comes back into table 0
        # by its peer (OVS: registers, metadata and conntrack state cleared), as a trunk's
        # subports do (wyvern.apps.trunk).
        self.patches = dict(patches or {})
        self.conntrack = conntrack if conntrack is not None else Conntrack()
        self.cookies = cookies if cookies is not None else CookieIndex()
        self.groups = {g.group_id: g for g in groups}
        tables: dict[int, dict[tuple[tuple[str, int], ...], _Subtable]] = {}
        seen: dict[tuple[StageName, int, Match], Flow] = {}
        for order, f in enumerate(flows):
            other = seen.setdefault(f.key, f)
            if other is not f:
                if other == f:
                    continue
                raise ValueError(
                    f"two flows with the same table, priority and match: {other} and {f}"
                )
            conj = tuple(a for a in f.actions if isinstance(a, Conjunction))
            checks = sorted(compile_match(f.match))
            shape = tuple((name, msk) for name, _, msk in checks)
            sub = tables.setdefault(f.table, {}).setdefault(shape, _Subtable(shape))
            sub.index.setdefault(tuple(v for _, v, _ in checks), []).append(_Entry(f, order, conj))
        self._tables = {t: list(subs.values()) for t, subs in tables.items()}

    # -- lookup ----------------------------------------------------------------------

    def lookup(self, table: int, p: Packet) -> Flow | None:
        """The flow OVS would pick in `table` for packet `p` (None: table miss)."""
        return self._lookup(table, p)[0]

    def _lookup(self, table: int, p: Packet, conj_ok: bool = True) -> tuple[Flow | None, str]:
        matching: list[_Entry] = []
        for sub in self._tables.get(table, ()):
            hit = sub.hits(p)
            if hit:
                matching.extend(hit)
        matching.sort(key=lambda e: (-e.flow.priority, e.order))
        hard: _Entry | None = None
        ties = 0
        soft: list[_Entry] = []
        for e in matching:
            if hard is not None and e.flow.priority < hard.flow.priority:
                break
            if e.conj:
                if conj_ok and hard is None:
                    soft.append(e)
            elif hard is None:
                hard = e
            else:
                ties += 1
        note = ""
        if hard is not None:
            soft = [e for e in soft if e.flow.priority > hard.flow.priority]
            if ties:
                note = f"ambiguous: {ties + 1} flows of priority {hard.flow.priority} match"
        for prio in sorted({e.flow.priority for e in soft}, reverse=True):
            clauses: dict[int, tuple[int, set[int]]] = {}
            for e in soft:
                if e.flow.priority != prio:
                    continue
                for c in e.conj:
                    n, seen = clauses.setdefault(c.conj_id, (c.n_clauses, set()))
                    if n == c.n_clauses:
                        seen.add(c.clause)
            for conj_id in sorted(clauses):
                n, seen = clauses[conj_id]
                if len(seen) != n:
                    continue
                saved = p.get("conj_id")
                p["conj_id"] = conj_id
                found, _ = self._lookup(table, p, conj_ok=False)
                p["conj_id"] = saved
                if found is not None:
                    return found, f"conjunction {conj_id} matched ({n} clauses)"
        return (hard.flow if hard else None), note

    # -- running ---------------------------------------------------------------------

    def run(self, packet: Packet, table: int = pipeline.TABLE_BASE) -> Trace:
        """Send one packet into table 0, or into TABLE (a packet-out that resubmits into
        the pipeline with its registers set: the agent's injected frames). The input
        packet is not modified."""
        pkt = packet.copy()
        ctx = _Pass(Trace(packet.copy()))
        self._table(table, pkt, 0, ctx, "")
        rounds = 0
        while ctx.recirculate:
            rounds += 1
            if rounds > MAX_RECIRCULATIONS:
                ctx.trace.drops.append("too many recirculations")
                break
            table, again, note = ctx.recirculate.pop(0)
            self._table(table, again, 0, ctx, note)
        return ctx.trace

    def _stage_name(self, table: int) -> str:
        try:
            return pipeline.stage_of(table).name
        except KeyError:
            return "?"

    def _table(self, table: int, p: Packet, depth: int, ctx: _Pass, note: str) -> None:
        stage = self._stage_name(table)
        if depth > MAX_DEPTH:
            ctx.trace.drops.append(f"resubmit depth over {MAX_DEPTH} at table {table} ({stage})")
            return
        flow, why = self._lookup(table, p)
        note = "; ".join(n for n in (note, why) if n)
        if flow is None:
            ctx.trace.steps.append(Step(table, stage, depth, None, None, note))
            ctx.trace.drops.append(f"no flow matched in table {table} ({stage})")
            return
        origin = self.cookies.explain(flow.cookie)
        ctx.trace.steps.append(Step(table, stage, depth, flow, origin, note))
        if not flow.actions:
            if stage not in COUNTING_STAGES:
                ctx.trace.drops.append(f"table {table} ({stage}) drops: {origin}")
            return
        self._execute(flow.actions, p, depth, ctx, flow)

    def _output(self, port: int, p: Packet, ctx: _Pass) -> None:
        if port == PORT_IN_PORT:
            port = p["in_port"]
        elif port == p["in_port"]:
            ctx.trace.drops.append(f"output:{port} is the input port (needs PORT_IN_PORT)")
            return
        peer = self.patches.get(port)
        if peer is not None:
            ctx.patched += 1
            if ctx.patched > MAX_RECIRCULATIONS:
                ctx.trace.drops.append("too many patch port crossings")
                return
            crossed = Packet(inner=p.inner, length=p.length)
            for name, value in p:
                if name not in _CLEARED_BY_PATCH and not name.startswith(("ct_", "tun_")):
                    crossed[name] = value
            crossed["in_port"] = peer
            ctx.recirculate.append(
                (pipeline.TABLE_BASE, crossed, f"from patch port {port} by its peer {peer}")
            )
            return
        ctx.trace.outputs.append(Emit(port, p.copy()))

    def _execute(
        self, actions: tuple[Action, ...], p: Packet, depth: int, ctx: _Pass, flow: Flow
    ) -> None:
        where = f"table {flow.table} ({flow.stage})"
        for a in actions:
            if isinstance(a, Output):
                self._output(a.port, p, ctx)
            elif isinstance(a, OutputReg):
                self._output(p[a.register], p, ctx)
            elif isinstance(a, Goto):
                self._table(pipeline.table_of(a.stage), p, depth, ctx, "")
                return
            elif isinstance(a, Resubmit):
                ctx.resubmits += 1
                if ctx.resubmits > MAX_RESUBMITS:
                    ctx.trace.drops.append(f"over {MAX_RESUBMITS} resubmits at {where}")
                    return
                self._table(pipeline.table_of(a.stage), p, depth + 1, ctx, "")
            elif isinstance(a, SetField):
                value, mask = setfield_value(a)
                p[a.field] = (p[a.field] & ~mask) | value
            elif isinstance(a, Load):
                p[a.register] = a.value
            elif isinstance(a, Move):
                self._move(a, p)
            elif isinstance(a, DecTtl):
                if p["nw_ttl"] <= 1:
                    ctx.trace.drops.append(f"TTL expired (dec_ttl) at {where}")
                    return
                p["nw_ttl"] = p["nw_ttl"] - 1
            elif isinstance(a, CheckPktLarger):
                p[a.register] = int(p.length > a.length)
            elif isinstance(a, Ct):
                self._ct(a, p, ctx)
            elif isinstance(a, CtClear):
                for name in ("ct_state", "ct_zone", "ct_mark", "ct_label"):
                    p[name] = 0
            elif isinstance(a, Controller):
                ctx.trace.punts.append(
                    Punt(
                        a.reason,
                        a.userdata,
                        a.max_len,
                        flow.table,
                        flow.stage,
                        flow.cookie,
                        p.copy(),
                    )
                )
            elif isinstance(a, Meter):
                ctx.trace.meters.append(a.meter_id)  # (a rate: one packet is within it)
            elif isinstance(a, Group):
                self._group(a.group_id, p, depth, ctx, flow)
            elif isinstance(a, PushVlan):
                p["vlan_vid"] = VLAN_PRESENT
                p.length += VLAN_HEADER
            elif isinstance(a, PopVlan):
                p["vlan_vid"] = 0
                p.length -= VLAN_HEADER
            else:  # Conjunction flows are never selected, so never executed
                raise AssertionError(f"unexpected action {a!r}")

    @staticmethod
    def _move(a: Move, p: Packet) -> None:
        src, s_start, width = field_bits(a.src)
        dst, d_start, _ = field_bits(a.dst)
        bits = (p[src] >> s_start) & ((1 << width) - 1)
        mask = ((1 << width) - 1) << d_start
        p[dst] = (p[dst] & ~mask) | (bits << d_start)

    def _ct(self, a: Ct, p: Packet, ctx: _Pass) -> None:
        zone = a.zone if isinstance(a.zone, int) else p[a.zone]
        state, conn = self.conntrack.execute(a, zone, p)
        if a.table is None:
            return  # as in OVS, ct_state is only visible after recirculation
        again = p.copy()
        again["ct_state"] = state
        again["ct_zone"] = zone
        again["ct_mark"] = conn.mark if conn else 0
        again["ct_label"] = conn.label if conn else 0
        flags = "".join(
            f"+{n}"
            for n, bit in (
                ("new", CT_NEW),
                ("est", CT_EST),
                ("rel", CT_REL),
                ("rpl", CT_RPL),
                ("inv", CT_INV),
                ("trk", CT_TRK),
                ("snat", CT_SNAT),
                ("dnat", CT_DNAT),
            )
            if state & bit
        )
        ctx.recirculate.append(
            (
                pipeline.table_of(a.table),
                again,
                f"recirculated after ct(zone={zone}): ct_state={flags}",
            )
        )

    def _group(self, group_id: int, p: Packet, depth: int, ctx: _Pass, flow: Flow) -> None:
        g = self.groups.get(group_id)
        if g is None:
            ctx.trace.drops.append(f"group {group_id} does not exist")
            return
        if not g.buckets:
            return
        chosen: list[Bucket] = []
        if g.type == "all":
            chosen = list(g.buckets)
        elif g.type == "select":
            total = sum(b.weight for b in g.buckets)
            if total == 0:
                return
            key = repr(_five_tuple(p) or (p["eth_src"], p["eth_dst"])).encode()
            point = zlib.crc32(key) % total
            for b in g.buckets:
                if point < b.weight:
                    chosen = [b]
                    break
                point -= b.weight
        else:
            chosen = [g.buckets[0]]
        for b in chosen:
            self._execute(b.actions, p.copy(), depth + 1, ctx, flow)
