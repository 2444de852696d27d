"""The flow installer against real OVS: exact diffs, atomic bundles, restart without loss."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from tests.southbound.conftest import VM, VmFactory
from wyvern.southbound.flowtext import (
    DEFAULT_PRIORITY,
    Flow,
    FlowKey,
    FlowSyntaxError,
    canonicalize,
    clean_lines,
    parse_dump,
)
from wyvern.southbound.installer import (
    FlowConflictError,
    FlowInstaller,
    FlowInstallError,
    diff_flows,
)
from wyvern.southbound.ovs import OvsInstance


def dump(ovs: OvsInstance) -> set[str]:
    """The bridge's flows as canonical text, without counters."""
    out = ovs.ofctl("-O", "OpenFlow14", "--no-names", "--no-stats", "dump-flows", "br-int")
    return {f.spec() for f in parse_dump(out)}


def specs(lines: list[str]) -> set[str]:
    return {f.spec() for f in canonicalize(clean_lines(lines))}


# -- canonical form (needs only the ovs-ofctl binary) ------------------------------------


@pytest.mark.system
def test_renderer_spelling_and_dump_spelling_compare_equal() -> None:
    rendered = canonicalize(
        [
            "table=3,priority=5,cookie=0x2,dl_type=0x0800,nw_dst=10.0.0.0/255.255.255.0,"
            "actions=load:1->NXM_NX_REG0[],set_field:5->reg1,goto_table:4",
            "table=4,priority=7,cookie=0x3,tcp,tp_dst=80,ct_state=+new+trk,reg0=1 actions=drop",
            "table=5 actions=NORMAL",
        ]
    )
    dumped = parse_dump(
        "OFPST_FLOW reply (OF1.4) (xid=0x2):\n"
        " cookie=0x2, duration=1.2s, table=3, n_packets=0, n_bytes=0, priority=5,ip,"
        "nw_dst=10.0.0.0/24 actions=load:0x1->NXM_NX_REG0[],set_field:0x5->reg1,goto_table:4\n"
        " cookie=0x3, table=4, priority=7,ct_state=+new+trk,tcp,reg0=0x1,tp_dst=80"
        " actions=drop\n"
        " table=5, actions=NORMAL\n"
    )
    assert [f.key for f in rendered] == [f.key for f in dumped]
    assert [f.value for f in rendered] == [f.value for f in dumped]
    assert rendered[2].key == FlowKey(5, DEFAULT_PRIORITY, "")


@pytest.mark.system
def test_timeouts_importance_and_flags_are_part_of_the_value() -> None:
    line = (
        "table=2,priority=10,cookie=0xabc,idle_timeout=30,hard_timeout=60,importance=5,"
        "send_flow_rem,ip actions=drop"
    )
    (flow,) = canonicalize([line])
    assert flow.value == (0xABC, "drop", 30, 60, 5, frozenset({"send_flow_rem"}))
    (dumped,) = parse_dump(
        " cookie=0xabc, table=2, idle_timeout=30, hard_timeout=60,"
        " send_flow_rem importance=5, priority=10,ip actions=drop"
    )
    assert dumped == flow
    assert flow.text == line and flow.add_line() == f"add {line}"
    assert flow.delete_line() == "delete_strict table=2,priority=10,ip"


@pytest.mark.system
def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(FlowSyntaxError, match="unknown keyword in_pot") as info:
        canonicalize(["table=0 actions=drop", "table=1,in_pot=4 actions=drop"])
    assert info.value.lineno == 2 and info.value.line == "table=1,in_pot=4 actions=drop"
    with pytest.raises(FlowSyntaxError, match="not a command"):
        clean_lines(["delete_strict table=0,priority=1"])
    assert clean_lines(["", "  # comment", " table=0 actions=drop "]) == ["table=0 actions=drop"]


def test_diff_is_pure_and_exact() -> None:
    def flow(table: int, match: str, cookie: int = 1, actions: str = "drop") -> Flow:
        return Flow(FlowKey(table, 10, match), cookie, actions)

    installed = {f.key: f for f in [flow(0, "in_port=1"), flow(0, "in_port=2"), flow(1, "ip")]}
    desired = {
        f.key: f
        for f in [
            flow(0, "in_port=1"),
            flow(0, "in_port=2", 2),
            flow(1, "ip", actions="NORMAL"),
            flow(2, ""),
        ]
    }
    d = diff_flows(installed, desired)
    assert [f.key.table for f in d.add] == [2]
    assert sorted(f.key.match for f in d.modify) == ["in_port=2", "ip"]
    assert d.delete == ()
    assert not diff_flows(desired, desired)
    assert [f.key for f in diff_flows(desired, {}).delete] == list(desired)


# -- against a real switch -----------------------------------------------------------------

BASE = [
    "table=0,priority=100,cookie=0x1,in_port=1 actions=resubmit(,1)",
    "table=0,priority=100,cookie=0x1,in_port=2 actions=resubmit(,1)",
    "table=0,priority=0,cookie=0x1 actions=drop",
    "table=1,priority=50,cookie=0x2,dl_dst=02:00:00:00:00:01 actions=output:1",
    "table=1,priority=50,cookie=0x2,dl_dst=02:00:00:00:00:02 actions=output:2",
    "table=1,priority=10,cookie=0x2,dl_type=0x0800,nw_dst=10.0.0.0/255.255.255.0 actions=drop",
]


