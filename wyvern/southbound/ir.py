"""The southbound IR: matches, actions and flows as small typed, hashable values.

Apps build flows only through checked table objects::

    from wyvern.southbound.ir import Goto, Load, match, table
    table("classification").flow(
        priority=100, match=match(in_port=3), cookie=encode("classifier", port_id),
        actions=(Load("src_port_key", 7), Load("network_key", 12), Goto("port_security")),
    )

`Flow` validates itself when built, so an invalid flow cannot exist: a match field the
stage did not declare, a write to an undeclared field or register, a continuation to an
undeclared stage, a backward `goto_table`, a cookie of another app, or an action whose
OpenFlow prerequisites the match does not meet (OVS would reject it with
OFPBAC_MATCH_INCONSISTENT) all raise `IRError`.

Values are ints internally (MACs and IPs too); `match()` accepts the usual text forms.
OpenFlow prerequisites are completed where unambiguous: `match(ipv4_src="10.0.0.0/8")`
gets `eth_type=0x0800`; `match(tcp_dst=80)` raises because it could be IPv4 or IPv6.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import operator
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, cast

from wyvern.southbound import cookies, pipeline, registers
from wyvern.southbound.pipeline import Stage, StageName
from wyvern.southbound.registers import RegisterName

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
VLAN_PRESENT = 0x1000  # OFPVID_PRESENT: vlan_vid values of tagged packets carry this bit

# OpenFlow 1.3 reserved ports
PORT_IN_PORT = 0xFFFFFFF8
PORT_LOCAL = 0xFFFFFFFE

# ct_state bits, as OVS numbers them
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK, CT_SNAT, CT_DNAT = (1 << i for i in range(8))
CT_FLAGS: tuple[tuple[str, int], ...] = (
    ("new", CT_NEW),
    ("est", CT_EST),
    ("rel", CT_REL),
    ("rpl", CT_RPL),
    ("inv", CT_INV),
    ("trk", CT_TRK),
    ("snat", CT_SNAT),
    ("dnat", CT_DNAT),
)

FieldKind = Literal["dec", "hex", "mac", "ipv4", "ipv6", "ct_state"]
Writable = Literal["no", "yes", "ct"]  # "ct": only inside ct(commit, exec(...))


_new = object.__new__  # building trusted values without their dataclass __init__
_setattr = object.__setattr__


class IRError(ValueError):
    """A match, action or flow that the pipeline declaration or OpenFlow forbids."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # IR name (OXM-like); the key in Match and Packet
    ovs: str  # ovs-ofctl name
    bits: int
    kind: FieldKind
    maskable: bool
    writable: Writable
    prereqs: tuple[tuple[str, frozenset[int]], ...] = ()


def _f(
    name: str,
    ovs: str,
    bits: int,
    kind: FieldKind,
    maskable: bool,
    writable: Writable,
    *prereqs: tuple[str, frozenset[int]],
) -> FieldSpec:
    return FieldSpec(name, ovs, bits, kind, maskable, writable, prereqs)


_V4 = ("eth_type", frozenset({ETH_TYPE_IP}))
_V6 = ("eth_type", frozenset({ETH_TYPE_IPV6}))
_V46 = ("eth_type", frozenset({ETH_TYPE_IP, ETH_TYPE_IPV6}))
_ARP = ("eth_type", frozenset({ETH_TYPE_ARP}))
_TCP = ("ip_proto", frozenset({IPPROTO_TCP}))
_UDP = ("ip_proto", frozenset({IPPROTO_UDP}))
_SCTP = ("ip_proto", frozenset({IPPROTO_SCTP}))
_ICMP = ("ip_proto", frozenset({IPPROTO_ICMP}))
_ICMP6 = ("ip_proto", frozenset({IPPROTO_ICMPV6}))

