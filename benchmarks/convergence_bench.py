"""Convergence: API write -> flows installed on every chassis that needs them.

Not a test: it prints figures and writes them as JSON under benchmarks/results/.

    .venv/bin/python benchmarks/convergence_bench.py [--real 3] [--chassis 10,50,100]
        [--creates 200]

First `--real` real chassis (tests/e2e/multichassis.py: each its own OVS and agent in a
namespace, Geneve over a Linux-bridge underlay; ports plugged as internal interfaces; a
port is converged when every chassis's br-int shows its L2 flow), then:

For each chassis count N: a private etcd, one `wyvern api` on it, and N fake chassis
(the agent with `ovs_mode=fake`: the same sync, selective distribution, apps and
engine; its switch is a recorder), run as threads in `--per-process` agents per child
process. The topology: N/2 networks (at least 4) with a /24 each, joined four by four by
routers; network j is hosted on chassis 2j, 2j+1 and 2j+2 (mod N), with three ports
on each (binding:host_id). Every port is in its project's default security group,
whose rules name the group itself as remote (Neutron's default).

Timed: `--creates` port creates (one at a time, round robin over the networks, each on
one of its hosts) from just before the POST until every chassis that follows the
network (its hosts and those of the networks behind its router) has installed the
port's L2 flow (cookie encode("l2", port id)); then `--rules` security-group rule adds
until every chassis with a port in the group has the rule's flows. Children report the
first time each chassis installs each cookie (CLOCK_MONOTONIC is shared by all
processes). Also reported: etcd watches (one per followed prefix, summed over agents)
and the watch bytes each agent received for one port create (selective distribution
keeps that at zero for chassis that do not need the change).

Goal (issue 4): p99 <= 300 ms at 100 fake chassis on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from controller_bench import git_revision, pct  # noqa: E402

from tests.harness import start_api  # noqa: E402
from wyvern.ir.cookies import encode  # noqa: E402
from wyvern.nb.etcd_server import EtcdServer  # noqa: E402

_COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")
API_MS: dict[str, list[float]] = {}  # how long the API call itself took, per kind


# ---------------------------------------------------------------- child: fake chassis


def child(endpoint: str, names: list[str]) -> None:
    """Run fake-chassis agents; print the first install time of each (chassis, cookie)."""
    from wyvern.controller.agent import Agent
    from wyvern.controller.chassis import ChassisInfo
    from wyvern.nb.etcd import EtcdStore
    from wyvern.southbound.recorder import RecordingInstaller

    out_lock = threading.Lock()
    agents: dict[str, Agent] = {}
    stores: dict[str, EtcdStore] = {}

    def hook(name: str, installer: RecordingInstaller) -> None:
        seen: set[int] = set()

        def on_added(lines: list[str]) -> None:
            now = time.monotonic()
            fresh = []
            for line in lines:
                m = _COOKIE.search(line)
                if m:
                    cookie = int(m.group(1), 16)
                    if cookie not in seen:
                        seen.add(cookie)
                        fresh.append(cookie)
            if fresh:
                with out_lock:
                    sys.stdout.write(json.dumps({"c": name, "k": fresh, "t": now}) + "\n")
                    sys.stdout.flush()

        installer.on_added = on_added

    for i, name in enumerate(names):
        store = EtcdStore([endpoint])
        agent = Agent(
            store, None, ChassisInfo(name, f"192.0.2.{i % 250 + 1}", hostname=name), selective=True
        )
        assert isinstance(agent.installer, RecordingInstaller)
        hook(name, agent.installer)
        agent.start()
        agents[name], stores[name] = agent, store
    with out_lock:
        sys.stdout.write(json.dumps({"ready": names}) + "\n")
        sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() == "stats":
            stats = {
                n: {"bytes": stores[n].watch_event_bytes, "watches": len(a.sync.followers)}
                for n, a in agents.items()
            }
            with out_lock:
                sys.stdout.write(json.dumps({"stats": stats}) + "\n")
                sys.stdout.flush()
    for a in agents.values():
        a.stop()


# ---------------------------------------------------------------- parent


class Children:
    """Child processes of fake chassis, and what they report."""

    def __init__(self, endpoint: str, names: list[str], per_process: int) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.cond = threading.Condition()
        self.ready: set[str] = set()
        self.stats: dict[str, dict[str, int]] = {}
        self.procs: list[subprocess.Popen[str]] = []
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WYVERN_LOG_LEVEL": "WARNING"}
        for k in range(0, len(names), per_process):
            group = names[k : k + per_process]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", endpoint, ",".join(group)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            with self.cond:
                if "ready" in msg:
                    self.ready.update(msg["ready"])
                elif "stats" in msg:
                    self.stats.update(msg["stats"])
                else:
                    for cookie in msg["k"]:
                        self.seen.setdefault((msg["c"], cookie), msg["t"])
                self.cond.notify_all()

    def wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def converged(self, chassis: set[str], cookie: int, timeout: float = 15.0) -> float | None:
        """When the last of `chassis` installed `cookie` (None: not within timeout)."""
        ok = self.wait(lambda: all((c, cookie) in self.seen for c in chassis), timeout)
        if not ok:
            return None
        return max(self.seen[(c, cookie)] for c in chassis)

    def collect_stats(self) -> dict[str, dict[str, int]]:
        with self.cond:
            self.stats = {}
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("stats\n")
            p.stdin.flush()
        self.wait(lambda: len(self.stats) == len(self.ready), 30)
        return dict(self.stats)

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def summary(name: str, lat: list[float], timeouts: int) -> dict[str, Any]:
    """p50/p99 (ms) of converged samples, and how many never converged."""
    calls = API_MS.pop(name, None)
    return {
        f"{name}_timeouts": timeouts,
        f"{name}_p50_ms": statistics.median(lat) * 1000 if lat else None,
        f"{name}_p99_ms": pct(lat, 0.99) * 1000 if lat else None,
        # (the slowest samples, and when they came: [sample index, ms])
        f"{name}_api_call_p50_ms": statistics.median(calls) if calls else None,
        f"{name}_slowest": sorted(
            ([k, round(v * 1000, 1)] for k, v in enumerate(lat)), key=lambda kv: -kv[1]
        )[:8],
    }


def time_rule_adds(
    api: Api,
    rules: int,
    first_port: int,
    converged: Callable[[int], float | None],
    remote_ip_prefix: str | None = None,
) -> tuple[list[float], int]:
    """Add RULES ingress TCP rules (one port each, from FIRST_PORT) to the default group;
    each one's latency until converged(its cookie) (None: it never did)."""
    sg = next(g for g in api.get("security-groups")["security_groups"])
    lat: list[float] = []
    timeouts = 0
    for k in range(rules):
        body: dict[str, Any] = {
            "security_group_id": sg["id"],
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": first_port + k,
            "port_range_max": first_port + k,
        }
        if remote_ip_prefix:
            body["remote_ip_prefix"] = remote_ip_prefix
        t0 = time.monotonic()
        rule = api.post("security-group-rules", {"security_group_rule": body})
        API_MS.setdefault("rule", []).append((time.monotonic() - t0) * 1000)
        done = converged(encode("security_groups", rule["security_group_rule"]["id"]))
        if done is None:
            timeouts += 1
        else:
            lat.append(done - t0)
    return lat, timeouts


