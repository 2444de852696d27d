"""Wyvern side by side with OVN 23.03: the same topology on both, one table of ratios.

Not a test: it prints figures for both systems measured in the same run on the same
machine, and writes them as JSON under benchmarks/results/.

    sudo .venv/bin/python benchmarks/vs_ovn.py [--scenarios 1,2,3,4] [--scale 1.0]

Scenarios (issue 5): (1) 1,000 ports in 1 network; (2) 1,000 ports in 10 networks joined
by a router; (3) 5,000 ports in 50 networks with 5 routers, every port in a security
group of 10 rules; (issue 12) (4) scenario 2 with the router's gateway on an external
network and a floating IP for every port. Each system is started fresh per scenario,
privately (its own scratch dir, its own userspace OVS in its own network namespace, no
system service), and only one system runs at a time. Both are torn down afterwards, also
on failure and Ctrl-C.

How both are driven, identically where the systems allow it:
- Ports are bound on the chassis by OVS interfaces (type=dummy on the netdev datapath,
  created before the timing and without an iface-id) that get
  external_ids:iface-id/attached-mac in one OVSDB transaction right after the
  northbound creation: the same OVS work for both, and no vswitchd reconfigure of
  thousands of new ports inside the timed window.
- Northbound: Wyvern through its Neutron API over HTTP (bulk POSTs); OVN with raw OVSDB
  transactions on its NB database (ovn-nbctl is quadratic on big transactions).
- Installed: OVN reports Logical_Switch_Port up=true once the port's flows are in;
  Wyvern reports the port ACTIVE once the flows computed from a revision at least the
  port's are in. OVN 23.03 reports up early with 1,000 ports in one switch (a second
  handler pass installs more than half the flows afterwards), so for both systems the
  bulk counts as installed at the later of the signal and the last change of br-int's
  flow count. A rule add has no per-rule signal on Wyvern, so for both systems it is
  timed until the rule's flows (tp_dst of a port nothing else uses) appear on br-int.
- North-south (scenario 4): the chassis maps the external physnet (`physnet1` to br-ex)
  and is the gateway chassis, on both systems. Wyvern: the agent gets
  WYVERN_BRIDGE_MAPPINGS and WYVERN_GATEWAY_PRIORITY=1 (it creates br-ex itself); a flat
  `router:external` network on the physnet, a /16 subnet, the router's gateway at a
  pinned address (SNAT, the default), all outside the timing. OVN, as Neutron's OVN
  driver writes the same objects: br-ex and ovn-bridge-mappings/ovn-cms-options on the
  chassis, a switch with a localnet port and the router's port, a gateway router port
  with a Gateway_Chassis on the chassis, the default route to the upstream router and a
  SNAT row per internal subnet. Timed: the ports, then one floating IP per port at a
  pinned address (Wyvern: bulk POST /v2.0/floatingips with port_id, 1,000 a request;
  OVN: one transaction of dnat_and_snat NAT rows with logical_port and external_mac,
  distributed as Neutron writes them when the chassis maps the physnet; Neutron makes
  no switch port for a floating IP's own port, so neither do we). Before the timing, on
  both, a guard: a host on br-ex at the upstream router's address pings a guard VM's
  floating IP and the VM pings the host through it, or the scenario is void.
- Installed, north-south: the bulk counts as installed (the rule above) once every port
  and every floating IP is, for both systems; a floating IP is once its DNAT flow is on
  br-int (a flow matching nw_dst=<floating IP> whose actions hold nat(dst=<fixed IP>):
  Wyvern's dnat stage, OVN's lr_in_dnat). Wyvern's own signal also waits for every
  floating IP to be ACTIVE (the agent writes it once the NAT flows are installed); OVN
  has no signal for NAT rows. One more association: Wyvern PUTs port_id on a floating
  IP created unassociated before the timing, OVN inserts the NAT row (what Neutron
  writes on association); installed = its DNAT flow is on br-int, and for Wyvern its
  status is ACTIVE too (median of FIP_ADDS, on single-added ports that have none).
- Single adds stop after SAMPLE_BUDGET seconds (OVN needs 20-50 s per port at 5,000
  ports in one security group); the JSON keeps every sample.

Figures per scenario: time from the start of creation until every port is installed;
one more port create -> installed (median of 20); one security-group rule add ->
installed (median of 5); one more floating IP association -> installed (median of 10);
OpenFlow flows on br-int and per port; resident memory of the controller
(ovn-controller vs the wyvern agent) and of the northbound/southbound side
(both ovsdb-servers + ovn-northd vs the wyvern API). Needs root, openvswitch-switch and
ovn-central/ovn-host (`apt-get install ovn-central ovn-host`; with --apt the benchmark
installs them itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import ovn_peer  # noqa: E402
from benchmarks.ovn_peer import OvnSandbox, OvnTopology, OvsdbClient, rss_kib  # noqa: E402
from benchmarks.topology import (  # noqa: E402
    EXT_BRIDGE,
    EXT_CIDR,
    EXT_GATEWAY,
    EXT_UPSTREAM,
    GUARD_FIP,
    PHYSNET,
    SCENARIOS,
    SG_NAME,
    SG_RULES,
    Figure,
    Plan,
    Rule,
    cidr,
    differences,
    expected,
    extra_port,
    fip_ip,
    gateway,
    guard_ports,
    port_ip,
    port_mac,
    probe_rule,
    render_table,
)
from tests.harness import Proc, process_env, spawn, start_api, wyvern_command  # noqa: E402
from wyvern.southbound import vif  # noqa: E402
from wyvern.southbound.ovs import OvsInstance  # noqa: E402

SINGLE_ADDS = 20
RULE_ADDS = 5
FIP_ADDS = 10
POLL = 0.01  # seconds between "installed yet?" checks of one port or rule
BULK_POLL = 0.2  # ... of all ports
TIMEOUT = 1800.0
SAMPLE_BUDGET = 240.0  # seconds of single adds (or rule adds) per system and scenario


class Aborted(RuntimeError):
    """A system could not be measured (timeout, error): no figures from it."""


class GuardFailed(Aborted):
    """The correctness guard failed: the whole scenario is void, for both systems."""


# ---------------------------------------------------------------- both chassis' OVS


def vif_name(k: int) -> str:
    return f"vif{k}"


def add_vifs(ovs: OvsInstance, ports: list[int]) -> None:
    """Dummy interfaces (no iface-id yet) for port numbers PORTS, then wait for vswitchd."""
    client = OvsdbClient(ovs.db_sock)
    try:
        for i in range(0, len(ports), 2000):
            ops: list[dict[str, Any]] = []
            refs = []
            for k in ports[i : i + 2000]:
                ops.append(
                    {
                        "op": "insert",
                        "table": "Interface",
                        "uuid-name": f"i{k}",
                        "row": {"name": vif_name(k), "type": "dummy"},
                    }
                )
                ops.append(
                    {
                        "op": "insert",
                        "table": "Port",
                        "uuid-name": f"p{k}",
                        "row": {"name": vif_name(k), "interfaces": ["named-uuid", f"i{k}"]},
                    }
                )
                refs.append(["named-uuid", f"p{k}"])
            ops.append(
                {
                    "op": "mutate",
                    "table": "Bridge",
                    "where": [["name", "==", "br-int"]],
                    "mutations": [["ports", "insert", ["set", refs]]],
                }
            )
            client.transact("Open_vSwitch", ops)
    finally:
        client.close()
    # ovs-vsctl (without --no-wait) returns once vswitchd has applied the configuration.
    ovs.vsctl("set", "Open_vSwitch", ".", f"external_ids:wvb-sync={time.time_ns()}", timeout=900)


def bind_vifs(ovs: OvsInstance, binds: list[tuple[int, str]]) -> None:
    """Give VIFs their iface-id (the logical port) and attached-mac, in one transaction."""
    client = OvsdbClient(ovs.db_sock)
    try:
        ops = [
            {
                "op": "update",
                "table": "Interface",
                "where": [["name", "==", vif_name(k)]],
                "row": {
                    "external_ids": [
                        "map",
                        [["iface-id", iface_id], ["attached-mac", port_mac(k)]],
                    ]
                },
            }
            for k, iface_id in binds
        ]
        client.transact("Open_vSwitch", ops)
    finally:
        client.close()


def flow_count(ovs: OvsInstance) -> int:
    out = ovs.ofctl("-O", "OpenFlow15", "dump-aggregate", "br-int", timeout=120)
    for word in out.split():
        if word.startswith("flow_count="):
            return int(word.split("=", 1)[1])
    raise RuntimeError(f"no flow_count in {out!r}")


def flows_matching(ovs: OvsInstance, match: str) -> int:
    out = ovs.ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", match, timeout=60)
    return sum(1 for line in out.splitlines() if "actions=" in line)


_DST_MAC = re.compile(r"(?:dl_dst|eth_dst)=([0-9a-f]{2}(?::[0-9a-f]{2}){5})")


def missing_macs(ovs: OvsInstance, macs: set[str]) -> set[str]:
    """The port MACs that no br-int flow matches as a destination yet: until a port's L2
    lookup flow is in, the system has not finished installing it, whatever it reports."""
    out = ovs.ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", timeout=60)
    return macs - set(_DST_MAC.findall(out))


_DNAT = re.compile(r"\bnw_dst=([0-9.]+)[, ].*\bnat\(dst=([0-9.]+)[):]")


def dnat_targets(dump: str) -> set[tuple[str, str]]:
    """(floating IP, fixed IP) of every flow in a dump-flows output that matches packets to
    the floating IP and DNATs them to the fixed IP: the flow both systems need before a
    floating IP carries anything in (Wyvern's dnat stage, OVN's lr_in_dnat)."""
    return {(m[1], m[2]) for m in map(_DNAT.search, dump.splitlines()) if m}


def missing_dnats(ovs: OvsInstance, want: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (floating IP, fixed IP) pairs of WANT that no br-int flow DNATs yet."""
    match = f"ip,nw_dst={next(iter(want))[0]}" if len(want) == 1 else "ip"
    out = ovs.ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", match, timeout=60)
    return want - dnat_targets(out)


