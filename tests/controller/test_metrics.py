"""The agent's Prometheus textfile: the rendering against the text format's grammar, and a
fake-chassis agent whose file follows a real install and goes at a clean stop.

prometheus_client is not a dependency (the agent writes the format by hand), so the
oracle is the text exposition format (version 0.0.4) written out as one strict regex per
line kind, with its ordering rules (HELP and TYPE once, before the family's samples)."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import pytest

from tests.api.conftest import create, make_client
from tests.controller import test_dhcp6
from wyvern.apps import punts
from wyvern.config import Settings
from wyvern.controller.agent import Agent
from wyvern.controller.chassis import ChassisInfo
from wyvern.controller.metrics import (
    AgentFigures,
    Family,
    MetricsFile,
    agent_families,
    packet_in_counters,
    parse_samples,
    render,
)
from wyvern.controller.packetin import PacketInDispatcher
from wyvern.nb.sqlite import SqliteStore

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
LABELS = (
    rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})*,?)?\}}"
)
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)"
HELP = re.compile(rf"^# HELP ({NAME}) (?:[^\\\n]|\\\\|\\n)*$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
SAMPLE = re.compile(rf"^({NAME})(?:{LABELS})? {VALUE}(?: -?\d+)?$")


def check_exposition(text: str) -> dict[str, str]:
    """Every line valid; per family one HELP and one TYPE before its samples, which are
    together; counters end in _total. Returns each family's type."""
    assert text.endswith("\n") and "\n\n" not in text
    types: dict[str, str] = {}
    helps: set[str] = set()
    done: set[str] = set()  # families whose samples are over
    current: str | None = None
    for line in text.splitlines():
        if m := HELP.match(line):
            name = m.group(1)
            assert name not in helps and name not in done, line
            helps.add(name)
        elif m := TYPE.match(line):
            name = m.group(1)
            assert name not in types and name not in done, line
            types[name] = m.group(2)
            if m.group(2) == "counter":
                assert name.endswith("_total"), name
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            name = m.group(1)
            assert name in types and name in helps, f"sample before its TYPE/HELP: {line!r}"
            assert name not in done, f"samples of {name} not together"
        if current is not None and name != current:
            done.add(current)
        current = name
    return types


def figures(**packet_in: int) -> AgentFigures:
    return AgentFigures(
        counters={"loops": 7, "installs": 2, "flows_sent": 130},
        installed_revision=41,
        store_revision=42,
        last_install_seconds=0.0125,
        flows=120,
        local_ports=3,
        packet_in=packet_in,
    )


def test_rendering_names_labels_help_and_type() -> None:
    text = render(agent_families("hv1", figures(dhcp6=4, dhcp6_malformed=1), punts.NAMES.values()))
    types = check_exposition(text)
    assert all(name.startswith("wyvern_agent_") for name in types)
    assert types["wyvern_agent_installs_total"] == "counter"
    assert types["wyvern_agent_installed_revision"] == "gauge"
    assert types["wyvern_agent_flows"] == "gauge"
    lines = text.splitlines()
    assert 'wyvern_agent_installs_total{chassis="hv1"} 2' in lines
    assert 'wyvern_agent_install_errors_total{chassis="hv1"} 0' in lines  # (never absent)
    assert 'wyvern_agent_last_install_seconds{chassis="hv1"} 0.0125' in lines
    assert 'wyvern_agent_local_ports{chassis="hv1"} 3' in lines
    assert 'wyvern_agent_packet_in_handled_total{chassis="hv1",kind="dhcp6"} 4' in lines
    assert (
        'wyvern_agent_packet_in_outcomes_total{chassis="hv1",outcome="dhcp6_malformed"} 1' in lines
    )
    # read back as `wyvern punts` does
    assert packet_in_counters(text) == {"dhcp6": 4, "dhcp6_malformed": 1}
    # no packet-in service (a fake chassis): no packet-in families at all
    none = agent_families("hv1", AgentFigures({}, 0, 0, 0.0, 0, 0, None), [])
    assert not any("packet_in" in f.name for f in none)


