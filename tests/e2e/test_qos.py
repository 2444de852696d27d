"""QoS on real OVS (userspace datapath): bandwidth limits both ways, DSCP, packet rate.

Two VMs on one chassis. A bounded TCP transfer's goodput, as the receiver counts it, lands
within 75%-110% of a bandwidth limit in each direction (the meter's burst, 80% of the rate
as Neutron advises for TCP, is let through first: the rate is measured after the first
RAMP seconds); detaching the policy restores full speed. A DSCP mark is read by the
receiver (IP_RECVTOS); a packet rate limit holds a UDP flood to its rate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Chassis
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

LIMIT_KBPS = 4000  # modest, so the CPU load of parallel tests does not decide the result
RAMP = 1.5  # seconds of the transfer left out of the rate (the meter's burst)
SECONDS = 6  # the transfer's length at the limit

# Receiver: counts bytes with their arrival times; prints the goodput (bit/s) after RAMP.
TCP_SINK = """
import json, socket, sys, time
ramp = float(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); total = 0; first = None; mark = None
while True:
    data = conn.recv(65536)
    now = time.monotonic()
    if not data:
        break
    if first is None:
        first = now
    total += len(data)
    if mark is None and now - first >= ramp:
        mark = (now, total)
end = now
if mark and end > mark[0]:
    rate = (total - mark[1]) * 8 / (end - mark[0])
else:  # (all of it within the ramp: full speed)
    rate = total * 8 / max(end - first, 1e-6)
print(json.dumps({"bytes": total, "rate": rate, "seconds": end - first}), flush=True)
"""
TCP_SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5001), timeout=30)
c.sendall(b"x" * int(sys.argv[2])); c.shutdown(socket.SHUT_WR); c.close()
"""
# Receiver of UDP with IP_RECVTOS: prints the DSCP of the first datagram.
DSCP_SINK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind(("0.0.0.0", 5002)); s.settimeout(15); print("ready", flush=True)
data, anc, _, _ = s.recvmsg(100, socket.CMSG_SPACE(1))
tos = [c[2][0] for c in anc if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS]
print(tos[0] >> 2 if tos else -1, flush=True)
"""
DSCP_SOURCE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    s.sendto(b"mark?", (sys.argv[1], 5002)); time.sleep(0.1)
"""
# UDP flood for SECONDS; the sink counts what arrives and prints packets/s after RAMP.
UDP_SINK = """
import json, socket, sys, time
ramp = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("0.0.0.0", 5003)); s.settimeout(2); print("ready", flush=True)
n = 0; first = None; mark = None; last = None
while True:
    try:
        s.recv(2048)
    except socket.timeout:
        break
    last = time.monotonic(); n += 1
    if first is None:
        first = last
    if mark is None and last - first >= ramp:
        mark = (last, n)
rate = (n - mark[1]) / (last - mark[0]) if mark and last > mark[0] else float(n)
print(json.dumps({"packets": n, "rate": rate}), flush=True)
"""
UDP_SOURCE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2]); sent = 0
while time.monotonic() < end:
    for _ in range(50):
        s.sendto(b"p" * 64, (sys.argv[1], 5003)); sent += 1
    time.sleep(0.001)
print(sent)
"""


def qos(c: Chassis, path: str, key: str, **attrs: Any) -> dict[str, Any]:
    resp = requests.post(f"{c.base}/qos/{path}", json={key: attrs}, timeout=10)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()[key]
    return body


def policy(c: Chassis, *rules: tuple[str, dict[str, Any]]) -> str:
    pid = str(qos(c, "policies", "policy", name="e2e-qos")["id"])
    for rtype, attrs in rules:
        qos(c, f"policies/{pid}/{rtype}_rules", f"{rtype}_rule", **attrs)
    return pid


def two_vms(c: Chassis) -> tuple[dict[str, Any], str, str, dict[str, Any], str, str]:
    net = c.post("networks", name="e2e-qos")
    c.post("subnets", network_id=net["id"], cidr="10.43.0.0/24", ip_version=4)
    p1, ns1 = c.vm(net, "vm1")
    p2, ns2 = c.vm(net, "vm2")
    return p1, ns1, p1["fixed_ips"][0]["ip_address"], p2, ns2, p2["fixed_ips"][0]["ip_address"]


def sink(c: Chassis, ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    proc = c.background(ns, sys.executable, "-c", script, *args)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=60)
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def tcp_rate(c: Chassis, src_ns: str, dst_ns: str, dst_ip: str, nbytes: int) -> float:
    """Goodput (bit/s) the receiver saw of a bounded TCP transfer, after RAMP."""
    server = sink(c, dst_ns, TCP_SINK, str(RAMP))
    client = in_netns(src_ns, sys.executable, "-c", TCP_SOURCE, dst_ip, str(nbytes), timeout=60)
    assert client.returncode == 0, client.stderr
    got = result(server)
    assert got["bytes"] == nbytes, got
    return float(got["rate"])


def set_port_policy(c: Chassis, port_id: str, policy_id: str | None) -> None:
    c.put("ports", port_id, qos_policy_id=policy_id)
    c.wait_active({"id": port_id})


def wait_flows(c: Chassis, present: bool) -> None:
    """Until the agent has (or no longer has) QoS meters in br-int's flows."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(_qos_meter(f) for f in c.flows()) == present:
            return
        time.sleep(0.1)
    raise AssertionError(f"QoS flows present={not present} still:\n" + "\n".join(c.flows()))


