"""IPv6 router advertisements on real OVS, read by the Linux kernel of VM namespaces.

Each VM namespace is set up as a cloud image's kernel is (accept_ra=1, EUI-64 addresses
from the MAC with addr_gen_mode=0, no temporary addresses, no DAD wait) before its
interface exists; bringing the link up makes the kernel solicit, and the agent answers.
What the kernel then configured is compared with what the API says: exactly the port's
allocated address, a default route via the router interface's link-local address, the
network's MTU. RAs are also captured whole from the VM's interface (a packet socket) and
read with the unit tests' os-ken reader, for the flags the kernel keeps to itself. On
two chassis, each VM's advertisements come from its own chassis: none cross the tunnel.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.controller.test_ra import parse
from tests.e2e.conftest import Chassis, in_netns, kill_proc, unique
from tests.e2e.multichassis import Cluster, cluster
from tests.e2e.test_dataplane import PY, eventually, pings
from wyvern.apps.port_security import eui64_link_local

pytestmark = pytest.mark.system

# Every RA (and RS) seen on eth0, one hex frame per line, until killed or SECONDS pass.
CAPTURE = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # (ETH_P_ALL: sent too)
s.bind(("eth0", 0))
s.settimeout(0.5)
print("listening", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        frame, addr = s.recvfrom(4096)
    except OSError:  # (the timeout, or ENETDOWN: bound while eth0 was down)
        continue
    icmp6 = len(frame) > 54 and frame[12:14] == b"\x86\xdd" and frame[20] == 58
    if icmp6 and frame[54] in (133, 134):
        print(addr[2], frame.hex(), flush=True)
"""

# Router solicitations as fast as one raw socket can send them, from the VM's own
# link-local address and MAC (so port security lets them through to the punt).
RS_FLOOD = r"""
import socket, struct, sys, time
mac, src, seconds = bytes.fromhex(sys.argv[1].replace(":", "")), sys.argv[2], float(sys.argv[3])
def csum(data):
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
s6 = socket.inet_pton(socket.AF_INET6, src)
d6 = socket.inet_pton(socket.AF_INET6, "ff02::2")
rs = struct.pack("!BBHI", 133, 0, 0, 0) + bytes([1, 1]) + mac
rs = rs[:2] + struct.pack("!H", csum(s6 + d6 + struct.pack("!IxxxB", len(rs), 58) + rs)) + rs[4:]
frame = b"\x33\x33\x00\x00\x00\x02" + mac + b"\x86\xdd"
frame += struct.pack("!IHBB", 0x60000000, len(rs), 58, 255) + s6 + d6 + rs
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
print("flooding", flush=True)
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(256):
        try:
            sock.send(frame)
            sent += 1
        except OSError:
            pass
print("sent", sent, flush=True)
"""

GUEST_SYSCTLS = {  # a cloud image's kernel, as the issue describes it
    "accept_ra": "1",
    "addr_gen_mode": "0",  # EUI-64 from the MAC
    "use_tempaddr": "0",
    "accept_dad": "0",
    "autoconf": "1",
}


def sysctl(ns: str, name: str, value: str | None = None) -> str:
    if value is not None:
        out = in_netns(ns, "sysctl", "-q", "-w", f"{name}={value}")
        assert out.returncode == 0, out.stderr
    return in_netns(ns, "sysctl", "-n", name).stdout.strip()


def ip(ns: str, *args: str) -> None:
    out = in_netns(ns, "ip", *args)
    assert out.returncode == 0, out.stderr


def eui64(cidr: str, mac: str) -> str:
    """The address SLAAC makes of MAC in CIDR (a /64)."""
    iid = int(eui64_link_local(mac)) & ((1 << 64) - 1)
    return str(ipaddress.IPv6Network(cidr).network_address + iid)


def has(ns: str, want: set[str]) -> Any:
    return lambda: global_addrs(ns) == want


def routed_by_ra(ns: str) -> Any:
    return lambda: "proto ra" in default_route(ns)


