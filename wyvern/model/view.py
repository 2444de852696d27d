"""The local view: typed records of the objects a chassis follows, with indexes.

Records are built from the API's stored JSON (internal fields such as `_key` included),
so the agent never depends on how the API renders objects. The view is plain data: the
sync layer applies changes to it, apps only read it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Kind = Literal[
    "network", "subnet", "port", "router", "security_group", "security_group_rule",
    "address_group", "chassis", "binding", "port_chassis", "mac_binding", "chassis_down",
    "gateway_host", "metering_label",
    "gateway_host", "qos_policy",
]  # fmt: skip
# "port_chassis" changes carry chassis names (old, new) of a port's binding status, which
# lives in LocalView.port_chassis rather than in a table.


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    key: int
    network_type: str
    segmentation_id: int | None
    physical_network: str | None
    mtu: int
    port_security_enabled: bool
    admin_state_up: bool
    external: bool
    # The key of the address scope of its IPv4 / IPv6 subnets (0: none), which the API
    # derives from their subnet pools: routers route between scopes only by NAT.
    scope4: int = 0
    scope6: int = 0
    dns_domain: str = ""  # the domain DHCP gives its ports ('': the dns_domain setting)
    qos_policy_id: str | None = None  # its ports' QoS policy, unless a port has its own

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Network:
        return cls(
            id=o["id"],
            key=int(o["_key"]),
            network_type=o.get("provider:network_type") or "geneve",
            segmentation_id=o.get("provider:segmentation_id"),
            physical_network=o.get("provider:physical_network"),
            mtu=int(o.get("mtu") or 1500),
            port_security_enabled=bool(o.get("port_security_enabled", True)),
            admin_state_up=bool(o.get("admin_state_up", True)),
            external=bool(o.get("router:external", False)),
            scope4=int(o.get("_scope_key4") or 0),
            scope6=int(o.get("_scope_key6") or 0),
            dns_domain=o.get("dns_domain") or "",
            qos_policy_id=o.get("qos_policy_id") or None,
        )


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[tuple[str, str], ...]  # (destination CIDR, nexthop)
    ipv6_ra_mode: str | None
    ipv6_address_mode: str | None

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Subnet:
        return cls(
            id=o["id"],
            network_id=o["network_id"],
            cidr=o["cidr"],
            ip_version=int(o["ip_version"]),
            gateway_ip=o.get("gateway_ip"),
            enable_dhcp=bool(o.get("enable_dhcp", True)),
            dns_nameservers=tuple(o.get("dns_nameservers") or ()),
            host_routes=tuple((r["destination"], r["nexthop"]) for r in o.get("host_routes") or ()),
            ipv6_ra_mode=o.get("ipv6_ra_mode"),
            ipv6_address_mode=o.get("ipv6_address_mode"),
        )

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True, slots=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class AddressPair:
    ip_address: str  # an IP or a CIDR
    mac_address: str


@dataclass(frozen=True, slots=True)
class DhcpOpt:
    opt_name: str
    opt_value: str
    ip_version: int


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    network_id: str
    key: int
    mac: str
    fixed_ips: tuple[FixedIp, ...]
    device_owner: str
    device_id: str
    name: str
    admin_state_up: bool
    port_security_enabled: bool
    allowed_address_pairs: tuple[AddressPair, ...]
    security_group_ids: tuple[str, ...]
    extra_dhcp_opts: tuple[DhcpOpt, ...]
    binding_host: str
    project_id: str = ""  # (the metadata proxy's X-Tenant-ID)
    dns_name: str = ""  # (DHCP's hostname: wyvern.model.dns)
    qos_policy_id: str | None = None  # its own QoS policy (overrides its network's)
    # A trunk's parent: its subports and their VLANs; a subport: its parent and VLAN
    # (the API's `_trunk` and `_subport`, wyvern.api.resources.trunks).
    trunk_subports: tuple[tuple[str, int], ...] = ()
    trunk_parent: str = ""
    trunk_vlan: int = 0

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Port:
        mac = o["mac_address"]
        return cls(
            id=o["id"],
            network_id=o["network_id"],
            key=int(o["_key"]),
            mac=mac,
            fixed_ips=tuple(
                FixedIp(f["subnet_id"], f["ip_address"]) for f in o.get("fixed_ips") or ()
            ),
            device_owner=o.get("device_owner") or "",
            device_id=o.get("device_id") or "",
            name=o.get("name") or "",
            admin_state_up=bool(o.get("admin_state_up", True)),
            port_security_enabled=bool(o.get("port_security_enabled", True)),
            allowed_address_pairs=tuple(
                AddressPair(p["ip_address"], p.get("mac_address") or mac)
                for p in o.get("allowed_address_pairs") or ()
            ),
            security_group_ids=tuple(o.get("security_groups") or ()),
            extra_dhcp_opts=tuple(
                DhcpOpt(d["opt_name"], str(d["opt_value"]), int(d.get("ip_version") or 4))
                for d in o.get("extra_dhcp_opts") or ()
            ),
            binding_host=o.get("binding:host_id") or "",
            project_id=o.get("project_id") or o.get("tenant_id") or "",
            dns_name=o.get("dns_name") or "",
            qos_policy_id=o.get("qos_policy_id") or None,
            trunk_subports=tuple(
                (str(p), int(v)) for p, v in (o.get("_trunk") or {}).get("subports") or ()
            ),
            trunk_parent=str((o.get("_subport") or {}).get("parent_id") or ""),
            trunk_vlan=int((o.get("_subport") or {}).get("vlan") or 0),
        )

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(f.ip_address for f in self.fixed_ips)

    @property
    def is_router_port(self) -> bool:
        return self.device_owner.startswith("network:router_interface")


@dataclass(frozen=True, slots=True)
class RouterInterface:
    port_id: str
    network_id: str
    subnet_ids: tuple[str, ...]
    ips: tuple[tuple[str, str], ...]  # (ip address, subnet cidr)


@dataclass(frozen=True, slots=True)
class FloatingIp:
    """An associated floating IP, as its router carries it (`_fips`, written by the API
    with the association): the router is what the agent follows."""

    id: str
    router_id: str
    network_id: str  # the external network
    ip: str  # the floating address
    fixed_ip: str  # the port's address it maps to
    port_id: str  # the associated port
    mac: str  # the floating IP's own port on the external network
    key: int  # that port's key

    @classmethod
    def from_obj(cls, router_id: str, network_id: str, fid: str, o: dict[str, Any]) -> FloatingIp:
        return cls(
            id=fid,
            router_id=router_id,
            network_id=network_id,
            ip=o["floating_ip_address"],
            fixed_ip=o["fixed_ip_address"],
            port_id=o["port_id"],
            mac=o["mac"],
            key=int(o["key"]),
        )


@dataclass(frozen=True, slots=True)
class PortForwarding:
    """A floating IP port forwarding, as its router carries it (`_pfs`, written by the
    API): TCP or UDP to the floating address on external ports ext[0]..ext[1] goes to
    internal_ip on int_[0]..int_[1] (the same offset), or on int_[0] alone."""

    id: str
    fip_id: str
    router_id: str
    network_id: str  # the external network
    ip: str  # the floating address
    protocol: str  # tcp | udp
    internal_ip: str
    internal_port_id: str
    ext: tuple[int, int]
    int_: tuple[int, int]

    @classmethod
    def from_obj(
        cls, router_id: str, network_id: str, pid: str, o: dict[str, Any]
    ) -> PortForwarding:
        ext, int_ = o["ext"], o["int"]
        return cls(
            id=pid,
            fip_id=o["fip_id"],
            router_id=router_id,
            network_id=network_id,
            ip=o["floating_ip_address"],
            protocol=o["protocol"],
            internal_ip=o["internal_ip_address"],
            internal_port_id=o["internal_port_id"],
            ext=(int(ext[0]), int(ext[1])),
            int_=(int(int_[0]), int(int_[1])),
        )


@dataclass(frozen=True, slots=True)
class Router:
    id: str
    key: int
    admin_state_up: bool
    interfaces: tuple[RouterInterface, ...]
    routes: tuple[tuple[str, str], ...]  # (destination CIDR, nexthop)
    gateway_network_id: str | None
    gateway_port_id: str | None
    enable_snat: bool
    floating_ips: tuple[FloatingIp, ...] = ()
    port_forwardings: tuple[PortForwarding, ...] = ()
    # The zones its gateway may go to (availability_zone_hints; (): any), sorted.
    az_hints: tuple[str, ...] = ()
    project_id: str = ""  # (the metering labels of its project count its traffic)

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Router:
        gw = o.get("external_gateway_info") or {}
        return cls(
            id=o["id"],
            key=int(o["_key"]),
            admin_state_up=bool(o.get("admin_state_up", True)),
            interfaces=tuple(
                RouterInterface(
                    port_id=i["port_id"],
                    network_id=i["network_id"],
                    subnet_ids=tuple(f["subnet_id"] for f in i.get("fixed_ips") or ()),
                    ips=tuple((f["ip_address"], f["cidr"]) for f in i.get("fixed_ips") or ()),
                )
                for i in o.get("_interfaces") or ()
            ),
            routes=tuple((r["destination"], r["nexthop"]) for r in o.get("routes") or ()),
            gateway_network_id=gw.get("network_id"),
            gateway_port_id=o.get("_gw_port_id"),
            enable_snat=bool(gw.get("enable_snat", True)),
            floating_ips=tuple(
                FloatingIp.from_obj(o["id"], gw["network_id"], fid, f)
                for fid, f in sorted((o.get("_fips") or {}).items())
            )
            if gw.get("network_id")
            else (),
            port_forwardings=tuple(
                PortForwarding.from_obj(o["id"], gw["network_id"], pid, p)
                for pid, p in sorted((o.get("_pfs") or {}).items())
            )
            if gw.get("network_id")
            else (),
            az_hints=tuple(sorted(set(o.get("availability_zone_hints") or ()))),
            project_id=o.get("project_id") or o.get("tenant_id") or "",
        )


@dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    id: str
    security_group_id: str
    direction: str  # ingress | egress (as seen from the VM)
    ethertype: str  # IPv4 | IPv6
    protocol: str | None  # name or number as the API normalised it; None = any
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    remote_address_group_id: str | None

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> SecurityGroupRule:
        proto = o.get("protocol")
        return cls(
            id=o["id"],
            security_group_id=o["security_group_id"],
            direction=o["direction"],
            ethertype=o.get("ethertype") or "IPv4",
            protocol=None if proto is None else str(proto),
            port_range_min=o.get("port_range_min"),
            port_range_max=o.get("port_range_max"),
            remote_ip_prefix=o.get("normalized_cidr") or o.get("remote_ip_prefix"),
            remote_group_id=o.get("remote_group_id"),
            remote_address_group_id=o.get("remote_address_group_id"),
        )


@dataclass(frozen=True, slots=True)
class SecurityGroup:
    id: str
    stateful: bool

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> SecurityGroup:
        return cls(id=o["id"], stateful=bool(o.get("stateful", True)))


@dataclass(frozen=True, slots=True)
class AddressGroup:
    id: str
    addresses: tuple[str, ...]

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> AddressGroup:
        return cls(id=o["id"], addresses=tuple(o.get("addresses") or ()))


@dataclass(frozen=True, slots=True)
class MeterRule:
    """One metering label rule, as the prefixes it matches inside the router: Neutron
    meters after DNAT and before SNAT, so both are the VM side's addresses there. A
    legacy `remote_ip_prefix` is the source of egress traffic and the destination of
    ingress traffic (Neutron's iptables driver: `-s` with `-o`, `-d` with `-i`)."""

    id: str
    direction: str  # ingress (into the router from its gateway) | egress (out by it)
    excluded: bool
    source: str | None  # a CIDR, or None: any
    destination: str | None

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> MeterRule:
        direction = o["direction"]
        source, destination = o.get("source_ip_prefix"), o.get("destination_ip_prefix")
        remote = o.get("remote_ip_prefix")
        if remote:
            if direction == "egress":
                source = remote
            else:
                destination = remote
        return cls(o["id"], direction, bool(o.get("excluded")), source, destination)


@dataclass(frozen=True, slots=True)
class MeteringLabel:
    """A metering label with its rules (the API keeps them in the label's record, so an
    agent follows labels alone): counts the traffic of every router of its project
    through the router's gateway, or of every router when shared."""

    id: str
    key: int  # small and unique: its slot in the meter_count stage
    project_id: str
    shared: bool
    rules: tuple[MeterRule, ...]

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> MeteringLabel:
        return cls(
            id=o["id"],
            key=int(o["_key"]),
            project_id=o.get("project_id") or o.get("tenant_id") or "",
            shared=bool(o.get("shared")),
            rules=tuple(MeterRule.from_obj(r) for _, r in sorted((o.get("_rules") or {}).items())),
        )


@dataclass(frozen=True, slots=True)
class QosRule:
    """One rule of a QoS policy: `kind` bandwidth_limit (rate in kbit/s, burst in kbit),
    packet_rate_limit (rate and burst in kpps) or dscp_marking (rate = the mark);
    direction as Neutron's, seen from the VM (egress: what it sends)."""

    kind: str
    direction: str
    rate: int
    burst: int = 0


@dataclass(frozen=True, slots=True)
class QosPolicy:
    id: str
    rules: tuple[QosRule, ...]

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> QosPolicy:
        rules = []
        for r in sorted((o.get("_rules") or {}).values(), key=lambda r: str(r["id"])):
            kind = r["type"]
            if kind == "bandwidth_limit":
                rules.append(
                    QosRule(kind, r["direction"], int(r["max_kbps"]), int(r["max_burst_kbps"]))
                )
            elif kind == "packet_rate_limit":
                rules.append(
                    QosRule(kind, r["direction"], int(r["max_kpps"]), int(r["max_burst_kpps"]))
                )
            elif kind == "dscp_marking":
                rules.append(QosRule(kind, "egress", int(r["dscp_mark"])))
        return cls(id=o["id"], rules=tuple(rules))


@dataclass(frozen=True, slots=True)
class Chassis:
    name: str
    tunnel_ip: str
    encaps: tuple[str, ...]
    bridge_mappings: tuple[tuple[str, str], ...]  # (physnet, bridge)
    gateway_priority: int = 0  # 0: never hosts a router gateway
    availability_zone: str = "nova"
    # False: disabled through the API (agent admin_state_up): no router gateway goes there.
    enabled: bool = True

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Chassis:
        return cls(
            name=o["name"],
            tunnel_ip=o.get("tunnel_ip") or "",
            encaps=tuple(o.get("encaps") or ("geneve", "vxlan")),
            bridge_mappings=tuple(
                (k, v) for k, v in sorted((o.get("bridge_mappings") or {}).items())
            ),
            gateway_priority=int(o.get("gateway_priority") or 0),
            availability_zone=str(o.get("availability_zone") or "nova"),
            enabled=o.get("admin_state_up") is not False,
        )


@dataclass(frozen=True, slots=True)
class MacBinding:
    """A neighbour outside Neutron (an upstream router, a host on an external network)
    whose MAC an agent learned by ARP: OVN's MAC_Binding. The id is derived from
    (network, IP) (wyvern.model.keys.mac_binding_id), so a re-learn replaces it."""

    id: str
    network_id: str
    ip: str
    mac: str

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> MacBinding:
        return cls(id=o["id"], network_id=o["network_id"], ip=o["ip"], mac=o["mac"])


@dataclass(frozen=True, slots=True)
class GatewayHost:
    """The chassis that reports hosting a router's gateway, with its flows installed
    (`/wyvern/status/gateways/<router>`, written by that chassis's agent): among gateway
    chassis of equal priority the one hosting it keeps it (wyvern.apps.gateway)."""

    chassis: str

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> GatewayHost:
        if o.get("status", "ACTIVE") != "ACTIVE":
            raise ValueError(f"status {o.get('status')!r}")
        return cls(chassis=str(o["chassis"]))


@dataclass(frozen=True, slots=True)
class Binding:
    """A port plugged into this chassis's br-int (from OVS, not from the store)."""

    port_id: str
    ofport: int
    # A trunk's subport: the OpenFlow port of its patch's other end, where the trunk app
    # tags its frames for the parent's VIF (wyvern.apps.trunk); 0 for any other port.
    trunk_ofport: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One object changed: `old` and `new` are records (None = absent before/after)."""

    kind: Kind
    id: str
    old: Any
    new: Any


@dataclass
class LocalView:
    """Everything an app may read. Indexes are kept in step by `apply`."""

    chassis_name: str = ""
    networks: dict[str, Network] = field(default_factory=dict)
    subnets: dict[str, Subnet] = field(default_factory=dict)
    ports: dict[str, Port] = field(default_factory=dict)
    routers: dict[str, Router] = field(default_factory=dict)
    security_groups: dict[str, SecurityGroup] = field(default_factory=dict)
    rules: dict[str, SecurityGroupRule] = field(default_factory=dict)
    address_groups: dict[str, AddressGroup] = field(default_factory=dict)
    qos_policies: dict[str, QosPolicy] = field(default_factory=dict)
    chassis: dict[str, Chassis] = field(default_factory=dict)
    mac_bindings: dict[str, MacBinding] = field(default_factory=dict)  # by mac_binding_id
    metering_labels: dict[str, MeteringLabel] = field(default_factory=dict)
    # every associated floating IP of the routers followed (from their records), by id
    floatingips: dict[str, FloatingIp] = field(default_factory=dict)
    # (router id, fixed IP) -> the floating IPs mapping it (one: the API claims it)
    fips_by_fixed: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    # floating IP id -> router id -> its record there: while a floating IP moves between
    # routers both may list it for a moment; `floatingips` shows the lowest router's, so
    # the index only changes where a router's own list did (touched_keys)
    fip_holders: dict[str, dict[str, FloatingIp]] = field(default_factory=dict)
    # Gateway chassis that must not host gateways now (from the agent, not the store):
    # another one whose BFD says its dataplane is down, or this one while it holds back
    # after a (re)start until the others see it (wyvern.apps.gateway).
    chassis_down: dict[str, bool] = field(default_factory=dict)
    # router id -> the chassis that reports hosting its gateway (wyvern.apps.gateway)
    gateway_hosts: dict[str, GatewayHost] = field(default_factory=dict)
    bindings: dict[str, Binding] = field(default_factory=dict)  # local ports only
    # Where every port is bound (port id -> chassis name), from the binding status keys.
    port_chassis: dict[str, str] = field(default_factory=dict)
    # indexes
    ports_by_network: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    subnets_by_network: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ports_by_sg: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    rules_by_sg: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    routers_by_network: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # group -> canonical CIDR (canonical_net) of its members' addresses and address pairs
    # -> how many members hold it: remote_group_id rules ask "is X a member address?"
    # per address, in O(1), instead of listing every member.
    sg_addresses: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    # (network id, fixed IP) -> the ports holding it (normally one; IPAM makes it unique)
    ports_by_ip: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    # (network id, lower-case MAC) -> the ports holding it (normally one per network)
    ports_by_mac: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    # network id -> its ports that list allowed address pairs (a VIP may be any of them)
    pair_ports_by_network: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def derive(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(self, *args)`: a pure function of the view that many flows() calls share.
        The engine's reading view memoises it and records what it read, so a change
        recomputes it once and reaches its readers only if its value changed."""
        return fn(self, *args)

    def _table(self, kind: Kind) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "network": self.networks,
            "subnet": self.subnets,
            "port": self.ports,
            "router": self.routers,
            "security_group": self.security_groups,
            "security_group_rule": self.rules,
            "address_group": self.address_groups,
            "qos_policy": self.qos_policies,
            "chassis": self.chassis,
            "mac_binding": self.mac_bindings,
            "metering_label": self.metering_labels,
            "chassis_down": self.chassis_down,
            "gateway_host": self.gateway_hosts,
            "binding": self.bindings,
        }
        return tables[kind]

    def apply(self, kind: Kind, id_: str, new: Any) -> Change:
        """Replace (or with new=None remove) one record; returns the change for the engine."""
        table = self._table(kind)
        old = table.get(id_)
        if new is None:
            table.pop(id_, None)
        else:
            table[id_] = new
        self._reindex(kind, id_, old, new)
        return Change(kind, id_, old, new)

    def _reindex(self, kind: Kind, id_: str, old: Any, new: Any) -> None:
        if kind == "port":
            if old is not None:
                self.ports_by_network[old.network_id].discard(id_)
                if old.allowed_address_pairs:
                    self.pair_ports_by_network[old.network_id].discard(id_)
                mac_key = (old.network_id, old.mac.lower())
                self.ports_by_mac[mac_key].discard(id_)
                if not self.ports_by_mac[mac_key]:
                    del self.ports_by_mac[mac_key]
                for ip in old.ips:
                    holders = self.ports_by_ip[(old.network_id, ip)]
                    holders.discard(id_)
                    if not holders:
                        del self.ports_by_ip[(old.network_id, ip)]
                for sg in old.security_group_ids:
                    self.ports_by_sg[sg].discard(id_)
                nets = port_nets(old)
                for sg in dict.fromkeys(old.security_group_ids) if nets else ():
                    counts = self.sg_addresses[sg]
                    for net in nets:
                        n = counts[net] - 1
                        if n:
                            counts[net] = n
                        else:
                            del counts[net]
                    if not counts:
                        del self.sg_addresses[sg]
            if new is not None:
                self.ports_by_network[new.network_id].add(id_)
                if new.allowed_address_pairs:
                    self.pair_ports_by_network[new.network_id].add(id_)
                self.ports_by_mac[(new.network_id, new.mac.lower())].add(id_)
                for ip in new.ips:
                    self.ports_by_ip[(new.network_id, ip)].add(id_)
                for sg in new.security_group_ids:
                    self.ports_by_sg[sg].add(id_)
                nets = port_nets(new)
                for sg in dict.fromkeys(new.security_group_ids) if nets else ():
                    counts = self.sg_addresses[sg]
                    for net in nets:
                        counts[net] = counts.get(net, 0) + 1
        elif kind == "subnet":
            if old is not None:
                self.subnets_by_network[old.network_id].discard(id_)
            if new is not None:
                self.subnets_by_network[new.network_id].add(id_)
        elif kind == "security_group_rule":
            if old is not None:
                self.rules_by_sg[old.security_group_id].discard(id_)
            if new is not None:
                self.rules_by_sg[new.security_group_id].add(id_)
        elif kind == "router":
            for r in (old, new):
                if r is not None:
                    for itf in r.interfaces:
                        self.routers_by_network[itf.network_id].discard(id_)
                    if r.gateway_network_id:
                        self.routers_by_network[r.gateway_network_id].discard(id_)
            if new is not None:
                for itf in new.interfaces:
                    self.routers_by_network[itf.network_id].add(id_)
                if new.gateway_network_id:
                    self.routers_by_network[new.gateway_network_id].add(id_)
            for fip in old.floating_ips if old is not None else ():
                by_router = self.fip_holders.get(fip.id, {})
                by_router.pop(id_, None)
                self._show_fip(fip.id, by_router)
                holders = self.fips_by_fixed[(id_, fip.fixed_ip)]
                holders.discard(fip.id)
                if not holders:
                    del self.fips_by_fixed[(id_, fip.fixed_ip)]
            for fip in new.floating_ips if new is not None else ():
                by_router = self.fip_holders.setdefault(fip.id, {})
                by_router[id_] = fip
                self._show_fip(fip.id, by_router)
                self.fips_by_fixed[(id_, fip.fixed_ip)].add(fip.id)

    def _show_fip(self, fip_id: str, by_router: dict[str, FloatingIp]) -> None:
        if by_router:
            self.floatingips[fip_id] = by_router[min(by_router)]
        else:
            self.floatingips.pop(fip_id, None)
            self.fip_holders.pop(fip_id, None)

    # ---- convenience queries for apps -------------------------------------------------------
    def network_ports(self, network_id: str) -> list[Port]:
        return [self.ports[p] for p in sorted(self.ports_by_network.get(network_id, ()))]

    def network_subnets(self, network_id: str) -> list[Subnet]:
        return [self.subnets[s] for s in sorted(self.subnets_by_network.get(network_id, ()))]

    def is_local(self, port_id: str) -> bool:
        return port_id in self.bindings

    def local_ports(self) -> list[Port]:
        return [self.ports[p] for p in sorted(self.bindings) if p in self.ports]

    def sg_rules(self, sg_id: str) -> list[SecurityGroupRule]:
        return [self.rules[r] for r in sorted(self.rules_by_sg.get(sg_id, ()))]

    def sg_member_ips(self, sg_id: str, ethertype: str) -> list[str]:
        """Addresses of every port in a group (for remote_group_id rules)."""
        version = 4 if ethertype == "IPv4" else 6
        out: set[str] = set()
        for pid in self.ports_by_sg.get(sg_id, ()):
            port = self.ports.get(pid)
            if port is None:
                continue
            for ip in port.ips:
                if _ip_version(ip) == version:
                    out.add(ip)
            for pair in port.allowed_address_pairs:
                if _net_version(pair.ip_address) == version:
                    out.add(pair.ip_address)
        return sorted(out)


