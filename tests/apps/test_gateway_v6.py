"""IPv6 through a router gateway, in the simulator: routed both ways without NAT,
neighbour solicitations for the gateway's address answered (by the agent) and learned on
the gateway chassis only, next hops resolved from learned bindings or solicited, the
redirect from a chassis without the physnet carrying IPv6 too, IPv6 extra routes."""

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
    add_chassis,
    elsewhere,
    learn,
    redirected,
    text,
)
from wyvern.apps.gateway import REDIRECT_KEY, local_gateway
from wyvern.apps.punts import PUNT_ND_LEARN, PUNT_ND_REQUEST
from wyvern.ir import packet as pk
from wyvern.ir.packet import Packet
from wyvern.model.view import LocalView

VM4, VM6, RI6 = "10.0.0.5", "2001:db8:1::5", "2001:db8:1::1"
GW4, GW6 = "203.0.113.10", "2001:db8:ff::10"
UP4, UP6, HOST6, FAR6 = "203.0.113.1", "2001:db8:ff::250", "2001:db8:ff::50", "2001:db8:99::7"


def view_of(
    *,
    chassis: dict[str, int] | None = None,
    upstream6: str | None = UP6,
    routes: tuple[tuple[str, str], ...] = (),
) -> LocalView:
    """Dual stack: the VM "a" (ofport 1) on n1 (10.0.0.0/24 and 2001:db8:1::/64) behind
    router r, whose gateway port on "ext" (flat on physnet1) has an address on its IPv4
    and its IPv6 subnet (gateway_ip UPSTREAM6); CHASSIS: gateway priorities (hv1: 1)."""
    ext = sc.network(
        "ext",
        key=200,
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    view = sc.build_view(
        networks=[sc.network("n1", key=100), ext],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("s16", "n1", "2001:db8:1::/64", ip_version=6),
            sc.subnet("se", "ext", "203.0.113.0/24", gateway_ip=UP4),
            sc.subnet("se6", "ext", "2001:db8:ff::/64", gateway_ip=upstream6, ip_version=6),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_VM, ips=[VM4, VM6], port_security_enabled=False),
            sc.port(
                "ri",
                "n1",
                2,
                MAC_RI,
                ["10.0.0.1", RI6],
                device_owner="network:router_interface",
                device_id="r",
                port_security_enabled=False,
            ),
            sc.port(
                "rg",
                "ext",
                key=3,
                mac=MAC_GW,
                ips=[GW4, GW6],
                device_owner="network:router_gateway",
                device_id="r",
                port_security_enabled=False,
            ),
        ],
        routers=[
            sc.router(
                "r",
                7,
                external_gateway_info={"network_id": "ext", "enable_snat": True},
                routes=[{"destination": d, "nexthop": h} for d, h in routes],
                _gw_port_id="rg",
            )
        ],
        local={"a": 1},
        chassis_name="hv1",
    )
    add_chassis(view, chassis or {"hv1": 1})
    return view


def ping6(
    src: str, dst: str, *, in_port: int = 1, eth: tuple[str, str] = (MAC_VM, MAC_RI)
) -> Packet:
    return pk.icmp_echo(in_port, eth[0], eth[1], src, dst)


def test_the_gateway_port_has_its_ipv6_address_and_upstream() -> None:
    view = view_of()
    gw = local_gateway(view, view.routers["r"])
    assert gw is not None
    assert [str(a) for a in gw.addrs6] == [f"{GW6}/64"] and [str(u) for u in gw.upstream6] == [UP6]
    assert [str(a) for a in gw.addrs] == [f"{GW4}/24"]  # (IPv4 alongside, as before)


def test_ipv6_is_routed_out_without_nat_and_back() -> None:
    view = view_of()
    s = sc.Scenario(view)
    # No MAC for the upstream router yet: the agent is asked to solicit it.
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80))
    assert out.ports == [] and out.punts == [bytes([PUNT_ND_REQUEST])], out.trace.format()
    learn(view, UP6, MAC_UP)
    s.refresh()
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80))
    assert out.ports == [PATCH], out.trace.format()
    sent = out.packets[PATCH]
    assert text(sent, "ipv6_src", "ipv6_dst") == (VM6, FAR6)  # no NAT
    assert text(sent, "eth_src", "eth_dst") == (MAC_GW, MAC_UP)
    assert sent["nw_ttl"] == 63
    # the reply, and a connection from outside, reach the VM by its own address
    for flags in ("SA", "S"):
        back = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_GW, FAR6, VM6, 80, 40000, flags))
        assert back.ports == [1], back.trace.format()
        assert text(back.packets[1], "ipv6_src", "ipv6_dst", "eth_dst") == (FAR6, VM6, MAC_VM)
    # an on-link host of the external subnet is its own next hop
    out = s.outcome(ping6(VM6, HOST6))
    assert out.punts == [bytes([PUNT_ND_REQUEST])], out.trace.format()
    learn(view, HOST6, MAC_HOST)
    s.refresh()
    out = s.outcome(ping6(VM6, HOST6))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "eth_dst", "ipv6_src") == (MAC_HOST, VM6)
    # IPv4 is still SNATed alongside
    learn(view, UP4, MAC_UP)
    s.refresh()
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM4, "198.51.100.7", 40000, 80))
    assert out.ports == [PATCH] and text(out.packets[PATCH], "ipv4_src") == (GW4,)


