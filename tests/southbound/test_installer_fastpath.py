"""The installer's fast paths for rendered lines, against real OVS.

From an empty switch, RenderedLines are keyed by their own text (no `ovs-ofctl
parse-flows`), and a render that names its base sends only its added/removed lines. Both
must leave the switch exactly as the canonical path would, and refuse the same conflicts.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.apps import scenario as sc
from tests.controller.test_fastpaths import busy_view
from wyvern.controller.engine import Engine
from wyvern.model.view import Binding, record_from_obj
from wyvern.southbound.flowtext import (
    FlowKey,
    RenderedLines,
    canonicalize,
    parse_dump,
    parse_rendered,
    rendered_identity,
)
from wyvern.southbound.installer import FlowConflictError, FlowInstaller, LineIndex, _Plan
from wyvern.southbound.ovs import OvsInstance


def dump(ovs: OvsInstance) -> set[str]:
    out = ovs.ofctl("-O", "OpenFlow14", "--no-names", "--no-stats", "dump-flows", "br-int")
    return {f.spec() for f in parse_dump(out)}


def specs(lines: list[str]) -> set[str]:
    return {f.spec() for f in canonicalize(sorted(set(lines)))}


@pytest.mark.system
def test_rendered_lines_install_and_update_exactly(ovs: OvsInstance) -> None:
    view = busy_view(12)
    engine = Engine(sc.default_apps())
    engine.full(view)
    installer = FlowInstaller(ovs)
    lines = engine.render()
    sc.add_meters(ovs, {*(b.ofport for b in view.bindings.values()), 99})  # (port "new": 99)
    first = installer.sync(lines)
    assert first.added == len(set(lines))
    assert dump(ovs) == specs(list(lines))

    # a port comes: only its lines travel, and the switch equals the whole new set
    new = sc.port(
        "new",
        "n1",
        key=99,
        mac="fa:16:3e:00:00:99",
        ips=[("s1", "10.0.1.99")],
        security_groups=["sg2"],
    )
    view.port_chassis["new"] = view.chassis_name
    engine.apply_all(
        view,
        [
            view.apply("port", "new", record_from_obj("port", new)),
            view.apply("binding", "new", Binding("new", 99)),
        ],
    )
    lines2 = engine.render()
    assert lines2.base == lines.generation and lines2.added
    step = installer.sync(lines2)
    assert step.changed == len(lines2.added) + len(lines2.removed) - step.modified
    assert dump(ovs) == specs(list(lines2))
    assert installer.sync(lines2).changed == 0  # not a delta any more: a full trusted diff

    # and goes: back to the first set
    engine.apply_all(view, [view.apply("binding", "new", None), view.apply("port", "new", None)])
    lines3 = engine.render()
    installer.sync(lines3)
    assert dump(ovs) == specs(list(lines3)) == specs(list(lines))

    # an agent restart: canonical compare, nothing sent, then deltas again
    again = FlowInstaller(ovs)
    assert again.sync(RenderedLines(lines3)).changed == 0
    view.port_chassis["new"] = view.chassis_name
    engine.apply_all(
        view,
        [
            view.apply("port", "new", record_from_obj("port", new)),
            view.apply("binding", "new", Binding("new", 99)),
        ],
    )
    lines4 = engine.render()
    base = RenderedLines(lines3, generation=lines4.base)
    assert again.sync(base).changed == 0
    assert again.sync(lines4).changed > 0
    assert dump(ovs) == specs(list(lines4)) == specs(list(lines2))


@pytest.mark.system
def test_rendered_conflicts_are_refused_and_plain_text_is_canonical(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    a = "table=0,priority=5,cookie=0x1,ip actions=drop"
    b = "table=0,priority=5,cookie=0x1,ip actions=goto_table:1"
    with pytest.raises(FlowConflictError):
        installer.sync(RenderedLines([a, b]))
    assert dump(ovs) == set()
    first = RenderedLines([a], generation=1)
    installer.sync(first)
    with pytest.raises(FlowConflictError):  # a delta that would give one identity two values
        installer.sync(RenderedLines([a, b], generation=2, base=1, added=[b]))
    assert dump(ovs) == specs([a])
    # plain text after rendered text: OVS's canonical form again, same switch content
    stats = installer.sync(["table=0,priority=5,cookie=0x1,dl_type=0x0800 actions=drop"])
    assert stats.changed == 0 and dump(ovs) == specs([a])
    installer.sync(RenderedLines([b], generation=3))
    assert dump(ovs) == specs([b])


def _line(table: int, match: str, cookie: int, actions: str = "drop") -> str:
    sep = "," if match else ""
    return f"table={table},priority=10,cookie={cookie:#x}{sep}{match} actions={actions}"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "pop"]),
            st.integers(0, 3),
            st.sampled_from(["", "ip", "reg0=1", "ip,nw_dst=10.0.0.1", "arp,reg14=0x7"]),
            st.integers(1, 3),
        ),
        max_size=60,
    )
)
def test_line_index_equals_a_dict_even_when_hashes_collide(
    ops: list[tuple[str, int, str, int]],
) -> None:
    """Keyed by hash(identity), with colliding hashes forced: same answers as a dict."""
    index = LineIndex(hash_of=lambda ident: len(ident) % 3)  # collides all the time
    oracle: dict[str, str] = {}
    for op, table, match, cookie in ops:
        line = _line(table, match, cookie)
        ident = rendered_identity(line)[0]
        if op == "put":
            assert index.put(ident, line) == oracle.get(ident)
            oracle[ident] = line
        else:
            index.pop(ident)
            oracle.pop(ident, None)
        assert len(index) == len(oracle)
        assert sorted(index.lines()) == sorted(oracle.values())
        for t in range(4):
            for m in ("", "ip", "reg0=1", "ip,nw_dst=10.0.0.1", "arp,reg14=0x7"):
                probe = rendered_identity(_line(t, m, 1))[0]
                assert index.get(probe) == oracle.get(probe)


def test_a_rendered_identity_is_what_a_strict_delete_names() -> None:
    for line in (
        "table=3,priority=5,cookie=0x2,ip,nw_dst=10.0.0.0/24 actions=drop",
        "table=5,priority=0,cookie=0x1 actions=NORMAL",
    ):
        flow = parse_rendered(line)
        ident, cookie = rendered_identity(line)
        assert f"delete_strict {ident}" == flow.delete_line() and cookie == flow.cookie
    assert rendered_identity(_line(1, "ip", 1))[0] == "table=1,priority=10,ip"
    assert FlowKey(1, 10, "ip") == parse_rendered(_line(1, "ip", 1)).key


@pytest.mark.system
def test_installed_rendered_lines_cost_no_parsed_copy(ovs: OvsInstance) -> None:
    """The installer keeps a rendered line's text (shared) and a compact key, not a Flow."""
    n = 20_000
    lines = RenderedLines(
        [
            f"table=10,priority=100,cookie={i + 1:#x},reg0={i},ip,"
            f"nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} "
            f"actions=load:{i}->NXM_NX_REG1[],resubmit(,11)"
            for i in range(n)
        ],
        generation=1,
    )
    installer = FlowInstaller(ovs)
    installer.resync_from_switch()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stats = installer.sync(lines)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stats.added == n and len(installer.installed) == n
    assert f"flow_count={n}" in ovs.ofctl("-O", "OpenFlow14", "dump-aggregate", "br-int")
    some = parse_rendered(lines[123])
    assert installer.installed[some.key] == some
    print(f"\ninstaller: {kept / n:.0f} B per installed flow beyond its line")
    assert kept / n < 120  # a parsed Flow per line cost ~440 B


@given(
    st.lists(st.text("ab", max_size=3), max_size=5),
    st.lists(st.text("cd", max_size=3), max_size=5),
    st.lists(st.text("ef", max_size=3), max_size=5),
    st.integers(-12, 12),
    st.integers(-12, 12),
    st.sampled_from([1, 2, -1]),
)
def test_bundle_lines_are_made_as_a_list_would_be(
    deletes: list[str], modifies: list[str], adds: list[str], start: int, stop: int, step: int
) -> None:
    plan = _Plan(add=adds, modify=modifies, delete=[(d, f"line {d}") for d in deletes])
    want = [
        *(f"delete_strict {d}" for d in deletes),
        *(f"add {m}" for m in modifies),
        *(f"add {a}" for a in adds),
    ]
    lines = plan.bundle_lines()
    assert len(lines) == len(want) and list(lines) == want
    assert lines[start:stop:step] == want[start:stop:step]
    for i in range(-len(want), len(want)):
        assert lines[i] == want[i]
    with pytest.raises(IndexError):
        lines[len(want)]
