"""The metadata service for real: VMs `curl` 169.254.169.254 and [fe80::a9fe:a9fe] and
get their own instance's metadata from a Nova stand-in (tests/novametadata.py) through
the chassis's proxy, on a network behind a router and on one with no router at all.

The stand-in runs in the host's namespace, where the agent forwards from; it checks the
signature as Nova does (403 otherwise) and logs the headers it got, so the tests see
X-Forwarded-For and a valid X-Instance-ID-Signature. The VM on the network without a
router gets its address and the route to 169.254.169.254 from real dhclient (option
121, applied by Debian's own rfc3442 hook).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Chassis
from tests.e2e.test_dataplane import eventually, ip_of, read_env
from tests.novametadata import signature
from tests.southbound.conftest import in_netns, unique
from wyvern.apps.port_security import eui64_link_local

pytestmark = pytest.mark.system

SECRET = "s3cret-shared-with-nova"
META_JSON = "/openstack/latest/meta_data.json"

# dhclient's script: the address, then Debian's own option 121 hook (it adds the routes
# the lease lists, on-link for a next hop of 0.0.0.0), then the environment for the test.
DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    . /etc/dhcp/dhclient-exit-hooks.d/rfc3442-classless-routes
    ;;
esac
env > "{dir}/dhclient.$reason"
exit 0
"""
DHCLIENT_CONF = """
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
timeout 15;
request subnet-mask, broadcast-address, routers, rfc3442-classless-static-routes;
"""


