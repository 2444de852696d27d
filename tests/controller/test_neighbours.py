"""Neighbours outside Neutron: what a gateway chassis learns, the probes that keep a
learned MAC binding fresh (so a replaced upstream router is followed), and the gratuitous
ARPs it sends when it takes a router's gateway: the gateway addresses and the floating
addresses of the router's port forwardings (answered with the gateway port's MAC)."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.apps.test_gateway import GW, MAC_GW, MAC_UP, PATCH, UPSTREAM, learn, view_of
from tests.apps.test_port_forwarding import PF_IP, pf_view
from wyvern.apps.punts import PUNT_ARP_LEARN, PUNT_ARP_REQUEST
from wyvern.controller import frames, neighbours
from wyvern.controller.packetin import PacketInDispatcher
from wyvern.model.view import Chassis
from wyvern.southbound.ofchannel import Inject, PacketIn


def test_a_gateway_chassis_probes_each_learned_binding_from_the_gateway() -> None:
    view = view_of()  # hv1 hosts the gateway
    assert neighbours.refreshes(view) == []  # nothing learned yet
    learn(view, UPSTREAM, MAC_UP)
    ((port, frame),) = neighbours.refreshes(view)
    eth = frames.parse_ethernet(frame)
    assert eth is not None
    arp = frames.parse_arp(eth.payload)
    assert port == PATCH and eth.dst == "ff:ff:ff:ff:ff:ff"
    assert arp is not None and (arp.op, arp.sha, arp.spa, arp.tpa) == (1, MAC_GW, GW, UPSTREAM)


def test_other_chassis_do_not_probe() -> None:
    view = view_of(chassis={"hv1": 1, "hv2": 2})  # hv2 hosts the gateway, not us
    learn(view, UPSTREAM, MAC_UP)
    assert neighbours.refreshes(view) == []


def test_an_answer_with_a_new_mac_is_learned_the_same_mac_is_not() -> None:
    view = view_of()
    learn(view, UPSTREAM, MAC_UP)
    net = view.networks["ext"]

    def reply(mac: str) -> bytes:
        # (a who-has from the upstream router: what learned() reads is the sender)
        return frames.arp_request(mac, UPSTREAM, GW)

    assert neighbours.learned(view, net, reply(MAC_UP)) is None
    new = neighbours.learned(view, net, reply("fa:16:3e:00:00:99"))
    assert new is not None and (new.ip, new.mac) == (UPSTREAM, "fa:16:3e:00:00:99")


def announced(frame: bytes) -> tuple[str, str, str, str]:
    eth = frames.parse_ethernet(frame)
    assert eth is not None and eth.ethertype == frames.ETH_TYPE_ARP
    arp = frames.parse_arp(eth.payload)
    assert arp is not None
    return eth.dst, arp.sha, arp.spa, arp.tpa


def test_takeover_announces_the_gateway_and_forwarded_addresses() -> None:
    sent = neighbours.gateway_announcements(pf_view(), "r")
    assert [patch for patch, _ in sent] == [PATCH, PATCH]
    assert sorted(announced(f) for _, f in sent) == sorted(
        ("ff:ff:ff:ff:ff:ff", MAC_GW, ip, ip) for ip in (GW, PF_IP)
    )
    assert neighbours.gateway_announcements(pf_view(chassis={"hv1": 1, "hv2": 2}), "r") == []


# ---- internal networks: VIPs held through allowed address pairs (tests/apps/test_l3_virtual)


def test_an_internal_next_hop_is_asked_for_from_the_router_interface_into_the_network() -> None:
    """The who-has and the NS, byte for byte as os-ken builds them, injected at
    l2_lookup with the network's key and the router interface's port key."""
    from os_ken.lib.packet import arp as osk_arp
    from os_ken.lib.packet import ethernet, packet

    from tests.apps import test_l3_virtual as tv
    from tests.controller.test_neighbours6 import osken_solicitation
    from wyvern.ir.pipeline import table_of

    view = tv.view_of()
    net, rkey = view.networks["n1"], view.routers["r"].key
    where = (table_of("l2_lookup"), {"metadata": net.key, "reg14": view.ports["rp1"].key})
    found = neighbours.request(view, net, rkey, int(ipaddress.IPv4Address(tv.VIP)), b"")
    assert found is not None
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", tv.MAC_R1, 0x0806))
    pkt.add_protocol(osk_arp.arp_ip(1, tv.MAC_R1, "10.0.1.1", "00:00:00:00:00:00", tv.VIP))
    pkt.serialize()
    assert isinstance(found[0], Inject) and (found[0].table, found[0].fields()) == where
    # (os-ken pads the frame to Ethernet's 60 bytes; OVS pads ours on the wire)
    assert found[1] == bytes(pkt.data)[: len(found[1])] and len(found[1]) == 42
    found6 = neighbours.solicit(view, net, rkey, int(ipaddress.IPv6Address(tv.VIP6)))
    assert found6 is not None and isinstance(found6[0], Inject)
    assert (found6[0].table, found6[0].fields()) == where
    assert found6[1] == osken_solicitation(tv.MAC_R1, "fd00:1::1", tv.VIP6)
    # another router's key, or a next hop on none of the interface's subnets: nothing
    assert neighbours.request(view, net, rkey + 1, int(ipaddress.IPv4Address(tv.VIP)), b"") is None
    assert neighbours.request(view, net, rkey, int(ipaddress.IPv4Address("10.9.9.9")), b"") is None


def test_a_vip_is_learned_only_from_a_port_its_pairs_allow() -> None:
    from tests.apps import test_l3_virtual as tv

    view = tv.view_of()
    net = view.networks["n1"]
    a, d = view.ports["a"], view.ports["d"]
    garp = frames.arp_request(tv.MAC_A, tv.VIP, tv.VIP)
    got = neighbours.learned(view, net, garp, a)
    assert got is not None and (got.ip, got.mac) == (tv.VIP, tv.MAC_A)
    # a VM without the pair (say, port security off) cannot take it; nor the outside
    assert neighbours.learned(view, net, frames.arp_request(tv.MAC_D, tv.VIP, tv.VIP), d) is None
    assert neighbours.learned(view, net, garp, None) is None
    # a port's own fixed address is never learned, whoever says so
    assert (
        neighbours.learned(view, net, frames.arp_request(tv.MAC_A, "10.0.1.6", "10.0.1.6"), a)
        is None
    )
    # an address no port holds nor claims: learned from whoever answers (as outside)
    other = neighbours.learned(view, net, frames.arp_request(tv.MAC_D, "10.0.1.200", "10.0.1.1"), d)
    assert other is not None and other.mac == tv.MAC_D
    # IPv6: the holder's unsolicited NA
    from tests.controller.test_neighbours6 import osken_nd

    na = osken_nd(136, tv.VIP6, tv.VIP6, tv.MAC_B, tv.MAC_B)
    got6 = neighbours.learned_nd(view, net, na, view.ports["b"])
    assert got6 is not None and (got6.ip, got6.mac) == (tv.VIP6, tv.MAC_B)
    assert (
        neighbours.learned_nd(view, net, osken_nd(136, tv.VIP6, tv.VIP6, tv.MAC_D, tv.MAC_D), d)
        is None
    )


def test_internal_bindings_are_refreshed_by_one_chassis_into_the_network() -> None:
    """The first chassis by name with a port of the network probes; the others do not."""
    from tests.apps import scenario as sc
    from tests.apps import test_l3_virtual as tv

    def view_as(name: str, peer: str) -> Any:
        view = tv.view_of()
        view.chassis_name = name
        for cname, ip in ((name, "192.0.2.1"), (peer, "192.0.2.2")):
            c = Chassis(name=cname, tunnel_ip=ip, encaps=("geneve",), bridge_mappings=())
            view.apply("chassis", cname, c)
        sc.unbind(view, "b")  # b is on the peer
        view.port_chassis["b"] = peer
        tv.learn(view, tv.VIP, tv.MAC_A)
        return view

    first = view_as("hv1", "hv2")
    ((where, frame),) = neighbours.refreshes(first)
    assert isinstance(where, Inject) and where.fields()["metadata"] == first.networks["n1"].key
    eth = frames.parse_ethernet(frame)
    arp = frames.parse_arp(eth.payload) if eth is not None else None
    assert arp is not None and (arp.sha, arp.spa, arp.tpa) == (tv.MAC_R1, "10.0.1.1", tv.VIP)
    assert neighbours.refreshes(view_as("hv2", "hv1")) == []


def test_the_dispatcher_asks_into_the_network_and_learns_the_answer() -> None:
    from tests.apps import test_l3_virtual as tv

    view = tv.view_of()
    d = PacketInDispatcher(view)
    nkey, rkey = view.networks["n1"].key, view.routers["r"].key
    hop = int(ipaddress.IPv4Address(tv.VIP))
    fields = {"in_port": tv.OF_C, "metadata": nkey, "reg12": rkey, "reg1": hop, "reg14": 12}
    outs = d.handle(PacketIn(tv.OF_C, b"", bytes([PUNT_ARP_REQUEST]), fields), 0.0)
    assert [(o.ofport, o.data) for o in outs] == [
        neighbours.request(view, view.networks["n1"], rkey, hop, b"")
    ]
    reply = frames.arp_request(tv.MAC_A, tv.VIP, "10.0.1.1")  # (what is read: the sender)
    fields = {"in_port": tv.OF_A, "metadata": nkey, "reg12": rkey, "reg14": view.ports["a"].key}
    d.handle(PacketIn(tv.OF_A, reply, bytes([PUNT_ARP_LEARN]), fields), 1.0)
    assert [(b.network_id, b.ip, b.mac) for b in d.learned] == [("n1", tv.VIP, tv.MAC_A)]
    # the same frame punted from D's port (no pair) teaches nothing
    d.learned.clear()
    fields = {"in_port": tv.OF_D, "metadata": nkey, "reg12": rkey, "reg14": view.ports["d"].key}
    d.handle(PacketIn(tv.OF_D, reply, bytes([PUNT_ARP_LEARN]), fields), 2.0)
    assert d.learned == []
