"""Actions: the OpenFlow actions apps may use, as small hashable values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from wyvern.ir import registers
from wyvern.ir.fields import FIELDS, IRError, _full, ip_version, parse_value
from wyvern.ir.pipeline import StageName
from wyvern.ir.registers import RegisterName

if TYPE_CHECKING:
    pass


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
class CheckPktLarger:
    """`check_pkt_larger(length)->register`: the 1-bit REGISTER becomes 1 when the frame
    (Ethernet header included, no VLAN tag at this point of our pipeline) is longer than
    LENGTH bytes, else 0. So a network MTU m is checked with length m + 14."""

    length: int
    register: RegisterName

    def __post_init__(self) -> None:
        if not 0 < self.length <= 0xFFFF:
            raise IRError(f"CheckPktLarger: length {self.length} does not fit 16 bits")


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
            family = ip_version(self.addr)
            if self.addr_max is not None and ip_version(self.addr_max) != family:
                raise IRError("Nat: address range mixes IPv4 and IPv6")
        elif self.addr_max is not None or self.port is not None:
            raise IRError("Nat: a range or port needs an address")
        if self.port_max is not None and self.port is None:
            raise IRError("Nat: port_max needs port")

    @property
    def family(self) -> int | None:
        return ip_version(self.addr) if self.addr else None


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
class Meter:
    """Count the packet against an OpenFlow meter, which drops it over its rate. Must be
    a flow's first action (OVS applies meters before any other action); the meter itself
    is configured by the southbound (wyvern/southbound/meters.py), not by a flow."""

    meter_id: int

    def __post_init__(self) -> None:
        if not 0 < self.meter_id <= 0xFFFF0000:
            raise IRError(f"Meter: bad meter id {self.meter_id}")


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
    | CheckPktLarger
    | Ct
    | CtClear
    | Controller
    | Meter
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
