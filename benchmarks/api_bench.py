"""API throughput: port creates (sequential and 16 concurrent clients) and list latency.

Not a test: it prints figures. Runs a real `wyvern api` server process on SQLite and on a
private etcd, drives it over HTTP, and prints each figure beside two baselines measured in
the same run: the HTTP floor (GET / on the same server, sequential) and the store's own
transaction rate (one create-if-absent txn per port, no HTTP, no API logic).

    .venv/bin/python benchmarks/api_bench.py [--ports 2000] [--list-size 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from wyvern.nb.etcd import EtcdStore
from wyvern.nb.etcd_server import EtcdServer
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Put, Store, absent

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wyvern_bin() -> str:
    here = Path(sys.executable).parent / "wyvern"
    return str(here) if here.exists() else (shutil.which("wyvern") or "wyvern")


class Server:
    def __init__(self, run_dir: Path, store: str, endpoints: list[str] | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            WYVERN_RUN_DIR=str(run_dir),
            WYVERN_STORE=store,
            WYVERN_LOG_LEVEL="WARNING",
        )
        env.pop("WYVERN_CONFIG", None)
        if endpoints:
            env["WYVERN_ETCD_ENDPOINTS"] = json.dumps(endpoints)
        self.log = open(run_dir / "api.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [wyvern_bin(), "api", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"wyvern api did not start; see {run_dir / 'api.log'}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def post(s: requests.Session, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = s.post(url, json=body, timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"POST {url}: {r.status_code} {r.text[:300]}")
    out: dict[str, Any] = r.json()
    return out


def setup(url: str, cidr: str) -> str:
    s = requests.Session()
    s.put(f"{url}/v2.0/quotas/default", json={"quota": {"port": -1}}, timeout=10).raise_for_status()
    net = post(s, f"{url}/v2.0/networks", {"network": {"name": "bench"}})["network"]
    post(
        s,
        f"{url}/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": cidr, "ip_version": 4}},
    )
    return str(net["id"])


def create_ports(url: str, net: str, count: int, clients: int) -> float:
    """Returns ports/s over `count` single-port creates from `clients` threads."""
    per = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def worker(n: int) -> None:
        s = requests.Session()
        for _ in range(n):
            post(s, f"{url}/v2.0/ports", {"port": {"network_id": net}})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, per))
    return count / (time.perf_counter() - t0)


def fill_ports(url: str, net: str, total: int) -> int:
    s = requests.Session()
    have = len(s.get(f"{url}/v2.0/ports?fields=id", timeout=60).json()["ports"])
    while have < total:
        n = min(200, total - have)
        post(s, f"{url}/v2.0/ports", {"ports": [{"network_id": net} for _ in range(n)]})
        have += n
    return have


def list_latency(url: str, rounds: int = 5) -> tuple[float, int]:
    s = requests.Session()
    times = []
    count = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = s.get(f"{url}/v2.0/ports", timeout=60)
        r.raise_for_status()
        count = len(r.json()["ports"])
        times.append(time.perf_counter() - t0)
    return statistics.median(times), count


def http_floor(url: str, n: int = 500) -> float:
    s = requests.Session()
    t0 = time.perf_counter()
    for _ in range(n):
        s.get(url + "/", timeout=10).raise_for_status()
    return n / (time.perf_counter() - t0)


def store_floor(store: Store, n: int = 2000) -> float:
    value = b"x" * 900  # about one port's JSON
    t0 = time.perf_counter()
    for i in range(n):
        key = f"/bench-floor/{time.monotonic_ns()}-{i}"
        store.txn([absent(key)], [Put(key, value)])
    return n / (time.perf_counter() - t0)


def run_backend(name: str, args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"wyv-bench-{name}-")))
    endpoints = None
    if name == "etcd":
        etcd = stack.enter_context(EtcdServer(run_dir / "etcd", die_with_parent=True))
        endpoints = etcd.endpoints
        floor_store: Store = EtcdStore(endpoints)
    else:
        floor_store = SqliteStore(str(run_dir / "floor.db"))
    server = Server(run_dir, name, endpoints)
    stack.callback(server.stop)
    net = setup(server.url, "10.0.0.0/16")
    res: dict[str, Any] = {"backend": name}
    res["http_floor_rps"] = http_floor(server.url)
    res["store_floor_txn_s"] = store_floor(floor_store)
    res["create_seq_ports_s"] = create_ports(server.url, net, args.ports, 1)
    res["create_16c_ports_s"] = create_ports(server.url, net, args.ports, 16)
    res["list_at_creates_s"], res["list_at_creates_n"] = list_latency(server.url)
    fill_ports(server.url, net, args.list_size)
    res["list_s"], res["list_n"] = list_latency(server.url)
    floor_store.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ports", type=int, default=2000)
    ap.add_argument("--list-size", type=int, default=10000)
    ap.add_argument("--backends", default="sqlite,etcd")
    args = ap.parse_args()
    results = []
    for name in args.backends.split(","):
        with ExitStack() as stack:
            print(f"== {name} ...", flush=True)
            results.append(run_backend(name, args, stack))
    print()
    print(f"{'figure':34} " + " ".join(f"{r['backend']:>12}" for r in results))
    rows = [
        ("HTTP floor GET / (req/s)", "http_floor_rps"),
        ("store floor txn (txn/s)", "store_floor_txn_s"),
        (f"port create seq, {args.ports} (ports/s)", "create_seq_ports_s"),
        ("port create 16 clients (ports/s)", "create_16c_ports_s"),
        ("list ports (s)", "list_s"),
        ("  ... ports listed", "list_n"),
    ]
    for label, key in rows:
        print(f"{label:34} " + " ".join(f"{r[key]:>12.3f}" for r in results))
    for r in results:
        line = (
            f"{r['backend']}: seq create = {r['create_seq_ports_s'] / r['http_floor_rps']:.2f}x "
            f"the HTTP floor, {r['create_seq_ports_s'] / r['store_floor_txn_s']:.3f}x the "
            f"store floor; list {r['list_n']} ports in {r['list_s']:.3f}s"
        )
        if r["backend"] == "sqlite":  # the targets are for the embedded store
            seq_ok = "MET" if r["create_seq_ports_s"] >= 200 else "MISSED"
            list_ok = "MET" if r["list_s"] <= 0.5 else "MISSED"
            line += f"; targets: >= 200 creates/s {seq_ok}, list <= 0.5 s {list_ok}"
        print(line)
    out = ROOT / "benchmarks" / "results" / f"api_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    out.write_text(
        json.dumps(
            {"cpus": os.cpu_count(), "machine": platform.machine(), "git": rev, "results": results},
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
