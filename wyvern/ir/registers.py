"""The register map: every per-packet scratch value, allocated by name in one place.

Apps name registers (`src_port_key`, `flag_from_tunnel`…), never `reg14` or a bit number.
The map follows OVN's layout where it can, so a reader of `ovn-architecture(7)` feels at
home: metadata = network (OVN's datapath), reg14/reg15 = source/destination port,
reg13 = conntrack zone, reg10 = flags.

Key widths are part of the design: network and router keys are 24 bits (a Geneve/VXLAN
VNI), port keys 32 bits (Geneve carries both in the 8-byte `tun_metadata0` option:
source in bits 32..63, destination in bits 0..31), conntrack zones 16 bits.

`check_no_overlaps` runs at import: two names sharing a bit cannot ship. The `xreg`
aliases (xregN = reg(2N) high half : reg(2N+1) low half) and `xxreg` aliases (xxregN =
reg(4N) most significant ... reg(4N+3) least) are resolved first, so an xreg or xxreg
allocation overlapping a reg allocation is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

RegisterName = Literal[
    "scratch",
    "next_hop_ipv4",
    "next_hop_ipv6",
    "routed_eth_src",
    "flag_from_tunnel",
    "flag_allow_loopback",
    "flag_acl_allowed",
    "flag_pkt_larger",
    "router_ct_zone",
    "router_key",
    "port_ct_zone",
    "src_port_key",
    "dst_port_key",
    "network_key",
    "punt_code",
    "addr_scope",
    "meter_slot",
]

_FIELD = re.compile(
    r"^(?:reg(?P<reg>1[0-5]|[0-9])|xreg(?P<xreg>[0-7])|xxreg(?P<xxreg>[0-3])|metadata)$"
)


class Segment(NamedTuple):
    """A piece of a register in a physical 32-bit register (or metadata)."""

    field: str  # reg0..reg15 or metadata
    start: int  # first bit in that field
    width: int
    offset: int  # bit of the register's value that lands on `start`


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    field: str  # OVS field: reg0..reg15, xreg0..xreg7, xxreg0..xxreg3 or metadata
    start: int
    width: int
    description: str

    def __post_init__(self) -> None:
        if not _FIELD.match(self.field):
            raise ValueError(f"register {self.name}: {self.field!r} is not reg/xreg/metadata")
        if self.width < 1 or self.start < 0 or self.start + self.width > self.field_bits:
            raise ValueError(f"register {self.name}: bits out of range of {self.field}")

    @property
    def field_bits(self) -> int:
        if self.field.startswith("xxreg"):
            return 128
        return 32 if self.field.startswith("reg") else 64

    @property
    def end(self) -> int:
        return self.start + self.width - 1

    @property
    def max_value(self) -> int:
        return (1 << self.width) - 1

    @property
    def mask(self) -> int:
        """The register's bits within its OVS field."""
        return self.max_value << self.start

    @property
    def subfield(self) -> str:
        """OVS subfield syntax, e.g. `reg14[0..31]`, for load/move/output/ct zone."""
        return f"{self.field}[{self.start}..{self.end}]"

    def segments(self) -> tuple[Segment, ...]:
        """Where the bits physically live: an xreg in its two 32-bit halves, an xxreg in its
        four (xregN = reg(2N):reg(2N+1), xxregN = reg(4N):...:reg(4N+3), high to low)."""
        m = _FIELD.match(self.field)
        assert m is not None
        if m.group("xreg") is not None:
            n, parts = 2 * int(m.group("xreg")), 2
        elif m.group("xxreg") is not None:
            n, parts = 4 * int(m.group("xxreg")), 4
        else:
            return (Segment(self.field, self.start, self.width, 0),)
        out: list[Segment] = []
        for i in range(parts):
            half_start, half = 32 * i, f"reg{n + parts - 1 - i}"
            lo = max(self.start, half_start)
            hi = min(self.end, half_start + 31)
            if lo <= hi:
                out.append(Segment(half, lo - half_start, hi - lo + 1, lo - self.start))
        return tuple(out)


REGISTERS: tuple[Register, ...] = (
    Register("scratch", "reg0", 0, 32, "Free for use within one stage; never carried across"),
    Register("next_hop_ipv4", "reg1", 0, 32, "IPv4 next hop chosen by routing, for arp_resolve"),
    # (OVN keeps its IPv6 next hop in xxreg0, which overlaps ours of reg0..reg2: xxreg1 =
    # reg4..reg7; docs/dataplane.md: IPv6 next-hop register)
    Register("next_hop_ipv6", "xxreg1", 0, 128, "IPv6 next hop chosen by routing, for arp_resolve"),
    Register(
        "routed_eth_src",
        "xreg4",
        0,
        48,
        "A routed IPv6 packet's source MAC before routing rewrote it (ICMPv6 errors go there)",
    ),
    Register("flag_from_tunnel", "reg10", 0, 1, "Packet arrived from a tunnel (remote chassis)"),
    Register(
        "flag_allow_loopback", "reg10", 1, 1, "Output may go back out of the input port (replies)"
    ),
    Register("flag_acl_allowed", "reg10", 2, 1, "A security group rule allowed this packet"),
    Register(
        "flag_pkt_larger", "reg10", 3, 1, "Routed frame over the egress MTU (check_pkt_larger)"
    ),
    Register("router_ct_zone", "reg11", 0, 16, "Conntrack zone of the router (SNAT/DNAT)"),
    Register("router_key", "reg12", 0, 24, "Key of the logical router being traversed"),
    Register("port_ct_zone", "reg13", 0, 16, "Conntrack zone of the port (security groups)"),
    Register("src_port_key", "reg14", 0, 32, "Key of the logical input port"),
    Register("dst_port_key", "reg15", 0, 32, "Key of the logical output port"),
    Register("network_key", "metadata", 0, 24, "Key of the logical network (the VNI)"),
    Register("punt_code", "reg2", 0, 24, "The punt's userdata (up to 3 bytes), for punt"),
    Register(
        "addr_scope", "reg3", 0, 24, "Address scope key of the router port a packet came in by"
    ),
    Register("meter_slot", "reg8", 16, 16, "Metering label key * 2 + direction, for meter_count"),
)

BY_NAME: dict[str, Register] = {r.name: r for r in REGISTERS}


def register(name: RegisterName | str) -> Register:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no register named {name!r} in registers.REGISTERS") from None


def check_no_overlaps(regs: Iterable[Register]) -> None:
    """Raise ValueError when two registers share a name or a physical bit."""
    owner: dict[tuple[str, int], str] = {}
    names: set[str] = set()
    for reg in regs:
        if reg.name in names:
            raise ValueError(f"register name {reg.name!r} allocated twice")
        names.add(reg.name)
        for seg in reg.segments():
            for bit in range(seg.start, seg.start + seg.width):
                other = owner.setdefault((seg.field, bit), reg.name)
                if other != reg.name:
                    raise ValueError(
                        f"registers {other!r} and {reg.name!r} overlap at {seg.field}[{bit}]"
                    )


class RegisterRow(NamedTuple):
    name: str
    subfield: str
    width: int
    description: str


def describe() -> list[RegisterRow]:
    """The map as rows, for docs and a `wyvern pipeline` command."""
    return [RegisterRow(r.name, r.subfield, r.width, r.description) for r in REGISTERS]


check_no_overlaps(REGISTERS)
if tuple(BY_NAME) != get_args(RegisterName):
    raise AssertionError("RegisterName must list registers.REGISTERS in the same order")
