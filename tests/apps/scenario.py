"""Build a LocalView from a compact description and run apps' flows through the simulator.

Shared by every app's tests (L2, L3, security groups)::

    from tests.apps import scenario as sc

    view = sc.build_view(
        networks=[sc.network("n1", key=10)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[sc.port("a", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"]),
               sc.port("b", "n1", key=2, mac=MAC_B, ips=["10.0.0.6"])],
        local={"a": 1, "b": 2},          # port id -> ofport on this chassis
    )
    s = sc.Scenario(view, apps=sc.l2_apps())
    trace = s.run(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert trace.output_ports == [2]

Objects are dicts shaped like the store's JSON (internal `_key` fields included) and go
through `record_from_obj` and `LocalView.apply`, exactly as the agent's sync layer does.
Helpers fill what is tedious: a port's fixed IP given as a bare address gets the subnet of
its network that contains it, and a router without `_interfaces` gets one per port whose
device_owner is network:router_interface* and whose device_id is the router.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from wyvern.apps.base import App
from wyvern.controller.engine import Engine, entry_lines, fingerprint
from wyvern.model.view import Binding, Kind, LocalView, record_from_obj

__all__ = ["record_from_obj"]  # re-exported for tests that replace one object
from wyvern.ir import Flow, Goto, pipeline, table
from wyvern.ir.cookies import AppName, CookieIndex, encode
from wyvern.ir.misses import miss_flows
from wyvern.ir.packet import Packet
from wyvern.ir.simulator import Conntrack, Simulator, Trace

Obj = dict[str, Any]

# ---------------------------------------------------------------- object builders


def network(id: str, key: int, **extra: Any) -> Obj:
    return {
        "id": id,
        "_key": key,
        "name": id,
        "admin_state_up": True,
        "port_security_enabled": True,
        "mtu": 1500,
        **extra,
    }


def subnet(
    id: str,
    network_id: str,
    cidr: str,
    *,
    enable_dhcp: bool = True,
    gateway_ip: str | None = "",
    **extra: Any,
) -> Obj:
    """gateway_ip "" (default) means the first host of the CIDR; None means no gateway."""
    net = ipaddress.ip_network(cidr)
    gw = str(net.network_address + 1) if gateway_ip == "" else gateway_ip
    return {
        "id": id,
        "network_id": network_id,
        "cidr": cidr,
        "ip_version": net.version,
        "gateway_ip": gw,
        "enable_dhcp": enable_dhcp,
        **extra,
    }


def port(
    id: str,
    network_id: str,
    key: int,
    mac: str,
    ips: Sequence[str | tuple[str, str]] = (),
    *,
    security_groups: Sequence[str] = (),
    allowed_address_pairs: Sequence[Mapping[str, str]] = (),
    port_security_enabled: bool = True,
    device_owner: str = "compute:nova",
    device_id: str = "",
    **extra: Any,
) -> Obj:
    """`ips`: bare addresses (subnet found by build_view) or (subnet_id, address) pairs."""
    fixed = [
        {"subnet_id": ip[0], "ip_address": ip[1]}
        if isinstance(ip, tuple)
        else {"subnet_id": "", "ip_address": ip}
        for ip in ips
    ]
    return {
        "id": id,
        "network_id": network_id,
        "_key": key,
        "mac_address": mac,
        "fixed_ips": fixed,
        "name": id,
        "admin_state_up": True,
        "port_security_enabled": port_security_enabled,
        "security_groups": list(security_groups),
        "allowed_address_pairs": [dict(p) for p in allowed_address_pairs],
        "device_owner": device_owner,
        "device_id": device_id,
        **extra,
    }


def router_port(id: str, network_id: str, key: int, mac: str, ip: str, router_id: str) -> Obj:
    """A router interface port (device_owner network:router_interface)."""
    return port(
        id,
        network_id,
        key,
        mac,
        [ip],
        device_owner="network:router_interface",
        device_id=router_id,
        port_security_enabled=False,
    )


def router(id: str, key: int, **extra: Any) -> Obj:
    return {"id": id, "_key": key, "name": id, "admin_state_up": True, "routes": [], **extra}


def security_group(id: str, *, stateful: bool = True, **extra: Any) -> Obj:
    return {"id": id, "name": id, "stateful": stateful, **extra}


def rule(
    id: str,
    security_group_id: str,
    direction: str,
    *,
    ethertype: str = "IPv4",
    protocol: str | None = None,
    port_range_min: int | None = None,
    port_range_max: int | None = None,
    remote_ip_prefix: str | None = None,
    remote_group_id: str | None = None,
    remote_address_group_id: str | None = None,
) -> Obj:
    return {
        "id": id,
        "security_group_id": security_group_id,
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": port_range_min,
        "port_range_max": port_range_max,
        "remote_ip_prefix": remote_ip_prefix,
        "remote_group_id": remote_group_id,
        "remote_address_group_id": remote_address_group_id,
    }


def address_group(id: str, addresses: Sequence[str]) -> Obj:
    return {"id": id, "addresses": list(addresses)}


def qos_policy(id: str, *rules: Mapping[str, Any]) -> Obj:
    """A QoS policy as the API stores it: rules (with their `type`) in `_rules`, by id."""
    stored = {}
    for i, r in enumerate(rules):
        rule = {"id": f"{id}-r{i}", "direction": "egress", **r}
        rule.setdefault("max_burst_kbps", 0)
        rule.setdefault("max_burst_kpps", 0)
        stored[rule["id"]] = rule
    return {"id": id, "name": id, "_rules": stored}


# ---------------------------------------------------------------- the view


def _resolve_subnets(ports: Iterable[Obj], subnets: Iterable[Obj]) -> list[Obj]:
    subs = list(subnets)
    out = []
    for p in ports:
        p = dict(p)
        fixed = []
        for f in p.get("fixed_ips") or ():
            f = dict(f)
            if not f.get("subnet_id"):
                addr = ipaddress.ip_address(f["ip_address"])
                for s in subs:
                    if s["network_id"] == p["network_id"] and addr in ipaddress.ip_network(
                        s["cidr"]
                    ):
                        f["subnet_id"] = s["id"]
                        break
                else:
                    f["subnet_id"] = "no-subnet"
            fixed.append(f)
        p["fixed_ips"] = fixed
        out.append(p)
    return out


def _router_interfaces(r: Obj, ports: Iterable[Obj], subnets: Iterable[Obj]) -> Obj:
    if "_interfaces" in r:
        return r
    cidrs = {s["id"]: s["cidr"] for s in subnets}
    itfs = [
        {
            "port_id": p["id"],
            "network_id": p["network_id"],
            "fixed_ips": [
                {
                    "subnet_id": f["subnet_id"],
                    "ip_address": f["ip_address"],
                    "cidr": cidrs.get(f["subnet_id"], f["ip_address"]),
                }
                for f in p["fixed_ips"]
            ],
        }
        for p in ports
        if str(p.get("device_owner", "")).startswith("network:router_interface")
        and p.get("device_id") == r["id"]
    ]
    return {**r, "_interfaces": itfs}


def build_view(
    *,
    networks: Iterable[Obj] = (),
    subnets: Iterable[Obj] = (),
    ports: Iterable[Obj] = (),
    routers: Iterable[Obj] = (),
    security_groups: Iterable[Obj] = (),
    rules: Iterable[Obj] = (),
    address_groups: Iterable[Obj] = (),
    qos_policies: Iterable[Obj] = (),
    local: Mapping[str, int] | None = None,
    chassis_name: str = "chassis-1",
) -> LocalView:
    """A LocalView holding these objects; `local` maps port id -> ofport (the bindings)."""
    view = LocalView(chassis_name=chassis_name)
    subnets = list(subnets)
    ports = _resolve_subnets(ports, subnets)
    objs: list[tuple[Kind, Obj]] = [
        *(("network", o) for o in networks),
        *(("subnet", o) for o in subnets),
        *(("security_group", o) for o in security_groups),
        *(("security_group_rule", o) for o in rules),
        *(("address_group", o) for o in address_groups),
        *(("qos_policy", o) for o in qos_policies),
        *(("port", o) for o in ports),
        *(("router", _router_interfaces(o, ports, subnets)) for o in routers),
    ]
    for kind, o in objs:
        view.apply(kind, o["id"], record_from_obj(kind, o))
    for port_id, ofport in (local or {}).items():
        bind(view, port_id, ofport)
    return view


def bind(view: LocalView, port_id: str, ofport: int, trunk_ofport: int = 0) -> None:
    """Plug a port into this chassis (a binding, as the agent learns it from OVS); a
    trunk's subport is plugged as a patch pair (ofport, trunk_ofport)."""
    view.apply("binding", port_id, Binding(port_id, ofport, trunk_ofport))
    view.port_chassis[port_id] = view.chassis_name


