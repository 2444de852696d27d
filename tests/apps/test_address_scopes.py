"""Address scopes decide routing (Neutron's semantics, through the simulator): a router
forwards between two of its ports only when their subnets share an address scope (no
scope counts as one scope of its own); towards the external network a subnet of another
scope goes out SNATed, one of the external network's scope goes out with its own address
and is reachable from outside; what the router translated (floating IPs, un-SNAT) may
cross scopes. Every negative probe is first shown to pass where it should."""

from __future__ import annotations

import dataclasses

from tests.apps import scenario as sc
from tests.apps.test_gateway import (
    FAR,
    FIP,
    GENEVE_PORT,
    GW,
    HOST,
    MAC_FIP,
    MAC_GW,
    MAC_HOST,
    MAC_RI,
    MAC_UP,
    MAC_VM,
    PATCH,
    UPSTREAM,
    VM,
    learn,
    redirected,
    text,
    view_of,
)
from wyvern.ir import packet as pk
from wyvern.model.view import LocalView

MAC_B, MAC_R2 = "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
VM_B = "10.1.0.5"
VM6_A, VM6_B = "fd00:a::5", "fd00:b::5"


def scoped(view: LocalView, network_id: str, scope4: int = 0, scope6: int = 0) -> None:
    """Give a network the scope keys the API writes when its subnets come from pools."""
    net = dataclasses.replace(view.networks[network_id], scope4=scope4, scope6=scope6)
    view.apply("network", network_id, net)


def east_west() -> LocalView:
    """VM a (ofport 1) on n1 and VM b (ofport 2) on n2, both dual-stack, one router."""
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=101)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("s2", "n2", "10.1.0.0/24"),
            sc.subnet("s16", "n1", "fd00:a::/64"),
            sc.subnet("s26", "n2", "fd00:b::/64"),
        ],
        ports=[
            sc.port("a", "n1", 1, MAC_VM, [VM, VM6_A], port_security_enabled=False),
            sc.port("b", "n2", 2, MAC_B, [VM_B, VM6_B], port_security_enabled=False),
            sc.port(
                "ri",
                "n1",
                3,
                MAC_RI,
                ["10.0.0.1", "fd00:a::1"],
                device_owner="network:router_interface",
                device_id="r",
                port_security_enabled=False,
            ),
            sc.port(
                "r2",
                "n2",
                4,
                MAC_R2,
                ["10.1.0.1", "fd00:b::1"],
                device_owner="network:router_interface",
                device_id="r",
                port_security_enabled=False,
            ),
        ],
        routers=[sc.router("r", 7)],
        local={"a": 1, "b": 2},
    )


def pings(view: LocalView) -> tuple[bool, bool, bool]:
    """Whether a reaches b by IPv4, b reaches a by IPv4, and a reaches b by IPv6."""
    s = sc.Scenario(view)
    there = s.outcome(pk.icmp_echo(1, MAC_VM, MAC_RI, VM, VM_B)).ports == [2]
    back = s.outcome(pk.icmp_echo(2, MAC_B, MAC_R2, VM_B, VM)).ports == [1]
    six = s.outcome(pk.icmp_echo(1, MAC_VM, MAC_RI, VM6_A, VM6_B)).ports == [2]
    return there, back, six


def test_one_scope_routes_and_two_scopes_do_not() -> None:
    view = east_west()
    assert pings(view) == (True, True, True)  # no scopes: one scope of its own
    scoped(view, "n1", scope4=5, scope6=9)
    scoped(view, "n2", scope4=5, scope6=9)
    assert pings(view) == (True, True, True)
    scoped(view, "n2", scope4=6, scope6=9)  # IPv4 apart, IPv6 still together
    assert pings(view) == (False, False, True)
    scoped(view, "n2", scope4=0, scope6=0)  # a scope and none are two scopes
    assert pings(view) == (False, False, False)
    scoped(view, "n1")  # back to no scopes at all
    assert pings(view) == (True, True, True)


