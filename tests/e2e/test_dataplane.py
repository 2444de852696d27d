"""The dataplane end to end, through the real agent: DHCP, routing, overlapping CIDRs,
port security, security groups and an agent restart under a TCP stream.

Every object is made over HTTP; VMs are namespaces plugged with `wyvern plug` and waited
for with `wyvern wait`. Assertions are on outcomes (a lease, a reply, which server
answered, which datagrams arrived), never on timings: an API change that must reach the
switch is polled for (`eventually`) until it takes effect or a generous deadline passes.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dhcpclients import DHCLIENT_SCRIPT, UDHCPC_SCRIPT
from tests.e2e.conftest import Chassis, kill_proc
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

PY = sys.executable


# --- helpers ---------------------------------------------------------------------------


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll CHECK until it holds; fail naming WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.2)


def ping(ns: str, ip: str, *args: str, count: int = 2) -> subprocess.CompletedProcess[str]:
    return in_netns(ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", *args, ip)


def pings(ns: str, ip: str, *args: str) -> bool:
    return ping(ns, ip, *args).returncode == 0


def ip_of(port: dict[str, Any]) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip("'\"")
    return out


# A TCP server that answers every connection on each of its ports with its identity.
IDENT_SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port))); s.listen(16); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        try:
            conn.sendall(sys.argv[1].encode())
        except OSError:
            pass
        conn.close()
"""

# Connect to IP:PORT (optionally from SRC), print what the server says, or the error.
IDENT_CLIENT = """
import socket, sys
ip, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    c = socket.create_connection((ip, port), timeout=2, source_address=(src, 0) if src else None)
    print(c.recv(100).decode() or "empty")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print(f"error {exc}")
"""


def ident_server(c: Chassis, ns: str, ident: str, *ports: int) -> None:
    server = c.background(ns, PY, "-c", IDENT_SERVER, ident, *map(str, ports))
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"


def probe(ns: str, ip: str, port: int, src: str = "") -> str:
    """Who answers at IP:PORT from NS: the server's identity, "timeout" or "refused"."""
    out = in_netns(ns, PY, "-c", IDENT_CLIENT, ip, str(port), src, timeout=15)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# A byte-counting receiver and a sender of 2 MB: "sent N" / "received N".
TCP_SINK = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); total = 0
while data := conn.recv(65536):
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""
TCP_SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5001), timeout=10)
c.sendall(b"x" * 2_000_000); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def tcp_transfer(c: Chassis, client_ns: str, server_ns: str, server_ip: str) -> None:
    server = c.background(server_ns, PY, "-c", TCP_SINK)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    client = in_netns(client_ns, PY, "-c", TCP_SOURCE, server_ip, timeout=20)
    assert client.returncode == 0, client.stdout + client.stderr
    assert client.stdout.strip() == "2000000"
    kill_proc(server)


# --- 1. DHCP: isc dhclient and busybox udhcpc ---------------------------------------------

DHCLIENT_CONF = """
timeout {timeout};
request subnet-mask, broadcast-address, routers, interface-mtu;
"""


def dhcp_dir(c: Chassis, timeout: int) -> Path:
    work = c.scratch_dir()
    for name, text in (
        ("dhclient.sh", DHCLIENT_SCRIPT.format(dir=work)),
        ("udhcpc.sh", UDHCPC_SCRIPT.format(dir=work)),
        ("dhclient.conf", DHCLIENT_CONF.format(timeout=timeout)),
    ):
        (work / name).write_text(text)
        (work / name).chmod(0o755)
    return work


def dhclient(ns: str, work: Path) -> subprocess.CompletedProcess[str]:
    return in_netns(
        ns, "dhclient", "-1", "-v", "-cf", str(work / "dhclient.conf"),
        "-sf", str(work / "dhclient.sh"), "-pf", str(work / "dhclient.pid"),
        "-lf", str(work / "dhclient.leases"), "eth0", timeout=30,
    )  # fmt: skip


def udhcpc(ns: str, work: Path, tries: int = 5) -> subprocess.CompletedProcess[str]:
    return in_netns(
        ns, "busybox", "udhcpc", "-f", "-n", "-q", "-t", str(tries), "-T", "1",
        "-i", "eth0", "-s", str(work / "udhcpc.sh"), "-O", "mtu", timeout=30,
    )  # fmt: skip


