"""The OVN comparison's pure helpers: the plan, both NB translations, the table.

No systems are started here (benchmarks are not tests): these check that both sides are
asked for the same topology and that the table reports ratios the right way round.
"""

from __future__ import annotations

import ipaddress

from benchmarks.ovn_peer import acl_row, infra_ops
from benchmarks.topology import (
    SCENARIOS,
    SG_RULES,
    Figure,
    differences,
    expected,
    extra_port,
    guard_ports,
    port_ip,
    port_mac,
    render_table,
)


def test_scenarios_are_the_issue_s() -> None:
    assert [(p.ports, p.networks, p.routers, p.security_group) for p in SCENARIOS.values()] == [
        (1000, 1, 0, False),
        (1000, 10, 1, False),
        (5000, 50, 5, True),
    ]
    assert len(SG_RULES) == 10
    assert SCENARIOS["2"].ping_guard


def test_addresses_are_unique_and_inside_their_network() -> None:
    plan = SCENARIOS["3"]
    ports = [*range(plan.ports), *(extra_port(plan, i) for i in range(20)), *guard_ports(plan)]
    assert len({port_mac(k) for k in ports}) == len(ports)
    assert len({port_ip(plan, k) for k in ports}) == len(ports)
    for k in ports:
        net = ipaddress.ip_network(f"10.{plan.network_of(k)}.0.0/16")
        assert ipaddress.ip_address(port_ip(plan, k)) in net
    a, b = guard_ports(plan)
    assert (plan.network_of(a), plan.network_of(b)) == (0, 1)


def test_scaling_keeps_the_shape() -> None:
    small = SCENARIOS["3"].scaled(0.05)
    assert (small.ports, small.networks, small.routers) == (250, 50, 5)
    assert {small.router_of(s) for s in range(small.networks)} == set(range(5))


def test_ovn_rows_describe_the_plan() -> None:
    """Counting the NB rows the OVN side writes gives the plan's expected description."""
    for plan in SCENARIOS.values():
        ops = infra_ops(plan)
        tables = [op["table"] for op in ops if op["op"] == "insert"]
        pg = next((op["row"] for op in ops if op["table"] == "Port_Group"), None)
        found = {
            "networks": tables.count("Logical_Switch"),
            "vm_ports": plan.ports,  # added in bulk by port_ops, one LSP per port
            "routers": tables.count("Logical_Router"),
            "router_interfaces": tables.count("Logical_Router_Port"),
            "sg_rules": len(pg["acls"][1]) if pg else 0,
            "ports_in_sg": plan.ports if pg else 0,
        }
        assert differences(plan, found) == [], plan.name
        assert expected(plan)["router_interfaces"] == tables.count("Logical_Switch_Port")


def test_acl_translation() -> None:
    by_match = [acl_row(rule)["match"] for rule in SG_RULES]
    assert by_match[0] == "inport == @bench_sg && ip4"
    assert "tcp.dst >= 8000 && tcp.dst <= 8100" in by_match[6]
    assert "ip4.src == 10.0.0.0/8" in by_match[8]
    assert by_match[9] == "outport == @bench_sg && ip4 && ip4.src == $bench_sg_ip4"
    assert {acl_row(r)["action"] for r in SG_RULES} == {"allow-related"}


def test_table_ratio_is_wyvern_over_ovn() -> None:
    rows = [
        Figure("1", "time to installed", "s", 2.0, 0.5, goal=0.5),
        Figure("1", "flows per port", "", 10.0, 8.0, goal=0.7),
        Figure("1", "no OVN figure", "s", None, 1.0),
    ]
    assert rows[0].ratio == 0.25 and rows[0].verdict == "met"
    assert rows[1].verdict == "MISSED"
    assert rows[2].ratio is None
    text = render_table(rows)
    assert "0.25x" in text and "0.80x" in text and "MISSED" in text
    assert text.splitlines()[2] == "scenario 1"


def test_port_macs_are_read_from_both_systems_dumps() -> None:
    """How vs_ovn tells that every port's L2 lookup flow is in (OVS prints dl_dst for
    OVN's flows and ours; eth_dst in case a newer ovs-ofctl does)."""
    from benchmarks.vs_ovn import _DST_MAC

    dump = (
        " cookie=0x9, table=27, priority=50,metadata=0x1,dl_dst=fa:16:3e:00:00:0a "
        "actions=set_field:0x3->reg15,resubmit(,37)\n"
        " cookie=0x1, table=8, priority=100,eth_dst=fa:16:3e:00:01:ff actions=drop\n"
        " cookie=0x2, table=9, priority=100,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 "
        "actions=drop\n"
    )
    assert set(_DST_MAC.findall(dump)) == {
        "fa:16:3e:00:00:0a",
        "fa:16:3e:00:01:ff",
        "01:00:00:00:00:00",
    }
