"""`wyvern trace`: what happens to a packet, and why, in terms of API objects.

Two tracers share one vocabulary:

- the reference simulator (default): the store is read directly (`Catalog.from_store`),
  turned into a local view with the ports you name bound to synthetic ofports, every app
  of `wyvern.apps.ALL_APPS` computes its flows, and the packet runs through them;
- the real bridge (`ovs_trace`): `ovs-appctl ofproto/trace` on the agent's br-int, whose
  output is annotated line by line.

Either way each table step is printed with its stage name (`pipeline.stage_of`) and the
API object behind its flow: a cookie encodes (app, object id) and the `Explainer` knows
every object of the store, so it names ports, networks, routers, security groups and
security-group rules the way an operator knows them (table numbers follow from the
pipeline's order, so they are whatever `wyvern pipeline` prints)::

    table <n> (acl_egress) priority <p> — security_groups: security group web (…) rule
        ingress tcp 22 from 0.0.0.0/0 (rule …) — reg15=0x2,… → ct(commit,…),goto_table:<m>

Nothing here depends on a running agent: the store is listed once, and the agent's own
sync code applies that listing to a fresh `LocalView` (wyvern.nb.snapshot).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from wyvern.apps import ALL_APPS, trunk
from wyvern.apps.base import App
from wyvern.apps.gateway import gateway_chassis, local_fip
from wyvern.apps.metadata import SERVICE_OBJECT
from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.provider import is_provider, vlan_vid
from wyvern.apps.punts import NAMES as PUNT_NAMES
from wyvern.apps.punts import PUNT_DHCP6, PUNT_ICMP4_ERROR, PUNT_ICMP6_ERROR, PUNT_ND_RA
from wyvern.apps.qos import port_policy
from wyvern.config import Settings
from wyvern.controller import dhcp, dhcp6, icmp_errors, ra
from wyvern.controller.sync import Sync
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Flow,
    Load,
    format_value,
    match,
    pipeline,
)
from wyvern.ir.cookies import AppName, CookieIndex
from wyvern.ir.metadata import SERVICE_V4, SERVICE_V6
from wyvern.ir.ofports import TUNNEL_OFPORTS, patch_ofports
from wyvern.ir.packet import BROADCAST, ETH_HEADER, Packet
from wyvern.ir.render import render_actions, render_match
from wyvern.ir.simulator import Conntrack, Punt, Simulator, Step, Trace
from wyvern.model.keys import ROOT, decode_key
from wyvern.model.view import (
    Binding,
    FloatingIp,
    LocalView,
    Network,
    Port,
    PortForwarding,
    SecurityGroupRule,
    Subnet,
)
from wyvern.nb.snapshot import SnapshotStore
from wyvern.nb.store import ListResult, Store
from wyvern.southbound.ovs import OvsInstance

OUTSIDE_MAC = "02:00:00:00:00:fe"  # a host on the physical network, unless --src-mac
STAGE_OBJECT = re.compile(r"^(default|defaults|passthrough|codes):(\w+)$")


class TraceError(ValueError):
    """The packet cannot be traced as described (unknown port, missing address...)."""


# ----------------------------------------------------------------------------- the store


@dataclass
class Catalog:
    """Every API object of the store as stored (JSON dicts, names included), by kind."""

    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    revision: int = 0
    # the one listing everything here was read from (build_view syncs a view from it)
    listed: ListResult = field(default_factory=lambda: ListResult(0))
    # port id -> chassis it is ACTIVE on (binding statuses; remote ports for --ovs traces)
    port_chassis: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_store(cls, store: Store) -> Catalog:
        listed = store.list(ROOT)
        cat = cls(revision=listed.revision, listed=listed)
        for kv in listed.items:
            decoded = decode_key(kv.key)
            if decoded is None:
                continue
            if decoded.kind == "status":
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    status = orjson.loads(kv.value)
                    if status.get("status") == "ACTIVE" and status.get("chassis"):
                        cat.port_chassis[decoded.id] = str(status["chassis"])
                continue
            try:
                obj = orjson.loads(kv.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                cat.objects.setdefault(decoded.kind, {})[decoded.id] = obj
        return cat

    def get(self, kind: str, id_: str) -> dict[str, Any] | None:
        return self.objects.get(kind, {}).get(id_)

    def name(self, kind: str, id_: str) -> str:
        obj = self.get(kind, id_)
        return str(obj.get("name") or "") if obj else ""


def bind(view: LocalView, port_id: str, ofport: int) -> None:
    """Make a port local to the view's chassis on OFPORT."""
    view.apply("binding", port_id, Binding(port_id, ofport))
    view.port_chassis[port_id] = view.chassis_name


def build_view(
    store: Store | Catalog, bindings: Mapping[str, int], chassis_name: str = "trace"
) -> LocalView:
    """A LocalView of every object in the store, with BINDINGS (port id -> ofport) local."""
    cat = store if isinstance(store, Catalog) else Catalog.from_store(store)
    view = LocalView(chassis_name=chassis_name)
    # The agent's own sync code builds the view (references first, malformed objects
    # left out), from the same listing the catalog names objects by.
    Sync(SnapshotStore(cat.listed), view).start()
    if chassis_name == "trace":
        # A synthetic chassis: every port it does not bind is nowhere (no tunnels).
        view.port_chassis.clear()
    for port_id, ofport in bindings.items():
        if port_id in view.ports:
            bind(view, port_id, ofport)
    _wire_subports(view, set(bindings.values()))
    return view


def _wire_subports(view: LocalView, used: set[int]) -> None:
    """A bound subport is wired as on a chassis: its trunk's parent bound too, and its
    patch pair's trunk end numbered (the next free ofports), so its frames are traced
    from the parent's VIF, tagged, through the trunk stage."""
    for port_id in sorted(view.bindings):
        port = view.ports.get(port_id)
        if port is None or not port.trunk_parent or port.trunk_parent not in view.ports:
            continue
        if port.trunk_parent not in view.bindings:
            used.add(max(used | {0}) + 1)
            bind(view, port.trunk_parent, max(used))
        used.add(max(used | {0}) + 1)
        ofport = view.bindings[port_id].ofport
        view.apply("binding", port_id, Binding(port_id, ofport, max(used)))


def ovs_bindings(ovs: OvsInstance) -> dict[str, int]:
    """port id -> ofport of every interface with external_ids:iface-id on this OVS."""
    out = ovs.vsctl(
        "--format=json", "--", "--columns=name,ofport,external_ids", "list", "Interface"
    )
    return parse_interfaces(out)


def parse_interfaces(text: str) -> dict[str, int]:
    """`ovs-vsctl --format=json list Interface` (name, ofport, external_ids) -> bindings."""
    data = json.loads(text)
    headings = data.get("headings", [])
    found: dict[str, int] = {}
    for row in data.get("data", []):
        cols = dict(zip(headings, row, strict=False))
        ofport = cols.get("ofport")
        ext = cols.get("external_ids")
        if not isinstance(ofport, int) or ofport <= 0 or not isinstance(ext, list):
            continue  # ofport ["set", []] (not yet assigned) or -1 (failed)
        ids = dict(ext[1]) if len(ext) == 2 and ext[0] == "map" else {}
        port_id = ids.get("iface-id")
        if port_id:
            found[str(port_id)] = ofport
    return found


