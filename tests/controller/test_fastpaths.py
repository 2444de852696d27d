"""The speed-ups (memos, cached validation, rendered-line deltas) never change a result.

Each fast path is checked against the slow one it replaces: a warm render against a cold
one, byte for byte; memoised match values against the uncached parser; a flow whose shape
was validated once is still refused when it is invalid; and the engine's added/removed
lines are exactly the set difference between two renders.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.apps import scenario as sc
from wyvern import ir
from wyvern.controller.engine import Engine, compute_full, fingerprints_full, rendered_full
from wyvern.ir import Goto, IRError, Output, match, render, table
from wyvern.ir.cookies import encode
from wyvern.model.view import Binding, LocalView, record_from_obj
from wyvern.southbound.flowtext import FlowChanges, rendered_cookie
from wyvern.southbound.recorder import RecordingInstaller


def _mac(i: int) -> str:
    return f"fa:16:3e:00:{i >> 8:02x}:{i & 0xFF:02x}"


def busy_view(n_ports: int = 24) -> LocalView:
    """Two networks on a router, ports in two groups with remote-group rules, a pair."""
    nets = [sc.network("n1", key=10), sc.network("n2", key=11)]
    subnets = [
        sc.subnet("s1", "n1", "10.0.1.0/24"),
        sc.subnet("s2", "n2", "10.0.2.0/24"),
        sc.subnet("s6", "n1", "fd00:1::/64"),
    ]
    ports: list[dict[str, Any]] = [
        sc.router_port("r1a", "n1", 1, "fa:16:3f:00:00:01", "10.0.1.1", "r1"),
        sc.router_port("r1b", "n2", 1, "fa:16:3f:00:00:02", "10.0.2.1", "r1"),
    ]
    for i in range(n_ports):
        net = "n1" if i % 2 else "n2"
        ips = [f"10.0.{1 if i % 2 else 2}.{i + 10}"]
        if i % 4 == 1:
            ips.append(f"fd00:1::{i + 10:x}")
        ports.append(
            sc.port(
                f"p{i}",
                net,
                key=i + 2,
                mac=_mac(i),
                ips=ips,
                security_groups=["sg1" if i % 3 else "sg2"],
                allowed_address_pairs=[{"ip_address": "10.0.9.0/24"}] if i == 5 else [],
            )
        )
    rules = [
        sc.rule("r-eg", "sg1", "egress"),
        sc.rule("r-ssh", "sg1", "ingress", protocol="tcp", port_range_min=22, port_range_max=22),
        sc.rule(
            "r-rg",
            "sg1",
            "ingress",
            protocol="tcp",
            port_range_min=80,
            port_range_max=90,
            remote_group_id="sg2",
        ),
        sc.rule("r-self", "sg2", "ingress", remote_group_id="sg2"),
        sc.rule("r-icmp6", "sg2", "ingress", ethertype="IPv6", protocol="icmp"),
    ]
    return sc.build_view(
        networks=nets,
        subnets=subnets,
        ports=ports,
        routers=[sc.router("r1", key=1)],
        security_groups=[sc.security_group("sg1"), sc.security_group("sg2", stateful=False)],
        rules=rules,
        local={f"p{i}": i + 1 for i in range(n_ports)},
    )


def all_flows(view: LocalView) -> list[ir.Flow]:
    return [f for fl in compute_full(sc.default_apps(), view).values() for f in fl]


def test_warm_render_is_byte_for_byte_the_cold_render() -> None:
    flows = all_flows(busy_view())
    assert len(flows) > 300
    render.clear_caches()
    cold = []
    for f in flows:
        render.clear_caches()
        cold.append(render.render_flow(f))
    warm = [render.render_flow(f) for f in flows]
    warm_again = [render.render_flow(f) for f in reversed(flows)][::-1]
    assert warm == cold == warm_again
    # the parts are where an installer reads them, and a cookie given replaces the flow's
    for f, line in zip(flows, cold, strict=True):
        match = render.render_match(f.match)
        head = f"table={f.table},priority={f.priority},cookie={f.cookie:#x}"
        assert line == f"{head}{',' + match if match else ''} actions=" + render.render_actions(
            f.actions
        )
        assert render.render_flow(f, 0xABC) == line.replace(
            f"cookie={f.cookie:#x}", "cookie=0xabc", 1
        )


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("src_port_key", 1),
        ("src_port_key", True),
        ("src_port_key", "1"),
        ("src_port_key", "0x1"),
        ("src_port_key", (1, 0xFF)),
        ("eth_src", "fa:16:3e:00:00:01"),
        ("eth_src", "FA:16:3E:00:00:01"),
        ("eth_dst", ("01:00:00:00:00:00", "01:00:00:00:00:00")),
        ("ipv4_src", "10.0.0.5"),
        ("ipv4_src", "10.0.0.0/8"),
        ("ipv4_src", ipaddress.ip_network("10.0.0.0/8")),
        ("ipv4_src", ipaddress.ip_address("10.0.0.5")),
        ("ipv6_src", "fd00::1"),
        ("ipv6_src", ipaddress.ip_network("fe80::/64")),
        ("ct_state", "+trk-new"),
        ("network_key", 5),
    ],
)
def test_memoised_values_equal_the_uncached_parser(name: str, raw: Any) -> None:
    ir.fields._PARSED.clear()
    ir.matches._ITEMS.clear()
    want = ir.parse_value_uncached(name, raw)
    for _ in range(2):
        assert ir.parse_value(name, raw) == want
        m = match(**{name: raw})
        assert m.get(name) == (
            want[0],
            None if want[1] == (1 << ir.fields._BITS[name]) - 1 else want[1],
        )


def test_memos_never_swallow_an_error() -> None:
    assert match(ipv4_src="10.0.0.1").exact("eth_type") == ir.ETH_TYPE_IP
    for _ in range(2):
        with pytest.raises(IRError):
            match(ipv4_src="10.0.0.1", eth_type=ir.ETH_TYPE_IPV6)
        with pytest.raises(IRError):
            match(ipv4_src="10.0.0.1", ipv6_src="fd00::1")
        with pytest.raises(IRError):
            match(in_port=0)
        with pytest.raises(IRError):
            match(ipv4_src="not an address")
        with pytest.raises(IRError):
            match(eth_type=("0x800", "0xff00"))  # not maskable
        with pytest.raises(IRError):
            match(nd_target="fd00::1")  # icmpv6_type ambiguous
    # one spelling of a value does not stand in for another type's
    assert match(src_port_key=True) == match(src_port_key=1)
    with pytest.raises(IRError):
        match(src_port_key=[1])  # type: ignore[arg-type]


def test_a_validated_shape_still_refuses_invalid_flows() -> None:
    good = table("l2_lookup").flow(
        priority=10,
        cookie=encode("l2", "x"),
        match=match(network_key=1, eth_dst=_mac(1)),
        actions=(Output(5),),
    )
    good.validate()
    for _ in range(2):
        with pytest.raises(IRError, match="owned by"):  # same shape, another app's cookie
            table("l2_lookup").flow(
                priority=10,
                cookie=encode("l3", "x"),
                match=match(network_key=1, eth_dst=_mac(2)),
                actions=(Output(5),),
            )
        with pytest.raises(IRError):  # same shape, a bad port
            table("l2_lookup").flow(
                priority=10,
                cookie=encode("l2", "x"),
                match=match(network_key=1, eth_dst=_mac(2)),
                actions=(Output(0),),
            )
        with pytest.raises(IRError, match="priority"):
            table("l2_lookup").flow(
                priority=70000,
                cookie=encode("l2", "x"),
                match=match(network_key=1, eth_dst=_mac(2)),
                actions=(Output(5),),
            )
        with pytest.raises(IRError):  # goes backwards
            table("l2_lookup").flow(
                priority=10, cookie=encode("l2", "x"), actions=(Goto("classification"),)
            )
    # every flow the apps build passes the uncached checks too
    for f in all_flows(busy_view(8)):
        f.validate()


def test_each_render_replaces_only_the_entries_that_changed() -> None:
    view = busy_view()
    engine = Engine(sc.default_apps())
    engine.full(view)
    first = engine.render()
    assert first.complete and not first.replaced
    switch = RecordingInstaller()
    switch.apply(first)
    total = len(switch.by_cookie)

    def step(kind: str, id_: str, record: Any) -> None:
        engine.apply(view, view.apply(kind, id_, record))  # type: ignore[arg-type]
        before = {c: sorted(lines) for c, lines in switch.by_cookie.items()}
        changes = engine.render()
        assert not changes.complete
        switch.apply(changes)
        full = rendered_full(sc.default_apps(), view)
        assert switch.installed == {line for lines in full.values() for line in lines}
        after = {c: sorted(lines) for c, lines in switch.by_cookie.items()}
        # exactly the entries that differ are replaced, and they are few
        differ = {c for c in before.keys() | after.keys() if before.get(c) != after.get(c)}
        sent = {*changes.replaced, *(rendered_cookie(x) for x in changes.lines())}
        assert sent == differ and 0 < len(sent) < total // 4, (len(sent), total)

    new = sc.port(
        "new", "n1", key=99, mac=_mac(99), ips=[("s1", "10.0.1.99")], security_groups=["sg2"]
    )
    step("port", "new", record_from_obj("port", new))
    view.port_chassis["new"] = view.chassis_name
    step("binding", "new", Binding("new", 99))
    step("binding", "p3", None)
    step("port", "p3", None)
    step("security_group_rule", "r-self", None)
    step("port", "new", None)
    # nothing changed: nothing to send
    assert not engine.render()


def test_no_two_entries_write_one_flow_identity() -> None:
    from tests.controller.test_engine import assert_one_entry_per_identity

    view = busy_view()
    full = rendered_full(sc.default_apps(), view)
    assert sum(map(len, full.values())) > 300  # (the probe: a busy table)
    assert_one_entry_per_identity(full)
    twice = {("a", ("x", "1")): ["table=1,priority=5,cookie=0x1,ip actions=drop"]}
    twice[("b", ("x", "2"))] = ["table=1,priority=5,cookie=0x2,ip actions=drop"]
    with pytest.raises(AssertionError):  # the check itself catches a conflict
        assert_one_entry_per_identity(twice)


def test_flow_changes_lines_come_from_their_blocks() -> None:
    changes = FlowChanges(replaced=[1], text=["a\nb", "", "c"])
    assert list(changes.lines()) == ["a", "b", "c"] and changes.flow_count == 3
    assert changes and FlowChanges(complete=True) and not FlowChanges()


def test_apply_all_computes_each_owner_once_and_equals_a_full_recompute() -> None:
    view = busy_view()
    apps = sc.default_apps()
    engine = Engine(apps)
    engine.full(view)
    new = sc.port(
        "new", "n2", key=98, mac=_mac(98), ips=[("s2", "10.0.2.98")], security_groups=["sg1"]
    )
    view.port_chassis["new"] = view.chassis_name
    batches: list[list[tuple[Any, str, Any]]] = [
        [("port", "new", record_from_obj("port", new)), ("binding", "new", Binding("new", 98))],
        [("binding", "p4", None), ("port", "p4", None)],
        [("security_group_rule", "r-rg", None), ("binding", "new", None)],
    ]
    for batch in batches:
        changes = [view.apply(kind, id_, record) for kind, id_, record in batch]
        assert engine.apply_all(view, changes) > 0
        assert engine.fingerprints() == fingerprints_full(apps, view)
