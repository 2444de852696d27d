"""OpenStack's own API suites against Wyvern: Tempest and neutron-tempest-plugin.

    scripts/tempest [--filter REGEX] [--concurrency 2] [--timeout 3600] [--results DIR]

Starts privately, in a temporary directory and on free loopback ports: a real Keystone
(tests/keystone.py), `wyvern api` with `auth_strategy = keystone` on SQLite, and a
fake-chassis agent (`ovs_mode = fake`: ports bound to it go ACTIVE without a switch).
Installs `tempest` and `neutron-tempest-plugin` from PyPI into their own virtualenv
(`.tempest-venv`, once), writes `tempest.conf` from what the live server says (the
extension aliases of GET /v2.0/extensions, an external network made by the admin), runs
the suites with `tempest run`, and prints passed / failed / skipped per test module and
the totals. The subunit stream, a JSON list of every test with its status and reason,
tempest.conf and the servers' logs are left in the results directory.

tests/compat/test_tempest.py runs a small subset of classes through the same code in CI.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import (
    REPO,
    ApiServer,
    Proc,
    process_env,
    spawn,
    start_api,
    wyvern_command,
)
from tests.keystone import REGION, KeystoneServer, authtoken_env

VENV = REPO / ".tempest-venv"
# What the run installs: the newest releases on PyPI (their requirements pin the rest).
PACKAGES = ("tempest", "neutron-tempest-plugin")
SUITES = ("tempest.api.network", "neutron_tempest_plugin.api")
# The clients' own functional tests for the network service (--functional).
FUNCTIONAL = {
    "openstack.tests.functional.network": "openstacksdk",
    "openstackclient.tests.functional.network": "python-openstackclient",
}
FUNCTIONAL_PACKAGES = ("openstacksdk", "python-openstackclient", "oslotest", "stestr")
PASSWORD = "tempest-secret"
CHASSIS = "tempest-chassis"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"tempest: {msg}", file=sys.stderr, flush=True)


# ---- the venv -------------------------------------------------------------------------
def base_python() -> str:
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


def install(venv: Path = VENV, packages: Sequence[str] = PACKAGES) -> Path:
    """`packages` in their own venv; nothing to do when a run installed them already."""
    stamp = venv / ".wyvern-tempest-stamp"
    have = set(stamp.read_text().split()) if stamp.exists() else set()
    if set(packages) <= have and (venv / "bin" / "stestr").exists():
        return venv
    if not (venv / "bin" / "python").exists():
        log(f"creating {venv}")
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    log(f"installing {' '.join(packages)} into {venv} (from PyPI)")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    pip += ["--disable-pip-version-check", *packages]
    subprocess.run(pip, check=True, stdin=subprocess.DEVNULL)
    stamp.write_text(" ".join(sorted(have | set(packages))))
    return venv


# ---- the servers ----------------------------------------------------------------------
@dataclass
class Cloud:
    """Keystone, Wyvern and its agent, running."""

    base: Path
    keystone: KeystoneServer
    api: ApiServer
    agent: Proc
    public_network_id: str = ""
    extensions: list[str] = field(default_factory=list)

    def token(self) -> str:
        sess = self.keystone.session("admin", PASSWORD, "admin")
        return str(sess.get_token())

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.api.url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"X-Auth-Token": self.token(), "Content-Type": "application/json"},
        )
        with _OPENER.open(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


@contextlib.contextmanager
def cloud(base: Path) -> Iterator[Cloud]:
    """Keystone, `wyvern api` (keystone auth, SQLite) and a fake-chassis agent in `base`."""
    base.mkdir(parents=True, exist_ok=True)
    ks = KeystoneServer(base / "keystone", admin_password=PASSWORD)
    ks.threads = 1  # Tempest's workers create credentials in parallel: SQLite locks
    ks.start()
    procs: list[Any] = [ks]
    try:
        opts = ks.service_user("wyvern", PASSWORD)
        run_dir = base / "wyvern"
        env = authtoken_env(opts)
        # physnet1 for the plugin's provider networks, public for the external network
        env["WYVERN_PHYSICAL_NETWORKS"] = json.dumps(["physnet1", "public"])
        # Neutron's gate sets dns_domain (the plugin's DNS tests expect a port's dns_name
        # in its dns_assignment, which the default openstacklocal leaves out).
        env["WYVERN_DNS_DOMAIN"] = "openstackgate.local"
        # and raises these quotas: the plugin's RoutersTest alone makes 11 routers in one
        # project (Neutron's default quota_router is 10, as ours).
        env["WYVERN_QUOTAS__ROUTER"] = "100"
        env["WYVERN_QUOTAS__FLOATINGIP"] = "500"
        env["WYVERN_QUOTAS__SECURITY_GROUP"] = "150"
        env["WYVERN_QUOTAS__SECURITY_GROUP_RULE"] = "1000"
        api = start_api(run_dir, env=env, access_log=True)
        procs.append(api)
        ks.register_network(api.url)
        agent_env = process_env(
            {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": "sqlite",
                # a gateway chassis for the external network's physnet
                "WYVERN_BRIDGE_MAPPINGS": json.dumps({"public": "br-public"}),
                "WYVERN_GATEWAY_PRIORITY": "1",
                **env,
            }
        )
        args = [*wyvern_command(), "agent", "--store", "sqlite", "--ovs-mode", "fake"]
        args += ["--chassis", CHASSIS, "--run-dir", str(run_dir)]
        agent = spawn(args, run_dir / "agent.out", agent_env, "wyvern agent")
        procs.append(agent)
        c = Cloud(base, ks, api, agent)
        c.extensions = sorted(
            e["alias"] for e in c.request("GET", "/v2.0/extensions")["extensions"]
        )
        c.public_network_id = _public_network(c)
        yield c
    finally:
        for p in reversed(procs):
            p.stop()


def _public_network(c: Cloud) -> str:
    """The external network tempest's routers get their gateway on, as devstack makes it."""
    net = c.request(
        "POST",
        "/v2.0/networks",
        {
            "network": {
                "name": "public",
                "router:external": True,
                "provider:network_type": "flat",
                "provider:physical_network": "public",
            }
        },
    )["network"]
    c.request(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "name": "public-subnet",
                "ip_version": 4,
                "cidr": "172.24.4.0/24",
                "gateway_ip": "172.24.4.1",
            }
        },
    )
    return str(net["id"])


