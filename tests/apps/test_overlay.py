"""The overlay through the simulator: to a remote port by its chassis's tunnel, from a
tunnel to the local port, head-end replication of floods, routing across chassis."""

from __future__ import annotations

import ipaddress

from tests.apps import scenario as sc
from wyvern.apps.overlay import FLOOD_OPTION
from wyvern.ir import packet as pk
from wyvern.ir.ofports import TUNNEL_OFPORTS
from wyvern.ir.packet import Packet
from wyvern.model.view import LocalView

MAC_A, MAC_B, MAC_C, MAC_D = (f"fa:16:3e:00:00:0{c}" for c in "abcd")
MAC_R1, MAC_R2 = "fa:16:3e:00:00:f1", "fa:16:3e:00:00:f2"
GENEVE, VXLAN = TUNNEL_OFPORTS["geneve"], TUNNEL_OFPORTS["vxlan"]
IP_HV2, IP_HV3 = "192.0.2.2", "192.0.2.3"


def chassis(name: str, ip: str, encaps: tuple[str, ...] = ("geneve", "vxlan")) -> dict[str, object]:
    return {"name": name, "tunnel_ip": ip, "encaps": list(encaps)}


def place(view: LocalView, where: dict[str, str]) -> None:
    """Bind ports on other chassis, the way their ACTIVE status records do."""
    for pid, name in where.items():
        view.port_chassis[pid] = name


def two_chassis_view(network_type: str = "geneve", **kw: object) -> LocalView:
    """hv1 (us): a (ofport 1), c (ofport 3); hv2: b; hv3: d. All on n1 (key 100)."""
    view = sc.build_view(
        networks=[sc.network("n1", key=100, **{"provider:network_type": network_type})],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"]),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=["10.0.0.7"]),
            sc.port("d", "n1", key=4, mac=MAC_D, ips=["10.0.0.8"]),
        ],
        local={"a": 1, "c": 3},
        chassis_name="hv1",
    )
    for name, ip in (("hv1", "192.0.2.1"), ("hv2", IP_HV2), ("hv3", IP_HV3)):
        view.apply("chassis", name, sc.record_from_obj("chassis", chassis(name, ip)))
    place(view, {"b": "hv2", "d": "hv3"})
    return view


def tunnelled(p: Packet, port: int, vni: int, option: int | None = None) -> Packet:
    p = p.copy()
    p["in_port"] = port
    p["tun_id"] = vni
    if option is not None:
        p["tun_metadata0"] = option
    return p


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def test_geneve_unicast_to_a_remote_port_leaves_by_the_tunnel_with_both_keys() -> None:
    s = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [GENEVE], out.trace.format()
    sent = out.packets[GENEVE]
    assert sent["tun_id"] == 100 and sent["tun_dst"] == ip(IP_HV2)
    assert sent["tun_metadata0"] == (1 << 32) | 2  # source key a=1, destination key b=2


def test_geneve_from_a_tunnel_is_delivered_to_the_local_port_without_a_lookup() -> None:
    s = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    # b (key 2) on hv2 to c (key 3) here; the MAC does not matter, the option does
    p = tunnelled(pk.icmp_echo(0, MAC_B, MAC_C, "10.0.0.6", "10.0.0.7"), GENEVE, 100, (2 << 32) | 3)
    out = s.outcome(p)
    assert out.ports == [3], out.trace.format()
    assert "l2_lookup" not in out.trace.stages()
    # an unknown VNI is dropped, and so is a destination that is not local
    assert s.outcome(tunnelled(p, GENEVE, 999, (2 << 32) | 3)).dropped
    assert s.outcome(tunnelled(p, GENEVE, 100, (2 << 32) | 4)).dropped


def test_broadcast_goes_to_local_ports_and_once_to_each_hosting_chassis() -> None:
    s = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))  # nobody has .200: flood
    tunnels = [o.packet for o in out.outputs if o.port == GENEVE]
    assert sorted(p["tun_dst"] for p in tunnels) == [ip(IP_HV2), ip(IP_HV3)], out.format()
    assert all(p["tun_metadata0"] == FLOOD_OPTION and p["tun_id"] == 100 for p in tunnels)
    assert sorted(o.port for o in out.outputs if o.port != GENEVE) == [3]


def test_a_flood_from_a_tunnel_reaches_local_ports_and_is_not_sent_on() -> None:
    s = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    arp = pk.arp(0, MAC_B, "10.0.0.6", "10.0.0.200")
    out = s.outcome(tunnelled(arp, GENEVE, 100, FLOOD_OPTION))
    assert out.ports == [1, 3], out.trace.format()


