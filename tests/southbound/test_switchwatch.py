"""SwitchWatch on a real private OVS: a vswitchd restart is reported once, at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from wyvern.southbound.ovs import OvsInstance
from wyvern.southbound.switchwatch import SwitchWatch

pytestmark = pytest.mark.system


def test_a_restarted_vswitchd_is_reported_within_a_fraction_of_a_second(
    ovs: OvsInstance,
) -> None:
    reconnected: list[float] = []
    seen = threading.Event()

    def on_reconnect() -> None:
        reconnected.append(time.monotonic())
        seen.set()

    watch = SwitchWatch(ovs.mgmt_path("br-int"), on_reconnect)
    try:
        assert watch.start()
        assert watch.connected and watch.datapath_id
        # The first connection is no restart; nor is an idle while (echo probes kept).
        assert not seen.wait(0.5)
        assert watch.connections == 1 and watch.connected

        pid = ovs.pid("ovs-vswitchd")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while ovs.pid("ovs-vswitchd") is not None:
            time.sleep(0.01)
        time.sleep(0.3)
        assert not reconnected  # nothing to reconnect to yet
        OvsInstance.start(ovs.run_dir, ovs.netns)
        up = time.monotonic()
        assert seen.wait(5)
        print(f"\nreported {reconnected[0] - up:.3f} s after vswitchd was up")
        assert reconnected[0] - up < 0.5
        assert watch.connections == 2 and len(reconnected) == 1
    finally:
        watch.stop()
    assert not watch.connected


def test_a_switch_that_is_not_there_yet_is_no_restart(ovs: OvsInstance) -> None:
    calls: list[int] = []
    watch = SwitchWatch(ovs.run_dir / "nothing.mgmt", lambda: calls.append(1), retry=0.01)
    try:
        assert not watch.start(timeout=0.3)
        assert watch.connections == 0 and not calls
    finally:
        watch.stop()