DepKey = tuple[str, Any]  # (LocalView attribute, key in it)


def touched_keys(change: Change) -> Iterator[DepKey]:
    """The (table, key) entries of the view a change may have altered: its own record,
    and each index entry whose content it moved (as LocalView._reindex does). The engine
    recomputes exactly what read one of them; sg_addresses is keyed (group, CIDR).
    A superset is safe; missing one is not (test_engine's hypothesis tests check)."""
    kind, id_, old, new = change.kind, change.id, change.old, change.new
    yield TABLE_OF_KIND[kind], id_
    if kind == "port":
        for index, keys in (
            ("ports_by_network", lambda p: [p.network_id]),
            ("pair_ports_by_network", lambda p: [p.network_id] if p.allowed_address_pairs else []),
            ("ports_by_mac", lambda p: [(p.network_id, p.mac.lower())]),
            ("ports_by_ip", lambda p: [(p.network_id, ip) for ip in p.ips]),
            ("ports_by_sg", lambda p: list(p.security_group_ids)),
            ("sg_addresses", _sg_address_keys),
        ):
            moved = _moved(old, new, keys)
            for key in moved:
                yield index, key
            if index == "sg_addresses":  # and each such group's whole address set
                for sg in {sg for sg, _ in moved}:
                    yield index, (sg, None)
    elif kind == "subnet":
        for key in _moved(old, new, lambda s: [s.network_id]):
            yield "subnets_by_network", key
    elif kind == "security_group_rule":
        for key in _moved(old, new, lambda r: [r.security_group_id]):
            yield "rules_by_sg", key
    elif kind == "router":
        for key in _moved(old, new, _router_networks):
            yield "routers_by_network", key
        for fip in _moved(old, new, lambda r: list(r.floating_ips)):
            yield "floatingips", fip.id
            yield "fips_by_fixed", (fip.router_id, fip.fixed_ip)