def wait_flows_stable(ovs: OvsInstance, quiet: float = 1.0, timeout: float = TIMEOUT) -> int:
    """Until br-int's flow count has not changed for QUIET seconds; returns it."""
    return settle(ovs, quiet, timeout)[0]


def settle(ovs: OvsInstance, quiet: float, timeout: float = TIMEOUT) -> tuple[int, float]:
    """(flow count, monotonic time of its last change) once it held still for QUIET s."""
    deadline = time.monotonic() + timeout
    last = flow_count(ovs)
    since = time.monotonic()
    changed = 0.0
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise Aborted("br-int flow count never settled")
        time.sleep(0.25)
        now = flow_count(ovs)
        if now != last:
            last, since = now, time.monotonic()
            changed = since
    return last, changed


def tree_rss_kib(pid: int | None) -> int:
    """RSS of PID and all its descendants (an API server may fork workers)."""
    if pid is None:
        return 0
    total = rss_kib(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_rss_kib(int(c)) for c in children)


def wait_until(check: Callable[[], bool], timeout: float, poll: float, what: str) -> None:
    """Poll CHECK every POLL seconds, but never spend over a third of the time checking
    (listing thousands of ports is work for the system under test)."""
    deadline = time.monotonic() + timeout
    while True:
        t = time.monotonic()
        if check():
            return
        spent = time.monotonic() - t
        if time.monotonic() > deadline:
            raise Aborted(f"timed out after {timeout:.0f} s: {what}")
        time.sleep(max(poll, 2 * spent))


