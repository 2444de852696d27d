"""Floating IP port forwardings through the simulator: on the gateway chassis, TCP/UDP to
the floating address on an external port reaches the VM on its internal port (single
ports, ranges kept, ranges to one port, shifted ranges), replies leave from the floating
address and external port, other ports go nowhere; ARP for the address is answered with
the gateway's MAC there and nowhere else; a VM on another chassis is reached by tunnel."""

from __future__ import annotations

from typing import Any

from tests.apps import scenario as sc
from tests.apps.test_gateway import (
    GENEVE_PORT,
    GW,
    HOST,
    MAC_GW,
    MAC_HOST,
    MAC_RI,
    MAC_VM,
    PATCH,
    VM,
    elsewhere,
    learn,
    redirected,
    text,
    view_of,
)
from wyvern.apps.nat import P_FORWARD
from wyvern.ir import packet as pk
from wyvern.model.view import LocalView

PF_IP = "203.0.113.30"


def forwarding(proto: str, ext: tuple[int, int], int_: tuple[int, int]) -> dict[str, Any]:
    return {
        "fip_id": "f9",
        "floating_ip_address": PF_IP,
        "protocol": proto,
        "internal_ip_address": VM,
        "internal_port_id": "a",
        "ext": list(ext),
        "int": list(int_),
    }


PFS = {
    "p-web": forwarding("tcp", (8080, 8080), (80, 80)),
    "p-dns": forwarding("udp", (5000, 5009), (5000, 5009)),
    "p-ssh": forwarding("tcp", (2200, 2263), (22, 22)),
    "p-shift": forwarding("tcp", (3000, 3003), (4000, 4003)),
}


def pf_view(**kw: Any) -> LocalView:
    view = view_of(pfs=PFS, **kw)
    learn(view, HOST, MAC_HOST)
    return view


def tcp_in(dport: int, sport: int = 50000) -> Any:
    return pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST, PF_IP, sport, dport)


def test_tcp_to_the_external_port_reaches_the_internal_port_and_back() -> None:
    s = sc.Scenario(pf_view())
    inbound = s.outcome(tcp_in(8080))
    assert inbound.ports == [1], inbound.trace.format()
    got = inbound.packets[1]
    assert text(got, "ipv4_src", "ipv4_dst", "eth_dst") == (HOST, VM, MAC_VM)
    assert (got["tcp_src"], got["tcp_dst"]) == (50000, 80)
    answer = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 80, 50000, "SA"))
    assert answer.ports == [PATCH], answer.trace.format()
    out = answer.packets[PATCH]
    assert text(out, "ipv4_src", "ipv4_dst", "eth_src") == (PF_IP, HOST, MAC_GW)
    assert (out["tcp_src"], out["tcp_dst"]) == (8080, 50000)
    # ... also without SNAT on the router (the reply is un-DNATed all the same)
    s = sc.Scenario(pf_view(snat=False))
    assert s.outcome(tcp_in(8080)).ports == [1]
    answer = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 80, 50000, "SA"))
    assert text(answer.packets[PATCH], "ipv4_src") == (PF_IP,), answer.trace.format()
    assert answer.packets[PATCH]["tcp_src"] == 8080


def test_a_connection_the_vm_opens_from_a_forwarded_port_is_snated() -> None:
    """Not a reply: it leaves SNATed to the gateway address like the VM's others (never
    with its internal address), and its reply comes back; without SNAT it leaves as is."""
    view = pf_view()
    s = sc.Scenario(view)
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 80, 443))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src") == (GW,)
    sport = out.packets[PATCH]["tcp_src"]
    back = s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST, GW, 443, sport, "SA"))
    assert back.ports == [1] and text(back.packets[1], "ipv4_dst") == (VM,), back.trace.format()
    out = sc.Scenario(pf_view(snat=False)).outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 80, 443))
    assert text(out.packets[PATCH], "ipv4_src") == (VM,), out.trace.format()


