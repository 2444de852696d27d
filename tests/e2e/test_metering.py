"""Metering for real: known numbers of packets and bytes through a metered router's
gateway, counted by OVS flow statistics on the chassis that route them, summed over
the chassis by the API's /metrics and `wyvern meters`, exact, and still exact after
the agents are SIGKILLed and restarted.

Two chassis map the physical network: hv0 is the gateway chassis (a VM there leaves by
SNAT), hv1 is not, but NATs its VM's floating IP itself (distributed): each counts
what it routes. Pings of a known size make the numbers exact: an echo of -s N is an IP
packet of N + 28 bytes each way, and nothing else crosses the gateway meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import system
from tests.e2e.multichassis import Cluster, cluster
from tests.e2e.test_dataplane import eventually, ip_of, ping, pings
from tests.e2e.test_north_south import (
    FAR,
    UPSTREAM,
    behind_router,
    external_network,
)
from tests.e2e.test_provider_networks import PHYSNET, TOR, Segment, attach_nic, sh
from tests.harness import process_env, wyvern_command
from tests.southbound.conftest import in_netns, unique
from wyvern.ir import pipeline
from wyvern.model.keys import STATUS_METERING
from wyvern.nb.etcd import EtcdStore
from wyvern.southbound.ovs import OvsInstance, netns_exists

pytestmark = pytest.mark.system

INTERVAL = 0.5  # s between two readings of the counters (agent_metering_interval)
LABELS = "metering/metering-labels"
RULES = "metering/metering-label-rules"


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Segment]]:
    """hv0: the gateway chassis; hv1: maps the physnet, no gateway (floating IPs of its
    VMs NATed there); the host on the physical network's switch."""
    system.require(request)
    host = unique("wvm-out-")
    tor = OvsInstance.start(netns=unique("wvm-tor-"))
    try:
        tor.vsctl("add-br", TOR, "--", "set", "Bridge", TOR, "datapath_type=netdev")
        sh("ip", "netns", "add", host)
        with cluster(tmp_path, 0) as c:
            for priority in (2, 0):
                bridge = unique("br-ex-")
                env = {
                    "WYVERN_BRIDGE_MAPPINGS": json.dumps({PHYSNET: bridge}),
                    "WYVERN_GATEWAY_PRIORITY": str(priority),
                    "WYVERN_AGENT_METERING_INTERVAL": str(INTERVAL),
                }
                hv = c.add_chassis(env=env)
                attach_nic(hv, bridge, Segment(tor, host, ""))
            c.wait_tunnels()
            nic, host_port = Segment(tor, host, "").veth_to(host)
            sh("ip", "-n", host, "link", "set", nic, "name", "eth0")
            for dev in ("eth0", "lo"):
                sh("ip", "-n", host, "link", "set", dev, "up")
            assert in_netns(host, "ethtool", "-K", "eth0", "tx", "off").returncode == 0
            sh("ip", "-n", host, "addr", "add", f"{UPSTREAM}/24", "dev", "eth0")
            sh("ip", "-n", host, "addr", "add", f"{FAR}/32", "dev", "lo")
            yield c, Segment(tor, host, host_port)
    finally:
        if netns_exists(host):
            subprocess.run(["ip", "netns", "del", host], check=False)
        tor.stop()


Counters = dict[tuple[str, str], tuple[int, int]]  # (label, direction) -> (packets, bytes)


