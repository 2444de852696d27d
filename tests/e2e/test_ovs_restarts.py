"""OVS's own daemons restarted under a running agent (issue 11: faults the agent survives).

Two real chassis (tests/e2e/multichassis.py), VMs pinging each other with `ping -i 0.01`,
one on the same chassis and one across a tunnel:

- ovs-vswitchd killed with SIGKILL and started again on the same database: it comes
  back with an empty flow table, no Geneve option map and no underlay address. The
  agent (the same process) must notice at once and put everything back: traffic flows
  again within 2 s of vswitchd being up, the flow table equals the one before, a TCP
  stream across the restart loses no byte and DHCP answers again.
- ovsdb-server killed with SIGKILL and started again on the same file: the bindings and
  tunnels are intact, and a port plugged afterwards is bound and forwards (the agent
  follows the new database server).

The figures (pings lost, the outage after vswitchd is up) are printed with -s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import kill_proc
from tests.e2e.multichassis import Hv, cluster
from tests.e2e.test_dataplane import (
    PY,
    STREAM_RECEIVER,
    STREAM_SENDER,
    dhcp_dir,
    eventually,
    ip_of,
    pings,
    read_env,
    udhcpc,
)
from tests.e2e.test_multichassis import network
from wyvern.southbound.ovs import OvsInstance

pytestmark = pytest.mark.system

INTERVAL = 0.01  # ping -i: one echo every 10 ms
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class PingRun:
    """What a `ping -D -i 0.01` saw: reply times, and how many went unanswered."""

    replies: list[float]
    sent: int
    received: int

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def first_reply_after(self, t: float) -> float | None:
        return next((r for r in self.replies if r >= t), None)

    def last_reply_before(self, t: float) -> float | None:
        return next((r for r in reversed(self.replies) if r < t), None)

    def longest_silence(self) -> float:
        """The longest time between two replies (a ping in flight when ping stopped
        counts as lost, so this is the measure of an interruption that cannot lie)."""
        pairs = zip(self.replies, self.replies[1:], strict=False)
        return max((b - a for a, b in pairs), default=0.0)


class Pinger:
    """`ping -n -D -i 0.01` from NETNS to IP in the background, until `stop()`."""

    def __init__(self, hv: Hv, netns: str, ip: str) -> None:
        self.proc = hv.background(netns, "ping", "-n", "-D", "-i", str(INTERVAL), "-W", "1", ip)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().startswith("PING")
        assert _REPLY.match(self.proc.stdout.readline())  # replies are flowing

    def stop(self) -> PingRun:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            kill_proc(self.proc)
            raise
        replies = [float(m.group(1)) for m in map(_REPLY.match, out.splitlines()) if m]
        summary = _SUMMARY.search(out)
        assert summary, out[-2000:]
        return PingRun(replies, int(summary.group(1)), int(summary.group(2)))


def flow_table(hv: Hv) -> list[str]:
    """br-int's flows without counters, sorted (a restarted switch has no counters)."""
    return hv.flows()


def tlv_map(hv: Hv) -> str:
    return hv.ovs.ofctl("-O", "OpenFlow14", "dump-tlv-map", "br-int")


def kill_daemon(ovs: OvsInstance, daemon: str) -> None:
    """SIGKILL our DAEMON (by its pidfile) and wait until it is gone."""
    pid = ovs.pid(daemon)
    assert pid is not None, f"{daemon} is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and ovs.pid(daemon) is not None:
        assert time.monotonic() < deadline, f"{daemon} pid {pid} survived SIGKILL"
        time.sleep(0.01)


def restart_missing(ovs: OvsInstance) -> float:
    """Start whichever daemon of OVS is down, as before (same run dir, database and
    namespace); returns the wall-clock time it was up (`--detach` returned)."""
    OvsInstance.start(ovs.run_dir, ovs.netns)
    assert ovs.running
    return time.time()


def first_installs(hv: Hv) -> int:
    """How many times an agent process on HV did its first install (1: never restarted)."""
    assert hv.agent is not None
    return hv.agent.output(tail=10**8).count("first install done")