_FIELD_LIST: tuple[FieldSpec, ...] = (
    _f("in_port", "in_port", 32, "dec", False, "no"),
    _f("eth_src", "eth_src", 48, "mac", True, "yes"),
    _f("eth_dst", "eth_dst", 48, "mac", True, "yes"),
    _f("eth_type", "eth_type", 16, "hex", False, "no"),
    _f("vlan_vid", "vlan_vid", 13, "hex", True, "yes"),
    _f("ip_proto", "nw_proto", 8, "dec", False, "no", _V46),
    _f("nw_ttl", "nw_ttl", 8, "dec", False, "yes", _V46),
    _f("ipv4_src", "nw_src", 32, "ipv4", True, "yes", _V4),
    _f("ipv4_dst", "nw_dst", 32, "ipv4", True, "yes", _V4),
    _f("ipv6_src", "ipv6_src", 128, "ipv6", True, "yes", _V6),
    _f("ipv6_dst", "ipv6_dst", 128, "ipv6", True, "yes", _V6),
    _f("tcp_src", "tcp_src", 16, "dec", True, "yes", _TCP),
    _f("tcp_dst", "tcp_dst", 16, "dec", True, "yes", _TCP),
    _f("tcp_flags", "tcp_flags", 12, "hex", True, "no", _TCP),
    _f("udp_src", "udp_src", 16, "dec", True, "yes", _UDP),
    _f("udp_dst", "udp_dst", 16, "dec", True, "yes", _UDP),
    _f("sctp_src", "sctp_src", 16, "dec", True, "yes", _SCTP),
    _f("sctp_dst", "sctp_dst", 16, "dec", True, "yes", _SCTP),
    _f("icmp_type", "icmp_type", 8, "dec", False, "yes", _V4, _ICMP),
    _f("icmp_code", "icmp_code", 8, "dec", False, "yes", _V4, _ICMP),
    _f("icmpv6_type", "icmpv6_type", 8, "dec", False, "yes", _V6, _ICMP6),
    _f("icmpv6_code", "icmpv6_code", 8, "dec", False, "yes", _V6, _ICMP6),
    _f("arp_op", "arp_op", 16, "dec", False, "yes", _ARP),
    _f("arp_spa", "arp_spa", 32, "ipv4", True, "yes", _ARP),
    _f("arp_tpa", "arp_tpa", 32, "ipv4", True, "yes", _ARP),
    _f("arp_sha", "arp_sha", 48, "mac", True, "yes", _ARP),
    _f("arp_tha", "arp_tha", 48, "mac", True, "yes", _ARP),
    _f("nd_target", "nd_target", 128, "ipv6", True, "yes", ("icmpv6_type", frozenset({135, 136}))),
    _f("nd_sll", "nd_sll", 48, "mac", True, "yes", ("icmpv6_type", frozenset({135}))),
    _f("nd_tll", "nd_tll", 48, "mac", True, "yes", ("icmpv6_type", frozenset({136}))),
    _f("ct_state", "ct_state", 32, "ct_state", True, "no"),
    _f("ct_zone", "ct_zone", 16, "dec", False, "no"),
    _f("ct_mark", "ct_mark", 32, "hex", True, "ct"),
    _f("ct_label", "ct_label", 128, "hex", True, "ct"),
    _f("tun_id", "tun_id", 64, "hex", True, "yes"),
    _f("tun_src", "tun_src", 32, "ipv4", True, "yes"),
    _f("tun_dst", "tun_dst", 32, "ipv4", True, "yes"),
    # Geneve option 0: 8 bytes (add-tlv-map {class=0xffff,type=0,len=8}->tun_metadata0).
    _f("tun_metadata0", "tun_metadata0", 64, "hex", True, "yes"),
    _f("conj_id", "conj_id", 32, "dec", False, "no"),
)
FIELDS: dict[str, FieldSpec] = {f.name: f for f in _FIELD_LIST}

if set(FIELDS) & set(registers.BY_NAME):
    raise AssertionError("a register is named like a header field")