def functional_clouds(c: Cloud, path: Path) -> Path:
    """The clouds.yaml openstacksdk's and python-openstackclient's functional tests read
    (devstack's cloud names): demo and alt_demo are members, admin is admin."""
    ks = c.keystone
    for user in ("demo", "alt_demo"):
        ks.add_user(user, PASSWORD, ks.add_project(user), ["member", "reader"])
    admin = ("admin", PASSWORD, "admin")
    return ks.clouds_yaml(
        path,
        {
            "devstack": ("demo", PASSWORD, "demo"),
            "devstack-alt": ("alt_demo", PASSWORD, "alt_demo"),
            "devstack-admin": admin,
            "devstack-system-admin": admin,
        },
    )


# ---- tempest.conf -----------------------------------------------------------------------
def tempest_conf(c: Cloud, workspace: Path, extra: Mapping[str, Mapping[str, str]] = {}) -> str:
    """What tempest needs to know about this cloud; only the network service exists."""
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {
            "log_dir": str(workspace / "logs"),
            "log_file": "tempest.log",
            "use_stderr": "false",
        },
        "auth": {
            "admin_username": "admin",
            "admin_password": PASSWORD,
            "admin_project_name": "admin",
            "admin_domain_name": "Default",
            "use_dynamic_credentials": "true",
            "create_isolated_networks": "false",
            "tempest_roles": "member",
        },
        "identity": {
            "uri_v3": c.keystone.url,
            "auth_version": "v3",
            "region": REGION,
            "v2_admin_endpoint_type": "publicURL",
            "v3_endpoint_type": "public",
            "disable_ssl_certificate_validation": "true",
        },
        "identity-feature-enabled": {"api_v2": "false", "api_v3": "true"},
        "network": {
            "catalog_type": "network",
            "region": REGION,
            "endpoint_type": "publicURL",
            "public_network_id": c.public_network_id,
            "floating_network_name": "public",
            "project_network_cidr": "10.100.0.0/16",
            "project_network_mask_bits": "28",
            "project_network_v6_cidr": "2001:db8::/48",
            "project_network_v6_mask_bits": "64",
            "project_networks_reachable": "false",
            "shared_physical_network": "false",
            "build_timeout": "60",
            "build_interval": "1",
        },
        "network-feature-enabled": {
            "api_extensions": ",".join(c.extensions),
            "ipv6": "true",
            "ipv6_subnet_attributes": "true",
            "port_security": "true" if "port-security" in c.extensions else "false",
            "port_admin_state_change": "true",
        },
        "service_available": {
            "neutron": "true",
            "nova": "false",
            "cinder": "false",
            "glance": "false",
            "swift": "false",
            "horizon": "false",
            "keystone": "true",
        },
        "validation": {"run_validation": "false"},
        "compute-feature-enabled": {},
        "neutron_plugin_options": {
            "available_type_drivers": "flat,vlan,geneve,vxlan",
            "provider_vlans": "physnet1",
        },
        "oslo_concurrency": {"lock_path": str(workspace / "locks")},
    }
    for name, opts in extra.items():
        sections.setdefault(name, {}).update(opts)
    lines: list[str] = []
    for name, opts in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in opts.items()]
        lines.append("")
    return "\n".join(lines)