def vm(c: Chassis, network: dict[str, Any], name: str, *, solicit: bool = True,
       **attrs: Any) -> tuple[dict[str, Any], str]:  # fmt: skip
    """A port on NETWORK plugged into a namespace whose kernel takes RAs (set up before
    eth0 exists, so eth0 is born with it), ACTIVE, its link still down. SOLICIT False:
    the kernel sends no router solicitation at all."""
    port = c.post("ports", network_id=network["id"], name=name, **attrs)
    ns = unique("wve-vm-")
    c.vms.append((port["id"], ns))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    for key, value in GUEST_SYSCTLS.items():
        sysctl(ns, f"net.ipv6.conf.default.{key}", value)
    if not solicit:
        sysctl(ns, "net.ipv6.conf.default.router_solicitations", "0")
    out = c.wyvern("plug", port["id"], "--netns", ns, "--api", c.api.url, "--no-ip")
    assert out.returncode == 0, out.stdout + out.stderr
    ip(ns, "link", "set", "eth0", "down")
    c.wait_active(port)
    return port, ns


def link_up(ns: str) -> None:
    """The VM's link comes up: its kernel solicits (unless told not to)."""
    ip(ns, "link", "set", "eth0", "up")


def global_addrs(ns: str) -> set[str]:
    out = in_netns(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
    return {line.split()[3] for line in out.stdout.splitlines()}


def default_route(ns: str) -> str:
    return in_netns(ns, "ip", "-6", "route", "show", "default").stdout.strip()


def capture(c: Chassis, ns: str, seconds: float) -> subprocess.Popen[str]:
    proc = c.background(ns, PY, "-c", CAPTURE, str(seconds))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc


SENT = 4  # PACKET_OUTGOING: sent by the VM (0, 2: received unicast, multicast)


def captured(proc: subprocess.Popen[str], *, wait: bool = False) -> list[tuple[int, bytes]]:
    """(packet type, frame) of each RS/RA PROC saw (stopped now, unless WAIT: until the
    end of its time)."""
    if wait:
        proc.wait(timeout=60)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines()]
    return [(int(kind), bytes.fromhex(frame)) for kind, frame in rows]