_BITS = {n: f.bits for n, f in FIELDS.items()} | {n: r.width for n, r in registers.BY_NAME.items()}
_MASKABLE = {n for n, f in FIELDS.items() if f.maskable} | set(registers.BY_NAME)
_PREREQS = {n: f.prereqs for n, f in FIELDS.items() if f.prereqs}

# ----------------------------------------------------------------------------- values

MatchValue: TypeAlias = (
    int
    | str
    | tuple[int | str, int | str]
    | ipaddress.IPv4Address
    | ipaddress.IPv6Address
    | ipaddress.IPv4Network
    | ipaddress.IPv6Network
)


def _full(bits: int) -> int:
    return (1 << bits) - 1


_HEX = frozenset("0123456789abcdefABCDEF")


def _parse_mac(text: str) -> int:
    if len(text) == 17 and text[2::3] == ":::::":  # the canonical form, fast
        digits = text.replace(":", "")
        if digits.isascii() and digits.isalnum():  # (int() would take _, + and spaces)
            return int(digits, 16)  # ValueError for a non-hex letter
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 and set(p) <= _HEX for p in parts):
        raise IRError(f"bad MAC address {text!r}")
    return int("".join(p.zfill(2) for p in parts), 16)


def _parse_text(kind: FieldKind, bits: int, text: str) -> tuple[int, int]:
    text = text.strip()
    if kind == "ct_state":
        return _parse_ct_state(text)
    value_text, _, mask_text = text.partition("/")
    if kind == "mac":
        return _parse_mac(value_text), _parse_mac(mask_text) if mask_text else _full(48)
    if kind == "ipv4":
        fast = _parse_ipv4(value_text, mask_text)
        if fast is not None:
            return fast
    if kind in ("ipv4", "ipv6"):
        net = ipaddress.ip_network(value_text if not mask_text else text, strict=False)
        if (net.version == 4) != (kind == "ipv4"):
            raise IRError(f"{text!r} is not an {kind} address")
        return int(net.network_address), int(net.netmask)
    value = int(value_text, 0)
    return value, int(mask_text, 0) if mask_text else _full(bits)


def _parse_ipv4(addr: str, plen: str) -> tuple[int, int] | None:
    """Dotted quad [/prefix length] without ipaddress (which is slow); None: let
    ipaddress parse it (other forms) or say what is wrong with it."""
    try:  # (inet_pton takes exactly a dotted quad, no leading zeros, as ipaddress does)
        value = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except (OSError, ValueError):
        return None
    if not plen:
        return value, 0xFFFFFFFF
    if not (plen.isascii() and plen.isdigit()) or len(plen) > 2 or int(plen) > 32:
        return None
    mask = 0xFFFFFFFF ^ ((1 << (32 - int(plen))) - 1)
    return value & mask, mask


