"""Classification: in_port → port key, network key and conntrack zone."""

from __future__ import annotations

from tests.apps import scenario as sc
from wyvern.apps.classifier import Classifier
from wyvern.apps.common import port_ct_zone
from wyvern.ir import Load, Meter
from wyvern.ir import packet as pk

MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"


def test_local_ports_are_classified_with_unique_zones() -> None:
    view = sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A),
            sc.port("x", "n2", key=1, mac=MAC_A),  # same key in another network
            sc.port("remote", "n1", key=2, mac=MAC_B),
        ],
        local={"a": 5, "x": 6},
    )
    app = Classifier()
    assert sorted(o for o in app.owners(view) if o[0] == "port") == [("port", "a"), ("port", "x")]
    assert app.flows(view, ("port", "remote")) == []
    loads = {}
    for pid in ("a", "x"):
        flow, metered = app.flows(view, ("port", pid))
        assert flow.stage == "classification"
        # Its punts go through a meter of its own (the ofport's).
        assert metered.stage == "punt_meter" and metered.actions[0] == Meter({"a": 5, "x": 6}[pid])
        loads[pid] = {a.register: a.value for a in flow.actions if isinstance(a, Load)}
    assert loads["a"]["src_port_key"] == loads["x"]["src_port_key"] == 1
    assert (loads["a"]["network_key"], loads["x"]["network_key"]) == (100, 200)
    zones = {loads["a"]["port_ct_zone"], loads["x"]["port_ct_zone"]}
    assert len(zones) == 2 and 0 not in zones
    assert port_ct_zone(view, "a") == loads["a"]["port_ct_zone"]
    assert port_ct_zone(view, "remote") is None


def test_classified_packet_carries_keys_to_the_next_stage() -> None:
    view = sc.build_view(
        networks=[sc.network("n1", key=100)],
        ports=[sc.port("a", "n1", key=7, mac=MAC_A, port_security_enabled=False)],
        local={"a": 3},
    )
    trace = sc.Scenario(view, apps=sc.l2_apps()).run(
        pk.icmp_echo(3, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")
    )
    stages = ["classification", "qos_from_vm", "qos_from_vm_pps", "port_security"]
    assert trace.stages()[:4] == stages, trace.format()  # (no QoS policy: its misses)


def test_admin_down_network_or_port_is_not_classified() -> None:
    view = sc.build_view(
        networks=[sc.network("n1", key=100, admin_state_up=False)],
        ports=[sc.port("a", "n1", key=1, mac=MAC_A)],
        local={"a": 3},
    )
    assert Classifier().flows(view, ("port", "a")) == []
    trace = sc.Scenario(view, apps=sc.l2_apps()).run(
        pk.icmp_echo(3, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")
    )
    assert trace.dropped and trace.stages() == ["classification"]
