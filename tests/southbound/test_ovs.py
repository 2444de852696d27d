"""OvsInstance against real OVS: private paths, attach, idempotent bridge, controller once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.southbound.conftest import unique
from wyvern.southbound.ovs import DAEMONS, OvsCommandError, OvsError, OvsInstance, netns_exists

pytestmark = pytest.mark.system


def flow_count(ovs: OvsInstance, bridge: str = "br-int") -> int:
    out = ovs.ofctl("-O", "OpenFlow14", "dump-aggregate", bridge)
    return int(out.split("flow_count=")[1].split()[0])


def gone(pid: int) -> bool:
    """Exited (a zombie counts: init reaps detached daemons a moment later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_start_keeps_everything_private_and_stop_removes_it() -> None:
    netns = unique("wvt-ovs-")
    ovs = OvsInstance.start(netns=netns)
    try:
        pids = {d: ovs.pid(d) for d in DAEMONS}
        assert all(pids.values()), pids
        assert ovs.running
        for daemon in DAEMONS:
            for path in (ovs.pidfile(daemon), ovs.ctl_path(daemon), ovs.log_path(daemon)):
                assert path.parent == ovs.run_dir and path.exists(), path
        assert ovs.db_sock.exists()
        # vswitchd lives in our namespace, not the caller's.
        vswitchd_ns = netns_inode(f"/proc/{pids['ovs-vswitchd']}/ns/net")
        assert vswitchd_ns == netns_inode(f"/run/netns/{netns}")
        assert vswitchd_ns != netns_inode("/proc/self/ns/net")
        assert ovs.ensure_bridge("br-int")
        assert ovs.mgmt_path("br-int").exists()
        assert "ovs_version" in ovs.vsctl("list", "Open_vSwitch")
        assert ovs.appctl("version").startswith("ovs-vswitchd")
    finally:
        ovs.stop()
    for daemon, pid in pids.items():
        assert pid is not None and gone(pid), daemon
    assert not ovs.run_dir.exists()
    assert not netns_exists(netns)
    ovs.stop()  # twice is fine


def test_start_attaches_to_running_daemons(ovs: OvsInstance) -> None:
    """An agent restart must find the datapath running and leave it alone."""
    ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=3,priority=1,actions=drop")
    again = OvsInstance.start(ovs.run_dir, ovs.netns)
    assert {d: again.pid(d) for d in DAEMONS} == {d: ovs.pid(d) for d in DAEMONS}
    assert not again.owns_run_dir and not again.owns_netns
    assert flow_count(again) == 1
    attached = OvsInstance.attach(ovs.run_dir, ovs.netns)
    assert attached.pid("ovs-vswitchd") == ovs.pid("ovs-vswitchd")


def test_start_restarts_only_a_dead_daemon(ovs: OvsInstance) -> None:
    db_pid = ovs.pid("ovsdb-server")
    old = ovs.pid("ovs-vswitchd")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while ovs.pid("ovs-vswitchd") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OvsError, match="not running: ovs-vswitchd"):
        OvsInstance.attach(ovs.run_dir)
    again = OvsInstance.start(ovs.run_dir, ovs.netns)
    assert again.pid("ovsdb-server") == db_pid
    assert again.pid("ovs-vswitchd") not in (None, old)
    # The configuration lives in the database, so br-int came back with the switch.
    assert not again.ensure_bridge("br-int")
    assert again.vsctl("get", "Bridge", "br-int", "fail_mode").strip() == "secure"


def test_ensure_bridge_creates_once_and_leaves_existing_alone(ovs: OvsInstance) -> None:
    def get(column: str) -> str:
        return ovs.vsctl("get", "Bridge", "br-int", column).strip()

    assert get("datapath_type") == "netdev"
    assert get("fail_mode") == "secure"
    assert get("protocols") == "[OpenFlow13, OpenFlow14, OpenFlow15]"
    assert get("other_config:disable-in-band") == '"true"'
    ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=1,priority=5,actions=drop")
    ovs.vsctl("set", "Bridge", "br-int", "other_config:mac-aging-time=10")
    assert ovs.ensure_bridge("br-int") is False
    assert flow_count(ovs) == 1
    assert get("other_config:mac-aging-time") == '"10"'


def test_ensure_frag_mode_sets_nx_match_once(ovs: OvsInstance) -> None:
    def frags() -> str:
        return ovs.ofctl("-O", "OpenFlow14", "get-frags", "br-int").strip()

    assert frags() == "normal"  # OVS's default: every fragment's L4 fields read as 0
    ovs.ensure_frag_mode("br-int")
    assert frags() == "nx-match"
    ovs.ensure_frag_mode("br-int")  # idempotent
    assert frags() == "nx-match"


def test_set_controller_once_never_flushes_twice(ovs: OvsInstance) -> None:
    target = "tcp:127.0.0.1:1"  # nothing listens: fail_mode=secure keeps our flows
    assert ovs.set_controller_once("br-int", target) is True
    ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=2,priority=5,actions=drop")
    assert ovs.set_controller_once("br-int", target) is False
    assert ovs.get_controllers("br-int") == [target]
    assert flow_count(ovs) == 1
    # One target to another keeps the flows too (only none <-> some flushes).
    assert ovs.set_controller_once("br-int", "tcp:127.0.0.1:2") is True
    assert flow_count(ovs) == 1


def test_ofctl_reaches_only_its_own_instance(ovs: OvsInstance) -> None:
    other = OvsInstance.start(netns=unique("wvt-ovs-"))
    try:
        other.ensure_bridge("br-int")  # same bridge name, no collision
        ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", "table=4,priority=5,actions=drop")
        assert flow_count(ovs) == 1
        assert flow_count(other) == 0
    finally:
        other.stop()


def test_stop_kills_a_stuck_daemon() -> None:
    ovs = OvsInstance.start(netns=unique("wvt-ovs-"))
    try:
        pid = ovs.pid("ovs-vswitchd")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # ignores SIGTERM until continued
        start = time.monotonic()
        ovs.stop(timeout=0.5)
        assert time.monotonic() - start < 5
        assert gone(pid)
    finally:
        ovs.stop()


def test_tool_errors_carry_the_message(ovs: OvsInstance) -> None:
    with pytest.raises(OvsCommandError, match='no row "br-nope"'):
        ovs.vsctl("get", "Bridge", "br-nope", "name")
    with pytest.raises(OvsCommandError, match="br-nope"):
        ovs.ofctl("dump-flows", "br-nope", timeout=2)