# ----------------------------------------------------------------------------- flows


def desired_flows(
    view: LocalView, apps: Sequence[App] | None = None
) -> tuple[list[Flow], CookieIndex]:
    """Every app's flows (global + every owner's), and a CookieIndex of their objects."""
    apps = list(apps) if apps is not None else [cls() for cls in ALL_APPS]
    index = CookieIndex()
    flows: list[Flow] = []
    for app in apps:
        glob = list(app.global_flows())
        flows.extend(glob)
        index.register_entry(cast(AppName, app.name), ("app", app.name), _steps(glob))
    for app in apps:
        name = cast(AppName, app.name)
        for owner in app.owners(view):
            owned = app.flows(view, owner)
            flows.extend(owned)
            # (the switch's flows carry the entry's cookie: ir/cookies.py entry_cookie)
            index.register_entry(name, owner, _steps(owned))
            with contextlib.suppress(ValueError):  # a collision only hurts the names
                index.register(name, owner[1])
    service_apps: tuple[AppName, ...] = ("metadata", "classifier")
    for service_app in service_apps:  # the metadata service's global flows
        with contextlib.suppress(ValueError):
            index.register(service_app, SERVICE_OBJECT)
    for rule_id in view.rules:  # rule flows carry the rule id (apps/security_groups.py)
        with contextlib.suppress(ValueError):
            index.register("security_groups", rule_id)
    for pf in forwardings(view):  # (and a port forwarding's, its id: apps/nat.py)
        with contextlib.suppress(ValueError):
            index.register("nat", pf.id)
    for label in view.metering_labels.values():  # counting flows: their rule's id
        for mrule in label.rules:
            with contextlib.suppress(ValueError):
                index.register("metering", mrule.id)
    for st in pipeline.PIPELINE:  # stage defaults ("pipeline" / the stage's owner)
        for app_name, what in (
            ("pipeline", "default"),
            ("pipeline", "passthrough"),
            ("security_groups", "defaults"),
            ("services", "codes"),
        ):
            with contextlib.suppress(ValueError):
                index.register(cast(AppName, app_name), f"{what}:{st.name}")
    return flows, index


def _steps(flows: Iterable[Flow]) -> list[tuple[int, int, int]]:
    return [(f.table, f.priority, f.cookie) for f in flows]


def _named(name: str, id_: str) -> str:
    return f"{name} ({id_})" if name else id_


def _ports_text(lo: int | None, hi: int | None) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None or lo == hi:
        return str(lo)
    return f"{lo}-{hi}"


@dataclass(frozen=True, slots=True)
class Origin:
    """The app and API object behind a flow, in words."""

    app: str
    kind: str  # port, network, router, security_group(_rule), stage, service, unknown
    id: str
    text: str

    def __str__(self) -> str:
        return f"{self.app}: {self.text}"