# ---------------------------------------------------------------- the two systems


class System(Protocol):
    name: str
    ovs: OvsInstance

    def build_infra(self) -> None: ...
    def create_ports(self, ports: list[int]) -> list[str]: ...
    def delete_ports(self, ports: list[int]) -> None: ...
    def add_rule(self, rule: Rule) -> None: ...
    def create_fips(self, ports: list[int]) -> None: ...
    def prepare_fips(self, ports: list[int]) -> None: ...
    def associate_fip(self, k: int) -> None: ...
    def guard_fip(self, k: int) -> None: ...
    def drop_guard_fip(self, k: int) -> None: ...
    def fips_active(self) -> int | None: ...
    def fip_active(self, k: int) -> bool: ...
    def is_installed(self, iface_id: str) -> bool: ...
    def installed_count(self) -> int: ...
    def describe(self) -> dict[str, int]: ...
    def rss(self) -> dict[str, int]: ...
    def stop(self) -> None: ...


class OvnSystem:
    name = "OVN"

    def __init__(self, base: Path, tag: str, plan: Plan) -> None:
        self.sandbox = OvnSandbox(base / "ovn", tag)
        self.plan = plan
        try:
            self.sandbox.start()
        except BaseException:
            self.sandbox.stop()
            raise
        assert self.sandbox.ovs is not None
        self.ovs = self.sandbox.ovs
        self.topo = OvnTopology(self.sandbox, plan)
        # bind the facade's methods
        self.build_infra = self.topo.build_infra
        self.create_ports = self.topo.create_ports
        self.delete_ports = self.topo.delete_ports
        self.add_rule = self.topo.add_rule
        self.create_fips = self.topo.create_fips
        self.prepare_fips = self.topo.prepare_fips
        self.associate_fip = self.topo.associate_fip
        self.fips_active = self.topo.fips_active
        self.guard_fip = self.topo.guard_fip
        self.drop_guard_fip = self.topo.drop_guard_fip
        self.fip_active = self.topo.fip_active
        self.is_installed = self.topo.is_installed
        self.installed_count = self.topo.installed_count
        self.describe = self.topo.describe

    def rss(self) -> dict[str, int]:
        return self.sandbox.rss()

    def notes(self) -> list[str]:
        n = self.sandbox.reconnects()
        return [f"ovn-controller OpenFlow reconnects: {n}"] if n > 0 else []

    def stop(self) -> None:
        self.sandbox.stop()


