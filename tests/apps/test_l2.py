"""L2 lookup and output: unicast, flooding, isolation between networks (through the simulator)."""

from __future__ import annotations

from tests.apps import scenario as sc
from wyvern.apps.l2 import L2
from wyvern.ir import Load
from wyvern.ir import packet as pk
from wyvern.model.view import LocalView

MAC_A, MAC_B, MAC_C = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
MAC_R = "fa:16:3e:00:00:f1"


def two_networks() -> LocalView:
    """n1 (a, b, c local; r remote) and n2 (x, y local) with the SAME CIDR and, for x and y,
    the same MACs and keys as a and b."""
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("s2", "n2", "10.0.0.0/24"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"]),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=["10.0.0.7"]),
            sc.port("r", "n1", key=4, mac="fa:16:3e:00:00:99", ips=["10.0.0.8"]),
            sc.port("x", "n2", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("y", "n2", key=2, mac=MAC_B, ips=["10.0.0.6"]),
        ],
        local={"a": 1, "b": 2, "c": 3, "x": 11, "y": 12},
    )


def test_unicast_is_delivered_only_to_the_destination_port() -> None:
    s = sc.Scenario(two_networks(), apps=sc.l2_apps())
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [2], out.trace.format()
    out = s.outcome(pk.tcp(3, MAC_C, MAC_A, "10.0.0.7", "10.0.0.5", 40000, 22))
    assert out.ports == [1], out.trace.format()


def test_broadcast_arp_floods_the_other_local_ports_of_its_network_only() -> None:
    s = sc.Scenario(two_networks(), apps=sc.l2_apps())
    # an ARP request for an address no port has: flooded, not answered
    out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert out.ports == [2, 3], out.trace.format()
    assert all(p["arp_op"] == 1 for p in out.packets.values())
    out = s.outcome(pk.arp(11, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert out.ports == [12], out.trace.format()


def test_unknown_unicast_floods_but_egress_port_security_keeps_it_from_secured_ports() -> None:
    view = two_networks()
    c = sc.port("c", "n1", key=3, mac=MAC_C, ips=[("s1", "10.0.0.7")], port_security_enabled=False)
    view.apply("port", "c", sc.record_from_obj("port", c))
    s = sc.Scenario(view, apps=sc.l2_apps())
    out = s.outcome(pk.icmp_echo(2, MAC_B, "fa:16:3e:77:77:77", "10.0.0.6", "10.0.0.77"))
    assert out.ports == [3], out.trace.format()  # a (port security) does not get it


def test_overlapping_networks_are_isolated() -> None:
    s = sc.Scenario(two_networks(), apps=sc.l2_apps())
    # same MACs, IPs and port keys in both networks: each stays in its own
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [2]
    out = s.outcome(pk.icmp_echo(11, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [12], out.trace.format()
    out = s.outcome(pk.icmp_echo(12, MAC_B, MAC_A, "10.0.0.6", "10.0.0.5"))
    assert out.ports == [11]
    # an address and a MAC of n1 only are unknown in n2: flooded in n2, never into n1
    out = s.outcome(pk.arp(11, MAC_A, "10.0.0.5", "10.0.0.7"))
    assert out.ports == [12], out.trace.format()
    assert out.packets[12]["arp_op"] == 1  # not answered with n1's port c
    out = s.outcome(pk.icmp_echo(11, MAC_A, MAC_C, "10.0.0.5", "10.0.0.7"))
    assert all(p in (11, 12) for p in out.ports)


def test_a_remote_port_on_no_known_chassis_is_not_output_locally() -> None:
    s = sc.Scenario(two_networks(), apps=sc.l2_apps())
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).ports == [2]
    out = s.outcome(pk.icmp_echo(1, MAC_A, "fa:16:3e:00:00:99", "10.0.0.5", "10.0.0.8"))
    assert out.dropped, out.trace.format()


def test_unknown_in_port_and_unbound_port_are_dropped() -> None:
    view = two_networks()
    s = sc.Scenario(view, apps=sc.l2_apps())
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).ports == [2]
    assert s.outcome(pk.icmp_echo(42, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).dropped
    sc.unbind(view, "b")
    s.refresh()
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.dropped, out.trace.format()  # b's MAC is now a remote port's
    out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert out.ports == [3]


def test_admin_down_port_neither_sends_nor_receives() -> None:
    up = sc.Scenario(two_networks(), apps=sc.l2_apps())
    assert up.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).ports == [2]
    assert up.outcome(pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.6", "10.0.0.5")).ports == [1]
    view = two_networks()
    b = sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"], admin_state_up=False)
    b["fixed_ips"][0]["subnet_id"] = "s1"
    view.apply("port", "b", sc.record_from_obj("port", b))
    s = sc.Scenario(view, apps=sc.l2_apps())
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).dropped
    assert s.outcome(pk.icmp_echo(2, MAC_B, MAC_A, "10.0.0.6", "10.0.0.5")).dropped
    assert s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200")).ports == [3]


def test_router_mac_goes_to_router_input_with_router_key() -> None:
    view = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.router_port("rp", "n1", key=9, mac=MAC_R, ip="10.0.0.1", router_id="r1"),
        ],
        routers=[sc.router("r1", key=7)],
        local={"a": 1},
    )
    flows = L2().flows(view, ("network", "n1"))
    to_router = [f for f in flows if f.match.exact("eth_dst") == int(MAC_R.replace(":", ""), 16)]
    assert len(to_router) == 1
    s = sc.Scenario(view, apps=sc.l2_apps())  # no L3 app: router_input's miss drops
    trace = s.run(pk.icmp_echo(1, MAC_A, MAC_R, "10.0.0.5", "8.8.8.8"))
    assert trace.stages()[-1] == "router_input", trace.format()
    last = trace.steps[-2]
    assert last.stage == "l2_lookup"
    regs = {a.register: a.value for a in last.actions if isinstance(a, Load)}
    assert regs == {"router_key": 7, "dst_port_key": 9}
