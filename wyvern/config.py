"""One typed settings object, read from a TOML file and WYVERN_* environment variables.

Precedence (highest first): keyword arguments, environment (`WYVERN_<NAME>`), the TOML file
(`WYVERN_CONFIG`, else `<run_dir>/wyvern.toml` if present), the defaults below.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_RUN_DIR = "/var/lib/wyvern"
MAX_OVS_DIR = 85


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _toml_file() -> Path | None:
    explicit = os.environ.get("WYVERN_CONFIG")
    if explicit:
        return Path(explicit)
    candidate = Path(os.environ.get("WYVERN_RUN_DIR", DEFAULT_RUN_DIR)) / "wyvern.toml"
    return candidate if candidate.is_file() else None


Encap = Literal["geneve", "vxlan"]


class QuotaDefaults(BaseSettings):
    """Neutron's default quotas; -1 means unlimited."""

    network: int = Field(default=100, ge=-1, description="Networks a project may own.")
    subnet: int = Field(default=100, ge=-1, description="Subnets a project may own.")
    port: int = Field(default=500, ge=-1, description="Ports a project may own.")
    router: int = Field(default=10, ge=-1, description="Routers a project may own.")
    floatingip: int = Field(default=50, ge=-1, description="Floating IPs a project may own.")
    security_group: int = Field(default=10, ge=-1, description="Security groups a project may own.")
    security_group_rule: int = Field(
        default=100, ge=-1, description="Security group rules a project may own."
    )


class Settings(BaseSettings):
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
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=9696, ge=1, le=65535, description="API TCP port.")
    api_workers: int = Field(default=1, ge=1, description="API server processes.")
    auth_strategy: Literal["noauth", "token"] = Field(
        default="noauth",
        description="noauth: callers act as admin of default_project_id (loopback only). "
        "token: bearer tokens from tokens_file.",
    )
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
    agent_lease_ttl: float = Field(
        default=30.0,
        gt=0,
        description="Agent: TTL of its chassis record's store lease, kept alive every "
        "third of it; other chassis drop this one when it runs out.",
    )

    @model_validator(mode="after")
    def _refuse_open_noauth(self) -> Settings:
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
    def agent_netns(self) -> str | None:
        if self.ovs_netns == "auto":
            if self.ovs_mode == "attach":
                return None
            return f"wyvern-{_short_hash(str(self.agent_ovs_dir))}"
        return self.ovs_netns or None


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