def test_escaping_of_label_values_and_help() -> None:
    odd = 'hv"1\\x\ny'
    fam = Family("wyvern_agent_x_total", "counter", "a \\ back\nslash", [({"chassis": odd}, 1)])
    text = render([fam, Family("wyvern_agent_y", "gauge", "y", [({}, math.inf), ({}, 1.5)])])
    check_exposition(text)
    assert "# HELP wyvern_agent_x_total a \\\\ back\\nslash\n" in text
    assert 'wyvern_agent_x_total{chassis="hv\\"1\\\\x\\ny"} 1\n' in text
    assert "wyvern_agent_y +Inf\n" in text
    ((name, labels, value), *_) = parse_samples(text)
    assert (name, labels, value) == ("wyvern_agent_x_total", {"chassis": odd}, 1.0)
    with pytest.raises(ValueError):
        render([Family("wyvern-agent", "gauge", "x")])
    with pytest.raises(ValueError):
        render([Family("wyvern_agent_z", "gauge", "x", [({"bad-label": "v"}, 1)])])


def test_a_malformed_dhcpv6_packet_moves_its_counter() -> None:
    """A real dispatcher (the packet-in thread's) fed a malformed DHCPv6 message: the
    counters it keeps render as a handled dhcp6 punt and a dhcp6_malformed outcome."""
    d = PacketInDispatcher(test_dhcp6.view())
    before = render(agent_families("hv1", figures(**d.stats), punts.NAMES.values()))
    assert packet_in_counters(before) == {}
    assert d.handle(test_dhcp6.punt_in(b"\x01\x02garbage"), now=0.0) == []
    after = render(agent_families("hv1", figures(**d.stats), punts.NAMES.values()))
    check_exposition(after)
    assert packet_in_counters(after) == {"dhcp6": 1, "dhcp6_malformed": 1}


def test_metrics_file_is_replaced_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "wyvern-agent-hv1.prom"
    f = MetricsFile(path)
    assert f.write("a 1\n") and path.read_text() == "a 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # (node_exporter reads it)
    inode = path.stat().st_ino
    assert not f.write("a 1\n")  # unchanged: not rewritten
    assert f.write("a 2\n") and path.read_text() == "a 2\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp left
    f.remove()
    assert not path.exists()
    # An unwritable place costs the counters, never an exception in the agent's loop.
    blocked = MetricsFile(tmp_path / "file" / "x.prom")
    (tmp_path / "file").write_text("not a directory")
    assert not blocked.write("a 1\n")


def test_settings_place_the_file_under_the_run_dir(tmp_path: Path) -> None:
    s = Settings(run_dir=tmp_path, chassis_name="hv/1")
    assert s.agent_metrics_file == tmp_path / "metrics" / "wyvern-agent-hv_1.prom"
    moved = Settings(run_dir=tmp_path, chassis_name="hv1", agent_metrics_dir="/srv/textfile")
    assert moved.agent_metrics_file == Path("/srv/textfile/wyvern-agent-hv1.prom")
    assert Settings(run_dir=tmp_path, agent_metrics_dir="").agent_metrics_file is None


def test_a_fake_chassis_agent_writes_its_counters_and_removes_them_at_stop(
    tmp_path: Path,
) -> None:
    """The loop's file follows a real install: a port bound to the chassis moves the
    installs counter and the local ports gauge."""
    store = SqliteStore(str(tmp_path / "wyvern.db"))
    path = tmp_path / "metrics" / "wyvern-agent-hv1.prom"
    agent = Agent(
        store,
        None,
        ChassisInfo("hv1", "192.0.2.1", hostname="hv1"),
        poll_interval=0.05,
        metrics_file=path,
        metrics_interval=0.05,
    )

    def sample(name: str) -> float:
        text = path.read_text()
        check_exposition(text)
        return next(v for n, labels, v in parse_samples(text) if n == name)

    try:
        agent.start()
        assert path.exists()  # (from the first install on)
        installs = sample("wyvern_agent_installs_total")
        assert installs >= 1 and sample("wyvern_agent_local_ports") == 0
        with make_client(store) as client:
            net = create(client, "networks", name="n")
            create(client, "subnets", network_id=net["id"], cidr="10.9.0.0/24", ip_version=4)
            create(client, "ports", network_id=net["id"], **{"binding:host_id": "hv1"})
        assert agent.wait_for(
            lambda: (
                sample("wyvern_agent_local_ports") == 1
                and sample("wyvern_agent_installs_total") > installs
            )
        ), path.read_text()
        assert agent.wait_for(lambda: sample("wyvern_agent_flows") == agent.engine.flow_count())
        assert agent.engine.flow_count() > 0
        assert 'chassis="hv1"' in path.read_text()
    finally:
        agent.stop()
        store.close()
    assert not path.exists()