class WyvernSystem:
    name = "Wyvern"

    def __init__(self, base: Path, tag: str, plan: Plan) -> None:
        self.plan = plan
        self.chassis = f"wyv-{tag}"
        self.agent: Proc | None = None
        self.api = None
        self.ovs = OvsInstance.start(base / "wovs", f"wvb-wyv-{tag}", enable_dummy=True)
        try:
            # The same OVS settings as the OVN chassis (harmless for our installer).
            self.ovs.vsctl("set", "Open_vSwitch", ".", "other_config:bundle-idle-timeout=3600")
            self.ovs.ensure_bridge("br-int")
            run_dir = base / "wyvern"
            quotas = {
                f"WYVERN_QUOTAS__{q.upper()}": "-1"
                for q in ("network", "subnet", "port", "router", "floatingip", "security_group")
            }
            quotas["WYVERN_QUOTAS__SECURITY_GROUP_RULE"] = "-1"
            # Bulk POSTs of 1,000 full port bodies (~350 kB) exceed Neutron's 112 KiB body
            # limit: raised here so results stay comparable with earlier runs.
            quotas["WYVERN_API_MAX_BODY_SIZE"] = str(4 * 1024 * 1024)
            self.api = start_api(run_dir, env=quotas)
            agent_env = {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": "sqlite",
                "WYVERN_OVS_MODE": "attach",
                "WYVERN_OVS_RUN_DIR": str(self.ovs.run_dir),
                "WYVERN_OVS_NETNS": self.ovs.netns or "",
                "WYVERN_CHASSIS_NAME": self.chassis,
            }
            if plan.floating_ips:
                # The chassis maps the external physnet (the agent creates the bridge and
                # its patch) and is the gateway chassis, as the OVN chassis is.
                agent_env["WYVERN_BRIDGE_MAPPINGS"] = json.dumps({PHYSNET: EXT_BRIDGE})
                agent_env["WYVERN_GATEWAY_PRIORITY"] = "1"
            env = process_env(agent_env)
            self.agent = spawn(
                [*wyvern_command(), "agent"], run_dir / "agent.out", env, "wyvern agent"
            )
            self.http = requests.Session()
            self.http.trust_env = False  # loopback: never through a proxy
            self.base = self.api.url + "v2.0"
            wait_until(self._agent_alive, 60, 0.1, "wyvern agent registers")
        except BaseException:
            self.stop()
            raise
        self.net_ids: list[str] = []
        self.subnet_ids: list[str] = []
        self.sg_id: str | None = None
        self.port_ids: dict[int, str] = {}
        self.ext_id: str | None = None
        self.ext_subnet_id: str | None = None
        self.fip_ids: dict[int, str] = {}

    # -- HTTP -----------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        resp = self.http.request(method, f"{self.base}/{path}", json=body, timeout=600)
        if resp.status_code != ok:
            raise Aborted(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def _agent_alive(self) -> bool:
        if self.agent is None or not self.agent.alive():
            raise Aborted(f"wyvern agent exited:\n{self.agent.output() if self.agent else ''}")
        return any(a["alive"] for a in self.call("GET", "agents")["agents"])

    # -- topology ---------------------------------------------------------------------------
    def build_infra(self) -> None:
        plan = self.plan
        nets = self.call(
            "POST",
            "networks",
            {"networks": [{"name": f"net{s}"} for s in range(plan.networks)]},
            201,
        )["networks"]
        self.net_ids = [n["id"] for n in nets]
        subnets = self.call(
            "POST",
            "subnets",
            {
                "subnets": [
                    {
                        "network_id": self.net_ids[s],
                        "cidr": cidr(s),
                        "ip_version": 4,
                        "gateway_ip": gateway(s),
                        "enable_dhcp": True,
                    }
                    for s in range(plan.networks)
                ]
            },
            201,
        )["subnets"]
        self.subnet_ids = [s["id"] for s in subnets]
        routers: dict[int, str] = {}
        for s in range(plan.networks):
            r = plan.router_of(s)
            if r is None:
                continue
            if r not in routers:
                routers[r] = self.call("POST", "routers", {"router": {"name": f"r{r}"}}, 201)[
                    "router"
                ]["id"]
            self.call(
                "PUT",
                f"routers/{routers[r]}/add_router_interface",
                {"subnet_id": self.subnet_ids[s]},
            )
        if plan.floating_ips:
            self.build_gateway(routers[0])
        if plan.security_group:
            sg = self.call("POST", "security-groups", {"security_group": {"name": SG_NAME}}, 201)
            self.sg_id = sg["security_group"]["id"]
            have = {
                (r["direction"], r["ethertype"])
                for r in sg["security_group"]["security_group_rules"]
            }
            for rule in SG_RULES:
                if (
                    rule.protocol is None
                    and not rule.remote_group_self
                    and (rule.direction, rule.ethertype) in have
                ):
                    continue  # the automatic egress rules of a new group
                self.add_rule(rule)

    def build_gateway(self, router_id: str) -> None:
        """The external network (flat on the mapped physnet) and the router's gateway on it,
        at the address the OVN side gets (SNAT of every internal subnet: the default)."""
        net = {
            "name": "ext",
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": PHYSNET,
        }
        self.ext_id = self.call("POST", "networks", {"network": net}, 201)["network"]["id"]
        sub = {
            "network_id": self.ext_id,
            "cidr": EXT_CIDR,
            "ip_version": 4,
            "gateway_ip": EXT_UPSTREAM,
            "enable_dhcp": False,
        }
        self.ext_subnet_id = self.call("POST", "subnets", {"subnet": sub}, 201)["subnet"]["id"]
        info = {
            "network_id": self.ext_id,
            "external_fixed_ips": [{"subnet_id": self.ext_subnet_id, "ip_address": EXT_GATEWAY}],
        }
        self.call("PUT", f"routers/{router_id}", {"router": {"external_gateway_info": info}})

    def fip_body(self, k: int, associated: bool = True) -> dict[str, Any]:
        body = {"floating_network_id": self.ext_id, "floating_ip_address": fip_ip(k)}
        if associated:
            body["port_id"] = self.port_ids[k]
        return body

    def _post_fips(self, ports: list[int], associated: bool) -> None:
        """Bulk POSTs of 1,000 (the API creates a floating IP and its port per body)."""
        for i in range(0, len(ports), 1000):
            chunk = ports[i : i + 1000]
            body = {"floatingips": [self.fip_body(k, associated) for k in chunk]}
            made = self.call("POST", "floatingips", body, 201)["floatingips"]
            for k, fip in zip(chunk, made, strict=True):
                self.fip_ids[k] = fip["id"]

    def create_fips(self, ports: list[int]) -> None:
        self._post_fips(ports, associated=True)

    def prepare_fips(self, ports: list[int]) -> None:
        """Unassociated floating IPs for PORTS, so that a sample times the association."""
        self._post_fips(ports, associated=False)

    def associate_fip(self, k: int) -> None:
        body = {"floatingip": {"port_id": self.port_ids[k]}}
        self.call("PUT", f"floatingips/{self.fip_ids[k]}", body)

    def guard_fip(self, k: int) -> None:
        body = {"floating_network_id": self.ext_id, "floating_ip_address": GUARD_FIP}
        body["port_id"] = self.port_ids[k]
        fip = self.call("POST", "floatingips", {"floatingip": body}, 201)["floatingip"]
        self.fip_ids[k] = fip["id"]

    def drop_guard_fip(self, k: int) -> None:
        self.call("DELETE", f"floatingips/{self.fip_ids.pop(k)}", ok=204)

    def fips_active(self) -> int | None:
        return len(self.call("GET", "floatingips?status=ACTIVE&fields=id")["floatingips"])

    def fip_active(self, k: int) -> bool:
        fip = self.call("GET", f"floatingips/{self.fip_ids[k]}?fields=status")["floatingip"]
        return bool(fip["status"] == "ACTIVE")

    def rule_body(self, rule: Rule) -> dict[str, Any]:
        body: dict[str, Any] = {
            "security_group_id": self.sg_id,
            "direction": rule.direction,
            "ethertype": rule.ethertype,
        }
        if rule.protocol:
            body["protocol"] = rule.protocol
        if rule.port_min is not None:
            body["port_range_min"] = rule.port_min
            body["port_range_max"] = rule.port_max
        if rule.remote_ip_prefix:
            body["remote_ip_prefix"] = rule.remote_ip_prefix
        if rule.remote_group_self:
            body["remote_group_id"] = self.sg_id
        return body

    def add_rule(self, rule: Rule) -> None:
        self.call(
            "POST", "security-group-rules", {"security_group_rule": self.rule_body(rule)}, 201
        )

    def port_body(self, k: int) -> dict[str, Any]:
        s = self.plan.network_of(k)
        secured = self.plan.security_group
        return {
            "network_id": self.net_ids[s],
            "name": f"p{k}",
            "mac_address": port_mac(k),
            "fixed_ips": [{"subnet_id": self.subnet_ids[s], "ip_address": port_ip(self.plan, k)}],
            "device_owner": "compute:nova",
            "device_id": f"vm-{k}",
            "binding:host_id": self.chassis,
            "port_security_enabled": secured,
            "security_groups": [self.sg_id] if secured else [],
        }

    def create_ports(self, ports: list[int]) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(ports), 1000):
            chunk = ports[i : i + 1000]
            if len(chunk) == 1:
                made = [self.call("POST", "ports", {"port": self.port_body(chunk[0])}, 201)["port"]]
            else:
                body = {"ports": [self.port_body(k) for k in chunk]}
                made = self.call("POST", "ports", body, 201)["ports"]
            for k, port in zip(chunk, made, strict=True):
                self.port_ids[k] = port["id"]
                ids.append(port["id"])
        return ids

    def delete_ports(self, ports: list[int]) -> None:
        for k in ports:
            self.call("DELETE", f"ports/{self.port_ids.pop(k)}", ok=204)

    def is_installed(self, iface_id: str) -> bool:
        port = self.call("GET", f"ports/{iface_id}?fields=status")["port"]
        return bool(port["status"] == "ACTIVE")

    def installed_count(self) -> int:
        q = "ports?device_owner=compute:nova&status=ACTIVE&fields=id"
        return len(self.call("GET", q)["ports"])

    def describe(self) -> dict[str, int]:
        ports = self.call("GET", "ports?fields=device_owner&fields=security_groups")["ports"]
        owners = Counter(p["device_owner"] for p in ports)
        rules = 0
        if self.sg_id:
            sg = self.call("GET", f"security-groups/{self.sg_id}")["security_group"]
            rules = len(sg["security_group_rules"])
        routers = self.call("GET", "routers?fields=external_gateway_info")["routers"]
        fips = self.call("GET", "floatingips?fields=port_id")["floatingips"]
        return {
            "networks": len(self.call("GET", "networks?fields=id")["networks"]),
            "vm_ports": owners["compute:nova"],
            "routers": len(routers),
            "router_interfaces": owners["network:router_interface"],
            "sg_rules": rules,
            "ports_in_sg": sum(
                1
                for p in ports
                if p["device_owner"] == "compute:nova" and self.sg_id in p["security_groups"]
            ),
            "router_gateways": sum(1 for r in routers if r["external_gateway_info"]),
            "floating_ips": sum(1 for f in fips if f["port_id"]),
        }

    def pids(self) -> dict[str, int | None]:
        return {
            "agent": self.agent.pid if self.agent else None,
            "api": self.api.proc.pid if self.api else None,
        }

    def rss(self) -> dict[str, int]:
        pids = self.pids()
        return {
            "controller": tree_rss_kib(pids["agent"]),
            "nbsb": tree_rss_kib(pids["api"]),
            "vswitchd": rss_kib(self.ovs.pid("ovs-vswitchd")),
        }

    def notes(self) -> list[str]:
        return []

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        self.ovs.stop()


