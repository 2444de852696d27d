"""Punt meters on a real OVS: added and deleted in one batch, and read back with stats."""

from __future__ import annotations

import pytest

from wyvern.ir.meters import MeterSpec
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.meters import Meters, meter_stats
from wyvern.southbound.ovs import OvsCommandError, OvsInstance

pytestmark = pytest.mark.system

FLOW = "table=0,priority=5,cookie=0x1,in_port=3 actions=meter:3,goto_table:1"


def test_meters_follow_the_wanted_set_and_flows_may_name_them(ovs: OvsInstance) -> None:
    # A flow naming a missing meter is refused (why meters go first).
    with pytest.raises(OvsCommandError, match="INVALID_METER"):
        ovs.ofctl("-O", "OpenFlow14", "add-flow", "br-int", FLOW)
    spec = MeterSpec("pktps", 50, 60)
    meters = Meters(ovs, "br-int")
    assert meters.add(dict.fromkeys(range(1, 201), spec)) == 200  # one connection, one barrier
    assert meters.add({3: spec, 5: spec}) == 0
    shown = ovs.ofctl("-O", "OpenFlow15", "dump-meters", "br-int")
    assert shown.count("type=drop rate=50 burst_size=60") == 200
    FlowInstaller(ovs).sync([FLOW])  # accepted now
    assert set(meter_stats(ovs, "br-int")) == set(range(1, 201))

    assert meters.remove_others([3]) == 199
    assert set(meter_stats(ovs, "br-int")) == {3}
    again = Meters(ovs, "br-int")  # (a restarted agent reads them back, and sets their band)
    assert again.add({3: spec, 7: spec}) == 2
    assert set(meter_stats(ovs, "br-int")) == {3, 7}
    assert "meter:3" in ovs.ofctl("-O", "OpenFlow14", "dump-flows", "br-int")


def test_qos_meters_in_kbps_are_modified_in_place(ovs: OvsInstance) -> None:
    """A QoS meter's band changes by a modify: the flow naming it stays."""
    meters = Meters(ovs, "br-int")
    meters.add({3: MeterSpec("kbps", 4000, 3200)})
    FlowInstaller(ovs).sync([FLOW])
    shown = ovs.ofctl("-O", "OpenFlow15", "dump-meters", "br-int")
    assert "meter=3 kbps burst stats bands=" in shown and "rate=4000 burst_size=3200" in shown
    assert meters.add({3: MeterSpec("kbps", 8000, 6400)}) == 1
    shown = ovs.ofctl("-O", "OpenFlow15", "dump-meters", "br-int")
    assert "rate=8000 burst_size=6400" in shown and "rate=4000" not in shown
    assert "meter:3" in ovs.ofctl("-O", "OpenFlow14", "dump-flows", "br-int")
