"""The metadata service through the simulator: each local VM's TCP to 169.254.169.254:80
and [fe80::a9fe:a9fe]:80 leaves by the metadata port from its own per-port address,
whatever MAC it was sent to; the service's replies come back to that VM only, through
its security groups; ARP and ND for the service addresses are answered."""

from __future__ import annotations

import ipaddress

from tests.apps import scenario as sc
from wyvern.apps.metadata import MetadataApp
from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.punts import PUNT_ND_NS
from wyvern.ir import packet as pk
from wyvern.ir.fields import FIELDS, format_value
from wyvern.ir.metadata import (
    METADATA_MAC,
    METADATA_ZONE,
    SERVICE_V4,
    SERVICE_V6,
    has_metadata,
    ofport_of,
    port_address_v4,
    port_address_v6,
)
from wyvern.ir.ofports import METADATA_OFPORT
from wyvern.ir.packet import Packet
from wyvern.model.view import LocalView

MD = METADATA_OFPORT
MAC_A, MAC_B, MAC_C, MAC_RI = (f"fa:16:3e:00:00:0{c}" for c in "abc1")
A, B, C = "10.0.0.5", "10.0.0.6", "10.1.0.5"  # C: on a network without a router
OF_A, OF_B, OF_C = 3, 4, 7
LL_A = str(eui64_link_local(MAC_A))


def view_of() -> LocalView:
    """a and b on n1 behind router r; c on n2 with no router; a and c with the default
    security group (egress any, ingress from members), b without port security."""
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24"), sc.subnet("s2", "n2", "10.1.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[A], security_groups=["sg"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[B], port_security_enabled=False),
            sc.port("c", "n2", key=1, mac=MAC_C, ips=[C], security_groups=["sg"]),
            sc.router_port("ri", "n1", 9, MAC_RI, "10.0.0.1", "r"),
        ],
        routers=[sc.router("r", 7)],
        security_groups=[sc.security_group("sg")],
        rules=[
            sc.rule("e4", "sg", "egress", ethertype="IPv4"),
            sc.rule("e6", "sg", "egress", ethertype="IPv6"),
        ],
        local={"a": OF_A, "b": OF_B, "c": OF_C},
    )


def text(p: Packet, *names: str) -> tuple[str, ...]:
    return tuple(format_value(FIELDS[n].kind, FIELDS[n].bits, p[n]) for n in names)


def test_per_port_addresses_map_back_to_the_port() -> None:
    for ofport in (1, 255, 256, 0x1234, 0xEFFE):
        assert ofport_of(port_address_v4(ofport)) == ofport
        assert ofport_of(port_address_v6(ofport)) == ofport
        # (the fast forms are the canonical text of network + ofport)
        v4 = ipaddress.IPv4Network("169.254.0.0/16").network_address + ofport
        v6 = ipaddress.IPv6Network("fdfe:a9fe:a9fe::/64").network_address + ofport
        assert (port_address_v4(ofport), port_address_v6(ofport)) == (str(v4), str(v6))
    assert port_address_v4(0x0102) == "169.254.1.2"
    assert not has_metadata(0xA9FE)  # 169.254.169.254 itself
    assert not has_metadata(METADATA_ZONE) and not has_metadata(0)
    assert ofport_of(SERVICE_V4) is None and ofport_of("10.0.0.5") is None
    assert ofport_of("169.254.255.1") is None  # the namespace's next hop


def test_each_vm_reaches_the_service_from_its_own_address_and_gets_the_reply() -> None:
    s = sc.Scenario(view_of())
    # a sends to the router's MAC (its default route), c to the service's (on-link route)
    for ofport, mac, ip, to_mac in ((OF_A, MAC_A, A, MAC_RI), (OF_C, MAC_C, C, METADATA_MAC)):
        out = s.outcome(pk.tcp(ofport, mac, to_mac, ip, SERVICE_V4, 40000, 80))
        assert out.ports == [MD], out.trace.format()
        sent = out.packets[MD]
        assert text(sent, "ipv4_src", "ipv4_dst", "eth_dst") == (
            port_address_v4(ofport),
            SERVICE_V4,
            METADATA_MAC,
        )
        assert sent["tcp_src"] == 40000
        # the SYN+ACK, as the metadata namespace sends it (to its fake next hop's MAC)
        reply = pk.tcp(MD, METADATA_MAC, "0a:58:a9:fe:00:01", SERVICE_V4,
                       port_address_v4(ofport), 80, 40000, "SA")  # fmt: skip
        back = s.outcome(reply)
        assert back.ports == [ofport], back.trace.format()
        got = back.packets[ofport]
        assert text(got, "ipv4_src", "ipv4_dst", "eth_src", "eth_dst") == (
            SERVICE_V4,
            ip,
            METADATA_MAC,
            mac,
        )
        # and the VM's ACK continues the same connection
        ack = s.outcome(pk.tcp(ofport, mac, to_mac, ip, SERVICE_V4, 40000, 80, "A"))
        assert ack.ports == [MD], ack.trace.format()