def test_dhclient_and_udhcpc_get_address_router_and_mtu(chassis: Chassis) -> None:
    c = chassis
    net = c.post("networks", name="dhcp", mtu=1400)
    subnet = c.post("subnets", network_id=net["id"], cidr="10.51.0.0/24", ip_version=4)
    gateway = subnet["gateway_ip"]
    p1 = c.post("ports", network_id=net["id"], name="isc")
    p2 = c.post("ports", network_id=net["id"], name="busybox")
    ns1, ns2 = c.plug(p1, static_ip=False), c.plug(p2, static_ip=False)
    c.wait_active(p1)
    c.wait_active(p2)
    work = dhcp_dir(c, timeout=15)
    # `wyvern plug` gave eth0 the network's MTU; start from 1500 to see the lease set it.
    assert in_netns(ns1, "ip", "link", "set", "eth0", "mtu", "1500").returncode == 0

    out = dhclient(ns1, work)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    env = read_env(work / "dhclient.BOUND")
    assert env["new_ip_address"] == ip_of(p1)
    assert env["new_subnet_mask"] == "255.255.255.0"
    assert env["new_routers"] == gateway
    assert env["new_interface_mtu"] == "1400"

    out = udhcpc(ns2, work)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    env = read_env(work / "udhcpc.bound")
    assert env["ip"] == ip_of(p2)
    assert env["mask"] == "24"
    assert env["router"].split() == [gateway]
    assert env["mtu"] == "1400"

    # dhclient's script applied the MTU; the leased addresses are the ones the dataplane
    # knows: the two VMs talk.
    assert "mtu 1400" in in_netns(ns1, "ip", "link", "show", "eth0").stdout
    assert pings(ns1, ip_of(p2)), ping(ns1, ip_of(p2)).stdout


def test_a_subnet_without_dhcp_gives_no_lease(chassis: Chassis) -> None:
    c = chassis
    net = c.post("networks", name="nodhcp")
    sub = c.post("subnets", network_id=net["id"], cidr="10.52.0.0/24", ip_version=4)
    p1 = c.post("ports", network_id=net["id"], name="isc")
    p2 = c.post("ports", network_id=net["id"], name="busybox")
    ns1, ns2 = c.plug(p1, static_ip=False), c.plug(p2, static_ip=False)
    c.wait_active(p1)
    c.wait_active(p2)
    work = dhcp_dir(c, timeout=3)
    # The probe works: with DHCP on, udhcpc gets its lease.
    out = udhcpc(ns2, work, tries=3)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    assert read_env(work / "udhcpc.bound")["ip"] == ip_of(p2)
    (work / "udhcpc.bound").unlink()

    c.put("subnets", sub["id"], enable_dhcp=False)
    eventually(lambda: udhcpc(ns2, work, tries=2).returncode != 0, "no lease once DHCP is off")
    out = udhcpc(ns2, work, tries=3)
    assert out.returncode != 0, out.stdout + out.stderr
    assert not (work / "udhcpc.bound").exists()
    out = dhclient(ns1, work)
    assert out.returncode != 0, out.stdout + out.stderr
    assert not (work / "dhclient.BOUND").exists()
    assert "inet " not in in_netns(ns1, "ip", "-4", "addr", "show", "eth0").stdout


# --- 2. Routed -------------------------------------------------------------------------


