"""Gratuitous ARPs a gateway chassis sends when it takes a router's gateway: the gateway
addresses, and the floating addresses of the router's port forwardings (which it answers
ARP for with the gateway port's MAC); none from a chassis that does not host it."""

from __future__ import annotations

from tests.apps.test_gateway import GW, MAC_GW, PATCH
from tests.apps.test_port_forwarding import PF_IP, pf_view
from wyvern.controller import frames
from wyvern.controller.neighbours import gateway_announcements


def announced(frame: bytes) -> tuple[str, str, str, str]:
    eth = frames.parse_ethernet(frame)
    assert eth is not None and eth.ethertype == frames.ETH_TYPE_ARP
    arp = frames.parse_arp(eth.payload)
    assert arp is not None
    return eth.dst, arp.sha, arp.spa, arp.tpa


def test_takeover_announces_the_gateway_and_forwarded_addresses() -> None:
    sent = gateway_announcements(pf_view(), "r")
    assert [patch for patch, _ in sent] == [PATCH, PATCH]
    assert sorted(announced(f) for _, f in sent) == sorted(
        ("ff:ff:ff:ff:ff:ff", MAC_GW, ip, ip) for ip in (GW, PF_IP)
    )
    assert gateway_announcements(pf_view(chassis={"hv1": 1, "hv2": 2}), "r") == []