@pytest.mark.system
def test_sync_sends_exactly_the_difference(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    first = installer.sync(BASE)
    assert (first.added, first.modified, first.deleted, first.resynced) == (6, 0, 0, True)
    assert dump(ovs) == specs(BASE)
    assert set(installer.installed) == {f.key for f in canonicalize(BASE)}

    changed = [
        *BASE[:2],
        # BASE[2] removed
        "table=1,priority=50,cookie=0x2,dl_dst=02:00:00:00:00:01 actions=output:1,output:2",
        "table=1,priority=50,cookie=0x7,dl_dst=02:00:00:00:00:02 actions=output:2",  # cookie
        BASE[5].replace("dl_type=0x0800", "ip").replace("255.255.255.0", "24"),  # same flow
        "table=2,priority=1,cookie=0x3 actions=NORMAL",
    ]
    before = installer.installed[canonicalize([BASE[0]])[0].key]
    stats = installer.sync(changed)
    assert (stats.added, stats.modified, stats.deleted, stats.unchanged) == (1, 2, 1, 3)
    assert dump(ovs) == specs(changed)
    assert installer.installed[before.key] is before  # untouched flows stay as they were
    again = installer.sync(changed)
    assert again.changed == 0 and again.bundle_seconds == 0.0


@pytest.mark.system
def test_a_changed_flow_keeps_its_counters(ovs: OvsInstance, vms: VmFactory) -> None:
    a, b = vms(1), vms(2)
    installer = FlowInstaller(ovs)
    installer.sync(["table=0,priority=0,cookie=0x1 actions=NORMAL"])
    subprocess.run(
        ["ip", "netns", "exec", a.netns, "ping", "-c", "2", "-i", "0.2", "-W", "1", b.ip],
        capture_output=True,
        check=True,
        timeout=10,
    )
    stats = installer.sync(["table=0,priority=0,cookie=0x2 actions=NORMAL"])
    assert stats.modified == 1
    out = ovs.ofctl("-O", "OpenFlow14", "dump-flows", "br-int")
    assert "cookie=0x2" in out
    assert int(re.search(r"n_packets=(\d+)", out).group(1)) >= 4  # type: ignore[union-attr]


@pytest.mark.system
def test_a_bad_flow_applies_nothing(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    installer.sync(BASE)
    want = dump(ovs)
    # Caught before anything is sent: OVS's own parser rejects the line.
    with pytest.raises(FlowSyntaxError, match="unknown keyword in_pot") as syntax:
        installer.sync([*BASE[1:], "table=3,priority=1,cookie=0x9,in_pot=4 actions=drop"])
    assert syntax.value.lineno == 6
    assert dump(ovs) == want
    # Refused by the switch at commit (no group 99): the adds and deletes before and
    # after it in the same bundle are not applied either.
    bundle = [
        *BASE[1:],
        "table=3,priority=1,cookie=0x9 actions=output:1",
        "table=3,priority=2,cookie=0x9,ip actions=group:99",
        "table=3,priority=3,cookie=0x9,arp actions=output:2",
    ]
    with pytest.raises(FlowInstallError, match="OFPBAC_BAD_OUT_GROUP") as refused:
        installer.sync(bundle)
    assert refused.value.errors and "group:99" in refused.value.errors[0][1]
    assert dump(ovs) == want
    # The next sync re-reads the switch and then applies just the difference.
    stats = installer.sync(BASE[1:])
    assert stats.resynced and (stats.added, stats.deleted) == (0, 1)
    assert dump(ovs) == specs(BASE[1:])


@pytest.mark.system
def test_conflicting_desired_flows_are_refused(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    with pytest.raises(FlowConflictError, match="identity"):
        installer.sync(
            [
                "table=0,priority=5,ip actions=drop",
                "table=0,priority=5,dl_type=0x0800 actions=NORMAL",
            ]
        )
    # The same flow twice (in two spellings) is just the same flow.
    stats = installer.sync(
        ["table=0,priority=5,ip actions=drop", "table=0,priority=5,dl_type=0x0800 actions=drop"]
    )
    assert stats.added == 1 and len(dump(ovs)) == 1


@pytest.mark.system
def test_resync_repairs_what_changed_behind_our_back(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    installer.sync(BASE)
    ovs.ofctl("-O", "OpenFlow14", "--strict", "del-flows", "br-int", "table=0,priority=0")
    ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=9,priority=9,actions=drop")
    ovs.ofctl(
        "-O", "OpenFlow14", "mod-flows", "br-int", "table=1,dl_dst=02:00:00:00:00:02,actions=drop"
    )
    installer.mark_stale()  # what the agent does when OVS reconnects
    stats = installer.sync(BASE)
    assert stats.resynced
    assert (stats.added, stats.modified, stats.deleted) == (1, 1, 1)
    assert dump(ovs) == specs(BASE)


@pytest.mark.system
def test_a_restarted_switch_gets_every_flow_back(ovs: OvsInstance) -> None:
    installer = FlowInstaller(ovs)
    installer.sync(BASE)
    pid = ovs.pid("ovs-vswitchd")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ovs.pid("ovs-vswitchd") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    restarted = OvsInstance.start(ovs.run_dir, ovs.netns)  # br-int is still in the db
    assert dump(restarted) == set()
    installer.mark_stale()  # what the agent does when its OVS connection comes back
    stats = installer.sync(BASE)
    assert stats.resynced and stats.added == len(BASE) and stats.deleted == 0
    assert dump(ovs) == specs(BASE)


@pytest.mark.system
def test_owned_cookie_leaves_other_flows_alone(ovs: OvsInstance) -> None:
    ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=9,priority=9,actions=drop")
    ours = (0x1000, 0xF000)
    installer = FlowInstaller(ovs, owned_cookie=ours)
    lines = [
        "table=0,priority=1,cookie=0x1001 actions=drop",
        "table=0,priority=2,cookie=0x1002 actions=NORMAL",
    ]
    assert installer.sync(lines).added == 2
    assert installer.sync(lines[:1]).deleted == 1
    assert dump(ovs) == specs([*lines[:1], "table=9,priority=9 actions=drop"])
    restarted = FlowInstaller(ovs, owned_cookie=ours)
    assert restarted.resync_from_switch() == 1
    with pytest.raises(FlowSyntaxError, match="outside the owned space"):
        installer.sync(["table=0,priority=3,cookie=0x2001 actions=drop"])


def l2_flows(a: VM, b: VM) -> list[str]:
    """A small two-table L2 pipeline with port security: more than one NORMAL flow."""
    flows = ["table=0,priority=0,cookie=0x10 actions=drop"]
    for vm in (a, b):
        flows += [
            f"table=0,priority=100,cookie=0x11,in_port={vm.ofport},dl_src={vm.mac} "
            "actions=resubmit(,1)",
            f"table=1,priority=50,cookie=0x12,dl_dst={vm.mac} actions=output:{vm.ofport}",
        ]
    flows.append(
        f"table=1,priority=10,cookie=0x13,dl_dst=ff:ff:ff:ff:ff:ff "
        f"actions=output:{a.ofport},output:{b.ofport}"
    )
    return flows


@pytest.mark.system
def test_agent_restart_changes_nothing_and_loses_no_packet(
    ovs: OvsInstance, vms: VmFactory
) -> None:
    a, b = vms(1), vms(2)
    flows = l2_flows(a, b)
    FlowInstaller(ovs).sync(flows)
    before = ovs.ofctl("-O", "OpenFlow14", "--no-stats", "dump-flows", "br-int")
    ping = subprocess.Popen(
        ["ip", "netns", "exec", a.netns, "ping", "-i", "0.01", "-c", "300", "-W", "1", b.ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.5)
        restarted = FlowInstaller(ovs)  # a new agent: knows nothing yet
        start = time.monotonic()
        read = restarted.resync_from_switch()
        stats = restarted.sync(flows)
        print(f"\nrestart: read {read} flows and synced in {time.monotonic() - start:.3f} s")
        out, _ = ping.communicate(timeout=30)
    finally:
        ping.kill()
        ping.wait()
    assert read == len(flows)
    assert stats.changed == 0 and stats.unchanged == len(flows)
    assert ovs.ofctl("-O", "OpenFlow14", "--no-stats", "dump-flows", "br-int") == before
    assert re.search(r"300 packets transmitted, 300 received, 0% packet loss", out), out


@pytest.mark.system
def test_sync_of_10k_flows(ovs: OvsInstance) -> None:
    n = 10_000
    flows = [
        f"table=10,priority=100,cookie={i + 1:#x},reg0={i},ip,"
        f"nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} "
        f"actions=load:{i}->NXM_NX_REG1[],resubmit(,11)"
        for i in range(n)
    ]
    installer = FlowInstaller(ovs)
    full = installer.sync(flows)
    assert full.added == n
    restarted = FlowInstaller(ovs)
    t0 = time.monotonic()
    assert restarted.resync_from_switch() == n
    resync = time.monotonic() - t0
    again = restarted.sync(flows)
    noop = restarted.sync(flows)
    changed = restarted.sync(
        [*flows[100:], *(f.replace("resubmit(,11)", "resubmit(,12)") for f in flows[:50])]
    )
    assert again.changed == 0 and noop.changed == 0
    assert (changed.added, changed.modified, changed.deleted) == (0, 50, 50)
    count = ovs.ofctl("-O", "OpenFlow14", "dump-aggregate", "br-int")
    assert f"flow_count={n - 50}" in count
    print(
        f"\n10k flows: first sync {full.seconds:.3f} s (parse {full.parse_seconds:.3f} s, "
        f"bundle {full.bundle_seconds:.3f} s = {n / full.bundle_seconds:,.0f} flows/s); "
        f"resync {resync:.3f} s; sync after restart {again.seconds:.3f} s; "
        f"no-op sync {noop.seconds:.3f} s; 100-flow change {changed.seconds:.3f} s"
    )