def test_other_ports_and_protocols_go_nowhere() -> None:
    s = sc.Scenario(pf_view())
    assert s.outcome(tcp_in(8080)).ports == [1]  # (the same probe that works)
    for probe in (
        tcp_in(8081),
        tcp_in(80),
        pk.udp(PATCH, MAC_HOST, MAC_GW, HOST, PF_IP, 50000, 8080),
        pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST, PF_IP, 50000, 5000),
        pk.udp(PATCH, MAC_HOST, MAC_GW, HOST, PF_IP, 50000, 5010),
    ):
        out = s.outcome(probe)
        assert out.ports == [] and out.punts == [], out.trace.format()


def test_ranges() -> None:
    s = sc.Scenario(pf_view())
    # a range kept as it is: each external port to the same internal port
    for port in (5000, 5003, 5009):
        out = s.outcome(pk.udp(PATCH, MAC_HOST, MAC_GW, HOST, PF_IP, 40000, port))
        assert out.ports == [1], out.trace.format()
        assert out.packets[1]["udp_dst"] == port
        back = s.outcome(pk.udp(1, MAC_VM, MAC_RI, VM, HOST, port, 40000))
        assert (text(back.packets[PATCH], "ipv4_src")[0], back.packets[PATCH]["udp_src"]) == (
            PF_IP,
            port,
        )
    # a range to one port
    for sport, port in ((1, 2200), (2, 2231), (3, 2263)):
        out = s.outcome(tcp_in(port, sport))
        assert out.ports == [1] and out.packets[1]["tcp_dst"] == 22, out.trace.format()
        back = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 22, sport, "SA"))
        assert back.packets[PATCH]["tcp_src"] == port, back.trace.format()
    assert s.outcome(tcp_in(2264)).ports == []
    # a shifted range: the same offset
    out = s.outcome(tcp_in(3002))
    assert out.ports == [1] and out.packets[1]["tcp_dst"] == 4002, out.trace.format()
    back = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 4002, 50000, "SA"))
    assert back.packets[PATCH]["tcp_src"] == 3002
    assert s.outcome(tcp_in(3004)).ports == [] and s.outcome(tcp_in(2999)).ports == []


def test_ranges_are_the_fewest_masked_matches() -> None:
    flows = [
        f for f in sc.Scenario(pf_view()).flows() if f.stage == "dnat" and f.priority == P_FORWARD
    ]
    # 8080; 5000..5009 = 5000/8 + 5008/2; 2200..2263 = 2200/8 + 2208/16 + 2224/32 +
    # 2256/8; 3000..3003 shifted = one per port
    assert len(flows) == 1 + 2 + 4 + 4, flows


def test_arp_for_the_forwarded_address_is_answered_only_by_the_gateway_chassis() -> None:
    s = sc.Scenario(pf_view())
    out = s.outcome(pk.arp(PATCH, MAC_HOST, HOST, PF_IP))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "arp_sha", "arp_spa") == (MAC_GW, PF_IP)
    # another chassis hosts the gateway: nothing here answers or forwards
    s = sc.Scenario(pf_view(chassis={"hv1": 1, "hv2": 2}))
    out = s.outcome(pk.arp(PATCH, MAC_HOST, HOST, PF_IP))
    assert not [o for o in out.trace.outputs if o.packet["arp_op"] == 2], out.trace.format()
    assert s.outcome(tcp_in(8080)).ports == []
    # while the gateway address itself is still answered where it is hosted
    assert sc.Scenario(pf_view()).outcome(pk.arp(PATCH, MAC_HOST, HOST, GW)).ports == [PATCH]


def test_a_vm_on_another_chassis_is_reached_by_tunnel() -> None:
    view = pf_view()
    elsewhere(view)
    s = sc.Scenario(view)
    inbound = s.outcome(tcp_in(8080))
    assert inbound.ports == [GENEVE_PORT], inbound.trace.format()
    sent = inbound.packets[GENEVE_PORT]
    assert text(sent, "ipv4_dst") == (VM,) and sent["tcp_dst"] == 80
    # its answer comes back redirected by the VM's chassis, and leaves un-DNATed
    answer = s.outcome(redirected(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 80, 50000, "SA")))
    assert answer.ports == [PATCH], answer.trace.format()
    assert text(answer.packets[PATCH], "ipv4_src") == (PF_IP,)
    assert answer.packets[PATCH]["tcp_src"] == 8080
