"""The installer's path for an engine's changes (FlowChanges), against real OVS.

Every flow of an engine entry carries the entry's cookie: a change replaces the entry by
cookie, and a complete set is compared with the switch entry by entry. Either way the
switch must end up exactly as the canonical path (sync of the whole set) leaves it, and
the installer keeps nothing per flow.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from tests.apps import scenario as sc
from tests.controller.test_fastpaths import busy_view
from wyvern.controller.engine import Engine, cookie_of
from wyvern.model.view import Binding, record_from_obj
from wyvern.southbound.flowtext import FlowChanges, canonicalize, parse_dump, rendered_cookie
from wyvern.southbound.installer import FlowInstaller, FlowInstallError, SwitchUnknownError
from wyvern.southbound.ovs import OvsInstance


def dump(ovs: OvsInstance) -> set[str]:
    out = ovs.ofctl("-O", "OpenFlow14", "--no-names", "--no-stats", "dump-flows", "br-int")
    return {f.spec() for f in parse_dump(out)}


def specs(lines: list[str]) -> set[str]:
    return {f.spec() for f in canonicalize(sorted(set(lines)))}


def desired(engine: Engine, view: object) -> list[str]:
    """The engine's whole desired set as lines, from a fresh engine over the same view."""
    fresh = Engine(sc.default_apps())
    fresh.full(view)  # type: ignore[arg-type]
    return list(fresh.render().lines())


@pytest.mark.system
def test_changes_install_and_update_exactly(ovs: OvsInstance) -> None:
    view = busy_view(12)
    engine = Engine(sc.default_apps())
    engine.full(view)
    installer = FlowInstaller(ovs)
    changes = engine.render()
    assert changes.complete
    sc.add_meters(ovs, {*(b.ofport for b in view.bindings.values()), 99})  # (port "new": 99)
    first = installer.apply(changes)
    lines = list(changes.lines())
    assert first.added == len(lines) and first.deleted == 0
    assert dump(ovs) == specs(lines)

    # a port comes: only the entries it changes travel, and the switch equals the new set
    new = sc.port(
        "new",
        "n1",
        key=99,
        mac="fa:16:3e:00:00:99",
        ips=[("s1", "10.0.1.99")],
        security_groups=["sg2"],
    )
    engine.apply(view, view.apply("port", "new", record_from_obj("port", new)))
    view.port_chassis["new"] = view.chassis_name
    engine.apply(view, view.apply("binding", "new", Binding("new", 99)))
    step = engine.render()
    assert not step.complete and 0 < step.flow_count < len(lines) // 4
    installer.apply(step)
    assert dump(ovs) == specs(desired(engine, view))

    # a port goes: its entries are deleted by cookie, the others stay
    engine.apply(view, view.apply("binding", "p3", None))
    engine.apply(view, view.apply("port", "p3", None))
    gone = engine.render()
    assert gone.replaced
    installer.apply(gone)
    assert dump(ovs) == specs(desired(engine, view))

    # nothing changed: nothing is sent
    nothing = installer.apply(engine.render())
    assert nothing.changed == 0 and nothing.bundle_seconds == 0.0


@pytest.mark.system
def test_a_restarted_installer_replaces_only_the_entries_that_differ(ovs: OvsInstance) -> None:
    view = busy_view(8)
    engine = Engine(sc.default_apps())
    engine.full(view)
    sc.add_meters(ovs, {b.ofport for b in view.bindings.values()})
    FlowInstaller(ovs).apply(engine.render())
    before = dump(ovs)

    # the same set again, as after an agent restart: compared, and nothing sent
    again = Engine(sc.default_apps())
    again.full(view)
    restarted = FlowInstaller(ovs)
    stats = restarted.apply(again.render())
    assert stats.changed == 0 and stats.bundle_seconds == 0.0 and dump(ovs) == before

    # the switch changed meanwhile: a flow of one entry rewritten, a stray flow added
    # (a cookie no entry has), and one entry's flows deleted
    gone = cookie_of(next(iter(again.fingerprints())))
    flows = parse_dump(
        ovs.ofctl("-O", "OpenFlow14", "--no-names", "--no-stats", "dump-flows", "br-int")
    )
    some = next(f for f in flows if f.key.match and f.cookie != gone and f.actions != "drop")
    of = ("-O", "OpenFlow14")
    ovs.ofctl(*of, "add-flow", "br-int", "table=0,priority=1,cookie=0x77,in_port=4 actions=drop")
    ovs.ofctl(*of, "del-flows", "br-int", f"cookie={gone:#x}/-1")
    ovs.ofctl(
        *of,
        "add-flow",
        "br-int",
        f"table={some.key.table},priority={some.key.priority},cookie={some.cookie:#x},"
        f"{some.key.match} actions=drop",
    )
    assert dump(ovs) != before  # (the probe: the switch did change)
    third = Engine(sc.default_apps())
    third.full(view)
    changes = third.render()
    stats = FlowInstaller(ovs).apply(changes)
    assert dump(ovs) == before
    # only the three entries involved travelled (the stray's, the deleted, the rewritten)
    touched = {some.cookie, gone, 0x77}
    per_cookie: dict[int, int] = {}
    for line in changes.lines():
        c = rendered_cookie(line)
        per_cookie[c] = per_cookie.get(c, 0) + 1
    assert stats.added == sum(per_cookie.get(c, 0) for c in touched) < len(before) // 4


@pytest.mark.system
def test_changes_need_a_known_switch(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    line = "table=0,priority=5,cookie=0x1,in_port=1 actions=drop"
    with pytest.raises(SwitchUnknownError):  # nothing applied yet: the switch is unknown
        installer.apply(FlowChanges(text=[line]))
    assert installer.apply(FlowChanges(text=[line], complete=True)).added == 1
    installer.apply(FlowChanges(replaced=[1], text=[line.replace("in_port=1", "in_port=2")]))
    assert dump(ovs) == specs([line.replace("in_port=1", "in_port=2")])
    # a refused bundle changes nothing, and the switch is unknown again
    with pytest.raises(FlowInstallError):
        installer.apply(FlowChanges(replaced=[1], text=["table=0,priority=5,cookie=0x1,bad=1"]))
    assert dump(ovs) == specs([line.replace("in_port=1", "in_port=2")])
    with pytest.raises(SwitchUnknownError):
        installer.apply(FlowChanges(text=[line]))
    installer.mark_stale()
    assert installer.apply(FlowChanges(text=[line], complete=True)).added == 1
    assert dump(ovs) == specs([line])


@pytest.mark.system
def test_applying_keeps_nothing_per_flow(ovs: OvsInstance) -> None:
    n = 20_000
    text = "\n".join(
        f"table=10,priority=100,cookie={i // 4 + 1:#x},reg0={i},ip,"
        f"nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} "
        f"actions=load:{i}->NXM_NX_REG1[],resubmit(,11)"
        for i in range(n)
    )
    installer = FlowInstaller(ovs)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stats = installer.apply(FlowChanges(text=[text], complete=True))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stats.added == n
    assert f"flow_count={n}" in ovs.ofctl("-O", "OpenFlow14", "dump-aggregate", "br-int")
    print(f"\ninstaller: {kept} B kept for {n} flows")
    assert kept < 64 * 1024  # (a line index cost ~70 B a flow: 1.4 MB here)