# ---- the run ----------------------------------------------------------------------------
def run_tempest(
    venv: Path,
    workspace: Path,
    conf: str,
    regex: str,
    concurrency: int,
    timeout: float,
) -> int:
    """`tempest run` in a fresh workspace; returns its exit code (124 on timeout)."""
    if workspace.exists():
        shutil.rmtree(workspace)
    env = {k: v for k, v in process_env().items() if not k.startswith("OS_")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    tempest = str(venv / "bin" / "tempest")
    subprocess.run(
        # A private workspace registry: never the user's ~/.tempest/workspace.yaml.
        [
            tempest,
            "init",
            "--workspace-path",
            str(workspace.parent / "workspaces.yaml"),
            "--name",
            f"wyvern-{os.getpid()}",
            str(workspace),
        ],
        check=True,
        env=env,
        cwd=workspace.parent,
        stdout=subprocess.DEVNULL,
    )
    (workspace / "etc" / "tempest.conf").write_text(conf)
    (workspace / "logs").mkdir(exist_ok=True)
    args = [tempest, "run", "--regex", regex, "--concurrency", str(concurrency)]
    with open(workspace / "tempest-run.out", "wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=workspace,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"timed out after {timeout:.0f}s: stopping tempest")
            return 124
        finally:
            Proc(proc, workspace / "tempest-run.out", "tempest").stop()


def run_functional(
    venv: Path, base: Path, clouds: Path, concurrency: int, timeout: float, results: Path
) -> tuple[int, list[dict[str, str]]]:
    """openstacksdk's and python-openstackclient's functional network tests, each with
    stestr in a directory holding the clouds.yaml they read (devstack's cloud names)."""
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {k: v for k, v in process_env().items() if not k.startswith("OS_")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)  # (the CLI's tests drop OS_*: see cwd)
    rc, tests = 0, []
    deadline = time.monotonic() + timeout
    for package, dist in FUNCTIONAL.items():
        work = base / dist
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy(clouds, work / "clouds.yaml")
        path = Path(site, *package.split("."))
        (work / ".stestr.conf").write_text(f"[DEFAULT]\ntest_path={path}\ntop_dir={site}\n")
        log(f"running {dist}'s functional network tests")
        cmd = [str(venv / "bin" / "stestr"), "run", "--concurrency", str(concurrency)]
        with open(work / "stestr.out", "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                rc |= proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{dist} timed out")
                rc = 124
            finally:
                Proc(proc, work / "stestr.out", dist).stop()
        tests += collect(venv, work, results, dist)
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(work / "stestr.out", results / f"{dist}.out")
    return rc, tests


# Runs in the tempest venv (python-subunit and testtools are there, not in ours).
_SUBUNIT_TO_JSON = textwrap.dedent(
    """\
    import json, sys
    import subunit, testtools
    tests = {}
    def on_test(t):
        reason = ""
        for name in ("reason", "traceback"):
            d = t["details"].get(name)
            if d is not None:
                text = d.as_text()
                reason = text if name == "reason" else "\\n".join(text.strip().splitlines()[-3:])
                break
        tid = t["id"].split("[")[0]
        if tid.startswith(("setUpClass (", "tearDownClass (")):
            tid = tid[tid.index("(") + 1 : -1] + "." + tid.split(" ")[0]
        tests[t["id"]] = {"id": tid, "status": t["status"], "reason": reason}
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
    result.stopTestRun()
    json.dump(sorted(tests.values(), key=lambda t: t["id"]), sys.stdout, indent=1)
    """
)


def collect(
    venv: Path, workspace: Path, results: Path, name: str = "tempest"
) -> list[dict[str, str]]:
    """The run's subunit stream and a JSON list of its tests, saved under `results`."""
    results.mkdir(parents=True, exist_ok=True)
    stream = subprocess.run(
        [str(venv / "bin" / "stestr"), "last", "--subunit"],
        cwd=workspace,
        capture_output=True,
        check=False,
    ).stdout
    (results / f"{name}.subunit").write_bytes(stream)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _SUBUNIT_TO_JSON],
        input=stream,
        capture_output=True,
        check=True,
    ).stdout
    tests: list[dict[str, str]] = json.loads(out)
    (results / f"{name}.json").write_text(json.dumps(tests, indent=1))
    return tests


