"""One typed settings object, read from a TOML file and WYVERN_* environment variables.

Precedence (highest first): keyword arguments, environment (`WYVERN_<NAME>`), the TOML file
(`WYVERN_CONFIG`, else `<run_dir>/wyvern.toml` if present), the defaults below.

Hand-written, not pydantic-settings, for the memory of every `wyvern agent` process:
pydantic there cost ~13 MiB of RSS (measured: an idle agent is 33 MiB without it, 46 with
it; the agent lost to ovn-controller on memory at 1,000 ports). The loader keeps
pydantic-settings' behaviour: lax type coercion, JSON for lists/dicts/tables in the
environment, `WYVERN_QUOTAS__PORT` for nested keys, deep-merged sources, unknown keys
refused, every field error in one message. The old pydantic model, kept in
tests/test_config.py, is the test oracle for all of that.
"""

# ruff: noqa: RUF009 (_opt is our dataclasses.field with metadata)

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

DEFAULT_RUN_DIR = "/var/lib/wyvern"
MAX_OVS_DIR = 85
ENV_PREFIX = "WYVERN_"
NESTED = "__"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _toml_file() -> Path | None:
    explicit = os.environ.get("WYVERN_CONFIG")
    if explicit:
        return Path(explicit)
    candidate = Path(os.environ.get("WYVERN_RUN_DIR", DEFAULT_RUN_DIR)) / "wyvern.toml"
    return candidate if candidate.is_file() else None


class ConfigError(ValueError):
    """Invalid settings: every problem found, each as (location, message)."""

    def __init__(self, errors: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.errors = errors
        count = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}"
        lines = [f"{count} for Settings"]
        lines += [f"  {'.'.join(map(str, loc)) or 'settings'}: {msg}" for loc, msg in errors]
        super().__init__("\n".join(lines))


def _opt(
    default: Any = MISSING,
    description: str = "",
    *,
    factory: Any = MISSING,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
) -> Any:
    """A field with its description and bounds (what pydantic's Field carried)."""
    meta = {"description": description, "ge": ge, "le": le, "gt": gt}
    return field(default=default, default_factory=factory, metadata=meta)


Encap = Literal["geneve", "vxlan"]
RA_INTERVALS = "min_rtr_adv_interval must be at most 0.75 x max_rtr_adv_interval (radvd's rule)"


@dataclass
class QuotaDefaults:
    """Neutron's default quotas; -1 means unlimited."""

    network: int = _opt(100, "Networks a project may own.", ge=-1)
    subnet: int = _opt(100, "Subnets a project may own.", ge=-1)
    subnetpool: int = _opt(-1, "Subnet pools a project may own.", ge=-1)
    port: int = _opt(500, "Ports a project may own.", ge=-1)
    router: int = _opt(10, "Routers a project may own.", ge=-1)
    floatingip: int = _opt(50, "Floating IPs a project may own.", ge=-1)
    security_group: int = _opt(10, "Security groups a project may own.", ge=-1)
    security_group_rule: int = _opt(100, "Security group rules a project may own.", ge=-1)
    rbac_policy: int = _opt(10, "RBAC policies a project may own.", ge=-1)


