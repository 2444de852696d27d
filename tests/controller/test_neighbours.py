"""Neighbours outside Neutron: what a gateway chassis learns, the probes that keep a
learned MAC binding fresh (so a replaced upstream router is followed), and the gratuitous
ARPs it sends when it takes a router's gateway: the gateway addresses and the floating
addresses of the router's port forwardings (answered with the gateway port's MAC)."""

from __future__ import annotations

from tests.apps.test_gateway import GW, MAC_GW, MAC_UP, PATCH, UPSTREAM, learn, view_of
from tests.apps.test_port_forwarding import PF_IP, pf_view
from wyvern.controller import frames, neighbours


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
