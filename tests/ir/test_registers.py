"""The register map: named allocations, no shared bits (xreg aliases included)."""

from __future__ import annotations

from typing import get_args

import pytest

from wyvern.ir import registers
from wyvern.ir.packet import Packet
from wyvern.ir.registers import REGISTERS, Register, RegisterName, Segment


def test_the_map_has_no_overlaps() -> None:
    registers.check_no_overlaps(REGISTERS)  # also runs at import


def test_required_names_exist() -> None:
    for name in (
        "src_port_key",
        "dst_port_key",
        "network_key",
        "router_key",
        "flag_from_tunnel",
        "flag_allow_loopback",
        "flag_acl_allowed",
        "port_ct_zone",
        "scratch",
    ):
        assert registers.register(name).name == name
    assert get_args(RegisterName) == tuple(r.name for r in REGISTERS)


def test_overlap_is_detected() -> None:
    a = Register("a", "reg3", 0, 16, "")
    b = Register("b", "reg3", 15, 2, "")
    with pytest.raises(ValueError, match="overlap at reg3\\[15\\]"):
        registers.check_no_overlaps([a, b])
    registers.check_no_overlaps([a, Register("c", "reg3", 16, 16, "")])


def test_xreg_aliases_are_resolved() -> None:
    # xreg0 = reg0 (high half) : reg1 (low half)
    x = Register("x", "xreg0", 24, 16, "")
    assert x.segments() == (Segment("reg1", 24, 8, 0), Segment("reg0", 0, 8, 8))
    with pytest.raises(ValueError, match="overlap at reg1\\[24\\]"):
        registers.check_no_overlaps([Register("low", "reg1", 24, 8, ""), x])
    with pytest.raises(ValueError, match="overlap at reg0\\[0\\]"):
        registers.check_no_overlaps([x, Register("high", "reg0", 0, 1, "")])


def test_duplicate_name_and_bad_ranges() -> None:
    with pytest.raises(ValueError, match="twice"):
        registers.check_no_overlaps(
            [Register("a", "reg2", 0, 1, ""), Register("a", "reg2", 1, 1, "")]
        )
    with pytest.raises(ValueError):
        Register("a", "reg2", 20, 16, "")
    with pytest.raises(ValueError):
        Register("a", "reg16", 0, 1, "")
    with pytest.raises(KeyError):
        registers.register("nonesuch")


def test_subfields_and_masks() -> None:
    assert registers.register("port_ct_zone").subfield == "reg13[0..15]"
    assert registers.register("network_key").subfield == "metadata[0..23]"
    assert registers.register("flag_acl_allowed").mask == 0b100


def test_packet_reads_and_writes_register_bits() -> None:
    p = Packet()
    p["flag_from_tunnel"] = 1
    p["flag_acl_allowed"] = 1
    p["network_key"] = 0xABCDEF
    assert p["reg10"] == 0b101 and p["metadata"] == 0xABCDEF
    assert p["flag_allow_loopback"] == 0
    with pytest.raises(ValueError):
        p["network_key"] = 1 << 24


def test_describe_rows() -> None:
    rows = registers.describe()
    assert len(rows) == len(REGISTERS)
    assert rows[0].subfield == "reg0[0..31]"