class Explainer:
    """Names API objects (from the view and, for names, the store's catalog) and turns a
    cookie into the `Origin` of its flow."""

    def __init__(
        self, view: LocalView, catalog: Catalog | None = None, index: CookieIndex | None = None
    ) -> None:
        self.view = view
        self.catalog = catalog or Catalog()
        self.index = index if index is not None else desired_flows(view)[1]
        self.dhcp = dhcp.DhcpSettings()  # the agent's lease time and domain (dhcp6_answer)
        self._net_by_key = {n.key: n.id for n in view.networks.values()}
        self._router_by_key = {r.key: r.id for r in view.routers.values()}
        self._port_by_key = {(p.network_id, p.key): p.id for p in view.ports.values()}
        self._router_of_port = {
            i.port_id: r.id for r in view.routers.values() for i in r.interfaces
        }
        for r in view.routers.values():
            if r.gateway_port_id:
                self._router_of_port[r.gateway_port_id] = r.id

    # -- objects --------------------------------------------------------------------------
    def port(self, port_id: str) -> str:
        p = self.view.ports.get(port_id)
        name = p.name if p is not None else self.catalog.name("port", port_id)
        text = f"port {_named(name, port_id)}"
        rid = self._router_of_port.get(port_id)
        if rid is not None and not name:
            text += f" (interface of {self.router(rid)})"
        return text

    def network(self, network_id: str) -> str:
        return f"network {_named(self.catalog.name('network', network_id), network_id)}"

    def router(self, router_id: str) -> str:
        return f"router {_named(self.catalog.name('router', router_id), router_id)}"

    def security_group(self, sg_id: str) -> str:
        return f"security group {_named(self.catalog.name('security_group', sg_id), sg_id)}"

    def floatingip(self, fip_id: str) -> str:
        fip = self.view.floatingips[fip_id]
        return f"floating IP {fip.ip} ({fip_id}) for {fip.fixed_ip} of {self.port(fip.port_id)}"

    def port_forwarding(self, pf: PortForwarding) -> str:
        """ "port forwarding tcp 203.0.113.30:8022 → 10.0.0.5:22 of port vm-a (<id>)"."""

        def ports(r: tuple[int, int]) -> str:
            return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

        return (
            f"port forwarding {pf.id}: {pf.protocol} {pf.ip}:{ports(pf.ext)} → "
            f"{pf.internal_ip}:{ports(pf.int_)} of {self.port(pf.internal_port_id)}"
        )

    def router_gateway(self, router_id: str) -> str:
        """The router and its gateway, and the chassis hosting it: "router r1 (…) gateway
        203.0.113.12 on network public (…), active on chassis gw"."""
        text = self.router(router_id)
        r = self.view.routers.get(router_id)
        if r is None or not r.gateway_network_id:
            return text
        gw = self.view.ports.get(r.gateway_port_id or "")
        addrs = ", ".join(gw.ips) if gw is not None else "?"
        text = f"{text} gateway {addrs} on {self.network(r.gateway_network_id)}"
        net = self.view.networks.get(r.gateway_network_id)
        host = gateway_chassis(self.view, net, r.az_hints) if net is not None else None
        return f"{text}, active on chassis {host}" if host else text

    def chassis(self, tunnel_ip: str) -> str:
        for name, ch in self.view.chassis.items():
            if ch.tunnel_ip == tunnel_ip:
                return f"chassis {name} ({tunnel_ip})"
        return f"an unknown chassis ({tunnel_ip})"

    def rule_summary(self, rule: SecurityGroupRule) -> str:
        """e.g. "ingress tcp 22 from 0.0.0.0/0", "egress any to any"."""
        parts = [rule.direction]
        if rule.ethertype != "IPv4":
            parts.append(rule.ethertype)
        proto = (rule.protocol or "any").lower()
        parts.append(proto)
        if proto in ("icmp", "ipv6-icmp", "icmpv6", "1", "58"):
            if rule.port_range_min is not None:
                parts.append(f"type {rule.port_range_min}")
            if rule.port_range_max is not None:
                parts.append(f"code {rule.port_range_max}")
        else:
            ports = _ports_text(rule.port_range_min, rule.port_range_max)
            if ports:
                parts.append(ports)
        parts.append("from" if rule.direction == "ingress" else "to")
        if rule.remote_ip_prefix:
            parts.append(rule.remote_ip_prefix)
        elif rule.remote_group_id:
            name = self.catalog.name("security_group", rule.remote_group_id)
            parts.append(f"group {name or rule.remote_group_id}")
        elif rule.remote_address_group_id:
            name = self.catalog.name("address_group", rule.remote_address_group_id)
            parts.append(f"address group {name or rule.remote_address_group_id}")
        else:
            parts.append("any")
        return " ".join(parts)

    def rule(self, rule_id: str) -> str:
        r = self.view.rules.get(rule_id)
        if r is None:
            return f"security group rule {rule_id}"
        sg_name = self.catalog.name("security_group", r.security_group_id)
        return (
            f"security group {sg_name or r.security_group_id} rule {self.rule_summary(r)}"
            f" (rule {rule_id})"
        )

    def object(self, object_id: str) -> tuple[str, str]:
        """(kind, words) for an object id found in a cookie."""
        v = self.view
        if object_id in v.ports:
            return "port", self.port(object_id)
        if object_id in v.networks:
            return "network", self.network(object_id)
        if object_id in v.routers:
            return "router", self.router(object_id)
        if object_id in v.security_groups:
            return "security_group", self.security_group(object_id)
        if object_id in v.rules:
            return "security_group_rule", self.rule(object_id)
        if object_id in v.floatingips:
            return "floatingip", self.floatingip(object_id)
        pf = next((f for f in forwardings(v) if f.id == object_id), None)
        if pf is not None:
            return "port_forwarding", self.port_forwarding(pf)
        if object_id in v.metering_labels:
            name = self.catalog.name("metering_label", object_id)
            return "metering_label", f"metering label {name or object_id}"
        for label in v.metering_labels.values():
            mrule = next((r for r in label.rules if r.id == object_id), None)
            if mrule is not None:
                name = self.catalog.name("metering_label", label.id) or label.id
                where = f"from {mrule.source or 'any'} to {mrule.destination or 'any'}"
                outcome = "excluded, not counted" if mrule.excluded else "counted"
                return "metering_label_rule", (
                    f"metering label {name} {mrule.direction} rule {where} (rule {object_id}):"
                    f" {outcome}"
                )
        if object_id in v.mac_bindings:
            mb = v.mac_bindings[object_id]
            where = self.network(mb.network_id)
            how = "ND" if ":" in mb.ip else "ARP"
            return "mac_binding", f"MAC binding {mb.ip} is {mb.mac} on {where} (learned by {how})"
        if object_id == SERVICE_OBJECT:
            return "service", f"the metadata service ({SERVICE_V4}, {SERVICE_V6})"
        m = STAGE_OBJECT.match(object_id)
        if m:
            what = {
                "passthrough": "pass-through",
                "defaults": "security-group default",
                "codes": "punt codes",
            }
            return "stage", f"{what.get(m.group(1), 'default')} of stage {m.group(2)}"
        return "unknown", f"object {object_id} (not in the store)"

    def origin(self, cookie: int, table: int | None = None, priority: int = 0) -> Origin:
        """The origin of a flow's cookie; with its table and priority, also of a flow on
        the switch (which carries its engine entry's cookie)."""
        exp = (
            self.index.explain(cookie)
            if table is None
            else self.index.explain_flow(cookie, table, priority)
        )
        if exp.app is None:
            return Origin("?", "unknown", "", f"unknown cookie {cookie:#x}")
        if exp.object_id is None:
            return Origin(exp.app, "unknown", "", f"cookie {cookie:#x} (object not in the store)")
        kind, text = self.object(str(exp.object_id))
        if exp.app == "nat" and kind == "router":  # SNAT and un-SNAT: the gateway's
            text = self.router_gateway(str(exp.object_id))
        if exp.app == "qos" and kind == "port":  # meters and DSCP: the policy behind them
            text = self.qos(str(exp.object_id))
        return Origin(exp.app, kind, str(exp.object_id), text)

    def qos(self, port_id: str) -> str:
        """ "port vm-a (…), QoS policy gold (…) of its network: bandwidth_limit egress
        3000 kbps, dscp_marking 26"."""
        text = self.port(port_id)
        port = self.view.ports.get(port_id)
        policy = port_policy(self.view, port) if port is not None else None
        if port is None or policy is None:
            return text
        whose = "" if port.qos_policy_id == policy.id else " of its network"
        rules = ", ".join(
            f"{r.kind} {r.direction} {r.rate} {'kbps' if r.kind == 'bandwidth_limit' else 'kpps'}"
            if r.kind != "dscp_marking"
            else f"dscp_marking {r.rate}"
            for r in sorted(policy.rules, key=lambda r: (r.kind, r.direction))  # (ids: random)
        )
        name = self.catalog.name("qos_policy", policy.id)
        return f"{text}, QoS policy {_named(name, policy.id)}{whose}: {rules}"

    # -- keys -----------------------------------------------------------------------------
    def network_by_key(self, key: int) -> str | None:
        return self._net_by_key.get(key)

    def router_by_key(self, key: int) -> str | None:
        return self._router_by_key.get(key)

    def port_by_key(self, network_key: int, port_key: int) -> str | None:
        net = self._net_by_key.get(network_key)
        return None if net is None else self._port_by_key.get((net, port_key))

    def port_by_ofport(self, ofport: int) -> str | None:
        for b in self.view.bindings.values():
            if b.ofport == ofport:
                return b.port_id
        return None


# ----------------------------------------------------------------------------- packets

PROTOCOLS: tuple[str, ...] = ("icmp", "tcp", "udp", "arp", "dhcp", "dhcp6", "rs")
EPHEMERAL_PORT = 40000


@dataclass(frozen=True, slots=True)
class PacketSpec:
    """A packet as the CLI describes it (ports by name or id)."""

    from_port: str  # "" with FROM_NETWORK: a packet from outside
    to_port: str | None = None
    dst_ip: str | None = None
    proto: str = "icmp"
    dport: int | None = None
    sport: int | None = None
    src_ip: str | None = None
    src_mac: str | None = None
    from_network: str | None = None  # an external provider network: from its physnet
    ttl: int | None = None  # the IPv4 TTL / IPv6 hop limit (64)
    size: int | None = None  # the IP packet's bytes, header included (a small packet)


