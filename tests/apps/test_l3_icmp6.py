"""ICMPv6 errors from routers, by packet outcome through every app in the simulator:
hop limit expiry and no route are punted for the agent's time exceeded / unreachable,
and a routed IPv6 packet larger than the egress network's MTU is punted for a packet
too big instead of forwarded (exactly at the MTU it is forwarded), on tenant networks
and through the gateway both ways, and from a chassis that redirects to the gateway."""

from __future__ import annotations

from tests.apps import scenario as sc
from tests.apps.test_gateway import (
    GENEVE_PORT,
    MAC_GW,
    MAC_HOST,
    MAC_RI,
    MAC_UP,
    MAC_VM,
    PATCH,
    learn,
)
from tests.apps.test_gateway_v6 import FAR6, HOST6, VM6, view_of
from wyvern.apps.punts import PUNT_ICMP6_ERROR
from wyvern.ir import packet as pk
from wyvern.ir.packet import Packet, sized
from wyvern.model.view import LocalView, Network

MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
MAC_R1, MAC_R2 = "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
A6, B6, R1, R2 = "2001:db8:1::5", "2001:db8:2::5", "2001:db8:1::1", "2001:db8:2::1"
TIME_EXCEEDED = bytes((PUNT_ICMP6_ERROR, 3, 0))
NO_ROUTE = bytes((PUNT_ICMP6_ERROR, 1, 0))
TOO_BIG = bytes((PUNT_ICMP6_ERROR, 2, 0))


def two_networks(mtu1: int = 1500, mtu2: int = 1400) -> LocalView:
    """VM a (ofport 1) on n1 (MTU1) and VM b (ofport 2) on n2 (MTU2), behind router r;
    dual stack, so IPv4 can be compared."""
    return sc.build_view(
        networks=[sc.network("n1", 101, mtu=mtu1), sc.network("n2", 102, mtu=mtu2)],
        subnets=[
            sc.subnet("s1", "n1", "2001:db8:1::/64", ip_version=6),
            sc.subnet("s2", "n2", "2001:db8:2::/64", ip_version=6),
            sc.subnet("s14", "n1", "10.0.1.0/24"),
            sc.subnet("s24", "n2", "10.0.2.0/24"),
        ],
        ports=[
            sc.router_port("rp1", "n1", 1, MAC_R1, R1, "r"),
            sc.router_port("rp2", "n2", 1, MAC_R2, R2, "r"),
            sc.router_port("rp14", "n1", 3, "fa:16:3e:00:01:03", "10.0.1.1", "r"),
            sc.router_port("rp24", "n2", 3, "fa:16:3e:00:01:04", "10.0.2.1", "r"),
            sc.port("a", "n1", 2, MAC_A, [A6, "10.0.1.5"]),
            sc.port("b", "n2", 2, MAC_B, [B6, "10.0.2.5"]),
        ],
        routers=[sc.router("r", 7)],
        local={"a": 1, "b": 2},
    )


def udp6(src: str, dst: str, *, ttl: int = 64, size: int | None = None, frm: int = 1) -> Packet:
    macs = (MAC_A, MAC_R1) if frm == 1 else (MAC_B, MAC_R2)
    p = pk.udp(frm, *macs, src, dst, 4000, 33434, ttl=ttl)
    return sized(p, size) if size is not None else p


def test_hop_limit_expiry_is_punted_for_time_exceeded() -> None:
    s = sc.Scenario(two_networks())
    out = s.outcome(udp6(A6, B6, ttl=1))
    assert out.ports == [] and out.punts == [TIME_EXCEEDED], out.trace.format()
    assert s.outcome(udp6(A6, B6, ttl=0)).punts == [TIME_EXCEEDED]
    ok = s.outcome(udp6(A6, B6, ttl=2))
    assert ok.ports == [2] and ok.packets[2]["nw_ttl"] == 1, ok.trace.format()


def test_no_route_is_punted_for_unreachable_but_not_for_link_local_or_multicast() -> None:
    s = sc.Scenario(two_networks())
    out = s.outcome(udp6(A6, "2001:db8:99::1"))
    assert out.ports == [] and out.punts == [NO_ROUTE], out.trace.format()
    for dst in ("fe80::99", "ff0e::1"):
        quiet = s.outcome(udp6(A6, dst))
        assert quiet.ports == [] and quiet.punts == [] and quiet.dropped, quiet.trace.format()
    # IPv4 keeps its own unreachable
    v4 = s.outcome(pk.udp(1, MAC_A, "fa:16:3e:00:01:03", "10.0.1.5", "8.8.8.8", 1, 53))
    assert v4.punts == [bytes((0x03, 3, 0))], v4.trace.format()