def test_routed_ping_tcp_and_ttl_exceeded(chassis: Chassis) -> None:
    c = chassis
    net_a = c.post("networks", name="a")
    net_b = c.post("networks", name="b")
    sub_a = c.post("subnets", network_id=net_a["id"], cidr="10.61.0.0/24", ip_version=4)
    sub_b = c.post("subnets", network_id=net_b["id"], cidr="10.62.0.0/24", ip_version=4)
    pa, ns_a = c.vm(net_a, "a")
    pb, ns_b = c.vm(net_b, "b")

    # The router comes after the VMs: the running agent routes from then on.
    router = c.post("routers", name="r")
    for sub in (sub_a, sub_b):
        c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    eventually(lambda: pings(ns_a, ip_of(pb)), "a ping across the router")
    out = ping(ns_a, ip_of(pb), count=3)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    assert "ttl=63" in out.stdout  # one routed hop
    assert pings(ns_a, sub_b["gateway_ip"])  # the router's far address answers too
    tcp_transfer(c, ns_a, ns_b, ip_of(pb))
    tcp_transfer(c, ns_b, ns_a, ip_of(pa))

    # TTL 1: the router answers "Time to live exceeded" from its address on A's subnet.
    out = ping(ns_a, ip_of(pb), "-t", "1", count=1)
    assert out.returncode != 0
    assert f"From {sub_a['gateway_ip']} icmp_seq=1 Time to live exceeded" in out.stdout, (
        out.stdout + out.stderr + c.agent_log()
    )

    # No route at all: "Destination Net Unreachable", from the router too.
    out = ping(ns_a, "192.168.99.1", count=1)
    assert f"From {sub_a['gateway_ip']} icmp_seq=1 Destination Net Unreachable" in out.stdout, (
        out.stdout + out.stderr
    )

    # Detaching B's subnet stops the routing again.
    c.action("routers", router["id"], "remove_router_interface", subnet_id=sub_b["id"])
    eventually(lambda: not pings(ns_a, ip_of(pb)), "no route once the interface is gone")


def test_changes_made_while_the_agent_is_down_apply_when_it_returns(chassis: Chassis) -> None:
    c = chassis
    net_a = c.post("networks", name="a")
    net_b = c.post("networks", name="b")
    sub_a = c.post("subnets", network_id=net_a["id"], cidr="10.63.0.0/24", ip_version=4)
    sub_b = c.post("subnets", network_id=net_b["id"], cidr="10.64.0.0/24", ip_version=4)
    _, ns_a = c.vm(net_a, "a")
    pb, ns_b = c.vm(net_b, "b")
    router = c.post("routers", name="r")
    for sub in (sub_a, sub_b):
        c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    eventually(lambda: pings(ns_a, ip_of(pb)), "a ping across the router")
    c.action("routers", router["id"], "remove_router_interface", subnet_id=sub_b["id"])
    eventually(lambda: not pings(ns_a, ip_of(pb)), "no route once the interface is gone")
    assert c.agent is not None
    c.agent.signal(signal.SIGKILL)
    c.agent.process.wait(timeout=10)

    c.action("routers", router["id"], "add_router_interface", subnet_id=sub_b["id"])
    # (the new interface has a new MAC: the VMs forget the old one, as after a reboot)
    for ns in (ns_a, ns_b):
        assert in_netns(ns, "ip", "neigh", "flush", "all").returncode == 0
    assert not pings(ns_a, ip_of(pb))  # nobody programs the switch meanwhile

    c.start_agent()
    c.wait_agent_alive()
    eventually(lambda: pings(ns_a, ip_of(pb)), "routing once the agent is back", timeout=15)


# --- 3. Overlapping CIDRs --------------------------------------------------------------


def test_overlapping_cidrs_stay_apart(chassis: Chassis) -> None:
    """Two tenants' worlds with the same addresses: net1 and net2 are both 10.0.0.0/24,
    each routed (by its own router) to a far network, both 10.1.0.0/24. Every server
    answers with its identity, so a probe shows exactly whose server it reached."""
    c = chassis
    vms: dict[str, tuple[dict[str, Any], str]] = {}
    for world in ("1", "2"):
        router = c.post("routers", name=f"r{world}")
        for prefix, cidr, roles in (
            ("net", "10.0.0.0/24", (("client", "10.0.0.10"), ("server", "10.0.0.20"))),
            ("far", "10.1.0.0/24", (("server", "10.1.0.20"),)),
        ):
            net = c.post("networks", name=prefix + world)
            sub = c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
            c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
            for role, ip in roles:
                fixed = [{"subnet_id": sub["id"], "ip_address": ip}]
                vms[f"{prefix}{world}-{role}"] = c.vm(net, role, fixed_ips=fixed)
    for name, (_, ns) in vms.items():
        if name.endswith("server"):
            ident_server(c, ns, name, 7000)

    for world in ("1", "2"):
        client_port, client_ns = vms[f"net{world}-client"]
        server_port, server_ns = vms[f"net{world}-server"]
        assert pings(client_ns, "10.0.0.20"), ping(client_ns, "10.0.0.20").stdout
        eventually(functools.partial(pings, client_ns, "10.1.0.20"), f"{world}: routed ping")
        for _ in range(5):
            assert probe(client_ns, "10.0.0.20", 7000) == f"net{world}-server"
            assert probe(client_ns, "10.1.0.20", 7000) == f"far{world}-server"
        # ARP resolved the address to the server in the client's own network, and the
        # server sees its own network's client (same IP, that client's MAC).
        neigh = in_netns(client_ns, "ip", "neigh", "show", "10.0.0.20", "dev", "eth0").stdout
        assert server_port["mac_address"] in neigh, neigh
        neigh = in_netns(server_ns, "ip", "neigh", "show", "10.0.0.10", "dev", "eth0").stdout
        assert client_port["mac_address"] in neigh, neigh


