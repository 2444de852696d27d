"""The store unreachable from an agent for two minutes: forwarding goes on, and the agent
converges to what changed meanwhile within 5 s of the store's return.

One chassis on a real etcd (tests/e2e/multichassis.py). The agent reaches etcd only
through `Partition`, a TCP relay in this process; the API reaches etcd directly, so
changes can be made while the agent is cut off, as when a hypervisor loses its path to
the control plane. A cut is a black hole, not a refusal: no byte moves either way, a new
connection is accepted and then hears nothing (like a SYN-ACK from a middlebox, or a
member that hangs), and a connection that lived through the cut stays dead after it (its
state was lost on the path; real TCP could also take a backed-off retransmission timer,
up to two minutes, to notice the path is back). So the agent may count only on new
connections, which is the strictest honest model of "unreachable".
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.multichassis import Cluster, Hv, cluster
from tests.e2e.test_dataplane import eventually, ident_server, ip_of, pings, probe, rule
from tests.e2e.test_multichassis import network
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

OUTAGE = float(os.environ.get("WYVERN_TEST_OUTAGE", "120"))  # seconds
CONVERGE = 5.0  # seconds after the store's return


class Partition:
    """A TCP relay to UPSTREAM that can be cut (black hole) and healed."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.epoch = 0  # connections of an older epoch than `epoch` are dead
        self.down = False
        self.socks: list[socket.socket] = []
        self.stopping = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.down = True
            self.epoch += 1

    def heal(self) -> None:
        with self.lock:
            self.down = False
            self.epoch += 1

    def close(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self.listener.close()
        for s in list(self.socks):
            with contextlib.suppress(OSError):
                s.close()

    def _alive(self, epoch: int) -> bool:
        return not self.down and epoch == self.epoch

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        epoch = self.epoch
        while not self._alive(epoch):  # accepted during a cut: it hears nothing, ever
            if self.stopping:
                return
            time.sleep(0.2)
            if not self.down and epoch != self.epoch:
                return  # (left open, silent, until close(): dead)
        upstream = socket.create_connection(self.upstream, timeout=5)
        self.socks.append(upstream)
        pair = {client: upstream, upstream: client}
        while not self.stopping:
            if not self._alive(epoch):
                time.sleep(0.2)  # black-holed: nothing moves, the sockets stay open
                continue
            ready, _, _ = select.select(list(pair), [], [], 0.2)
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data or not self._alive(epoch):
                    if not data:
                        for x in pair:
                            with contextlib.suppress(OSError):
                                x.close()
                        return
                    continue  # (read during the cut: dropped, like the path did)
                with contextlib.suppress(OSError):
                    pair[s].sendall(data)


@contextlib.contextmanager
def relayed_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Hv, Partition]]:
    """A one-chassis cluster whose agent reaches etcd only through a Partition."""
    with cluster(tmp_path, 0) as c:
        partition = Partition(c.etcd_endpoints[0])
        try:
            env = {"WYVERN_ETCD_ENDPOINTS": json.dumps([partition.url])}
            hv = c.add_chassis(env=env, lease_ttl=6)
            yield c, hv, partition
        finally:
            partition.close()


def since(start: float, check: Callable[[], bool], what: str, limit: float) -> float:
    """Seconds from START until CHECK holds (fails after LIMIT + 30 s)."""
    deadline = start + limit + 30
    while not check():
        assert time.monotonic() < deadline, f"not converged: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def status(c: Cluster, port: dict[str, Any]) -> str:
    return str(requests.get(f"{c.base}/ports/{port['id']}", timeout=5).json()["port"]["status"])


def test_store_unreachable_for_two_minutes(tmp_path: Path) -> None:
    with relayed_cluster(tmp_path) as (c, hv, partition):
        net = network(c, "outage", "10.74.0.0/24")
        sg = c.post("security-groups", name="outage-sg")
        rule(c, sg, "ingress", protocol="icmp", remote_ip_prefix="0.0.0.0/0")
        _, ns_a = hv.vm(net, "a")
        pb, ns_b = hv.vm(net, "b", security_groups=[sg["id"]])
        pc, _ = hv.vm(net, "c")
        ident_server(hv, ns_b, "b", 2222)
        eventually(lambda: pings(ns_a, ip_of(pb)), "a pings b", timeout=15)
        assert pings(ns_a, ip_of(pc))
        assert probe(ns_a, ip_of(pb), 2222) == "timeout"  # no rule admits it yet

        # -q: nothing but the summary (an unread pipe would stop the ping when full).
        pinger = hv.background(ns_a, "ping", "-q", "-n", "-i", "0.02", "-W", "1", ip_of(pb))
        time.sleep(1)
        assert hv.agent is not None
        pid = hv.agent.pid
        flows_before = hv.flows()

        partition.cut()
        cut_at = time.monotonic()
        time.sleep(min(15.0, OUTAGE / 4))
        # Changes the agent cannot see: a new port plugged here, a port deleted, a rule.
        pd = c.post("ports", network_id=net["id"], name="d")
        ns_d = hv.plug(pd)
        c.delete("ports", pc["id"])
        rule(c, sg, "ingress", protocol="tcp", port_range_min=2222, port_range_max=2222)
        time.sleep(max(0.0, cut_at + OUTAGE - time.monotonic()))
        flows_cut = hv.flows()
        assert hv.agent.alive(), hv.agent_log()
        partition.heal()
        back = time.monotonic()

        t_d = since(back, lambda: pings(ns_a, ip_of(pd), "-c", "1", "-W", "0.3"), "d", CONVERGE)
        t_c = since(back, lambda: not pings(ns_a, ip_of(pc), "-c", "1", "-W", "0.3"), "c", 5)
        t_rule = since(back, lambda: probe(ns_a, ip_of(pb), 2222) == "b", "rule", CONVERGE)
        t_active = since(back, lambda: status(c, pd) == "ACTIVE", "d ACTIVE", CONVERGE)

        os.killpg(pinger.pid, signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
        summary = next(line for line in out.splitlines() if "packets transmitted" in line)
        sent, received = (int(w.split()[0]) for w in summary.split(",")[:2])
        figures = (
            f"outage {OUTAGE:.0f} s; after it: d pings {t_d:.2f} s, c gone {t_c:.2f} s, "
            f"rule {t_rule:.2f} s, d ACTIVE {t_active:.2f} s; ping a->b: {summary}; "
            f"load {Path('/proc/loadavg').read_text().split()[:3]}"
        )
        log = hv.agent_log()
        print(figures, "\n--- the agent after the store's return:\n", log[-3000:])
        assert hv.agent.alive() and hv.agent.pid == pid, log
        assert flows_cut == flows_before, "flows changed while the store was unreachable"
        assert sent - received <= sent // 1000, figures  # (at most 0.1 %)
        assert max(t_d, t_c, t_rule, t_active) <= CONVERGE, figures + "\n" + log
        assert "Traceback" not in log, log
        in_netns(ns_d, "true")
