"""The `wyvern` command: serve the API, run the all-in-one, show the configuration.

Settings come from wyvern.config (defaults < TOML file < WYVERN_* environment); options
given here win over all of them. They are applied by exporting the matching WYVERN_*
variable, so API worker processes and later components see exactly the same settings.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

import wyvern
from wyvern.cli.docgen import markdown_table, to_toml
from wyvern.config import ConfigError, Settings, load_settings
from wyvern.logs import setup_logging

LOG = logging.getLogger("wyvern.cli")
PID_FILE = "wyvern-up.pid"


class _Wyvern(typer.Typer):
    """The `wyvern` app; a plain `wyvern agent` command line bypasses typer's parsing
    (see plain_agent_args), so the agent process never imports pydantic."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv = kwargs.get("args", sys.argv[1:])
        plain = plain_agent_args(list(argv)) if not args else None
        if plain is None:
            return super().__call__(*args, **kwargs)
        config, overrides = plain
        main(config)
        try:
            code = _run_agent(**overrides)
        except typer.Exit as exc:
            code = exc.exit_code
        raise SystemExit(code)


app = _Wyvern(
    name="wyvern",
    help="Wyvern SDN controller: a Neutron v2.0 compatible networking API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(enum.StrEnum):
    toml = "toml"
    json = "json"
    markdown = "markdown"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $WYVERN_CONFIG, else <run_dir>/wyvern.toml).",
        exists=True,
        dir_okay=False,
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--run-dir", help="State directory (database, logs, pid file) [WYVERN_RUN_DIR]."),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Listen address [WYVERN_API_HOST].")]
PortOpt = Annotated[
    int | None, typer.Option("--port", min=1, max=65535, help="Listen port [WYVERN_API_PORT].")
]
AccessLogOpt = Annotated[
    bool, typer.Option("--access-log/--no-access-log", help="Log every HTTP request.")
]


@app.callback()
def main(config: ConfigOpt = None) -> None:
    """Wyvern SDN controller."""
    if config is not None:
        os.environ["WYVERN_CONFIG"] = str(config.resolve())


def apply_overrides(**overrides: Any) -> Settings:
    """Export every given option as WYVERN_<NAME>, then load the settings (or exit 2)."""
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        os.environ[f"WYVERN_{name.upper()}"] = str(value)
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"wyvern: invalid configuration:\n{_errors(exc)}", err=True)
        raise typer.Exit(2) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        typer.echo(f"wyvern: cannot read the configuration file: {exc}", err=True)
        raise typer.Exit(2) from None


def _errors(exc: ConfigError) -> str:
    lines = []
    for loc, msg in exc.errors:
        where = ".".join(str(p) for p in loc) or "settings"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


