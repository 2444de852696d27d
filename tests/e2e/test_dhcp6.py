"""DHCPv6 from the agent, to a real ISC `dhclient -6` in a VM namespace, on real OVS.

No router advertisements are involved: the VM's kernel gives eth0 its EUI-64 link-local
address (DAD off, so it is usable at once), and dhclient talks to ff02::1:2 from it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Chassis, in_netns
from tests.e2e.test_dataplane import PY, eventually, read_env

pytestmark = pytest.mark.system

# Records what the client was told, per reason, and applies a leased address.
DHCLIENT6_SCRIPT = """#!/bin/sh
env > "{dir}/dhclient6.$reason"
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6)
    [ -n "$new_ip6_address" ] && ip -6 addr add "$new_ip6_address/$new_ip6_prefixlen" \\
        dev "$interface" nodad
    ;;
esac
exit 0
"""

DHCLIENT6_CONF = """
timeout {timeout};
also request dhcp6.name-servers, dhcp6.domain-search, dhcp6.bootfile-url;
"""


def dhcp6_dir(c: Chassis, timeout: int = 15, conf: str = "") -> Path:
    work = c.scratch_dir()
    for name, text in (
        ("dhclient6.sh", DHCLIENT6_SCRIPT.format(dir=work)),
        ("dhclient6.conf", DHCLIENT6_CONF.format(timeout=timeout) + conf),
    ):
        (work / name).write_text(text)
        (work / name).chmod(0o755)
    return work


def link_local_ready(ns: str) -> None:
    """eth0 with a usable (not tentative) EUI-64 link-local address: DAD off, link
    bounced so the kernel makes the address again without it."""
    for cmd in (
        ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"],
        ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0"],  # (no RAs here anyway)
        ["ip", "link", "set", "eth0", "down"],
        ["ip", "link", "set", "eth0", "up"],
    ):
        out = in_netns(ns, *cmd)
        assert out.returncode == 0, out.stdout + out.stderr
    out = in_netns(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
    assert "fe80::" in out.stdout and "tentative" not in out.stdout, out.stdout


def dhclient6(ns: str, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return in_netns(
        ns, "dhclient", "-6", "-1", "-v", *args, "-cf", str(work / "dhclient6.conf"),
        "-sf", str(work / "dhclient6.sh"), "-pf", str(work / "dhclient6.pid"),
        "-lf", str(work / "dhclient6.leases"), "eth0", timeout=40,
    )  # fmt: skip


def v6_of(port: dict[str, Any]) -> str:
    return next(str(f["ip_address"]) for f in port["fixed_ips"] if ":" in f["ip_address"])


def vm6(c: Chassis, net: dict[str, Any], name: str, **attrs: Any) -> tuple[dict[str, Any], str]:
    """A port on NET, plugged without addresses (they come by DHCPv6), ACTIVE."""
    port = c.post("ports", network_id=net["id"], name=name, **attrs)
    ns = c.plug(port, static_ip=False)
    c.wait_active(port)
    link_local_ready(ns)
    return port, ns


def stateful_net(c: Chassis, name: str, cidr: str) -> tuple[dict[str, Any], dict[str, Any]]:
    net = c.post("networks", name=name)
    sub = c.post(
        "subnets", network_id=net["id"], cidr=cidr, ip_version=6,
        ipv6_address_mode="dhcpv6-stateful", ipv6_ra_mode="dhcpv6-stateful",
        dns_nameservers=[cidr.replace("::/64", "::53"), cidr.replace("::/64", "::54")],
    )  # fmt: skip
    return net, sub


def assert_leased(c: Chassis, ns: str, work: Path, port: dict[str, Any]) -> dict[str, str]:
    """dhclient -6 got exactly the API's address, and the kernel holds it."""
    out = dhclient6(ns, work)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    (work / "dhclient6.out").write_text(out.stderr)
    env = read_env(work / "dhclient6.BOUND6")
    assert env["new_ip6_address"] == v6_of(port), env
    shown = in_netns(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global").stdout
    assert f"inet6 {v6_of(port)}/" in shown, shown
    assert shown.count("inet6 ") == 1, shown  # that address and no other
    return env


def test_dhclient6_stateful_gets_the_api_address_dns_and_search_domain(chassis: Chassis) -> None:
    c = chassis
    net, sub = stateful_net(c, "stateful", "fd61::/64")
    port, ns = vm6(c, net, "isc6")
    work = dhcp6_dir(c)
    env = assert_leased(c, ns, work, port)
    assert env["new_dhcp6_name_servers"].split() == sub["dns_nameservers"], env
    assert env["new_dhcp6_domain_search"].split() == ["openstacklocal."], env
    lease = (work / "dhclient6.leases").read_text()
    assert f"iaaddr {v6_of(port)} " in lease, lease
    assert "option dhcp6.name-servers fd61::53,fd61::54;" in lease, lease
    assert 'option dhcp6.domain-search "openstacklocal.";' in lease, lease
    assert "preferred-life 86400;" in lease and "max-life 86400;" in lease, lease


def test_dhclient6_stateless_gets_dns_and_search_domain(chassis: Chassis) -> None:
    c = chassis
    net = c.post("networks", name="stateless")
    sub = c.post(
        "subnets", network_id=net["id"], cidr="fd62::/64", ip_version=6,
        ipv6_address_mode="dhcpv6-stateless", ipv6_ra_mode="dhcpv6-stateless",
        dns_nameservers=["fd62::53"],
    )  # fmt: skip
    port, ns = vm6(c, net, "isc6s")
    work = dhcp6_dir(c)
    out = dhclient6(ns, work, "-S")
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    assert "RCV: Reply message" in out.stderr, out.stderr
    env = read_env(work / "dhclient6.RENEW6")  # (ISC's reason for an information reply)
    assert env["new_dhcp6_name_servers"].split() == sub["dns_nameservers"], env
    assert env["new_dhcp6_domain_search"].split() == ["openstacklocal."], env
    assert "new_ip6_address" not in env
    # Stateless: no address leased (the port's own, an EUI-64 one, comes by SLAAC).
    assert v6_of(port).startswith("fd62::")
    shown = in_netns(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global").stdout
    assert "inet6" not in shown, shown


def ping6(ns: str, ip: str) -> subprocess.CompletedProcess[str]:
    return in_netns(ns, "ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "1", ip)


def test_dhclient6_lease_under_a_default_deny_security_group(chassis: Chassis) -> None:
    """A group without any rule drops everything the VM sends or receives, except what
    Neutron always allows: DHCPv6 still works."""
    c = chassis
    net, sub = stateful_net(c, "denied", "fd63::/64")
    sg = c.post("security-groups", name="deny-all")
    for rule in c.get("security-groups", sg["id"])["security_group_rules"]:
        c.delete("security-group-rules", rule["id"])
    assert c.get("security-groups", sg["id"])["security_group_rules"] == []
    port, ns = vm6(c, net, "denied6", security_groups=[sg["id"]])
    assert_leased(c, ns, dhcp6_dir(c), port)

    # The group does deny. The probe: two VMs of the default group, leased the same way,
    # ping each other (the on-link route is what an RA would give; none is sent here).
    vms = [vm6(c, net, name) for name in ("open6a", "open6b")]
    for p, vns in vms:
        assert_leased(c, vns, dhcp6_dir(c), p)
    for _, vns in [*vms, (port, ns)]:
        assert (
            in_netns(vns, "ip", "-6", "route", "replace", sub["cidr"], "dev", "eth0").returncode
            == 0
        )
    (a, ns_a), (b, _) = vms
    assert ping6(ns_a, v6_of(b)).returncode == 0, ping6(ns_a, v6_of(b)).stdout
    # ...and neither way between the default-deny VM and them.
    assert ping6(ns_a, v6_of(port)).returncode != 0
    assert ping6(ns, v6_of(a)).returncode != 0


def test_extra_dhcp_opt_v6_reaches_the_lease(chassis: Chassis) -> None:
    c = chassis
    net, _ = stateful_net(c, "extra", "fd64::/64")
    url = "tftp://[fd64::69]/pxelinux.0"
    extra = [
        {"opt_name": "bootfile-url", "opt_value": url, "ip_version": 6},
        {"opt_name": "domain-search", "opt_value": "vms.example", "ip_version": 6},
    ]
    port, ns = vm6(c, net, "extra6", extra_dhcp_opts=extra)
    work = dhcp6_dir(c, conf="send dhcp6.rapid-commit;\n")  # (and a two-message exchange)
    env = assert_leased(c, ns, work, port)
    log = (work / "dhclient6.out").read_text()
    assert "RCV: Reply message" in log and "Advertise" not in log, log
    assert env["new_dhcp6_domain_search"].split() == ["vms.example."], env
    lease = (work / "dhclient6.leases").read_text()
    assert f'option dhcp6.bootfile-url "{url}";' in lease, lease
    assert 'option dhcp6.domain-search "vms.example.";' in lease, lease


# A DHCPv6 Solicit flood from one VM, as fast as one raw socket sends; a quarter of the
# messages malformed.
SOLICIT_FLOOD = r"""
import socket, struct, sys, time
iface, mac, src, seconds = sys.argv[1:5]
m = bytes.fromhex(mac.replace(":", ""))
s6 = socket.inet_pton(socket.AF_INET6, src)
d6 = socket.inet_pton(socket.AF_INET6, "ff02::1:2")

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def opt(code, data):
    return struct.pack("!HH", code, len(data)) + data

frames = []
for xid in range(64):
    msg = bytes([1]) + xid.to_bytes(3, "big") + opt(1, b"\0\3\0\1" + m) + opt(8, b"\0\0")
    msg += opt(3, struct.pack("!III", 1, 0, 0))
    if xid % 4 == 3:  # one in four malformed: truncated, or garbage (dropped and counted)
        msg = msg[:-5] if xid % 8 == 3 else bytes((xid * 37 + i) % 256 for i in range(40))
    udp = struct.pack("!HHHH", 546, 547, 8 + len(msg), 0) + msg
    c = csum(s6 + d6 + struct.pack("!IxxxB", len(udp), 17) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!IHBB", 0x60000000, len(udp), 17, 1) + s6 + d6 + udp
    frames.append(b"\x33\x33\x00\x01\x00\x02" + m + b"\x86\xdd" + ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
print("flooding", flush=True)
sent = 0
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    for f in frames:
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
print("sent", sent, flush=True)
"""
FLOOD_SECONDS = 12.0


def test_a_solicit_flood_from_one_vm_leaves_dhcpv6_to_the_others(chassis: Chassis) -> None:
    """The flood goes through the same per-port meter (datapath) and token bucket (agent)
    as DHCPv4: the other VMs get their leases during it, and the flooder's punts are
    mostly dropped in the datapath, where an operator reads them."""
    c = chassis
    net, _ = stateful_net(c, "flood6", "fd65::/64")
    flooder, ns_f = vm6(c, net, "flooder6")
    victims = [vm6(c, net, name) for name in ("v6a", "v6b")]
    lladdr = in_netns(ns_f, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
    src = lladdr.stdout.split("inet6 ")[1].split("/")[0]

    flood = c.background(
        ns_f, PY, "-c", SOLICIT_FLOOD, "eth0", flooder["mac_address"], src, str(FLOOD_SECONDS)
    )
    assert flood.stdout is not None and flood.stdout.readline().strip() == "flooding"
    time.sleep(1)  # the flood is established
    for port, ns in victims:
        assert_leased(c, ns, dhcp6_dir(c), port)
    assert flood.poll() is None, "the flood ended before the leases: it proved nothing"
    out, _ = flood.communicate(timeout=FLOOD_SECONDS + 10)
    sent = int(out.split()[-1])
    assert c.agent is not None and c.agent.alive(), c.agent_log()
    assert "handler failed" not in c.agent_log()  # (no packet-in raised)

    rows, counters, text = c.punts()
    punted, dropped = rows[flooder["id"]]
    assert punted > dropped > 0.9 * punted, text  # dropped in the datapath
    print(f"flood: {sent} solicits sent, {punted} reached the meter, {dropped} dropped there")
    for port, _ in victims:
        punted, dropped = rows[port["id"]]
        assert punted >= 2 and dropped == 0, text  # solicit and request, all served
    # What passed the meter reached the agent, whose malformed ones were dropped and
    # counted: its metrics file shows them (rewritten every few seconds), as does punts.
    eventually(lambda: c.punts()[1].get("dhcp6_malformed", 0) > 0, "dhcp6_malformed counted")
    rows, counters, text = c.punts()
    assert counters["dhcp6"] >= counters["dhcp6_malformed"] > 0, text
    assert counters["dhcp6_advertise"] >= len(victims), text
    prom = (c.run_dir / "metrics" / f"wyvern-agent-{c.env['WYVERN_CHASSIS_NAME']}.prom").read_text()
    malformed = next(line for line in prom.splitlines() if 'outcome="dhcp6_malformed"' in line)
    assert malformed.startswith("wyvern_agent_packet_in_outcomes_total{chassis="), prom
    assert int(malformed.split()[-1]) > 0, prom
    print(text)
    # The flooder itself is still served once it stops.
    assert_leased(c, ns_f, dhcp6_dir(c), flooder)


def test_dhclient6_renews_with_the_configured_lease_time_and_domain(chassis: Chassis) -> None:
    """The agent's dhcp_lease_duration and dns_domain (Neutron's options) reach the
    lease, and the client's Renew at T1 is answered with the same address."""
    c = chassis
    assert c.agent is not None
    c.agent.stop()
    c.env.update(WYVERN_DHCP_LEASE_DURATION="60", WYVERN_DNS_DOMAIN="cloud.example")
    c.start_agent()
    c.wait_agent_alive()
    net, _ = stateful_net(c, "renew", "fd66::/64")
    port, ns = vm6(c, net, "renew6")
    work = dhcp6_dir(c)
    env = assert_leased(c, ns, work, port)
    assert env["new_dhcp6_domain_search"].split() == ["cloud.example."], env
    lease = (work / "dhclient6.leases").read_text()
    for words in ("renew 30;", "rebind 52;", "preferred-life 60;", "max-life 60;"):
        assert words in lease, lease
    # `wyvern trace` explains the Solicit with the agent's settings, simulated and on OVS.
    for how in ((), ("--ovs",)):
        out = c.wyvern("trace", *how, "--from", "renew6", "--proto", "dhcp6")
        assert out.returncode == 0, out.stdout + out.stderr
        assert (
            f"the agent's DHCPv6 server for port renew6 ({port['id']}): a Solicit gets "
            f"{v6_of(port)} on subnet"
        ) in out.stdout, out.stdout
        assert "(IA_NA, lease 60 s)" in out.stdout and "domain search cloud.example" in out.stdout
    eventually(lambda: (work / "dhclient6.RENEW6").exists(), "a renewal at T1", timeout=60)
    renewed = read_env(work / "dhclient6.RENEW6")
    assert renewed["new_ip6_address"] == v6_of(port), renewed
    assert renewed["new_max_life"] == "60", renewed