def curl(ns: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """CURL in NS: the body, then the status code on a line of its own."""
    return in_netns(
        ns, "curl", "-s", "-g", "--max-time", "10", "-w", "\n%{http_code}", *args, url,
        timeout=20,
    )  # fmt: skip


def get(ns: str, url: str, *args: str) -> tuple[int, str]:
    out = curl(ns, url, *args)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


class Nova:
    """The stand-in, as a process in the host's namespace; its log, as JSON lines."""

    def __init__(self, c: Chassis) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.novametadata", "--secret", SECRET],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        c.procs.append(self.proc)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        assert first[:1] == ["ready"], first
        self.port = int(first[1])

    def next_request(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        entry: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return entry


def restart_agent(c: Chassis, **env: str) -> None:
    """The agent again, with ENV added to (or, for "", removed from) its environment."""
    assert c.agent is not None
    c.agent.stop()
    for key, value in env.items():
        if value:
            c.env[key] = value
        else:
            c.env.pop(key, None)
    c.start_agent()
    c.wait_agent_alive()


def with_nova(c: Chassis) -> Nova:
    nova = Nova(c)
    restart_agent(
        c,
        WYVERN_NOVA_METADATA_HOST="127.0.0.1",
        WYVERN_NOVA_METADATA_PORT=str(nova.port),
        WYVERN_METADATA_PROXY_SHARED_SECRET=SECRET,
    )
    return nova


def instance_port(c: Chassis, net: dict[str, Any], name: str) -> dict[str, Any]:
    return c.post(
        "ports",
        network_id=net["id"],
        name=name,
        device_id=str(uuid.uuid4()),
        device_owner="compute:nova",
    )


def test_vms_get_their_own_metadata_with_and_without_a_router(chassis: Chassis) -> None:
    c = chassis
    nova = with_nova(c)
    # Network A behind a router: the VM's default route goes to the router's MAC.
    net_a = c.post("networks", name=unique("md-a-"))
    sub_a = c.post("subnets", network_id=net_a["id"], cidr="10.61.0.0/24", ip_version=4)
    router = c.post("routers", name=unique("md-r-"))
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub_a["id"])
    port_a = instance_port(c, net_a, "vm-a")
    ns_a = c.plug(port_a)
    # Network B with no router at all (its gateway_ip is nobody's): the VM gets its
    # address and an on-link route to 169.254.169.254 from real dhclient.
    net_b = c.post("networks", name=unique("md-b-"))
    c.post("subnets", network_id=net_b["id"], cidr="10.62.0.0/24", ip_version=4)
    port_b = instance_port(c, net_b, "vm-b")
    ns_b = c.plug(port_b, static_ip=False)
    c.wait_active(port_a)
    c.wait_active(port_b)

    work = c.scratch_dir()
    (work / "dhclient.sh").write_text(DHCLIENT_SCRIPT.format(dir=work))
    (work / "dhclient.sh").chmod(0o755)
    (work / "dhclient.conf").write_text(DHCLIENT_CONF)
    out = in_netns(
        ns_b, "dhclient", "-1", "-v", "-cf", str(work / "dhclient.conf"),
        "-sf", str(work / "dhclient.sh"), "-pf", str(work / "dhclient.pid"),
        "-lf", str(work / "dhclient.leases"), "eth0", timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + c.agent_log()
    lease = read_env(work / "dhclient.BOUND")
    assert lease["new_ip_address"] == ip_of(port_b)
    # 169.254.169.254/32 on-link (next hop 0.0.0.0), then the default via the gateway.
    assert lease["new_rfc3442_classless_static_routes"].split()[:9] == (
        ["32", "169", "254", "169", "254", "0", "0", "0", "0"]
    )
    routes = in_netns(ns_b, "ip", "route", "show", "169.254.169.254").stdout
    assert "169.254.169.254 dev eth0" in routes, routes

    for ns, port in ((ns_a, port_a), (ns_b, port_b)):
        code, body = get(ns, f"http://169.254.169.254{META_JSON}")
        assert code == 200, body + c.agent_log()
        meta = json.loads(body)
        assert meta["uuid"] == port["device_id"]
        assert meta["project_id"] == port["project_id"]
        seen = nova.next_request()
        assert seen["path"] == META_JSON
        assert seen["instance_id"] == port["device_id"]
        assert seen["tenant_id"] == port["project_id"]
        assert seen["forwarded_for"] == ip_of(port)
        assert seen["signature_valid"] is True
        assert seen["signature"] == signature(SECRET, port["device_id"])

    # The EC2-style tree too.
    code, body = get(ns_a, "http://169.254.169.254/latest/meta-data/instance-id")
    assert (code, body) == (200, port_a["device_id"])
    nova.next_request()

    # A VM naming another instance in its headers still gets its own: the proxy knows it
    # by the port its packets came in on.
    forged = (
        "-H", f"X-Instance-ID: {port_b['device_id']}",
        "-H", f"X-Tenant-ID: {port_b['project_id']}",
        "-H", f"X-Instance-ID-Signature: {signature(SECRET, port_b['device_id'])}",
        "-H", f"X-Forwarded-For: {ip_of(port_b)}",
    )  # fmt: skip
    code, body = get(ns_a, f"http://169.254.169.254{META_JSON}", *forged)
    assert code == 200 and json.loads(body)["uuid"] == port_a["device_id"], body
    seen = nova.next_request()
    assert (seen["instance_id"], seen["forwarded_for"]) == (port_a["device_id"], ip_of(port_a))

    # IPv6: the link-local service address, on both networks (neither has IPv6 subnets).
    for ns, port in ((ns_a, port_a), (ns_b, port_b)):
        url = f"http://[fe80::a9fe:a9fe%eth0]{META_JSON}"
        eventually(lambda ns=ns, url=url: get(ns, url)[0] == 200, "IPv6 metadata", 15)
        code, body = get(ns, url)
        assert json.loads(body)["uuid"] == port["device_id"]
        seen = nova.next_request()
        while seen["forwarded_for"] != str(eui64_link_local(port["mac_address"])):
            seen = nova.next_request()  # (the tries eventually made)
        assert seen["instance_id"] == port["device_id"]
        assert seen["signature_valid"] is True


def test_without_nova_the_answer_is_a_clear_404(chassis: Chassis) -> None:
    c = chassis
    net = c.post("networks", name=unique("md-"))
    sub = c.post("subnets", network_id=net["id"], cidr="10.63.0.0/24", ip_version=4)
    router = c.post("routers", name=unique("md-r-"))
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    port = instance_port(c, net, "vm")
    ns = c.plug(port)
    c.wait_active(port)
    code, body = get(ns, f"http://169.254.169.254{META_JSON}")
    assert code == 404, body + c.agent_log()
    error = json.loads(body)["error"]
    assert error["type"] == "MetadataNotConfigured"
    assert "nova_metadata_host" in error["message"]
    # (IPv6 once the VM's link-local address is no longer tentative)
    url = f"http://[fe80::a9fe:a9fe%eth0]{META_JSON}"
    eventually(lambda: get(ns, url)[0] == 404, "IPv6 metadata", 15)
    code, body = get(ns, url)
    assert code == 404 and json.loads(body)["error"]["type"] == "MetadataNotConfigured"


def test_each_chassis_serves_its_own_vms(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two chassis, a VM on each in one network behind a router: each VM's request is
    served by its own chassis's proxy (per-port addresses come from each br-int's own
    ofports, so two chassis may well use the same) and gets its own instance."""
    from tests import system
    from tests.e2e.multichassis import cluster

    system.require(request)
    with cluster(tmp_path, 0) as c:
        first = c.add_chassis()  # (the stand-in's process is this chassis's to clean up)
        nova = Nova(first)
        env = {
            "WYVERN_NOVA_METADATA_HOST": "127.0.0.1",
            "WYVERN_NOVA_METADATA_PORT": str(nova.port),
            "WYVERN_METADATA_PROXY_SHARED_SECRET": SECRET,
        }
        restart_agent(first, **env)
        c.add_chassis(env=env)
        c.wait_tunnels()
        net = c.post("networks", name=unique("md-"))
        sub = c.post("subnets", network_id=net["id"], cidr="10.64.0.0/24", ip_version=4)
        router = c.post("routers", name=unique("md-r-"))
        c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
        ports = [instance_port(c.hv[0], net, f"vm{i}") for i in range(2)]
        vms = [hv.plug(port) for hv, port in zip(c.hv, ports, strict=True)]
        for hv, port in zip(c.hv, ports, strict=True):
            hv.wait_active(port)
        for ns, port in zip(vms, ports, strict=True):
            code, body = get(ns, f"http://169.254.169.254{META_JSON}")
            assert code == 200, body + c.logs()
            assert json.loads(body)["uuid"] == port["device_id"]
            seen = nova.next_request()
            assert (seen["instance_id"], seen["forwarded_for"]) == (port["device_id"], ip_of(port))
            assert seen["signature_valid"] is True