def test_vswitchd_killed_and_restarted_flows_are_back_within_2s(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        hv0, hv1 = c.hv
        net = network(c, "vsd", "10.81.0.0/24")
        _, ns_a = hv0.vm(net, "a")
        p_b, ns_b = hv0.vm(net, "b")  # same chassis as a
        p_c, _ = hv1.vm(net, "c")  # across the tunnel
        eventually(lambda: pings(ns_a, ip_of(p_b)), "a ping on chassis 0", timeout=15)
        eventually(lambda: pings(ns_a, ip_of(p_c)), "a ping across the tunnel", timeout=15)
        assert hv0.agent is not None
        agent_pid = hv0.agent.pid
        before = flow_table(hv0)
        tlv_before = tlv_map(hv0)
        assert before and "tun_metadata0" in tlv_before

        # A TCP stream (about 6 s) runs across the restart too; its conntrack entry goes
        # with the old vswitchd, the new one picks the connection up mid-stream.
        receiver = hv0.background(ns_b, PY, "-c", STREAM_RECEIVER)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        sender = hv0.background(ns_a, PY, "-c", STREAM_SENDER, ip_of(p_b))
        assert sender.stdout is not None and sender.stdout.readline().strip() == "connected"
        local = Pinger(hv0, ns_a, ip_of(p_b))
        remote = Pinger(hv0, ns_a, ip_of(p_c))
        time.sleep(0.5)
        killed = time.time()
        kill_daemon(hv0.ovs, "ovs-vswitchd")
        time.sleep(0.5)  # down for a while, as a real crash and restart would be
        up = restart_missing(hv0.ovs)
        # Wait (bounded) for both to answer again, then stop the pingers.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if pings(ns_a, ip_of(p_b), "-c", "1") and pings(ns_a, ip_of(p_c), "-c", "1"):
                break
            time.sleep(0.1)
        time.sleep(0.3)
        runs = {"same chassis": local.stop(), "across the tunnel": remote.stop()}

        figures = []
        for what, run in runs.items():
            first = run.first_reply_after(up)
            last = run.last_reply_before(killed)
            assert last is not None, f"{what}: no reply before the kill"
            gap = f"{first - last:.2f} s" if first is not None else "never answered again"
            after_up = f"{first - up:.2f} s" if first is not None else "never"
            figures.append(
                f"{what}: {run.lost} of {run.sent} lost ({run.lost * INTERVAL:.2f} s), "
                f"no reply for {gap}, vswitchd down {up - killed:.2f} s, "
                f"outage after it is up {after_up}"
            )
        log = hv0.agent.output(tail=10**8)
        restored = [x for x in log.splitlines() if "restored after" in x]
        print("\nvswitchd restart: " + "; ".join(figures) + f"; load {os.getloadavg()[0]:.2f}")
        print("agent: " + (restored[-1] if restored else "(no restore logged)"))
        for (what, run), figure in zip(runs.items(), figures, strict=True):
            first = run.first_reply_after(up)
            assert first is not None, f"{what}: never answered again: {figure}\n{c.logs()}"
            assert first - up <= 2.0, f"{what}: {figure}\n{c.logs()}"

        sent, _ = sender.communicate(timeout=40)
        received, _ = receiver.communicate(timeout=40)
        assert sent.startswith("sent ") and received.startswith("received "), (sent, received)
        assert sent.split()[1:] == received.split()[1:]  # every byte, in order, no reset

        # Everything the agent had installed is back, and nothing else.
        eventually(lambda: flow_table(hv0) == before, "the same flow table", timeout=5)
        assert tlv_map(hv0) == tlv_before
        frags = hv0.ovs.ofctl("-O", "OpenFlow14", "get-frags", "br-int").strip()
        assert frags == "nx-match"  # (the new vswitchd started with "normal")
        # The packet-in services are back too: a VM on the restarted chassis gets a lease.
        work = dhcp_dir(hv0, timeout=5)
        out = udhcpc(ns_b, work)
        assert out.returncode == 0, out.stdout + out.stderr + hv0.agent_log()
        assert read_env(work / "udhcpc.bound")["ip"] == ip_of(p_b)
        # By the same agent process: it noticed, it did not restart.
        assert hv0.agent.alive() and hv0.agent.pid == agent_pid
        assert first_installs(hv0) == 1


def test_ovsdb_server_killed_and_restarted_bindings_and_tunnels_hold(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        hv0, hv1 = c.hv
        net = network(c, "dbr", "10.82.0.0/24")
        p_a, ns_a = hv0.vm(net, "a")
        p_b, _ = hv0.vm(net, "b")
        p_c, ns_c = hv1.vm(net, "c")
        eventually(lambda: pings(ns_a, ip_of(p_b)), "a ping on chassis 0", timeout=15)
        eventually(lambda: pings(ns_a, ip_of(p_c)), "a ping across the tunnel", timeout=15)
        assert hv0.agent is not None
        agent_pid = hv0.agent.pid
        tunnels = hv0.ovs.vsctl("--columns=name,type,ofport,options", "find", "Interface",
                                "type!=system", "type!=internal", "type!=\"\"")  # fmt: skip
        before = flow_table(hv0)

        pinger = Pinger(hv0, ns_a, ip_of(p_c))
        killed = time.time()
        kill_daemon(hv0.ovs, "ovsdb-server")
        time.sleep(0.5)
        up = restart_missing(hv0.ovs)
        time.sleep(2)  # (the agent and vswitchd reconnect meanwhile)
        run = pinger.stop()
        silence = run.longest_silence()
        print(
            f"\novsdb-server restart: {run.lost} of {run.sent} pings lost across the tunnel, "
            f"longest silence {silence:.3f} s; down {up - killed:.2f} s; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        assert silence < 1.0, run  # (the datapath never depended on the database)

        # Bindings: the ports are still ACTIVE, with the same flows; tunnels: the same ports.
        for port in (p_a, p_b):
            assert c.get("ports", port["id"])["status"] == "ACTIVE"
        assert hv0.ovs.vsctl("--columns=name,type,ofport,options", "find", "Interface",
                             "type!=system", "type!=internal", "type!=\"\"") == tunnels  # fmt: skip
        assert "geneve" in tunnels and "vxlan" in tunnels
        assert flow_table(hv0) == before
        assert pings(ns_a, ip_of(p_b)) and pings(ns_a, ip_of(p_c))

        # A port plugged after the restart is bound (the agent follows the new server)
        # and forwards, locally and across the tunnel.
        p_d, ns_d = hv0.vm(net, "d")
        assert c.get("ports", p_d["id"])["status"] == "ACTIVE"
        eventually(lambda: pings(ns_d, ip_of(p_a)), "the new port on chassis 0", timeout=10)
        eventually(lambda: pings(ns_c, ip_of(p_d)), "the new port across the tunnel", timeout=10)
        # The agent streams the Interface table from the new server again (not polling).
        assert "the Interface monitor is back" in hv0.agent.output(tail=10**8)
        assert hv0.agent.alive() and hv0.agent.pid == agent_pid
        assert first_installs(hv0) == 1
