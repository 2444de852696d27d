"""Real DHCP clients (isc dhclient, busybox udhcpc) get their port's address from the
in-process DHCP service, over a real userspace OVS and the br-int.mgmt channel.

The flows are hand-written and minimal (the classifier's job in the product): a client
packet from the VM's port gets the port and network keys loaded and is punted with
userdata PUNT_DHCP4; the reply is a packet-out straight to the VM's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dhcpclients import DHCLIENT_SCRIPT, UDHCPC_SCRIPT
from tests.southbound.conftest import in_netns, ovs, unique  # noqa: F401
from wyvern.apps import punts
from wyvern.controller.packetin import PacketInDispatcher
from wyvern.model.view import Binding, LocalView, Network, Port, Subnet
from wyvern.southbound import vif
from wyvern.southbound.ofchannel import OfChannel
from wyvern.southbound.ovs import OvsInstance

NET_KEY = 4242
MTU = 1400
NET_ID, SUBNET_ID = "net-dhcp", "subnet-dhcp"


pytestmark = pytest.mark.system


def make_view() -> LocalView:
    view = LocalView(chassis_name="test")
    view.apply("network", NET_ID, Network.from_obj({"id": NET_ID, "_key": NET_KEY, "mtu": MTU}))
    view.apply(
        "subnet",
        SUBNET_ID,
        Subnet.from_obj(
            {
                "id": SUBNET_ID,
                "network_id": NET_ID,
                "cidr": "10.1.0.0/24",
                "ip_version": 4,
                "gateway_ip": "10.1.0.1",
                "dns_nameservers": ["10.1.0.53"],
                "host_routes": [{"destination": "192.168.77.0/24", "nexthop": "10.1.0.254"}],
            }
        ),
    )
    return view


def plug_port(ovs_: OvsInstance, view: LocalView, key: int, ip: str) -> vif.Vif:
    port_id = str(uuid.uuid4())
    mac = f"fa:16:3e:00:01:{key:02x}"
    v = vif.plug(ovs_, port_id, mac, unique("wvt-dhcp-"), MTU)
    port = Port.from_obj(
        {
            "id": port_id,
            "network_id": NET_ID,
            "_key": key,
            "mac_address": mac,
            "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": ip}],
            "name": f"vm-{key}",
        }
    )
    view.apply("port", port_id, port)
    view.apply("binding", port_id, Binding(port_id, v.ofport))
    ovs_.ofctl(
        "-O",
        "OpenFlow14",
        "add-flow",
        "br-int",
        f"table=0,priority=100,in_port={v.ofport},udp,tp_src=68,tp_dst=67,"
        f"actions=load:{key}->NXM_NX_REG14[],load:{NET_KEY}->OXM_OF_METADATA[],"
        f"controller(userdata={punts.PUNT_DHCP4:02x})",
    )
    return v


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip("'\"")
    return out


def kill_from_pidfile(pidfile: Path, must_contain: str) -> None:
    """Stop the dhclient daemon we started (checked by its command line)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if must_contain in cmdline:
            os.kill(pid, signal.SIGKILL)