@dataclass
class KeystoneAuthtoken:
    """keystonemiddleware's `[keystone_authtoken]` options (auth_strategy=keystone), with
    their names and meaning; only the password auth plugin is offered."""

    www_authenticate_uri: str = _opt(
        "", "Keystone's public endpoint, told to unauthenticated clients in WWW-Authenticate."
    )
    auth_url: str = _opt("", "Keystone endpoint the service user authenticates against.")
    auth_type: Literal["password"] = _opt("password", "Auth plugin of the service user.")
    username: str = _opt("", "Service user that validates tokens (neutron's `neutron`).")
    password: str = _opt("", "Its password.")
    project_name: str = _opt("service", "Its project.")
    user_domain_name: str = _opt("Default", "Its user's domain.")
    project_domain_name: str = _opt("Default", "Its project's domain.")
    region_name: str = _opt("", "Region of the identity endpoint in the catalog.")
    interface: str = _opt("internal", "Catalog interface used to reach Keystone.")
    http_connect_timeout: int = _opt(
        5,
        ge=1,
        description="Seconds per request to Keystone (auth_token has no default: ours "
        "bounds the wait for a 503 when Keystone hangs, at about (http_request_max_retries "
        "+ 1) x this plus 3.5 s of backoff; measured 15.6 s at 3 s and 3 retries).",
    )
    http_request_max_retries: int = _opt(
        3, ge=0, description="Reconnection attempts when Keystone refuses a connection."
    )
    token_cache_time: int = _opt(
        300,
        ge=-1,
        description="Seconds a validated token is cached (-1: never cached). Revoking a "
        "token takes up to this long to be seen.",
    )
    memcached_servers: list[str] = _opt(
        factory=list,
        description="Cache tokens in these memcached servers (host:port); empty: in "
        "process memory, per API worker.",
    )
    memcache_security_strategy: Literal["None", "MAC", "ENCRYPT"] = _opt(
        "None", "Protect cached tokens with memcache_secret_key (memcached only)."
    )
    memcache_secret_key: str = _opt("", "Secret for memcache_security_strategy.")
    cafile: str = _opt("", "CA bundle for an HTTPS Keystone.")
    insecure: bool = _opt(False, "Skip TLS verification of Keystone (unsafe).")
    service_token_roles: list[str] = _opt(
        factory=lambda: ["service"],
        description="A service token (X-Service-Token) must carry one of these roles.",
    )
    service_token_roles_required: bool = _opt(
        True, "Enforce service_token_roles (Keystone's recommended setting)."
    )


@dataclass
class NovaNotifier:
    """neutron-server's `[nova]` options: the service user that sends Nova its external
    events (network-vif-plugged ...), found in the catalog as service type `compute`.
    Notifications are off while `auth_url` is empty."""

    auth_url: str = _opt("", "Keystone endpoint the service user authenticates against.")
    auth_type: Literal["password"] = _opt("password", "Auth plugin of the service user.")
    username: str = _opt("", "Service user that notifies Nova (neutron's `nova` user).")
    password: str = _opt("", "Its password.")
    project_name: str = _opt("service", "Its project.")
    user_domain_name: str = _opt("Default", "Its user's domain.")
    project_domain_name: str = _opt("Default", "Its project's domain.")
    region_name: str = _opt("", "Region of Nova's endpoint in the catalog.")
    endpoint_type: Literal["public", "internal", "admin"] = _opt(
        "public", "Catalog interface of Nova's endpoint (Neutron's endpoint_type)."
    )
    timeout: float = _opt(10.0, gt=0, description="Seconds per request to Keystone or Nova.")
    cafile: str = _opt("", "CA bundle for an HTTPS Keystone or Nova.")
    insecure: bool = _opt(False, "Skip TLS verification (unsafe).")