def find_port(view: LocalView, ref: str) -> Port:
    """A port by id, by unique name, or by unique id prefix."""
    if ref in view.ports:
        return view.ports[ref]
    named = [p for p in view.ports.values() if p.name and p.name == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        ids = ", ".join(sorted(p.id for p in named))
        raise TraceError(f"{len(named)} ports are named {ref!r}: {ids}; give an id")
    prefixed = [p for p in view.ports.values() if p.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    raise TraceError(f"no port {ref!r} (by id, name or unique id prefix)")


def _version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _first_ip(port: Port, version: int) -> str | None:
    for ip in port.ips:
        if _version(ip) == version:
            return ip
    return None


def port_with_ip(view: LocalView, ip: str, network_id: str | None = None) -> Port | None:
    """The port holding IP (in NETWORK_ID first, then anywhere; router ports last)."""
    hits = sorted(
        (p for p in view.ports.values() if ip in p.ips),
        key=lambda p: (p.network_id != network_id, p.is_router_port, p.id),
    )
    return hits[0] if hits else None


def gateway_mac(view: LocalView, port: Port, version: int) -> str:
    """The router interface MAC of the gateway of PORT's subnet (of that IP version)."""
    for fip in port.fixed_ips:
        sub = view.subnets.get(fip.subnet_id)
        if sub is None or sub.ip_version != version or not sub.gateway_ip:
            continue
        for other in view.network_ports(port.network_id):
            if other.is_router_port and sub.gateway_ip in other.ips:
                return other.mac
        raise TraceError(
            f"the gateway {sub.gateway_ip} of subnet {sub.id} is no router's interface"
        )
    raise TraceError(f"port {port.id} has no IPv{version} subnet with a gateway")


def _on_link(view: LocalView, network_id: str, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in s.network for s in view.network_subnets(network_id))


def _is_broadcast(view: LocalView, network_id: str, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4 and (addr == ipaddress.IPv4Address("255.255.255.255")):
        return True
    if addr.is_multicast:
        return True
    return any(
        s.network.version == 4 and addr == s.network.broadcast_address
        for s in view.network_subnets(network_id)
    )


@dataclass(frozen=True, slots=True)
class Built:
    """A packet ready to trace, and the ports it involves."""

    packet: Packet
    src: Port | None  # None: from the physical network (the packet's in_port)
    dst: Port | None  # the port the packet is meant for (None: broadcast, unknown)


def build_packet(view: LocalView, spec: PacketSpec, in_port: int = 1) -> Built:
    """The packet SPEC describes, entering on IN_PORT, with defaults filled in:
    source MAC/IP = the source port's; destination MAC = the destination port's on the
    same network, the gateway's (the source subnet's router interface) otherwise, the
    broadcast address for a broadcast IP."""
    try:
        return _build_packet(view, spec, in_port)
    except TraceError:
        raise
    except ValueError as exc:  # a malformed address or MAC given on the command line
        raise TraceError(f"cannot build that packet: {exc}") from None


def _build_packet(view: LocalView, spec: PacketSpec, in_port: int) -> Built:
    from wyvern.ir import packet as pk

    src = find_port(view, spec.from_port)
    proto = spec.proto.lower()
    if proto not in PROTOCOLS:
        raise TraceError(f"protocol {spec.proto!r}: one of {', '.join(PROTOCOLS)}")
    src_mac = (spec.src_mac or src.mac).lower()
    if proto == "rs":  # a router solicitation, from the port's link-local address
        src_ip = spec.src_ip or str(eui64_link_local(src.mac))
        if _version(src_ip) != 6:
            raise TraceError("a router solicitation is IPv6: give an IPv6 --src-ip")
        return Built(pk.router_solicit(in_port, src_mac, src_ip), src, None)
    if proto == "dhcp6":  # a Solicit: from the port's link-local address to the servers
        src_ip = spec.src_ip or dhcp6.link_local(src.mac)
        packet = pk.udp(in_port, src_mac, dhcp6.ALL_SERVERS_MAC, src_ip, dhcp6.ALL_SERVERS,
                        dhcp6.CLIENT_PORT, dhcp6.SERVER_PORT, ttl=1)  # fmt: skip
        return Built(packet, src, None)
    dst: Port | None = None
    dst_ip = spec.dst_ip
    if proto == "dhcp":
        dst_ip = dst_ip or "255.255.255.255"
    if spec.to_port is not None:
        dst = find_port(view, spec.to_port)
        if dst_ip is None:
            version = _version(spec.src_ip) if spec.src_ip else 4
            dst_ip = _first_ip(dst, version) or (dst.ips[0] if dst.ips else None)
            if dst_ip is None:
                raise TraceError(f"{dst.id} has no IP address: give --dst-ip")
    if dst_ip is None:
        raise TraceError("give a destination: --to PORT or --dst-ip IP")
    try:
        version = _version(dst_ip)
    except ValueError:
        raise TraceError(f"--dst-ip {dst_ip!r} is not an IP address") from None
    if proto == "dhcp":
        src_ip = spec.src_ip or "0.0.0.0"
    else:
        src_ip = spec.src_ip or _first_ip(src, version) or ""
        if not src_ip:
            raise TraceError(f"port {src.id} has no IPv{version} address: give --src-ip")
    broadcast = _is_broadcast(view, src.network_id, dst_ip)
    if dst is None and not broadcast:
        dst = port_with_ip(view, dst_ip, src.network_id)
    if proto == "arp":
        if version != 4:
            raise TraceError("ARP needs IPv4 addresses (IPv6 uses neighbour discovery)")
        return Built(pk.arp(in_port, src_mac, src_ip, dst_ip), src, dst)
    if broadcast:
        dst_mac = BROADCAST
    elif dst is not None and dst.network_id == src.network_id:
        dst_mac = dst.mac
    elif _on_link(view, src.network_id, dst_ip):
        dst_mac = BROADCAST  # nobody holds that address: an unknown destination floods
    else:
        dst_mac = gateway_mac(view, src, version)
    return Built(_l4_packet(spec, in_port, src_mac, dst_mac, src_ip, dst_ip), src, dst)


def _l4_packet(
    spec: PacketSpec,
    in_port: int,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    vlan: int | None = None,
) -> Packet:
    """The ICMP echo, TCP or UDP packet SPEC asks for, with these addresses."""
    from wyvern.ir import packet as pk

    proto = spec.proto.lower()
    ttl = 64 if spec.ttl is None else spec.ttl
    if not 0 <= ttl <= 255:
        raise ValueError(f"TTL {ttl} is not 0..255")
    if proto == "icmp":
        p = pk.icmp_echo(in_port, src_mac, dst_mac, src_ip, dst_ip, vlan=vlan, ttl=ttl)
    elif proto == "tcp":
        p = pk.tcp(in_port, src_mac, dst_mac, src_ip, dst_ip, spec.sport or EPHEMERAL_PORT,
                   22 if spec.dport is None else spec.dport, vlan=vlan, ttl=ttl)  # fmt: skip
    elif proto not in ("udp", "dhcp"):
        raise ValueError(f"protocol {spec.proto!r}: one of icmp, tcp, udp from outside")
    else:
        dport = 67 if proto == "dhcp" and spec.dport is None else spec.dport
        dport = 53 if dport is None else dport
        sport = spec.sport or (68 if dport == 67 else EPHEMERAL_PORT)
        p = pk.udp(in_port, src_mac, dst_mac, src_ip, dst_ip, sport, dport, vlan=vlan, ttl=ttl)
    if spec.size is not None:
        header = 40 if ":" in src_ip else 20
        if not header <= spec.size <= 65535:
            raise ValueError(f"size {spec.size} is not {header}..65535 bytes of IP")
        pk.sized(p, spec.size)
    return p


def find_network(view: LocalView, catalog: Catalog, ref: str) -> Network:
    """A network by id, by unique name, or by unique id prefix."""
    if ref in view.networks:
        return view.networks[ref]
    hits = [n for n in view.networks.values() if ref and catalog.name("network", n.id) == ref]
    if not hits:
        hits = [n for n in view.networks.values() if ref and n.id.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    raise TraceError(f"no network {ref!r} (by id, name or unique id prefix)")


def _gateway_mac_of(
    view: LocalView, network_id: str, ip: str | None, router_id: str | None = None
) -> str:
    """The MAC of the router gateway port on NETWORK_ID holding IP (or of ROUTER_ID)."""
    router = view.routers.get(router_id or "")
    for p in view.network_ports(network_id):
        if (ip is not None and ip in p.ips) or (router and p.id == router.gateway_port_id):
            return p.mac
    raise TraceError(f"{ip} is no floating IP or gateway address on network {network_id}")


def forwardings(view: LocalView) -> list[PortForwarding]:
    """Every port forwarding of the routers in VIEW."""
    return [pf for r in view.routers.values() for pf in r.port_forwardings]


def _forwarding_to(view: LocalView, network_id: str, spec: PacketSpec) -> PortForwarding | None:
    """The port forwarding of SPEC's destination on NETWORK_ID: the one its protocol and
    destination port hit, else the first on that address."""
    on_ip = [pf for pf in forwardings(view) if pf.ip == spec.dst_ip and pf.network_id == network_id]
    hit = [
        pf
        for pf in on_ip
        if pf.protocol == spec.proto and spec.dport is not None
        and pf.ext[0] <= spec.dport <= pf.ext[1]
    ]  # fmt: skip
    found = hit or sorted(on_ip, key=lambda pf: pf.id)
    return found[0] if found else None


def _router_zones(
    view: LocalView, fip: FloatingIp | None, pf: PortForwarding | None, dst_ip: str | None
) -> tuple[str, ...]:
    """The availability_zone_hints of the router that answers DST_IP from outside (its
    floating IP's, port forwarding's, or gateway address's): its gateway chassis's zones."""
    rid = fip.router_id if fip is not None else pf.router_id if pf is not None else None
    if rid is None:
        for r in view.routers.values():
            gw = view.ports.get(r.gateway_port_id or "")
            if gw is not None and dst_ip in gw.ips:
                rid = r.id
                break
    router = view.routers.get(rid or "")
    return router.az_hints if router is not None else ()


def describe_packet(p: Packet) -> str:
    """One line: "tcp 10.0.0.5:40000 → 10.0.0.6:22 (fa:16:… → fa:16:…)"."""

    def mac(name: str) -> str:
        return format_value("mac", 48, p[name])

    def ip4(name: str) -> str:
        return str(ipaddress.IPv4Address(p[name]))

    et = p["eth_type"]
    macs = f"({mac('eth_src')} → {mac('eth_dst')})"
    if et == ETH_TYPE_ARP:
        op = {1: "request", 2: "reply"}.get(p["arp_op"], str(p["arp_op"]))
        return f"arp {op} {ip4('arp_spa')} → who has {ip4('arp_tpa')} {macs}"
    if et not in (ETH_TYPE_IP, ETH_TYPE_IPV6):
        return f"eth_type {et:#06x} {macs}"
    if et == ETH_TYPE_IP:
        src, dst = ip4("ipv4_src"), ip4("ipv4_dst")
    else:
        src = str(ipaddress.IPv6Address(p["ipv6_src"]))
        dst = str(ipaddress.IPv6Address(p["ipv6_dst"]))
    proto = p["ip_proto"]
    if proto == IPPROTO_TCP:
        return f"tcp {src}:{p['tcp_src']} → {dst}:{p['tcp_dst']} {macs}"
    if proto == IPPROTO_UDP:
        return f"udp {src}:{p['udp_src']} → {dst}:{p['udp_dst']} {macs}"
    if proto == IPPROTO_ICMP:
        return f"icmp type {p['icmp_type']} {src} → {dst} {macs}"
    if proto == IPPROTO_ICMPV6:
        return f"icmpv6 type {p['icmpv6_type']} {src} → {dst} {macs}"
    return f"ip proto {proto} {src} → {dst} {macs}"


def flow_spec(p: Packet) -> str:
    """The packet as an `ofproto/trace` flow (ovs-ofctl match syntax)."""
    fields = {name: value for name, value in p if name in _TRACE_FIELDS}
    return render_match(match(**fields))


_TRACE_FIELDS = frozenset(
    {
        "in_port", "eth_src", "eth_dst", "eth_type", "vlan_vid", "ipv4_src", "ipv4_dst",
        "ipv6_src", "ipv6_dst", "ip_proto", "nw_ttl", "tcp_src", "tcp_dst", "tcp_flags",
        "udp_src", "udp_dst", "icmp_type", "icmp_code", "icmpv6_type", "icmpv6_code",
        "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "nd_target",
    }
)  # fmt: skip


# ----------------------------------------------------------------------------- simulate


def simulate(
    view: LocalView,
    from_port_id: str,
    packet: Packet,
    *,
    flows: Sequence[Flow] | None = None,
    index: CookieIndex | None = None,
) -> Trace:
    """Run PACKET through every app's flows, entering on FROM_PORT_ID's ofport."""
    binding = view.bindings.get(from_port_id)
    if binding is None:
        raise TraceError(f"port {from_port_id} is not bound in this view")
    if flows is None or index is None:
        flows, index = desired_flows(view)
    p = packet.copy()
    p["in_port"] = binding.ofport
    entry = trunk.entry_point(view, from_port_id)
    if entry is not None:  # a trunk's subport: its frames come tagged by the parent's VIF
        p["in_port"], p["vlan_vid"] = entry
    sim = Simulator(flows, conntrack=Conntrack(), cookies=index, patches=trunk.patch_peers(view))
    return sim.run(p)


def _loads(step: Step, regs: dict[str, int]) -> None:
    for a in step.actions:
        if isinstance(a, Load):
            regs[a.register] = a.value


def _sg_names(ex: Explainer, port_id: str | None) -> str:
    if port_id is None or port_id not in ex.view.ports:
        return "the port's security groups"
    groups = ex.view.ports[port_id].security_group_ids
    names = ", ".join(_named(ex.catalog.name("security_group", g), g) for g in groups)
    what = "security group" if len(groups) == 1 else "security groups"
    return f"{what} {names or '(none)'} of {ex.port(port_id)}"


def _addresses(ex: Explainer, port_id: str | None) -> str:
    port = ex.view.ports.get(port_id or "")
    if port is None:
        return ""
    owned = [port.mac, *port.ips]
    owned += [f"{pair.mac_address} {pair.ip_address}" for pair in port.allowed_address_pairs]
    return f"; it owns {', '.join(owned)}"


def _why(ex: Explainer, trace: Trace, step: Step, regs: Mapping[str, int]) -> str:
    """Why the packet stopped at STEP (a table miss or a flow without actions)."""
    p = trace.packet
    stage = step.stage
    src = ex.port_by_ofport(p["in_port"])
    dst = ex.port_by_key(regs.get("network_key", -1), regs.get("dst_port_key", -1))
    net = ex.network_by_key(regs.get("network_key", -1))
    router = ex.router_by_key(regs.get("router_key", -1))
    if step.flow is not None and step.flow.match.items and stage in ("acl", "acl_egress"):
        text = render_match(step.flow.match)
        if "inv" in text:
            return "conntrack marked the packet invalid (+inv)"
    if stage == "trunk":
        vlan = p["vlan_vid"] & 0xFFF
        return f"VLAN {vlan} is no subport's of the trunk on {ex.port(src) if src else 'it'}"
    if stage == "classification":
        return f"ofport {p['in_port']} is not a bound port on this chassis"
    if stage in ("port_security", "port_security_nd", "port_security_l2"):
        who = ex.port(src) if src else "the input port"
        return (
            f"the source MAC/IP of {describe_packet(p)} is not {who}'s (port security, "
            f"anti-spoofing{_addresses(ex, src)})"
        )
    if stage in ("pre_acl", "acl"):
        return f"no egress rule of {_sg_names(ex, src)} allows it"
    if stage in ("pre_acl_egress", "acl_egress"):
        return f"no ingress rule of {_sg_names(ex, dst)} allows it"
    if stage == "l2_lookup":
        where = ex.network(net) if net else "the network"
        return f"no port of {where} has destination MAC {format_value('mac', 48, p['eth_dst'])}"
    if stage == "router_input":
        return f"{ex.router(router) if router else 'the router'} does not accept it"
    if stage == "routing":
        return f"{ex.router(router) if router else 'the router'} has no route to the destination"
    if stage == "arp_resolve":
        where = ex.network(net) if net else "the next network"
        return f"the next hop is no known port address of {where}"
    if stage in ("port_security_egress", "port_security_egress_l2"):
        who = ex.port(dst) if dst else "the destination port"
        return f"the destination MAC/IP is not {who}'s (egress port security{_addresses(ex, dst)})"
    if stage == "output":
        who = ex.port(dst) if dst else "the destination port"
        return f"{who} is not bound on this chassis (no output flow)"
    return "no flow forwards it"


_ICMP_ERRORS = {
    (PUNT_ICMP4_ERROR, 11): "an ICMP time exceeded (TTL)",
    (PUNT_ICMP4_ERROR, 3): "an ICMP destination unreachable (no route)",
    (PUNT_ICMP6_ERROR, 3): "an ICMPv6 time exceeded (hop limit)",
    (PUNT_ICMP6_ERROR, 1): "an ICMPv6 destination unreachable (no route)",
    (PUNT_ICMP6_ERROR, 2): "an ICMPv6 packet too big",
}


def _icmp_error(ex: Explainer, trace: Trace, pi: Punt) -> str | None:
    """What the agent sends for an ICMP error punt, and why: the router, the network the
    packet came from and the address it answers from; for a packet too big, the egress
    network and its MTU against the packet's size."""
    what = _ICMP_ERRORS.get((pi.userdata[0], pi.userdata[1])) if len(pi.userdata) > 1 else None
    rid = ex.router_by_key(pi.packet["router_key"])
    router = ex.view.routers.get(rid or "")
    if what is None or router is None:
        return None
    src = ex.port_by_ofport(trace.packet["in_port"])
    port = ex.view.ports.get(src or "")
    network = ex.view.networks.get(port.network_id) if port is not None else None
    gateway = ex.view.networks.get(router.gateway_network_id or "")
    network = network or gateway  # (from the physical network: through the gateway)
    if network is None:
        return None
    address = None
    if port is not None and pi.userdata[0] == PUNT_ICMP6_ERROR:
        sender = format_value("ipv6", 128, trace.packet["ipv6_src"])
        found = icmp_errors.router_address6(ex.view, router, network, sender)
        address = found[0] if found else None
    elif port is not None:
        found4 = icmp_errors.router_address(ex.view, router, network)
        address = found4[0] if found4 else None
    else:
        gw = ex.view.ports.get(router.gateway_port_id or "")
        version = 6 if pi.userdata[0] == PUNT_ICMP6_ERROR else 4
        address = _first_ip(gw, version) if gw is not None else None
    text = (
        f"{ex.router(router.id)} sends {what} to the sender, from {address or '?'} on"
        f" {ex.network(network.id)}"
    )
    if pi.userdata[:2] == bytes((PUNT_ICMP6_ERROR, 2)):
        key = pi.packet["network_key"]
        egress = gateway if key == router.key else None  # (redirected to the gateway)
        egress = egress or ex.view.networks.get(ex.network_by_key(key) or "")
        if egress is not None:
            size = trace.packet.length - ETH_HEADER
            text += (
                f": the packet ({size} bytes of IPv6) is larger than the MTU of"
                f" {ex.network(egress.id)}, {egress.mtu}; the error's MTU is {egress.mtu}"
            )
    return text


def format_explained(trace: Trace, ex: Explainer) -> str:
    """The trace, each step with its stage and API object, then the outcome and why."""
    p = trace.packet
    src = ex.port_by_ofport(p["in_port"])
    me = ex.view.chassis.get(ex.view.chassis_name)
    patches = {n: pn for pn, n in patch_ofports(dict(me.bridge_mappings) if me else {}).items()}
    if src:
        where = ex.port(src)
    elif p["in_port"] in patches:
        where = f"physical network {patches[p['in_port']]} on chassis {ex.view.chassis_name}"
    else:
        where = f"ofport {p['in_port']}"
    lines = [f"packet: {describe_packet(p)}", f"from: {where} (ofport {p['in_port']})"]
    regs: dict[str, int] = {}
    stops: list[tuple[Step, dict[str, int]]] = []
    for s in trace.steps:
        ind = "  " * (s.depth + 1)
        if s.note:
            lines.append(f"{ind}-- {s.note}")
        if s.flow is None:
            lines.append(f"{ind}table {s.table} ({s.stage}) — no flow matched — drop")
            stops.append((s, dict(regs)))
            continue
        origin = ex.origin(s.flow.cookie)
        acts = render_actions(s.flow.actions) if s.flow.actions else "drop"
        lines.append(
            f"{ind}table {s.table} ({s.stage}) priority {s.flow.priority} — {origin}"
            f" — {render_match(s.flow.match) or '(any)'} → {acts}"
        )
        _loads(s, regs)
        if not s.flow.actions:
            stops.append((s, dict(regs)))
    lines.append("outcome:")
    tunnels = {n: encap for encap, n in TUNNEL_OFPORTS.items()}
    me = ex.view.chassis.get(ex.view.chassis_name)
    mapped = dict(me.bridge_mappings) if me is not None else {}
    patches = {n: physnet for physnet, n in patch_ofports(mapped).items()}
    for o in trace.outputs:
        if o.port in tunnels:
            dst = str(ipaddress.IPv4Address(o.packet.get("tun_dst", 0)))
            lines.append(
                f"  sent by {tunnels[o.port]} to {ex.chassis(dst)},"
                f" key {o.packet.get('tun_id', 0):#x} (ofport {o.port})"
            )
            continue
        if o.port in patches:
            lines.append(f"  sent out to physical network {patches[o.port]} (ofport {o.port})")
            continue
        pid = ex.port_by_ofport(o.port)
        where = ex.port(pid) if pid else "an unknown port"
        how = "sent back to" if o.port == p["in_port"] else "delivered to"
        lines.append(f"  {how} {where} (ofport {o.port})")
    for pi in trace.punts:
        service = PUNT_NAMES.get(pi.userdata[0], "?") if pi.userdata else "?"
        lines.append(
            f"  punted to {service} (controller, from table {pi.table} ({pi.stage}):"
            f" {ex.origin(pi.cookie)})"
        )
        error = _icmp_error(ex, trace, pi)
        if error:
            lines.append(f"    {error}")
        if pi.userdata[:1] == bytes([PUNT_ND_RA]):
            lines.extend(_advertised(ex, src))
        if pi.userdata[:1] == bytes([PUNT_DHCP6]) and src is not None:
            lines.append(f"  {dhcp6_answer(ex, src)}")
    if trace.dropped:
        if stops:
            s, at = stops[-1]
            lines.append(
                f"  dropped at stage {s.stage} (table {s.table}): {_why(ex, trace, s, at)}"
            )
        else:
            lines.append("  dropped")
    # Drops the steps above already explain are left out; others (TTL expired, output to
    # the input port, resubmit limits) are worth a line.
    lines.extend(f"  note: {d}" for d in trace.drops if not _EXPLAINED_DROP.match(d))
    return "\n".join(lines)


def _advertised(ex: Explainer, port_id: str | None) -> list[str]:
    """What the agent answers a router solicitation from PORT_ID with (controller/ra.py)."""
    port = ex.view.ports.get(port_id or "")
    net = ex.view.networks.get(port.network_id) if port is not None else None
    ads = ra.advertisements(ex.view, net) if net is not None else []
    if not ads:
        return ["    no router interface advertises on this network: no answer"]
    out = []
    for a in ads:
        subnets = ", ".join(
            f"subnet {_named(ex.catalog.name('subnet', s), s)}" for s in a.subnet_ids
        )
        flags = "".join(f for f, on in (("M", a.managed), ("O", a.other)) if on) or "none"
        prefixes = ", ".join(
            f"{p.cidr} ({'autonomous' if p.autonomous else 'not autonomous'})" for p in a.prefixes
        )
        out.append(
            f"    answered by the agent with a router advertisement to that port only, from"
            f" {ex.router(a.router_id)}'s interface {ex.port(a.port_id)} ({a.source},"
            f" {a.mac}) on {subnets}: flags {flags}, prefixes {prefixes or 'none'},"
            f" MTU {a.mtu if a.mtu is not None else 'not sent'}"
            + (f", DNS {' '.join(a.dns)} (search {' '.join(a.domains)})" if a.dns else "")
        )
    return out


def dhcp6_answer(ex: Explainer, port_id: str) -> str:
    """What the agent's DHCPv6 server answers PORT_ID (wyvern/controller/dhcp6.py)."""
    port = ex.view.ports[port_id]
    subnets = ex.view.network_subnets(port.network_id)
    settings = ex.dhcp

    def subnet(s: Subnet) -> str:
        return f"subnet {_named(ex.catalog.name('subnet', s.id), s.id)} ({s.ipv6_address_mode})"

    stateful = dhcp6.stateful_addresses(port, subnets)
    if stateful:
        leased = ", ".join(f"{ip} on {subnet(s)}" for ip, s in stateful)
        what = f"a Solicit gets {leased} (IA_NA, lease {settings.lease_time} s)"
    else:
        on = ", ".join(subnet(s) for s in dhcp6.port_subnets(port, subnets))
        what = (
            f"on {on} it has no stateful address: a Solicit gets NoAddrsAvail, an "
            "Information-Request the options"
        )
    dns = ", ".join(dhcp6.dns_servers(port, subnets)) or "none"
    extra = sorted(o.opt_name for o in port.extra_dhcp_opts if o.ip_version == 6)
    more = f"; extra options {', '.join(extra)}" if extra else ""
    return (
        f"the agent's DHCPv6 server for {ex.port(port_id)}: {what}; DNS servers {dns}; "
        f"domain search {settings.domain_name}{more}"
    )


_EXPLAINED_DROP = re.compile(r"^(table \d+ \(\w+\) drops: |no flow matched in table )")


def dropped_stage(trace: Trace) -> str | None:
    """The stage where a dropped packet stopped (None if it went somewhere)."""
    if not trace.dropped:
        return None
    for s in reversed(trace.steps):
        if s.flow is None or not s.flow.actions:
            return s.stage
    return None


# ----------------------------------------------------------------------------- real OVS

_TABLE_LINE = re.compile(r"^(?P<ind>\s*)(?P<table>\d+)\. (?P<rest>.*)$")
_COOKIE = re.compile(r"\bcookie (?P<cookie>0x[0-9a-fA-F]+)")
_PRIORITY = re.compile(r"\bpriority (?P<priority>\d+)")
_RESUME = re.compile(r"(?P<pre>Resuming from table )(?P<table>\d+)")
_OUTPUT = re.compile(r"^\s*output:(?P<port>\d+)\s*$")


def _stage_name(table: int) -> str:
    try:
        return pipeline.stage_of(table).name
    except KeyError:
        return "?"


def annotate_ofproto_trace(text: str, ex: Explainer) -> str:
    """`ofproto/trace` output with each table step's stage name and flow's API object.

    " 3. ct_state=+new+trk,…, priority 21337, cookie 0x4…" becomes
    " 3. (acl) ct_state=+new+trk,…, priority 21337, cookie 0x4…  [security_groups: …]",
    and an OpenFlow "output:2" gets "  [port vm-b (…)]" when ofport 2 is a bound port.
    """
    out: list[str] = []
    for line in text.splitlines():
        m = _TABLE_LINE.match(line)
        if m is not None:
            table = int(m.group("table"))
            new = f"{m.group('ind')}{table}. ({_stage_name(table)}) {m.group('rest')}"
            c = _COOKIE.search(m.group("rest"))
            if c is not None:
                p = _PRIORITY.search(m.group("rest"))
                prio = int(p.group("priority")) if p is not None else 0
                new += f"  [{ex.origin(int(c.group('cookie'), 16), table, prio)}]"
            out.append(new)
            continue
        r = _RESUME.search(line)
        if r is not None:
            table = int(r.group("table"))
            line = f"{line} ({_stage_name(table)})"
        o = _OUTPUT.match(line)
        port_id = ex.port_by_ofport(int(o.group("port"))) if o is not None else None
        if port_id is not None:
            line = f"{line}  [{ex.port(port_id)}]"
        out.append(line)
    return "\n".join(out)


def ovs_trace(
    ovs: OvsInstance,
    bridge: str,
    flow: str,
    ex: Explainer | None = None,
    *,
    extra_args: Iterable[str] = (),
    view: LocalView | None = None,
) -> str:
    """`ovs-appctl ofproto/trace BRIDGE FLOW` on the real switch, annotated (stages, and
    API objects if an Explainer, or a view to build one from, is given)."""
    text = ovs.appctl("ofproto/trace", bridge, flow, *extra_args)
    if ex is None:
        if view is None:
            view = LocalView()
        ex = Explainer(view)
    return annotate_ofproto_trace(text, ex)


# ----------------------------------------------------------------------------- one call


@dataclass
class Tracer:
    """The store's objects as a view with some ports bound, its flows and its names."""

    catalog: Catalog
    view: LocalView
    flows: list[Flow]
    explainer: Explainer

    @classmethod
    def from_catalog(
        cls, catalog: Catalog, bindings: Mapping[str, int], chassis_name: str = "trace"
    ) -> Tracer:
        view = build_view(catalog, bindings, chassis_name)
        flows, index = desired_flows(view)
        return cls(catalog, view, flows, Explainer(view, catalog, index))

    @classmethod
    def for_spec(cls, catalog: Catalog, spec: PacketSpec) -> tuple[Tracer, Built]:
        """Bind the ports SPEC names to synthetic ofports (1: source, 2: destination); a
        packet for no port in particular (broadcast, unknown address) gets every other
        port of the source's network bound (2, 3, ...), so the flood has somewhere to go."""
        if spec.from_network is not None:
            return cls._from_outside(catalog, spec)
        probe = build_view(catalog, {})
        src = find_port(probe, spec.from_port)
        # As on the chassis the port is bound to (if known): which chassis hosts a router
        # gateway or NATs a floating IP follows from where the packet starts.
        here = catalog.port_chassis.get(src.id)
        chassis_name = here if here is not None and here in probe.chassis else "trace"
        built = build_packet(probe, spec)
        bindings = {src.id: 1}
        if built.dst is None:
            others = [p.id for p in probe.network_ports(src.network_id) if p.id != src.id]
            peers = [pid for pid in others if not probe.ports[pid].is_router_port]
            bindings.update({pid: n for n, pid in enumerate(peers, start=2)})
        elif built.dst.id != src.id and not built.dst.is_router_port:
            bindings[built.dst.id] = 2
        tracer = cls.from_catalog(catalog, bindings, chassis_name)
        return tracer, build_packet(tracer.view, spec, in_port=1)

    @classmethod
    def _from_outside(cls, catalog: Catalog, spec: PacketSpec) -> tuple[Tracer, Built]:
        """A packet from a host on an external network's physnet to DST_IP (a floating
        IP, a gateway address), traced as the chassis that answers for that address
        (the floating IP's port's chassis when it NATs it there, else the gateway
        chassis), entering on its patch port; the port it is meant for is bound (2)
        when it is on that chassis."""
        probe = build_view(catalog, {})
        net = find_network(probe, catalog, spec.from_network or "")
        if not is_provider(net) or not net.physical_network:
            raise TraceError(f"network {net.id} is not a flat or vlan provider network")
        if spec.dst_ip is None or spec.src_ip is None:
            raise TraceError("from a network, give --src-ip (the outside host) and --dst-ip")
        fip = next(
            (
                f
                for f in probe.floatingips.values()
                if f.ip == spec.dst_ip and f.network_id == net.id
            ),
            None,
        )
        target = probe.ports.get(fip.port_id) if fip is not None else None
        pf = None if fip is not None else _forwarding_to(probe, net.id, spec)
        if pf is not None:  # (centralized on the gateway chassis: no own MAC)
            target = probe.ports.get(pf.internal_port_id)
        chassis = None
        if fip is not None and target is not None:
            here = catalog.port_chassis.get(target.id)
            if here is not None and here in probe.chassis:
                view = build_view(catalog, {target.id: 2}, here)
                chassis = here if local_fip(view, fip.id) is not None else None
        chassis = chassis or gateway_chassis(probe, net, _router_zones(probe, fip, pf, spec.dst_ip))
        if chassis is None:
            raise TraceError(
                f"no gateway chassis maps physnet {net.physical_network}: nothing answers there"
            )
        bound = {target.id: 2} if target and catalog.port_chassis.get(target.id) == chassis else {}
        tracer = cls.from_catalog(catalog, bound, chassis)
        mapped = dict(tracer.view.chassis[chassis].bridge_mappings)
        in_port = patch_ofports(mapped)[net.physical_network]
        if fip is not None:
            dst_mac = fip.mac
        elif pf is not None:
            dst_mac = _gateway_mac_of(tracer.view, net.id, None, pf.router_id)
        else:
            dst_mac = _gateway_mac_of(tracer.view, net.id, spec.dst_ip)
        src_mac = (spec.src_mac or OUTSIDE_MAC).lower()
        vid = vlan_vid(net)
        vlan = None if vid is None else vid & 0xFFF
        try:
            packet = _l4_packet(spec, in_port, src_mac, dst_mac, spec.src_ip, spec.dst_ip, vlan)
        except ValueError as exc:
            raise TraceError(f"cannot build that packet: {exc}") from None
        return tracer, Built(packet, None, target)

    def simulate(self, built: Built) -> Trace:
        if built.src is None:  # from the physical network: its in_port is the patch port
            return Simulator(
                self.flows,
                conntrack=Conntrack(),
                cookies=self.explainer.index,
                patches=trunk.patch_peers(self.view),
            ).run(built.packet.copy())
        return simulate(
            self.view, built.src.id, built.packet, flows=self.flows, index=self.explainer.index
        )

    def explain(self, trace: Trace) -> str:
        return format_explained(trace, self.explainer)


def run_trace(settings: Settings, spec: PacketSpec, *, use_ovs: bool = False) -> str:
    """What `wyvern trace` prints: the simulator's explained trace, or with USE_OVS the
    annotated `ofproto/trace` of the agent's bridge (bindings read from that OVS)."""
    from wyvern.nb.factory import open_store

    store = open_store(settings)
    try:
        catalog = Catalog.from_store(store)
    finally:
        store.close()
    dhcp_settings = dhcp.DhcpSettings(settings.dhcp_lease_duration, settings.dns_domain)
    if not use_ovs:
        tracer, built = Tracer.for_spec(catalog, spec)
        tracer.explainer.dhcp = dhcp_settings
        return tracer.explain(tracer.simulate(built))
    from wyvern.southbound.ovs import OvsError

    try:
        ovs = OvsInstance.attach(settings.agent_ovs_dir, settings.agent_netns)
        bindings = ovs_bindings(ovs)
        tracer = Tracer.from_catalog(catalog, bindings, settings.agent_chassis)
        src = find_port(tracer.view, spec.from_port)
        ofport = bindings.get(src.id)
        if ofport is None:
            raise TraceError(f"{tracer.explainer.port(src.id)} is not plugged into this OVS")
        built = build_packet(tracer.view, spec, in_port=ofport)
        flow = flow_spec(built.packet)
        text = ovs_trace(ovs, settings.bridge, flow, tracer.explainer)
    except OvsError as exc:
        raise TraceError(f"ofproto/trace on {settings.agent_ovs_dir}: {exc}") from None
    head = [
        f"packet: {describe_packet(built.packet)}",
        f"from: {tracer.explainer.port(src.id)} (ofport {ofport})",
        f"ofproto/trace {settings.bridge} {flow}",
        "",
    ]
    if spec.proto.lower() == "dhcp6":  # (what the punt's controller action leads to)
        tracer.explainer.dhcp = dhcp_settings
        text += f"\nif punted: {dhcp6_answer(tracer.explainer, src.id)}"
    return "\n".join(head) + text
