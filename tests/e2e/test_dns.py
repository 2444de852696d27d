"""dns-integration end to end: real dhclient (v4 and -6) in a VM namespace on real OVS gets
the host name and domain the API shows (the port's dns_assignment, the network's
dns_domain, else the dns_domain setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dhcpclients import DHCLIENT_SCRIPT
from tests.e2e.conftest import Chassis
from tests.e2e.test_dataplane import dhclient, eventually, ip_of, read_env
from tests.e2e.test_dhcp6 import dhclient6, dhcp6_dir, stateful_net, vm6
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

SETTING = {"WYVERN_DNS_DOMAIN": "example.org"}

DHCLIENT_CONF = """
timeout 15;
request subnet-mask, broadcast-address, routers, host-name, domain-name;
"""


def dhcp_dir(c: Chassis) -> Path:
    work = c.scratch_dir()
    (work / "dhclient.sh").write_text(DHCLIENT_SCRIPT.format(dir=work))
    (work / "dhclient.sh").chmod(0o755)
    (work / "dhclient.conf").write_text(DHCLIENT_CONF)
    return work


@pytest.mark.parametrize("chassis", [SETTING], indirect=True)
def test_dhclient_gets_the_dns_name_and_the_networks_domain(chassis: Chassis) -> None:
    c = chassis
    net = c.post("networks", name="dns", dns_domain="lab.example.org.")
    c.post("subnets", network_id=net["id"], cidr="10.57.0.0/24", ip_version=4)
    port = c.post("ports", network_id=net["id"], name="vm", dns_name="web-1")
    assert port["dns_assignment"][0]["fqdn"] == "web-1.example.org."
    ns = c.plug(port, static_ip=False)
    c.wait_active(port)

    work = dhcp_dir(c)
    out = dhclient(ns, work)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    env = read_env(work / "dhclient.BOUND")
    assert env["new_ip_address"] == ip_of(port)
    assert env["new_host_name"] == "web-1", env
    assert env["new_domain_name"] == "lab.example.org", env
    lease = (work / "dhclient.leases").read_text()
    assert 'option host-name "web-1";' in lease and 'option domain-name "lab.example.org";' in lease

    # Without a dns_name and a network dns_domain: host-<ip> and the setting's domain.
    c.put("ports", port["id"], dns_name="")
    c.put("networks", net["id"], dns_domain="")
    shown = c.get("ports", port["id"])
    host = "host-" + ip_of(port).replace(".", "-")
    assert shown["dns_assignment"][0]["hostname"] == host
    assert in_netns(ns, "ip", "addr", "flush", "dev", "eth0").returncode == 0
    for f in ("dhclient.BOUND", "dhclient.leases"):
        (work / f).unlink(missing_ok=True)

    def renewed() -> dict[str, str]:
        out = dhclient(ns, work)
        assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
        return read_env(work / "dhclient.BOUND")

    # (the agent applies the updates asynchronously: a lease from before may still come)
    eventually(lambda: renewed().get("new_host_name") == host, "the new host name", 40)
    env = read_env(work / "dhclient.BOUND")
    assert env["new_domain_name"] == "example.org", env


@pytest.mark.parametrize("chassis", [SETTING], indirect=True)
def test_dhclient6_gets_the_networks_domain_and_its_fqdn(chassis: Chassis) -> None:
    c = chassis
    net, _ = stateful_net(c, "dns6", "fd57::/64")
    c.put("networks", net["id"], dns_domain="lab6.example.org.")
    _, ns = vm6(c, net, "isc6", dns_name="web-6")
    work = dhcp6_dir(c, conf="also request dhcp6.fqdn;\n")
    out = dhclient6(ns, work)
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    env = read_env(work / "dhclient6.BOUND6")
    assert env["new_dhcp6_domain_search"].split() == ["lab6.example.org."], env
    lease = (work / "dhclient6.leases").read_text()
    assert 'option fqdn.fqdn "web-6.example.org";' in lease, lease  # (RFC 4704, from the API)
