"""Services: the ARP responder and the DHCPv4 punt, by packet outcome."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.apps import scenario as sc
from wyvern.apps.base import App, Owner
from wyvern.apps.punts import PUNT_DHCP4, PUNT_DHCP6, PUNT_ND_NS
from wyvern.apps.services import Services
from wyvern.controller.engine import Engine
from wyvern.ir import ETH_TYPE_ARP, Flow
from wyvern.ir import packet as pk
from wyvern.model.view import Kind, LocalView, record_from_obj

MAC_A, MAC_B, MAC_R = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:f1"
MAC_REMOTE = "fa:16:3e:00:00:99"
BCAST = "ff:ff:ff:ff:ff:ff"


def mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def ip(text: str) -> int:
    return int.from_bytes(bytes(int(x) for x in text.split(".")), "big")


def view(*, dhcp: bool = True) -> LocalView:
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24", enable_dhcp=dhcp),
            sc.subnet("s2", "n2", "10.0.0.0/24", enable_dhcp=False),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"]),
            sc.port("remote", "n1", key=3, mac=MAC_REMOTE, ips=["10.0.0.8"]),
            sc.router_port("rp", "n1", key=9, mac=MAC_R, ip="10.0.0.1", router_id="r1"),
            sc.port("x", "n2", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("y", "n2", key=2, mac=MAC_B, ips=["10.0.0.6"]),
        ],
        routers=[sc.router("r1", key=7)],
        local={"a": 1, "b": 2, "x": 11, "y": 12},
    )


def test_arp_request_for_a_known_ip_is_answered_and_not_flooded() -> None:
    s = sc.Scenario(view(), apps=sc.l2_apps())
    for target, owner in (("10.0.0.6", MAC_B), ("10.0.0.8", MAC_REMOTE), ("10.0.0.1", MAC_R)):
        out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", target))
        assert out.ports == [1], out.trace.format()  # back out of the asking port only
        reply = out.packets[1]
        assert reply["eth_type"] == ETH_TYPE_ARP
        assert reply["arp_op"] == 2
        assert reply["eth_src"] == mac(owner) and reply["eth_dst"] == mac(MAC_A)
        assert reply["arp_sha"] == mac(owner) and reply["arp_spa"] == ip(target)
        assert reply["arp_tha"] == mac(MAC_A) and reply["arp_tpa"] == ip("10.0.0.5")


def test_arp_responder_is_per_network() -> None:
    s = sc.Scenario(view(), apps=sc.l2_apps())
    out = s.outcome(pk.arp(11, MAC_A, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [11] and out.packets[11]["arp_sha"] == mac(MAC_B)
    out = s.outcome(pk.arp(11, MAC_A, "10.0.0.5", "10.0.0.8"))  # n1's remote port only
    assert out.ports == [12] and out.packets[12]["arp_op"] == 1, out.trace.format()


def test_gratuitous_arp_for_own_address_is_not_answered() -> None:
    s = sc.Scenario(view(), apps=sc.l2_apps())
    out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.5"))
    assert out.ports == [2] and out.packets[2]["arp_op"] == 1, out.trace.format()
    out = s.outcome(pk.arp(1, MAC_A, "0.0.0.0", "10.0.0.5"))  # address conflict probe
    assert out.ports == [2] and out.packets[2]["arp_op"] == 1


def test_dhcp_discover_is_punted_when_dhcp_is_enabled() -> None:
    s = sc.Scenario(view(dhcp=True), apps=sc.l2_apps())
    discover = pk.udp(1, MAC_A, BCAST, "0.0.0.0", "255.255.255.255", 68, 67)
    trace = s.run(discover)
    assert [p.userdata for p in trace.punts] == [bytes([PUNT_DHCP4])], trace.format()
    assert trace.punts[0].stage == "punt"  # (from services, through punt_meter)
    assert not trace.outputs  # punted, not flooded
    renew = pk.udp(1, MAC_A, MAC_R, "10.0.0.5", "10.0.0.1", 68, 67)
    assert [p.userdata for p in s.run(renew).punts] == [bytes([PUNT_DHCP4])]


def test_dhcp_is_not_punted_when_dhcp_is_disabled() -> None:
    s = sc.Scenario(view(dhcp=False), apps=sc.l2_apps())
    discover = pk.udp(1, MAC_A, BCAST, "0.0.0.0", "255.255.255.255", 68, 67)
    trace = s.run(discover)
    assert not trace.punts
    assert trace.output_ports == [2]  # an ordinary broadcast
    trace = s.run(pk.udp(11, MAC_A, BCAST, "0.0.0.0", "255.255.255.255", 68, 67))
    assert not trace.punts and trace.output_ports == [12]


def test_spoofed_dhcp_is_dropped_before_the_punt() -> None:
    s = sc.Scenario(view(dhcp=True), apps=sc.l2_apps())
    own = s.run(pk.udp(2, MAC_B, BCAST, "0.0.0.0", "255.255.255.255", 68, 67))
    assert [p.userdata for p in own.punts] == [bytes([PUNT_DHCP4])]  # b's own MAC: punted
    trace = s.run(pk.udp(1, MAC_B, BCAST, "0.0.0.0", "255.255.255.255", 68, 67))
    assert trace.dropped and not trace.punts


def test_vip_of_allowed_address_pairs_is_not_answered_by_the_responder() -> None:
    """keepalived style: a reserved (unbound) port holds the VIP, two VMs list it as an
    allowed address pair; the VM holding it must answer ARP itself, or failover breaks."""
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("vip", "n1", key=5, mac="fa:16:3e:00:00:55", ips=["10.0.0.100"]),
            sc.port(
                "a",
                "n1",
                key=1,
                mac=MAC_A,
                ips=["10.0.0.5"],
                allowed_address_pairs=[{"ip_address": "10.0.0.100"}],
            ),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"]),
        ],
        local={"a": 1, "b": 2},
    )
    s = sc.Scenario(v, apps=sc.l2_apps())
    out = s.outcome(pk.arp(2, MAC_B, "10.0.0.6", "10.0.0.100"))
    assert out.ports == [1] and out.packets[1]["arp_op"] == 1, out.trace.format()
    # and a's answer, as the VIP's holder, passes a's port security back to b
    reply = pk.arp(1, MAC_A, "10.0.0.100", "10.0.0.6", op=2, eth_dst=MAC_B, tha=MAC_B)
    assert s.outcome(reply).ports == [2]
    # other addresses are still answered
    assert s.outcome(pk.arp(2, MAC_B, "10.0.0.6", "10.0.0.5")).ports == [2]


# ---------------------------------------------------------------- IPv6 ND responder

A6, B6, R6, REMOTE6, VIP6 = (
    "2001:db8::5",
    "2001:db8::6",
    "2001:db8::1",
    "2001:db8::8",
    "2001:db8::64",
)


def view6(*, a_claims_vip: bool = True) -> LocalView:
    pairs = [{"ip_address": VIP6}] if a_claims_vip else []
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s6", "n1", "2001:db8::/64", ipv6_address_mode="slaac"),
            sc.subnet("t6", "n2", "2001:db8::/64"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[A6], allowed_address_pairs=pairs),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[B6]),
            sc.port("remote", "n1", key=3, mac=MAC_REMOTE, ips=[REMOTE6]),
            sc.port("vip", "n1", key=4, mac="fa:16:3e:00:00:64", ips=[VIP6]),
            sc.router_port("rp", "n1", key=9, mac=MAC_R, ip=R6, router_id="r1"),
            sc.port("x", "n2", key=1, mac=MAC_A, ips=[A6]),
            sc.port("y", "n2", key=2, mac=MAC_B, ips=[B6]),
        ],
        routers=[sc.router("r1", key=7)],
        local={"a": 1, "b": 2, "x": 11, "y": 12},
    )


def test_neighbour_solicitation_for_a_known_ipv6_address_is_punted() -> None:
    s = sc.Scenario(view6(), apps=sc.l2_apps())
    for target in (B6, REMOTE6, R6):  # local, remote, router interface
        for src in (A6, "fe80::f816:3eff:fe00:a"):  # global or EUI-64 link-local source
            trace = s.run(pk.nd_solicit(1, MAC_A, src, target))
            assert [p.userdata for p in trace.punts] == [bytes([PUNT_ND_NS])], trace.format()
            assert trace.punts[0].stage == "punt"  # (from services, through punt_meter)
            assert not trace.outputs  # answered by the controller, never flooded
            punted = trace.punts[0].packet
            assert punted["network_key"] == 100 and punted["src_port_key"] == 1
    # a DAD probe (from ::) by another port for a known address is punted too
    dad = pk.nd_solicit(2, MAC_B, "::", A6)
    dad["nd_sll"] = 0
    assert [p.userdata for p in s.run(dad).punts] == [bytes([PUNT_ND_NS])]


def test_neighbour_solicitation_for_an_unknown_target_is_flooded() -> None:
    s = sc.Scenario(view6(), apps=sc.l2_apps())
    trace = s.run(pk.nd_solicit(1, MAC_A, A6, "2001:db8::77"))
    assert not trace.punts and trace.output_ports == [2], trace.format()
    # per network: n2 knows nothing of n1's remote port
    trace = s.run(pk.nd_solicit(11, MAC_A, A6, REMOTE6))
    assert not trace.punts and trace.output_ports == [12], trace.format()
    assert s.run(pk.nd_solicit(11, MAC_A, A6, B6)).punts  # but its own ports, yes


def test_duplicate_address_detection_for_own_address_is_not_answered() -> None:
    s = sc.Scenario(view6(), apps=sc.l2_apps())
    dad = pk.nd_solicit(1, MAC_A, "::", A6)
    dad["nd_sll"] = 0
    trace = s.run(dad)
    assert not trace.punts and trace.output_ports == [2], trace.format()
    trace = s.run(pk.nd_solicit(1, MAC_A, A6, A6))  # own address, from itself
    assert not trace.punts and trace.output_ports == [2], trace.format()


def test_neighbour_solicitation_for_a_vip_is_not_answered_by_the_responder() -> None:
    s = sc.Scenario(view6(a_claims_vip=True), apps=sc.l2_apps())
    trace = s.run(pk.nd_solicit(2, MAC_B, B6, VIP6))
    assert not trace.punts and trace.output_ports == [1], trace.format()
    # without the pair, the reserved port's address is an ordinary known address
    s = sc.Scenario(view6(a_claims_vip=False), apps=sc.l2_apps())
    assert [p.userdata for p in s.run(pk.nd_solicit(2, MAC_B, B6, VIP6)).punts] == [
        bytes([PUNT_ND_NS])
    ]


def test_nd_responder_follows_port_changes() -> None:
    """Adding and removing an address changes what is punted (incremental flows)."""
    v = view6()
    s = sc.Scenario(v, apps=sc.l2_apps())
    new = "2001:db8::99"
    assert not s.run(pk.nd_solicit(1, MAC_A, A6, new)).punts
    b = sc.port("b", "n1", key=2, mac=MAC_B, ips=[("s6", B6), ("s6", new)])
    v.apply("port", "b", sc.record_from_obj("port", b))
    s.refresh()
    assert s.run(pk.nd_solicit(1, MAC_A, A6, new)).punts
    v.apply("port", "remote", None)
    s.refresh()
    assert not s.run(pk.nd_solicit(1, MAC_A, A6, REMOTE6)).punts


# ---- incremental maintenance: a port's entries depend on its network's other ports ----

_SV_PORTS = ["a", "b", "c", "d", "e"]
_SV_IPS = ["10.0.0.5", "10.0.0.6", "10.0.0.7", "fd00::5", "fd00::6"]
_SV_PAIRS = ["10.0.0.5", "10.0.0.4/30", "fd00::/64", "10.0.0.200"]


@st.composite
def _sv_changes(draw: st.DrawFn) -> list[tuple[Kind, str, Any]]:
    out: list[tuple[Kind, str, Any]] = []
    for _ in range(draw(st.integers(1, 12))):
        what = draw(st.sampled_from(["port", "port", "port", "net", "subnet"]))
        if what == "port":
            pid = draw(st.sampled_from(_SV_PORTS))
            i = _SV_PORTS.index(pid)
            obj = None
            if not (draw(st.booleans()) and draw(st.booleans())):
                net = draw(st.sampled_from(["n1", "n1", "n2"]))
                ips = draw(st.lists(st.sampled_from(_SV_IPS), max_size=2, unique=True))
                pairs = draw(st.lists(st.sampled_from(_SV_PAIRS), max_size=2, unique=True))
                obj = sc.port(
                    pid,
                    net,
                    key=i + 1,
                    mac=f"fa:16:3e:00:00:{i:02x}",
                    ips=[("s1" if ":" not in a else "s6", a) for a in ips]
                    if net == "n1"
                    else [("s2", a) for a in ips if ":" not in a],
                    allowed_address_pairs=[{"ip_address": a} for a in pairs],
                )
            out.append(("port", pid, obj))
        elif what == "net":
            nid = draw(st.sampled_from(["n1", "n2"]))
            gone = draw(st.booleans()) and draw(st.booleans())
            key = draw(st.sampled_from([100, 101])) + (0 if nid == "n1" else 100)
            out.append(("network", nid, None if gone else sc.network(nid, key=key)))
        else:
            dhcp = draw(st.booleans())
            out.append(("subnet", "s1", sc.subnet("s1", "n1", "10.0.0.0/24", enable_dhcp=dhcp)))
    return out


def _sv_full(app: App, v: LocalView) -> dict[Owner, frozenset[Flow]]:
    out: dict[Owner, frozenset[Flow]] = {}
    for owner in app.owners(v):
        fl = app.flows(v, owner)
        if fl:
            out[owner] = frozenset(fl)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sv_changes())
def test_incremental_equals_full_recompute(changes: list[tuple[Kind, str, Any]]) -> None:
    v = sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("s6", "n1", "fd00::/64"),
            sc.subnet("s2", "n2", "10.0.0.0/24"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6", "fd00::6"]),
            sc.router_port("c", "n1", key=3, mac=MAC_R, ip="10.0.0.7", router_id="r1"),
        ],
        local={"a": 1, "b": 2},
    )
    app = Services()
    engine = Engine([app])
    engine.full(v)
    for kind, id_, obj in changes:
        change = v.apply(kind, id_, None if obj is None else record_from_obj(kind, obj))
        engine.apply(v, change)
        desired = sc.engine_app_flows(engine)[app.name]
        full = _sv_full(app, v)
        assert desired == sc.as_entries(app.name, full), (kind, id_)
        seen: dict[object, Flow] = {}  # no two owners install different flows on one key
        for fl in full.values():
            for f in fl:
                assert seen.setdefault(f.key, f) == f, f


# ---------------------------------------------------------------- router solicitations


def view_ra(*, mode: str | None = "slaac", router_up: bool = True) -> LocalView:
    """n1: an IPv6 subnet behind router r1; n2: the same without a router interface."""
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s6", "n1", "2001:db8::/64", ipv6_ra_mode=mode, ipv6_address_mode=mode),
            sc.subnet("t6", "n2", "2001:db8::/64", ipv6_ra_mode="slaac"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[A6]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[B6]),
            sc.router_port("rp", "n1", key=9, mac=MAC_R, ip=R6, router_id="r1"),
            sc.port("x", "n2", key=1, mac=MAC_A, ips=[A6]),
            sc.port("y", "n2", key=2, mac=MAC_B, ips=[B6]),
        ],
        routers=[sc.router("r1", key=7, admin_state_up=router_up)],
        local={"a": 1, "b": 2, "x": 11, "y": 12},
    )


def test_router_solicitation_is_punted_where_a_router_advertises() -> None:
    from wyvern.apps.port_security import eui64_link_local
    from wyvern.apps.punts import PUNT_ND_RA

    for mode in ("slaac", "dhcpv6-stateful", "dhcpv6-stateless", None):
        s = sc.Scenario(view_ra(mode=mode), apps=sc.l2_apps())
        for src in (str(eui64_link_local(MAC_A)), A6):  # (from ::, port security drops it)
            trace = s.run(pk.router_solicit(1, MAC_A, src))
            assert [p.userdata for p in trace.punts] == [bytes([PUNT_ND_RA])], trace.format()
            assert trace.punts[0].stage == "punt"  # (through the port's punt_meter)
            assert not trace.outputs  # answered by the agent, never flooded
            punted = trace.punts[0].packet
            assert punted["network_key"] == 100 and punted["src_port_key"] == 1
    # no router interface on n2: nobody answers, the RS goes on like any multicast
    s = sc.Scenario(view_ra(), apps=sc.l2_apps())
    trace = s.run(pk.router_solicit(11, MAC_A, str(eui64_link_local(MAC_A))))
    assert not trace.punts and trace.output_ports == [12], trace.format()
    # nor behind a router that is administratively down (Neutron's l3 agent drops it)
    s = sc.Scenario(view_ra(router_up=False), apps=sc.l2_apps())
    trace = s.run(pk.router_solicit(1, MAC_A, str(eui64_link_local(MAC_A))))
    assert not trace.punts and trace.output_ports == [2], trace.format()


def test_a_router_interface_s_link_local_address_is_answered() -> None:
    """The RA's default router is the interface's link-local address: a VM's NS for it is
    punted (and answered, wyvern/controller/nd.py) like its fixed addresses."""
    from wyvern.apps.port_security import eui64_link_local

    s = sc.Scenario(view_ra(), apps=sc.l2_apps())
    router_ll = str(eui64_link_local(MAC_R))
    trace = s.run(pk.nd_solicit(1, MAC_A, str(eui64_link_local(MAC_A)), router_ll))
    assert [p.userdata for p in trace.punts] == [bytes([PUNT_ND_NS])], trace.format()
    # another link-local address nobody holds is flooded as before
    trace = s.run(pk.nd_solicit(1, MAC_A, str(eui64_link_local(MAC_A)), "fe80::77"))
    assert not trace.punts and trace.output_ports == [2], trace.format()


# --- DHCPv6 -----------------------------------------------------------------------------

LL_A = "fe80::f816:3eff:fe00:a"
ALL_DHCP6 = "ff02::1:2"
MC_DHCP6 = "33:33:00:01:00:02"


def dhcp6_view(mode: str | None, *, dhcp: bool = True) -> LocalView:
    return sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[
            sc.subnet(
                "s6", "n1", "fd00::/64", enable_dhcp=dhcp, ipv6_address_mode=mode, ipv6_ra_mode=mode
            ),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["fd00::5"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["fd00::6"]),
        ],
        local={"a": 1, "b": 2},
    )


def solicit(in_port: int = 1, mac: str = MAC_A, src: str = LL_A) -> pk.Packet:
    return pk.udp(in_port, mac, MC_DHCP6, src, ALL_DHCP6, 546, 547, ttl=1)


@pytest.mark.parametrize("mode", ["dhcpv6-stateful", "dhcpv6-stateless"])
def test_dhcp6_solicit_is_punted_on_a_dhcpv6_subnet_and_nothing_leaves(mode: str) -> None:
    s = sc.Scenario(dhcp6_view(mode), apps=sc.default_apps())
    trace = s.run(solicit())
    assert [p.userdata for p in trace.punts] == [bytes([PUNT_DHCP6])], trace.format()
    assert trace.punts[0].stage == "punt"  # (from services, through the port's meter)
    assert not trace.outputs  # not flooded to the other port


@pytest.mark.parametrize(
    ("mode", "dhcp"), [("slaac", True), (None, True), ("dhcpv6-stateful", False)]
)
def test_dhcp6_is_flooded_not_punted_without_a_dhcpv6_subnet(mode: str | None, dhcp: bool) -> None:
    s = sc.Scenario(dhcp6_view(mode, dhcp=dhcp), apps=sc.default_apps())
    trace = s.run(solicit())
    assert not trace.punts
    assert trace.output_ports == [2], trace.format()  # an ordinary multicast


def test_dhcp6_is_only_punted_to_the_servers_group_from_the_client_port() -> None:
    s = sc.Scenario(dhcp6_view("dhcpv6-stateful"), apps=sc.default_apps())
    # A server's message (547 → 546) from a VM is not the agent's business: no punt.
    rogue = pk.udp(1, MAC_A, MC_DHCP6, LL_A, ALL_DHCP6, 547, 546, ttl=1)
    assert not s.run(rogue).punts
    # Port security first: a spoofed source never reaches the punt.
    spoofed = s.run(solicit(mac=MAC_B))
    assert spoofed.dropped and not spoofed.punts
    own = s.run(solicit(in_port=2, mac=MAC_B, src="fe80::f816:3eff:fe00:b"))
    assert [p.userdata for p in own.punts] == [bytes([PUNT_DHCP6])]