# ---------------------------------------------------------------- measurements


def ping_guard(system: Any, plan: Plan, tag: str) -> None:
    """Two namespaces on networks 0 and 1 ping each other through the router, or abort."""
    a, b = guard_ports(plan)
    ids = system.create_ports([a, b])
    plugged: list[tuple[str, str]] = []
    try:
        for k, iface in zip((a, b), ids, strict=True):
            ns = f"wvb-{tag}-{'ab'[len(plugged)]}"
            vif.plug(
                system.ovs,
                iface,
                port_mac(k),
                ns,
                ip_cidr=f"{port_ip(plan, k)}/16",
                gateway=gateway(plan.network_of(k)),
            )
            plugged.append((iface, ns))
        for iface in ids:
            wait_until(lambda i=iface: system.is_installed(i), 60, 0.05, f"{iface} installed")
        ns_a = plugged[0][1]
        target = port_ip(plan, b)
        guard_ping(system, ns_a, target, f"routed ping {port_ip(plan, a)} -> {target}")
        if plan.floating_ips:
            north_south_guard(system, plan, tag, a, plugged[0][1])
    finally:
        for iface, _ns in plugged:
            with contextlib.suppress(Exception):
                vif.unplug(system.ovs, iface, delete_netns=True)
        system.delete_ports([a, b])


def guard_ping(system: Any, ns: str, target: str, what: str) -> None:
    """Ping TARGET from NS (five tries of two pings), or abort the run naming WHAT."""
    for _ in range(5):
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", target],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            print(f"    {system.name}: {what} ok")
            return
    raise GuardFailed(f"{system.name}: {what} guard FAILED:\n{proc.stdout + proc.stderr}")