def _qos_meter(flow: str) -> bool:
    """A flow naming a QoS meter (ids from 0x100000: wyvern.ir.meters)."""
    return any(int(m) >= 0x100000 for m in re.findall(r"meter:(\d+)", flow))


def test_bandwidth_limits_both_ways_then_full_speed_without_the_policy(chassis: Chassis) -> None:
    c = chassis
    p1, ns1, ip1, _, ns2, ip2 = two_vms(c)
    limit = LIMIT_KBPS * 1000
    nbytes = limit * SECONDS // 8
    # Full speed first (the same probe must pass where no limit applies).
    free = tcp_rate(c, ns1, ns2, ip2, nbytes)
    assert free > 3 * limit, free
    pid = policy(
        c,
        ("bandwidth_limit", {"max_kbps": LIMIT_KBPS, "direction": "egress"}),
        ("bandwidth_limit", {"max_kbps": LIMIT_KBPS, "direction": "ingress"}),
    )
    set_port_policy(c, p1["id"], pid)
    wait_flows(c, True)
    meters = c.ovs.ofctl("-O", "OpenFlow15", "dump-meters", "br-int")
    assert f"kbps burst stats bands=\ntype=drop rate={LIMIT_KBPS} burst_size=3200" in meters
    egress = tcp_rate(c, ns1, ns2, ip2, nbytes)  # what vm1 sends: its egress rule
    ingress = tcp_rate(c, ns2, ns1, ip1, nbytes)  # what vm1 receives: its ingress rule
    assert 0.75 * limit <= egress <= 1.10 * limit, (egress, limit)
    assert 0.75 * limit <= ingress <= 1.10 * limit, (ingress, limit)
    # Detached: full speed again, and the meters are gone from the switch.
    set_port_policy(c, p1["id"], None)
    wait_flows(c, False)
    assert tcp_rate(c, ns1, ns2, ip2, nbytes) > 3 * limit
    assert tcp_rate(c, ns2, ns1, ip1, nbytes) > 3 * limit
    meters = c.ovs.ofctl("-O", "OpenFlow15", "dump-meters", "br-int")
    assert "kbps" not in meters


def test_a_networks_policy_limits_its_ports_and_a_ports_own_overrides_it(
    chassis: Chassis,
) -> None:
    c = chassis
    p1, ns1, _, _, ns2, ip2 = two_vms(c)
    limit = LIMIT_KBPS * 1000
    nbytes = limit * SECONDS // 8
    slow = policy(c, ("bandwidth_limit", {"max_kbps": LIMIT_KBPS, "direction": "egress"}))
    c.put("networks", p1["network_id"], qos_policy_id=slow)
    wait_flows(c, True)
    rate = tcp_rate(c, ns1, ns2, ip2, nbytes)
    assert 0.75 * limit <= rate <= 1.10 * limit, (rate, limit)
    # vm1's own policy (DSCP only, no limit) overrides its network's limit.
    own = policy(c, ("dscp_marking", {"dscp_mark": 10}))
    set_port_policy(c, p1["id"], own)
    for _ in range(150):  # (until the agent has swapped vm1's flows: vm2 keeps its meter)
        if any("set_field:10->ip_dscp" in f for f in c.flows()):
            break
        time.sleep(0.1)
    assert tcp_rate(c, ns1, ns2, ip2, nbytes) > 3 * limit


def test_dscp_mark_seen_by_the_receiver(chassis: Chassis) -> None:
    c = chassis
    p1, ns1, _, _, ns2, ip2 = two_vms(c)

    def seen() -> int:
        server = sink(c, ns2, DSCP_SINK)
        client = in_netns(ns1, sys.executable, "-c", DSCP_SOURCE, ip2, timeout=30)
        assert client.returncode == 0, client.stderr
        out, _ = server.communicate(timeout=30)
        return int(out.strip().splitlines()[-1])

    assert seen() == 0  # (the probe works, and nothing marks by default)
    pid = policy(c, ("dscp_marking", {"dscp_mark": 26}))
    set_port_policy(c, p1["id"], pid)
    for _ in range(150):
        if any("set_field:26->ip_dscp" in f for f in c.flows()):
            break
        time.sleep(0.1)
    assert seen() == 26


def test_packet_rate_limit_holds_a_udp_flood(chassis: Chassis) -> None:
    c = chassis
    p1, ns1, _, _, ns2, ip2 = two_vms(c)

    def flood() -> float:
        server = sink(c, ns2, UDP_SINK, str(RAMP))
        client = in_netns(ns1, sys.executable, "-c", UDP_SOURCE, ip2, "5", timeout=60)
        assert client.returncode == 0, client.stderr
        return float(result(server)["rate"])

    free = flood()
    assert free > 3000, free  # the flood alone is well above the limit below
    pid = policy(c, ("packet_rate_limit", {"max_kpps": 1, "direction": "egress"}))
    set_port_policy(c, p1["id"], pid)
    wait_flows(c, True)
    limited = flood()
    assert 750 <= limited <= 1100, limited
