"""Many chassis for real: Geneve and VXLAN overlays between OVS instances in namespaces.

One etcd, one `wyvern api`, and chassis that are each a namespace with their own OVS and
`wyvern agent` (tests/e2e/multichassis.py). VMs on different chassis ping, talk TCP
(multi-megabyte, which only works when the MTU leaves room for the encapsulation), get
DHCP leases from their own chassis, are routed across chassis without a detour, and
are filtered by security groups whose members live elsewhere. A broadcast reaches only
the chassis that host the network: a third chassis sees nothing on its underlay NIC.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import (
    eventually,
    ip_of,
    ping,
    pings,
)
from tests.southbound.conftest import in_netns, missing_prereq

PY = sys.executable


@pytest.fixture
def three(tmp_path: Path) -> Iterator[Cluster]:
    """Three chassis on one underlay."""
    reason = missing_prereq()
    if reason:
        pytest.skip(reason)
    with cluster(tmp_path, 3) as c:
        yield c


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Cluster]:
    reason = missing_prereq()
    if reason:
        pytest.skip(reason)
    with cluster(tmp_path, 2) as c:
        yield c


def network(c: Cluster, name: str, cidr: str, **attrs: Any) -> dict[str, Any]:
    net = c.post("networks", name=name, **attrs)
    c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return c.get("networks", net["id"])


def wait_seen_by(c: Cluster, port: dict[str, Any], *hvs: Hv, timeout: float = 15) -> None:
    """Until the chassis HVS have a tunnel flow to PORT (its status reached them)."""
    key = f"reg15={port_key(c, port)}"

    def ready() -> bool:
        return all(any((key in f and "output:65024" in f) or (key in f and "output:65025" in f)
                       for f in hv.flows()) for hv in hvs)  # fmt: skip

    eventually(ready, f"tunnel flows to {port['id']} on {[h.name for h in hvs]}", timeout)


def port_key(c: Cluster, port: dict[str, Any]) -> str:
    """The port's key as OVS prints reg15 (hex)."""
    del c
    return hex(int(port.get("_key", 0))) if "_key" in port else ""


# A sender of N bytes and a counting receiver (multi-megabyte TCP across chassis).
SINK = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); conn.settimeout(30); total = 0
while data := conn.recv(65536):
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""
SOURCE = """
import os, socket, sys
n = int(sys.argv[2])
c = socket.create_connection((sys.argv[1], 5001), timeout=10); c.settimeout(30)
c.sendall(os.urandom(n)); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def transfer(hv_server: Hv, server_ns: str, client_ns: str, server_ip: str, n: int) -> None:
    server = hv_server.background(server_ns, PY, "-c", SINK)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    out = in_netns(client_ns, PY, "-c", SOURCE, server_ip, str(n), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == str(n)


@pytest.mark.parametrize("network_type", ["geneve", "vxlan"])
def test_ping_and_multi_megabyte_tcp_across_chassis(two: Cluster, network_type: str) -> None:
    c = two
    net = network(c, network_type, "10.61.0.0/24", **{"provider:network_type": network_type})
    assert net["mtu"] == {"geneve": 1438, "vxlan": 1450}[network_type]
    p1, ns1 = c.hv[0].vm(net, "vm1")
    p2, ns2 = c.hv[1].vm(net, "vm2")
    eventually(lambda: pings(ns1, ip_of(p2)), "a ping across chassis", timeout=15)
    out = ping(ns2, ip_of(p1), count=3)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout + c.logs()
    # Full-size segments both ways: 8 MB from chassis 0 to 1, 3 MB back.
    transfer(c.hv[1], ns2, ns1, ip_of(p2), 8_000_000)
    transfer(c.hv[0], ns1, ns2, ip_of(p1), 3_000_000)
    # It really went through the tunnel of the network's type, keyed by the network.
    dump = c.hv[0].ovs.appctl("dpctl/dump-flows")
    assert "tnl_push(tnl_port(" in dump, dump
    assert (network_type == "geneve") == ("geneve" in dump), dump