def _moved(old: Any, new: Any, keys: Callable[[Any], list[Any]]) -> set[Any]:
    """Index keys whose set gained or lost the record (symmetric difference)."""
    before = set(keys(old)) if old is not None else set()
    after = set(keys(new)) if new is not None else set()
    return before ^ after


def _sg_address_keys(port: Port) -> list[tuple[str, str]]:
    nets = port_nets(port)
    return [(sg, net) for sg in port.security_group_ids for net in nets]


def _router_networks(router: Router) -> list[str]:
    nets = [i.network_id for i in router.interfaces]
    return nets + ([router.gateway_network_id] if router.gateway_network_id else [])


# Change kind -> the LocalView table holding its records.
TABLE_OF_KIND: dict[str, str] = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "router": "routers",
    "security_group": "security_groups",
    "security_group_rule": "rules",
    "address_group": "address_groups",
    "qos_policy": "qos_policies",
    "chassis": "chassis",
    "mac_binding": "mac_bindings",
    "metering_label": "metering_labels",
    "chassis_down": "chassis_down",
    "gateway_host": "gateway_hosts",
    "binding": "bindings",
    "port_chassis": "port_chassis",
}


def port_nets(port: Port) -> tuple[str, ...]:
    """A port's fixed IPs and address-pair addresses as canonical CIDRs, each once."""
    nets = [canonical_net(ip) for ip in port.ips]
    nets.extend(canonical_net(p.ip_address) for p in port.allowed_address_pairs)
    return tuple(dict.fromkeys(n for n in nets if n))