def router_port(c: Chassis, router: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    ports = requests.get(
        f"{c.base}/ports", params={"device_id": router["id"], "network_id": network["id"]},
        timeout=5,
    ).json()["ports"]  # fmt: skip
    [port] = ports
    return dict(port)


def v6_net(c: Chassis, name: str, cidr: str, mode: str | None, router: dict[str, Any],
           **subnet: Any) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    net = c.post("networks", name=name)
    sub = c.post("subnets", network_id=net["id"], cidr=cidr, ip_version=6,
                 ipv6_ra_mode=mode, ipv6_address_mode=mode, **subnet)  # fmt: skip
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    return net, sub


def test_slaac_gives_exactly_the_allocated_address_a_default_route_and_the_mtu(
    chassis: Chassis,
) -> None:
    c = chassis
    r = c.post("routers", name="r")
    net_a, _ = v6_net(c, "a", "fd5a:1::/64", "slaac", r, dns_nameservers=["fd5a:1::53"])
    net_b, _ = v6_net(c, "b", "fd5a:2::/64", "slaac", r)
    gw_a = eui64_link_local(router_port(c, r, net_a)["mac_address"])
    mtu = c.get("networks", net_a["id"])["mtu"]
    pa, ns_a = vm(c, net_a, "vm-a")
    pb, ns_b = vm(c, net_b, "vm-b")
    # a group without any rule (default-deny both ways): RS out and RA in still work
    deny = c.post("security-groups", name="deny-all")
    for rule in requests.get(f"{c.base}/security-group-rules",
                             params={"security_group_id": deny["id"]}, timeout=5).json()[
        "security_group_rules"
    ]:  # fmt: skip
        c.delete("security-group-rules", rule["id"])
    pc, ns_c = vm(c, net_a, "vm-c", security_groups=[deny["id"]])
    for port, cidr in ((pa, "fd5a:1::/64"), (pb, "fd5a:2::/64"), (pc, "fd5a:1::/64")):
        [fixed] = port["fixed_ips"]  # the API allocated the EUI-64 address
        assert fixed["ip_address"] == eui64(cidr, port["mac_address"])
    ip(ns_a, "link", "set", "eth0", "mtu", "1500")  # (the RA's MTU option lowers IPv6's)
    watch = capture(c, ns_a, 20)
    for ns in (ns_a, ns_b, ns_c):
        link_up(ns)
    for port, ns in ((pa, ns_a), (pb, ns_b), (pc, ns_c)):
        want = {f"{port['fixed_ips'][0]['ip_address']}/64"}
        eventually(has(ns, want), f"{port['name']} configures exactly {want}")
        eventually(routed_by_ra(ns), f"{port['name']}'s default route")
    route = default_route(ns_a)
    assert route.startswith(f"default via {gw_a} dev eth0 proto ra"), route
    assert sysctl(ns_a, "net.ipv6.conf.eth0.mtu") == str(mtu)  # the RA's MTU option
    assert global_addrs(ns_c) == {f"{pc['fixed_ips'][0]['ip_address']}/64"}

    # The RA itself: unicast to the soliciting VM from the router's link-local address.
    seen = captured(watch)
    sent_rs = [f for kind, f in seen if kind == SENT and f[54] == 133]
    got = [parse(f) for kind, f in seen if kind != SENT and f[54] == 134]
    assert sent_rs and got, seen
    eth, ip6, (_, _, advert), opts = got[0]
    assert ip6.src == str(gw_a) and eth.src == router_port(c, r, net_a)["mac_address"]
    assert advert.res == 0 and [o.prefix for o in opts[3]] == ["fd5a:1::"]
    assert any(e.dst == pa["mac_address"] for e, *_ in got)  # the solicited, unicast one

    # The default route works: routed through the router's link-local address, which
    # the VM resolves by ND (its neighbour cache emptied first).
    ip(ns_a, "-6", "neigh", "flush", "dev", "eth0")
    b6 = pb["fixed_ips"][0]["ip_address"]
    eventually(lambda: pings(ns_a, b6), "a ping from vm-a to vm-b through the router")
    neigh = in_netns(ns_a, "ip", "-6", "neigh", "show", str(gw_a)).stdout
    assert router_port(c, r, net_a)["mac_address"] in neigh, neigh


def test_dhcpv6_stateful_sets_the_m_flag_and_no_slaac_address_and_a_removed_router_leaves(
    chassis: Chassis,
) -> None:
    c = chassis
    r = c.post("routers", name="r")
    net, sub = v6_net(c, "stateful", "fd5b:1::/64", "dhcpv6-stateful", r)
    gw = eui64_link_local(router_port(c, r, net)["mac_address"])
    port, ns = vm(c, net, "vm")
    watch = capture(c, ns, 20)
    link_up(ns)
    eventually(lambda: f"default via {gw}" in default_route(ns), "the default route")
    got = [parse(f) for kind, f in captured(watch) if kind != SENT and f[54] == 134]
    assert got
    _, _, (_, _, advert), opts = got[0]
    assert advert.res == 0b10  # M, not O
    [pi] = opts[3]
    assert pi.prefix == "fd5b:1::" and pi.res1 >> 1 == 0b10  # on-link, not autonomous
    assert global_addrs(ns) == set()  # the address comes by DHCPv6, not SLAAC
    assert port["fixed_ips"][0]["ip_address"].startswith("fd5b:1::")
    # The interface removed: its final RA (router lifetime 0) takes the route away now.
    c.action("routers", r["id"], "remove_router_interface", subnet_id=sub["id"])
    eventually(lambda: default_route(ns) == "", "the default route gone with the interface")


def test_periodic_advertisements_arrive_without_any_solicitation(chassis: Chassis) -> None:
    c = chassis
    assert c.agent is not None
    c.agent.stop()
    c.env.update(WYVERN_MIN_RTR_ADV_INTERVAL="3", WYVERN_MAX_RTR_ADV_INTERVAL="4")
    c.start_agent()
    c.wait_agent_alive()
    r = c.post("routers", name="r")
    net, _ = v6_net(c, "periodic", "fd5c:1::/64", "slaac", r)
    port, ns = vm(c, net, "vm", solicit=False)
    link_up(ns)
    time.sleep(1)  # (what the port's arrival sent has come and gone)
    watch = capture(c, ns, 10)
    seen = captured(watch, wait=True)
    assert not [f for kind, f in seen if kind == SENT], seen  # the VM never solicited
    # (the veth's other end, in OVS's namespace, has a kernel that solicits too)
    ras = [parse(f) for kind, f in seen if kind != SENT and f[54] == 134]
    assert len(ras) >= 2, seen  # every 3..4 s: at least two in 10 s
    assert all((e.dst, i.dst) == ("33:33:00:00:00:01", "ff02::1") for e, i, *_ in ras)
    assert all(a.rou_l == 12 for _, _, (_, _, a), _ in ras)  # 3 x max_rtr_adv_interval
    want = {f"{port['fixed_ips'][0]['ip_address']}/64"}
    eventually(has(ns, want), f"SLAAC of {want} from unsolicited RAs")


def test_an_rs_flood_from_one_vm_leaves_advertisements_to_others(chassis: Chassis) -> None:
    c = chassis
    r = c.post("routers", name="r")
    net, _ = v6_net(c, "flooded", "fd5d:1::/64", "slaac", r)
    flooder, ns_f = vm(c, net, "flooder")
    victim, ns_v = vm(c, net, "victim")
    link_up(ns_f)
    lla = str(eui64_link_local(flooder["mac_address"]))
    flood = c.background(ns_f, PY, "-c", RS_FLOOD, flooder["mac_address"], lla, "20")
    assert flood.stdout is not None and flood.stdout.readline().strip() == "flooding"
    time.sleep(2)  # the flood is established
    link_up(ns_v)
    want = {f"{victim['fixed_ips'][0]['ip_address']}/64"}
    eventually(has(ns_v, want), "the victim's address during the flood")
    assert "proto ra" in default_route(ns_v)
    out, _ = flood.communicate(timeout=40)
    kill_proc(flood)
    assert c.agent is not None and c.agent.alive(), c.agent_log()
    rows, _, text = c.punts()
    sent, dropped = rows[flooder["id"]]
    assert sent > dropped > 0.9 * sent, (out, text)  # dropped in the datapath
    sent, dropped = rows[victim["id"]]
    assert sent >= 1 and dropped == 0, text  # its RS, answered


@pytest.fixture
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two chassis on one underlay (tests/e2e/multichassis.py)."""
    system.require(request)
    with cluster(tmp_path, 2) as c:
        yield c


def test_each_vm_gets_its_advertisements_from_its_own_chassis(two: Cluster) -> None:
    """The RS is answered on the VM's chassis and the unsolicited RAs go out of local
    ports only: none of it crosses the tunnel to the other chassis, while the VMs'
    traffic to each other does (the capture works)."""
    c = two
    r = c.post("routers", name="r")
    net = c.post("networks", name="v6")
    sub = c.post("subnets", network_id=net["id"], cidr="fd5e:1::/64", ip_version=6,
                 ipv6_ra_mode="slaac", ipv6_address_mode="slaac")  # fmt: skip
    c.action("routers", r["id"], "add_router_interface", subnet_id=sub["id"])
    ports = [c.post("ports", network_id=net["id"], name=f"vm{i}") for i in range(2)]
    vms = [hv.plug(port, static_ip=False) for hv, port in zip(c.hv, ports, strict=True)]
    for hv, port, ns in zip(c.hv, ports, vms, strict=True):
        hv.wait_active(port)
        for key, value in GUEST_SYSCTLS.items():
            sysctl(ns, f"net.ipv6.conf.eth0.{key}", value)
        ip(ns, "link", "set", "eth0", "down")
    for i, (port, ns) in enumerate(zip(ports, vms, strict=True)):
        peer = c.hv[1 - i]
        want = {f"{port['fixed_ips'][0]['ip_address']}/64"}
        with peer.capture(f"udp port 6081 and dst host {peer.tunnel_ip}") as crossed:
            link_up(ns)
            eventually(has(ns, want), f"vm{i} configures {want}", timeout=15)
            assert "proto ra" in default_route(ns)
            in_netns(
                ns,
                "ping",
                "-6",
                "-n",
                "-c",
                "1",
                "-W",
                "1",
                ports[1 - i]["fixed_ips"][0]["ip_address"],
            )
        assert [line for line in crossed if "ICMP6, echo request" in line], crossed
        assert [line for line in crossed if "router advertisement" in line
                or "router solicitation" in line] == [], crossed  # fmt: skip