def patches_of(view: LocalView) -> dict[int, int]:
    """The patch pairs of the subports bound here (each end -> the other)."""
    out: dict[int, int] = {}
    for b in view.bindings.values():
        if b.trunk_ofport:
            out[b.ofport] = b.trunk_ofport
            out[b.trunk_ofport] = b.ofport
    return out


def unbind(view: LocalView, port_id: str) -> None:
    view.apply("binding", port_id, None)
    view.port_chassis.pop(port_id, None)


# ---------------------------------------------------------------- apps and flows


def all_app_classes() -> list[type[App]]:
    from wyvern.apps import ALL_APPS

    return list(ALL_APPS)


def default_apps() -> list[App]:
    """One instance of every app in wyvern.apps.ALL_APPS."""
    return [cls() for cls in all_app_classes()]


def l2_apps() -> list[App]:
    """The L2 family only (classifier … output, plus their stage defaults)."""
    from wyvern.apps import L2_APPS

    return [cls() for cls in L2_APPS]


def passthrough_for_missing_apps(apps: Sequence[App]) -> list[Flow]:
    """The stage defaults a run with only some apps needs. With the pipeline's own app
    ("pipeline") present, none: it emits every stage's declared miss. Without it, the
    declared miss of each stage whose owner runs, and a priority-0 "go to the next stage"
    for the other stages (so, for example, L2 tests run without the security-group app).
    Router stages (direction "l3") of absent owners get nothing: without the L3 app a
    packet for a router MAC is dropped at router_input; but the metering stages, which
    only count, pass packets on without the metering app."""
    names = {a.name for a in apps}
    if "pipeline" in names:
        return []
    out: list[Flow] = [f for f in miss_flows() if pipeline.stage(f.stage).owner in names]
    for st in pipeline.PIPELINE:
        if st.owner in names or (st.direction == "l3" and st.owner != "metering"):
            continue  # a router stage without its app: a table miss drops
        forward = [n for n in st.next if pipeline.is_forward(st.name, n)]
        if not forward:
            continue
        out.append(
            table(st.name).flow(
                priority=0,
                cookie=encode("pipeline", f"passthrough:{st.name}"),
                actions=(Goto(forward[0]),),
            )
        )
    return out