class Api:
    def __init__(self, url: str) -> None:
        self.base = url.rstrip("/") + "/v2.0"
        self.s = requests.Session()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.s.post(f"{self.base}/{path}", json=body, timeout=60)
        if r.status_code >= 300:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
        return r.json()

    def put(self, path: str, body: dict[str, Any]) -> Any:
        r = self.s.put(f"{self.base}/{path}", json=body, timeout=60)
        if r.status_code >= 300:
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")
        return r.json()

    def get(self, path: str) -> Any:
        r = self.s.get(f"{self.base}/{path}", timeout=60)
        r.raise_for_status()
        return r.json()


@contextmanager
def system(n_chassis: int, per_process: int, workdir: Path) -> Iterator[tuple[Api, Children]]:
    with ExitStack() as stack:
        etcd = EtcdServer(workdir / "etcd", members=1, die_with_parent=True).start()
        stack.callback(etcd.stop)
        api_server = start_api(workdir / "api", etcd_endpoints=etcd.endpoints)
        stack.callback(api_server.stop)
        names = [f"fake-{i:03d}" for i in range(n_chassis)]
        children = Children(etcd.endpoints[0], names, per_process)
        stack.callback(children.close)
        if not children.wait(lambda: len(children.ready) == n_chassis, 300):
            raise RuntimeError(f"only {len(children.ready)} of {n_chassis} chassis started")
        yield Api(api_server.url), children