def counters(c: Cluster) -> Counters:
    """/metrics, as Prometheus scrapes it (noauth on loopback: the admin)."""
    resp = requests.get(c.api.url + "metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    out: dict[tuple[str, str], list[int]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            key = (s.labels["label_id"], s.labels["direction"])
            which = 0 if "packets" in s.name else 1
            out.setdefault(key, [0, 0])[which] += int(s.value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def per_chassis(c: Cluster, label: str, direction: str) -> dict[str, int]:
    """Packets of LABEL in DIRECTION in each chassis's own report (the store)."""
    store = EtcdStore(c.etcd_endpoints)
    try:
        out = {}
        for kv in store.list(STATUS_METERING).items:
            report = orjson.loads(kv.value)
            dirs = [r.get(direction, [0, 0]) for r in report["labels"].get(label, {}).values()]
            out[report["chassis"]] = sum(d[0] for d in dirs)
        return out
    finally:
        store.close()


def settle(c: Cluster, want: dict[tuple[str, str], tuple[int, int]], what: str) -> Counters:
    """Until the counters named in WANT are exactly those values; then they must stay."""
    deadline = time.monotonic() + 15
    while not all(counters(c).get(k) == v for k, v in want.items()):
        if time.monotonic() > deadline:
            table = f"table={pipeline.table_of('meter_count')}"
            dumps = "\n".join(
                hv.ovs.ofctl("-O", "OpenFlow15", "dump-flows", "br-int", table) for hv in c.hv
            )
            raise AssertionError(f"{what}: want {want}, got {counters(c)}\n{dumps}\n{c.logs()}")
        time.sleep(INTERVAL)
    time.sleep(3 * INTERVAL)  # (and nothing more trickles in)
    got = counters(c)
    assert {k: got.get(k) for k in want} == want, what
    return got


def echo(ns: str, ip: str, count: int, size: int) -> None:
    out = ping(ns, ip, "-s", str(size), count=count)
    assert out.returncode == 0 and f"{count} received" in out.stdout, out.stdout


def label_with(c: Cluster, name: str, *rules: dict[str, Any]) -> str:
    label = c.post(LABELS, name=name)
    for rule in rules:
        c.post(RULES, metering_label_id=label["id"], **rule)
    return str(label["id"])


def test_counters_are_exact_summed_over_chassis_and_survive_agent_restarts(
    world: tuple[Cluster, Segment],
) -> None:
    c, _ = world
    ext, _ = external_network(c)
    net, _ = behind_router(c, "10.93.0.0/24", ext)
    p0, ns0 = c.hv[0].vm(net, "vm0")  # SNATed on hv0, the gateway chassis
    p1, ns1 = c.hv[1].vm(net, "vm1")  # its floating IP NATed on hv1
    fip = c.post("floatingips", floating_network_id=ext["id"], port_id=p1["id"])
    eventually(lambda: c.get("floatingips", fip["id"])["status"] == "ACTIVE", "FIP ACTIVE")
    for ns in (ns0, ns1):  # both ways out work (and the gateway's MAC bindings are learnt)
        eventually(lambda ns=ns: pings(ns, UPSTREAM), "the VMs reach the host", timeout=20)

    vms = "10.93.0.0/24"
    every = label_with(c, "every", {"direction": "egress", "remote_ip_prefix": vms},
                       {"direction": "ingress", "remote_ip_prefix": vms})  # fmt: skip
    # vm0 excluded: counts vm1 only
    but_vm0 = label_with(c, "but-vm0", {"direction": "egress", "remote_ip_prefix": vms},
                         {"direction": "egress", "remote_ip_prefix": f"{ip_of(p0)}/32",
                          "excluded": True})  # fmt: skip
    # to the far address only, by destination (the source/destination fields)
    to_far = label_with(c, "to-far", {"direction": "egress", "destination_ip_prefix": f"{FAR}/32"})
    nowhere = label_with(c, "nowhere", {"direction": "egress", "remote_ip_prefix": "10.77.0.0/24"})
    time.sleep(3 * INTERVAL)  # the labels' flows in, their counters read once
    base = counters(c)
    for key in ((every, "egress"), (every, "ingress"), (but_vm0, "egress"), (to_far, "egress"),
                (nowhere, "egress")):  # fmt: skip
        assert key in base, (key, base)

    def after(delta: dict[tuple[str, str], tuple[int, int]]) -> dict[tuple[str, str], Any]:
        return {k: (base[k][0] + p, base[k][1] + b) for k, (p, b) in delta.items()}

    # vm0 (hv0, SNAT): 10 echoes of 200 bytes to the host, 10 replies: 228 IP bytes each.
    echo(ns0, UPSTREAM, 10, 200)
    base = settle(c, after({
        (every, "egress"): (10, 2280), (every, "ingress"): (10, 2280),
        (but_vm0, "egress"): (0, 0), (to_far, "egress"): (0, 0), (nowhere, "egress"): (0, 0),
    }), "vm0's echoes counted by 'every' only")  # fmt: skip
    # vm1 (hv1, its floating IP): 7 echoes of 100 bytes to the far address.
    echo(ns1, FAR, 7, 100)
    base = settle(c, after({
        (every, "egress"): (7, 7 * 128), (every, "ingress"): (7, 7 * 128),
        (but_vm0, "egress"): (7, 7 * 128), (to_far, "egress"): (7, 7 * 128),
        (nowhere, "egress"): (0, 0),
    }), "vm1's echoes counted by every label that selects them")  # fmt: skip
    # Each chassis counted what it routed; /metrics is their sum.
    chassis = per_chassis(c, every, "egress")
    assert chassis[c.hv[0].name] >= 10 and chassis[c.hv[1].name] >= 7, chassis
    assert sum(chassis.values()) == base[(every, "egress")][0]

    # Both agents SIGKILLed and started again: the counters go on from where they were.
    for hv in c.hv:
        assert hv.agent is not None
        hv.agent.signal(signal.SIGKILL)
        hv.agent.process.wait(timeout=10)
    for hv in c.hv:
        hv.start_agent()
    for hv in c.hv:
        hv.wait_agent_alive()
    time.sleep(3 * INTERVAL)
    assert counters(c) == base  # (never lower, nothing counted twice)
    echo(ns0, FAR, 5, 300)
    echo(ns1, UPSTREAM, 4, 50)
    settle(c, after({
        (every, "egress"): (9, 5 * 328 + 4 * 78), (every, "ingress"): (9, 5 * 328 + 4 * 78),
        (but_vm0, "egress"): (4, 4 * 78), (to_far, "egress"): (5, 5 * 328),
        (nowhere, "egress"): (0, 0),
    }), "after the restarts")  # fmt: skip

    # The CLI prints the same sums.
    out = subprocess.run(
        [*wyvern_command(), "meters", "--api", c.api.url],
        capture_output=True, text=True, timeout=30, env=process_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(every)]
    rows = {ln[3]: (int(ln[4]), int(ln[5])) for ln in lines}
    final = counters(c)
    assert rows == {d: final[(every, d)] for d in ("egress", "ingress")}, out.stdout
    with contextlib.suppress(Exception):
        c.delete(LABELS, nowhere)
