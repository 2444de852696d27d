"""The installer's fast paths for rendered lines, against real OVS.

From an empty switch, RenderedLines are keyed by their own text (no `ovs-ofctl
parse-flows`), and a render that names its base sends only its added/removed lines. Both
must leave the switch exactly as the canonical path would, and refuse the same conflicts.
"""

from __future__ import annotations

import pytest

from tests.apps import scenario as sc
from tests.controller.test_fastpaths import busy_view
from wyvern.controller.engine import Engine
from wyvern.model.view import Binding, record_from_obj
from wyvern.southbound.flowtext import RenderedLines, canonicalize, parse_dump
from wyvern.southbound.installer import FlowConflictError, FlowInstaller
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