def test_the_drop_is_the_route_not_a_miss() -> None:
    """Across scopes the packet is dropped at routing (as Neutron's filter drops it),
    not sent to the agent as unreachable."""
    view = east_west()
    scoped(view, "n1", scope4=5)
    out = sc.Scenario(view).outcome(pk.icmp_echo(1, MAC_VM, MAC_RI, VM, VM_B))
    assert out.ports == [] and out.punts == [], out.trace.format()


def outside(*, snat: bool = True, internal: int = 0, external: int = 0, **kw: object) -> LocalView:
    view = view_of(snat=snat, **kw)  # type: ignore[arg-type]
    scoped(view, "n1", scope4=internal)
    scoped(view, "ext", scope4=external)
    learn(view, UPSTREAM, MAC_UP)
    learn(view, HOST, MAC_HOST)
    return view


def test_the_external_networks_scope_goes_out_unnatted_and_is_reachable() -> None:
    for internal, external, natted in ((0, 0, True), (5, 0, True), (5, 6, True), (5, 5, False)):
        s = sc.Scenario(outside(internal=internal, external=external))
        out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
        assert out.ports == [PATCH], out.trace.format()
        assert text(out.packets[PATCH], "ipv4_src") == ((GW if natted else VM),)
        # the reply comes back either way
        dst = GW if natted else VM
        back = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_GW, FAR, dst, 80, 40000, "SA"))
        assert back.ports == [1], back.trace.format()
        assert text(back.packets[1], "ipv4_dst") == (VM,)


def test_from_outside_only_the_external_scope_gets_in() -> None:
    probe = pk.icmp_echo(PATCH, MAC_HOST, MAC_GW, HOST, VM)
    same = sc.Scenario(outside(internal=5, external=5)).outcome(probe)
    assert same.ports == [1], same.trace.format()
    assert text(same.packets[1], "ipv4_src", "ipv4_dst") == (HOST, VM)
    for internal, external in ((5, 6), (0, 6), (5, 0)):
        out = sc.Scenario(outside(internal=internal, external=external)).outcome(probe)
        assert out.ports == [], (internal, external, out.trace.format())


def test_without_snat_another_scope_cannot_leave() -> None:
    probe = pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)
    ok = sc.Scenario(outside(snat=False, internal=5, external=5)).outcome(probe)
    assert ok.ports == [PATCH] and text(ok.packets[PATCH], "ipv4_src") == (VM,)
    out = sc.Scenario(outside(snat=False, internal=5, external=6)).outcome(probe)
    assert out.ports == [], out.trace.format()


def test_a_floating_ip_crosses_scopes() -> None:
    s = sc.Scenario(outside(internal=5, external=6, fip=True))
    inbound = s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_FIP, HOST, FIP, 50000, 22))
    assert inbound.ports == [1], inbound.trace.format()
    assert text(inbound.packets[1], "ipv4_dst") == (VM,)
    answer = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 22, 50000, "SA"))
    assert answer.ports == [PATCH] and text(answer.packets[PATCH], "ipv4_src") == (FIP,)


def test_other_chassis_and_the_redirect() -> None:
    """A chassis without the gateway checks the scope before it redirects; the gateway
    chassis routes what it is sent without SNAT when the scopes match."""
    probe = pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)
    for snat in (True, False):
        view = outside(snat=snat, internal=5, external=5, chassis={"hv1": 1, "hv2": 2})
        assert sc.Scenario(view).outcome(probe).ports == [GENEVE_PORT]
    view = outside(snat=False, internal=5, external=6, chassis={"hv1": 1, "hv2": 2})
    assert sc.Scenario(view).outcome(probe).ports == []
    view = outside(snat=True, internal=5, external=6, chassis={"hv1": 1, "hv2": 2})
    assert sc.Scenario(view).outcome(probe).ports == [GENEVE_PORT]
    # on the gateway chassis, what another chassis sent
    from tests.apps.test_gateway import elsewhere

    view = outside(snat=False, internal=5, external=5)
    elsewhere(view)
    out = sc.Scenario(view).outcome(redirected(probe))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src") == (VM,)
