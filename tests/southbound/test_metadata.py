"""The metadata port on a real OVS: the namespace and veth, idempotent, repaired when a
killed `ip netns add` left a name with no namespace behind it, and listening sockets
that stay in the namespace they were made in."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.southbound.conftest import in_netns, ovs, unique
from wyvern.ir.metadata import METADATA_MAC
from wyvern.ir.ofports import METADATA_OFPORT
from wyvern.southbound import metadata
from wyvern.southbound.ovs import OvsInstance, netns_exists

pytestmark = pytest.mark.system
__all__ = ["ovs"]  # fixtures, imported for pytest

CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
print(s.recv(10).decode())
"""


@pytest.fixture
def chassis(ovs: OvsInstance) -> Iterator[str]:
    name = unique("md-chassis-")
    try:
        yield name
    finally:
        metadata.remove_port(ovs, "br-int", name)


def test_the_port_and_namespace_are_made_once_and_serve(ovs: OvsInstance, chassis: str) -> None:
    ns = metadata.ensure_port(ovs, "br-int", chassis)
    assert ns == metadata.namespace(chassis) and netns_exists(ns)
    assert metadata.ensure_port(ovs, "br-int", chassis) == ns  # idempotent
    dev = metadata.port_name(chassis)
    assert ovs.vsctl("get", "Interface", dev, "ofport").strip() == str(METADATA_OFPORT)
    shown = in_netns(ns, "ip", "addr", "show", "dev", metadata.IFNAME).stdout
    assert "169.254.169.254/32" in shown and "fe80::a9fe:a9fe/64" in shown
    assert METADATA_MAC in shown
    # Nothing of it in the host's namespace (which may be a cloud VM using the address).
    assert (
        "169.254.169.254"
        not in subprocess.run(["ip", "addr"], capture_output=True, text=True, check=True).stdout
    )

    sockets = metadata.listen(ns, port=80)
    try:
        for family, addr in ((socket.AF_INET, "169.254.169.254"), (socket.AF_INET6, "::1")):
            server = next(s for s in sockets if s.family == family)
            server.setblocking(True)
            client = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, addr],
                stdout=subprocess.PIPE,
                text=True,
            )
            conn, _ = server.accept()  # (made in the namespace: the connection came there)
            conn.sendall(b"hello")
            conn.close()
            out, _ = client.communicate(timeout=10)
            assert out.strip() == "hello"
    finally:
        for s in sockets:
            s.close()

    metadata.remove_port(ovs, "br-int", chassis)
    assert not netns_exists(ns)
    assert "wy-md" not in ovs.vsctl("list-ports", "br-int")


def test_a_name_left_without_a_namespace_is_made_again(ovs: OvsInstance, chassis: str) -> None:
    ns = metadata.namespace(chassis)
    Path("/run/netns").mkdir(exist_ok=True)
    Path(f"/run/netns/{ns}").touch()  # what a killed `ip netns add` leaves
    assert netns_exists(ns)
    assert in_netns(ns, "true").returncode != 0
    assert metadata.ensure_port(ovs, "br-int", chassis) == ns
    assert in_netns(ns, "ip", "link", "show", metadata.IFNAME).returncode == 0
