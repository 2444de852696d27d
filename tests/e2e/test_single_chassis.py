"""One chassis, for real: `wyvern api` + `wyvern agent` processes, a private OVS, two VMs.

Objects are created over HTTP, VMs are plugged with `wyvern plug` and waited for with
`wyvern wait`; then ping and a TCP transfer must work. The restart test SIGKILLs the agent
under a continuous ping and starts it again: not one packet may be lost, and the switch's
flows must be exactly the ones it had (the restarted agent sends nothing).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.conftest import Chassis
from tests.southbound.conftest import in_netns, unique

pytestmark = pytest.mark.system


def two_vms(c: Chassis) -> tuple[str, str, str]:
    """A network with a subnet and two plugged, ACTIVE ports: (netns 1, netns 2, ip 2)."""
    net = c.post("networks", name="e2e")
    c.post("subnets", network_id=net["id"], cidr="10.42.0.0/24", ip_version=4)
    p1 = c.post("ports", network_id=net["id"], name="vm1")
    p2 = c.post("ports", network_id=net["id"], name="vm2")
    ns1, ns2 = c.plug(p1), c.plug(p2)
    c.wait_active(p1)
    c.wait_active(p2)
    shown = requests.get(f"{c.base}/ports/{p1['id']}", timeout=5).json()["port"]
    assert shown["status"] == "ACTIVE" and shown["binding:vif_type"] == "ovs"
    return ns1, ns2, p2["fixed_ips"][0]["ip_address"]


TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); total = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""
TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5001), timeout=10)
c.sendall(b"x" * 2_000_000); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def test_two_vms_ping_and_talk_tcp(chassis: Chassis) -> None:
    ns1, ns2, ip2 = two_vms(chassis)
    ping = in_netns(ns1, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip2)
    assert ping.returncode == 0, ping.stdout + ping.stderr + chassis.agent_log()

    server = subprocess.Popen(
        ["ip", "netns", "exec", ns2, sys.executable, "-c", TCP_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = in_netns(ns1, sys.executable, "-c", TCP_CLIENT, ip2, timeout=20)
        assert client.returncode == 0, client.stderr
        assert client.stdout.strip() == "2000000"
    finally:
        server.kill()
        server.wait()

    # `wyvern unplug`: the agent unbinds the port and the API shows it DOWN again.
    port_id = chassis.vms[0][0]
    out = chassis.wyvern("unplug", port_id)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        port = requests.get(f"{chassis.base}/ports/{port_id}", timeout=5).json()["port"]
        if port["status"] == "DOWN":
            break
        time.sleep(0.1)
    assert port["status"] == "DOWN"
    # ... and `wyvern wait` gives up on it, with a non-zero exit.
    out = chassis.wyvern("wait", port_id, "--timeout", "0.5", "--api", chassis.api.url)
    assert out.returncode == 1 and "still DOWN" in out.stderr


def test_agent_sigkill_and_restart_loses_no_packet(chassis: Chassis) -> None:
    ns1, _, ip2 = two_vms(chassis)
    before = chassis.flows()
    count = 250  # 5 s at 20 ms
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", ns1, "ping", "-c", str(count), "-i", "0.02", "-W", "1", ip2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert chassis.agent is not None
        chassis.agent.signal(signal.SIGKILL)
        chassis.agent.process.wait(timeout=10)
        log_path = chassis.agent.log_path
        offset = log_path.stat().st_size
        time.sleep(0.5)
        chassis.start_agent()
        out, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m is not None, out
    assert (int(m.group(1)), int(m.group(2))) == (count, count), out

    # The restarted agent came up, read the switch and sent nothing: same flows.
    def restarted_log() -> str:
        return log_path.read_bytes()[offset:].decode(errors="replace")

    deadline = time.monotonic() + 10
    while "initial view" not in restarted_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert chassis.agent is not None and chassis.agent.alive(), chassis.agent_log()
    assert "initial view" in restarted_log(), restarted_log()
    assert chassis.flows() == before
    # The first agent's install was logged ("+N ~0 -0 flows (=0)"); the restarted one
    # logged none, and says it sent nothing.
    assert "flows (=" in log_path.read_bytes()[:offset].decode(errors="replace")
    assert "flows (=" not in restarted_log(), restarted_log()
    assert "first install done: 0 flow changes sent" in restarted_log(), restarted_log()


def test_a_vm_gets_its_port_address_by_dhcp(chassis: Chassis) -> None:
    net = chassis.post("networks", name="dhcp")
    chassis.post("subnets", network_id=net["id"], cidr="10.43.0.0/24", ip_version=4)
    port = chassis.post("ports", network_id=net["id"], name="vm")
    ns = unique("wve-vm-")
    chassis.vms.append((port["id"], ns))
    out = chassis.wyvern("plug", port["id"], "--netns", ns, "--no-ip", "--api", chassis.api.url)
    assert out.returncode == 0, out.stdout + out.stderr
    chassis.wait_active(port)
    udhcpc = in_netns(
        ns, "busybox", "udhcpc", "-f", "-n", "-q", "-t", "5", "-T", "1", "-i", "eth0",
        "-s", "/bin/true", timeout=20,
    )  # fmt: skip
    ip = port["fixed_ips"][0]["ip_address"]
    assert udhcpc.returncode == 0, udhcpc.stdout + udhcpc.stderr + chassis.agent_log()
    assert f"lease of {ip} obtained" in udhcpc.stdout + udhcpc.stderr