def app_flows(view: LocalView, app: App) -> dict[tuple[str, str], list[Flow]]:
    """Full recompute of one app: owner -> flows (owners with no flows left out)."""
    out: dict[tuple[str, str], list[Flow]] = {}
    for owner in app.owners(view):
        fl = app.flows(view, owner)
        if fl:
            out[owner] = fl
    return out


def all_flows(view: LocalView, apps: Sequence[App], *, passthrough: bool = True) -> list[Flow]:
    """global_flows of every app + every owner's flows (+ pass-through for missing apps)."""
    flows: list[Flow] = []
    for a in apps:
        flows.extend(a.global_flows())
    for a in apps:
        for fl in app_flows(view, a).values():
            flows.extend(fl)
    if passthrough:
        flows.extend(passthrough_for_missing_apps(apps))
    return flows


class Scenario:
    """A view plus apps; `run` sends a packet through all their flows (conntrack persists
    across runs; call `refresh()` after changing the view)."""

    def __init__(self, view: LocalView, apps: Sequence[App] | None = None) -> None:
        self.view = view
        self.apps = list(apps) if apps is not None else default_apps()
        self.conntrack = Conntrack()
        self.cookies = CookieIndex()
        self._sim: Simulator | None = None

    def flows(self) -> list[Flow]:
        return all_flows(self.view, self.apps)

    def refresh(self) -> None:
        self._sim = None

    @property
    def simulator(self) -> Simulator:
        if self._sim is None:
            for a in self.apps:
                for owner in a.owners(self.view):
                    with contextlib.suppress(ValueError):  # a collision only hurts traces
                        self.cookies.register(cast(AppName, a.name), owner[1])
            for st in pipeline.PIPELINE:
                for what in ("default", "passthrough"):
                    with contextlib.suppress(ValueError):
                        self.cookies.register("pipeline", f"{what}:{st.name}")
            self._sim = Simulator(
                self.flows(),
                conntrack=self.conntrack,
                cookies=self.cookies,
                patches=patches_of(self.view),
            )
        return self._sim

    def run(self, packet: Packet) -> Trace:
        return self.simulator.run(packet)

    def ofport(self, port_id: str) -> int:
        return self.view.bindings[port_id].ofport

    def outcome(self, packet: Packet) -> Outcome:
        return Outcome.of(self.run(packet))


