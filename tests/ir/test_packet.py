"""Simulator packets: fields as ints, zero by default, and the builders."""

from __future__ import annotations

import pytest

from wyvern.ir import ETH_TYPE_ARP, ETH_TYPE_IPV6, VLAN_PRESENT, IRError
from wyvern.ir import packet as pk
from wyvern.ir.packet import Packet


def test_absent_fields_read_zero_and_zero_is_absent() -> None:
    p = Packet()
    assert p["tcp_dst"] == 0 and p["reg7"] == 0 and p["src_port_key"] == 0
    p["tcp_dst"] = 80
    p["tcp_dst"] = 0
    assert p == Packet() and list(p) == []
    with pytest.raises(ValueError):
        p["eth_type"] = 1 << 16
    with pytest.raises(KeyError):
        p["nonesuch"] = 1


def test_copy_is_independent_and_equality_is_by_value() -> None:
    a = pk.tcp(1, "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 1, 2)
    b = a.copy()
    b["nw_ttl"] = 1
    assert a["nw_ttl"] == 64 and a != b
    assert "ipv4_src=10.0.0.1" in repr(a) and "eth_src=02:00:00:00:00:01" in repr(a)


def test_builders() -> None:
    syn_ack = pk.tcp(
        1, "02:00:00:00:00:01", "02:00:00:00:00:02", "fd00::1", "fd00::2", 1, 2, "SA", vlan=5
    )
    assert syn_ack["eth_type"] == ETH_TYPE_IPV6 and syn_ack["ipv6_dst"] == 0xFD00 << 112 | 2
    assert syn_ack["tcp_flags"] == pk.TCP_SYN | pk.TCP_ACK
    assert syn_ack["vlan_vid"] == VLAN_PRESENT | 5
    req = pk.arp(3, "02:00:00:00:00:01", "10.0.0.1", "10.0.0.9")
    assert req["eth_type"] == ETH_TYPE_ARP and req["arp_op"] == 1
    assert req["arp_sha"] == req["eth_src"] == 0x020000000001
    assert req["eth_dst"] == (1 << 48) - 1
    echo = pk.icmp_echo(1, "02:00:00:00:00:01", "02:00:00:00:00:02", "fd00::1", "fd00::2")
    assert (echo["ip_proto"], echo["icmpv6_type"]) == (58, 128)
    err = pk.icmp_error(
        2,
        "02:00:00:00:00:02",
        "02:00:00:00:00:01",
        "10.0.0.2",
        "10.0.0.1",
        about=echo,
        type=11,
        code=0,
    )
    assert err.inner == echo and err.inner is not echo and err["icmp_type"] == 11
    ns = pk.nd_solicit(1, "02:00:00:00:00:01", "fe80::1", "fe80::2")
    assert ns["icmpv6_type"] == 135 and ns["nd_sll"] == 0x020000000001
    assert pk.packet(src_port_key=7)["reg14"] == 7
    with pytest.raises(ValueError, match="masked"):
        pk.packet(ipv4_src="10.0.0.0/24")
    with pytest.raises(IRError):
        pk.packet(ipv4_src="not-an-ip")
