"""QoS through the simulator: which meters a packet passes, its DSCP, and what the
southbound is asked to configure (wyvern.apps.qos)."""

from __future__ import annotations

from tests.apps import scenario as sc
from wyvern.apps.qos import wanted_meters
from wyvern.ir import packet as pk
from wyvern.ir.meters import MeterSpec, qos_meter
from wyvern.model.view import LocalView

MAC_A, MAC_B, MAC_C = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
BW_OUT = {"type": "bandwidth_limit", "max_kbps": 3000, "direction": "egress"}
BW_IN = {"type": "bandwidth_limit", "max_kbps": 5000, "max_burst_kbps": 600, "direction": "ingress"}
PPS_OUT = {"type": "packet_rate_limit", "max_kpps": 2, "direction": "egress"}
PPS_IN = {"type": "packet_rate_limit", "max_kpps": 1, "direction": "ingress"}
DSCP = {"type": "dscp_marking", "dscp_mark": 26}


def view(port_policy: str | None = None, net_policy: str | None = None) -> LocalView:
    """n1: a (ofport 1, the policy under test), b (2), both local; c (3) owned by the
    network (a router interface)."""
    extra = {"qos_policy_id": port_policy} if port_policy else {}
    return sc.build_view(
        networks=[sc.network("n1", key=100, qos_policy_id=net_policy)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24"), sc.subnet("s6", "n1", "fd00::/64")],
        qos_policies=[
            sc.qos_policy("all", BW_OUT, BW_IN, PPS_OUT, PPS_IN, DSCP),
            sc.qos_policy("dscp", DSCP),
            sc.qos_policy("in", BW_IN),
            sc.qos_policy("zero", {**BW_OUT, "max_kbps": 0}),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5", "fd00::5"], **extra),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6", "fd00::6"]),
            sc.port(
                "c",
                "n1",
                key=3,
                mac=MAC_C,
                ips=["10.0.0.1"],
                device_owner="network:router_interface",
                port_security_enabled=False,
            ),
        ],
        local={"a": 1, "b": 2, "c": 3},
    )


def a_to_b() -> pk.Packet:
    return pk.tcp(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6", 40000, 22)


def b_to_a() -> pk.Packet:
    return pk.tcp(2, MAC_B, MAC_A, "10.0.0.6", "10.0.0.5", 22, 40000, "SA")


def test_no_policy_no_meter_and_no_mark() -> None:
    s = sc.Scenario(view(), apps=sc.default_apps())
    out = s.outcome(a_to_b())
    assert out.ports == [2] and out.trace.meters == [], out.trace.format()
    assert out.packets[2]["ip_dscp"] == 0
    assert wanted_meters(s.view) == {}


def test_every_rule_of_a_port_policy_in_both_directions() -> None:
    s = sc.Scenario(view(port_policy="all"), apps=sc.default_apps())
    out = s.outcome(a_to_b())
    assert out.ports == [2], out.trace.format()
    assert out.trace.meters == [qos_meter("bw_from_vm", 1), qos_meter("pps_from_vm", 1)]
    assert out.packets[2]["ip_dscp"] == 26
    back = s.outcome(b_to_a())
    assert back.ports == [1], back.trace.format()
    assert back.trace.meters == [qos_meter("bw_to_vm", 1), qos_meter("pps_to_vm", 1)]
    assert back.packets[1]["ip_dscp"] == 0  # (marks what the VM sends only)
    # ARP is metered too (the VM's whole egress), and not marked (no IP header).
    arp = s.outcome(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.6"))
    assert qos_meter("bw_from_vm", 1) in arp.trace.meters, arp.trace.format()
    # Bursts: the rule's, else 80% of the rate (Neutron's advice for TCP); kpps x 1000.
    assert wanted_meters(s.view) == {
        qos_meter("bw_from_vm", 1): MeterSpec("kbps", 3000, 2400),
        qos_meter("bw_to_vm", 1): MeterSpec("kbps", 5000, 600),
        qos_meter("pps_from_vm", 1): MeterSpec("pktps", 2000, 1600),
        qos_meter("pps_to_vm", 1): MeterSpec("pktps", 1000, 800),
    }


def test_a_network_policy_applies_to_its_vm_ports_not_to_network_owned_ones() -> None:
    s = sc.Scenario(view(net_policy="in"), apps=sc.default_apps())
    assert s.outcome(b_to_a()).trace.meters == [qos_meter("bw_to_vm", 1)]
    assert s.outcome(a_to_b()).trace.meters == [qos_meter("bw_to_vm", 2)]
    assert set(wanted_meters(s.view)) == {qos_meter("bw_to_vm", 1), qos_meter("bw_to_vm", 2)}


def test_a_port_policy_overrides_its_networks() -> None:
    s = sc.Scenario(view(port_policy="dscp", net_policy="in"), apps=sc.default_apps())
    out = s.outcome(a_to_b())
    assert out.packets[2]["ip_dscp"] == 26
    assert out.trace.meters == [qos_meter("bw_to_vm", 2)]  # b: its network's
    assert s.outcome(b_to_a()).trace.meters == []  # a: its own, which limits nothing
    v6 = pk.tcp(1, MAC_A, MAC_B, "fd00::5", "fd00::6", 40000, 22)
    out6 = s.outcome(v6)
    assert out6.packets[2]["ip_dscp"] == 26, out6.trace.format()


def test_a_zero_rate_limits_nothing() -> None:
    s = sc.Scenario(view(port_policy="zero"), apps=sc.default_apps())
    assert s.outcome(a_to_b()).trace.meters == []
    assert wanted_meters(s.view) == {}


def test_policy_changes_follow_incrementally() -> None:
    """A rule added to the policy, the policy detached: flows and meters follow (the
    engine's incremental == full recompute for QoS: tests/controller/test_engine.py)."""
    v = view()
    s = sc.Scenario(v, apps=sc.default_apps())
    port = sc.port("a", "n1", key=1, mac=MAC_A, ips=[("s1", "10.0.0.5")], qos_policy_id="dscp")
    v.apply("port", "a", sc.record_from_obj("port", port))
    s.refresh()
    assert s.outcome(a_to_b()).packets[2]["ip_dscp"] == 26
    changed = sc.qos_policy("dscp", DSCP, BW_OUT)
    v.apply("qos_policy", "dscp", sc.record_from_obj("qos_policy", changed))
    s.refresh()
    assert s.outcome(a_to_b()).trace.meters == [qos_meter("bw_from_vm", 1)]
    v.apply("port", "a", sc.record_from_obj("port", {**port, "qos_policy_id": None}))
    s.refresh()
    out = s.outcome(a_to_b())
    assert out.trace.meters == [] and out.packets[2]["ip_dscp"] == 0