def test_a_packet_over_the_egress_mtu_is_punted_for_packet_too_big() -> None:
    s = sc.Scenario(two_networks(1500, 1400))
    at_mtu = s.outcome(udp6(A6, B6, size=1400))  # exactly the MTU: forwarded
    assert at_mtu.ports == [2] and at_mtu.punts == [], at_mtu.trace.format()
    over = s.outcome(udp6(A6, B6, size=1401))
    assert over.ports == [] and over.punts == [TOO_BIG], over.trace.format()
    (punted,) = over.trace.punts
    assert "mtu_check" in over.trace.stages()
    # the sender's MAC, which routing rewrote, is kept for the error (and the egress
    # network's key says which MTU)
    assert punted.packet["routed_eth_src"] == int(MAC_A.replace(":", ""), 16)
    assert punted.packet["network_key"] == 102
    # the other way the egress is the 1500 network
    back = s.outcome(udp6(B6, A6, size=1500, frm=2))
    assert back.ports == [1] and back.punts == [], back.trace.format()
    assert s.outcome(udp6(B6, A6, size=1501, frm=2)).punts == [TOO_BIG]
    # the same network is not routed: no check (the VM's own MTU applies)
    same = s.outcome(sized(pk.udp(1, MAC_A, MAC_A, A6, A6, 1, 2), 9000))
    assert TOO_BIG not in same.punts


def test_ipv4_is_not_checked() -> None:
    """OpenFlow cannot match DF: IPv4 is forwarded as before (docstring of apps/l3.py)."""
    s = sc.Scenario(two_networks(1500, 1400))
    big = sized(pk.udp(1, MAC_A, "fa:16:3e:00:01:03", "10.0.1.5", "10.0.2.5", 1, 53), 1401)
    out = s.outcome(big)
    assert out.ports == [2] and out.punts == [], out.trace.format()


def test_the_egress_mtu_follows_the_network() -> None:
    view = two_networks(1500, 1400)
    s = sc.Scenario(view)
    assert s.outcome(udp6(A6, B6, size=1401)).punts == [TOO_BIG]
    n2 = view.networks["n2"]
    view.apply("network", "n2", Network(**{**_fields(n2), "mtu": 1450}))
    s.refresh()
    assert s.outcome(udp6(A6, B6, size=1450)).ports == [2]
    assert s.outcome(udp6(A6, B6, size=1451)).punts == [TOO_BIG]


def _fields(n: Network) -> dict[str, object]:
    return {f: getattr(n, f) for f in n.__slots__}


def _ext_mtu(view: LocalView, mtu: int) -> None:
    ext = view.networks["ext"]
    view.apply("network", "ext", Network(**{**_fields(ext), "mtu": mtu}))


def test_the_gateway_leg_checks_the_external_networks_mtu() -> None:
    view = view_of()
    _ext_mtu(view, 1400)
    learn(view, "2001:db8:ff::250", MAC_UP)
    s = sc.Scenario(view)
    fits = s.outcome(sized(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80), 1400))
    assert fits.ports == [PATCH], fits.trace.format()
    over = s.outcome(sized(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80), 1401))
    assert over.ports == [] and over.punts == [TOO_BIG], over.trace.format()
    # from outside into the tenant network (1500): checked against the tenant's MTU
    inbound = s.outcome(sized(pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST6, VM6, 80, 40000, "S"), 1501))
    assert inbound.ports == [] and inbound.punts == [TOO_BIG], inbound.trace.format()
    assert inbound.trace.punts[0].packet["routed_eth_src"] == int(MAC_HOST.replace(":", ""), 16)
    ok = s.outcome(sized(pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST6, VM6, 80, 40000, "S"), 1500))
    assert ok.ports == [1], ok.trace.format()
    # a default route does not carry link-local or multicast destinations out
    for dst in ("fe80::99", "ff0e::1"):
        quiet = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, dst, 40000, 80))
        assert quiet.ports == [] and quiet.punts == [], quiet.trace.format()


def test_a_chassis_redirecting_to_the_gateway_checks_before_the_tunnel() -> None:
    view = view_of(chassis={"hv1": 1, "hv2": 2})  # hv2 hosts the gateway: we redirect
    _ext_mtu(view, 1400)
    s = sc.Scenario(view)
    fits = s.outcome(sized(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80), 1400))
    assert fits.ports == [GENEVE_PORT], fits.trace.format()
    over = s.outcome(sized(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80), 1401))
    assert over.ports == [] and over.punts == [TOO_BIG], over.trace.format()
    assert over.trace.punts[0].packet["network_key"] == 7  # (the router's: redirected)
