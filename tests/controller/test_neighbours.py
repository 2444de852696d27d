"""Neighbours outside Neutron: what a gateway chassis learns, and the probes that keep a
learned MAC binding fresh (so a replaced upstream router is followed)."""

from __future__ import annotations

from tests.apps.test_gateway import GW, MAC_GW, MAC_UP, PATCH, UPSTREAM, learn, view_of
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
