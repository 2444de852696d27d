"""The L2 family on a real Open vSwitch: OVS accepts every flow, and real VMs get the
simulator's outcomes (ARP answered by the responder, ping within a network, isolation of
overlapping networks, spoofed sources dropped)."""

from __future__ import annotations

import pytest

from tests.apps import scenario as sc
from tests.southbound.conftest import VM, VmFactory, in_netns, ovs, vms
from wyvern.ir.render import render_flow
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsInstance

__all__ = ["ovs", "vms"]  # fixtures, imported for pytest


def ping(vm: VM, ip: str, *args: str) -> bool:
    r = in_netns(vm.netns, "ping", "-c", "1", "-W", "1", *args, ip, timeout=10)
    return r.returncode == 0


def neighbour(vm: VM, ip: str) -> str:
    return in_netns(vm.netns, "ip", "neigh", "show", ip).stdout


@pytest.mark.system
def test_l2_flows_on_real_ovs(ovs: OvsInstance, vms: VmFactory) -> None:
    a, b, c, d = vms(1), vms(2), vms(3), vms(4)
    view = sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24", enable_dhcp=False),
            sc.subnet("s2", "n2", "10.0.0.0/24", enable_dhcp=False),
        ],
        ports=[
            sc.port(a.vif.port_id, "n1", key=1, mac=a.mac, ips=[a.ip]),
            sc.port(b.vif.port_id, "n1", key=2, mac=b.mac, ips=[b.ip]),
            # c: same CIDR, another network, and the same port key as a
            sc.port(c.vif.port_id, "n2", key=1, mac=c.mac, ips=[c.ip]),
            sc.port(d.vif.port_id, "n2", key=2, mac=d.mac, ips=[d.ip]),
            sc.port("ghost", "n1", key=9, mac="02:00:00:00:00:99", ips=["10.0.0.99"]),
        ],
        local={v.vif.port_id: v.ofport for v in (a, b, c, d)},
    )
    flows = sc.with_meters(ovs, sc.all_flows(view, sc.l2_apps()))
    installer = FlowInstaller(ovs)
    stats = installer.sync(render_flow(f) for f in flows)  # OVS accepts every flow
    assert stats.added == len(flows)

    assert ping(a, b.ip)
    assert ping(b, a.ip)
    # the responder answered for a remote port nobody could have answered for
    assert not ping(a, "10.0.0.99")
    assert "02:00:00:00:00:99" in neighbour(a, "10.0.0.99")
    # overlapping networks are isolated (c reaches its own network's d, and not a)
    assert ping(c, d.ip)
    assert not ping(a, c.ip)
    assert not ping(c, a.ip)
    # a spoofed source address never reaches b (b knows where .50 is: no ARP needed, so
    # only the source check decides)
    in_netns(a.netns, "ip", "addr", "add", "10.0.0.50/24", "dev", "eth0")
    neigh = ("ip", "neigh", "replace", "10.0.0.50", "lladdr", a.mac, "dev", "eth0")
    assert in_netns(b.netns, *neigh, "nud", "permanent").returncode == 0
    assert ping(a, b.ip, "-I", a.ip)
    assert not ping(a, b.ip, "-I", "10.0.0.50")
    assert ping(a, b.ip)
