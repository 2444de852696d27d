"""The multi-chassis harness: one etcd (1 or 3 members), one `wyvern api`, N chassis
joined by an underlay.

    with cluster(tmp_path, 3) as c:        # or the `cluster3` fixture in test_multichassis
        net = c.post("networks", name="n")
        port, ns = c.hv[0].vm(net, "vm1")  # a VM (netns) on chassis 0, ACTIVE
        ...

Each chassis is a network namespace with its own ovsdb-server/ovs-vswitchd (userspace
datapath) and a `wyvern agent` process attached to it, configured with its underlay NIC,
tunnel IP and encaps: the agent builds br-phy, the tunnel ports and the TLV map itself.
The underlay is a Linux bridge in a namespace of its own with one veth per chassis
(172.31.0.<i+1>/24; every test has its own underlay namespace, so addresses never meet).
VMs are namespaces plugged with `wyvern plug` into their chassis's OVS. Every name is
unique per test and everything is removed afterwards, pass or fail (WYVERN_KEEP=1 keeps
it and prints where it is).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import (
    Chassis,
    _remove_dir,
    _remove_vm,
    _run_all,
    kill_proc,
    remove_metadata_netns,
)
from tests.harness import ApiServer, etcd_server, process_env, start_api
from tests.southbound.conftest import in_netns, keep, unique
from wyvern.nb.etcd_server import EtcdServer
from wyvern.southbound.ovs import OvsInstance, netns_exists

UNDERLAY_NET = "172.31.0"


@dataclass
class Hv(Chassis):
    """One chassis of a cluster (the single-chassis helpers, on this chassis's OVS)."""

    name: str = ""
    tunnel_ip: str = ""
    nic: str = ""  # the underlay NIC, in the chassis's namespace

    def wait_agent_alive(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agent is not None and self.agent.alive(), self.agent_log()
            agents = requests.get(f"{self.base}/agents", timeout=5).json()["agents"]
            for a in agents:
                if a["configurations"]["chassis_name"] == self.name and a["alive"]:
                    return
            time.sleep(0.1)
        raise AssertionError(f"agent {self.name} not alive after {timeout} s:\n{self.agent_log()}")

    def ovs_ns(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """CMD in this chassis's (OVS's) namespace."""
        assert self.ovs.netns is not None
        return in_netns(self.ovs.netns, *cmd, timeout=timeout)

    @contextlib.contextmanager
    def capture(self, bpf: str, vm: str = "") -> Iterator[list[str]]:
        """The packets matching BPF that arrive on the underlay NIC (or the eth0 of VM, a
        namespace) meanwhile: tcpdump lines, filled in when the block ends."""
        netns, iface = (vm, "eth0") if vm else (self.ovs.netns, self.nic)
        assert netns is not None
        lines: list[str] = []
        dump = self.background(netns, "tcpdump", "-n", "-l", "-Q", "in", "-i", iface, bpf)
        assert dump.stdout is not None
        for _ in range(5):  # "listening on ...": capturing from here
            first = dump.stdout.readline()
            if "listening" in first or not first:
                break
        assert "listening" in first, first
        try:
            yield lines
        finally:
            time.sleep(0.5)  # let the last packets land
            with contextlib.suppress(ProcessLookupError):
                os.killpg(dump.pid, signal.SIGINT)  # tcpdump flushes what it has
            try:
                out, _ = dump.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                kill_proc(dump)
                out = ""
            lines += [line for line in out.splitlines() if " IP " in f" {line}"]


@dataclass
class Cluster:
    api: ApiServer
    underlay_ns: str
    base_dir: Path
    etcd_endpoints: list[str]
    hv: list[Hv] = field(default_factory=list)
    etcd: EtcdServer | None = None

    @property
    def base(self) -> str:
        return self.api.url + "v2.0"

    # The API calls of any chassis (they share the API).
    def post(self, path: str, **attrs: Any) -> dict[str, Any]:
        return self.hv[0].post(path, **attrs)

    def put(self, path: str, id_: str, **attrs: Any) -> dict[str, Any]:
        return self.hv[0].put(path, id_, **attrs)

    def get(self, path: str, id_: str) -> dict[str, Any]:
        return self.hv[0].get(path, id_)

    def delete(self, path: str, id_: str) -> None:
        self.hv[0].delete(path, id_)

    def action(self, path: str, id_: str, action: str, **body: Any) -> dict[str, Any]:
        return self.hv[0].action(path, id_, action, **body)

    def add_chassis(
        self,
        encaps: tuple[str, ...] = ("geneve", "vxlan"),
        env: dict[str, str] | None = None,
        lease_ttl: float = 5,
    ) -> Hv:
        """A new chassis on the underlay with its agent running and alive (ENV: more
        WYVERN_* settings for its agent; a chassis whose agent stops is down for the
        others LEASE_TTL seconds later)."""
        i = len(self.hv)
        name = unique(f"hv{i}-")
        run_dir = self.base_dir / name
        run_dir.mkdir(parents=True)
        ovs = OvsInstance.start(netns=unique("wvm-hv-"))
        assert ovs.netns is not None
        nic = unique("wu")  # one veth: nic in the chassis, its peer on the underlay bridge
        peer = unique("wp")
        hv = Hv(self.api, ovs, run_dir, {}, name=name, tunnel_ip=f"{UNDERLAY_NET}.{i + 1}", nic=nic)
        self.hv.append(hv)  # cleaned up from here on
        subprocess.run(
            ["ip", "link", "add", nic, "netns", ovs.netns, "type", "veth",
             "peer", "name", peer, "netns", self.underlay_ns],
            check=True,
        )  # fmt: skip
        for cmd in (["link", "set", peer, "master", "ulbr"], ["link", "set", peer, "up"]):
            subprocess.run(["ip", "-n", self.underlay_ns, *cmd], check=True)
        hv.env = process_env(
            {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": "etcd",
                "WYVERN_ETCD_ENDPOINTS": json.dumps(self.etcd_endpoints),
                "WYVERN_OVS_MODE": "attach",
                "WYVERN_OVS_RUN_DIR": str(ovs.run_dir),
                "WYVERN_OVS_NETNS": ovs.netns,
                "WYVERN_CHASSIS_NAME": name,
                "WYVERN_TUNNEL_IP": hv.tunnel_ip,
                "WYVERN_ENCAPS": json.dumps(list(encaps)),
                "WYVERN_UNDERLAY_INTERFACE": nic,
                "WYVERN_AGENT_LEASE_TTL": str(lease_ttl),
                **(env or {}),
            }
        )
        hv.start_agent()
        hv.wait_agent_alive()
        return hv

    def wait_tunnels(self, timeout: float = 15) -> None:
        """Until every chassis's OVS has learnt every other's underlay neighbour."""
        deadline = time.monotonic() + timeout
        for hv in self.hv:
            others = [o.tunnel_ip for o in self.hv if o is not hv]
            while True:
                shown = hv.ovs.appctl("tnl/neigh/show")
                if all(ip in shown for ip in others):
                    break
                assert time.monotonic() < deadline, f"{hv.name} tunnel neighbours:\n{shown}"
                time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(f"--- {hv.name}\n{hv.agent_log()}" for hv in self.hv)


def _stop_hv(hv: Hv) -> None:
    steps: list[Callable[[], object]] = []
    steps += [functools.partial(kill_proc, proc) for proc in hv.procs]
    steps += [functools.partial(_remove_vm, hv.ovs, p, ns) for p, ns in hv.vms]
    if hv.agent is not None:
        steps.append(hv.agent.stop)
    steps.append(functools.partial(remove_metadata_netns, hv.name))
    steps += [functools.partial(_remove_dir, path) for path in hv.dirs]
    steps.append(hv.ovs.stop)  # removes its namespace, and the underlay veth with it
    _run_all(steps)


@contextlib.contextmanager
def cluster(base_dir: Path, n: int, etcd_members: int = 1) -> Iterator[Cluster]:
    """One etcd (of ETCD_MEMBERS members), one API, N chassis on one underlay; all
    removed afterwards."""
    with etcd_server(base_dir / "etcd", members=etcd_members) as etcd:
        underlay_ns = unique("wvm-ul-")
        api: ApiServer | None = None
        c: Cluster | None = None
        try:
            subprocess.run(["ip", "netns", "add", underlay_ns], check=True)
            for cmd in (
                ["link", "set", "lo", "up"],
                ["link", "add", "ulbr", "type", "bridge"],
                ["link", "set", "ulbr", "up"],
            ):
                subprocess.run(["ip", "-n", underlay_ns, *cmd], check=True)
            endpoints = list(etcd.endpoints)
            api = start_api(base_dir / "api", etcd_endpoints=endpoints)
            c = Cluster(api, underlay_ns, base_dir, endpoints, etcd=etcd)
            for _ in range(n):
                c.add_chassis()
            c.wait_tunnels()
            yield c
        finally:
            if keep():
                hvs = [(hv.name, hv.ovs.netns, hv.ovs.run_dir) for hv in c.hv] if c else []
                print(f"\nWYVERN_KEEP: cluster left running: {hvs}, underlay {underlay_ns}",
                      file=sys.stderr)  # fmt: skip
            else:
                steps: list[Callable[[], object]] = []
                if c is not None:
                    steps += [functools.partial(_stop_hv, hv) for hv in c.hv]
                if api is not None:
                    steps.append(api.stop)
                if netns_exists(underlay_ns):
                    steps.append(
                        functools.partial(subprocess.run, ["ip", "netns", "del", underlay_ns])
                    )
                _run_all(steps)
