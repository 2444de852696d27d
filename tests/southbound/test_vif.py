"""VIF plumbing against real OVS: Nova/os-vif conventions, clean unplug, ping and TCP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.southbound.conftest import VM, VmFactory, in_netns, unique
from wyvern.southbound import vif
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsError, OvsInstance, netns_exists, run_cmd

pytestmark = pytest.mark.system


def external_ids(ovs: OvsInstance, name: str) -> dict[str, str]:
    out = ovs.vsctl("--format=json", "--columns=external_ids", "list", "Interface", name)
    return dict(json.loads(out)["data"][0][0][1])


def link(netns: str | None, ifname: str) -> dict[str, object] | None:
    cmd = ["ip", "-j", *(["-n", netns] if netns else []), "link", "show", "dev", ifname]
    proc = run_cmd(cmd, check=False)
    if proc.returncode != 0:
        return None
    found: dict[str, object] = json.loads(proc.stdout)[0]
    return found


def test_devname_follows_nova() -> None:
    assert vif.devname("3f2a9c1e-7b44-4d0a-9a55-0123456789ab") == "tap3f2a9c1e-7b"
    assert len(vif.devname(str(uuid.uuid4()))) == 14


def test_plug_follows_os_vif_and_unplug_removes_everything(ovs: OvsInstance) -> None:
    port_id = str(uuid.uuid4())
    netns = unique("wvt-vm-")
    tap = vif.devname(port_id)
    v = vif.plug(
        ovs, port_id, "02:AA:00:00:00:01", netns, 1400, ip_cidr="10.1.0.5/24", gateway="10.1.0.1"
    )
    try:
        assert v.devname == tap and v.ofport > 0 and v.netns_created
        assert ovs.vsctl("port-to-br", tap).strip() == "br-int"
        ext = external_ids(ovs, tap)
        assert ext["iface-id"] == port_id
        assert ext["attached-mac"] == "02:aa:00:00:00:01"
        assert ext["iface-status"] == "active"
        assert vif.find(ovs, port_id) == tap
        # The VM end: eth0 with the port's MAC and MTU, up, lo up, TX checksum off.
        eth0 = link(netns, "eth0")
        assert eth0 is not None
        assert eth0["address"] == "02:aa:00:00:00:01" and eth0["mtu"] == 1400
        assert "UP" in eth0["flags"]  # type: ignore[operator]
        lo = link(netns, "lo")
        assert lo is not None and "UP" in lo["flags"]  # type: ignore[operator]
        features = in_netns(netns, "ethtool", "-k", "eth0").stdout
        assert "tx-checksumming: off" in features
        assert "10.1.0.5/24" in in_netns(netns, "ip", "addr", "show", "eth0").stdout
        assert "default via 10.1.0.1" in in_netns(netns, "ip", "route").stdout
        # The host end lives in the OVS namespace only, never in ours.
        host = link(ovs.netns, tap)
        assert host is not None and host["mtu"] == 1400
        assert link(None, tap) is None
    finally:
        vif.unplug(ovs, port_id)
    assert vif.find(ovs, port_id) is None
    assert tap not in ovs.vsctl("list-ports", "br-int").split()
    assert link(ovs.netns, tap) is None
    assert not netns_exists(netns)  # we made it and it was empty
    vif.unplug(ovs, port_id)  # twice is fine


def test_plug_is_idempotent_and_unplug_keeps_a_foreign_netns(ovs: OvsInstance) -> None:
    port_id = str(uuid.uuid4())
    netns = unique("wvt-vm-")
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        first = vif.plug(ovs, port_id, "02:00:00:00:01:01", netns, 1500, ip_cidr="10.2.0.5/24")
        second = vif.plug(ovs, port_id, "02:00:00:00:01:01", netns, 1500, ip_cidr="10.2.0.5/24")
        assert second == first and not first.netns_created
        assert ovs.vsctl("list-ports", "br-int").split() == [first.devname]
        vif.unplug(ovs, port_id)
        assert netns_exists(netns)
        assert link(netns, "eth0") is None
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


# A tiny TCP sink in the VM: replies with the sha256 of what it received. No name
# lookups (python3 -m http.server hangs ~10 s on getfqdn in a namespace).
SERVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(20)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode()); c.close()
"""
CLIENT = """
import os, socket, sys, time
data = bytes.fromhex(sys.stdin.readline().strip()) * 4096
deadline = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
c.sendall(data); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def tcp_transfer(server: VM, client: VM, port: int = 5001) -> None:
    """Send 1 MiB from CLIENT to SERVER over TCP and check its hash came back."""
    chunk = os.urandom(256)
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server.netns, sys.executable, "-c", SERVER, server.ip, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        cli = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client.netns,
                sys.executable,
                "-c",
                CLIENT,
                server.ip,
                str(port),
            ],
            input=chunk.hex() + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == hashlib.sha256(chunk * 4096).hexdigest()
    finally:
        srv.kill()
        srv.wait()


def test_two_vms_ping_and_tcp_through_installed_flows(ovs: OvsInstance, vms: VmFactory) -> None:
    a, b = vms(1), vms(2)
    installer = FlowInstaller(ovs)
    stats = installer.sync(["table=0,priority=0,cookie=0x1 actions=NORMAL"])
    assert stats.added == 1
    ping = in_netns(a.netns, "ping", "-c", "3", "-i", "0.2", "-W", "1", b.ip)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout
    # TCP is what the checksum-offload fix is for: ping works without it.
    tcp_transfer(server=b, client=a)
    tcp_transfer(server=a, client=b, port=5002)


def test_a_failed_plug_leaves_nothing_behind(ovs: OvsInstance) -> None:
    port_id = str(uuid.uuid4())
    netns = unique("wvt-vm-")
    with pytest.raises(OvsError, match="br-nope"):
        vif.plug(ovs, port_id, "02:00:00:00:02:01", netns, bridge="br-nope")
    assert link(ovs.netns, vif.devname(port_id)) is None
    assert not netns_exists(netns)