# --- 4. Port security ------------------------------------------------------------------

# A UDP sink on port 9000 that appends "<source ip> <payload>" per datagram to a file.
UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
print("ready", flush=True)
with open(sys.argv[1], "a") as out:
    while True:
        data, (src, _) = s.recvfrom(2048)
        out.write(f"{src} {data.decode()}\\n"); out.flush()
"""
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[3], 0))
for _ in range(3):
    s.sendto(sys.argv[2].encode(), (sys.argv[1], 9000))
"""


def test_port_security_drops_spoofed_ip_and_mac_and_allows_address_pairs(
    chassis: Chassis,
) -> None:
    c = chassis
    # A group open to any IPv4 ingress: only port security can drop what follows.
    sg = c.post("security-groups", name="open")
    c.post("security-group-rules", security_group_id=sg["id"], direction="ingress",
           ethertype="IPv4", remote_ip_prefix="0.0.0.0/0")  # fmt: skip
    net = c.post("networks", name="ps")
    # The pool stops short of the addresses pinned below: allocation is random over it.
    c.post("subnets", network_id=net["id"], cidr="10.71.0.0/24", ip_version=4,
           allocation_pools=[{"start": "10.71.0.2", "end": "10.71.0.99"}])  # fmt: skip
    p1, ns1 = c.vm(net, "vm1", security_groups=[sg["id"]])
    p2, ns2 = c.vm(net, "vm2", security_groups=[sg["id"]])
    ip1, ip2, vip = ip_of(p1), ip_of(p2), "10.71.0.200"
    # Static neighbours both ways, so no ARP is needed and only the IP/MAC checks decide.
    in_netns(ns1, "ip", "neigh", "replace", ip2, "lladdr", p2["mac_address"], "dev", "eth0",
             "nud", "permanent")  # fmt: skip
    in_netns(ns2, "ip", "neigh", "replace", vip, "lladdr", p1["mac_address"], "dev", "eth0",
             "nud", "permanent")  # fmt: skip
    received = c.scratch_dir() / "received"
    sink = c.background(ns2, PY, "-c", UDP_SINK, str(received))
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"

    def send(payload: str, src: str) -> None:
        out = in_netns(ns1, PY, "-c", UDP_SEND, ip2, payload, src)
        assert out.returncode == 0, out.stderr

    def arrived() -> str:
        return received.read_text() if received.exists() else ""

    def delivered(payload: str, src: str) -> bool:
        send(payload, src)
        return f"{src} {payload}\n" in arrived()

    eventually(lambda: delivered("legit-1", ip1), "a datagram from the port's own address")

    # Another source IP: dropped (the marker sent after it, from the real IP, arrives).
    assert in_netns(ns1, "ip", "addr", "add", f"{vip}/32", "dev", "eth0").returncode == 0
    send("spoofed-ip", vip)
    eventually(lambda: delivered("legit-2", ip1), "the marker after the spoofed IP")
    assert "spoofed-ip" not in arrived()
    assert pings(ns1, ip2, "-I", ip1)  # the same ping from the port's own address
    assert not pings(ns1, ip2, "-I", vip)

    # Another MAC: dropped; the original MAC back: delivered again.
    assert (
        in_netns(ns1, "ip", "link", "set", "eth0", "address", "02:00:de:ad:be:ef").returncode == 0
    )
    send("spoofed-mac", ip1)
    in_netns(ns1, "ip", "link", "set", "eth0", "address", p1["mac_address"])
    eventually(lambda: delivered("legit-3", ip1), "the marker after the spoofed MAC")
    assert "spoofed-mac" not in arrived()

    # allowed_address_pairs, by API update, without replugging: the VIP passes both ways.
    c.put("ports", p1["id"], allowed_address_pairs=[{"ip_address": vip}])
    eventually(lambda: delivered("vip", vip), "a datagram from the allowed VIP")
    eventually(lambda: pings(ns1, ip2, "-I", vip), "ping from the VIP answered")

    # Port security off (groups and pairs cleared first, as Neutron requires): any source.
    c.put("ports", p1["id"], security_groups=[], allowed_address_pairs=[])
    c.put("ports", p1["id"], port_security_enabled=False)
    other = "10.71.0.201"
    assert in_netns(ns1, "ip", "addr", "add", f"{other}/32", "dev", "eth0").returncode == 0
    eventually(lambda: delivered("unsecured", other), "any source once port security is off")


