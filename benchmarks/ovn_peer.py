"""A private OVN 23.03 (Debian's ovn-central + ovn-host) for side-by-side benchmarks.

NB and SB ovsdb-servers, ovn-northd and ovn-controller run under one scratch dir, and
the chassis's OVS is the same kind of private userspace OVS the Wyvern side gets
(wyvern.southbound.ovs.OvsInstance: --disable-system, datapath_type=netdev, its own
network namespace), so both systems drive identical switches. No system service,
ovn-ctl or ovs-ctl is used; every daemon has explicit pidfile/log/socket paths and is
stopped by PID (its command line must name our dir).

Facts learnt from the reference harness (peers/ovn in the team's shared notes):
- ovn-controller 23.03 has no --unixctl option; its socket is $OVS_RUNDIR/ovn-controller.
  <pid>.ctl, and it finds br-int.mgmt through OVS_RUNDIR, so it runs with the OVS run dir.
- OVS expires an OpenFlow bundle idle for 10 s; ovn-controller can compute for longer
  with a half-sent bundle at thousands of ports and then reinstalls everything, so the
  bundle idle timeout is raised (other_config:bundle-idle-timeout).
- vswitchd probes br-int.mgmt every 60 s (not configurable): a longer ovn-controller
  stall causes a reconnect and a full reinstall after which up=true can be reported
  early; callers therefore also check that the flow count is stable.
- ovn-nbctl and ovs-vsctl are O(n^2) on big transactions (seconds of client CPU at 1,000
  rows), so bulk rows are written with a raw OVSDB JSON-RPC `transact` (OvsdbClient).
- ovn-sbctl has no --no-wait; the remote/openflow probes are disabled (interval 0).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.topology import (
    EXT_BRIDGE,
    EXT_GATEWAY,
    EXT_UPSTREAM,
    GUARD_FIP,
    PHYSNET,
    SG_NAME,
    SG_RULES,
    Plan,
    Rule,
    cidr,
    fip_ip,
    fip_mac,
    gateway,
    gateway_mac,
    port_ip,
    port_mac,
    router_mac,
)
from wyvern.southbound.ovs import OvsInstance

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
OVN_DAEMONS = ("ovn-controller", "ovn-northd", "ovnsb_db", "ovnnb_db")  # stop order
APT_HINT = "apt-get install -y ovn-central ovn-host"


class OvnError(RuntimeError):
    pass


def missing() -> str | None:
    """Why this machine cannot run the OVN peer (None if it can)."""
    for tool in ("ovn-northd", "ovn-controller", "ovn-nbctl", "ovsdb-server", "ovs-vswitchd"):
        if shutil.which(tool) is None:
            return f"{tool} not found (install the peer: {APT_HINT})"
    if not NB_SCHEMA.exists() or not SB_SCHEMA.exists():
        return f"OVN schemas missing under /usr/share/ovn ({APT_HINT})"
    if os.geteuid() != 0:
        return "needs root (network namespaces for the private vswitchd)"
    return None


def ensure_installed(allow_apt: bool) -> None:
    """Install ovn-central/ovn-host with apt when missing and allowed; raise otherwise."""
    if missing() is None:
        return
    if allow_apt and shutil.which("apt-get") and os.geteuid() == 0:
        print(f"OVN not installed: running `{APT_HINT}`", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "ovn-central", "ovn-host"], env=env, check=False
        )
    reason = missing()
    if reason:
        raise OvnError(reason)


class OvsdbClient:
    """Minimal OVSDB JSON-RPC client (RFC 7047) over a unix socket: transact only.

    The CLIs are quadratic on big transactions; one raw transact of thousands of rows is
    a fraction of a second. Echo requests from the server are answered.
    """

    def __init__(self, path: Path | str, timeout: float = 600.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = ""
        self.dec = json.JSONDecoder()
        self.next_id = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def call(self, method: str, params: list[Any]) -> Any:
        self.next_id += 1
        rid = self.next_id
        self.sock.sendall(json.dumps({"method": method, "params": params, "id": rid}).encode())
        while True:
            while self.buf:
                try:
                    msg, end = self.dec.raw_decode(self.buf)
                except ValueError:
                    break
                self.buf = self.buf[end:].lstrip()
                if msg.get("method") == "echo":
                    reply = {"result": msg["params"], "error": None, "id": msg["id"]}
                    self.sock.sendall(json.dumps(reply).encode())
                elif msg.get("id") == rid:
                    if msg.get("error"):
                        raise OvnError(f"{method}: {msg['error']}")
                    return msg.get("result")
            data = self.sock.recv(1 << 20)
            if not data:
                raise OvnError("ovsdb connection closed")
            self.buf += data.decode()

    def transact(self, db: str, ops: list[dict[str, Any]]) -> list[Any]:
        result: list[Any] = self.call("transact", [db, *ops])
        errors = [r for r in result if isinstance(r, dict) and "error" in r]
        if errors or len(result) < len(ops):
            raise OvnError(f"transact on {db} failed: {errors[:3]}")
        return result

    def select(
        self, db: str, table: str, columns: list[str], where: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        op = {"op": "select", "table": table, "where": where or [], "columns": columns}
        rows: list[dict[str, Any]] = self.transact(db, [op])[0]["rows"]
        return rows


def ovsdb_map(pairs: dict[str, str]) -> list[Any]:
    return ["map", [[k, v] for k, v in pairs.items()]]


def rss_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class OvnSandbox:
    """NB/SB databases, northd, one chassis (OVS + ovn-controller), all under BASE."""

    def __init__(self, base: Path, tag: str) -> None:
        self.base = base.resolve()
        self.tag = tag
        self.run = self.base / "run"
        self.ovs: OvsInstance | None = None
        self.nb: OvsdbClient | None = None
        self.chassis = f"ovn-{tag}"

    # -- paths and environment ------------------------------------------------------------
    @property
    def nb_sock(self) -> Path:
        return self.run / "ovnnb_db.sock"

    @property
    def sb_sock(self) -> Path:
        return self.run / "ovnsb_db.sock"

    def env(self) -> dict[str, str]:
        """What the OVN tools and daemons need to find everything in our dirs only."""
        env = dict(os.environ)
        ovs_run = str(self.ovs.run_dir) if self.ovs else str(self.run)
        env.update(
            OVS_RUNDIR=ovs_run,
            OVS_LOGDIR=str(self.run),
            OVS_DBDIR=str(self.run),
            OVS_SYSCONFDIR=str(self.run),
            OVN_RUNDIR=str(self.run),
            OVN_LOGDIR=str(self.run),
            OVN_DBDIR=str(self.run),
            OVN_SYSCONFDIR=str(self.run),
            OVN_NB_DB=f"unix:{self.nb_sock}",
            OVN_SB_DB=f"unix:{self.sb_sock}",
        )
        return env

    def cmd(self, *args: str, timeout: float = 600.0) -> str:
        proc = subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise OvnError(f"{' '.join(args[:4])}: rc={proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def nbctl(self, *args: str, timeout: float = 600.0) -> str:
        return self.cmd("ovn-nbctl", f"--timeout={int(timeout)}", *args, timeout=timeout + 5)

    def pid(self, daemon: str) -> int | None:
        """PID of our DAEMON if its pidfile names a live process whose cmdline names our dir."""
        try:
            pid = int((self.run / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if str(self.run) in _cmdline(pid) else None

    # -- lifecycle ------------------------------------------------------------------------
    def _daemon(self, name: str, args: list[str], netns: str | None = None) -> None:
        full = [
            *args,
            "--detach",
            "--no-chdir",
            f"--pidfile={self.run / (name + '.pid')}",
            f"--log-file={self.run / (name + '.log')}",
            "-vconsole:off",
        ]
        if netns:
            full = ["ip", "netns", "exec", netns, *full]
        self.cmd(*full, timeout=60)

    def start(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        for name, schema in (("ovnnb_db", NB_SCHEMA), ("ovnsb_db", SB_SCHEMA)):
            db = self.run / f"{name}.db"
            self.cmd("ovsdb-tool", "create", str(db), str(schema))
            self._daemon(
                name,
                [
                    "ovsdb-server",
                    str(db),
                    f"--unixctl={self.run / (name + '.ctl')}",
                    f"--remote=punix:{self.run / (name + '.sock')}",
                ],
            )
        self.cmd("ovn-nbctl", "--no-wait", "init")
        self.cmd("ovn-sbctl", "init")
        self._daemon(
            "ovn-northd",
            [
                "ovn-northd",
                f"--unixctl={self.run / 'ovn-northd.ctl'}",
                f"--ovnnb-db=unix:{self.nb_sock}",
                f"--ovnsb-db=unix:{self.sb_sock}",
            ],
        )
        # The chassis: the same private userspace OVS as the Wyvern side gets.
        self.ovs = OvsInstance.start(self.base / "ovs", f"wvb-ovn-{self.tag}", enable_dummy=True)
        self.ovs.vsctl("set", "Open_vSwitch", ".", "other_config:bundle-idle-timeout=3600")
        self.ovs.vsctl(
            "--may-exist", "add-br", "br-int", "--",
            "set", "Bridge", "br-int", "datapath_type=netdev", "fail_mode=secure",
            "other_config:disable-in-band=true",
        )  # fmt: skip
        self.ovs.vsctl(
            "set", "Open_vSwitch", ".",
            f"external_ids:system-id={self.chassis}",
            f"external_ids:hostname={self.chassis}",
            f"external_ids:ovn-remote=unix:{self.sb_sock}",
            "external_ids:ovn-encap-type=geneve",
            "external_ids:ovn-encap-ip=127.0.0.1",
            "external_ids:ovn-bridge=br-int",
            "external_ids:ovn-bridge-datapath-type=netdev",
            "external_ids:ovn-remote-probe-interval=0",
            "external_ids:ovn-openflow-probe-interval=0",
        )  # fmt: skip
        self._daemon("ovn-controller", ["ovn-controller", f"unix:{self.ovs.db_sock}"])
        deadline = time.monotonic() + 30
        while not self.cmd("ovn-sbctl", "--bare", "--columns=name", "list", "Chassis").strip():
            if time.monotonic() > deadline:
                raise OvnError(f"ovn-controller did not register:\n{self.log_tail()}")
            time.sleep(0.1)
        self.nbctl("--wait=hv", "sync", timeout=60)
        self.nb = OvsdbClient(self.nb_sock)

    def map_physnet(self, physnet: str, bridge: str) -> None:
        """The chassis maps PHYSNET to BRIDGE (ovn-controller patches it to br-int) and may
        host gateways (ovn-cms-options, what Neutron's scheduler looks for)."""
        assert self.ovs is not None
        self.ovs.vsctl(
            "--may-exist", "add-br", bridge, "--",
            "set", "Bridge", bridge, "datapath_type=netdev",
        )  # fmt: skip
        self.ovs.vsctl(
            "set", "Open_vSwitch", ".",
            f"external_ids:ovn-bridge-mappings={physnet}:{bridge}",
            "external_ids:ovn-cms-options=enable-chassis-as-gw",
        )  # fmt: skip

    def log_tail(self, daemon: str = "ovn-controller", lines: int = 10) -> str:
        try:
            text = (self.run / f"{daemon}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Every daemon we started, by PID (SIGTERM, then SIGKILL); then the OVS. Idempotent."""
        if self.nb is not None:
            self.nb.close()
            self.nb = None
        for daemon in OVN_DAEMONS:
            pid = self.pid(daemon)
            if pid is None:
                continue
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while _cmdline(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _cmdline(pid):
                    break
        if self.ovs is not None:
            self.ovs.stop()
            self.ovs = None

    # -- figures --------------------------------------------------------------------------
    def rss(self) -> dict[str, int]:
        """KiB per process: the controller, and the NB/SB side (both ovsdb-servers + northd)."""
        nbsb = sum(rss_kib(self.pid(d)) for d in ("ovnnb_db", "ovnsb_db", "ovn-northd"))
        vswitchd = rss_kib(self.ovs.pid("ovs-vswitchd")) if self.ovs else 0
        return {
            "controller": rss_kib(self.pid("ovn-controller")),
            "nbsb": nbsb,
            "vswitchd": vswitchd,
        }

    def controller_pid(self) -> int | None:
        return self.pid("ovn-controller")

    def reconnects(self) -> int:
        """OpenFlow reconnects of ovn-controller so far (each forces a full recompute and
        flow reinstall; the 60 s probe of vswitchd on br-int.mgmt causes them)."""
        try:
            text = (self.run / "ovn-controller.log").read_text(errors="replace")
        except OSError:
            return 0
        return max(0, text.count("OpenFlow connection reconnected") - 1)  # - the first

    # -- NB writes ------------------------------------------------------------------------
    def transact(self, ops: list[dict[str, Any]]) -> list[Any]:
        assert self.nb is not None
        return self.nb.transact("OVN_Northbound", ops)

    def lsp_up(self, names: set[str] | None = None) -> int:
        """How many (non-router) logical switch ports ovn-controller reports up=true."""
        assert self.nb is not None
        where = [["name", "==", next(iter(names))]] if names and len(names) == 1 else []
        rows = self.nb.select(
            "OVN_Northbound", "Logical_Switch_Port", ["_uuid", "name", "type", "up"], where
        )
        return sum(
            1
            for r in rows
            if r["up"] is True and r["type"] == "" and (names is None or r["name"] in names)
        )


# ---------------------------------------------------------------- the topology as NB rows
# (what networking-ovn writes for the same Neutron objects: a switch per network with
# DHCP_Options per subnet, a router port per router interface, port security on ports of
# a secured network, and a security group as a port group with allow-related ACLs at
# priority 1002 beside the drop-everything group at 1001)

DROP_PG = "bench_drop"


def acl_row(rule: Rule) -> dict[str, Any]:
    """One Neutron rule as an OVN ACL on the group's port group."""
    ingress = rule.direction == "ingress"
    ip = "ip4" if rule.ethertype == "IPv4" else "ip6"
    parts = [f"{'outport' if ingress else 'inport'} == @{SG_NAME}", ip]
    if rule.remote_ip_prefix:
        parts.append(f"{ip}.{'src' if ingress else 'dst'} == {rule.remote_ip_prefix}")
    if rule.remote_group_self:
        parts.append(f"{ip}.{'src' if ingress else 'dst'} == ${SG_NAME}_{ip}")
    if rule.protocol == "icmp":
        parts.append("icmp4" if ip == "ip4" else "icmp6")
    elif rule.protocol in ("tcp", "udp"):
        parts.append(rule.protocol)
        if rule.port_min is not None:
            if rule.port_min == rule.port_max:
                parts.append(f"{rule.protocol}.dst == {rule.port_min}")
            else:
                parts.append(f"{rule.protocol}.dst >= {rule.port_min}")
                parts.append(f"{rule.protocol}.dst <= {rule.port_max}")
    return {
        "direction": "to-lport" if ingress else "from-lport",
        "priority": 1002,
        "match": " && ".join(parts),
        "action": "allow-related",
    }


def gateway_ops(plan: Plan, chassis: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The external network and router r0's gateway, as Neutron's OVN driver writes them:
    a switch with a localnet port on PHYSNET and the router's port, a gateway router port
    with a Gateway_Chassis on CHASSIS (a distributed gateway port, so floating IPs with a
    logical_port are NATed on their port's chassis), the default route to the upstream
    router, and one SNAT row per internal subnet. Returns the ops and the columns to add to
    the router row. (Neutron creates no switch port for a floating IP's own port.)"""
    if plan.routers != 1:
        raise ValueError("floating IPs: one router, which has the gateway")
    ops: list[dict[str, Any]] = [
        {
            "op": "insert",
            "table": "Logical_Switch_Port",
            "uuid-name": "ext_localnet",
            "row": {
                "name": "ext-localnet",
                "type": "localnet",
                "addresses": "unknown",
                "options": ovsdb_map({"network_name": PHYSNET}),
            },
        },
        {
            "op": "insert",
            "table": "Logical_Switch_Port",
            "uuid-name": "ext_rtr",
            "row": {
                "name": "ext-rtr",
                "type": "router",
                "addresses": "router",
                "options": ovsdb_map({"router-port": "lrp-gw", "nat-addresses": "router"}),
            },
        },
        {
            "op": "insert",
            "table": "Logical_Switch",
            "row": {
                "name": "ext",
                "ports": ["set", [["named-uuid", "ext_localnet"], ["named-uuid", "ext_rtr"]]],
            },
        },
        {
            "op": "insert",
            "table": "Gateway_Chassis",
            "uuid-name": "gwc",
            "row": {"name": f"lrp-gw_{chassis}", "chassis_name": chassis, "priority": 1},
        },
        {
            "op": "insert",
            "table": "Logical_Router_Port",
            "uuid-name": "lrp_gw",
            "row": {
                "name": "lrp-gw",
                "mac": gateway_mac(),
                "networks": f"{EXT_GATEWAY}/16",
                "gateway_chassis": ["set", [["named-uuid", "gwc"]]],
            },
        },
        {
            "op": "insert",
            "table": "Logical_Router_Static_Route",
            "uuid-name": "default_route",
            "row": {"ip_prefix": "0.0.0.0/0", "nexthop": EXT_UPSTREAM},
        },
    ]
    snats = []
    for s in range(plan.networks):
        ops.append(
            {
                "op": "insert",
                "table": "NAT",
                "uuid-name": f"snat{s}",
                "row": {"type": "snat", "logical_ip": cidr(s), "external_ip": EXT_GATEWAY},
            }
        )
        snats.append(["named-uuid", f"snat{s}"])
    router = {
        "static_routes": ["set", [["named-uuid", "default_route"]]],
        "nat": ["set", snats],
    }
    return ops, router


def fip_ops(plan: Plan, ports: list[int], address: str | None = None) -> list[dict[str, Any]]:
    """One dnat_and_snat NAT row per port, distributed (logical_port and external_mac, as
    Neutron writes them when floating IPs are distributed), added to router r0. ADDRESS:
    the floating IP of a single port, instead of its own."""
    ops: list[dict[str, Any]] = []
    refs = []
    for k in ports:
        row = {
            "type": "dnat_and_snat",
            "external_ip": address or fip_ip(k),
            "logical_ip": port_ip(plan, k),
            "logical_port": f"p{k}",
            "external_mac": fip_mac(k),
        }
        ops.append({"op": "insert", "table": "NAT", "uuid-name": f"fip{k}", "row": row})
        refs.append(["named-uuid", f"fip{k}"])
    ops.append(
        {
            "op": "mutate",
            "table": "Logical_Router",
            "where": [["name", "==", "r0"]],
            "mutations": [["nat", "insert", ["set", refs]]],
        }
    )
    return ops


def infra_ops(plan: Plan, chassis: str = "chassis") -> list[dict[str, Any]]:
    """Switches (+ DHCP options), routers with their ports (and r0's gateway on CHASSIS when
    the plan has floating IPs), and the security group."""
    ops: list[dict[str, Any]] = []
    router_ports: dict[int, list[Any]] = {}
    router_extra: dict[int, dict[str, Any]] = {}
    if plan.floating_ips:
        gw_ops, router_extra[0] = gateway_ops(plan, chassis)
        ops += gw_ops
        router_ports[0] = [["named-uuid", "lrp_gw"]]
    for s in range(plan.networks):
        ops.append(
            {
                "op": "insert",
                "table": "DHCP_Options",
                "row": {
                    "cidr": cidr(s),
                    "options": ovsdb_map(
                        {
                            "lease_time": "43200",
                            "router": gateway(s),
                            "server_id": gateway(s),
                            "server_mac": router_mac(s),
                        }
                    ),
                    "external_ids": ovsdb_map({"net": f"net{s}"}),
                },
            }
        )
        ls_ports: list[Any] = []
        r = plan.router_of(s)
        if r is not None:
            ops.append(
                {
                    "op": "insert",
                    "table": "Logical_Router_Port",
                    "uuid-name": f"lrp{s}",
                    "row": {
                        "name": f"lrp-net{s}",
                        "mac": router_mac(s),
                        "networks": f"{gateway(s)}/16",
                    },
                }
            )
            router_ports.setdefault(r, []).append(["named-uuid", f"lrp{s}"])
            ops.append(
                {
                    "op": "insert",
                    "table": "Logical_Switch_Port",
                    "uuid-name": f"rsp{s}",
                    "row": {
                        "name": f"net{s}-rtr",
                        "type": "router",
                        "addresses": "router",
                        "options": ovsdb_map({"router-port": f"lrp-net{s}"}),
                    },
                }
            )
            ls_ports.append(["named-uuid", f"rsp{s}"])
        ops.append(
            {
                "op": "insert",
                "table": "Logical_Switch",
                "row": {"name": f"net{s}", "ports": ["set", ls_ports]},
            }
        )
    for r, lrps in router_ports.items():
        ops.append(
            {
                "op": "insert",
                "table": "Logical_Router",
                "row": {"name": f"r{r}", "ports": ["set", lrps], **router_extra.get(r, {})},
            }
        )
    if plan.security_group:
        acl_refs = []
        for i, rule in enumerate(SG_RULES):
            ops.append(
                {"op": "insert", "table": "ACL", "uuid-name": f"acl{i}", "row": acl_row(rule)}
            )
            acl_refs.append(["named-uuid", f"acl{i}"])
        ops.append(
            {
                "op": "insert",
                "table": "Port_Group",
                "row": {"name": SG_NAME, "acls": ["set", acl_refs]},
            }
        )
        drops = []
        for direction, port in (("to-lport", "outport"), ("from-lport", "inport")):
            name = f"drop_{direction[:2]}"
            row = {
                "direction": direction,
                "priority": 1001,
                "match": f"{port} == @{DROP_PG} && ip",
                "action": "drop",
            }
            ops.append({"op": "insert", "table": "ACL", "uuid-name": name, "row": row})
            drops.append(["named-uuid", name])
        ops.append(
            {
                "op": "insert",
                "table": "Port_Group",
                "row": {"name": DROP_PG, "acls": ["set", drops]},
            }
        )
    return ops


class OvnTopology:
    """The plan's rows in this sandbox's NB: build, add ports, add rules, describe."""

    def __init__(self, sandbox: OvnSandbox, plan: Plan) -> None:
        self.sb = sandbox
        self.plan = plan
        self.dhcp: dict[int, str] = {}

    def build_infra(self) -> None:
        if self.plan.floating_ips:
            self.sb.map_physnet(PHYSNET, EXT_BRIDGE)
        self.sb.transact(infra_ops(self.plan, self.sb.chassis))
        assert self.sb.nb is not None
        for row in self.sb.nb.select("OVN_Northbound", "DHCP_Options", ["_uuid", "external_ids"]):
            net = dict(row["external_ids"][1])["net"]
            self.dhcp[int(net[3:])] = row["_uuid"][1]
        self.sb.nbctl("--wait=hv", "sync")

    def port_ops(self, ports: list[int]) -> list[dict[str, Any]]:
        """LSPs for port numbers PORTS, in their switches (and groups), as one transaction."""
        ops: list[dict[str, Any]] = []
        per_ls: dict[int, list[Any]] = {}
        refs = []
        for k in ports:
            s = self.plan.network_of(k)
            address = f"{port_mac(k)} {port_ip(self.plan, k)}"
            row: dict[str, Any] = {
                "name": f"p{k}",
                "addresses": address,
                "dhcpv4_options": ["uuid", self.dhcp[s]],
            }
            if self.plan.security_group:
                row["port_security"] = address
            ops.append(
                {"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"p{k}", "row": row}
            )
            per_ls.setdefault(s, []).append(["named-uuid", f"p{k}"])
            refs.append(["named-uuid", f"p{k}"])
        for s, lsps in per_ls.items():
            ops.append(
                {
                    "op": "mutate",
                    "table": "Logical_Switch",
                    "where": [["name", "==", f"net{s}"]],
                    "mutations": [["ports", "insert", ["set", lsps]]],
                }
            )
        if self.plan.security_group:
            for pg in (SG_NAME, DROP_PG):
                ops.append(
                    {
                        "op": "mutate",
                        "table": "Port_Group",
                        "where": [["name", "==", pg]],
                        "mutations": [["ports", "insert", ["set", refs]]],
                    }
                )
        return ops

    def create_ports(self, ports: list[int]) -> list[str]:
        """Returns the iface-ids to bind the VIFs with (the LSP names)."""
        self.sb.transact(self.port_ops(ports))
        return [f"p{k}" for k in ports]

    def delete_ports(self, ports: list[int]) -> None:
        ops: list[dict[str, Any]] = []
        for k in ports:
            s = self.plan.network_of(k)
            ops.append(
                {
                    "op": "mutate",
                    "table": "Logical_Switch",
                    "where": [["name", "==", f"net{s}"]],
                    "mutations": [
                        ["ports", "delete", ["set", [self._uuid("Logical_Switch_Port", f"p{k}")]]]
                    ],
                }
            )
        self.sb.transact(ops)

    def _uuid(self, table: str, name: str) -> list[str]:
        assert self.sb.nb is not None
        rows = self.sb.nb.select("OVN_Northbound", table, ["_uuid"], [["name", "==", name]])
        uuid: list[str] = rows[0]["_uuid"]
        return uuid

    def add_rule(self, rule: Rule) -> None:
        self.sb.transact(
            [
                {"op": "insert", "table": "ACL", "uuid-name": "new", "row": acl_row(rule)},
                {
                    "op": "mutate",
                    "table": "Port_Group",
                    "where": [["name", "==", SG_NAME]],
                    "mutations": [["acls", "insert", ["set", [["named-uuid", "new"]]]]],
                },
            ]
        )

    def create_fips(self, ports: list[int]) -> None:
        self.sb.transact(fip_ops(self.plan, ports))

    def prepare_fips(self, ports: list[int]) -> None:
        """Nothing: a NAT row is the association (Neutron writes it when a floating IP
        gets a port)."""

    def associate_fip(self, k: int) -> None:
        self.create_fips([k])

    def guard_fip(self, k: int) -> None:
        self.sb.transact(fip_ops(self.plan, [k], GUARD_FIP))

    def drop_guard_fip(self, k: int) -> None:
        assert self.sb.nb is not None
        rows = self.sb.nb.select(
            "OVN_Northbound", "NAT", ["_uuid"], [["external_ip", "==", GUARD_FIP]]
        )
        refs = [r["_uuid"] for r in rows]
        self.sb.transact(
            [
                {
                    "op": "mutate",
                    "table": "Logical_Router",
                    "where": [["name", "==", "r0"]],
                    "mutations": [["nat", "delete", ["set", refs]]],
                }
            ]
        )

    def fips_active(self) -> int | None:
        """None: OVN has no up signal for NAT rows."""
        return None

    def fip_active(self, k: int) -> bool:
        return True

    def is_installed(self, iface_id: str) -> bool:
        return self.sb.lsp_up({iface_id}) == 1

    def installed_count(self) -> int:
        return self.sb.lsp_up()

    def describe(self) -> dict[str, int]:
        assert self.sb.nb is not None
        nb = self.sb.nb

        def rows(table: str, columns: list[str]) -> list[dict[str, Any]]:
            # (_uuid too: ovsdb-server returns identical partial rows only once)
            return nb.select("OVN_Northbound", table, ["_uuid", *columns])

        lsps = rows("Logical_Switch_Port", ["type"])
        lrps = rows("Logical_Router_Port", ["gateway_chassis"])
        nats = rows("NAT", ["type"])
        pgs = {r["name"]: r for r in rows("Port_Group", ["name", "acls", "ports"])}

        def size(value: Any) -> int:
            return len(value[1]) if value[0] == "set" else 1

        sg = pgs.get(SG_NAME)
        return {
            "networks": len(rows("Logical_Switch", ["name"])),
            "vm_ports": sum(1 for r in lsps if r["type"] == ""),
            "routers": len(rows("Logical_Router", ["name"])),
            "router_interfaces": sum(1 for r in lrps if size(r["gateway_chassis"]) == 0),
            "sg_rules": size(sg["acls"]) if sg else 0,
            "ports_in_sg": size(sg["ports"]) if sg else 0,
            "router_gateways": sum(1 for r in lrps if size(r["gateway_chassis"]) > 0),
            "floating_ips": sum(1 for r in nats if r["type"] == "dnat_and_snat"),
        }