def test_ipv6_to_the_link_local_service_address() -> None:
    s = sc.Scenario(view_of())
    out = s.outcome(pk.tcp(OF_A, MAC_A, METADATA_MAC, LL_A, SERVICE_V6, 40001, 80))
    assert out.ports == [MD], out.trace.format()
    assert text(out.packets[MD], "ipv6_src", "ipv6_dst") == (port_address_v6(OF_A), SERVICE_V6)
    reply = pk.tcp(MD, METADATA_MAC, "0a:58:a9:fe:00:01", SERVICE_V6, port_address_v6(OF_A),
                   80, 40001, "SA")  # fmt: skip
    back = s.outcome(reply)
    assert back.ports == [OF_A], back.trace.format()
    assert text(back.packets[OF_A], "ipv6_src", "ipv6_dst", "eth_dst") == (
        SERVICE_V6,
        LL_A,
        MAC_A,
    )


def test_the_port_without_port_security_is_served_too() -> None:
    s = sc.Scenario(view_of())
    out = s.outcome(pk.tcp(OF_B, MAC_B, MAC_RI, B, SERVICE_V4, 40000, 80))
    assert out.ports == [MD], out.trace.format()
    assert text(out.packets[MD], "ipv4_src") == (port_address_v4(OF_B),)


def test_the_service_cannot_reach_a_vm_unasked() -> None:
    s = sc.Scenario(view_of())
    # The same reply with no connection behind it, a SYN, or another service port: dropped.
    for p in (
        pk.tcp(MD, METADATA_MAC, "0a:58:a9:fe:00:01", SERVICE_V4, port_address_v4(OF_A), 80,
               40000, "SA"),
        pk.tcp(MD, METADATA_MAC, "0a:58:a9:fe:00:01", SERVICE_V4, port_address_v4(OF_A), 80,
               40000, "S"),
        pk.tcp(MD, METADATA_MAC, MAC_A, SERVICE_V4, A, 22, 40000, "S"),
        pk.udp(MD, METADATA_MAC, MAC_A, SERVICE_V4, A, 80, 40000),
    ):  # fmt: skip
        out = s.outcome(p)
        assert out.ports == [], out.trace.format()
    # (the reply of a connection a made does reach it: the previous test)


def test_a_spoofed_source_never_reaches_the_service() -> None:
    s = sc.Scenario(view_of())
    # a claims b's address: port security drops it before the metadata stage
    out = s.outcome(pk.tcp(OF_A, MAC_A, MAC_RI, B, SERVICE_V4, 40000, 80))
    assert out.ports == [], out.trace.format()
    # other ports and protocols to the service address go on as usual (the router)
    out = s.outcome(pk.udp(OF_A, MAC_A, MAC_RI, A, SERVICE_V4, 40000, 80))
    assert MD not in out.ports


def test_arp_and_nd_for_the_service_are_answered() -> None:
    s = sc.Scenario(view_of())
    for ofport, mac, ip in ((OF_A, MAC_A, A), (OF_C, MAC_C, C)):
        out = s.outcome(pk.arp(ofport, mac, ip, SERVICE_V4))
        assert out.ports == [ofport], out.trace.format()
        answer = out.packets[ofport]
        assert answer["arp_op"] == 2
        assert text(answer, "arp_sha", "arp_spa", "eth_src", "eth_dst", "arp_tpa") == (
            METADATA_MAC,
            SERVICE_V4,
            METADATA_MAC,
            mac,
            ip,
        )
    out = s.outcome(pk.nd_solicit(OF_A, MAC_A, LL_A, SERVICE_V6))
    assert out.punts == [bytes([PUNT_ND_NS])], out.trace.format()


def test_two_flows_per_local_port_and_none_for_remote_ones() -> None:
    view = view_of()
    app = MetadataApp()
    assert [len(app.flows(view, ("port", p))) for p in ("a", "b", "c")] == [2, 2, 2]
    sc.unbind(view, "c")
    assert app.flows(view, ("port", "c")) == []
    out = sc.Scenario(view).outcome(pk.tcp(OF_C, MAC_C, METADATA_MAC, C, SERVICE_V4, 1, 80))
    assert out.ports == []
