"""The OVN comparison's pure helpers: the plan, both NB translations, the table.

No systems are started here (benchmarks are not tests): these check that both sides are
asked for the same topology and that the table reports ratios the right way round.
"""

from __future__ import annotations

import ipaddress

import pytest

from benchmarks.ovn_peer import acl_row, fip_ops, infra_ops
from benchmarks.topology import (
    EXT_CIDR,
    EXT_GATEWAY,
    EXT_UPSTREAM,
    SCENARIOS,
    SG_RULES,
    Figure,
    Plan,
    differences,
    expected,
    extra_port,
    fip_ip,
    fip_mac,
    guard_ports,
    port_ip,
    port_mac,
    render_table,
)
from benchmarks.vs_ovn import dnat_targets


def test_scenarios_are_the_issue_s() -> None:
    assert [(p.ports, p.networks, p.routers, p.security_group) for p in SCENARIOS.values()] == [
        (1000, 1, 0, False),
        (1000, 10, 1, False),
        (5000, 50, 5, True),
        (1000, 10, 1, False),
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
        lrps = [op["row"] for op in ops if op["table"] == "Logical_Router_Port"]
        gateways = sum(1 for r in lrps if "gateway_chassis" in r)
        found = {
            "networks": tables.count("Logical_Switch"),
            "vm_ports": plan.ports,  # added in bulk by port_ops, one LSP per port
            "routers": tables.count("Logical_Router"),
            "router_interfaces": len(lrps) - gateways,
            "sg_rules": len(pg["acls"][1]) if pg else 0,
            "ports_in_sg": plan.ports if pg else 0,
            "router_gateways": gateways,
            "floating_ips": len(fip_ops(plan, list(range(plan.ports)))) - 1 if gateways else 0,
        }
        assert differences(plan, found) == [], plan.name
        # a router port on each internal switch, the localnet and the router's on the external
        assert len(lrps) + gateways == tables.count("Logical_Switch_Port")


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


def test_floating_ip_scenario_addresses() -> None:
    """Scenario 4's floating IPs (and their MACs on the OVN side) are unique, on the
    external subnet, clear of its upstream router and gateway, for every port it uses."""
    plan = SCENARIOS["4"]
    assert (plan.ports, plan.networks, plan.routers, plan.floating_ips) == (1000, 10, 1, True)
    ext = ipaddress.ip_network(EXT_CIDR)
    ports = [*range(plan.ports), *(extra_port(plan, i) for i in range(20))]
    fips = {fip_ip(k) for k in ports}
    assert len(fips) == len(ports) == len({fip_mac(k) for k in ports})
    assert all(ipaddress.ip_address(ip) in ext for ip in fips)
    assert not fips & {EXT_UPSTREAM, EXT_GATEWAY}
    assert not any(ipaddress.ip_address(port_ip(plan, k)) in ext for k in ports)
    with pytest.raises(ValueError):
        fip_ip(1 << 16)


def test_ovn_gateway_and_floating_ip_rows() -> None:
    """The OVN side of scenario 4: an external switch (localnet + router port), a gateway
    port on the chassis, one SNAT per internal subnet, one distributed NAT per port."""
    plan = SCENARIOS["4"]
    ops = infra_ops(plan, "ch1")
    inserts = [op for op in ops if op["op"] == "insert"]
    tables = [op["table"] for op in inserts]
    assert tables.count("Logical_Switch") == expected(plan)["networks"] == 11
    assert tables.count("Logical_Router_Port") == plan.networks + 1
    (gwc,) = [op["row"] for op in inserts if op["table"] == "Gateway_Chassis"]
    assert gwc["chassis_name"] == "ch1"
    snats = [op["row"] for op in inserts if op["table"] == "NAT"]
    assert {r["type"] for r in snats} == {"snat"} and len(snats) == plan.networks
    (router,) = [op["row"] for op in inserts if op["table"] == "Logical_Router"]
    assert len(router["nat"][1]) == plan.networks and len(router["ports"][1]) == 11

    rows = [op["row"] for op in fip_ops(plan, [0, 7]) if op["op"] == "insert"]
    assert rows[1] == {
        "type": "dnat_and_snat",
        "external_ip": fip_ip(7),
        "logical_ip": port_ip(plan, 7),
        "logical_port": "p7",
        "external_mac": fip_mac(7),
    }
    with pytest.raises(ValueError):
        infra_ops(Plan("two routers", 10, 2, 2, floating_ips=True))


def test_dnat_targets_reads_both_systems_flows() -> None:
    """The DNAT flow of a floating IP as each system writes it (OVN 23.03's lr_in_dnat and
    Wyvern's dnat stage), and flows that are not one (unSNAT, ARP, port forwarding)."""
    dump = "\n".join(
        [
            " cookie=0x1, table=14, priority=100,ip,reg14=0x1,metadata=0x3,nw_dst=172.16.1.0"
            " actions=ct(commit,table=15,zone=NXM_NX_REG11[0..15],nat(dst=10.0.0.10))",
            " cookie=0x2, table=30, priority=110,ip,metadata=0x2,reg6=0x5,nw_dst=172.16.1.7"
            " actions=ct_clear,ct(commit,table=31,zone=3,nat(dst=10.7.0.10))",
            " cookie=0x3, table=13, priority=100,ip,metadata=0x3,nw_dst=172.16.1.8"
            " actions=ct(table=14,zone=NXM_NX_REG12[0..15],nat)",
            " cookie=0x4, table=9, priority=90,arp,metadata=0x3,arp_tpa=172.16.1.9,arp_op=1"
            " actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            " cookie=0x5, table=30, priority=120,tcp,nw_dst=172.16.1.10,tp_dst=80"
            " actions=ct(commit,table=31,zone=3,nat(dst=10.0.0.11:8080))",
        ]
    )
    assert dnat_targets(dump) == {
        ("172.16.1.0", "10.0.0.10"),
        ("172.16.1.7", "10.7.0.10"),
        ("172.16.1.10", "10.0.0.11"),
    }
