"""Settings: defaults, TOML file, environment precedence; the old pydantic model as oracle.

wyvern.config is hand-written (pydantic cost the agent process memory). The pydantic-settings
model it replaced is kept below, verbatim but renamed, and every input in CASES must give
the same values from both, or an error from both (at the same fields, with the same
messages).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wyvern.config import DEFAULT_RUN_DIR, RA_INTERVALS, ConfigError, Settings, _toml_file

REPO = Path(__file__).resolve().parents[1]


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('api_port = 9999\nstore = "memory"\n[quotas]\nport = 7\n')
    monkeypatch.setenv("WYVERN_CONFIG", str(cfg))
    s = Settings()
    assert s.api_port == 9999 and s.store == "memory" and s.quotas.port == 7
    monkeypatch.setenv("WYVERN_API_PORT", "9700")
    monkeypatch.setenv("WYVERN_QUOTAS__NETWORK", "3")
    s = Settings()
    assert s.api_port == 9700 and s.quotas.network == 3 and s.quotas.port == 7


def test_run_dir_holds_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WYVERN_CONFIG", raising=False)
    monkeypatch.setenv("WYVERN_RUN_DIR", str(tmp_path))
    s = Settings()
    assert s.database_path == tmp_path / "wyvern.db"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WYVERN_API_PORT", "70000")
    with pytest.raises(ValueError):
        Settings()


def test_every_field_error_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WYVERN_CONFIG", raising=False)
    monkeypatch.setenv("WYVERN_API_PORT", "0")
    monkeypatch.setenv("WYVERN_QUOTAS__PORT", "x")
    with pytest.raises(ConfigError) as err:
        Settings(bogus=1)
    assert [loc for loc, _ in err.value.errors] == [("api_port",), ("quotas", "port"), ("bogus",)]
    assert "api_port: Input should be greater than or equal to 1" in str(err.value)


def test_the_agent_imports_no_pydantic() -> None:
    """The agent's whole import set stays pydantic-free (with typer, ~13 MiB of RSS per agent)."""
    code = (
        "import wyvern.cli.main, wyvern.controller.agent, wyvern.nb.sqlite, wyvern.nb.etcd, "
        "wyvern.southbound.ofchannel, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_core', 'pydantic_settings')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout


# ---- the oracle: the pydantic-settings model wyvern.config replaced ------------------------
Encap = Literal["geneve", "vxlan"]


class NovaNotifier(BaseSettings):
    """neutron-server's [nova] options."""

    auth_url: str = ""
    auth_type: Literal["password"] = "password"
    username: str = ""
    password: str = ""
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = ""
    endpoint_type: Literal["public", "internal", "admin"] = "public"
    timeout: float = Field(default=10.0, gt=0)
    cafile: str = ""
    insecure: bool = False


class KeystoneAuthtoken(BaseSettings):
    """keystonemiddleware's options (their defaults; only what the comparison needs)."""

    www_authenticate_uri: str = ""
    auth_url: str = ""
    auth_type: Literal["password"] = "password"
    username: str = ""
    password: str = ""
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = ""
    interface: str = "internal"
    http_connect_timeout: int = Field(default=5, ge=1)
    http_request_max_retries: int = Field(default=3, ge=0)
    token_cache_time: int = Field(default=300, ge=-1)
    memcached_servers: list[str] = Field(default_factory=list)
    memcache_security_strategy: Literal["None", "MAC", "ENCRYPT"] = "None"
    memcache_secret_key: str = ""
    cafile: str = ""
    insecure: bool = False
    service_token_roles: list[str] = Field(default_factory=lambda: ["service"])
    service_token_roles_required: bool = True


class QuotaDefaults(BaseSettings):
    """Neutron's default quotas; -1 means unlimited."""

    network: int = Field(default=100, ge=-1, description="Networks a project may own.")
    subnet: int = Field(default=100, ge=-1, description="Subnets a project may own.")
    subnetpool: int = Field(default=-1, ge=-1, description="Subnet pools a project may own.")
    port: int = Field(default=500, ge=-1, description="Ports a project may own.")
    router: int = Field(default=10, ge=-1, description="Routers a project may own.")
    floatingip: int = Field(default=50, ge=-1, description="Floating IPs a project may own.")
    security_group: int = Field(default=10, ge=-1, description="Security groups a project may own.")
    security_group_rule: int = Field(
        default=100, ge=-1, description="Security group rules a project may own."
    )
    rbac_policy: int = Field(default=10, ge=-1, description="RBAC policies a project may own.")


class OldSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WYVERN_", env_nested_delimiter="__", extra="forbid"
    )

    run_dir: Path = Field(
        default=Path(DEFAULT_RUN_DIR),
        description="Every piece of state (database, logs, pid files, sockets) lives here.",
    )
    store: Literal["sqlite", "etcd", "memory"] = Field(
        default="sqlite", description="Northbound store backend."
    )
    sqlite_path: Path | None = Field(
        default=None, description="SQLite database file; default <run_dir>/wyvern.db."
    )
    etcd_endpoints: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"],
        description="etcd client URLs (any member of the cluster).",
    )
    etcd_max_txn_ops: int = Field(default=128, ge=16)
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=9696, ge=1, le=65535, description="API TCP port.")
    api_workers: int = Field(default=1, ge=1, description="API server processes.")
    api_max_body_size: int = Field(
        default=114688,
        ge=1,
        description="Largest request body in bytes (Neutron's max_request_body_size); a "
        "larger one is answered 413 before the rest of it is read.",
    )
    api_request_read_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a request's headers, and again its whole "
        "body; a slower one is closed (a slow body gets a 408 first).",
    )
    api_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections per API process; one more is answered 503 and closed "
        "at once (requests in flight are capped alike: uvicorn's limit_concurrency).",
    )
    auth_strategy: Literal["noauth", "token", "keystone"] = Field(
        default="noauth",
        description="noauth: callers act as admin of default_project_id (loopback only). "
        "token: bearer tokens from tokens_file.",
    )
    keystone_authtoken: KeystoneAuthtoken = Field(default_factory=KeystoneAuthtoken)
    nova: NovaNotifier = Field(default_factory=NovaNotifier)
    notify_nova_on_port_status_changes: bool = True
    notify_nova_on_port_data_changes: bool = True
    send_events_interval: float = Field(default=2.0, gt=0)
    tokens_file: Path | None = Field(
        default=None,
        description="TOML file mapping tokens to project and roles (auth_strategy=token).",
    )
    default_project_id: str = Field(
        default="default", description="Project of noauth callers that name none."
    )
    allow_noauth_on_public: bool = Field(
        default=False,
        description="Permit auth_strategy=noauth on a non-loopback address (unsafe).",
    )
    noauth_trust_headers: bool = False
    policy_file: Path | None = None
    base_mac: str = Field(default="fa:16:3e:00:00:00", description="MAC prefix for ports.")
    global_physnet_mtu: int = Field(
        default=1500, ge=68, description="MTU of the underlay and physical networks."
    )
    default_network_type: Literal["geneve", "vxlan", "vlan", "flat"] = Field(
        default="geneve", description="provider:network_type when none is given."
    )
    vlan_ranges: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"physnet1": (1, 4094)},
        description="Tenant VLAN ranges per physical network.",
    )
    physical_networks: list[str] = Field(
        default_factory=lambda: ["physnet1"],
        description="Physical networks that flat and vlan networks may use.",
    )
    max_dns_nameservers: int = Field(default=5, description="DNS servers a subnet may list.")
    max_subnet_host_routes: int = Field(default=20, description="Host routes a subnet may list.")
    max_allowed_address_pair: int = Field(
        default=10, description="Allowed address pairs a port may list."
    )
    pagination_max_limit: int = Field(default=-1, description="-1: no maximum page size.")
    quotas: QuotaDefaults = Field(
        default_factory=QuotaDefaults,
        description="Default per-project quotas (-1: unlimited); override per project "
        "through the quotas API.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    chassis_name: str = Field(
        default="",
        description="Agent: this chassis's name in the store (default: the hostname).",
    )
    tunnel_ip: str = Field(
        default="127.0.0.1", description="Agent: underlay address other chassis tunnel to."
    )
    bridge: str = Field(default="br-int", description="Agent: the integration bridge.")
    encaps: list[Encap] = Field(
        default_factory=lambda: list[Encap](["geneve", "vxlan"]),
        description="Agent: tunnel types this chassis offers (a flow-based port on the "
        "integration bridge each); advertised in its chassis record.",
    )
    bridge_mappings: dict[str, str] = Field(
        default_factory=dict,
        description='Agent: physical network → OVS bridge (e.g. {physnet1 = "br-ex"}) for '
        "flat and vlan networks; the agent creates each bridge and patches it to the "
        "integration bridge, the operator adds the physical NIC to it. Advertised in the "
        "chassis record.",
    )
    gateway_priority: int = Field(default=0, ge=0, le=32767, description="Agent: gateway.")
    availability_zone: str = Field(default="nova", description="Agent: its zone.")
    underlay_interface: str = Field(
        default="",
        description="Agent: the underlay NIC (in OVS's namespace) to put into "
        "underlay_bridge, which then gets tunnel_ip/tunnel_prefixlen; empty: leave the "
        "underlay alone.",
    )
    underlay_bridge: str = Field(
        default="br-phy", description="Agent: the OVS bridge that holds the tunnel IP."
    )
    tunnel_prefixlen: int = Field(
        default=24, ge=1, le=32, description="Agent: prefix length of tunnel_ip on the underlay."
    )
    ovs_mode: Literal["private", "attach", "fake"] = Field(
        default="private",
        description="Agent: private starts our own ovsdb-server and ovs-vswitchd (userspace "
        "datapath) under ovs_run_dir; attach uses the OVS already running there; fake runs "
        "no switch at all (flows are recorded, ports requested on this chassis by "
        "binding:host_id count as plugged): for scale tests with many chassis.",
    )
    distribution: Literal["auto", "selective", "all"] = Field(
        default="auto",
        description="Agent: selective follows only what the local ports need (their "
        "networks, those behind their routers, their security groups); all follows the "
        "whole store; auto: selective on etcd, all otherwise (one host).",
    )
    ovs_run_dir: str = Field(
        default="",
        description="Agent: OVS run dir (db.sock, <bridge>.mgmt); empty: <run_dir>/ovs.",
    )
    ovs_netns: str = Field(
        default="auto",
        description="Agent: network namespace OVS runs in. auto: a private OVS gets its own "
        "(wyvern-<hash of its run dir>; a netdev bridge's tap devices would collide with "
        "another OVS), an attached one the host's; empty: the host's; else that name.",
    )
    agent_metrics_dir: str = Field(
        default="auto",
        description="Agent: directory of its Prometheus textfile, wyvern-agent-<chassis>.prom "
        "(counters of the loop, the flow installs and the packet-in services; point "
        "node_exporter's --collector.textfile.directory here; `wyvern punts` reads it). "
        "auto: <run_dir>/metrics; empty: no file. The agent opens no listening socket.",
    )
    agent_lease_ttl: float = Field(
        default=30.0,
        gt=0,
        description="Agent: TTL of its chassis record's store lease, kept alive every "
        "third of it; other chassis drop this one when it runs out and BFD to it is down.",
    )
    agent_liveness_grace: float = Field(
        default=0.0,
        ge=0,
        description="Agent: seconds a remote chassis with no BFD session to it (no encaps "
        "in common) stays after its lease ran out.",
    )
    agent_mac_binding_refresh: float = Field(
        default=60.0,
        gt=0,
        description="Agent: seconds between the probes (ARP, or an ND neighbour "
        "solicitation for IPv6) a gateway chassis sends for each learned MAC binding on "
        "the external networks it hosts gateways on; an answer with a new MAC replaces "
        "the binding (a replaced upstream router).",
    )
    agent_metering_interval: float = Field(
        default=10.0,
        gt=0,
        description="Agent: seconds between two readings of the metering counters.",
    )
    min_rtr_adv_interval: float = Field(
        default=30.0,
        ge=3,
        description="Agent: the shortest interval, in seconds, between two unsolicited "
        "router advertisements to a VM (Neutron's l3 agent option, radvd's "
        "MinRtrAdvInterval: at least 3, at most 0.75 x max_rtr_adv_interval).",
    )
    max_rtr_adv_interval: float = Field(
        default=100.0,
        ge=4,
        le=1800,
        description="Agent: the longest interval, in seconds, between two unsolicited "
        "router advertisements to a VM (Neutron's l3 agent option, radvd's "
        "MaxRtrAdvInterval); the router, RDNSS and DNSSL lifetimes are 3 x this.",
    )
    dhcp_lease_duration: int = Field(
        default=86400,
        ge=60,
        description="Agent: DHCP lease time in seconds (Neutron's option), for DHCPv4 "
        "leases and DHCPv6 address lifetimes; renewal at 1/2, rebinding at 7/8 of it.",
    )
    dns_domain: str = Field(
        default="openstacklocal",
        description="API and agent: Neutron's `dns_domain`: the domain of ports' "
        "dns_assignment (while it is `openstacklocal`, Neutron's default, a port's dns_name "
        "is not used and every hostname is host-<ip>), and the domain DHCPv4 (option 15), "
        "DHCPv6 (domain search) and RAs give on networks without a dns_domain; a port's "
        "extra_dhcp_opts override it.",
    )
    nova_metadata_host: str = Field(
        default="",
        description="Agent: host of Nova's metadata API, where the metadata proxy sends "
        "what VMs ask 169.254.169.254 and fe80::a9fe:a9fe (Neutron's option); empty: "
        "every such request gets a 404 JSON saying metadata is not configured.",
    )
    nova_metadata_port: int = Field(
        default=8775, ge=1, le=65535, description="Agent: TCP port of Nova's metadata API."
    )
    nova_metadata_protocol: Literal["http", "https"] = Field(
        default="http", description="Agent: protocol of Nova's metadata API."
    )
    metadata_proxy_shared_secret: str = Field(
        default="",
        description="Agent: the secret shared with Nova (its "
        "[neutron]metadata_proxy_shared_secret) that signs X-Instance-ID.",
    )

    @model_validator(mode="after")
    def _refuse_open_noauth(self) -> OldSettings:
        loopback = self.api_host in ("127.0.0.1", "localhost", "::1") or self.api_host.startswith(
            "127."
        )
        if self.auth_strategy == "noauth" and not loopback and not self.allow_noauth_on_public:
            raise ValueError(
                f"auth_strategy=noauth refuses to listen on {self.api_host}: use "
                "auth_strategy=token (or set allow_noauth_on_public=true knowingly)"
            )
        if self.auth_strategy == "token" and self.tokens_file is None:
            raise ValueError("auth_strategy=token needs tokens_file")
        if self.min_rtr_adv_interval > 0.75 * self.max_rtr_adv_interval:
            raise ValueError(RA_INTERVALS)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# Variables the old nested model (itself a BaseSettings without prefix) would also have read.