@dataclass(init=False)
class Settings:
    """Every setting; `Settings(**overrides)` reads the TOML file and environment too."""

    run_dir: Path = _opt(
        default=Path(DEFAULT_RUN_DIR),
        description="Every piece of state (database, logs, pid files, sockets) lives here.",
    )
    store: Literal["sqlite", "etcd", "memory"] = _opt(
        default="sqlite", description="Northbound store backend."
    )
    sqlite_path: Path | None = _opt(
        default=None, description="SQLite database file; default <run_dir>/wyvern.db."
    )
    etcd_endpoints: list[str] = _opt(
        factory=lambda: ["http://127.0.0.1:2379"],
        description="etcd client URLs (any member of the cluster).",
    )
    etcd_max_txn_ops: int = _opt(
        default=128,
        ge=32,
        description="etcd's --max-txn-ops (128 unless raised): a cascade delete larger than "
        "this is split into transactions this size; a bulk create is refused with 400. At "
        "least 32: a project's default security group takes 19 operations in one.",
    )
    api_host: str = _opt(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = _opt(default=9696, ge=1, le=65535, description="API TCP port.")
    api_workers: int = _opt(default=1, ge=1, description="API server processes.")
    api_max_body_size: int = _opt(
        default=114688,
        ge=1,
        description="Largest request body in bytes (Neutron's max_request_body_size); a "
        "larger one is answered 413 before the rest of it is read.",
    )
    api_request_read_timeout: float = _opt(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a request's headers, and again its whole "
        "body; a slower one is closed (a slow body gets a 408 first).",
    )
    api_max_connections: int = _opt(
        default=1000,
        ge=1,
        description="Open connections per API process; one more is answered 503 and closed "
        "at once (requests in flight are capped alike: uvicorn's limit_concurrency).",
    )
    auth_strategy: Literal["noauth", "token", "keystone"] = _opt(
        default="noauth",
        description="noauth: callers act as admin of default_project_id (loopback only). "
        "token: bearer tokens from tokens_file. keystone: tokens validated by Keystone "
        "(keystonemiddleware's auth_token, configured by [keystone_authtoken]).",
    )
    keystone_authtoken: KeystoneAuthtoken = _opt(
        factory=KeystoneAuthtoken,
        description="auth_strategy=keystone: keystonemiddleware's auth_token options.",
    )
    nova: NovaNotifier = _opt(
        factory=NovaNotifier,
        description="Nova notifications (network-vif-plugged, -unplugged, -deleted, "
        "network-changed): neutron-server's [nova] options; off while auth_url is empty.",
    )
    notify_nova_on_port_status_changes: bool = _opt(
        default=True,
        description="Tell Nova when a compute port goes ACTIVE (network-vif-plugged) or from "
        "ACTIVE to DOWN (network-vif-unplugged); needs [nova].",
    )
    notify_nova_on_port_data_changes: bool = _opt(
        default=True,
        description="Tell Nova when a compute port's fixed IPs, host or floating IPs change "
        "(network-changed) or it is deleted (network-vif-deleted); needs [nova].",
    )
    send_events_interval: float = _opt(
        default=2.0,
        gt=0,
        description="Seconds between two batches of events to Nova (Neutron's option); a "
        "batch Nova did not take is sent again after it, with what came meanwhile.",
    )
    tokens_file: Path | None = _opt(
        default=None,
        description="TOML file mapping tokens to project and roles (auth_strategy=token).",
    )
    default_project_id: str = _opt(
        default="default", description="Project of noauth callers that name none."
    )
    allow_noauth_on_public: bool = _opt(
        default=False,
        description="Permit auth_strategy=noauth on a non-loopback address (unsafe).",
    )
    noauth_trust_headers: bool = _opt(
        default=False,
        description="Development only, unsafe: noauth callers may name any project and "
        "roles with X-Project-Id / X-Roles (false: such a request is refused with 400).",
    )
    policy_file: Path | None = _opt(
        default=None,
        description="YAML (or JSON) file of policy rules overriding Neutron's defaults, as "
        "Neutron's [oslo_policy] policy_file; reread when it changes. None: the defaults.",
    )
    base_mac: str = _opt(default="fa:16:3e:00:00:00", description="MAC prefix for ports.")
    global_physnet_mtu: int = _opt(
        default=1500, ge=68, description="MTU of the underlay and physical networks."
    )
    default_network_type: Literal["geneve", "vxlan", "vlan", "flat"] = _opt(
        default="geneve", description="provider:network_type when none is given."
    )
    vlan_ranges: dict[str, tuple[int, int]] = _opt(
        factory=lambda: {"physnet1": (1, 4094)},
        description="Tenant VLAN ranges per physical network.",
    )
    physical_networks: list[str] = _opt(
        factory=lambda: ["physnet1"],
        description="Physical networks that flat and vlan networks may use.",
    )
    max_dns_nameservers: int = _opt(default=5, description="DNS servers a subnet may list.")
    max_subnet_host_routes: int = _opt(default=20, description="Host routes a subnet may list.")
    max_allowed_address_pair: int = _opt(
        default=10, description="Allowed address pairs a port may list."
    )
    pagination_max_limit: int = _opt(default=-1, description="-1: no maximum page size.")
    quotas: QuotaDefaults = _opt(
        factory=QuotaDefaults,
        description="Default per-project quotas (-1: unlimited); override per project "
        "through the quotas API.",
    )
    log_level: str = _opt(default="INFO", description="Python logging level.")
    chassis_name: str = _opt(
        default="",
        description="Agent: this chassis's name in the store (default: the hostname).",
    )
    tunnel_ip: str = _opt(
        default="127.0.0.1", description="Agent: underlay address other chassis tunnel to."
    )
    bridge: str = _opt(default="br-int", description="Agent: the integration bridge.")
    encaps: list[Encap] = _opt(
        factory=lambda: list[Encap](["geneve", "vxlan"]),
        description="Agent: tunnel types this chassis offers (a flow-based port on the "
        "integration bridge each); advertised in its chassis record.",
    )
    bridge_mappings: dict[str, str] = _opt(
        factory=dict,
        description='Agent: physical network → OVS bridge (e.g. {physnet1 = "br-ex"}) for '
        "flat and vlan networks; the agent creates each bridge and patches it to the "
        "integration bridge, the operator adds the physical NIC to it. Advertised in the "
        "chassis record.",
    )
    gateway_priority: int = _opt(
        default=0,
        ge=0,
        le=32767,
        description="Agent: 0: never a gateway chassis; above 0: this chassis may host "
        "router gateways on the physnets it maps (bridge_mappings), the highest priority "
        "alive being active (OVN's gateway_chassis priority); a gateway chassis follows the "
        "whole store (distribution). Advertised in the chassis record.",
    )
    availability_zone: str = _opt(
        default="nova",
        description="Agent: this chassis's availability zone (Neutron's agent option; "
        "`nova` is Neutron's default zone): networks and routers name zones in "
        "availability_zone_hints, and a router's gateway goes only to gateway chassis of "
        "its hinted zones. Advertised in the chassis record.",
    )
    underlay_interface: str = _opt(
        default="",
        description="Agent: the underlay NIC (in OVS's namespace) to put into "
        "underlay_bridge, which then gets tunnel_ip/tunnel_prefixlen; empty: leave the "
        "underlay alone.",
    )
    underlay_bridge: str = _opt(
        default="br-phy", description="Agent: the OVS bridge that holds the tunnel IP."
    )
    tunnel_prefixlen: int = _opt(
        default=24, ge=1, le=32, description="Agent: prefix length of tunnel_ip on the underlay."
    )
    ovs_mode: Literal["private", "attach", "fake"] = _opt(
        default="private",
        description="Agent: private starts our own ovsdb-server and ovs-vswitchd (userspace "
        "datapath) under ovs_run_dir; attach uses the OVS already running there; fake runs "
        "no switch at all (flows are recorded, ports requested on this chassis by "
        "binding:host_id count as plugged): for scale tests with many chassis.",
    )
    distribution: Literal["auto", "selective", "all"] = _opt(
        default="auto",
        description="Agent: selective follows only what the local ports need (their "
        "networks, those behind their routers, their security groups); all follows the "
        "whole store; auto: selective on etcd, all otherwise (one host).",
    )
    ovs_run_dir: str = _opt(
        default="",
        description="Agent: OVS run dir (db.sock, <bridge>.mgmt); empty: <run_dir>/ovs.",
    )
    ovs_netns: str = _opt(
        default="auto",
        description="Agent: network namespace OVS runs in. auto: a private OVS gets its own "
        "(wyvern-<hash of its run dir>; a netdev bridge's tap devices would collide with "
        "another OVS), an attached one the host's; empty: the host's; else that name.",
    )
    agent_metrics_dir: str = _opt(
        default="auto",
        description="Agent: directory of its Prometheus textfile, wyvern-agent-<chassis>.prom "
        "(counters of the loop, the flow installs and the packet-in services; point "
        "node_exporter's --collector.textfile.directory here; `wyvern punts` reads it). "
        "auto: <run_dir>/metrics; empty: no file. The agent opens no listening socket.",
    )
    agent_lease_ttl: float = _opt(
        default=30.0,
        gt=0,
        description="Agent: TTL of its chassis record's store lease, kept alive every "
        "third of it; other chassis drop this one when it runs out and BFD to it is down.",
    )
    agent_liveness_grace: float = _opt(
        default=0.0,
        ge=0,
        description="Agent: seconds a remote chassis with no BFD session to it (no encaps "
        "in common) stays after its lease ran out.",
    )
    agent_mac_binding_refresh: float = _opt(
        default=60.0,
        gt=0,
        description="Agent: seconds between the probes (ARP, or an ND neighbour "
        "solicitation for IPv6) a gateway chassis sends for each learned MAC binding on "
        "the external networks it hosts gateways on (and, on a tenant network, the first "
        "chassis by name with a port there, from a router interface); an answer with a "
        "new MAC replaces the binding (a replaced upstream router, a moved VIP).",
    )
    agent_metering_interval: float = _opt(
        default=10.0,
        gt=0,
        description="Agent: seconds between two readings of the metering labels' flow "
        "statistics, whose sums per label, router and direction it reports to the store "
        "(the API's /metrics, `wyvern meters`) when they moved.",
    )
    min_rtr_adv_interval: float = _opt(
        default=30.0,
        ge=3,
        description="Agent: the shortest interval, in seconds, between two unsolicited "
        "router advertisements to a VM (Neutron's l3 agent option, radvd's "
        "MinRtrAdvInterval: at least 3, at most 0.75 x max_rtr_adv_interval).",
    )
    max_rtr_adv_interval: float = _opt(
        default=100.0,
        ge=4,
        le=1800,
        description="Agent: the longest interval, in seconds, between two unsolicited "
        "router advertisements to a VM (Neutron's l3 agent option, radvd's "
        "MaxRtrAdvInterval); the router, RDNSS and DNSSL lifetimes are 3 x this.",
    )
    dhcp_lease_duration: int = _opt(
        default=86400,
        ge=60,
        description="Agent: DHCP lease time in seconds (Neutron's option), for DHCPv4 "
        "leases and DHCPv6 address lifetimes; renewal at 1/2, rebinding at 7/8 of it.",
    )
    dns_domain: str = _opt(
        default="openstacklocal",
        description="API and agent: Neutron's `dns_domain`: the domain of ports' "
        "dns_assignment (while it is `openstacklocal`, Neutron's default, a port's dns_name "
        "is not used and every hostname is host-<ip>), and the domain DHCPv4 (option 15), "
        "DHCPv6 (domain search) and RAs give on networks without a dns_domain; a port's "
        "extra_dhcp_opts override it.",
    )
    nova_metadata_host: str = _opt(
        default="",
        description="Agent: host of Nova's metadata API, where the metadata proxy sends "
        "what VMs ask 169.254.169.254 and fe80::a9fe:a9fe (Neutron's option); empty: "
        "every such request gets a 404 JSON saying metadata is not configured.",
    )
    nova_metadata_port: int = _opt(
        default=8775, ge=1, le=65535, description="Agent: TCP port of Nova's metadata API."
    )
    nova_metadata_protocol: Literal["http", "https"] = _opt(
        default="http", description="Agent: protocol of Nova's metadata API."
    )
    metadata_proxy_shared_secret: str = _opt(
        default="",
        description="Agent: the secret shared with Nova (its "
        "[neutron]metadata_proxy_shared_secret) that signs X-Instance-ID.",
    )

    def __init__(self, **overrides: Any) -> None:
        for name, value in _load(overrides).items():
            setattr(self, name, value)
        self._refuse_open_noauth()
        if self.min_rtr_adv_interval > 0.75 * self.max_rtr_adv_interval:
            raise ConfigError([((), RA_INTERVALS)])

    def _refuse_open_noauth(self) -> None:
        loopback = self.api_host in ("127.0.0.1", "localhost", "::1") or self.api_host.startswith(
            "127."
        )
        if self.auth_strategy == "noauth" and not loopback and not self.allow_noauth_on_public:
            raise ConfigError(
                [
                    (
                        (),
                        f"auth_strategy=noauth refuses to listen on {self.api_host}: use "
                        "auth_strategy=token (or set allow_noauth_on_public=true knowingly)",
                    )
                ]
            )
        if self.auth_strategy == "token" and self.tokens_file is None:
            raise ConfigError([((), "auth_strategy=token needs tokens_file")])
        ks = self.keystone_authtoken
        if self.auth_strategy == "keystone":
            missing = [n for n in ("auth_url", "username", "password") if not getattr(ks, n)]
            if missing:
                raise ConfigError(
                    [
                        (("keystone_authtoken", n), "needed by auth_strategy=keystone")
                        for n in missing
                    ]
                )

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON-able data (paths as strings, tuples as lists)."""
        out: dict[str, Any] = jsonable(self)
        return out

    @property
    def database_path(self) -> Path:
        return self.sqlite_path or self.run_dir / "wyvern.db"

    @property
    def agent_chassis(self) -> str:
        return self.chassis_name or socket.gethostname()

    @property
    def agent_ovs_dir(self) -> Path:
        if self.ovs_run_dir:
            return Path(self.ovs_run_dir)
        default = self.run_dir.resolve() / "ovs"
        if len(str(default)) > MAX_OVS_DIR:
            # Unix socket paths (<dir>/ovs-vswitchd.ctl, <dir>/br-int.mgmt) max 107 bytes.
            return Path("/tmp") / f"wyvern-ovs-{_short_hash(str(default))}"
        return default

    @property
    def agent_metrics_file(self) -> Path | None:
        if not self.agent_metrics_dir:
            return None
        base = self.run_dir / "metrics" if self.agent_metrics_dir == "auto" else None
        # (the chassis name made safe for a file name)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self.agent_chassis)
        return (base or Path(self.agent_metrics_dir)) / f"wyvern-agent-{name}.prom"

    @property
    def agent_netns(self) -> str | None:
        if self.ovs_netns == "auto":
            if self.ovs_mode == "attach":
                return None
            return f"wyvern-{_short_hash(str(self.agent_ovs_dir))}"
        return self.ovs_netns or None


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


# ---- the loader ---------------------------------------------------------------------------
Loc = tuple[str | int, ...]


class _Invalid(Exception):
    """One value that does not fit its type (collected into ConfigError)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


@cache
def hints(cls: type) -> dict[str, Any]:
    """The fields of a settings dataclass with their resolved types, in definition order."""
    types_ = get_type_hints(cls)
    return {f.name: types_[f.name] for f in fields(cls)}


def field_default(f: Field[Any]) -> Any:
    """A field's default value (a fresh one from its factory)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _load(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the sources (TOML < env < keywords, dicts deep-merged) and validate."""
    merged: dict[str, Any] = {}
    toml = _toml_file()
    if toml is not None:
        path = toml.expanduser()
        if path.is_file():
            with path.open("rb") as fh:
                _deep_update(merged, _fold_case(Settings, tomllib.load(fh)))
    _deep_update(merged, _env_values())
    _deep_update(merged, _fold_case(Settings, dict(overrides)))
    errors: list[tuple[Loc, str]] = []
    values = _validate_fields(Settings, merged, (), errors)
    if errors:
        raise ConfigError(errors)
    return values


def _fold_case(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Field names match case-insensitively (as with pydantic-settings), nested models too."""
    names = hints(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.lower() if isinstance(key, str) and key.lower() in names else key
        if name in out:
            continue  # the first spelling wins
        if name in names and is_dataclass(names[name]) and isinstance(value, dict):
            value = _fold_case(names[name], value)
        out[name] = value
    return out


def _deep_update(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merged = dict(into[key])
            _deep_update(merged, value)
            into[key] = merged
        else:
            into[key] = value


def _is_complex(annotation: Any) -> bool:
    """Values pydantic-settings reads from the environment as JSON."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_complex(a) for a in get_args(annotation))
    return origin in (list, dict, tuple, set) or is_dataclass(annotation)


def _env_values() -> dict[str, Any]:
    env = {k.lower(): v for k, v in os.environ.items()}
    prefix = ENV_PREFIX.lower()
    out: dict[str, Any] = {}
    for name, annotation in hints(Settings).items():
        raw = env.get(prefix + name)
        if not _is_complex(annotation):
            if raw is not None:
                out[name] = raw
            continue
        value: Any = None
        if raw is not None:
            try:
                value = json.loads(raw)
            except ValueError as exc:
                msg = f"error parsing value (JSON) from {ENV_PREFIX}{name.upper()}: {exc}"
                raise ConfigError([((name,), msg)]) from None
            if isinstance(value, dict):
                _deep_update(value, _explode(env, prefix + name + NESTED, annotation))
        else:
            value = _explode(env, prefix + name + NESTED, annotation) or None
        if value is not None:
            out[name] = value
    return out


def _explode(env: dict[str, str], prefix: str, annotation: Any) -> dict[str, Any]:
    """`WYVERN_QUOTAS__PORT=7` → {"port": "7"}; complex leaves are JSON when they parse."""
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        *path, last = key[len(prefix) :].split(NESTED)
        target = out
        leaf_type: Any = annotation
        for part in path:
            target = target.setdefault(part, {})
            leaf_type = _sub_type(leaf_type, part)
        leaf_type = _sub_type(leaf_type, last)
        value: Any = raw
        if leaf_type is not None and _is_complex(leaf_type):
            with contextlib.suppress(ValueError):
                value = json.loads(raw)
        target[last] = value
    return out


def _sub_type(annotation: Any, key: str) -> Any:
    if is_dataclass(annotation):
        return hints(annotation).get(key)  # type: ignore[arg-type]
    if get_origin(annotation) is dict:
        return get_args(annotation)[1]
    return None


def _validate_fields(
    cls: type, data: Mapping[str, Any], loc: Loc, errors: list[tuple[Loc, str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            _, out[f.name] = _sub(data[f.name], hints(cls)[f.name], f, (*loc, f.name), errors)
        else:
            out[f.name] = field_default(f)
    errors += [((*loc, key), "Extra inputs are not permitted") for key in data if key not in out]
    return out


def _sub(
    value: Any, annotation: Any, f: Field[Any] | None, loc: Loc, errors: list[tuple[Loc, str]]
) -> tuple[bool, Any]:
    """Coerce one value, recording its error(s) at loc: (ok, value)."""
    try:
        return True, _coerce(value, annotation, f, loc, errors)
    except _Reported:
        return False, None
    except _Invalid as exc:
        errors.append((loc, exc.msg))
        return False, None


_INT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _coerce(
    value: Any, annotation: Any, f: Field[Any] | None, loc: Loc, errors: list[tuple[Loc, str]]
) -> Any:
    """One value as `annotation`, converted as pydantic's lax mode would (or _Invalid)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, f, loc, errors)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        names = [repr(a) for a in args]
        choices = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise _Invalid(f"Input should be {choices}")
    if origin is list:
        if not isinstance(value, list | tuple | set | frozenset):
            raise _Invalid("Input should be a valid list")
        items = [_sub(v, args[0], None, (*loc, i), errors) for i, v in enumerate(value)]
        if not all(ok for ok, _ in items):
            raise _Reported
        return [v for _, v in items]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Invalid("Input should be a valid tuple")
        if len(value) > len(args):
            raise _Invalid(
                f"Tuple should have at most {len(args)} items after validation, not {len(value)}"
            )
        items = [
            _sub(v, t, None, (*loc, i), errors)
            for i, (v, t) in enumerate(zip(value, args, strict=False))
        ]
        errors += [((*loc, i), "Field required") for i in range(len(value), len(args))]
        if len(value) < len(args) or not all(ok for ok, _ in items):
            raise _Reported
        return tuple(v for _, v in items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Invalid("Input should be a valid dictionary")
        result: dict[Any, Any] = {}
        good = True
        for key, item in value.items():
            key_ok, k = _sub(key, args[0], None, (*loc, key, "[key]"), errors)
            item_ok, v = _sub(item, args[1], None, (*loc, key), errors)
            good = good and key_ok and item_ok
            if key_ok and item_ok:
                result[k] = v
        if not good:
            raise _Reported
        return result
    if isinstance(annotation, type) and is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise _Invalid(
                f"Input should be a valid dictionary or instance of {annotation.__name__}"
            )
        before = len(errors)
        data = _validate_fields(annotation, _fold_case(annotation, dict(value)), loc, errors)
        if len(errors) > before:
            raise _Reported
        return annotation(**data)
    return _bounded(_scalar(value, annotation), f)


class _Reported(Exception):
    """Errors inside a container, already recorded one by one."""


def _scalar(value: Any, annotation: Any) -> Any:
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode()
        raise _Invalid("Input should be a valid string")
    if annotation is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise _Invalid("Input is not a valid path for <class 'pathlib.Path'>")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise _Invalid("Input should be a valid boolean, unable to interpret input")
        if isinstance(value, int | float):
            if value in (0, 1):
                return bool(value)
            raise _Invalid("Input should be a valid boolean, unable to interpret input")
        raise _Invalid("Input should be a valid boolean")
    if annotation is int:
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise _Invalid("Input should be a finite number")
            if not value.is_integer():
                raise _Invalid(
                    "Input should be a valid integer, got a number with a fractional part"
                )
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if text.isascii() and _INT.fullmatch(text):
                return int(text.split(".")[0])
            raise _Invalid("Input should be a valid integer, unable to parse string as an integer")
        raise _Invalid("Input should be a valid integer")
    if annotation is float:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                if text.isascii():
                    return float(text)
            except ValueError:
                pass
            raise _Invalid("Input should be a valid number, unable to parse string as a number")
        raise _Invalid("Input should be a valid number")
    raise TypeError(f"settings cannot hold {annotation!r}")


def _bounded(value: Any, f: Field[Any] | None) -> Any:
    meta = f.metadata if f is not None else {}
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise _Invalid(f"Input should be greater than or equal to {meta['ge']}")
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise _Invalid(f"Input should be greater than {meta['gt']}")
    if meta.get("le") is not None and not value <= meta["le"]:
        raise _Invalid(f"Input should be less than or equal to {meta['le']}")
    return value


def jsonable(value: Any) -> Any:
    """Like pydantic's model_dump(mode="json"): paths as strings, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