def ip_value(text: str) -> tuple[int, int]:
    """(version, value) of an IP address as ipaddress.ip_address reads it (ValueError if
    it is none); fast for an IPv4 dotted quad, which apps parse once per port."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        addr = ipaddress.ip_address(text)
        return addr.version, int(addr)


def _parse_ct_state(text: str) -> tuple[int, int]:
    names = dict(CT_FLAGS)
    value = mask = 0
    i = 0
    while i < len(text):
        sign = text[i]
        j = i + 1
        while j < len(text) and text[j] not in "+-":
            j += 1
        name = text[i + 1 : j]
        if sign not in "+-" or name not in names:
            raise IRError(f"bad ct_state {text!r}: flags are +/- one of {sorted(names)}")
        mask |= names[name]
        if sign == "+":
            value |= names[name]
        i = j
    return value, mask


_PARSED: dict[tuple[str, type, MatchValue], tuple[int, int]] = {}
_PARSED_MAX = 1 << 17  # entries; the memo starts over when full


def clear_caches() -> None:
    """Forget every memo of values and shapes (benchmarks measure a cold start; tests
    compare cold with warm). FlowTemplates stay valid: they hold their checked shape."""
    _PARSED.clear()
    _ITEMS.clear()
    _PREREQ_PLANS.clear()
    _VALID_SHAPES.clear()
    for made in _MADE.values():
        made.clear()


def parse_value(name: str, raw: MatchValue) -> tuple[int, int]:
    """(value, mask) of a field or register value given as int, text, (value, mask) or IP.

    Memoised (apps give the same MAC, address or CIDR text for many flows); the memo key
    carries the value's type, so `1` and `True` or `"1"` never share an entry.
    """
    try:
        key = (name, type(raw), raw)
        got = _PARSED.get(key)
    except TypeError:  # unhashable: not a MatchValue, let the parser say so
        return parse_value_uncached(name, raw)
    if got is None:
        got = parse_value_uncached(name, raw)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = got
    return got


def parse_value_uncached(name: str, raw: MatchValue) -> tuple[int, int]:
    """parse_value without the memo (the reference the tests compare it with)."""
    kind: FieldKind
    if name in FIELDS:
        kind, bits = FIELDS[name].kind, FIELDS[name].bits
    elif name in registers.BY_NAME:
        kind, bits = "hex", registers.BY_NAME[name].width
    else:
        raise IRError(f"unknown field or register {name!r}")
    if isinstance(raw, bool):
        value, mask = int(raw), _full(bits)
    elif isinstance(raw, int):
        value, mask = raw, _full(bits)
    elif isinstance(raw, tuple | str):
        try:
            if isinstance(raw, str):
                value, mask = _parse_text(kind, bits, raw)
            else:
                value, mask = (
                    p if isinstance(p, int) else _parse_text(kind, bits, p)[0] for p in raw
                )
        except IRError:
            raise
        except ValueError as exc:
            raise IRError(f"{name}: {exc}") from None
    elif isinstance(raw, ipaddress.IPv4Network | ipaddress.IPv6Network):
        if kind not in ("ipv4", "ipv6") or (raw.version == 4) != (kind == "ipv4"):
            raise IRError(f"{name}: {raw} is not a {kind} value")
        value, mask = int(raw.network_address), int(raw.netmask)
    else:
        if kind not in ("ipv4", "ipv6") or (raw.version == 4) != (kind == "ipv4"):
            raise IRError(f"{name}: {raw} is not a {kind} value")
        value, mask = int(raw), _full(bits)
    if not (0 <= value <= _full(bits) and 0 <= mask <= _full(bits)):
        raise IRError(f"{name}: {raw!r} does not fit {bits} bits")
    return value & mask, mask


def format_value(kind: FieldKind, bits: int, value: int, mask: int | None = None) -> str:
    """ovs-ofctl text of a value (and mask, if not all ones)."""
    if mask is not None and mask == _full(bits):
        mask = None
    if kind == "ct_state":
        m = _full(bits) if mask is None else mask
        return "".join(("+" if value & bit else "-") + n for n, bit in CT_FLAGS if m & bit)
    if kind == "mac":
        text = value.to_bytes(6, "big").hex(":")
        return text if mask is None else f"{text}/{mask.to_bytes(6, 'big').hex(':')}"
    if kind in ("ipv4", "ipv6"):
        addr = ipaddress.IPv4Address(value) if kind == "ipv4" else ipaddress.IPv6Address(value)
        text = str(addr)
        if mask is None:
            return text
        plen = _prefix_len(mask, bits)
        if plen is not None:
            return f"{text}/{plen}"
        full = ipaddress.IPv4Address(mask) if kind == "ipv4" else ipaddress.IPv6Address(mask)
        return f"{text}/{full}"
    if kind == "dec":
        return str(value) if mask is None else f"{value:#x}/{mask:#x}"
    return f"{value:#x}" if mask is None else f"{value:#x}/{mask:#x}"


def _prefix_len(mask: int, bits: int) -> int | None:
    inv = _full(bits) ^ mask
    if inv & (inv + 1):
        return None
    return bits - inv.bit_length()


def port_range(lo: int, hi: int) -> list[tuple[int, int]]:
    """(value, mask) pairs whose union is exactly the L4 ports lo..hi (for tcp_dst etc.)."""
    if not 0 <= lo <= hi <= 0xFFFF:
        raise IRError(f"bad port range {lo}..{hi}")
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF ^ (size - 1)))
        lo += size
    return out


def valid_port(port: int) -> bool:
    """An OpenFlow port number ovs-ofctl reads unambiguously: a physical port below
    0xff00 (OpenFlow 1.0's reserved range) or an OpenFlow 1.1+ reserved port."""
    return 0 < port < 0xFF00 or 0xFFFFFF00 <= port <= 0xFFFFFFFF


# ----------------------------------------------------------------------------- match


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


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Bits:
    """A bit range of a header field, for Move (e.g. Bits("tun_metadata0", 32, 32))."""

    field: str
    start: int
    width: int


@dataclass(frozen=True, slots=True)
class Output:
    """Output to an OpenFlow port number (PORT_IN_PORT: back out of the input port)."""

    port: int


@dataclass(frozen=True, slots=True)
class OutputReg:
    """Output to the port number held in a register."""

    register: RegisterName


@dataclass(frozen=True, slots=True)
class Goto:
    """goto_table: the rest of the pipeline continues there. Must be last, and forward."""

    stage: StageName


@dataclass(frozen=True, slots=True)
class Resubmit:
    """resubmit(,N): run that stage's matching flow, then continue with the next action."""

    stage: StageName


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: int | str
    mask: int | None = None


@dataclass(frozen=True, slots=True)
class Load:
    register: RegisterName
    value: int


@dataclass(frozen=True, slots=True)
class Move:
    """Copy bits: src/dst are field names, register names or Bits; widths must agree."""

    src: str | Bits
    dst: str | Bits


@dataclass(frozen=True, slots=True)
class DecTtl:
    """Decrement nw_ttl (IPv4 TTL / IPv6 hop limit); a packet at TTL ≤ 1 is dropped."""


@dataclass(frozen=True, slots=True)
class Nat:
    """ct NAT. kind None is bare `nat`: apply the connection's existing translation."""

    kind: Literal["src", "dst"] | None = None
    addr: str | None = None
    addr_max: str | None = None
    port: int | None = None
    port_max: int | None = None

    def __post_init__(self) -> None:
        if (self.kind is None) != (self.addr is None):
            raise IRError("Nat: give both kind and addr, or neither (bare nat)")
        if self.addr is not None:
            family = ipaddress.ip_address(self.addr).version
            if self.addr_max is not None and ipaddress.ip_address(self.addr_max).version != family:
                raise IRError("Nat: address range mixes IPv4 and IPv6")
        elif self.addr_max is not None or self.port is not None:
            raise IRError("Nat: a range or port needs an address")
        if self.port_max is not None and self.port is None:
            raise IRError("Nat: port_max needs port")

    @property
    def family(self) -> int | None:
        return ipaddress.ip_address(self.addr).version if self.addr else None


@dataclass(frozen=True, slots=True)
class Ct:
    """Conntrack. zone: a register name or a constant. table: recirculate there afterwards
    with ct_state set (must then be the last action). exec: SetFields of ct_mark/ct_label
    stored in the connection (needs commit)."""

    commit: bool = False
    zone: RegisterName | int = 0
    table: StageName | None = None
    nat: Nat | None = None
    exec: tuple[SetField, ...] = ()

    def __post_init__(self) -> None:
        if (self.exec or (self.nat is not None and self.nat.kind)) and not self.commit:
            raise IRError("Ct: exec(...) and nat with an address need commit")
        for sf in self.exec:
            if sf.field not in ("ct_mark", "ct_label"):
                raise IRError(f"Ct: exec may only set ct_mark/ct_label, not {sf.field}")
        if isinstance(self.zone, int) and not 0 <= self.zone <= 0xFFFF:
            raise IRError(f"Ct: zone {self.zone} does not fit 16 bits")


@dataclass(frozen=True, slots=True)
class CtClear:
    """Forget conntrack state (ct_state etc. back to 0), e.g. between zones."""


@dataclass(frozen=True, slots=True)
class Controller:
    """Send a copy to the controller (packet-in); processing continues."""

    reason: Literal["action", "no_match", "invalid_ttl"] = "action"
    userdata: bytes = b""
    max_len: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int


@dataclass(frozen=True, slots=True)
class Conjunction:
    """conjunction(id, clause/n_clauses), clause numbered 1..n as in ovs-ofctl."""

    conj_id: int
    clause: int
    n_clauses: int

    def __post_init__(self) -> None:
        if not (2 <= self.n_clauses <= 64 and 1 <= self.clause <= self.n_clauses):
            raise IRError(f"bad conjunction clause {self.clause}/{self.n_clauses}")
        if not 0 < self.conj_id < (1 << 32):
            raise IRError("conjunction id must be 1..2**32-1 (conj_id 0 is every packet)")


@dataclass(frozen=True, slots=True)
class PushVlan:
    tpid: int = 0x8100


@dataclass(frozen=True, slots=True)
class PopVlan:
    pass


Action: TypeAlias = (
    Output
    | OutputReg
    | Goto
    | Resubmit
    | SetField
    | Load
    | Move
    | DecTtl
    | Ct
    | CtClear
    | Controller
    | Group
    | Conjunction
    | PushVlan
    | PopVlan
)
DROP: tuple[Action, ...] = ()


def field_bits(ref: str | Bits) -> tuple[str, int, int]:
    """(field or register name, start, width) of a Move operand, validated."""
    if isinstance(ref, Bits):
        spec = FIELDS.get(ref.field)
        if spec is None:
            raise IRError(f"Bits: unknown header field {ref.field!r}")
        if ref.width < 1 or ref.start < 0 or ref.start + ref.width > spec.bits:
            raise IRError(f"Bits: {ref} out of range for {spec.bits}-bit {ref.field}")
        return ref.field, ref.start, ref.width
    if ref in FIELDS:
        return ref, 0, FIELDS[ref].bits
    if ref in registers.BY_NAME:
        return ref, 0, registers.BY_NAME[ref].width
    raise IRError(f"unknown field or register {ref!r}")


def setfield_value(sf: SetField) -> tuple[int, int]:
    """(value, mask) of a SetField, parsed like a match value."""
    spec = FIELDS.get(sf.field)
    if spec is None:
        raise IRError(f"SetField: unknown field {sf.field!r} (registers take Load)")
    value, mask = parse_value(sf.field, sf.value)
    if sf.mask is not None:
        if mask != _full(spec.bits):
            raise IRError("SetField: give the mask once")
        mask = sf.mask
        if not 0 < mask <= _full(spec.bits):
            raise IRError(f"SetField: mask {mask:#x} does not fit {sf.field}")
        value &= mask
    return value, mask


# ----------------------------------------------------------------------------- flows


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
        else:
            out.append(a)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Flow:
    """One OpenFlow flow. Identity for diffing is `key` (stage, priority, match); full
    equality (actions and cookie too) tells whether an installed flow must be modified."""

    stage: StageName
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int
    # The FlowTemplate that built it, if one did (render.py renders its flows by a plan
    # made once per template). Not part of the flow's value.
    template: FlowTemplate | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.template is not None:  # only a template sets it (dataclasses.replace of
            _setattr(self, "template", None)  # its flow may change the shape): render plain
        if type(self.match) is not Match or type(self.actions) is not tuple:
            pipeline.stage(self.stage)  # an unknown stage is named first
            raise IRError(f"stage {self.stage}: build flows with table(...).flow(...)")
        if not 0 <= self.priority <= 0xFFFF:
            pipeline.stage(self.stage)
            raise IRError(f"stage {self.stage}: priority {self.priority} outside 0..65535")
        # Validity depends only on the stage, the cookie's app, the match's shape and the
        # actions: each such combination is checked once (see _match_shape).
        acts = _actions_shape(self.actions)
        if acts is None:  # a value out of range, or unhashable: the full check says why
            self.validate()
            return
        shape = (self.stage, self.cookie >> cookies.OBJECT_BITS, _match_shape(self.match), acts)
        try:
            if shape in _VALID_SHAPES:
                return
        except TypeError:  # something unhashable in the actions: check it every time
            self.validate()
            return
        self.validate()
        if len(_VALID_SHAPES) >= _VALID_SHAPES_MAX:
            _VALID_SHAPES.clear()
        _VALID_SHAPES.add(shape)

    def validate(self) -> None:
        """Every check, uncached: raises IRError unless the flow is valid."""
        st = pipeline.stage(self.stage)
        where = f"stage {self.stage}"
        if type(self.match) is not Match or type(self.actions) is not tuple:
            raise IRError(f"{where}: build flows with table(...).flow(...)")
        if not 0 <= self.priority <= 0xFFFF:
            raise IRError(f"{where}: priority {self.priority} outside 0..65535")
        for name, _, _ in self.match.items:
            if name not in st.match:
                undeclared = sorted(self.match.names() - st.match)
                raise IRError(f"{where}: match on undeclared field(s) {undeclared}")
        try:
            app, _ = cookies.decode(self.cookie)
        except ValueError as exc:
            raise IRError(f"{where}: {exc}") from None
        if app not in (st.owner, "pipeline"):
            raise IRError(f"{where}: owned by {st.owner}, not {app}")
        if (
            "conj_id" in st.match
            and self.match.exact("conj_id") is not None
            and any(type(a) is Conjunction for a in self.actions)
        ):
            raise IRError(f"{where}: a conj_id flow cannot itself be a conjunction clause")
        check_actions(st, self.match, self.actions)

    @property
    def table(self) -> int:
        return pipeline.table_of(self.stage)

    @property
    def key(self) -> tuple[StageName, int, Match]:
        return (self.stage, self.priority, self.match)


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 100


@dataclass(frozen=True, slots=True)
class GroupDef:
    """An OpenFlow group. `stage` is the stage whose declaration its buckets obey."""

    group_id: int
    type: Literal["all", "select", "indirect"]
    buckets: tuple[Bucket, ...]
    stage: StageName

    def __post_init__(self) -> None:
        st = pipeline.stage(self.stage)
        if not 0 <= self.group_id <= 0xFFFFFF00:
            raise IRError(f"bad group id {self.group_id}")
        if self.type == "indirect" and len(self.buckets) != 1:
            raise IRError("an indirect group has exactly one bucket")
        for b in self.buckets:
            if b.weight < 0 or b.weight > 0xFFFF:
                raise IRError(f"bad bucket weight {b.weight}")
            # Buckets have no match of their own, and OVS does not check OpenFlow
            # prerequisites for them: the flows that reach the group must.
            check_actions(st, Match(), b.actions, in_group=True)


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
    Load, SetField (unmasked, not vlan_vid) and Output actions whose value each flow
    gives, as an int after the match values (a register's range, the field's bits, a
    valid OpenFlow port). The actions given there are samples: the shape is checked with
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
    stage: str, slot: tuple[int, Callable[[int], Action], int, dict[int, Action]], v: object
) -> Action:
    """A varying action's action for value v (checked, then remembered)."""
    _, make, top, made = slot
    if type(v) is not int or not (0 <= v <= top if top else valid_port(v)):
        raise IRError(f"FlowTemplate({stage}): action value {v!r} invalid")
    a = make(v)
    if len(made) >= _MADE_MAX:
        made.clear()
    made[v] = a
    return a


def _action_slot(
    actions: tuple[Action, ...], i: int
) -> tuple[int, Callable[[int], Action], int, dict[int, Action]]:
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
    raise IRError(f"FlowTemplate: the value of {a!r} cannot vary")


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