# --- 5. Security groups ----------------------------------------------------------------


def rule(c: Chassis, sg: dict[str, Any], direction: str, **attrs: Any) -> dict[str, Any]:
    return c.post(
        "security-group-rules",
        security_group_id=sg["id"],
        direction=direction,
        ethertype="IPv4",
        **attrs,
    )


def net_with_subnet(c: Chassis, name: str, cidr: str) -> dict[str, Any]:
    net = c.post("networks", name=name)
    c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return net


def test_security_group_allows_icmp_and_ssh_only_and_revokes_ping(chassis: Chassis) -> None:
    c = chassis
    sg = c.post("security-groups", name="ssh")
    icmp = rule(c, sg, "ingress", protocol="icmp", remote_ip_prefix="0.0.0.0/0")
    rule(c, sg, "ingress", protocol="tcp", port_range_min=22, port_range_max=22)
    net = net_with_subnet(c, "sg", "10.81.0.0/24")
    client, ns1 = c.vm(net, "client")  # the default group: all egress
    _, ns3 = c.vm(net, "peer")  # the default group too
    p2, ns2 = c.vm(net, "server", security_groups=[sg["id"]])
    ip2 = ip_of(p2)
    ident_server(c, ns2, "server", 22, 23)

    assert pings(ns1, ip2), ping(ns1, ip2).stdout + c.agent_log()
    assert probe(ns1, ip2, 22) == "server"
    assert probe(ns1, ip2, 23) == "timeout"
    # The client's default group admits only its own members: a member may ping it, the
    # server may not.
    assert pings(ns3, ip_of(client)), ping(ns3, ip_of(client)).stdout
    assert not pings(ns2, ip_of(client))

    # An ongoing ping is answered, then stops being answered once its rule is deleted.
    log = c.scratch_dir() / "ping.out"
    with open(log, "w") as out:
        pinger = subprocess.Popen(
            ["ip", "netns", "exec", ns1, "ping", "-n", "-O", "-i", "0.2", "-W", "1", ip2],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
    c.procs.append(pinger)
    eventually(lambda: "bytes from" in log.read_text(), "the ongoing ping answered")
    c.delete("security-group-rules", icmp["id"])

    def unanswered_tail() -> bool:
        lines = [ln for ln in log.read_text().splitlines() if "icmp_seq=" in ln]
        return len(lines) >= 5 and all("no answer yet" in ln for ln in lines[-5:])

    eventually(unanswered_tail, "the ongoing ping no longer answered", timeout=15)
    kill_proc(pinger)
    assert not pings(ns1, ip2)
    assert probe(ns1, ip2, 22) == "server"  # the other rule still holds


def test_stateless_group_needs_rules_both_ways(chassis: Chassis) -> None:
    c = chassis
    sg = c.post("security-groups", name="stateless", stateful=False)
    # A new group allows all egress; keep egress to TCP only, explicitly.
    for r in sg["security_group_rules"]:
        c.delete("security-group-rules", r["id"])
    rule(c, sg, "ingress", protocol="tcp", port_range_min=5000, port_range_max=5000)
    reverse = rule(c, sg, "egress", protocol="tcp")
    icmp_in = rule(c, sg, "ingress", protocol="icmp")
    rule(c, sg, "egress", protocol="icmp")
    net = net_with_subnet(c, "sl", "10.82.0.0/24")
    _, ns1 = c.vm(net, "client")
    p2, ns2 = c.vm(net, "server", security_groups=[sg["id"]])
    ip2 = ip_of(p2)
    ident_server(c, ns2, "stateless", 5000, 5001)

    eventually(lambda: probe(ns1, ip2, 5000) == "stateless", "TCP 5000 through the group")
    assert probe(ns1, ip2, 5001) == "timeout"
    assert pings(ns1, ip2), ping(ns1, ip2).stdout  # ICMP in, and its reply out, by rule
    c.delete("security-group-rules", icmp_in["id"])
    eventually(lambda: not pings(ns1, ip2), "no ping without the ICMP ingress rule")

    c.delete("security-group-rules", reverse["id"])  # the replies have no rule now
    eventually(lambda: probe(ns1, ip2, 5000) == "timeout", "TCP 5000 fails without egress")


def test_remote_group_admits_members_after_a_port_update(chassis: Chassis) -> None:
    c = chassis
    group_g = c.post("security-groups", name="G")
    server_sg = c.post("security-groups", name="server")
    rule(c, server_sg, "ingress", protocol="tcp", port_range_min=5000, port_range_max=5000,
         remote_group_id=group_g["id"])  # fmt: skip
    net = net_with_subnet(c, "rg", "10.83.0.0/24")
    p1, ns1 = c.vm(net, "client")  # the default group only
    _, ns3 = c.vm(net, "member", security_groups=[*p1["security_groups"], group_g["id"]])
    p2, ns2 = c.vm(net, "server", security_groups=[server_sg["id"]])
    ip2 = ip_of(p2)
    ident_server(c, ns2, "server", 5000)

    eventually(lambda: probe(ns3, ip2, 5000) == "server", "a member of G connects")
    assert probe(ns1, ip2, 5000) == "timeout"
    groups = [*p1["security_groups"], group_g["id"]]
    c.put("ports", p1["id"], security_groups=groups)
    eventually(lambda: probe(ns1, ip2, 5000) == "server", "a member of G connects")
    c.put("ports", p1["id"], security_groups=p1["security_groups"])  # leaves G
    eventually(lambda: probe(ns1, ip2, 5000) == "timeout", "a former member is refused")


# --- 6. Agent restart under a TCP stream -----------------------------------------------

STREAM_RECEIVER = """
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 6000)); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); conn.settimeout(20); total = 0; digest = hashlib.sha256()
try:
    while data := conn.recv(65536):
        total += len(data); digest.update(data)
    print("received", total, digest.hexdigest(), flush=True)
except OSError as exc:
    print("error", type(exc).__name__, total, flush=True)
"""
STREAM_SENDER = """
import hashlib, os, socket, sys, time
c = socket.create_connection((sys.argv[1], 6000), timeout=20)
print("connected", flush=True)
total = 0; digest = hashlib.sha256()
try:
    for _ in range(300):  # about 6 s: 16 KiB every 20 ms
        chunk = os.urandom(16384)
        c.sendall(chunk); total += len(chunk); digest.update(chunk)
        time.sleep(0.02)
    c.shutdown(socket.SHUT_WR)
    print("sent", total, digest.hexdigest(), flush=True)
except OSError as exc:
    print("error", type(exc).__name__, total, flush=True)
"""


def test_tcp_stream_survives_agent_sigkill_and_restart(chassis: Chassis) -> None:
    c = chassis
    net = net_with_subnet(c, "stream", "10.91.0.0/24")
    _, ns1 = c.vm(net, "sender")
    p2, ns2 = c.vm(net, "receiver")
    before = c.flows()
    receiver = c.background(ns2, PY, "-c", STREAM_RECEIVER)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    sender = c.background(ns1, PY, "-c", STREAM_SENDER, ip_of(p2))
    assert sender.stdout is not None and sender.stdout.readline().strip() == "connected"

    time.sleep(1.0)  # streaming; then the agent dies mid-stream and comes back
    assert c.agent is not None
    c.agent.signal(signal.SIGKILL)
    c.agent.process.wait(timeout=10)
    time.sleep(0.5)
    c.start_agent()

    sent, _ = sender.communicate(timeout=40)
    received, _ = receiver.communicate(timeout=40)
    assert sent.startswith("sent "), sent
    assert received.startswith("received "), received
    assert sent.split()[1:] == received.split()[1:]  # every byte, in order, no reset
    assert int(sent.split()[1]) == 300 * 16384
    c.wait_agent_alive()
    assert c.agent.alive(), c.agent_log()
    assert c.flows() == before
