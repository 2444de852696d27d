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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import ApiServer, Proc, process_env, spawn, start_api, wyvern_command
from tests.southbound.conftest import in_netns, missing_prereq, unique
from wyvern.southbound import vif
from wyvern.southbound.ovs import OvsInstance, netns_exists


@dataclass
class Chassis:
    api: ApiServer
    ovs: OvsInstance
    run_dir: Path
    env: dict[str, str]
    agent: Proc | None = None
    vms: list[tuple[str, str]] = field(default_factory=list)  # (port id, netns)

    @property
    def base(self) -> str:
        return self.api.url + "v2.0"

    def post(self, path: str, **attrs: Any) -> dict[str, Any]:
        key = {"networks": "network", "subnets": "subnet", "ports": "port"}[path]
        resp = requests.post(f"{self.base}/{path}", json={key: attrs}, timeout=10)
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()[key]
        return body

    def wyvern(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*wyvern_command(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_agent(self) -> Proc:
        self.agent = spawn(
            [*wyvern_command(), "agent"], self.run_dir / "agent.out", self.env, "wyvern agent"
        )
        return self.agent

    def wait_agent_alive(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agent is not None and self.agent.alive(), self.agent_log()
            agents = requests.get(f"{self.base}/agents", timeout=5).json()["agents"]
            if any(a["alive"] for a in agents):
                return
            time.sleep(0.1)
        raise AssertionError(f"agent not alive after {timeout} s:\n{self.agent_log()}")

    def agent_log(self) -> str:
        return self.agent.output() if self.agent is not None else "(no agent)"

    def plug(self, port: dict[str, Any]) -> str:
        ns = unique("wve-vm-")
        self.vms.append((port["id"], ns))
        out = self.wyvern("plug", port["id"], "--netns", ns, "--api", self.api.url)
        assert out.returncode == 0, out.stdout + out.stderr
        return ns

    def wait_active(self, port: dict[str, Any], timeout: float = 15) -> None:
        out = self.wyvern("wait", port["id"], "--timeout", str(timeout), "--api", self.api.url)
        assert out.returncode == 0, out.stderr + self.agent_log()

    def flows(self) -> list[str]:
        text = self.ovs.ofctl(
            "-O", "OpenFlow14", "--no-stats", "--no-names", "dump-flows", "br-int"
        )
        return sorted(line.strip() for line in text.splitlines() if "table=" in line)


@pytest.fixture
def chassis(tmp_path: Path) -> Iterator[Chassis]:
    reason = missing_prereq()
    if reason:
        pytest.skip(reason)
    run_dir = tmp_path / "run"
    ovs = OvsInstance.start(netns=unique("wve-ovs-"))
    api: ApiServer | None = None
    c: Chassis | None = None
    try:
        ovs.ensure_bridge("br-int")
        api = start_api(run_dir)
        env = process_env(
            {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": "sqlite",
                "WYVERN_OVS_MODE": "attach",
                "WYVERN_OVS_RUN_DIR": str(ovs.run_dir),
                "WYVERN_OVS_NETNS": ovs.netns or "",
                "WYVERN_CHASSIS_NAME": unique("chassis-"),
                "WYVERN_AGENT_LEASE_TTL": "3",
            }
        )
        c = Chassis(api, ovs, run_dir, env)
        c.start_agent()
        c.wait_agent_alive()
        yield c
    finally:
        if c is not None:
            for port_id, ns in c.vms:
                try:
                    vif.unplug(ovs, port_id, delete_netns=True)
                finally:
                    if netns_exists(ns):
                        subprocess.run(["ip", "netns", "del", ns], check=False)
            if c.agent is not None:
                c.agent.stop()
        if api is not None:
            api.stop()
        ovs.stop()


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
    assert "flows (=" not in restarted_log(), restarted_log()


def test_a_vm_gets_its_port_address_by_dhcp(chassis: Chassis) -> None:
    from wyvern.controller import packetin

    if not hasattr(packetin.PacketInDispatcher, "run"):
        pytest.skip("the packet-in service (PacketInDispatcher.run) has not landed yet")
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
