"""The e2e harness: one chassis for real, shared by every test in this directory.

`chassis` is a `wyvern api` process (SQLite store, its own run dir), a private OVS with
br-int in its own network namespace and a `wyvern agent` process attached to it. Objects
are created over HTTP; "VMs" are network namespaces plugged with `wyvern plug` and waited
for with `wyvern wait`. Every namespace, VIF, background process and server is removed
after the test, pass or fail. Names are unique per test, so pytest-xdist workers never
collide; ports inside a VM are private to its namespace, so fixed TCP ports are fine.
With WYVERN_KEEP=1 nothing is torn down: the paths to poke at are printed instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import system
from tests.harness import ApiServer, Proc, process_env, spawn, start_api, wyvern_command
from tests.southbound.conftest import in_netns, keep, unique
from wyvern.southbound import metadata, vif
from wyvern.southbound.ovs import OvsInstance, netns_exists

# The JSON body key of each collection (Neutron's singular resource names).
BODY_KEYS = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "security-groups": "security_group",
    "security-group-rules": "security_group_rule",
    "address-groups": "address_group",
    "floatingips": "floatingip",
    "subnetpools": "subnetpool",
    "address-scopes": "address_scope",
    "metering/metering-labels": "metering_label",
    "metering/metering-label-rules": "metering_label_rule",
    "trunks": "trunk",
}


@dataclass
class Chassis:
    api: ApiServer
    ovs: OvsInstance
    run_dir: Path
    env: dict[str, str]
    agent: Proc | None = None
    vms: list[tuple[str, str]] = field(default_factory=list)  # (port id, netns)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)  # background, killed
    dirs: list[Path] = field(default_factory=list)  # scratch dirs, removed

    @property
    def base(self) -> str:
        return self.api.url + "v2.0"

    # --- the API, over HTTP --------------------------------------------------------------

    def post(self, path: str, **attrs: Any) -> dict[str, Any]:
        key = BODY_KEYS[path]
        resp = requests.post(f"{self.base}/{path}", json={key: attrs}, timeout=10)
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()[key]
        return body

    def put(self, path: str, id_: str, **attrs: Any) -> dict[str, Any]:
        key = BODY_KEYS[path]
        resp = requests.put(f"{self.base}/{path}/{id_}", json={key: attrs}, timeout=10)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()[key]
        return body

    def delete(self, path: str, id_: str) -> None:
        resp = requests.delete(f"{self.base}/{path}/{id_}", timeout=10)
        assert resp.status_code == 204, resp.text

    def get(self, path: str, id_: str) -> dict[str, Any]:
        resp = requests.get(f"{self.base}/{path}/{id_}", timeout=10)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()[BODY_KEYS[path]]
        return body

    def action(self, path: str, id_: str, action: str, **body: Any) -> dict[str, Any]:
        resp = requests.put(f"{self.base}/{path}/{id_}/{action}", json=body, timeout=10)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    # --- processes -----------------------------------------------------------------------

    def wyvern(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*wyvern_command(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def punts(self) -> tuple[dict[str, tuple[int, int]], dict[str, int], str]:
        """`wyvern punts` as an operator reads it: per port (punted, dropped by its
        meter), the agent's packet-in counters (from its metrics file), and the text."""
        out = self.wyvern("punts")
        assert out.returncode == 0, out.stdout + out.stderr
        ports_part, _, agent_part = out.stdout.partition("\n\n")
        ports = {
            line.split()[0]: (int(line.split()[-2]), int(line.split()[-1]))
            for line in ports_part.splitlines()[1:]
        }
        counters = {
            line.split()[0]: int(line.split()[1])
            for line in agent_part.splitlines()[1:]
            if len(line.split()) == 2
        }
        return ports, counters, out.stdout

    def start_agent(self) -> Proc:
        self.agent = spawn(
            [*wyvern_command(), "agent"], self.run_dir / "agent.out", self.env, "wyvern agent"
        )
        return self.agent

    def wait_agent_alive(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agent is not None and self.agent.alive(), self.agent_log()
            agents = requests.get(f"{self.base}/agents", timeout=5).json()["agents"]
            if any(a["alive"] for a in agents):
                return
            time.sleep(0.1)
        raise AssertionError(f"agent not alive after {timeout} s:\n{self.agent_log()}")

    def agent_log(self) -> str:
        return self.agent.output() if self.agent is not None else "(no agent)"

    def background(self, netns: str, *cmd: str) -> subprocess.Popen[str]:
        """CMD in NETNS, in the background (stdout piped, stderr merged); killed at teardown."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def scratch_dir(self) -> Path:
        """A short private dir (dhclient and unix sockets dislike long paths)."""
        path = Path(f"/tmp/{unique('wve-')}")
        path.mkdir()
        self.dirs.append(path)
        return path

    # --- VMs -----------------------------------------------------------------------------

    def plug(self, port: dict[str, Any], *, static_ip: bool = True) -> str:
        ns = unique("wve-vm-")
        self.vms.append((port["id"], ns))
        args = ["plug", port["id"], "--netns", ns, "--api", self.api.url]
        out = self.wyvern(*args, *([] if static_ip else ["--no-ip"]))
        assert out.returncode == 0, out.stdout + out.stderr
        return ns

    def wait_active(self, port: dict[str, Any], timeout: float = 15) -> None:
        out = self.wyvern("wait", port["id"], "--timeout", str(timeout), "--api", self.api.url)
        assert out.returncode == 0, out.stderr + self.agent_log()

    def vm(self, network: dict[str, Any], name: str, **attrs: Any) -> tuple[dict[str, Any], str]:
        """A port on NETWORK, plugged (static IP + gateway) and ACTIVE: (port, netns)."""
        port = self.post("ports", network_id=network["id"], name=name, **attrs)
        ns = self.plug(port)
        self.wait_active(port)
        return port, ns

    def flows(self) -> list[str]:
        text = self.ovs.ofctl(
            "-O", "OpenFlow14", "--no-stats", "--no-names", "dump-flows", "br-int"
        )
        return sorted(line.strip() for line in text.splitlines() if "table=" in line)


def kill_proc(proc: subprocess.Popen[str]) -> None:
    """Kill a background process's whole session (it was started with its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


def kill_from_pidfile(pidfile: Path, must_contain: str) -> None:
    """Kill the daemon in PIDFILE if it is ours (its command line names MUST_CONTAIN)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if must_contain in cmdline:
            os.kill(pid, signal.SIGKILL)


def _run_all(steps: list[Callable[[], object]]) -> None:
    """Run every cleanup step even if some fail; then raise the first failure."""
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # keep cleaning up; report the first failure at the end
            errors.append(exc)
    if errors:
        raise errors[0]


def _remove_vm(ovs: OvsInstance, port_id: str, ns: str) -> None:
    try:
        vif.unplug(ovs, port_id, delete_netns=True)
    finally:
        if netns_exists(ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def remove_metadata_netns(chassis_name: str) -> None:
    """The chassis's metadata namespace, which an agent that was killed leaves behind."""
    ns = metadata.namespace(chassis_name)
    if netns_exists(ns):
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _remove_dir(path: Path) -> None:
    for pidfile in path.glob("*.pid"):  # daemons (dhclient) started there
        kill_from_pidfile(pidfile, str(path))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def chassis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Chassis]:
    system.require(request)
    run_dir = tmp_path / "run"
    ovs = OvsInstance.start(netns=unique("wve-ovs-"))
    api: ApiServer | None = None
    c: Chassis | None = None
    try:
        ovs.ensure_bridge("br-int")
        # Extra WYVERN_* settings for both processes: indirect parametrization, e.g.
        # @pytest.mark.parametrize("chassis", [{"WYVERN_DNS_DOMAIN": "example.org"}], ...)
        extra: dict[str, str] = dict(getattr(request, "param", None) or {})
        api = start_api(run_dir, env=extra)
        env = process_env(
            {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": "sqlite",
                "WYVERN_OVS_MODE": "attach",
                "WYVERN_OVS_RUN_DIR": str(ovs.run_dir),
                "WYVERN_OVS_NETNS": ovs.netns or "",
                "WYVERN_CHASSIS_NAME": unique("chassis-"),
                "WYVERN_AGENT_LEASE_TTL": "3",
                **extra,
            }
        )
        c = Chassis(api, ovs, run_dir, env)
        c.start_agent()
        c.wait_agent_alive()
        yield c
    finally:
        if keep():
            print(
                f"\nWYVERN_KEEP: chassis left running: run dir {run_dir}, {ovs}, "
                f"VMs {[ns for _, ns in c.vms] if c else []}; try\n"
                f"  OVS_RUNDIR={ovs.run_dir} ovs-ofctl -O OpenFlow14 dump-flows br-int",
                file=sys.stderr,
            )
        else:
            steps: list[Callable[[], object]] = []
            if c is not None:
                steps += [functools.partial(kill_proc, proc) for proc in c.procs]
                steps += [functools.partial(_remove_vm, ovs, p, ns) for p, ns in c.vms]
                if c.agent is not None:
                    steps.append(c.agent.stop)
                name = c.env["WYVERN_CHASSIS_NAME"]
                steps.append(functools.partial(remove_metadata_netns, name))
                steps += [functools.partial(_remove_dir, path) for path in c.dirs]
            if api is not None:
                steps.append(api.stop)
            steps.append(ovs.stop)
            _run_all(steps)


__all__ = ["Chassis", "chassis", "in_netns", "kill_proc", "unique"]