def north_south_guard(system: Any, plan: Plan, tag: str, k: int, vm_ns: str) -> None:
    """A host on the external network (the upstream router's address, on br-ex) pings
    port K's floating IP and the VM pings it back out, or abort: both systems' gateway and
    floating IP setups must carry packets before any figure counts."""
    outside, nic = f"wvb-{tag}-o", f"wvbo{tag}"
    ovs_ns = system.ovs.netns
    subprocess.run(["ip", "netns", "add", outside], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", "eth0", "netns", outside, "type", "veth",
             "peer", "name", nic, "netns", ovs_ns],
            check=True,
        )  # fmt: skip
        for cmd in (
            ["ip", "-n", ovs_ns, "link", "set", nic, "up"],
            ["ip", "-n", outside, "link", "set", "lo", "up"],
            ["ip", "-n", outside, "link", "set", "eth0", "up"],
            ["ip", "-n", outside, "addr", "add", f"{EXT_UPSTREAM}/16", "dev", "eth0"],
            # userspace datapath + veth: TX checksum offload leaves checksums unfilled
            ["ip", "netns", "exec", outside, "ethtool", "-K", "eth0", "tx", "off"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        system.ovs.vsctl("add-port", EXT_BRIDGE, nic)
        system.guard_fip(k)
        want = {(GUARD_FIP, port_ip(plan, k))}
        wait_until(lambda: not missing_dnats(system.ovs, want), 60, 0.05, "guard DNAT flow")
        probes = ((outside, GUARD_FIP, "in"), (vm_ns, EXT_UPSTREAM, "out"))
        for ns, target, way in probes:
            guard_ping(system, ns, target, f"floating IP ping {way} ({ns} -> {target})")
        system.drop_guard_fip(k)
    finally:
        with contextlib.suppress(Exception):
            system.ovs.vsctl("--if-exists", "del-port", EXT_BRIDGE, nic)
        subprocess.run(["ip", "-n", ovs_ns, "link", "del", nic], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", outside], check=False)


@contextlib.contextmanager
def profiling(pids: dict[str, int | None], out_dir: Path | None) -> Iterator[None]:
    """py-spy record of each process while the block runs (raw collapsed stacks)."""
    procs: list[subprocess.Popen[bytes]] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            if pid is None:
                continue
            cmd = [
                str(Path(sys.executable).with_name("py-spy")),
                "record", "--nonblocking", "-r", "50", "-f", "raw",
                "-o", str(out_dir / f"{name}.txt"), "-p", str(pid),
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


IDLE = ("select", "wait", "sleep", "accept", "recv", "poll")


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py:123)`."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit('/', 1)[-1]}" if where else func


def top_frames(path: Path, n: int = 12) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) of the N busiest functions, idle waits left out."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        leaf = frames[-1].split(" (")[0].rsplit(".", 1)[-1]
        if any(leaf.endswith(word) for word in IDLE):
            continue
        c = int(count)
        total += c
        own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    if not total:
        return []
    return [(f, 100 * c / total, 100 * incl[f] / total) for f, c in own.most_common(n)]


def measure(system: Any, plan: Plan, tag: str, profile_dir: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bulk = list(range(plan.ports))
    extras = [extra_port(plan, i) for i in range(SINGLE_ADDS)]
    t = time.monotonic()
    add_vifs(system.ovs, bulk + extras)
    out["vif_setup_s"] = time.monotonic() - t
    t = time.monotonic()
    system.build_infra()
    wait_flows_stable(system.ovs)
    out["infra_s"] = time.monotonic() - t
    if plan.ping_guard:
        ping_guard(system, plan, tag)
        wait_flows_stable(system.ovs)

    pids = system.pids() if hasattr(system, "pids") else {}
    with profiling(pids, profile_dir and profile_dir / "bulk"):
        t0 = time.monotonic()
        ids = system.create_ports(bulk)
        if plan.floating_ips:
            system.create_fips(bulk)
        out["nb_create_s"] = time.monotonic() - t0
        bind_vifs(system.ovs, list(zip(bulk, ids, strict=True)))
        wait_until(
            lambda: system.installed_count() >= plan.ports,
            TIMEOUT,
            BULK_POLL,
            f"{system.name}: all {plan.ports} ports installed",
        )
        out["ports_signal_s"] = time.monotonic() - t0
        if plan.floating_ips and system.fips_active() is not None:
            wait_until(
                lambda: (system.fips_active() or 0) >= plan.ports,
                TIMEOUT,
                BULK_POLL,
                f"{system.name}: all {plan.ports} floating IPs ACTIVE",
            )
        signalled = time.monotonic()
        out["signal_s"] = signalled - t0
        # A controller can report ports up before all their flows are in (OVN 23.03 does
        # with many ports per switch: a second, long handler pass installs the rest), so
        # installed = the latest of the signal, every port's MAC having its L2 lookup flow
        # (a pause longer than the settle window once hid OVN's second pass), and the
        # flow count's last change, once the count held still for a quarter of the time
        # so far (at least 5 s).
        flows_at_signal = flow_count(system.ovs)
        macs = {port_mac(k) for k in bulk}
        wait_until(
            lambda: not missing_macs(system.ovs, macs),
            TIMEOUT,
            BULK_POLL,
            f"{system.name}: an L2 flow for every port's MAC",
        )
        every_mac = time.monotonic()
        if plan.floating_ips:
            # Every floating IP's DNAT flow (OVN has no signal for NAT rows at all).
            dnats = {(fip_ip(k), port_ip(plan, k)) for k in bulk}
            wait_until(
                lambda: not missing_dnats(system.ovs, dnats),
                TIMEOUT,
                BULK_POLL,
                f"{system.name}: a DNAT flow for every floating IP",
            )
            every_mac = time.monotonic()
        flows, changed = settle(system.ovs, max(5.0, 0.25 * (every_mac - t0)))
        out["installed_s"] = max(signalled, every_mac, changed) - t0
        out["flows_at_signal"] = flows_at_signal
    if flows != flows_at_signal:
        print(
            f"    {system.name}: flows went {flows_at_signal} -> {flows} after all ports were "
            f"reported installed (at {out['signal_s']:.2f} s; last change at "
            f"{out['installed_s']:.2f} s)"
        )
    found = system.describe()
    diff = differences(plan, found)
    if diff:
        raise Aborted(f"{system.name}: topology differs from the plan: {diff}")
    out["description"] = found
    out["flows"] = flows
    out["flows_per_port"] = flows / plan.ports
    out["rss_kib"] = system.rss()

    lat = []
    created = []
    budget = time.monotonic() + SAMPLE_BUDGET
    with profiling(pids, profile_dir and profile_dir / "adds"):
        for i, k in enumerate(extras):
            if lat and time.monotonic() > budget:
                print(f"    {system.name}: {len(lat)} single adds in the time budget")
                break
            t = time.monotonic()
            (iface,) = system.create_ports([k])
            created.append(time.monotonic() - t)
            bind_vifs(system.ovs, [(k, iface)])
            wait_until(lambda f=iface: system.is_installed(f), 900, POLL, f"{iface} installed")
            lat.append(time.monotonic() - t)
            if i == 0:
                wait_flows_stable(system.ovs, quiet=0.5)
    out["port_add_s"] = lat
    out["port_add_median_s"] = statistics.median(lat)
    out["port_add_nb_create_median_s"] = statistics.median(created)

    if plan.floating_ips:
        out.update(fip_adds(system, plan, extras[: min(FIP_ADDS, len(lat))]))

    if plan.security_group:
        wait_flows_stable(system.ovs, quiet=0.5)
        lat = []
        budget = time.monotonic() + SAMPLE_BUDGET
        for i in range(RULE_ADDS):
            if lat and time.monotonic() > budget:
                break
            rule = probe_rule(i)
            t = time.monotonic()
            system.add_rule(rule)
            wait_until(
                lambda p=rule.port_min: flows_matching(system.ovs, f"tcp,tp_dst={p}") > 0,
                900,
                POLL,
                f"{system.name}: rule tcp/{rule.port_min} installed",
            )
            lat.append(time.monotonic() - t)
            wait_flows_stable(system.ovs, quiet=0.5)
        out["rule_add_s"] = lat
        out["rule_add_median_s"] = statistics.median(lat)
    out["notes"] = system.notes()
    return out


def fip_adds(system: Any, plan: Plan, ports: list[int]) -> dict[str, Any]:
    """One more floating IP association -> installed, for each of PORTS (single-added
    ports without one): Wyvern PUTs port_id on a floating IP created unassociated before
    the timing, OVN inserts the NAT row (Neutron's association); installed = the floating
    IP's DNAT flow is on br-int, and for Wyvern also its status ACTIVE."""
    system.prepare_fips(ports)
    wait_flows_stable(system.ovs, quiet=0.5)
    lat: list[float] = []
    created: list[float] = []  # (the northbound call alone)
    flow_lat: list[float] = []  # (when the DNAT flow was first seen: a diagnostic)
    budget = time.monotonic() + SAMPLE_BUDGET
    for k in ports:
        if lat and time.monotonic() > budget:
            break
        want = {(fip_ip(k), port_ip(plan, k))}
        seen: list[float] = []

        def installed(
            k: int = k, want: set[tuple[str, str]] = want, seen: list[float] = seen
        ) -> bool:
            if not seen and not missing_dnats(system.ovs, want):
                seen.append(time.monotonic())
            return bool(seen) and bool(system.fip_active(k))

        t = time.monotonic()
        system.associate_fip(k)
        created.append(time.monotonic() - t)
        wait_until(installed, 900, POLL, f"{system.name}: floating IP {fip_ip(k)} installed")
        lat.append(time.monotonic() - t)
        flow_lat.append(seen[0] - t)
        wait_flows_stable(system.ovs, quiet=0.5)
    return {
        "fip_add_s": lat,
        "fip_add_median_s": statistics.median(lat),
        "fip_add_nb_median_s": statistics.median(created),
        "fip_add_flow_s": flow_lat,
        "fip_add_flow_median_s": statistics.median(flow_lat),
    }


def run_system(cls: Any, plan: Plan, scratch: Path, profile_dir: Path | None) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    base = Path(tempfile.mkdtemp(prefix=f"wvb-{tag}-", dir=scratch))
    print(f"  {cls.name}: starting (scratch {base})", flush=True)
    system = cls(base, tag, plan)
    try:
        result = measure(system, plan, tag, profile_dir)
    finally:
        system.stop()
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(base)], check=False)
    print(
        f"  {cls.name}: installed {plan.ports} ports in {result['installed_s']:.2f} s "
        f"(NB {result['nb_create_s']:.2f} s), {result['flows']} flows, "
        f"one port {result['port_add_median_s'] * 1000:.0f} ms",
        flush=True,
    )
    return result


def figures(key: str, ovn: dict[str, Any], wyv: dict[str, Any]) -> list[Figure]:
    """The table rows of one scenario (a system that did not finish shows "-")."""

    def row(what: str, unit: str, field: str, goal: float | None = None) -> Figure:
        return Figure(key, what, unit, ovn.get(field), wyv.get(field), goal)

    def mib(what: str, label: str, goal: float | None = None) -> Figure:
        def get(r: dict[str, Any]) -> float | None:
            return r["rss_kib"][what] / 1024 if "rss_kib" in r else None

        return Figure(key, label, "MiB", get(ovn), get(wyv), goal)

    rows = [
        row("time to installed (create -> all flows)", "s", "installed_s", 0.5),
        row("  of which northbound create", "s", "nb_create_s"),
        row("  own signal: all up / all ACTIVE", "s", "signal_s"),
        row("  of which all ports up / ACTIVE", "s", "ports_signal_s"),
        row("one more port -> installed (median)", "s", "port_add_median_s", 0.25),
        row("  of which northbound create", "s", "port_add_nb_create_median_s"),
    ]
    if "fip_add_median_s" in ovn or "fip_add_median_s" in wyv:
        rows.append(
            row("one more floating IP -> installed (median)", "s", "fip_add_median_s", 0.25)
        )
        rows.append(row("  of which northbound association", "s", "fip_add_nb_median_s"))
        rows.append(row("  its DNAT flow on br-int (median)", "s", "fip_add_flow_median_s"))
    if "rule_add_median_s" in ovn or "rule_add_median_s" in wyv:
        rows.append(row("one SG rule add -> installed (median)", "s", "rule_add_median_s"))
    rows += [
        row("OpenFlow flows on br-int", "count", "flows"),
        row("flows per port", "", "flows_per_port", 0.7),
        mib("controller", "controller RSS (ovn-controller | agent)", 0.8),  # P9
        mib("nbsb", "NB/SB RSS (2 ovsdb + northd | API)"),
        mib("vswitchd", "ovs-vswitchd RSS (same OVS)"),
    ]
    return rows


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="1,2,3,4", help="comma-separated: 1,2,3,4")
    parser.add_argument("--scale", type=float, default=1.0, help="port count factor (dev: 0.05)")
    parser.add_argument("--apt", action="store_true", help="apt-get install OVN if missing")
    parser.add_argument("--only", choices=("ovn", "wyvern"), help="run one system (debugging)")
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the wyvern agent and API during the bulk"
    )
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    if args.only != "wyvern":
        try:
            ovn_peer.ensure_installed(args.apt)
        except ovn_peer.OvnError as exc:
            print(f"vs_ovn: {exc}", file=sys.stderr)
            return 2

    # Ctrl-C and SIGTERM unwind through every finally (daemons stopped, netns removed).
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "vs_ovn",
        "git_revision": git_revision(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "ovn_version": _version("ovn-controller"),
        "ovs_version": _version("ovs-vswitchd"),
        "scale": args.scale,
        "loadavg_at_start": os.getloadavg(),
        "scenarios": {},
    }
    table: list[Figure] = []
    failed = False
    scratch = Path(tempfile.mkdtemp(prefix="wvb-", dir="/tmp"))
    try:
        for key in keys:
            plan = SCENARIOS[key].scaled(args.scale)
            print(f"scenario {plan.name} (scaled: {plan.ports} ports; expect {expected(plan)})")
            entry: dict[str, Any] = {"plan": plan.__dict__, "loadavg_before": os.getloadavg()}
            results["scenarios"][key] = entry
            systems: list[Any] = [OvnSystem, WyvernSystem]
            if args.only:
                systems = [OvnSystem] if args.only == "ovn" else [WyvernSystem]
            for cls in systems:
                prof = None
                if args.profile and cls is WyvernSystem:
                    prof = Path(args.profile) / f"scenario{key}"
                try:
                    entry[cls.name.lower()] = run_system(cls, plan, scratch, prof)
                except GuardFailed as exc:
                    failed = True
                    entry["aborted"] = str(exc)
                    print(f"  SCENARIO {key} ABORTED: {exc}", file=sys.stderr, flush=True)
                    break
                except Aborted as exc:  # the other system still runs; its side is shown
                    failed = True
                    entry[cls.name.lower()] = {"aborted": str(exc)}
                    print(f"  {cls.name} ABORTED: {exc}", file=sys.stderr, flush=True)
                if prof is not None:
                    entry["profile"] = {
                        f"{name} during {phase}": top_frames(prof / phase / f"{name}.txt")
                        for phase in ("bulk", "adds")
                        for name in ("agent", "api")
                    }
            if "aborted" not in entry and ("ovn" in entry or "wyvern" in entry):
                table += figures(key, entry.get("ovn", {}), entry.get("wyvern", {}))
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)

    results["seconds"] = time.monotonic() - started
    results["loadavg_at_end"] = os.getloadavg()
    results["table"] = [{**f.__dict__, "ratio": f.ratio, "verdict": f.verdict} for f in table]
    print()
    print(render_table(table))
    for key, entry in results["scenarios"].items():
        for name in ("aborted", "ovn", "wyvern"):
            why = entry.get(name)
            why = why.get("aborted") if isinstance(why, dict) else why
            if why:
                print(f"scenario {key}: {name if name != 'aborted' else 'scenario'} ABORTED: {why}")
    for key, entry in results["scenarios"].items():
        for name, frames in entry.get("profile", {}).items():
            print(f"\npy-spy, scenario {key}, wyvern {name} (self %, inclusive %):")
            for fn, own, inc in frames:
                print(f"  {own:5.1f} {inc:5.1f}  {fn}")
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"vs_ovn-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    load = results["loadavg_at_start"], results["loadavg_at_end"]
    print(
        f"\n{path.relative_to(ROOT)} ({results['seconds']:.0f} s; {os.cpu_count()} CPUs; "
        f"load average {load[0][0]:.1f} at start, {load[1][0]:.1f} at end; "
        f"{results['ovn_version']}, {results['ovs_version']}, wyvern {results['git_revision']})"
    )
    return 1 if failed else 0


def _version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