@app.command()
def api(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Server processes [WYVERN_API_WORKERS].")
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="sqlite, etcd or memory [WYVERN_STORE].")
    ] = None,
    run_dir: RunDirOpt = None,
    access_log: AccessLogOpt = True,
) -> None:
    """Serve the Neutron API (foreground; SIGINT/SIGTERM stop it cleanly)."""
    from wyvern.server import api_log_file, serve_foreground

    settings = apply_overrides(
        run_dir=run_dir, api_host=host, api_port=port, api_workers=workers, store=store
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(settings.log_level, api_log_file(settings))
    LOG.info(
        "wyvern %s api on %s:%s (store %s, %s worker(s), run dir %s)",
        wyvern.__version__,
        settings.api_host,
        settings.api_port,
        settings.store,
        settings.api_workers,
        settings.run_dir,
    )
    code = serve_foreground(settings, access_log=access_log, workers=settings.api_workers)
    raise typer.Exit(code)


# The all-in-one's physical network for external networks, unless configured otherwise:
# `wyvern outside` attaches an "outside world" namespace to it.
ALL_IN_ONE_MAPPINGS = {"public": "br-public"}


def _all_in_one_defaults(settings: Settings) -> Settings:
    """The all-in-one maps the `public` physnet and is its own gateway chassis, unless
    the configuration maps physnets or sets a gateway priority itself."""
    env: dict[str, str] = {}
    if not settings.bridge_mappings:
        env["WYVERN_BRIDGE_MAPPINGS"] = json.dumps(ALL_IN_ONE_MAPPINGS)
    if settings.gateway_priority == 0:
        env["WYVERN_GATEWAY_PRIORITY"] = "1"
    missing = [p for p in ALL_IN_ONE_MAPPINGS if p not in settings.physical_networks]
    if missing and not settings.bridge_mappings:
        env["WYVERN_PHYSICAL_NETWORKS"] = json.dumps([*settings.physical_networks, *missing])
    if not env:
        return settings
    os.environ.update(env)
    return apply_overrides()


@app.command()
def up(
    host: HostOpt = None,
    port: PortOpt = None,
    run_dir: RunDirOpt = None,
    access_log: AccessLogOpt = True,
) -> None:
    """Run the all-in-one in the foreground until Ctrl-C or SIGTERM.

    A private OVS (userspace datapath, its own netns, under <run_dir>/ovs), the API on the
    embedded store (SQLite under the run dir) and the chassis agent; stopped in reverse.
    """
    from wyvern.cli.allinone import components
    from wyvern.cli.pidfile import AlreadyRunning, PidFile
    from wyvern.supervisor import run_until_signalled

    settings = apply_overrides(run_dir=run_dir, api_host=host, api_port=port)
    settings = _all_in_one_defaults(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(settings.log_level)  # the console only, until we own the run dir
    pid_file = PidFile(settings.run_dir / PID_FILE)
    try:
        pid_file.acquire()
    except AlreadyRunning as exc:
        LOG.error("%s", exc)
        raise typer.Exit(1) from None
    log_file = setup_logging(settings.log_level, settings.run_dir / "logs" / "wyvern-up.log")
    try:
        LOG.info(
            "wyvern %s up: run dir %s, store %s, log %s, pid %s",
            wyvern.__version__,
            settings.run_dir,
            settings.store if settings.store != "sqlite" else settings.database_path,
            log_file,
            os.getpid(),
        )
        code = run_until_signalled(components(settings, access_log=access_log))
    finally:
        pid_file.release()
    LOG.info("wyvern up: stopped (exit code %s)", code)
    raise typer.Exit(code)


ChassisOpt = Annotated[
    str | None, typer.Option("--chassis", help="Chassis name [WYVERN_CHASSIS_NAME].")
]
OvsDirOpt = Annotated[
    str | None, typer.Option("--ovs-run-dir", help="OVS run dir [WYVERN_OVS_RUN_DIR].")
]
OvsNetnsOpt = Annotated[
    str | None, typer.Option("--ovs-netns", help="Namespace OVS runs in [WYVERN_OVS_NETNS].")
]
ApiUrlOpt = Annotated[
    str | None,
    typer.Option("--api", help="API endpoint (default: http://<api_host>:<api_port>/)."),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="WYVERN_TOKEN", help="Bearer token (token auth).")
]


def _few_malloc_arenas() -> None:
    """glibc gives threads that allocate arenas of their own (up to 8 per core), each
    holding freed memory resident; the agent's helper threads (store watches, OVSDB
    monitor, packet-in, heartbeat) allocate little, so two arenas serve them and keep
    the resident size down. No-op where glibc's mallopt is not there."""
    import contextlib
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(-8, 2)  # M_ARENA_MAX


@app.command()
def agent(
    run_dir: RunDirOpt = None,
    store: Annotated[
        str | None, typer.Option("--store", help="sqlite, etcd or memory [WYVERN_STORE].")
    ] = None,
    chassis: ChassisOpt = None,
    tunnel_ip: Annotated[
        str | None, typer.Option("--tunnel-ip", help="Underlay address [WYVERN_TUNNEL_IP].")
    ] = None,
    underlay_interface: Annotated[
        str | None,
        typer.Option(
            "--underlay-interface",
            help="Underlay NIC for br-phy, which gets the tunnel IP [WYVERN_UNDERLAY_INTERFACE].",
        ),
    ] = None,
    ovs_mode: Annotated[
        str | None,
        typer.Option("--ovs-mode", help="private, attach or fake [WYVERN_OVS_MODE]."),
    ] = None,
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
    distribution: Annotated[
        str | None,
        typer.Option("--distribution", help="auto, selective or all [WYVERN_DISTRIBUTION]."),
    ] = None,
) -> None:
    """Run the chassis agent (foreground): store -> flows on br-int, port status back.

    In private mode the agent starts OVS if it is not running and leaves it running on
    exit: restarting the agent never touches the datapath.
    """
    raise typer.Exit(
        _run_agent(
            run_dir=run_dir,
            store=store,
            chassis_name=chassis,
            tunnel_ip=tunnel_ip,
            underlay_interface=underlay_interface,
            ovs_mode=ovs_mode,
            ovs_run_dir=ovs_run_dir,
            ovs_netns=ovs_netns,
            distribution=distribution,
        )
    )


def _run_agent(**overrides: Any) -> int:
    from wyvern.cli.allinone import AgentComponent, OvsComponent
    from wyvern.supervisor import Component, run_until_signalled

    settings = apply_overrides(**overrides)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(settings.log_level, settings.run_dir / "logs" / "wyvern-agent.log")
    _few_malloc_arenas()
    LOG.info(
        "wyvern %s agent: chassis %s, store %s, ovs %s (%s, netns %s)",
        wyvern.__version__,
        settings.agent_chassis,
        settings.store,
        settings.agent_ovs_dir,
        settings.ovs_mode,
        settings.agent_netns,
    )
    parts: list[Component] = []
    if settings.ovs_mode == "private":
        parts.append(OvsComponent(settings, stop_on_exit=False))
    parts.append(AgentComponent(settings))  # (ovs_mode fake: no switch at all)
    return run_until_signalled(parts)


def _client(api_url: str | None, token: str | None) -> tuple[str, dict[str, str], Settings]:
    settings = apply_overrides()
    url = api_url or f"http://{settings.api_host}:{settings.api_port}/"
    headers = {"X-Auth-Token": token} if token else {}
    return url.rstrip("/") + "/v2.0", headers, settings


def _get(base: str, headers: dict[str, str], path: str) -> dict[str, Any]:
    import requests

    try:
        resp = requests.get(f"{base}/{path}", headers=headers, timeout=10)
    except requests.RequestException as exc:
        typer.echo(f"wyvern: cannot reach the API at {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        typer.echo(f"wyvern: GET {path}: HTTP {resp.status_code}: {resp.text}", err=True)
        raise typer.Exit(1)
    body: dict[str, Any] = resp.json()
    return body


@app.command()
def plug(
    port_id: Annotated[str, typer.Argument(metavar="PORT", help="Port id.")],
    netns: Annotated[str, typer.Option("--netns", help="The VM's network namespace.")],
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
    static_ip: Annotated[
        bool,
        typer.Option("--static-ip/--no-ip", help="Configure the port's first IP and gateway."),
    ] = True,
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
) -> None:
    """Plug a "VM" (netns, created if missing) into br-int as PORT, the os-vif way.

    The VIF gets external_ids:iface-id=PORT, the port's MAC and its network's MTU; the
    agent binds it from there.
    """
    from wyvern.cli.allinone import open_ovs
    from wyvern.southbound import vif
    from wyvern.southbound.ovs import OvsError

    apply_overrides(ovs_run_dir=ovs_run_dir, ovs_netns=ovs_netns)
    base, headers, settings = _client(api_url, token)
    port = _get(base, headers, f"ports/{port_id}")["port"]
    network = _get(base, headers, f"networks/{port['network_id']}")["network"]
    ip_cidr = gateway = None
    if static_ip and port.get("fixed_ips"):
        first = port["fixed_ips"][0]
        subnet = _get(base, headers, f"subnets/{first['subnet_id']}")["subnet"]
        ip_cidr = f"{first['ip_address']}/{subnet['cidr'].split('/')[1]}"
        gateway = subnet.get("gateway_ip")
    try:
        ovs = open_ovs(settings)
        plugged = vif.plug(
            ovs,
            port_id,
            port["mac_address"],
            netns,
            int(network.get("mtu") or 1500),
            ip_cidr,
            settings.bridge,
            gateway=gateway,
            vm_id=port.get("device_id") or None,
        )
    except OvsError as exc:
        typer.echo(f"wyvern: plug failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"plugged {port_id} as {plugged.devname} (ofport {plugged.ofport}) into netns "
        f"{netns}: {port['mac_address']} {ip_cidr or '(no address: use DHCP)'}"
    )


@app.command()
def outside(
    netns: Annotated[str, typer.Argument(metavar="NETNS", help="The host's network namespace.")],
    address: Annotated[
        str, typer.Option("--address", help="Its address on the segment, e.g. 203.0.113.1/24.")
    ],
    physnet: Annotated[
        str, typer.Option("--physnet", help="The physical network to attach it to.")
    ] = "public",
    route: Annotated[
        list[str] | None,
        typer.Option("--route", help='A route in the host, e.g. "10.0.0.0/24 via 203.0.113.10".'),
    ] = None,
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
) -> None:
    """Attach a host (NETNS, created if missing) to a physical network of this chassis:
    the "outside world" for external networks, as a NIC cabled to the physnet's bridge."""
    from wyvern.cli.allinone import open_ovs
    from wyvern.southbound import vif
    from wyvern.southbound.ovs import OvsError

    settings = apply_overrides(ovs_run_dir=ovs_run_dir, ovs_netns=ovs_netns)
    bridge = settings.bridge_mappings.get(physnet) or ALL_IN_ONE_MAPPINGS.get(physnet)
    if bridge is None:
        typer.echo(f"wyvern: physical network {physnet} has no bridge mapping here", err=True)
        raise typer.Exit(1)
    try:
        port = vif.attach_host(open_ovs(settings), bridge, netns, address, routes=route or ())
    except (OvsError, vif.VifError) as exc:
        typer.echo(f"wyvern: outside failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"attached netns {netns} ({address}) to {physnet} ({bridge} port {port})")


@app.command()
def unplug(
    port_id: Annotated[str, typer.Argument(metavar="PORT", help="Port id.")],
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
) -> None:
    """Remove PORT's VIF from br-int (and the namespace if `plug` created it and it is empty)."""
    from wyvern.cli.allinone import open_ovs
    from wyvern.southbound import vif
    from wyvern.southbound.ovs import OvsError

    settings = apply_overrides(ovs_run_dir=ovs_run_dir, ovs_netns=ovs_netns)
    try:
        vif.unplug(open_ovs(settings), port_id, bridge=settings.bridge)
    except OvsError as exc:
        typer.echo(f"wyvern: unplug failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"unplugged {port_id}")


@app.command()
def wait(
    port_id: Annotated[str, typer.Argument(metavar="PORT", help="Port id.")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before giving up.")] = 30.0,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Wait until PORT is ACTIVE (its flows are installed); exit 1 on timeout."""
    import time

    base, headers, _ = _client(api_url, token)
    deadline = time.monotonic() + timeout
    status = "?"
    while True:
        status = _get(base, headers, f"ports/{port_id}")["port"].get("status", "?")
        if status == "ACTIVE":
            typer.echo(f"{port_id} ACTIVE")
            return
        if time.monotonic() > deadline:
            typer.echo(f"wyvern: {port_id} still {status} after {timeout:g} s", err=True)
            raise typer.Exit(1)
        time.sleep(0.1)


@app.command()
def meters(
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print the metering labels' counters (packets and IP bytes through router gateways,
    all chassis summed), as the API's /metrics serves them, one line per label, router
    and direction."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    base, headers, _ = _client(api_url, token)
    names = {
        lb["id"]: lb["name"]
        for lb in _get(base, headers, "metering/metering-labels")["metering_labels"]
    }
    try:
        resp = requests.get(base.removesuffix("/v2.0") + "/metrics", headers=headers, timeout=10)
    except requests.RequestException as exc:
        typer.echo(f"wyvern: cannot reach the API at {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        typer.echo(f"wyvern: GET /metrics: HTTP {resp.status_code}: {resp.text}", err=True)
        raise typer.Exit(1)
    rows: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for family in text_string_to_metric_families(resp.text):
        what = family.name.removeprefix("wyvern_metering_label_")
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            lab = sample.labels
            row = (lab["label_id"], lab["router_id"], lab["project_id"], lab["direction"])
            rows.setdefault(row, {})[what] = int(sample.value)
    typer.echo(f"{'LABEL':36}  {'NAME':16}  {'ROUTER':36}  {'DIRECTION':9}  {'PACKETS':>12}  BYTES")
    for (label, router, _project, direction), values in sorted(rows.items()):
        typer.echo(
            f"{label:36}  {names.get(label, '')[:16]:16}  {router:36}  {direction:9}  "
            f"{values.get('packets', 0):>12}  {values.get('bytes', 0)}"
        )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"wyvern {wyvern.__version__}")


@app.command()
def config(
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="toml/json: the effective settings; markdown: every option with its "
            "environment variable, default and meaning.",
        ),
    ] = Format.toml,
) -> None:
    """Print the effective settings (defaults < TOML file < WYVERN_* environment)."""
    if fmt is Format.markdown:
        typer.echo(markdown_table(), nl=False)
        return
    settings = apply_overrides()
    data = settings.as_json()
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        typer.echo(to_toml(data), nl=False)


@app.command()
def pipeline() -> None:
    """Print the OpenFlow pipeline: stage name <-> table number, each stage's owner, miss
    and next stages, and the register map."""
    from wyvern.ir import pipeline as stages
    from wyvern.ir import registers

    typer.echo(f"{'table':>5}  {'stage':24} {'direction':9} {'owner':16} {'miss':28} next stages")
    for row in stages.describe():
        typer.echo(
            f"{row.table:>5}  {row.stage:24} {row.direction:9} {row.owner:16} {row.miss:28}"
            f" {row.next or '-'}"
        )
    typer.echo("")
    typer.echo(f"{'register':20} {'field':18} meaning")
    for reg in registers.describe():
        typer.echo(f"{reg.name:20} {reg.subfield:18} {reg.description}")


@app.command()
def trace(
    from_port: Annotated[
        str | None, typer.Option("--from", help="Source port (name or id).")
    ] = None,
    from_network: Annotated[
        str | None,
        typer.Option(
            "--from-network",
            help="Instead of --from: a packet from a host on this external network's "
            "physnet (give --src-ip and --dst-ip, e.g. a floating IP).",
        ),
    ] = None,
    to_port: Annotated[
        str | None, typer.Option("--to", help="Destination port (name or id).")
    ] = None,
    dst_ip: Annotated[str | None, typer.Option("--dst-ip", help="Destination IP.")] = None,
    proto: Annotated[
        str, typer.Option("--proto", help="icmp, tcp, udp, arp, dhcp, dhcp6 (a Solicit) or rs.")
    ] = "icmp",
    dport: Annotated[
        int | None, typer.Option("--dport", min=0, max=65535, help="TCP/UDP port.")
    ] = None,
    src_ip: Annotated[str | None, typer.Option("--src-ip", help="Override (spoof).")] = None,
    src_mac: Annotated[str | None, typer.Option("--src-mac", help="Override (spoof).")] = None,
    ttl: Annotated[
        int | None, typer.Option("--ttl", min=0, max=255, help="TTL / hop limit (64).")
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", min=20, max=65535, help="IP packet size in bytes, header included."),
    ] = None,
    on_ovs: Annotated[
        bool, typer.Option("--ovs", help="ofproto/trace on the agent's bridge, not simulated.")
    ] = False,
    run_dir: RunDirOpt = None,
    store: Annotated[
        str | None, typer.Option("--store", help="sqlite, etcd or memory [WYVERN_STORE].")
    ] = None,
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
) -> None:
    """Explain what happens to a packet, step by step, in terms of API objects."""
    from wyvern.tools.trace import PacketSpec, TraceError, run_trace

    settings = apply_overrides(
        run_dir=run_dir, store=store, ovs_run_dir=ovs_run_dir, ovs_netns=ovs_netns
    )
    if (from_port is None) == (from_network is None):
        typer.echo("wyvern: trace: give --from PORT or --from-network NETWORK", err=True)
        raise typer.Exit(2)
    if on_ovs and size is not None:
        typer.echo(
            "wyvern: trace: --size needs the simulator (ofproto/trace has no size)", err=True
        )
        raise typer.Exit(2)
    spec = PacketSpec(
        from_port or "",
        to_port,
        dst_ip,
        proto,
        dport,
        None,
        src_ip,
        src_mac,
        from_network,
        ttl=ttl,
        size=size,
    )
    try:
        typer.echo(run_trace(settings, spec, use_ovs=on_ovs))
    except TraceError as exc:
        typer.echo(f"wyvern: trace: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def punts(
    run_dir: RunDirOpt = None,
    ovs_run_dir: OvsDirOpt = None,
    ovs_netns: OvsNetnsOpt = None,
) -> None:
    """Per local port: the packets it punted to the agent (DHCP, ND, ICMP errors) and
    how many of them its meter dropped in the datapath (over its rate); then what the
    agent's packet-in services counted (its metrics file: handled per punt kind, and
    outcomes such as rate_limited or dhcp6_malformed)."""
    from wyvern.controller.metrics import packet_in_counters
    from wyvern.southbound.meters import port_punts
    from wyvern.southbound.ovs import OvsError, OvsInstance

    settings = apply_overrides(run_dir=run_dir, ovs_run_dir=ovs_run_dir, ovs_netns=ovs_netns)
    try:
        ovs = OvsInstance.attach(settings.agent_ovs_dir, settings.agent_netns)
        rows = port_punts(ovs, settings.bridge)
    except OvsError as exc:
        typer.echo(f"wyvern: punts: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{'port':36} {'interface':15} {'ofport':>6} {'punted':>10} {'dropped':>10}")
    for port_id, name, ofport, st in rows:
        typer.echo(f"{port_id or '-':36} {name:15} {ofport:>6} {st.punted:>10} {st.dropped:>10}")
    typer.echo("")
    path = settings.agent_metrics_file
    if path is None:
        typer.echo("agent packet-in counters: none (agent_metrics_dir is empty)")
        return
    try:
        counters = packet_in_counters(path.read_text(encoding="utf-8"))
    except OSError:
        typer.echo(f"agent packet-in counters: none ({path} not found: is the agent running?)")
        return
    if not counters:
        typer.echo(f"agent packet-in counters: none yet ({path})")
        return
    typer.echo(f"{'agent packet-in counter':36} {'value':>10}")
    for key, value in sorted(counters.items()):
        typer.echo(f"{key:36} {value:>10}")


# `wyvern agent` options: flag -> keyword of _run_agent (all plain strings but run_dir).
AGENT_FLAGS = {
    "--run-dir": "run_dir",
    "--store": "store",
    "--chassis": "chassis_name",
    "--tunnel-ip": "tunnel_ip",
    "--underlay-interface": "underlay_interface",
    "--ovs-mode": "ovs_mode",
    "--ovs-run-dir": "ovs_run_dir",
    "--ovs-netns": "ovs_netns",
    "--distribution": "distribution",
}


def plain_agent_args(argv: list[str]) -> tuple[Path | None, dict[str, Any]] | None:
    """([--config FILE] agent [--flag value]...) as (config, overrides); else None.

    typer (0.29) builds a pydantic TypeAdapter for every option when it parses a
    command line, which puts pydantic (~10 MiB) back into the agent process. A plain
    agent command line is read here instead; anything else (help, a bad or unknown
    option, a missing config file) goes to typer, which answers exactly as before."""
    args = list(argv)
    config: Path | None = None
    if args[:1] == ["--config"] or args[:1] == ["-c"]:
        if len(args) < 2 or not Path(args[1]).is_file():
            return None
        config, args = Path(args[1]), args[2:]
    if args[:1] != ["agent"]:
        return None
    overrides: dict[str, Any] = {}
    rest = args[1:]
    while rest:
        flag, _, value = rest[0].partition("=")
        if flag not in AGENT_FLAGS or flag in overrides:
            return None
        if not _:
            if len(rest) < 2 or rest[1].startswith("-"):
                return None
            value, rest = rest[1], rest[2:]
        else:
            rest = rest[1:]
        overrides[flag] = value
    out: dict[str, Any] = {AGENT_FLAGS[f]: v for f, v in overrides.items()}
    if "run_dir" in out:
        out["run_dir"] = Path(out["run_dir"])
    return config, out


def run(argv: list[str] | None = None) -> None:
    """Entry point for `python -m wyvern.cli` (the console script calls `app`)."""
    app(args=sys.argv[1:] if argv is None else argv, prog_name="wyvern")