@functools.lru_cache(maxsize=1 << 17)
def canonical_net(text: str) -> str:
    """`str(ip_network(text, strict=False))` ('10.0.0.5' -> '10.0.0.5/32'); '' if invalid."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return ""


@functools.lru_cache(maxsize=1 << 16)
def _ip_version(text: str) -> int:
    return ipaddress.ip_address(text).version


@functools.lru_cache(maxsize=1 << 16)
def _net_version(text: str) -> int:
    return ipaddress.ip_network(text, strict=False).version


RECORD_TYPES: dict[str, Any] = {
    "network": Network,
    "subnet": Subnet,
    "port": Port,
    "router": Router,
    "security_group": SecurityGroup,
    "security_group_rule": SecurityGroupRule,
    "address_group": AddressGroup,
    "qos_policy": QosPolicy,
    "chassis": Chassis,
    "mac_binding": MacBinding,
    "gateway_host": GatewayHost,
    "metering_label": MeteringLabel,
}


def record_from_obj(kind: str, obj: dict[str, Any]) -> Any:
    """Stored JSON -> typed record (objects being deleted by the API are treated as gone)."""
    if not isinstance(obj, dict):
        raise TypeError(f"not an object: {type(obj).__name__}")
    if obj.get("_deleting"):
        return None
    return RECORD_TYPES[kind].from_obj(obj)
