"""Chassis coming and going, agents restarting, etcd members dying: the others carry on.

Real chassis (tests/e2e/multichassis.py): each a namespace with its own OVS and `wyvern
agent`, on one underlay. A chassis whose host dies (agent and OVS) is down for the others
once its lease runs out and BFD to it is down (no flow of theirs names its tunnel IP any
more), and back when it is; its agent alone dying leaves it up; an agent killed and
restarted under traffic costs the other chassis no packet; a burst of port creates
survives the etcd leader dying half-way.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.multichassis import Hv, cluster
from tests.e2e.test_dataplane import eventually, ip_of, ping, pings
from tests.e2e.test_multichassis import network
from tests.e2e.test_ovs_restarts import kill_daemon, restart_missing
from wyvern.nb.etcd import EtcdStore

pytestmark = pytest.mark.system


def names(hv: Hv, ip: str) -> list[str]:
    """The flows of HV's br-int that mention IP (a tunnel destination)."""
    return [f for f in hv.flows() if ip in f]


def crash_agent(hv: Hv) -> None:
    """SIGKILL the chassis's agent: no clean stop, its lease just runs out."""
    assert hv.agent is not None
    hv.agent.signal(signal.SIGKILL)
    hv.agent.process.wait(10)


def test_a_chassis_joins_and_leaves(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        net = network(c, "joins", "10.71.0.0/24")
        _, ns0 = c.hv[0].vm(net, "a")
        p1, _ = c.hv[1].vm(net, "b")
        eventually(lambda: pings(ns0, ip_of(p1)), "a ping across the first two", timeout=15)

        # A third chassis joins and gets a port on the existing network.
        hv2 = c.add_chassis(lease_ttl=3)
        c.wait_tunnels()
        p2, ns2 = hv2.vm(net, "c")
        eventually(lambda: pings(ns0, ip_of(p2)), "a ping to the new chassis", timeout=15)
        assert pings(ns2, ip_of(p1))
        assert names(c.hv[0], hv2.tunnel_ip) and names(c.hv[1], hv2.tunnel_ip)

        # Its agent dies, its OVS lives: the lease runs out, but BFD to it is up, so the
        # others keep it (as OVN keeps a chassis whose ovn-controller died) and its VM
        # stays reachable (docs/architecture.md: chassis liveness).
        crash_agent(hv2)
        agent0 = c.hv[0].agent
        assert agent0 is not None
        eventually(
            lambda: "its dataplane answers, kept" in agent0.output(tail=10**8),
            "chassis 0 seeing the lease gone",
            timeout=20,
        )
        assert names(c.hv[0], hv2.tunnel_ip) and names(c.hv[1], hv2.tunnel_ip)
        assert pings(ns0, ip_of(p2))

        # Its host goes too (ovs-vswitchd dies): BFD goes down, and no flow of the others
        # names it any more.
        kill_daemon(hv2.ovs, "ovs-vswitchd")
        killed = time.monotonic()
        for hv in c.hv[:2]:
            eventually(
                lambda hv=hv: not names(hv, hv2.tunnel_ip),
                f"{hv.name} dropping the flows to the dead chassis",
                timeout=20,
            )
        print(f"\nvswitchd killed -> dropped by both: {time.monotonic() - killed:.2f} s")
        out = ping(ns0, ip_of(p1), count=3)
        assert " 0% packet loss" in out.stdout, out.stdout + c.logs()
        assert not pings(ns0, ip_of(p2))  # unreachable: nothing tunnels there any more
        agents = requests.get(f"{c.base}/agents", timeout=5).json()["agents"]
        dead = [a for a in agents if a["configurations"]["chassis_name"] == hv2.name]
        assert [a["alive"] for a in dead] == [False], dead

        # Its host and agent are back: the others tunnel to it again.
        restart_missing(hv2.ovs)
        hv2.start_agent()
        hv2.wait_agent_alive()
        eventually(lambda: pings(ns0, ip_of(p2)), "a ping to the returning chassis", timeout=20)

        # A clean stop deregisters: its sessions go with it, the others drop it.
        assert hv2.agent is not None and hv2.agent.stop() == 0
        for hv in c.hv[:2]:
            eventually(
                lambda hv=hv: not names(hv, hv2.tunnel_ip),
                f"{hv.name} dropping the chassis that stopped",
                timeout=20,
            )


def test_agent_restart_on_one_chassis_loses_nothing_between_the_others(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        net = network(c, "restart", "10.72.0.0/24")
        _, ns0 = c.hv[0].vm(net, "a")
        p1, _ = c.hv[1].vm(net, "b")
        p2, _ = c.hv[2].vm(net, "c")  # chassis 2 hosts the network too (flood target)
        eventually(lambda: pings(ns0, ip_of(p1)), "a ping from 0 to 1", timeout=15)
        eventually(lambda: pings(ns0, ip_of(p2)), "a ping from 0 to 2", timeout=15)

        # A ping from chassis 0 to 1 runs while chassis 2's agent is killed and restarted.
        pinger = c.hv[0].background(ns0, "ping", "-n", "-i", "0.05", "-W", "1", ip_of(p1))
        assert pinger.stdout is not None
        assert pinger.stdout.readline().startswith("PING")
        assert pinger.stdout.readline().startswith("64 bytes")  # replies are flowing
        crash_agent(c.hv[2])
        c.hv[2].start_agent()
        c.hv[2].wait_agent_alive()
        c.hv[2].wait_active(p2)
        eventually(lambda: pings(ns0, ip_of(p2)), "chassis 2 reachable again", timeout=15)
        os.killpg(pinger.pid, signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
        summary = [line for line in out.splitlines() if "packets transmitted" in line]
        assert summary and " 0% packet loss" in summary[0], out[-2000:] + c.logs()


def test_a_burst_of_port_creates_survives_the_etcd_leader_dying(tmp_path: Path) -> None:
    with cluster(tmp_path, 2, etcd_members=3) as c:
        assert c.etcd is not None
        net = network(c, "burst", "10.73.0.0/24")
        created: list[dict[str, Any]] = []
        errors: list[str] = []
        under_way = threading.Event()

        def burst() -> None:
            for i in range(16):
                for _ in range(20):  # a client retries what failed while etcd re-elects
                    try:
                        resp = requests.post(
                            f"{c.base}/ports",
                            json={"port": {"network_id": net["id"], "name": f"burst-{i}"}},
                            timeout=15,
                        )
                    except requests.RequestException as exc:
                        errors.append(repr(exc))
                        continue
                    if resp.status_code == 201:
                        created.append(resp.json()["port"])
                        if len(created) == 4:
                            under_way.set()
                        break
                    errors.append(resp.text)
                    threading.Event().wait(0.2)

        writer = threading.Thread(target=burst)
        writer.start()
        leader = c.etcd.leader()
        assert under_way.wait(30), errors
        c.etcd.kill(leader)  # with creates in flight
        at_kill = len(created)
        writer.join(120)
        assert not writer.is_alive()
        assert len({p["name"] for p in created}) == 16, errors
        assert at_kill < 16

        # Every port of the network (a retry may have created one twice) is plugged on
        # one chassis or the other, and goes ACTIVE; every chassis has its flows.
        resp = requests.get(f"{c.base}/ports", params={"network_id": net["id"]}, timeout=10)
        ports = [p for p in resp.json()["ports"] if p["name"].startswith("burst-")]
        vms: list[tuple[dict[str, Any], str, Hv]] = []
        for i, port in enumerate(ports):
            hv = c.hv[i % 2]
            vms.append((port, hv.plug(port), hv))
        for port, _, hv in vms:
            hv.wait_active(port, timeout=30)
        for hv in c.hv:
            eventually(
                lambda hv=hv: all(
                    f"dl_dst={p['mac_address']}" in "".join(hv.flows())
                    or f"eth_dst={p['mac_address']}" in "".join(hv.flows())
                    for p, _, _ in vms
                ),
                f"{hv.name} having flows for every port",
                timeout=30,
            )
        (_, nsa, _), (pb, _, _) = vms[0], vms[1]
        (pc, _, _), (_, nsd, _) = vms[-2], vms[-1]
        eventually(lambda: pings(nsa, ip_of(pb)), "a ping across chassis", timeout=15)
        eventually(lambda: pings(nsd, ip_of(pc)), "another ping across chassis", timeout=15)


def unicast_to(hv: Hv, to: Hv) -> list[str]:
    """HV's flows that tunnel a packet to one port on chassis TO."""
    return [f for f in hv.flows() if f"{to.tunnel_ip}->tun_dst" in f and "REG15" in f]


def first_install(hv: Hv, nth: int) -> int | None:
    """Flow changes the NTH agent started on HV (1 = the first) sent at its first
    install, once it has logged it."""
    assert hv.agent is not None
    log = hv.agent.output(tail=10**8)  # every agent run appends to the same log
    lines = [x for x in log.splitlines() if "first install done" in x]
    if len(lines) < nth:
        return None
    return int(lines[nth - 1].split("done: ")[1].split()[0])


def test_a_frozen_agent_whose_history_was_compacted_resyncs_to_a_full_recompute(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 2) as c:
        hv0, hv1 = c.hv
        net = network(c, "gap", "10.74.0.0/24")
        other = network(c, "gap2", "10.75.0.0/24")
        pa, nsa = hv0.vm(net, "a")
        pb, nsb = hv1.vm(net, "b")
        hv1.vm(other, "b2")
        eventually(lambda: pings(nsa, ip_of(pb)), "a ping across chassis", timeout=15)

        # Chassis 1's agent is frozen while history moves on and is compacted away.
        assert hv1.agent is not None
        hv1.agent.signal(signal.SIGSTOP)
        try:
            px, nsx = hv0.vm(net, "x")  # a new port on chassis 0
            py, _ = hv0.vm(other, "y")
            gone = c.post("ports", network_id=net["id"], name="gone")
            c.delete("ports", gone["id"])
            sg = c.post("security-groups", name="g")
            c.put("ports", pa["id"], security_groups=[*pa["security_groups"], sg["id"]])
            # The frozen agent's connection goes too (etcd restarts): on waking it must
            # watch again from where it was, which etcd has compacted away.
            assert c.etcd is not None
            c.etcd.kill(0)
            c.etcd.restart(0)
            store = EtcdStore(c.etcd_endpoints)
            try:
                store.compact(store.revision())
            finally:
                store.close()
        finally:
            hv1.agent.signal(signal.SIGCONT)
        eventually(lambda: pings(nsb, ip_of(px)), "chassis 1 reaching the new port", timeout=20)
        assert pings(nsx, ip_of(pb))
        # Caught up: chassis 0 reports its ports ACTIVE (again, for the one it updated)
        # and chassis 1 tunnels to each of them.
        for p in (pa, px, py):
            eventually(lambda p=p: c.get("ports", p["id"])["status"] == "ACTIVE", "ACTIVE")
        eventually(lambda: len(unicast_to(hv1, hv0)) == 3, "chassis 1 caught up")
        resynced = hv1.flows()
        assert "lost history" in hv1.agent.output(tail=10**8), "no gap: nothing proven"

        # A fresh agent on the same switch computes everything from scratch: it finds
        # exactly these flows there and sends nothing.
        assert hv1.agent.stop() == 0
        hv1.start_agent()
        hv1.wait_agent_alive()
        eventually(lambda: first_install(hv1, 2) is not None, "the new agent's first install")
        now = hv1.flows()
        diff = sorted(set(now) ^ set(resynced))
        assert now == resynced, "\n".join(
            ("+ " if f in now else "- ") + f for f in diff
        ) + hv1.agent.output(tail=20000)
        assert first_install(hv1, 2) == 0, hv1.agent_log()
