"""Next hops on an internal network that are no port's own: a VRRP/keepalived VIP that
two VMs may hold through an allowed address pair, reserved by an unbound port's fixed IP
(wyvern.apps.l3, wyvern.apps.services). By packet outcome, every app, one chassis:

- before a binding the routed packet is punted for the agent to ask (ARP / ND), and is
  not delivered (not to the reserved port's MAC either);
- the agent's question, injected at l2_lookup as the router interface's frame, floods
  the network's ports;
- the holder's answer to the router interface MAC is punted to be learned;
- after a binding the VIP resolves to the holder's MAC, and follows a new binding;
- the holder's gratuitous ARP / unsolicited NA is learned and still flooded; a VM whose
  pairs do not allow the VIP cannot announce it (port security drops it).
"""

from __future__ import annotations

from tests.apps import scenario as sc
from wyvern.apps.punts import PUNT_ARP_LEARN, PUNT_ARP_REQUEST, PUNT_ND_LEARN, PUNT_ND_REQUEST
from wyvern.controller import neighbours
from wyvern.ir import ETH_TYPE_IPV6, IPPROTO_ICMPV6, parse_value
from wyvern.ir import packet as pk
from wyvern.ir.packet import Packet
from wyvern.model.keys import mac_binding_id
from wyvern.model.view import LocalView, MacBinding

MAC_A, MAC_B, MAC_V, MAC_D, MAC_C = (f"fa:16:3e:00:00:0{i}" for i in range(1, 6))
MAC_R1, MAC_R2 = "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
VIP, VIP6 = "10.0.1.100", "fd00:1::100"
C, C6 = "10.0.2.5", "fd00:2::5"
OF_A, OF_B, OF_D, OF_C = 1, 2, 4, 5
CONTROLLER = 0xFFFFFFFD


def view_of(*, with_c_routes: list[dict[str, str]] | None = None) -> LocalView:
    # (the prefix behind the VIP: port security lets the holder receive it)
    pairs = [{"ip_address": VIP}, {"ip_address": VIP6}, {"ip_address": "192.168.50.0/24"}]
    return sc.build_view(
        networks=[sc.network("n1", key=10), sc.network("n2", key=20)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.1.0/24"),
            sc.subnet("s16", "n1", "fd00:1::/64"),
            sc.subnet("s2", "n2", "10.0.2.0/24"),
            sc.subnet("s26", "n2", "fd00:2::/64"),
        ],
        ports=[
            sc.port("a", "n1", 1, MAC_A, ["10.0.1.5", "fd00:1::5"], allowed_address_pairs=pairs),
            sc.port("b", "n1", 2, MAC_B, ["10.0.1.6", "fd00:1::6"], allowed_address_pairs=pairs),
            sc.port("v", "n1", 3, MAC_V, [VIP, VIP6], device_owner=""),  # the reservation
            sc.port("d", "n1", 4, MAC_D, ["10.0.1.7", "fd00:1::7"]),  # no pair
            sc.port("c", "n2", 5, MAC_C, [C, C6]),
            sc.port(
                "rp1",
                "n1",
                11,
                MAC_R1,
                ["10.0.1.1", "fd00:1::1"],
                device_owner="network:router_interface",
                device_id="r",
                port_security_enabled=False,
            ),
            sc.port(
                "rp2",
                "n2",
                12,
                MAC_R2,
                ["10.0.2.1", "fd00:2::1"],
                device_owner="network:router_interface",
                device_id="r",
                port_security_enabled=False,
            ),
        ],
        routers=[sc.router("r", 7, routes=with_c_routes or [])],
        local={"a": OF_A, "b": OF_B, "d": OF_D, "c": OF_C},
    )


def learn(view: LocalView, ip: str, mac: str) -> None:
    b = MacBinding(mac_binding_id("n1", ip), "n1", ip, mac)
    view.apply("mac_binding", b.id, b)


def to(dst: str, sport: int = 40000) -> Packet:
    if ":" in dst:
        return pk.udp(OF_C, MAC_C, MAC_R2, C6, dst, sport, 5000)
    return pk.udp(OF_C, MAC_C, MAC_R2, C, dst, sport, 5000)


def unsolicited_na(in_port: int, mac: str, target: str) -> Packet:
    return pk.packet(
        in_port=in_port,
        eth_src=mac,
        eth_dst="33:33:00:00:00:01",
        eth_type=ETH_TYPE_IPV6,
        ipv6_src=target,
        ipv6_dst="ff02::1",
        ip_proto=IPPROTO_ICMPV6,
        nw_ttl=255,
        icmpv6_type=136,
        icmpv6_code=0,
        nd_target=target,
        nd_tll=mac,
    )


