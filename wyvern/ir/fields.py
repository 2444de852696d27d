"""Header fields and their values: the field table, parsing and formatting."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from wyvern.ir import registers

if TYPE_CHECKING:
    pass

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

# ip_frag (OVS's nw_frag): bit 0 the packet is a fragment, bit 1 a later one (no L4 header).
FRAG_ANY, FRAG_LATER = 1, 2
FRAG_NAMES: tuple[tuple[str, int, int], ...] = (  # ovs-ofctl's names: (name, value, mask)
    ("no", 0, FRAG_ANY),
    ("yes", FRAG_ANY, FRAG_ANY),
    ("first", FRAG_ANY, FRAG_ANY | FRAG_LATER),
    ("later", FRAG_ANY | FRAG_LATER, FRAG_ANY | FRAG_LATER),
    ("not_later", 0, FRAG_LATER),
)

FieldKind = Literal["dec", "hex", "mac", "ipv4", "ipv6", "ct_state", "frag"]
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
    # A later IPv6 fragment's ip_proto is 44 (fragment): OVS stops at the fragment header.
    _f("ip_frag", "nw_frag", 2, "frag", True, "no", _V46),
    _f("nw_ttl", "nw_ttl", 8, "dec", False, "yes", _V46),
    _f("ip_dscp", "ip_dscp", 6, "dec", False, "yes", _V46),  # the IP TOS's top 6 bits
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
    if kind == "frag":
        for name, value, mask in FRAG_NAMES:
            if text == name:
                return value, mask
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


def ip_version(text: str) -> int:
    """ipaddress.ip_address(text).version (ValueError if it is no address), fast for the
    forms inet_pton reads (a subset of ipaddress's: the rest goes to ipaddress). A NAT
    address per port (the metadata service's) is checked when made and when rendered."""
    try:
        v6 = ":" in text
        socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, text)
    except (OSError, ValueError, TypeError):
        return ipaddress.ip_address(text).version
    return 6 if v6 else 4


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
_PARSED_MAX = 1 << 17  # entries; the memo starts over when full (Engine.full clears it)


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
    if kind == "frag":
        m = _full(bits) if mask is None else mask
        for name, v, named_mask in FRAG_NAMES:
            if (v, named_mask) == (value & m, m):
                return name
        return f"{value:#x}/{m:#x}"
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