def test_the_gateway_address_answers_solicitations_and_ping_from_outside() -> None:
    s = sc.Scenario(view_of())
    # NS for the gateway address, to its solicited-node group: to the agent (which answers
    # and learns the sender), never flooded
    out = s.outcome(pk.nd_solicit(PATCH, MAC_HOST, HOST6, GW6, eth_dst="33:33:ff:00:00:10"))
    assert out.ports == [] and out.punts == [bytes([PUNT_ND_LEARN])], out.trace.format()
    # an NA answering ours is learned
    na = pk.packet(in_port=PATCH, eth_src=MAC_UP, eth_dst=MAC_GW, eth_type=0x86DD,
                   ipv6_src=UP6, ipv6_dst=GW6, ip_proto=58, nw_ttl=255, icmpv6_type=136,
                   nd_target=UP6, nd_tll=MAC_UP)  # fmt: skip
    out = s.outcome(na)
    assert out.ports == [] and out.punts == [bytes([PUNT_ND_LEARN])], out.trace.format()
    # an NS for someone else on the segment is nobody's business here (flooded locally)
    out = s.outcome(pk.nd_solicit(PATCH, MAC_HOST, HOST6, UP6))
    assert out.punts == [], out.trace.format()
    out = s.outcome(ping6(HOST6, GW6, in_port=PATCH, eth=(MAC_HOST, MAC_GW)))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv6_src", "ipv6_dst", "eth_dst") == (GW6, HOST6, MAC_HOST)


def test_a_chassis_not_hosting_the_gateway_redirects_ipv6_and_answers_nothing() -> None:
    view = view_of(chassis={"hv1": 1, "hv2": 2})
    learn(view, UP6, MAC_UP)
    s = sc.Scenario(view)
    for dst in (FAR6, HOST6):
        out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, dst, 40000, 80))
        assert out.ports == [GENEVE_PORT], out.trace.format()
        sent = out.packets[GENEVE_PORT]
        assert (sent["tun_id"], sent["tun_metadata0"]) == (7, (1 << 32) | REDIRECT_KEY)
        assert text(sent, "ipv6_src", "ipv6_dst") == (VM6, dst)
    out = s.outcome(pk.nd_solicit(PATCH, MAC_HOST, HOST6, GW6))
    assert out.punts == [], out.trace.format()
    assert s.outcome(ping6(HOST6, GW6, in_port=PATCH, eth=(MAC_HOST, MAC_GW))).ports == []


def test_the_gateway_chassis_routes_ipv6_other_chassis_send_it_and_back() -> None:
    view = view_of()
    elsewhere(view)
    learn(view, UP6, MAC_UP)
    s = sc.Scenario(view)
    out = s.outcome(redirected(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80)))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv6_src", "eth_src", "eth_dst") == (VM6, MAC_GW, MAC_UP)
    back = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_GW, FAR6, VM6, 80, 40000, "SA"))
    assert back.ports == [GENEVE_PORT], back.trace.format()
    assert back.packets[GENEVE_PORT]["tun_id"] == 100


def test_ipv6_extra_routes_through_an_outside_host_and_a_port() -> None:
    routes: tuple[tuple[str, str], ...] = (
        ("2001:db8:77::/48", HOST6),  # an outside host on the external subnet
        ("2001:db8:55::/48", VM6),  # a port (a VM routing for a prefix behind it)
    )
    view = view_of(upstream6=None, routes=routes)
    learn(view, HOST6, MAC_HOST)
    s = sc.Scenario(view)
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, "2001:db8:77::9", 40000, 80))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "eth_dst", "ipv6_dst") == (MAC_HOST, "2001:db8:77::9")
    back = s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST6, "2001:db8:55::1", 80, 40000))
    assert back.ports == [1], back.trace.format()
    assert text(back.packets[1], "eth_dst", "ipv6_dst") == (MAC_VM, "2001:db8:55::1")
    # no default route without the subnet's gateway_ip
    assert s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, FAR6, 40000, 80)).ports == []
    # on a chassis without the gateway, the outside host's prefix goes to the gateway
    view = view_of(chassis={"hv1": 1, "hv2": 2}, upstream6=None, routes=routes)
    out = sc.Scenario(view).outcome(pk.tcp(1, MAC_VM, MAC_RI, VM6, "2001:db8:77::9", 1, 2))
    assert out.ports == [GENEVE_PORT], out.trace.format()