class Outcome:
    """A trace summarised: sorted output ports, punt userdata, and the emitted packets."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.ports = sorted(trace.output_ports)
        self.punts = [p.userdata for p in trace.punts]
        self.packets = {o.port: o.packet for o in trace.outputs}

    @classmethod
    def of(cls, trace: Trace) -> Outcome:
        return cls(trace)

    @property
    def dropped(self) -> bool:
        return self.trace.dropped

    def __repr__(self) -> str:
        return f"Outcome(ports={self.ports}, punts={self.punts})"


def engine_app_flows(engine: Engine) -> dict[str, dict[tuple[str, str], int]]:
    """The engine's desired table per app, as entry fingerprints (it keeps no flows nor
    text), global flows left out: compare with `as_entries(app.name, app_flows(...))`."""
    out: dict[str, dict[tuple[str, str], int]] = {a.name: {} for a in engine.apps}
    for (name, owner), fp in engine.fingerprints().items():
        if owner != ("app", name):
            out[name][owner] = fp
    return out


def as_entries(
    app: str, table: Mapping[tuple[str, str], Iterable[Flow]]
) -> dict[tuple[str, str], int]:
    """owner -> flows as owner -> the fingerprint of their installed lines (what the
    engine keeps)."""
    return {
        owner: fingerprint(entry_lines((app, owner), list(flows)))
        for owner, flows in table.items()
        if flows
    }


def with_meters(ovs: Any, flows: Iterable[Flow], bridge: str = "br-int") -> list[Flow]:
    """FLOWS, after adding to the bridge the punt meters they name (as the agent does
    before an install: OVS refuses a flow naming a missing meter)."""
    from wyvern.ir import Meter

    out = list(flows)
    add_meters(ovs, {a.meter_id for f in out for a in f.actions if isinstance(a, Meter)}, bridge)
    return out


def add_meters(ovs: Any, meter_ids: Iterable[int], bridge: str = "br-int") -> None:
    """Add punt meters (as the agent configures them) to the bridge, and QoS meters (at
    some rate: these tests look at where packets go, not at rates)."""
    from wyvern.apps.punts import METER_BURST, METER_RATE
    from wyvern.ir.meters import MeterSpec, is_punt_meter
    from wyvern.southbound.meters import Meters

    punt = MeterSpec("pktps", METER_RATE, METER_BURST)
    qos = MeterSpec("kbps", 1_000_000, 800_000)
    Meters(ovs, bridge).add({m: punt if is_punt_meter(m) else qos for m in meter_ids})