def run_scale(n: int, creates: int, rules: int, per_process: int) -> dict[str, Any]:
    n_nets = max(4, n // 2)
    with (
        tempfile.TemporaryDirectory(prefix="wv-conv-") as tmp,
        system(n, per_process, Path(tmp)) as (api, kids),
    ):
        t_setup = time.monotonic()
        unlimited = dict.fromkeys(
            ("network", "subnet", "port", "router", "security_group_rule"), -1
        )
        api.put("quotas/default", {"quota": unlimited})
        names = [f"fake-{i:03d}" for i in range(n)]
        nets: list[str] = []
        hosts: dict[str, list[str]] = {}
        group_of: dict[str, int] = {}
        for j in range(n_nets):
            net = api.post("networks", {"network": {"name": f"net{j}"}})["network"]
            api.post(
                "subnets",
                {
                    "subnet": {
                        "network_id": net["id"],
                        "cidr": f"10.{j // 250}.{j % 250}.0/24",
                        "ip_version": 4,
                    }
                },
            )
            nets.append(net["id"])
            hosts[net["id"]] = [names[(2 * j + d) % n] for d in range(3)]
            group_of[net["id"]] = j // 4
        subnets = {s["network_id"]: s["id"] for s in api.get("subnets")["subnets"]}
        for r in range((n_nets + 3) // 4):
            router = api.post("routers", {"router": {"name": f"r{r}"}})["router"]
            for nid in nets[r * 4 : r * 4 + 4]:
                api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": subnets[nid]})
        base = []
        for nid in nets:
            for host in hosts[nid]:
                for _ in range(3):
                    base.append(
                        {"network_id": nid, "binding:host_id": host, "name": f"base-{host}"}
                    )
        for k in range(0, len(base), 200):
            api.post("ports", {"ports": base[k : k + 200]})
        # wait until every base port is ACTIVE (router interfaces are bound nowhere)
        deadline = time.monotonic() + 300
        while True:
            ports = api.get("ports?fields=name&fields=status")["ports"]
            mine = [p for p in ports if str(p.get("name", "")).startswith("base-")]
            if len(mine) >= len(base) and all(p["status"] == "ACTIVE" for p in mine):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the base ports did not all become ACTIVE in 300 s")
            time.sleep(0.5)
        setup_s = time.monotonic() - t_setup
        group_nets: dict[int, set[str]] = {}
        for nid, g in group_of.items():
            group_nets.setdefault(g, set()).add(nid)

        def needing(nid: str) -> set[str]:
            return {h for other in group_nets[group_of[nid]] for h in hosts[other]}

        # ---- port creates
        lat: list[float] = []
        timeouts = 0
        for k in range(creates):
            nid = nets[k % n_nets]
            host = hosts[nid][k % 3]
            t0 = time.monotonic()
            port = api.post("ports", {"port": {"network_id": nid, "binding:host_id": host}})["port"]
            API_MS.setdefault("create", []).append((time.monotonic() - t0) * 1000)
            done = kids.converged(needing(nid), encode("l2", port["id"]))
            if done is None:
                timeouts += 1
            else:
                lat.append(done - t0)
        # ---- bytes of events one create costs each agent (etcd's progress notifications
        # not counted): a window with the create, minus an equally long quiet one before it
        window = 2.0
        before = kids.collect_stats()
        time.sleep(window)
        mid = kids.collect_stats()
        t_mid = time.monotonic()
        nid = nets[0]
        port = api.post("ports", {"port": {"network_id": nid, "binding:host_id": hosts[nid][0]}})[
            "port"
        ]
        kids.converged(needing(nid), encode("l2", port["id"]))
        time.sleep(max(0.0, window - (time.monotonic() - t_mid)))
        after = kids.collect_stats()
        delta = {
            c: (after[c]["bytes"] - mid[c]["bytes"]) - (mid[c]["bytes"] - before[c]["bytes"])
            for c in after
        }
        receivers = sorted(v for v in delta.values() if v > 0)
        watches = sum(s["watches"] for s in after.values())
        # ---- security group rule adds (the default group: every port is in it)
        with_ports = {h for hs in hosts.values() for h in hs}
        rule_lat, rule_timeouts = time_rule_adds(
            api, rules, 2000, lambda k: kids.converged(with_ports, k), "10.0.0.0/8"
        )
        return {
            "chassis": n,
            "networks": n_nets,
            "base_ports": len(base),
            "setup_s": setup_s,
            "creates": creates,
            **summary("create", lat, timeouts),
            "rules": rules,
            **summary("rule", rule_lat, rule_timeouts),
            "etcd_watches": watches,
            "agents_receiving_one_create": len(receivers),
            "bytes_per_receiving_agent_median": statistics.median(receivers) if receivers else 0,
            "bytes_per_receiving_agent_max": max(receivers) if receivers else 0,
        }


# ---------------------------------------------------------------- real chassis


def _installed_on(ovs: Any, cookie: int) -> bool:
    out = ovs.ofctl(
        "-O", "OpenFlow14", "--no-names", "--no-stats", "dump-flows", "br-int",
        f"cookie={cookie:#x}/-1",
    )  # fmt: skip
    return "actions=" in out


def _vif(hv: Any, port: dict[str, Any]) -> None:
    """Plug a port on a real chassis: an internal interface (a tap) with its iface-id."""
    name = "v" + port["id"][:12]
    hv.ovs.vsctl(
        "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
        f"external_ids:iface-id={port['id']}", f"external_ids:attached-mac={port['mac_address']}",
    )  # fmt: skip


def _when_all(chassis: list[Any], cookie: int, timeout: float = 15.0) -> float | None:
    """The time every chassis shows a flow with `cookie` (polled; None: timed out)."""
    pending = list(chassis)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [hv for hv in pending if not _installed_on(hv.ovs, cookie)]
        if pending and time.monotonic() > deadline:
            return None
    return time.monotonic()


def run_real(n: int, creates: int, rules: int) -> dict[str, Any]:
    """N real chassis (tests/e2e/multichassis.py: one OVS and agent per chassis
    namespace, Geneve over a Linux-bridge underlay), every port on every chassis's
    networks; a port create is converged when every chassis has its L2 flow."""
    from tests.e2e.multichassis import cluster

    with tempfile.TemporaryDirectory(prefix="wv-conv-real-") as tmp, cluster(Path(tmp), n) as c:
        api = Api(c.api.url)
        nets = []
        subnets = []
        for j in range(2):
            net = api.post("networks", {"network": {"name": f"real{j}"}})["network"]
            sub = api.post(
                "subnets",
                {"subnet": {"network_id": net["id"], "cidr": f"10.9.{j}.0/24", "ip_version": 4}},
            )["subnet"]
            nets.append(net["id"])
            subnets.append(sub["id"])
        router = api.post("routers", {"router": {"name": "real-r"}})["router"]
        for sid in subnets:
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sid})
        for hv in c.hv:  # a few ports per chassis and network, so all chassis need all
            for nid in nets:
                for _ in range(3):
                    port = api.post(
                        "ports", {"port": {"network_id": nid, "binding:host_id": hv.name}}
                    )["port"]
                    _vif(hv, port)
        lat: list[float] = []
        timeouts = 0
        for k in range(creates):
            hv = c.hv[k % n]
            nid = nets[k % 2]
            t0 = time.monotonic()
            port = api.post("ports", {"port": {"network_id": nid, "binding:host_id": hv.name}})[
                "port"
            ]
            _vif(hv, port)
            done = _when_all(c.hv, encode("l2", port["id"]))
            if done is None:
                timeouts += 1
            else:
                lat.append(done - t0)
        rule_lat, rule_timeouts = time_rule_adds(api, rules, 3000, lambda k: _when_all(c.hv, k))
        return {
            "chassis": n,
            "real": True,
            "creates": creates,
            **summary("create", lat, timeouts),
            "rules": rules,
            **summary("rule", rule_lat, rule_timeouts),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--chassis", default="10,50,100", help="chassis counts to run")
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--per-process", type=int, default=10, help="fake chassis per process")
    ap.add_argument("--real", type=int, default=3, help="real chassis to run first (0: none)")
    ap.add_argument("--child", nargs=2, metavar=("ENDPOINT", "NAMES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1].split(","))
        return 0
    started = time.time()
    load0 = os.getloadavg()[0]
    results = []
    if args.real:
        r = run_real(args.real, args.creates, args.rules)
        results.append(r)
        print(
            f"{args.real:4d} real chassis: port create -> installed everywhere p50 "
            f"{r['create_p50_ms']:.0f} ms, p99 {r['create_p99_ms']:.0f} ms "
            f"({r['create_timeouts']} timeouts); SG rule p50 {r['rule_p50_ms']:.0f} ms, "
            f"p99 {r['rule_p99_ms']:.0f} ms",
            flush=True,
        )
    for n in (int(x) for x in args.chassis.split(",") if x):
        r = run_scale(n, args.creates, args.rules, args.per_process)
        results.append(r)
        print(
            f"{n:4d} fake chassis ({r['networks']} networks, {r['base_ports']} ports): "
            f"port create -> installed everywhere p50 {r['create_p50_ms']:.0f} ms, "
            f"p99 {r['create_p99_ms']:.0f} ms ({r['create_timeouts']} timeouts); "
            f"SG rule p50 {r['rule_p50_ms']:.0f} ms, p99 {r['rule_p99_ms']:.0f} ms; "
            f"{r['etcd_watches']} etcd watches; one create reached "
            f"{r['agents_receiving_one_create']} agents, median "
            f"{r['bytes_per_receiving_agent_median']:.0f} B each",
            flush=True,
        )
    print()
    print(f"{'chassis':>8} {'create p50':>11} {'create p99':>11} {'rule p99':>9} {'goal':>6}")
    for r in results:
        goal = "met" if r["chassis"] != 100 or r["create_p99_ms"] <= 300 else "MISSED"
        label = f"{r['chassis']} real" if r.get("real") else str(r["chassis"])
        shown = goal if r["chassis"] == 100 and not r.get("real") else ""
        print(
            f"{label:>8} {r['create_p50_ms']:>9.0f}ms {r['create_p99_ms']:>9.0f}ms "
            f"{r['rule_p99_ms']:>7.0f}ms {shown:>6}"
        )
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"convergence_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "git": git_revision(),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "load_average_start": load0,
                "load_average_end": os.getloadavg()[0],
                "seconds": time.time() - started,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\n{path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
