"""Controller speed: flow install, full recompute, incremental port add, agent memory.

Not a test: it prints figures, each beside a goal and (where there is one) a baseline
measured in the same run, and writes them as JSON under benchmarks/results/.

    .venv/bin/python benchmarks/controller_bench.py [--ports 10000] [--flows 100000]

(a) 100k rendered flows through FlowInstaller.sync on a private userspace OVS (all our
    path does: canonicalisation, diff, bundle) vs `ovs-ofctl --bundle add-flows` of the
    same text on a fresh bridge: goal within 2x.
(b) engine.full for 1,000 and 10,000 LOCAL ports over 100 networks (a subnet each) and
    10 routers (10 networks each), every port in a security group with a remote-group
    rule: goal <= 1 s at 10,000. Each repeat starts cold (module memos cleared), as a
    restarted agent does; render (engine.render(): IR -> ovs-ofctl text) is reported too,
    and so is settle (engine.settle(): filing the reads full() set aside, which the agent
    does when idle, or the next change if it comes first).
(c) one incremental port add at 10,000 ports, from the store write (MemoryStore) through
    the real Sync + Engine + FlowInstaller to flows installed: goal <= 20 ms; compute
    alone (engine.apply + render): goal <= 5 ms. Median and p95 of the adds, the full's
    reads filed first (as the idle agent does); then the first add again on a fresh
    pipeline whose reads are still pending (that add pays the settle).
(e) a QoS policy (egress and ingress bandwidth limits, DSCP, egress packet rate) on
    1,000 local ports: engine.full (goal, as (b)'s, <= 1 s) and the install of its flows
    and 4,000 QoS meters on a private OVS, meters included, vs `ovs-ofctl --bundle` of
    the same flows (goal, as (a)'s, within 2x).
(f) a trunk of 4,094 subports (the VLAN space) on one chassis: full recompute (goal, as
    (b): <= 1 s) and one subport's binding going and coming back (goal, as (c)'s compute:
    <= 5 ms).
(d) resident memory after the full install at 10,000 ports (goal P9: <= 150 MiB),
    beside a bare interpreter that imported the same modules (both measured in
    subprocesses). The agent reads the topology from a SQLite file, as on an all-in-one
    host, so the store's data is not counted as the agent's (a MemoryStore, used
    before 2026-12-07, added ~36 MiB).

Needs root and openvswitch-switch (ovs-vswitchd runs userspace-only, --disable-system).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wyvern.controller import engine as engine_module  # noqa: E402
from wyvern.controller.engine import Engine, default_apps, gc_paused  # noqa: E402
from wyvern.controller.sync import Sync  # noqa: E402
from wyvern.model.keys import STORE_KINDS  # noqa: E402
from wyvern.model.view import (  # noqa: E402
    Binding,
    LocalView,
    record_from_obj,
)
from wyvern.nb.memory import MemoryStore  # noqa: E402
from wyvern.nb.sqlite import SqliteStore  # noqa: E402
from wyvern.nb.store import Put, Store  # noqa: E402

try:  # (trees before entry cookies installed RenderedLines with sync(), for a before/after)
    from wyvern.southbound.flowtext import FlowChanges
except ImportError:  # pragma: no cover
    FlowChanges = None  # type: ignore[assignment,misc]
from wyvern import ir  # noqa: E402
from wyvern.ir import cookies, render  # noqa: E402
from wyvern.southbound.installer import FlowInstaller  # noqa: E402

try:  # (older trees have no punt meters; newer ones' flows name them, and need them first)
    from wyvern.southbound.meters import Meters
except ImportError:  # pragma: no cover
    Meters = None  # type: ignore[assignment,misc]
from wyvern.apps.qos import wanted_meters  # noqa: E402
from wyvern.ir.meters import MeterSpec, is_punt_meter  # noqa: E402
from wyvern.southbound.ovs import OvsInstance  # noqa: E402

Obj = dict[str, Any]
CHASSIS = "bench-chassis"
_METER = re.compile(r"meter:(\d+)")


_METERS: dict[tuple[int, str], Any] = {}  # (id(ovs), bridge) -> its Meters


def add_meters(ovs: OvsInstance, bridge: str, ids: Any) -> None:
    """Add the punt meters IDS (or those the lines IDS name), as the agent does before an
    install: with one Meters per bridge, which remembers what it added (a new one would
    first read back every meter, ~20 ms at 10k ports, which the agent never does)."""
    if Meters is None:
        return
    ids = list(ids)
    if ids and isinstance(ids[0], str):
        ids = {int(m) for ln in ids for m in _METER.findall(ln)}
    meters = _METERS.get((id(ovs), bridge))
    if meters is None or meters.ovs is not ovs:
        meters = _METERS[(id(ovs), bridge)] = Meters(ovs, bridge)
    punt = MeterSpec("pktps", 100, 100)
    meters.add({m: punt if is_punt_meter(m) else MeterSpec("kbps", 1000, 800) for m in ids})


N_NETWORKS = 100
N_ROUTERS = 10
N_GROUPS = 10


# ---------------------------------------------------------------- the topology


def mac(i: int, prefix: int = 0xFA163E) -> str:
    v = (prefix << 24) | (i & 0xFFFFFF)
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def port_obj(i: int) -> tuple[str, Obj]:
    """Compute port number i: network i % 100, the group i % 10."""
    net = i % N_NETWORKS
    m = i // N_NETWORKS  # index within the network
    ip = f"10.{net}.{m // 250}.{m % 250 + 2}"
    pid = f"p{i:06d}"
    obj = {
        "id": pid,
        "network_id": f"n{net:03d}",
        "_key": m + 2,
        "mac_address": mac(i),
        "fixed_ips": [{"subnet_id": f"s{net:03d}", "ip_address": ip}],
        "name": pid,
        "admin_state_up": True,
        "port_security_enabled": True,
        "security_groups": [f"sg{i % N_GROUPS}"],
        "allowed_address_pairs": [],
        "device_owner": "compute:nova",
        "device_id": f"vm{i}",
    }
    return f"/wyvern/ports/n{net:03d}/{pid}", obj


def topology(n_ports: int) -> list[tuple[str, Obj]]:
    """(store key, stored JSON) of every object, parents before children."""
    out: list[tuple[str, Obj]] = []
    for n in range(N_NETWORKS):
        nid, sid = f"n{n:03d}", f"s{n:03d}"
        out.append(
            (
                f"/wyvern/networks/{nid}",
                {
                    "id": nid,
                    "_key": 1000 + n,
                    "name": nid,
                    "admin_state_up": True,
                    "port_security_enabled": True,
                    "mtu": 1442,
                },
            )
        )
        out.append(
            (
                f"/wyvern/subnets/{nid}/{sid}",
                {
                    "id": sid,
                    "network_id": nid,
                    "cidr": f"10.{n}.0.0/16",
                    "ip_version": 4,
                    "gateway_ip": f"10.{n}.0.1",
                    "enable_dhcp": True,
                },
            )
        )
    for g in range(N_GROUPS):
        sg = f"sg{g}"
        out.append((f"/wyvern/security_groups/{sg}", {"id": sg, "name": sg, "stateful": True}))
        rules: list[Obj] = [
            {"direction": "egress", "ethertype": "IPv4"},
            {"direction": "egress", "ethertype": "IPv6"},
            {
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 22,
                "port_range_max": 22,
                "remote_ip_prefix": "0.0.0.0/0",
            },
            {"direction": "ingress", "protocol": "icmp", "remote_ip_prefix": "10.0.0.0/8"},
            {
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 443,
                "port_range_max": 443,
                "remote_group_id": sg,
            },
        ]
        for k, r in enumerate(rules):
            rid = f"{sg}-r{k}"
            base: Obj = {
                "id": rid,
                "security_group_id": sg,
                "ethertype": "IPv4",
                "protocol": None,
                "port_range_min": None,
                "port_range_max": None,
                "remote_ip_prefix": None,
                "remote_group_id": None,
                "remote_address_group_id": None,
            }
            out.append((f"/wyvern/security_group_rules/{sg}/{rid}", {**base, **r}))
    for r in range(N_ROUTERS):
        rid = f"r{r:02d}"
        itfs = []
        for n in range(r * 10, r * 10 + 10):
            nid, sid = f"n{n:03d}", f"s{n:03d}"
            ppid = f"rp{n:03d}"
            ip = f"10.{n}.0.1"
            out.append(
                (
                    f"/wyvern/ports/{nid}/{ppid}",
                    {
                        "id": ppid,
                        "network_id": nid,
                        "_key": 1,
                        "mac_address": mac(n, 0xFA163F),
                        "fixed_ips": [{"subnet_id": sid, "ip_address": ip}],
                        "name": ppid,
                        "admin_state_up": True,
                        "port_security_enabled": False,
                        "security_groups": [],
                        "allowed_address_pairs": [],
                        "device_owner": "network:router_interface",
                        "device_id": rid,
                    },
                )
            )
            itfs.append(
                {
                    "port_id": ppid,
                    "network_id": nid,
                    "fixed_ips": [{"subnet_id": sid, "ip_address": ip, "cidr": f"10.{n}.0.0/16"}],
                }
            )
        out.append(
            (
                f"/wyvern/routers/{rid}",
                {
                    "id": rid,
                    "_key": 1 + r,
                    "name": rid,
                    "admin_state_up": True,
                    "routes": [],
                    "_interfaces": itfs,
                },
            )
        )
    out.extend(port_obj(i) for i in range(n_ports))
    return out


def kind_of(store_key: str) -> str:
    return STORE_KINDS[store_key.split("/")[2]]


def build_view(n_ports: int) -> LocalView:
    view = LocalView(chassis_name=CHASSIS)
    for key, obj in topology(n_ports):
        kind = kind_of(key)
        view.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    for i in range(n_ports):
        pid = f"p{i:06d}"
        view.apply("binding", pid, Binding(pid, i + 1))
        view.port_chassis[pid] = CHASSIS
    return view


# ---------------------------------------------------------------- helpers


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class Ovs:
    """A private userspace OVS (no netns) with a fresh bridge per name."""

    def __init__(self) -> None:
        self.inst = OvsInstance.start()

    def __enter__(self) -> OvsInstance:
        return self.inst

    def __exit__(self, *exc: object) -> None:
        self.inst.stop()


def render_lines(engine: Engine) -> list[str]:
    """Every line a render hands on (a first render's: the whole set)."""
    out: Any = engine.render()
    lines = getattr(out, "lines", None)
    return list(lines()) if callable(lines) else list(out)


def install_changes(installer: FlowInstaller, rendered: Any) -> Any:
    """What the agent does with a render: apply() its changes (sync() in older trees)."""
    apply = getattr(installer, "apply", None)
    return apply(rendered) if apply is not None else installer.sync(rendered)


def install_all(installer: FlowInstaller, lines: list[str]) -> Any:
    """A complete set of rendered lines, as an agent's first install."""
    if FlowChanges is not None:
        return installer.apply(FlowChanges(text=["\n".join(lines)], complete=True))
    from wyvern.southbound.flowtext import RenderedLines  # type: ignore[attr-defined]

    return installer.sync(RenderedLines(lines))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- (a) install


def bench_install(n_flows: int) -> dict[str, Any]:
    n_ports = max(1, n_flows // 20)  # ~25 flows per port: enough, then cut to n_flows
    engine = Engine(default_apps())
    engine.full(build_view(n_ports))
    lines = render_lines(engine)
    # Top up with exact-match flows of the same shapes if the topology has fewer.
    i = n_ports
    while len(lines) < n_flows:
        pid = f"p{i:06d}"
        extra = Engine(default_apps())
        view = build_view(0)
        _, obj = port_obj(i)
        view.apply("port", pid, record_from_obj("port", obj))
        view.apply("binding", pid, Binding(pid, i + 1))
        view.port_chassis[pid] = CHASSIS
        extra.full(view)
        have = set(lines)
        lines += [ln for ln in render_lines(extra) if ln not in have]
        i += 1
    lines = lines[:n_flows]  # still render_flow's text, as the agent's
    text = "\n".join(lines) + "\n"
    out: dict[str, Any] = {"flows": len(lines)}
    with Ovs() as ovs, tempfile.NamedTemporaryFile("w", suffix=".flows") as f:
        f.write(text)
        f.flush()
        raw: list[float] = []
        ours: list[float] = []
        parse: list[float] = []
        for rep in range(2):
            br = f"brraw{rep}"
            ovs.ensure_bridge(br)
            add_meters(ovs, br, lines)
            t0 = time.perf_counter()
            ovs.ofctl("-O", "OpenFlow14", "--bundle", "add-flows", br, f.name, timeout=300)
            raw.append(time.perf_counter() - t0)
            ovs.vsctl("del-br", br)
            br = f"brwv{rep}"
            ovs.ensure_bridge(br)
            add_meters(ovs, br, lines)
            inst = FlowInstaller(ovs, br)
            inst.resync_from_switch()  # what the agent does at start (an empty bridge)
            t0 = time.perf_counter()
            stats = install_all(inst, lines)
            ours.append(time.perf_counter() - t0)
            parse.append(stats.parse_seconds)
            assert stats.added == len(lines), stats
            # An agent restart: a new installer over the full bridge (reads it, compares
            # the whole set in canonical form, sends nothing).
            t0 = time.perf_counter()
            again = install_all(FlowInstaller(ovs, br), lines)
            out["restart_sync_s"] = time.perf_counter() - t0
            assert again.changed == 0, again
            n = len(ovs.ofctl("-O", "OpenFlow14", "dump-flows", br, timeout=300).splitlines())
            assert n >= len(lines), n
            ovs.vsctl("del-br", br)
    out["raw_bundle_s"] = min(raw)
    out["sync_s"] = min(ours)
    out["canonical_s"] = min(parse)
    out["ratio"] = out["sync_s"] / out["raw_bundle_s"]
    return out


# ---------------------------------------------------------------- (b) full recompute


def cold_start() -> None:
    """Forget the module-level memos (parsed values, validated shapes, rendered text, and
    every functools.lru_cache of a wyvern module), so that every repeat measures what a
    restarted agent does, not a warm second run."""
    for module in (ir, render, cookies):
        clear = getattr(module, "clear_caches", None)
        if clear is not None:  # (older trees, for a before/after comparison)
            clear()
    for name, module in list(sys.modules.items()):
        if name.startswith("wyvern.") and module is not None:
            for value in list(vars(module).values()):
                cache_clear = getattr(value, "cache_clear", None)
                if callable(cache_clear):
                    cache_clear()


def bench_full(n_ports: int, repeat: int) -> dict[str, Any]:
    view = build_view(n_ports)
    times: list[float] = []
    cpu: list[float] = []
    flows = 0
    render_s: list[float] = []
    render_cpu: list[float] = []
    settle_cpu: list[float] = []
    inside: list[float] = []
    for _ in range(repeat):
        cold_start()
        engine = Engine(default_apps())
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        engine.full(view)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        # (newer trees render each entry inside full(), and say how long that took)
        inside.append(getattr(engine, "full_render_seconds", 0.0))
        t0, c0 = time.perf_counter(), time.process_time()
        engine.render()
        render_s.append(time.perf_counter() - t0)
        render_cpu.append(time.process_time() - c0)
        c0 = time.process_time()
        getattr(engine, "settle", lambda: 0)()  # (older trees filed the reads in full())
        settle_cpu.append(time.process_time() - c0)
        flows = engine.flow_count()
    best = times.index(min(times))
    return {
        "ports": n_ports,
        "full_s": min(times),
        "render_inside_full_s": inside[best],  # part of full_s (wall), when rendered there
        "full_excl_render_s": min(times) - inside[best],
        "full_cpu_s": min(cpu),  # (CPU time: less skewed by other work on a shared box)
        "render_s": min(render_s),
        "render_cpu_s": min(render_cpu),
        "settle_cpu_s": min(settle_cpu),  # the reads' filing, deferred to when idle
        "flows": flows,
        "flows_per_port": flows / n_ports,
    }


# ---------------------------------------------------------------- (e) QoS on 1,000 ports


def qos_view(n_ports: int) -> LocalView:
    """build_view, with every port on one QoS policy of four rules."""
    view = build_view(n_ports)
    policy = {
        "id": "qos0",
        "_rules": {
            "r1": {"id": "r1", "type": "bandwidth_limit", "direction": "egress",
                   "max_kbps": 10_000, "max_burst_kbps": 0},
            "r2": {"id": "r2", "type": "bandwidth_limit", "direction": "ingress",
                   "max_kbps": 20_000, "max_burst_kbps": 0},
            "r3": {"id": "r3", "type": "dscp_marking", "dscp_mark": 26},
            "r4": {"id": "r4", "type": "packet_rate_limit", "direction": "egress",
                   "max_kpps": 10, "max_burst_kpps": 0},
        },
    }  # fmt: skip
    view.apply("qos_policy", "qos0", record_from_obj("qos_policy", policy))
    for i in range(n_ports):
        _, obj = port_obj(i)
        obj["qos_policy_id"] = "qos0"
        view.apply("port", obj["id"], record_from_obj("port", obj))
    return view


def bench_qos(n_ports: int) -> dict[str, Any]:
    base = build_view(n_ports)  # the same ports without QoS: the baseline, in this run
    cold_start()
    c0 = time.process_time()
    Engine(default_apps()).full(base)
    base_cpu = time.process_time() - c0
    view = qos_view(n_ports)
    cold_start()
    engine = Engine(default_apps())
    t0, c0 = time.perf_counter(), time.process_time()
    engine.full(view)
    full_s = time.perf_counter() - t0
    full_cpu = time.process_time() - c0
    lines = render_lines(engine)
    meters = wanted_meters(view)
    out: dict[str, Any] = {"ports": n_ports, "full_s": full_s, "flows": len(lines)}
    out["full_cpu_s"] = full_cpu
    out["full_cpu_without_qos_s"] = base_cpu
    out["qos_meters"] = len(meters)
    raw_br, our_br = f"bq{os.getpid() % 100000}r", f"bq{os.getpid() % 100000}w"
    with Ovs() as ovs, tempfile.NamedTemporaryFile("w", suffix=".flows") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        punt = MeterSpec("pktps", 100, 100)
        every = {m: punt for ln in lines for m in map(int, _METER.findall(ln)) if is_punt_meter(m)}
        every.update(meters)
        ovs.ensure_bridge(raw_br)
        Meters(ovs, raw_br).add(every)
        t0 = time.perf_counter()
        ovs.ofctl("-O", "OpenFlow14", "--bundle", "add-flows", raw_br, f.name, timeout=300)
        out["raw_bundle_s"] = time.perf_counter() - t0
        ovs.ensure_bridge(our_br)
        inst = FlowInstaller(ovs, our_br)
        inst.resync_from_switch()
        t0 = time.perf_counter()
        Meters(ovs, our_br).add(every)  # (the agent: meters first, then the flows)
        out["meters_s"] = time.perf_counter() - t0
        stats = install_all(inst, lines)
        out["install_s"] = time.perf_counter() - t0
        assert stats.added == len(lines), stats
        shown = ovs.ofctl("-O", "OpenFlow15", "dump-meters", our_br, timeout=300)
        out["meters_on_switch"] = shown.count("meter=")
    out["ratio"] = out["install_s"] / out["raw_bundle_s"]
    return out


# ---------------------------------------------------------------- (c) incremental add


def load_store(store: MemoryStore, n_ports: int) -> None:
    objs = topology(n_ports)
    for k in range(0, len(objs), 500):
        store.txn([], [Put(key, orjson.dumps(o)) for key, o in objs[k : k + 500]])


def pipeline(
    n_ports: int, ovs: OvsInstance, bridge: str, settle: bool = True, store: Store | None = None
) -> Iterator[Any]:
    """Sync + Engine + FlowInstaller over a store holding the topology: a MemoryStore
    loaded here, or STORE (already loaded)."""
    if store is None:
        store = MemoryStore()
        load_store(store, n_ports)
    view = LocalView(chassis_name=CHASSIS)
    sync = Sync(store, view)
    engine = Engine(default_apps())
    installer = FlowInstaller(ovs, bridge)
    ovs.ensure_bridge(bridge)
    installer.resync_from_switch()
    sync.start()
    for i in range(n_ports):
        pid = f"p{i:06d}"
        sync.set_binding(pid, Binding(pid, i + 1))
        view.port_chassis[pid] = CHASSIS
    t0 = time.perf_counter()
    engine.full(view)
    full_s = time.perf_counter() - t0
    add_meters(ovs, bridge, range(1, n_ports + 1))
    t0 = time.perf_counter()
    first = install_changes(installer, engine.render())
    if hasattr(gc, "freeze"):  # as Agent.start() does after its first install
        gc.collect()
        gc.freeze()
    if settle:  # as the agent does once idle (older trees filed the reads in full())
        with gc_paused():
            getattr(engine, "settle", lambda: 0)()
    getattr(engine_module, "release_free_memory", lambda: None)()  # (newer trees: as the agent)
    yield {"full_s": full_s, "install_s": time.perf_counter() - t0, "flows": first.added}
    yield store, sync, engine, installer


def bench_incremental(n_ports: int, adds: int, settle: bool = True) -> dict[str, Any]:
    with Ovs() as ovs:
        gen = pipeline(n_ports, ovs, "br-int", settle)
        setup = next(gen)
        store, sync, engine, installer = next(gen)
        total: list[float] = []
        compute: list[float] = []
        install: list[float] = []
        changed: list[int] = []
        for k in range(adds):
            i = n_ports + k
            key, obj = port_obj(i)
            sync.pump(0)
            t0 = time.perf_counter()
            store.txn([], [Put(key, orjson.dumps(obj))])
            changes = sync.pump(0)
            while not any(c.kind == "port" for c in changes):
                changes += sync.pump(0.01)
            # The binding, as the agent's OVS monitor learns it in the same loop.
            view = sync.view
            view.port_chassis[obj["id"]] = CHASSIS
            changes += sync.set_binding(obj["id"], Binding(obj["id"], i + 1))
            with gc_paused():  # as the agent does
                t1 = time.perf_counter()
                engine.apply_all(view, changes)
                lines = engine.render()
                t2 = time.perf_counter()
                add_meters(ovs, "br-int", [i + 1])  # (the agent adds the port's meter first)
                stats = install_changes(installer, lines)
                t3 = time.perf_counter()
            total.append(t3 - t0)
            compute.append(t2 - t1)
            install.append(t3 - t2)
            changed.append(stats.changed)
        gen.close()
    return {
        "ports": n_ports,
        "adds": adds,
        **{f"setup_{k}": v for k, v in setup.items()},
        "flows_per_add": statistics.median(changed),
        "total_median_s": statistics.median(total),
        "total_p95_s": pct(total, 0.95),
        "compute_median_s": statistics.median(compute),
        "compute_p95_s": pct(compute, 0.95),
        "install_median_s": statistics.median(install),
        "first_total_s": total[0],
        "first_compute_s": compute[0],
    }


# ---------------------------------------------------------------- (e) a big trunk

MAX_SUBPORTS = 4094


def trunk_view(n_subports: int) -> tuple[LocalView, list[tuple[str, Obj]]]:
    """The (b) topology for 1 + N_SUBPORTS ports: p000000 is a trunk's parent, every
    other port its subport on VLAN i (on the 100 networks), all wired here as the agent
    wires them (the parent's VIF, a patch pair per subport)."""
    n_ports = n_subports + 1
    view = LocalView(chassis_name=CHASSIS)
    objs = topology(n_ports)
    for key, obj in objs:
        if obj.get("id") == "p000000":
            obj["_trunk"] = {"id": "t", "subports": [[f"p{i:06d}", i] for i in range(1, n_ports)]}
        elif str(obj.get("id", "")).startswith("p"):
            obj["_subport"] = {"trunk_id": "t", "parent_id": "p000000", "vlan": int(obj["id"][1:])}
        kind = kind_of(key)
        view.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    view.apply("binding", "p000000", Binding("p000000", 1))
    view.port_chassis["p000000"] = CHASSIS
    for i in range(1, n_ports):
        pid = f"p{i:06d}"
        view.apply("binding", pid, Binding(pid, 2 * i, 2 * i + 1))
        view.port_chassis[pid] = CHASSIS
    return view, objs


def bench_trunk(n_subports: int, repeat: int) -> dict[str, Any]:
    """engine.full at a trunk of N_SUBPORTS subports (cold, as (b)), then removing and
    adding back one subport (its binding, as the agent's patch pair goes and comes)."""
    view, _ = trunk_view(n_subports)
    times: list[float] = []
    render_s: list[float] = []
    flows = 0
    engine = Engine(default_apps())
    for _ in range(repeat):
        cold_start()
        engine = Engine(default_apps())
        gc.collect()
        t0 = time.perf_counter()
        engine.full(view)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.render()
        render_s.append(time.perf_counter() - t0)
        flows = engine.flow_count()
    engine.settle()
    last = f"p{n_subports:06d}"
    bound = view.bindings[last]
    change_s: list[float] = []
    for _ in range(5):
        for new in (None, bound):
            t0 = time.perf_counter()
            engine.apply(view, view.apply("binding", last, new))
            engine.render()
            change_s.append(time.perf_counter() - t0)
    return {
        "subports": n_subports,
        "full_s": min(times),
        "render_s": min(render_s),
        "flows": flows,
        "subport_change_median_s": statistics.median(change_s),
        "subport_change_p95_s": pct(change_s, 95),
    }


# ---------------------------------------------------------------- (d) memory


def rss_child(mode: str, n_ports: int, store_path: str) -> None:
    """Run in a subprocess: print the RSS (KiB) of the process after MODE. The agent reads
    the topology from the SQLite file STORE_PATH that the parent wrote, as an agent on
    an all-in-one host does: the store's own data is not in the agent's heap (an
    in-process MemoryStore would add ~40 MiB that no deployed agent carries)."""
    if mode == "baseline":
        print(json.dumps({"rss_kib": rss_kib()}))
        return
    with Ovs() as ovs:
        gen = pipeline(n_ports, ovs, "br-int", store=SqliteStore(store_path))
        setup = next(gen)
        held = next(gen)
        gc.collect()
        print(
            json.dumps(
                {
                    "rss_kib": rss_kib(),
                    "flows": setup["flows"],
                    "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                }
            )
        )
        del held
        gen.close()


def bench_rss(n_ports: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="wyvern-bench-rss-")
    store_path = os.path.join(tmp.name, "store.db")
    store = SqliteStore(store_path)
    load_store(store, n_ports)
    store.close()

    def child(mode: str) -> dict[str, Any]:
        cmd = [sys.executable, __file__, "--rss-child", mode, "--ports", str(n_ports)]
        out = subprocess.run(
            [*cmd, "--store-path", store_path],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    with tmp:
        base = child("baseline")
        agent = child("agent")
    return {
        "ports": n_ports,
        "python_baseline_mib": base["rss_kib"] / 1024,
        "agent_mib": agent["rss_kib"] / 1024,
        "agent_peak_mib": agent["max_rss_kib"] / 1024,
        "flows": agent["flows"],
        "agent_minus_baseline_mib": (agent["rss_kib"] - base["rss_kib"]) / 1024,
    }


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--adds", type=int, default=30)
    ap.add_argument("--only", default="abcdef", help="which parts to run, e.g. 'b'")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store-path", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.ports, args.store_path)
        return 0

    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "controller_bench",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_revision": git_revision(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),  # a shared box: other work skews figures
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    table: list[tuple[str, str, float, float, str]] = []  # name, unit, goal, figure, kind

    if "b" in args.only:
        for n, rep in ((1000, 3), (args.ports, 2)):
            r = bench_full(n, rep)
            results[f"full_{n}"] = r
            print(
                f"(b) full recompute, {n} local ports: {r['full_s']:.3f} s, of which "
                f"rendering {r['render_inside_full_s']:.3f} s "
                f"(CPU {r['full_cpu_s']:.3f} s; {r['flows']} flows, "
                f"{r['flows_per_port']:.1f} per port; render() after {r['render_s']:.3f} s, "
                f"CPU {r['render_cpu_s']:.3f} s; filing deferred to idle (settle) "
                f"CPU {r['settle_cpu_s']:.3f} s)",
                flush=True,
            )
        full = results[f"full_{args.ports}"]
        table.append(
            (
                f"full recompute {args.ports} ports (excl. render)",
                "s",
                1.0,
                full["full_excl_render_s"],
                "max",
            )
        )
        table.append(
            (
                f"full + render {args.ports} ports (wall)",
                "s",
                float("nan"),
                full["full_s"] + full["render_s"],
                "info",
            )
        )
    if "a" in args.only:
        r = bench_install(args.flows)
        results["install"] = r
        print(
            f"(a) install {r['flows']} flows: ours {r['sync_s']:.3f} s "
            f"(canonicalise {r['canonical_s']:.3f} s), raw ovs-ofctl --bundle "
            f"{r['raw_bundle_s']:.3f} s, ratio {r['ratio']:.2f}x; "
            f"restart (a new installer, nothing to send) {r['restart_sync_s']:.3f} s",
            flush=True,
        )
        table.append((f"install {r['flows']} flows / raw bundle", "x", 2.0, r["ratio"], "max"))
    if "c" in args.only:
        r = bench_incremental(args.ports, args.adds)
        results["incremental"] = r
        print(
            f"(c) port add at {args.ports} ports ({r['flows_per_add']:.0f} flows each): "
            f"store write -> installed median {r['total_median_s'] * 1e3:.1f} ms, "
            f"p95 {r['total_p95_s'] * 1e3:.1f} ms; compute median "
            f"{r['compute_median_s'] * 1e3:.2f} ms, p95 {r['compute_p95_s'] * 1e3:.2f} ms; "
            f"install median {r['install_median_s'] * 1e3:.1f} ms "
            f"(setup: full {r['setup_full_s']:.2f} s, first install {r['setup_install_s']:.2f} s)",
            flush=True,
        )
        table.append(
            ("port add, write -> installed (p50)", "ms", 20.0, r["total_median_s"] * 1e3, "max")
        )
        table.append(
            ("port add, write -> installed (p95)", "ms", 20.0, r["total_p95_s"] * 1e3, "max")
        )
        table.append(("port add, compute (p50)", "ms", 5.0, r["compute_median_s"] * 1e3, "max"))
        table.append(("port add, compute (p95)", "ms", 5.0, r["compute_p95_s"] * 1e3, "max"))
        r = bench_incremental(args.ports, 3, settle=False)
        results["incremental_unsettled"] = r
        print(
            f"(c) first port add with the full's reads still pending (it files them): "
            f"store write -> installed {r['first_total_s'] * 1e3:.1f} ms, compute "
            f"{r['first_compute_s'] * 1e3:.1f} ms",
            flush=True,
        )
        table.append(
            ("port add, first, reads pending", "ms", float("nan"), r["first_total_s"] * 1e3, "info")
        )
    if "e" in args.only:
        r = bench_qos(1000)
        results["qos"] = r
        print(
            f"(e) QoS policy on {r['ports']} ports: full recompute {r['full_s']:.3f} s "
            f"(CPU {r['full_cpu_s']:.3f} s; without QoS, same run, CPU "
            f"{r['full_cpu_without_qos_s']:.3f} s; "
            f"{r['flows']} flows, {r['qos_meters']} QoS meters); install with meters "
            f"{r['install_s']:.3f} s (meters alone {r['meters_s']:.3f} s, "
            f"{r['meters_on_switch']} on the switch), raw ovs-ofctl --bundle "
            f"{r['raw_bundle_s']:.3f} s, ratio {r['ratio']:.2f}x",
            flush=True,
        )
        table.append(
            (f"QoS on {r['ports']} ports: full recompute (CPU)", "s", 1.0, r["full_cpu_s"], "max")
        )
        table.append(
            (f"QoS on {r['ports']} ports: install / raw bundle", "x", 2.0, r["ratio"], "max")
        )
    if "f" in args.only:
        r = bench_trunk(MAX_SUBPORTS, 2)
        results["trunk"] = r
        plain = bench_full(MAX_SUBPORTS + 1, 2)  # (the baseline, same run: no trunk)
        results["trunk_baseline"] = plain
        print(
            f"(f) a trunk of {r['subports']} subports ({r['flows']} flows): full recompute "
            f"{r['full_s']:.3f} s (the same {MAX_SUBPORTS + 1} ports without the trunk: "
            f"{plain['full_s']:.3f} s, {plain['flows']} flows), render {r['render_s']:.3f} s; "
            f"one subport unplugged or "
            f"plugged: median {r['subport_change_median_s'] * 1e3:.2f} ms, p95 "
            f"{r['subport_change_p95_s'] * 1e3:.2f} ms",
            flush=True,
        )
        table.append((f"full recompute, trunk of {MAX_SUBPORTS}", "s", 1.0, r["full_s"], "max"))
        table.append(
            (
                "trunk subport change, compute (p95)",
                "ms",
                5.0,
                r["subport_change_p95_s"] * 1e3,
                "max",
            )
        )
    if "d" in args.only:
        r = bench_rss(args.ports)
        results["rss"] = r
        print(
            f"(d) RSS at {args.ports} ports ({r['flows']} flows): {r['agent_mib']:.0f} MiB "
            f"(peak {r['agent_peak_mib']:.0f} MiB); bare Python with the same imports "
            f"{r['python_baseline_mib']:.0f} MiB; difference "
            f"{r['agent_minus_baseline_mib']:.0f} MiB",
            flush=True,
        )
        table.append((f"RSS at {args.ports} ports (P9)", "MiB", 150.0, r["agent_mib"], "max"))

    results["seconds"] = time.monotonic() - started
    results["loadavg_at_end"] = os.getloadavg()
    results["table"] = [
        {
            "what": n,
            "unit": u,
            "goal": g,
            "figure": f,
            "status": "info" if k == "info" else ("MET" if f <= g else "MISSED"),
        }
        for n, u, g, f, k in table
    ]
    print()
    print(f"{'what':42} {'goal':>10} {'figure':>10} {'ratio':>7}  status")
    for row in results["table"]:
        goal = row["goal"]
        if row["status"] == "info":
            print(f"{row['what']:42} {'-':>10} {row['figure']:>7.1f} {row['unit']:3} {'-':>6}  -")
            continue
        print(
            f"{row['what']:42} {goal:>7.1f} {row['unit']:3}"
            f"{row['figure']:>7.2f} {row['unit']:3}{row['figure'] / goal:>6.2f}  {row['status']}"
        )
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"controller_bench-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    load = results["loadavg_at_start"][0], results["loadavg_at_end"][0]
    print(
        f"\n{path.relative_to(ROOT)} ({results['seconds']:.0f} s; "
        f"load average {load[0]:.1f} at start, {load[1]:.1f} at end, {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