QUOTA_ENV = ("network", "subnet", "port", "router", "floatingip", "security_group")

FULL_TOML = """
run_dir = "/srv/wyvern"
store = "etcd"
sqlite_path = "/srv/db.sqlite"
etcd_endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
api_host = "127.0.0.2"
api_port = 9000
api_workers = 4
default_project_id = "p1"
allow_noauth_on_public = true
base_mac = "fa:16:3e:11:00:00"
global_physnet_mtu = 9000
default_network_type = "vlan"
vlan_ranges = { physnet1 = [100, 200], physnet2 = [1, 10] }
physical_networks = ["physnet1", "physnet2"]
max_dns_nameservers = 3
pagination_max_limit = 100
log_level = "DEBUG"
chassis_name = "hv1"
tunnel_ip = "192.0.2.1"
bridge = "br-x"
encaps = ["vxlan"]
bridge_mappings = { physnet1 = "br-ex", Physnet2 = "br-2" }
underlay_interface = "eth1"
tunnel_prefixlen = 16
ovs_mode = "fake"
distribution = "selective"
ovs_run_dir = "/run/ovs"
ovs_netns = ""
agent_metrics_dir = "/var/lib/node_exporter"
agent_lease_ttl = 12.5

[quotas]
network = 1
port = -1
"""