def module_of(test_id: str) -> str:
    """The module part of `pkg.mod.Class.test`."""
    parts = test_id.split(".")
    for i, part in enumerate(parts):
        if part[:1].isupper():
            return ".".join(parts[:i])
    return ".".join(parts[:-1])


def summary(tests: Sequence[Mapping[str, str]], suites: Sequence[str] = SUITES) -> str:
    """passed / failed / skipped per module, each suite's totals and pass rate."""
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for t in tests:
        status = {"success": "passed", "fail": "failed", "skip": "skipped"}.get(
            t["status"], t["status"]
        )
        per[module_of(t["id"])][status] += 1
    width = max([len(m) for m in per] + [20])
    lines = [f"{'module':<{width}} {'passed':>6} {'failed':>6} {'skipped':>7}"]
    for mod in sorted(per):
        c = per[mod]
        lines.append(f"{mod:<{width}} {c['passed']:>6} {c['failed']:>6} {c['skipped']:>7}")
    lines.append("")
    for suite in (*suites, ""):
        total: collections.Counter[str] = collections.Counter()
        for mod, c in per.items():
            if mod.startswith(suite):
                total.update(c)
        ran = total["passed"] + total["failed"]
        rate = f"{100.0 * total['passed'] / ran:.1f}%" if ran else "-"
        lines.append(
            f"{suite or 'total':<{width}} {total['passed']:>6} {total['failed']:>6} "
            f"{total['skipped']:>7}  pass rate of non-skipped: {rate}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tempest", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--filter",
        default="^(" + "|".join(re.escape(s) for s in SUITES) + r")\.",
        help="test id regex for `tempest run --regex` (default: both suites)",
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    parser.add_argument("--results", type=Path, default=REPO / "tempest-results")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument(
        "--functional",
        action="store_true",
        help="instead: openstacksdk's and python-openstackclient's functional network tests",
    )
    args = parser.parse_args(argv)
    venv = install(packages=(*PACKAGES, *FUNCTIONAL_PACKAGES) if args.functional else PACKAGES)
    suites: Sequence[str] = tuple(FUNCTIONAL) if args.functional else SUITES
    base = Path(tempfile.mkdtemp(prefix="wyvern-tempest-"))
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with cloud(base) as c:
            log(f"Keystone {c.keystone.url}, Wyvern {c.api.url}, {len(c.extensions)} extensions")
            if args.functional:
                clouds = functional_clouds(c, base / "clouds.yaml")
                rc, tests = run_functional(
                    venv, base, clouds, args.concurrency, args.timeout, results
                )
            else:
                workspace = base / "workspace"
                conf = tempest_conf(c, workspace)
                (results / "tempest.conf").write_text(conf)
                log(f"running {args.filter} (concurrency {args.concurrency})")
                rc = run_tempest(venv, workspace, conf, args.filter, args.concurrency, args.timeout)
                tests = collect(venv, workspace, results)
                for name in ("tempest-run.out", "logs/tempest.log"):
                    with contextlib.suppress(FileNotFoundError):
                        shutil.copy(workspace / name, results / Path(name).name)
        for name in ("wyvern/api.out", "wyvern/agent.out", "keystone/keystone.log"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copy(base / name, results / Path(name).name.replace(".out", ".log"))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(summary(tests, suites))
    print(f"\n{len(tests)} tests in {time.monotonic() - started:.0f}s; results in {results}")
    if rc == 124:
        print("the run timed out: the figures above are partial")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on the way out
    sys.exit(main())