async def run_client(*cmd: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def ipv4_of(netns: str) -> str:
    return in_netns(netns, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout


DHCLIENT_CONF = """
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        host-name, interface-mtu, rfc3442-classless-static-routes;
"""


STALE_LEASE = """lease {
  interface "eth0";
  fixed-address 10.1.0.99;
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 10.1.0.1;
  renew 4 2037/01/01 00:00:00;
  rebind 4 2037/01/01 00:00:00;
  expire 4 2037/01/01 00:00:00;
}
"""


@pytest.fixture
def work() -> Iterator[Path]:
    """A short private dir (dhclient and unix sockets dislike long paths) with the scripts."""
    path = Path(f"/tmp/wvt-dhcp-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    try:
        for name, text in (
            ("dhclient.sh", DHCLIENT_SCRIPT.format(dir=path)),
            ("udhcpc.sh", UDHCPC_SCRIPT.format(dir=path)),
            ("dhclient.conf", DHCLIENT_CONF),
        ):
            (path / name).write_text(text)
            (path / name).chmod(0o755)
        yield path
    finally:
        kill_from_pidfile(path / "dhclient.pid", str(path))
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def plugged(ovs: OvsInstance) -> Iterator[list[vif.Vif]]:  # noqa: F811
    vifs: list[vif.Vif] = []
    try:
        yield vifs
    finally:
        for v in vifs:
            vif.unplug(ovs, v.port_id, delete_netns=True)


def dhclient_cmd(netns: str, work: Path) -> list[str]:
    return [
        "ip", "netns", "exec", netns,
        "dhclient", "-1", "-v", "-cf", str(work / "dhclient.conf"),
        "-sf", str(work / "dhclient.sh"), "-pf", str(work / "dhclient.pid"),
        "-lf", str(work / "dhclient.leases"), "eth0",
    ]  # fmt: skip


def udhcpc_cmd(netns: str, work: Path) -> list[str]:
    return [
        "ip", "netns", "exec", netns,
        "busybox", "udhcpc", "-f", "-n", "-q", "-t", "5", "-T", "1",
        "-i", "eth0", "-s", str(work / "udhcpc.sh"), "-O", "mtu", "-O", "staticroutes",
    ]  # fmt: skip


def serve_while(
    ovs_: OvsInstance, dispatcher: PacketInDispatcher, *commands: list[str]
) -> list[tuple[int, str]]:
    """Run the DHCP service on the br-int.mgmt channel while COMMANDS run one by one."""

    async def scenario() -> list[tuple[int, str]]:
        async with OfChannel(ovs_.mgmt_path("br-int")) as channel:
            await channel.wait_connected()
            service = asyncio.create_task(dispatcher.run(channel))
            try:
                return [await run_client(*cmd) for cmd in commands]
            finally:
                service.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service

    return asyncio.run(scenario())


def test_dhclient_and_udhcpc_get_their_port_address(
    ovs: OvsInstance,  # noqa: F811
    work: Path,
    plugged: list[vif.Vif],
) -> None:
    view = make_view()
    vm1 = plug_port(ovs, view, 11, "10.1.0.11")
    plugged.append(vm1)
    vm2 = plug_port(ovs, view, 12, "10.1.0.12")
    plugged.append(vm2)
    dispatcher = PacketInDispatcher(view)

    (rc1, out1), (rc2, out2) = serve_while(
        ovs, dispatcher, dhclient_cmd(vm1.netns, work), udhcpc_cmd(vm2.netns, work)
    )
    assert rc1 == 0, out1
    assert rc2 == 0, out2

    # isc dhclient: address, router, MTU, DNS, routes, host name as its script saw them.
    env = read_env(work / "dhclient.BOUND")
    assert env["new_ip_address"] == "10.1.0.11"
    assert env["new_subnet_mask"] == "255.255.255.0"
    assert env["new_routers"] == "10.1.0.1"
    assert env["new_interface_mtu"] == str(MTU)
    assert env["new_domain_name_servers"] == "10.1.0.53"
    assert env["new_host_name"] == "host-10-1-0-11"  # (no dns_name: Neutron's host-<ip>)
    assert env["new_domain_name"] == "openstacklocal"
    assert env["new_dhcp_server_identifier"] == "10.1.0.1"
    assert env["new_dhcp_lease_time"] == "86400"
    # (no router owns the gateway here: the metadata service's on-link route comes first)
    assert env["new_rfc3442_classless_static_routes"] == (
        "32 169 254 169 254 0 0 0 0 24 192 168 77 10 1 0 254 0 10 1 0 1"
    )
    assert "inet 10.1.0.11/24" in ipv4_of(vm1.netns)
    assert "10.1.0.11" in (work / "dhclient.leases").read_text()

    # busybox udhcpc.
    env = read_env(work / "udhcpc.bound")
    assert env["ip"] == "10.1.0.12"
    assert env["mask"] == "24"
    assert env["router"].split() == ["10.1.0.1"]
    assert env["mtu"] == str(MTU)
    assert env["dns"].split() == ["10.1.0.53"]
    assert env["serverid"] == "10.1.0.1"
    assert (
        env["staticroutes"]
        == "169.254.169.254/32 0.0.0.0 192.168.77.0/24 10.1.0.254 0.0.0.0/0 10.1.0.1"
    )
    assert "inet 10.1.0.12/24" in ipv4_of(vm2.netns)

    assert dispatcher.stats["dhcp4_offer"] >= 2
    assert dispatcher.stats["dhcp4_ack"] >= 2
    assert dispatcher.stats["rate_limited"] == 0


def test_stale_lease_is_nakked_then_the_port_address_is_leased(
    ovs: OvsInstance,  # noqa: F811
    work: Path,
    plugged: list[vif.Vif],
) -> None:
    view = make_view()
    vm = plug_port(ovs, view, 21, "10.1.0.21")
    plugged.append(vm)
    # dhclient remembers 10.1.0.99 and asks for it first (INIT-REBOOT).
    (work / "dhclient.leases").write_text(STALE_LEASE)
    dispatcher = PacketInDispatcher(view)

    [(rc, out)] = serve_while(ovs, dispatcher, dhclient_cmd(vm.netns, work))
    assert rc == 0, out
    assert dispatcher.stats["dhcp4_nak"] >= 1
    assert "DHCPNAK" in out
    assert read_env(work / "dhclient.BOUND")["new_ip_address"] == "10.1.0.21"
    assert "inet 10.1.0.21/24" in ipv4_of(vm.netns)