def test_ports_on_an_unknown_chassis_get_no_tunnel_and_no_flood_copy() -> None:
    known = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    ping = pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")
    assert known.outcome(ping).ports == [GENEVE]  # on a known chassis: tunnelled
    view = two_chassis_view()
    place(view, {"b": "hv9", "d": "hv9"})  # a chassis the view does not know
    s = sc.Scenario(view, apps=sc.default_apps())
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).dropped
    out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert out.ports == [3], out.trace.format()


def test_vxlan_carries_the_network_key_and_the_receiver_looks_up_the_mac() -> None:
    s = sc.Scenario(two_chassis_view("vxlan"), apps=sc.default_apps())
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [VXLAN], out.trace.format()
    assert out.packets[VXLAN]["tun_id"] == 100 and out.packets[VXLAN]["tun_dst"] == ip(IP_HV2)
    back = tunnelled(pk.icmp_echo(0, MAC_B, MAC_A, "10.0.0.6", "10.0.0.5"), VXLAN, 100)
    out = s.outcome(back)
    assert out.ports == [1], out.trace.format()
    assert "l2_lookup" in out.trace.stages()
    # a unicast for a port on a third chassis is not forwarded again
    assert s.outcome(tunnelled(back, VXLAN, 100)).ports == [1]
    on = tunnelled(pk.icmp_echo(0, MAC_B, MAC_D, "10.0.0.6", "10.0.0.8"), VXLAN, 100)
    assert s.outcome(on).dropped


def test_a_chassis_without_the_encap_gets_no_tunnel() -> None:
    view = two_chassis_view("vxlan")
    ping = pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")
    assert sc.Scenario(view, apps=sc.default_apps()).outcome(ping).ports == [VXLAN]
    view.apply("chassis", "hv2", sc.record_from_obj("chassis", chassis("hv2", IP_HV2, ("geneve",))))
    s = sc.Scenario(view, apps=sc.default_apps())
    assert s.outcome(ping).dropped


def test_routed_to_a_remote_port_is_routed_here_and_tunnelled_to_its_chassis() -> None:
    view = sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24"), sc.subnet("s2", "n2", "10.1.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
            sc.port("b", "n2", key=2, mac=MAC_B, ips=["10.1.0.6"]),
            sc.router_port("r1", "n1", 9, MAC_R1, "10.0.0.1", "r"),
            sc.router_port("r2", "n2", 9, MAC_R2, "10.1.0.1", "r"),
        ],
        routers=[sc.router("r", key=500)],
        local={"a": 1},
        chassis_name="hv1",
    )
    for name, addr in (("hv1", "192.0.2.1"), ("hv2", IP_HV2)):
        view.apply("chassis", name, sc.record_from_obj("chassis", chassis(name, addr)))
    place(view, {"b": "hv2"})
    s = sc.Scenario(view, apps=sc.default_apps())
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_R1, "10.0.0.5", "10.1.0.6", ttl=64))
    assert out.ports == [GENEVE], out.trace.format()
    sent = out.packets[GENEVE]
    assert sent["tun_id"] == 200 and sent["tun_dst"] == ip(IP_HV2)
    assert sent["tun_metadata0"] & 0xFFFFFFFF == 2  # delivered to b by hv2 directly
    assert sent["eth_dst"] == int(MAC_B.replace(":", ""), 16) and sent["nw_ttl"] == 63


def test_arp_for_a_remote_port_is_answered_here_and_never_tunnelled() -> None:
    s = sc.Scenario(two_chassis_view(), apps=sc.default_apps())
    out = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.6"))  # b, on hv2
    assert out.ports == [1], out.trace.format()
    reply = out.packets[1]
    assert reply["arp_op"] == 2 and reply["arp_sha"] == int(MAC_B.replace(":", ""), 16)


def test_vxlan_floods_once_per_chassis_and_a_received_flood_stays_local() -> None:
    s = sc.Scenario(two_chassis_view("vxlan"), apps=sc.default_apps())
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    tunnels = [o.packet for o in out.outputs if o.port == VXLAN]
    assert sorted(p["tun_dst"] for p in tunnels) == [ip(IP_HV2), ip(IP_HV3)], out.format()
    assert sorted(o.port for o in out.outputs if o.port != VXLAN) == [3]
    received = tunnelled(pk.arp(0, MAC_B, "10.0.0.6", "10.0.0.200"), VXLAN, 100)
    assert s.outcome(received).ports == [1, 3]
