"""Metering through the simulator: which label rule's flow (the counter) each packet
through a router's gateway hits, after DNAT and before SNAT, as Neutron meters.

Every negative case first shows the same packet passing the router (the probe works),
then that no counting flow of the label saw it."""

from __future__ import annotations

from typing import Any

from tests.apps import scenario as sc
from tests.apps.test_gateway import (
    FAR,
    GW,
    MAC_GW,
    MAC_RI,
    MAC_UP,
    MAC_VM,
    PATCH,
    UPSTREAM,
    VM,
    learn,
    view_of,
)
from wyvern.apps.metering import P_EXCLUDED, direction_of
from wyvern.ir import packet as pk
from wyvern.ir.cookies import encode
from wyvern.ir.simulator import Trace
from wyvern.model.view import LocalView, MeteringLabel


def add_label(
    view: LocalView, id_: str, key: int, rules: list[dict[str, Any]], **extra: Any
) -> None:
    obj = {"id": id_, "_key": key, "project_id": "p1", "shared": False, **extra}
    obj["_rules"] = {r["id"]: r for r in rules}
    view.apply("metering_label", id_, MeteringLabel.from_obj(obj))


def counted(trace: Trace) -> set[tuple[str, str]]:
    """(rule cookie's rule id, direction) of each counting flow the packet hit."""
    out = set()
    for step in trace.steps:
        flow = step.flow
        if step.stage != "meter_count" or flow is None or flow.priority == 0:
            continue
        if flow.priority >= P_EXCLUDED:
            continue
        slot = {name: value for name, value, _ in flow.match}["meter_slot"]
        out.add((RULE_BY_COOKIE[flow.cookie], direction_of(slot)))
    return out


RULE_IDS = ("egress-vms", "ingress-vms", "egress-one-vm", "egress-elsewhere", "egress-dst")
RULE_BY_COOKIE = {encode("metering", r): r for r in RULE_IDS}


def routed_view(**label: Any) -> LocalView:
    view = view_of()
    view.apply("router", "r", sc.record_from_obj("router", {**_router(view), "project_id": "p1"}))
    learn(view, UPSTREAM, MAC_UP)
    return view


def _router(view: LocalView) -> dict[str, Any]:
    """The scenario's router as stored JSON again (view_of builds it without a project)."""
    r = view.routers["r"]
    return {
        "id": "r",
        "_key": r.key,
        "external_gateway_info": {"network_id": "ext", "enable_snat": True},
        "_gw_port_id": "rg",
        "_interfaces": [
            {
                "port_id": i.port_id,
                "network_id": i.network_id,
                "fixed_ips": [
                    {"subnet_id": s, "ip_address": ip, "cidr": c}
                    for s, (ip, c) in zip(i.subnet_ids, i.ips, strict=True)
                ],
            }
            for i in r.interfaces
        ],
    }


def out_and_back(s: sc.Scenario) -> tuple[Trace, Trace]:
    """A TCP SYN from the VM to a far host (SNATed out of the patch port), and the
    SYN-ACK coming back to the gateway address (un-SNATed to the VM)."""
    out = s.run(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.output_ports == [PATCH], out.format()
    back = s.run(pk.tcp(PATCH, MAC_UP, MAC_GW, FAR, GW, 80, 40000, flags="SA"))
    assert back.output_ports == [1], back.format()
    return out, back


def test_egress_and_ingress_counted_after_dnat_before_snat() -> None:
    view = routed_view()
    s = sc.Scenario(view)
    before = out_and_back(s)
    assert counted(before[0]) == counted(before[1]) == set()  # (no label yet)
    add_label(view, "L1", 3, [
        {"id": "egress-vms", "direction": "egress", "remote_ip_prefix": "10.0.0.0/24"},
        {"id": "ingress-vms", "direction": "ingress", "remote_ip_prefix": "10.0.0.0/24"},
    ])  # fmt: skip
    s = sc.Scenario(view)
    out, back = out_and_back(s)
    # egress: matched on the VM's own source (before SNAT); ingress: on the VM as the
    # destination (after un-SNAT), as Neutron's remote_ip_prefix does
    assert counted(out) == {("egress-vms", "egress")}, out.format()
    assert counted(back) == {("ingress-vms", "ingress")}, back.format()
    stages = out.stages()
    assert stages.index("meter_egress") < stages.index("snat")
    assert back.stages().index("dnat") < back.stages().index("meter_ingress")


def test_excluded_and_unmatched_rules_count_nothing() -> None:
    view = routed_view()
    add_label(view, "L1", 3, [
        {"id": "egress-vms", "direction": "egress", "remote_ip_prefix": "10.0.0.0/24"},
        {"id": "egress-one-vm", "direction": "egress", "excluded": True,
         "source_ip_prefix": f"{VM}/32"},
    ])  # fmt: skip
    add_label(view, "L2", 4, [
        {"id": "egress-elsewhere", "direction": "egress", "remote_ip_prefix": "10.9.0.0/24"},
    ])  # fmt: skip
    add_label(view, "L3", 5, [
        {"id": "egress-dst", "direction": "egress", "destination_ip_prefix": f"{FAR}/32",
         "source_ip_prefix": "10.0.0.0/8"},
    ])  # fmt: skip
    s = sc.Scenario(view)
    out, _ = out_and_back(s)  # the probe passes the router
    # L3 counts it (so meter_count is reached); L1 excludes it, L2 does not match it
    assert counted(out) == {("egress-dst", "egress")}, out.format()


def test_labels_of_other_projects_count_only_when_shared() -> None:
    view = routed_view()
    rules = [{"id": "egress-vms", "direction": "egress", "remote_ip_prefix": "10.0.0.0/24"}]
    add_label(view, "L1", 3, rules, project_id="p2")
    s = sc.Scenario(view)
    assert counted(out_and_back(s)[0]) == set()
    add_label(view, "L1", 3, rules, project_id="p2", shared=True)
    s = sc.Scenario(view)
    assert counted(out_and_back(s)[0]) == {("egress-vms", "egress")}


def test_east_west_traffic_is_not_metered() -> None:
    """Only what crosses the gateway counts: a packet to the router's own internal
    address is answered without leaving by the external network."""
    view = routed_view()
    add_label(view, "L1", 3, [
        {"id": "egress-vms", "direction": "egress", "remote_ip_prefix": "0.0.0.0/0"},
        {"id": "ingress-vms", "direction": "ingress", "remote_ip_prefix": "0.0.0.0/0"},
    ])  # fmt: skip
    s = sc.Scenario(view)
    assert counted(out_and_back(s)[0]) == {("egress-vms", "egress")}  # (the probe)
    ping = s.run(pk.icmp_echo(1, MAC_VM, MAC_RI, VM, "10.0.0.1"))
    assert ping.output_ports == [1], ping.format()
    assert counted(ping) == set()
