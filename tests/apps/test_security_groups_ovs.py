"""Security groups on a real userspace OVS: conntrack really admits, refuses and tracks.

The apps' flows (L2 family + security groups) are rendered and installed on a private OVS
with two VM namespaces; the packets are real pings and TCP connections.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.apps import scenario as sc
from tests.southbound.conftest import VM, VmFactory, in_netns, ovs, vms  # noqa: F401
from wyvern.apps.base import App
from wyvern.apps.security_groups import SecurityGroups
from wyvern.ir.render import render_flow
from wyvern.model.view import LocalView, record_from_obj
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsInstance

pytestmark = pytest.mark.system

SERVER = textwrap.dedent(
    """
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in map(int, sys.argv[1:]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(8)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            conn.sendall(b"hello %d" % key.fileobj.getsockname()[1])
            conn.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as s:
            print(s.recv(64).decode())
    except OSError as exc:
        print("failed", exc)
    """
)


def apps() -> list[App]:
    return [*sc.l2_apps(), SecurityGroups()]


def scenario_view(client: VM, server: VM) -> LocalView:
    """client: may send anything. server: admits TCP 22 and ICMP, and sends nothing itself,
    so every reply it sends passes only because conntrack knows the connection."""
    return sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port(
                client.vif.port_id, "n1", 1, client.mac, [client.ip], security_groups=["client"]
            ),
            sc.port(
                server.vif.port_id, "n1", 2, server.mac, [server.ip], security_groups=["server"]
            ),
        ],
        security_groups=[sc.security_group("client"), sc.security_group("server")],
        rules=[
            sc.rule("client-out", "client", "egress"),
            sc.rule("ssh", "server", "ingress", protocol="tcp", port_range_min=22),
            sc.rule("icmp", "server", "ingress", protocol="icmp"),
        ],
        local={client.vif.port_id: client.ofport, server.vif.port_id: server.ofport},
    )


@pytest.fixture
def tcp_server(vms: VmFactory) -> Iterator[tuple[VM, VM]]:  # noqa: F811
    """Both VMs listen (the server on 22 and 23, the client on 22): a refused connection
    is then the flows' doing, never a missing listener's."""
    client, server = vms(1), vms(2)
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", vm.netns, sys.executable, "-c", SERVER, *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for vm, ports in ((server, ("22", "23")), (client, ("22",)))
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        yield client, server
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def connect(vm: VM, ip: str, port: int) -> str:
    out = in_netns(vm.netns, sys.executable, "-c", CLIENT, ip, str(port), timeout=10)
    return out.stdout.strip()


def ping(vm: VM, ip: str) -> bool:
    out = in_netns(vm.netns, "ping", "-c", "1", "-W", "1", ip, timeout=10)
    return out.returncode == 0


def test_conntrack_admits_refuses_and_tracks(
    ovs: OvsInstance,  # noqa: F811
    tcp_server: tuple[VM, VM],
) -> None:
    client, server = tcp_server
    view = scenario_view(client, server)
    installer = FlowInstaller(ovs)
    # Without the security-group app every probe below succeeds: each refusal after it
    # is the groups' doing.
    installer.sync([render_flow(f) for f in sc.with_meters(ovs, sc.all_flows(view, sc.l2_apps()))])
    assert connect(client, server.ip, 23) == "hello 23"
    assert ping(server, client.ip)
    assert connect(server, client.ip, 22) == "hello 22"

    installer.sync([render_flow(f) for f in sc.with_meters(ovs, sc.all_flows(view, apps()))])

    # TCP 22: admitted; the SYN-ACK and the data come back through conntrack only
    assert connect(client, server.ip, 22) == "hello 22"
    # TCP 23: no rule, the SYN is dropped: the connection times out (no RST)
    assert connect(client, server.ip, 23).startswith("failed")
    # ping: admitted one way (the echo reply is tracked), refused the other way
    assert ping(client, server.ip)
    assert not ping(server, client.ip)
    # the server may not open a connection of its own (no egress rule)
    assert connect(server, client.ip, 22).startswith("failed")
    zones = ovs.appctl("dpctl/dump-conntrack")
    assert f"zone={client.ofport}" in zones and f"zone={server.ofport}" in zones, zones

    # a rule for TCP 23 arrives: only the server group's flows change, and 23 connects
    rule = sc.rule("telnet", "server", "ingress", protocol="tcp", port_range_min=23)
    view.apply("security_group_rule", "telnet", record_from_obj("security_group_rule", rule))
    flows = sc.with_meters(ovs, sc.all_flows(view, apps()))
    stats = installer.sync([render_flow(f) for f in flows])
    assert 0 < stats.changed < 10, stats
    assert connect(client, server.ip, 23) == "hello 23"


def test_sctp_port_ranges_are_enforced_by_ovs(
    ovs: OvsInstance,  # noqa: F811
    vms: VmFactory,  # noqa: F811
) -> None:
    """OVS classifies SCTP by the masked sctp_dst matches of a port range (stateless
    groups, so ofproto/trace shows the whole path without conntrack)."""
    client, server = vms(1), vms(2)
    view = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port(client.vif.port_id, "n1", 1, client.mac, [client.ip], security_groups=["c"]),
            sc.port(server.vif.port_id, "n1", 2, server.mac, [server.ip], security_groups=["s"]),
        ],
        security_groups=[
            sc.security_group("c", stateful=False),
            sc.security_group("s", stateful=False),
        ],
        rules=[
            sc.rule("out", "c", "egress"),
            sc.rule(
                "sctp", "s", "ingress", protocol="sctp", port_range_min=1000, port_range_max=1999
            ),
        ],
        local={client.vif.port_id: client.ofport, server.vif.port_id: server.ofport},
    )
    flows = sc.with_meters(ovs, sc.all_flows(view, apps()))
    FlowInstaller(ovs).sync([render_flow(f) for f in flows])

    def admitted(proto: str, dport: int) -> bool:
        packet = (
            f"in_port={client.ofport},{proto},dl_src={client.mac},dl_dst={server.mac},"
            f"nw_src={client.ip},nw_dst={server.ip},nw_ttl=64,{proto}_src=40000,{proto}_dst={dport}"
        )
        trace = ovs.appctl("ofproto/trace", "br-int", packet)
        return f"output:{server.ofport}" in trace

    assert admitted("sctp", 1000) and admitted("sctp", 1500) and admitted("sctp", 1999)
    assert not admitted("sctp", 999) and not admitted("sctp", 2000)
    assert not admitted("tcp", 1500)  # the range is SCTP's only