def test_a_vip_is_asked_for_before_a_binding_and_never_sent_to_its_reservation() -> None:
    s = sc.Scenario(view_of())
    fixed = s.outcome(to("10.0.1.5"))  # a port's own address: resolved in flows
    assert fixed.ports == [OF_A] and fixed.punts == []
    for dst, punt in ((VIP, PUNT_ARP_REQUEST), (VIP6, PUNT_ND_REQUEST)):
        out = s.outcome(to(dst))
        assert out.ports == [] and out.punts == [bytes([punt])], out.trace.format()
    # an address no port holds: asked for too (it was dropped)
    assert s.outcome(to("10.0.1.200")).punts == [bytes([PUNT_ARP_REQUEST])]


def test_after_a_binding_the_vip_goes_to_the_holder_and_follows_a_new_one() -> None:
    view = view_of()
    learn(view, VIP, MAC_A)
    learn(view, VIP6, MAC_A)
    s = sc.Scenario(view)
    for dst in (VIP, VIP6):
        out = s.outcome(to(dst))
        assert out.ports == [OF_A] and out.punts == [], out.trace.format()
        assert out.packets[OF_A]["eth_dst"] == int(MAC_A.replace(":", ""), 16)
    learn(view, VIP, MAC_B)  # a failover
    learn(view, VIP6, MAC_B)
    s.refresh()
    for dst in (VIP, VIP6):
        assert s.outcome(to(dst, 40001)).ports == [OF_B]


def test_an_extra_route_through_the_vip_is_resolved_the_same_way() -> None:
    view = view_of(with_c_routes=[{"destination": "192.168.50.0/24", "nexthop": VIP}])
    s = sc.Scenario(view)
    assert s.outcome(to("192.168.50.9")).punts == [bytes([PUNT_ARP_REQUEST])]
    learn(view, VIP, MAC_B)
    s.refresh()
    out = s.outcome(to("192.168.50.9"))
    assert (
        out.ports == [OF_B]
        and out.packets[OF_B]["ipv4_dst"] == parse_value("ipv4_dst", "192.168.50.9")[0]
    )


def test_the_agents_question_floods_the_network_from_the_router_interface() -> None:
    view = view_of()
    s = sc.Scenario(view)
    net = view.networks["n1"]
    for target in (VIP, VIP6):
        where, _frame = neighbours.ask(view, net, view.routers["r"].key, target) or (None, b"")
        assert where is not None
        if ":" in target:
            p = pk.nd_solicit(CONTROLLER, MAC_R1, "fd00:1::1", target, eth_dst="33:33:ff:00:01:00")
        else:
            p = pk.arp(CONTROLLER, MAC_R1, "10.0.1.1", target)
        for name, value in where.fields().items():
            p[name] = value
        out = sc.Outcome.of(s.simulator.run(p, where.table))
        assert out.ports == [OF_A, OF_B, OF_D] and out.punts == [], out.trace.format()


def test_the_answer_to_the_router_interface_is_punted_to_be_learned() -> None:
    s = sc.Scenario(view_of())
    reply = pk.arp(OF_A, MAC_A, VIP, "10.0.1.1", op=2, eth_dst=MAC_R1, tha=MAC_R1)
    out = s.outcome(reply)
    assert out.ports == [] and out.punts == [bytes([PUNT_ARP_LEARN])], out.trace.format()
    na = unsolicited_na(OF_A, MAC_A, VIP6)
    na["eth_dst"] = parse_value("eth_dst", MAC_R1)[0]
    na["ipv6_dst"] = parse_value("ipv6_dst", "fd00:1::1")[0]
    out = s.outcome(na)
    assert out.ports == [] and out.punts == [bytes([PUNT_ND_LEARN])], out.trace.format()


def test_a_holders_gratuitous_arp_and_na_are_learned_and_still_flooded() -> None:
    s = sc.Scenario(view_of())
    for garp in (
        pk.arp(OF_A, MAC_A, VIP, VIP),  # arping -U: a request
        pk.arp(OF_A, MAC_A, VIP, VIP, op=2),  # arping -A: a reply, broadcast
    ):
        out = s.outcome(garp)
        assert out.punts == [bytes([PUNT_ARP_LEARN])], out.trace.format()
        assert out.ports == [OF_B, OF_D]
    out = s.outcome(unsolicited_na(OF_B, MAC_B, VIP6))
    assert out.punts == [bytes([PUNT_ND_LEARN])] and out.ports == [OF_A, OF_D]
    # the holder's other ARP (for the router, from the VIP) is still answered, unlearned
    ask = s.outcome(pk.arp(OF_A, MAC_A, VIP, "10.0.1.1"))
    assert ask.ports == [OF_A] and ask.punts == []


def test_a_vm_without_the_pair_cannot_announce_the_vip() -> None:
    s = sc.Scenario(view_of())
    own = s.outcome(pk.arp(OF_D, MAC_D, "10.0.1.7", "10.0.1.7"))  # its own address: flooded
    assert own.ports == [OF_A, OF_B] and own.punts == []
    for spoof in (pk.arp(OF_D, MAC_D, VIP, VIP), unsolicited_na(OF_D, MAC_D, VIP6)):
        out = s.outcome(spoof)
        assert out.ports == [] and out.punts == [], out.trace.format()
