"""Real-OVS fixtures: a private OVS in a fresh netns with br-int, and "VMs" plugged into it.

Each `ovs` is its own ovsdb-server + ovs-vswitchd (userspace datapath) in its own network
namespace and run dir, all named with a random suffix, so parallel pytest workers never
collide. Everything is torn down after the test, pass or fail, unless WYVERN_KEEP=1:
then the run dir, namespaces and the commands to poke at them are printed instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests import system
from wyvern.southbound import vif
from wyvern.southbound.ovs import OvsInstance, netns_exists


def keep() -> bool:
    return os.environ.get("WYVERN_KEEP", "") not in ("", "0", "false")


def unique(prefix: str) -> str:
    """A short unique name (netns names, port ids): safe across xdist workers."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def in_netns(netns: str, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def ovs(request: pytest.FixtureRequest) -> Iterator[OvsInstance]:
    """A private OVS with br-int, in a fresh netns; stopped and removed afterwards."""
    system.require(request)
    instance = OvsInstance.start(netns=unique("wvt-ovs-"))
    try:
        instance.ensure_bridge("br-int")
        yield instance
    finally:
        if keep():
            print(
                f"\nWYVERN_KEEP: {instance} left running; try\n"
                f"  OVS_RUNDIR={instance.run_dir} ovs-ofctl -O OpenFlow14 dump-flows br-int\n"
                f"  ovs-vsctl --db=unix:{instance.db_sock} show",
                file=sys.stderr,
            )
        else:
            instance.stop()


@dataclass(frozen=True)
class VM:
    """A plugged VM namespace and its address."""

    vif: vif.Vif
    ip: str

    @property
    def netns(self) -> str:
        return self.vif.netns

    @property
    def ofport(self) -> int:
        return self.vif.ofport

    @property
    def mac(self) -> str:
        return self.vif.mac


VmFactory = Callable[..., VM]


@pytest.fixture
def vms(ovs: OvsInstance) -> Iterator[VmFactory]:
    """`vms(index)` plugs VM number INDEX (10.0.0.INDEX/24, MAC 02:00:00:00:00:INDEX)."""
    plugged: list[VM] = []

    def make(index: int, mtu: int = 1500) -> VM:
        port_id = str(uuid.uuid4())
        mac = f"02:00:00:00:00:{index:02x}"
        ip = f"10.0.0.{index}"
        v = vif.plug(ovs, port_id, mac, unique("wvt-vm-"), mtu, ip_cidr=f"{ip}/24")
        vm = VM(v, ip)
        plugged.append(vm)
        return vm

    try:
        yield make
    finally:
        if keep():
            for vm in plugged:
                print(
                    f"WYVERN_KEEP: VM {vm.ip} in netns {vm.netns} "
                    f"(ip netns exec {vm.netns} ping ...)",
                    file=sys.stderr,
                )
        else:
            for vm in plugged:
                try:
                    vif.unplug(ovs, vm.vif.port_id, delete_netns=True)
                finally:
                    if netns_exists(vm.netns):
                        subprocess.run(["ip", "netns", "del", vm.netns], check=False)