E = dict[str, str]
CASES: list[tuple[str, E, str | None, dict[str, Any]]] = [
    ("defaults", {}, None, {}),
    ("full toml", {}, FULL_TOML, {}),
    (
        "toml then env then kwargs",
        {"WYVERN_API_PORT": "9001", "WYVERN_QUOTAS__SUBNET": "4"},
        FULL_TOML,
        {"api_port": 9002, "quotas": {"router": 5}},
    ),
    (
        "toml dicts deep-merged with env",
        {"WYVERN_BRIDGE_MAPPINGS": '{"physnet3": "br-3"}'},
        FULL_TOML,
        {},
    ),
    ("toml case-insensitive names", {}, "API_PORT = 1\n[QUOTAS]\nPORT = 2\n", {}),
    ("toml unknown key", {}, "bogus = 1\n", {}),
    ("toml unknown nested key", {}, "[quotas]\nbogus = 1\n", {}),
    ("toml wrong types", {}, 'api_host = 1\nrun_dir = 2\napi_port = "x"\nencaps = "geneve"\n', {}),
    ("toml float for int", {}, "api_port = 9000.0\nmax_dns_nameservers = 2.5\n", {}),
    ("toml bad tuple", {}, "vlan_ranges = { a = [1], b = [1, 2, 3], c = 5 }\n", {}),
    ("toml quotas not a table", {}, "quotas = 5\n", {}),
    (
        "env ints",
        {
            "WYVERN_API_PORT": " 42 ",
            "WYVERN_API_WORKERS": "1_0",
            "WYVERN_GLOBAL_PHYSNET_MTU": "+9000",
            "WYVERN_MAX_DNS_NAMESERVERS": "4.0",
            "WYVERN_PAGINATION_MAX_LIMIT": "-0",
        },
        None,
        {},
    ),
    *[
        (f"env int {v!r}", {"WYVERN_API_WORKERS": v}, None, {})
        for v in ["1e3", "42.", "0x10", "", " ", "1 000", "1__0", "_1", "42.5", "٣", "0", "65536"]
    ],
    *[(f"env port {v!r}", {"WYVERN_API_PORT": v}, None, {}) for v in ["65535", "65536", "0"]],
    *[
        (f"env float {v!r}", {"WYVERN_AGENT_LEASE_TTL": v}, None, {})
        for v in ["1", " 1e1 ", "1_0.5", ".5", "inf", "nan", "-inf", "0", "-1", "0x1p3", "٣", "x"]
    ],
    *[
        (f"env bool {v!r}", {"WYVERN_ALLOW_NOAUTH_ON_PUBLIC": v}, None, {})
        for v in [
            "true",
            "False",
            "YES",
            "no",
            "on",
            "OFF",
            "1",
            "0",
            "t",
            "f",
            "y",
            "n",
            " true ",
            "2",
            "",
            "1.0",
        ]
    ],
    (
        "env strings and paths",
        {
            "WYVERN_RUN_DIR": "/tmp/x",
            "WYVERN_SQLITE_PATH": "rel/db",
            "WYVERN_TOKENS_FILE": "/etc/t.toml",
            "WYVERN_CHASSIS_NAME": "",
            "WYVERN_LOG_LEVEL": "debug",
        },
        None,
        {},
    ),
    ("env empty path", {"WYVERN_SQLITE_PATH": ""}, None, {}),
    (
        "env literals",
        {
            "WYVERN_STORE": "etcd",
            "WYVERN_OVS_MODE": "attach",
            "WYVERN_DISTRIBUTION": "all",
            "WYVERN_DEFAULT_NETWORK_TYPE": "flat",
            "WYVERN_AUTH_STRATEGY": "token",
            "WYVERN_TOKENS_FILE": "/t",
        },
        None,
        {},
    ),
    ("env bad literals", {"WYVERN_STORE": "SQLITE", "WYVERN_OVS_MODE": "x"}, None, {}),
    (
        "env lists",
        {
            "WYVERN_ETCD_ENDPOINTS": ' ["http://a:1", "http://b:2"] ',
            "WYVERN_ENCAPS": '["vxlan"]',
            "WYVERN_PHYSICAL_NETWORKS": "[]",
        },
        None,
        {},
    ),
    (
        "env bad lists",
        {
            "WYVERN_ENCAPS": '["gre"]',
            "WYVERN_PHYSICAL_NETWORKS": '"a"',
            "WYVERN_ETCD_ENDPOINTS": "[1]",
        },
        None,
        {},
    ),
    ("env list not json", {"WYVERN_ETCD_ENDPOINTS": "http://a:1"}, None, {}),
    ("env list empty", {"WYVERN_ETCD_ENDPOINTS": ""}, None, {}),
    ("env list null", {"WYVERN_ETCD_ENDPOINTS": "null"}, None, {}),
    ("env list nested", {"WYVERN_ETCD_ENDPOINTS__0": "x"}, None, {}),
    (
        "env dicts",
        {
            "WYVERN_VLAN_RANGES": '{"p": ["1", "10"], "q": [5, 6]}',
            "WYVERN_BRIDGE_MAPPINGS": '{"physnet1": "br-ex"}',
        },
        None,
        {},
    ),
    (
        "env dict nested keys",
        {"WYVERN_BRIDGE_MAPPINGS__PhysNet1": "br-x", "WYVERN_VLAN_RANGES__physnet2": "[1, 10]"},
        None,
        {},
    ),
    (
        "env dict json and nested",
        {"WYVERN_BRIDGE_MAPPINGS": '{"x": "y"}', "WYVERN_BRIDGE_MAPPINGS__A": "1"},
        None,
        {},
    ),
    (
        "env bad dicts",
        {"WYVERN_VLAN_RANGES": '{"p": [1, 10, 3], "q": "1,2"}', "WYVERN_BRIDGE_MAPPINGS": '["x"]'},
        None,
        {},
    ),
    ("env nested tuple not json", {"WYVERN_VLAN_RANGES__P": "notjson"}, None, {}),
    ("env quotas", {"WYVERN_QUOTAS__PORT": "7", "wyvern_quotas__network": "1.0"}, None, {}),
    (
        "env quotas json and nested",
        {"WYVERN_QUOTAS": '{"port": 3}', "WYVERN_QUOTAS__NETWORK": "4"},
        None,
        {},
    ),
    (
        "env quotas errors",
        {"WYVERN_QUOTAS__PORT": "-2", "WYVERN_QUOTAS__BOGUS": "1", "WYVERN_QUOTAS__ROUTER": "x"},
        None,
        {},
    ),
    ("env quotas not json", {"WYVERN_QUOTAS": "notjson"}, None, {}),
    ("env quotas not a dict", {"WYVERN_QUOTAS": "5"}, None, {}),
    ("env lower-case names", {"wyvern_api_port": "77", "Wyvern_Store": "memory"}, None, {}),
    ("env unknown names ignored", {"WYVERN_BOGUS": "1", "WYVERN_API_PORT__X": "2"}, None, {}),
    (
        "env many errors",
        {
            "WYVERN_API_PORT": "0",
            "WYVERN_STORE": "x",
            "WYVERN_TUNNEL_PREFIXLEN": "33",
            "WYVERN_API_HOST": "0.0.0.0",
        },
        None,
        {},
    ),
    ("noauth on public", {"WYVERN_API_HOST": "0.0.0.0"}, None, {}),
    (
        "noauth on public allowed",
        {"WYVERN_API_HOST": "0.0.0.0", "WYVERN_ALLOW_NOAUTH_ON_PUBLIC": "true"},
        None,
        {},
    ),
    ("noauth on 127/8", {"WYVERN_API_HOST": "127.1.2.3"}, None, {}),
    ("token needs tokens_file", {"WYVERN_AUTH_STRATEGY": "token"}, None, {}),
    (
        "ra intervals",
        {"WYVERN_MIN_RTR_ADV_INTERVAL": "3", "WYVERN_MAX_RTR_ADV_INTERVAL": "4"},
        None,
        {},
    ),
    ("ra min over 0.75 max", {"WYVERN_MIN_RTR_ADV_INTERVAL": "80"}, None, {}),
    (
        "ra intervals out of range",
        {},
        "min_rtr_adv_interval = 1\nmax_rtr_adv_interval = 2000\n",
        {},
    ),
    (
        "token on public",
        {},
        None,
        {"auth_strategy": "token", "tokens_file": "/t", "api_host": "0.0.0.0"},
    ),
    (
        "kwargs",
        {},
        None,
        {
            "store": "memory",
            "api_port": True,
            "agent_lease_ttl": 3,
            "allow_noauth_on_public": 1,
            "etcd_endpoints": ("a", "b"),
            "run_dir": Path("/x"),
            "sqlite_path": None,
            "vlan_ranges": {"a": [1, 2]},
        },
    ),
    ("kwargs case-insensitive", {"WYVERN_API_PORT": "77"}, None, {"API_PORT": 5}),
    (
        "kwargs merge nested with env",
        {"WYVERN_QUOTAS__PORT": "9"},
        None,
        {"quotas": {"network": 3}},
    ),
    (
        "kwargs list replaces env",
        {"WYVERN_PHYSICAL_NETWORKS": '["a"]'},
        None,
        {"physical_networks": ["c"]},
    ),
    (
        "kwargs bad",
        {},
        None,
        {
            "api_port": 42.5,
            "api_host": 5,
            "run_dir": 5,
            "bogus": 1,
            "vlan_ranges": {1: (1, 2), "b": (1,)},
            "quotas": 5,
            "allow_noauth_on_public": 2,
            "etcd_endpoints": "abc",
        },
    ),
    ("kwargs bool for float and int", {}, None, {"agent_lease_ttl": True, "api_workers": True}),
]


def _outcome_old(kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", OldSettings(**kwargs).model_dump()
    except ValidationError as exc:
        errors = [(e["loc"], e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        return "invalid", errors
    except ValueError:  # pydantic-settings' SettingsError: an env value is not JSON
        return "unparsable", None


def _outcome_new(kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", dataclasses.asdict(Settings(**kwargs))
    except ConfigError as exc:
        if "error parsing value" in str(exc):
            return "unparsable", None
        return "invalid", exc.errors


@pytest.mark.parametrize(
    ("env", "toml", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_same_outcome_as_pydantic_settings(
    env: E,
    toml: str | None,
    kwargs: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.upper().startswith("WYVERN_") or key.lower() in QUOTA_ENV:
            monkeypatch.delenv(key)
    monkeypatch.setenv("WYVERN_RUN_DIR", str(tmp_path))  # no stray <run_dir>/wyvern.toml
    if toml is not None:
        (tmp_path / "w.toml").write_text(toml)
        monkeypatch.setenv("WYVERN_CONFIG", str(tmp_path / "w.toml"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    old = _outcome_old(kwargs)
    new = _outcome_new(kwargs)
    assert new == old
