"""The incremental engine equals a full recompute, after any sequence of changes.

Changes go through the sync layer's reference rules (as in the agent), so apps only ever
see views the agent can produce. The real apps are the ones the agent runs
(wyvern.apps.ALL_APPS); a small fake app checks the engine's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wyvern import apps as apps_pkg
from wyvern.apps.base import App, Owner
from wyvern.apps.gateway import gateway_chassis
from wyvern.controller.engine import (
    Engine,
    cookie_of,
    default_apps,
    fingerprints_full,
    rendered_full,
)
from wyvern.controller.sync import Sync
from wyvern.ir import Flow, Output, cookies, match, table
from wyvern.model.keys import mac_binding_id
from wyvern.model.view import (
    AddressPair,
    Binding,
    Change,
    Chassis,
    FixedIp,
    FloatingIp,
    GatewayHost,
    LocalView,
    MacBinding,
    MeteringLabel,
    MeterRule,
    Network,
    Port,
    PortForwarding,
    QosPolicy,
    QosRule,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    touched_keys,
)
from wyvern.nb.memory import MemoryStore
from wyvern.southbound.recorder import RecordingInstaller


class FakeL2(App):
    """One output flow per bound port, owned by its network."""

    name = "l2"
    owner_tables = {"network": "networks"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        net = view.networks.get(owner[1])
        if net is None:
            return []
        return [
            table("l2_lookup").flow(
                priority=100,
                cookie=cookies.encode("l2", p.id),
                match=match(network_key=net.key, eth_dst=p.mac),
                actions=[Output(view.bindings[p.id].ofport)],
            )
            for p in view.network_ports(net.id)
            if p.id in view.bindings
        ]


# ---- a small universe of ids, so random operations collide and reference each other ----
NETS = ["n0", "n1", "n2"]
SUBNETS = {f"s{i}": (NETS[i % 3], f"10.{i}.0.0/24") for i in range(5)}
SUBNETS["s5"] = ("n2", "2001:db8:5::/64")  # (IPv6: ports, routes and learned bindings)
PORTS = [f"p{i}" for i in range(7)]
ROUTERS = ["r0", "r1"]
SGS = ["g0", "g1", "g2"]
RULES = [f"u{i}" for i in range(6)]
QOS = ["q0", "q1"]


def subnets_of(net: str) -> list[str]:
    return [s for s, (n, _) in SUBNETS.items() if n == net]


def ip_in(subnet: str, host: int) -> str:
    cidr = SUBNETS[subnet][1]
    if ":" in cidr:
        return f"{cidr.split('/')[0]}{host:x}"
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    return f"{base}.{host}"


@st.composite
def network(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(NETS))
    ntype = draw(st.sampled_from(["geneve", "geneve", "vxlan", "vlan", "flat"]))
    provider = ntype in ("vlan", "flat")
    return ("network", id_, Network(
        id=id_, key=NETS.index(id_) + 1 + draw(st.sampled_from([0, 10])),
        network_type=ntype,
        segmentation_id=draw(st.sampled_from([101, 102, None])) if ntype == "vlan" else None,
        physical_network=draw(st.sampled_from(["physnet1", "physnet2"])) if provider else None,
        mtu=draw(st.sampled_from([1450, 1500])),
        port_security_enabled=draw(st.booleans()),
        admin_state_up=draw(st.booleans()),
        external=draw(st.booleans()),
        scope4=draw(st.sampled_from([0, 0, 5, 6])),
        scope6=draw(st.sampled_from([0, 5])),
        qos_policy_id=draw(st.sampled_from([None, None, *QOS])),
    ))  # fmt: skip


V6_MODES = [None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless"]  # (the DHCPv6 punt)


@st.composite
def subnet(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(sorted(SUBNETS)))
    net, cidr = SUBNETS[id_]
    return ("subnet", id_, Subnet(
        id=id_, network_id=net, cidr=cidr, ip_version=6 if ":" in cidr else 4,
        gateway_ip=draw(st.sampled_from([ip_in(id_, 1), None])),
        enable_dhcp=draw(st.booleans()), dns_nameservers=(), host_routes=(),
        ipv6_ra_mode=None,
        ipv6_address_mode=draw(st.sampled_from(V6_MODES)) if ":" in cidr else None,
    ))  # fmt: skip


@st.composite
def port(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(PORTS))
    idx = PORTS.index(id_)
    net = draw(st.sampled_from(NETS))
    subs = draw(st.lists(st.sampled_from(subnets_of(net)), unique=True, max_size=2))
    router_port = draw(st.booleans()) and bool(subs)
    gateway = router_port and draw(st.booleans())
    # (some pairs name other ports' fixed addresses, learned bindings' too: VIPs)
    pairs = draw(st.lists(st.sampled_from(["10.9.0.0/24", "10.0.0.200", "10.1.0.77",
                                           "10.0.0.10", "10.1.0.11", "2001:db8:5::b"]),
                          unique=True, max_size=2))  # fmt: skip
    mac = f"fa:16:3e:00:01:{idx:02x}"
    # a trunk's parent (its subports and VLANs), a subport (its parent and VLAN), or neither
    role = draw(st.sampled_from(["", "", "parent", "subport"]))
    others = [p for p in PORTS if p != id_]
    trunk_subports = (
        tuple(
            (p, 101 + i)
            for i, p in enumerate(draw(st.lists(st.sampled_from(others), unique=True, max_size=2)))
        )
        if role == "parent"
        else ()
    )
    trunk_parent = draw(st.sampled_from(others)) if role == "subport" else ""
    trunk_vlan = draw(st.sampled_from([101, 102])) if role == "subport" else 0
    return ("port", id_, Port(
        id=id_, network_id=net, key=idx + 1 + draw(st.sampled_from([0, 20])), mac=mac,
        fixed_ips=tuple(FixedIp(s, ip_in(s, 10 + idx)) for s in subs),
        device_owner=(
            "network:router_gateway" if gateway
            else "network:router_interface" if router_port else "compute:nova"
        ),
        device_id=draw(st.sampled_from(ROUTERS)) if router_port else f"vm-{idx}",
        name="", admin_state_up=draw(st.booleans()),
        port_security_enabled=draw(st.booleans()),
        allowed_address_pairs=tuple(AddressPair(a, mac) for a in pairs),
        security_group_ids=tuple(draw(st.lists(st.sampled_from(SGS), unique=True, max_size=2))),
        extra_dhcp_opts=(), binding_host="",
        qos_policy_id=draw(st.sampled_from([None, None, *QOS])),
        trunk_subports=trunk_subports, trunk_parent=trunk_parent, trunk_vlan=trunk_vlan,
    ))  # fmt: skip


@st.composite
def router(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(ROUTERS))
    itf_ports = draw(st.lists(st.sampled_from(PORTS), unique=True, max_size=3))
    interfaces = []
    for p in itf_ports:
        s = draw(st.sampled_from(sorted(SUBNETS)))
        interfaces.append(RouterInterface(
            port_id=p, network_id=SUBNETS[s][0], subnet_ids=(s,),
            ips=((ip_in(s, 1), SUBNETS[s][1]),),
        ))  # fmt: skip
    return ("router", id_, Router(
        id=id_, key=ROUTERS.index(id_) + 1, admin_state_up=draw(st.booleans()),
        interfaces=tuple(interfaces),
        routes=tuple(draw(st.lists(st.just(("192.168.0.0/16", "10.0.0.5")), max_size=1))),
        gateway_network_id=(gw_net := draw(st.sampled_from([None, *NETS]))),
        gateway_port_id=draw(st.sampled_from([None, *PORTS])),
        enable_snat=draw(st.booleans()),
        floating_ips=tuple(draw(st.lists(floating_ip(id_, gw_net or "n2"), max_size=2,
                                         unique_by=lambda f: f.id))),
        # (no two clashing on one address, protocol and port: the API refuses that)
        port_forwardings=tuple(draw(st.lists(port_forwarding(id_, gw_net or "n2"), max_size=2,
                                             unique_by=(lambda f: f.id,
                                                        lambda f: (f.ip, f.protocol, f.ext[0]))))),
        az_hints=draw(st.sampled_from([(), (), ("nova",), ("az2",), ("az2", "nova")])),
        project_id=draw(st.sampled_from(PROJECTS)),
    ))  # fmt: skip


PROJECTS = ["p1", "p2"]
LABELS = ["l0", "l1", "l2"]
METER_PREFIXES = [None, "10.0.0.0/24", "10.0.0.5/32", "0.0.0.0/0", "2001:db8::/64"]


@st.composite
def meter_rule(draw: Any) -> MeterRule:
    source = draw(st.sampled_from(METER_PREFIXES))
    destination = draw(st.sampled_from(METER_PREFIXES))
    return MeterRule(
        id=draw(st.sampled_from(["m0", "m1", "m2", "m3"])),
        direction=draw(st.sampled_from(["ingress", "egress"])),
        excluded=draw(st.booleans()),
        source=source,
        destination=destination,
    )


@st.composite
def metering_label(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    """A label of either project (or shared) with up to three rules, some of them the
    API refuses (no prefix, two IP versions): the app must make nothing of those."""
    id_ = id_ or draw(st.sampled_from(LABELS))
    rules = draw(st.lists(meter_rule(), max_size=3, unique_by=lambda r: r.id))
    return ("metering_label", id_, MeteringLabel(
        id=id_, key=LABELS.index(id_) + 1, project_id=draw(st.sampled_from(PROJECTS)),
        shared=draw(st.booleans()), rules=tuple(sorted(rules, key=lambda r: r.id)),
    ))  # fmt: skip


@st.composite
def port_forwarding(draw: Any, router_id: str, network_id: str) -> PortForwarding:
    """A forwarding (ids shared by the routers, as floating IPs): single, kept, N-1 and
    shifted ranges, on floating addresses the associations may use too."""
    pid = draw(st.sampled_from(["pf0", "pf1", "pf2"]))
    port = draw(st.sampled_from(PORTS))
    lo = draw(st.sampled_from([80, 5000]))
    ext = draw(st.sampled_from([(lo, lo), (lo, lo + 9)]))
    int_ = draw(st.sampled_from([(22, 22), ext, (ext[0] + 100, ext[1] + 100)]))
    return PortForwarding(
        id=pid, fip_id=draw(st.sampled_from(["f1", "f3"])), router_id=router_id,
        network_id=network_id,
        ip=ip_in(draw(st.sampled_from(subnets_of(network_id))), 51),
        protocol=draw(st.sampled_from(["tcp", "udp"])),
        internal_ip=ip_in(draw(st.sampled_from(sorted(SUBNETS))), 10 + PORTS.index(port)),
        internal_port_id=port, ext=ext, int_=int_,
    )  # fmt: skip


@st.composite
def floating_ip(draw: Any, router_id: str, network_id: str) -> FloatingIp:
    """An association (ids shared by the routers: a floating IP moves between them)."""
    fid = draw(st.sampled_from(["f0", "f1", "f2"]))
    pid = draw(st.sampled_from(PORTS))
    idx = PORTS.index(pid)
    return FloatingIp(
        id=fid, router_id=router_id, network_id=network_id,
        ip=ip_in(draw(st.sampled_from(subnets_of(network_id))), 50 + int(fid[1])),
        fixed_ip=ip_in(draw(st.sampled_from(sorted(SUBNETS))), 10 + idx), port_id=pid,
        mac=f"fa:16:3e:00:02:0{fid[1]}", key=30 + int(fid[1]),
    )  # fmt: skip


QOS_RULES = [
    QosRule("bandwidth_limit", "egress", 3000, 0),
    QosRule("bandwidth_limit", "ingress", 5000, 400),
    QosRule("bandwidth_limit", "egress", 0, 0),
    QosRule("packet_rate_limit", "egress", 2, 0),
    QosRule("packet_rate_limit", "ingress", 1, 1),
    QosRule("dscp_marking", "egress", 26),
]


@st.composite
def qos_policy(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(QOS))
    rules = draw(st.lists(st.sampled_from(QOS_RULES), unique=True, max_size=3))
    return ("qos_policy", id_, QosPolicy(id=id_, rules=tuple(rules)))


@st.composite
def sg(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(SGS))
    return ("security_group", id_, SecurityGroup(id=id_, stateful=draw(st.booleans())))


@st.composite
def rule(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(RULES))
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp"]))
    lo = draw(st.sampled_from([None, 22, 80])) if proto in ("tcp", "udp") else None
    remote = draw(st.sampled_from(["ip", "group", "none"]))
    return ("security_group_rule", id_, SecurityGroupRule(
        id=id_, security_group_id=draw(st.sampled_from(SGS)),
        direction=draw(st.sampled_from(["ingress", "egress"])), ethertype="IPv4",
        protocol=proto, port_range_min=lo, port_range_max=None if lo is None else lo + 10,
        remote_ip_prefix="10.0.0.0/8" if remote == "ip" else None,
        remote_group_id=draw(st.sampled_from(SGS)) if remote == "group" else None,
        remote_address_group_id=None,
    ))  # fmt: skip


@st.composite
def binding(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    id_ = id_ or draw(st.sampled_from(PORTS))
    trunk_ofport = draw(st.sampled_from([0, 0, 10, 11]))  # (a subport's patch: its trunk end)
    return ("binding", id_, Binding(id_, draw(st.integers(1, 9)), trunk_ofport))


CHASSIS = ["c1", "c2", "c3"]  # c1 is the view's own chassis


@st.composite
def chassis(draw: Any, name: str | None = None) -> tuple[str, str, Any]:
    name = name or draw(st.sampled_from(CHASSIS))
    both = ("geneve", "vxlan")
    encaps = draw(st.sampled_from([both, both, both, ("geneve",), ("vxlan",), ()]))
    ip = f"192.0.2.{CHASSIS.index(name) + 1}"
    ip = draw(st.sampled_from([ip, ip, ip, ""]))
    mappings = draw(
        st.sampled_from(
            [(), (("physnet1", "br-ex"),), (("physnet1", "br-ex"), ("physnet2", "br-ex2"))]
        )
    )
    return ("chassis", name, Chassis(
        name=name, tunnel_ip=ip, encaps=encaps, bridge_mappings=mappings,
        gateway_priority=draw(st.sampled_from([0, 0, 1, 2])),
        availability_zone=draw(st.sampled_from(["nova", "az2"])),
        enabled=draw(st.sampled_from([True, True, False])),
    ))  # fmt: skip


@st.composite
def mac_binding(draw: Any) -> tuple[str, str, Any]:
    """A neighbour learned on a network (some at a port's address, which a port owns)."""
    s = draw(st.sampled_from(sorted(SUBNETS)))
    net, ip = SUBNETS[s][0], ip_in(s, draw(st.sampled_from([1, 10, 11, 99])))
    id_ = mac_binding_id(net, ip)
    mac = draw(st.sampled_from(["fa:16:3e:99:00:01", "fa:16:3e:99:00:02"]))
    return ("mac_binding", id_, MacBinding(id_, net, ip, mac))


@st.composite
def status(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    """A port's binding status record (where it is bound, ACTIVE or not)."""
    id_ = id_ or draw(st.sampled_from(PORTS))
    where = draw(st.sampled_from(CHASSIS))
    state = draw(st.sampled_from(["ACTIVE", "ACTIVE", "DOWN"]))
    return ("status", id_, {"chassis": where, "status": state})


@st.composite
def gateway_host(draw: Any, id_: str | None = None) -> tuple[str, str, Any]:
    """A router's gateway status: the chassis that reports hosting it (a tie keeps it)."""
    id_ = id_ or draw(st.sampled_from(ROUTERS))
    return ("gateway_host", id_, GatewayHost(draw(st.sampled_from(CHASSIS))))


@st.composite
def chassis_down(draw: Any) -> tuple[str, str, Any]:
    """BFD says a chassis's dataplane is down (or up again): an agent fact."""
    return ("chassis_down", draw(st.sampled_from(CHASSIS)), draw(st.sampled_from([True, None])))


@st.composite
def lease_expiry(draw: Any) -> tuple[str, str, Any]:
    """A chassis's lease runs out (its agent died): the store deletes its record."""
    return ("lease_expired", draw(st.sampled_from(CHASSIS)), None)


@st.composite
def removal(draw: Any) -> tuple[str, str, Any]:
    kind, ids = draw(st.sampled_from([
        ("network", NETS), ("subnet", sorted(SUBNETS)), ("port", PORTS), ("router", ROUTERS),
        ("security_group", SGS), ("security_group_rule", RULES), ("binding", PORTS),
        ("chassis", CHASSIS), ("status", PORTS), ("gateway_host", ROUTERS),
        ("metering_label", LABELS),
        ("chassis", CHASSIS), ("status", PORTS), ("gateway_host", ROUTERS), ("qos_policy", QOS),
        ("mac_binding", [mac_binding_id(n, ip_in(s, h)) for s, (n, _) in SUBNETS.items()
                         for h in (1, 99)]),
    ]))  # fmt: skip
    return (kind, draw(st.sampled_from(ids)), None)


RANDOM_OPS = st.lists(
    st.one_of(
        network(),
        subnet(),
        port(),
        router(),
        sg(),
        rule(),
        qos_policy(),
        binding(),
        chassis(),
        mac_binding(),
        status(),
        gateway_host(),
        metering_label(),
        chassis_down(),
        lease_expiry(),
        removal(),
    ),
    max_size=40,
)


def gateway_setup(draw: Any) -> list[tuple[str, str, Any]]:
    """r0's gateway on n2 (flat on physnet1, s2's gateway .1) through p6, hosted by c1:
    the random changes that follow then move it, break it and take it away."""
    _, _, net = draw(network("n2"))
    _, _, sub = draw(subnet("s2"))
    _, _, gw_port = draw(port("p6"))
    _, _, r0 = draw(router("r0"))
    _, _, c1 = draw(chassis("c1"))
    _, _, c2 = draw(chassis("c2"))
    tie = [  # (sometimes a second gateway chassis of the same priority: who keeps it?)
        ("chassis", "c2", dataclasses.replace(
            c2, bridge_mappings=(("physnet1", "br-ex"),), gateway_priority=2,
        )),
        draw(gateway_host("r0")),
    ] if draw(st.booleans()) else []  # fmt: skip
    return [
        *tie,
        ("network", "n2", dataclasses.replace(
            net, network_type="flat", physical_network="physnet1", segmentation_id=None,
            admin_state_up=True,
        )),
        ("subnet", "s2", dataclasses.replace(sub, gateway_ip=ip_in("s2", 1))),
        ("port", "p6", dataclasses.replace(
            gw_port, network_id="n2", fixed_ips=(FixedIp("s2", ip_in("s2", 16)),),
            device_owner="network:router_gateway", device_id="r0",
        )),
        ("router", "r0", dataclasses.replace(
            r0, admin_state_up=True, gateway_network_id="n2", gateway_port_id="p6",
        )),
        ("chassis", "c1", dataclasses.replace(
            c1, bridge_mappings=(("physnet1", "br-ex"),), gateway_priority=2,
        )),
    ]  # fmt: skip


@st.composite
def scenario(draw: Any) -> list[tuple[str, str, Any]]:
    """A populated topology (every object once, most ports bound), then random changes."""
    base: list[tuple[str, str, Any]] = []
    base += [draw(network(n)) for n in NETS]
    base += [draw(subnet(s)) for s in sorted(SUBNETS)]
    base += [draw(sg(g)) for g in SGS]
    base += [draw(rule(r)) for r in RULES]
    base += [draw(port(p)) for p in PORTS]
    base += [draw(router(r)) for r in ROUTERS]
    base += [draw(binding(p)) for p in PORTS if draw(st.booleans())]
    base += [draw(chassis(n)) for n in CHASSIS]
    base += [draw(status(p)) for p in PORTS if draw(st.integers(0, 3))]
    base += draw(st.lists(mac_binding(), max_size=3))
    base += [draw(gateway_host(r)) for r in ROUTERS if draw(st.booleans())]
    base += [draw(metering_label(m)) for m in LABELS if draw(st.booleans())]
    if draw(st.booleans()):
        base += gateway_setup(draw)
    order = draw(st.permutations(base)) if draw(st.booleans()) else base
    tail: list[tuple[str, str, Any]] = draw(RANDOM_OPS)
    return list(order) + tail


OPS = scenario()
# More examples for a hunt: WYVERN_TEST_EXAMPLES=1000 (CI runs the default).
EXAMPLES = int(os.environ.get("WYVERN_TEST_EXAMPLES", "60"))


def put(sync: Sync, kind: str, id_: str, record: Any) -> list[Change]:
    """One op through the sync layer: a store record, a binding, a port status, or a
    chassis's lease running out (chassis come and go: down, then back with a record)."""
    if kind == "status":
        return sync.put_status(id_, record)
    if kind == "lease_expired":  # the store deleted its record (our own: ignored, see Sync)
        if id_ == sync.view.chassis_name:
            return []
        return sync.put_record("chassis", id_, None)
    return sync.put_record(kind, id_, record)  # type: ignore[arg-type]


def assert_one_entry_per_identity(entries: dict[Any, list[str]]) -> None:
    """No two entries (nor two flows of one) write one flow identity (table, priority,
    match): on the switch the later add would replace the other, and deleting its entry
    by cookie would leave the other without the flow. The installer keeps no index to
    refuse that, so the apps must never do it."""
    seen: dict[tuple[str, ...], tuple[Any, str]] = {}
    for key, lines in entries.items():
        for line in lines:
            table, priority, _cookie, *match = line.split(" actions=", 1)[0].split(",", 3)
            ident = (table, priority, *match)
            assert seen.setdefault(ident, (key, line)) == (key, line), (ident, seen[ident], key)


def run_sequence(apps: list[App], ops: list[tuple[str, str, Any]]) -> None:
    view = LocalView(chassis_name="c1")
    sync = Sync(MemoryStore(), view)
    engine = Engine(apps)
    engine.full(view)
    switch = RecordingInstaller()  # what a switch holds after each render's changes
    for i, (kind, id_, record) in enumerate(ops):
        for change in put(sync, kind, id_, record):
            engine.apply(view, change)
        assert engine.fingerprints() == fingerprints_full(apps, view), (kind, id_, record)
        if i % 3 == 0:  # (bursts too: several ops between two renders)
            switch.apply(engine.render())
    switch.apply(engine.render())
    full = rendered_full(apps, view)
    assert switch.installed == {line for lines in full.values() for line in lines}
    # (unless the random ops made a state that OVS or the API never makes: two interfaces
    # on one ofport (a subport's patch end too), two networks on one physical network and
    # segment, two subports of one parent on one VLAN)
    ofports = [b.ofport for b in view.bindings.values()]
    ofports += [b.trunk_ofport for b in view.bindings.values() if b.trunk_ofport]
    segments = [
        (n.network_type, n.physical_network, n.segmentation_id)
        for n in view.networks.values()
        if n.physical_network
    ]
    vlans = [(p.trunk_parent, p.trunk_vlan) for p in view.ports.values() if p.trunk_parent]
    if (
        len(set(ofports)) == len(ofports)
        and len(set(segments)) == len(segments)
        and len(set(vlans)) == len(vlans)
    ):
        assert_one_entry_per_identity(full)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(OPS)
def test_incremental_equals_full_recompute_with_the_real_apps(ops: list[Any]) -> None:
    run_sequence(default_apps(), ops)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_incremental_equals_full_recompute_with_a_fake_app(ops: list[Any]) -> None:
    run_sequence([FakeL2()], ops)


def test_the_agent_runs_every_app_defined_in_wyvern_apps() -> None:
    """An app left out of ALL_APPS would compute nothing in the agent, and these
    incremental == full tests would never see it."""
    defined = set()
    for info in pkgutil.iter_modules(apps_pkg.__path__, "wyvern.apps."):
        module = importlib.import_module(info.name)
        defined |= {
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, App) and obj is not App
        }
    assert len(defined) >= 9
    assert {type(app) for app in default_apps()} == defined


def test_engine_keeps_only_owners_with_flows_and_renders_them() -> None:
    view = LocalView()
    sync = Sync(MemoryStore(), view)
    engine = Engine([FakeL2()])
    engine.full(view)
    assert engine.fingerprints() == {} and list(engine.render().lines()) == []
    net = Network("n", 5, "geneve", None, None, 1500, True, True, False)
    p = Port("p", "n", 1, "fa:16:3e:00:00:01", (), "", "", "", True, True, (), (), (), "")
    for kind, id_, rec in (
        ("network", "n", net),
        ("port", "p", p),
        ("binding", "p", Binding("p", 3)),
    ):
        for c in sync.put_record(kind, id_, rec):  # type: ignore[arg-type]
            engine.apply(view, c)
    assert list(engine.fingerprints()) == [("l2", ("network", "n"))]
    (line,) = engine.render().lines()
    assert "eth_dst=fa:16:3e:00:00:01" in line and "output:3" in line
    for c in sync.put_record("network", "n", None):
        engine.apply(view, c)
    changes = engine.render()
    assert engine.fingerprints() == {} and list(changes.lines()) == []
    assert changes.replaced == [cookie_of(("l2", ("network", "n")))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(min_value=2, max_value=12))
def test_a_burst_applied_to_the_view_first_then_to_the_engine_equals_full(
    ops: list[Any], burst: int
) -> None:
    """The agent applies a whole burst of store batches to the view, then computes: each
    change is then seen against the view after the burst, not after itself."""
    apps = default_apps()
    view = LocalView(chassis_name="c1")
    sync = Sync(MemoryStore(), view)
    engine = Engine(apps)
    engine.full(view)
    for start in range(0, len(ops), burst):
        changes: list[Change] = []
        for kind, id_, record in ops[start : start + burst]:
            changes += put(sync, kind, id_, record)
        for change in changes:
            engine.apply(view, change)
        assert engine.fingerprints() == fingerprints_full(apps, view)


INDEXES = (
    "ports_by_network", "subnets_by_network", "ports_by_sg", "rules_by_sg",
    "routers_by_network", "ports_by_ip", "ports_by_mac", "pair_ports_by_network", "fips_by_fixed",
)  # fmt: skip


def index_entries(view: LocalView) -> set[tuple[str, Any, Any]]:
    """Every (index, key, content) of the view's indexes (empty sets are no entry), and
    ("sg_addresses", (group, CIDR), None) for each address a group holds."""
    out: set[tuple[str, Any, Any]] = set()
    for name in INDEXES:
        for key, members in getattr(view, name).items():
            if members:
                out.add((name, key, frozenset(members)))
    for sg, counts in view.sg_addresses.items():
        out.update(("sg_addresses", (sg, cidr), None) for cidr in counts)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_touched_keys_name_every_index_entry_a_change_moves(ops: list[Any]) -> None:
    """The engine recomputes what read a key touched_keys names: an index entry that
    changed without being named would leave its readers stale."""
    view = LocalView(chassis_name="c1")
    sync = Sync(MemoryStore(), view)
    moved = 0
    for kind, id_, record in ops:
        before = index_entries(view)
        changes = put(sync, kind, id_, record)
        after = index_entries(view)
        named = {key for change in changes for key in touched_keys(change)}
        for name, key, _ in before ^ after:
            moved += 1
            assert (name, key) in named, (kind, id_, name, key)
    assert moved  # the ops do move index entries (the check above ran)


def test_a_change_against_another_view_recomputes_everything_from_it() -> None:
    """The reads the engine filed are of one view object: handed another, it must not
    trust them (it recomputes fully)."""
    first = LocalView()
    Sync(MemoryStore(), first)
    engine = Engine([FakeL2()])
    engine.full(first)
    second = LocalView()
    sync = Sync(MemoryStore(), second)
    net = Network("n", 5, "geneve", None, None, 1500, True, True, False)
    p = Port("p", "n", 1, "fa:16:3e:00:00:01", (), "", "", "", True, True, (), (), (), "")
    sync.put_record("network", "n", net)
    sync.put_record("port", "p", p)
    changes = sync.put_record("binding", "p", Binding("p", 3))  # type: ignore[arg-type]
    assert engine.fingerprints() == {}  # the probe: nothing yet
    engine.apply_all(second, changes)  # only the binding is named
    assert engine.fingerprints() == fingerprints_full([FakeL2()], second) != {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(min_value=0, max_value=40), st.booleans())
def test_changes_after_a_full_recompute_of_a_filled_view_settled_or_not(
    ops: list[Any], split: int, settle: bool
) -> None:
    """full() only sets its reads aside; they are filed by settle() (the agent, when
    idle) or by the next change: either way the changes after it end where a full
    recompute does."""
    apps = default_apps()
    view = LocalView(chassis_name="c1")
    sync = Sync(MemoryStore(), view)
    for kind, id_, record in ops[:split]:
        put(sync, kind, id_, record)
    engine = Engine(apps)
    engine.full(view)
    assert engine.fingerprints() == fingerprints_full(apps, view)
    if settle:
        filed = engine.settle()
        assert engine.settle() == 0  # nothing left to file
        assert (filed > 0) == any(True for app in apps for _ in app.owners(view))
    for kind, id_, record in ops[split:]:
        engine.apply_all(view, put(sync, kind, id_, record))
        assert engine.fingerprints() == fingerprints_full(apps, view), (kind, id_, record)


class GatewayWhere(App):
    """One flow per provider network naming its gateway chassis (read as the apps do,
    through view.derive), counting its computations: the cost of a gateway report."""

    name = "l2"
    owner_tables = {"network": "networks"}

    def __init__(self) -> None:
        self.computed = 0

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        net = view.networks.get(owner[1])
        where = view.derive(gateway_chassis, net) if net is not None else None
        if where is None:
            return []
        self.computed += 1
        return [
            table("l2_lookup").flow(
                priority=100,
                cookie=cookies.encode("l2", where),
                match=match(network_key=net.key) if net is not None else match(),
                actions=[Output(CHASSIS.index(where) + 1)],
            )
        ]


def test_a_gateway_report_recomputes_flows_only_when_it_changes_the_answer() -> None:
    """On a tie of priorities the reports decide; a report that changes no answer (no
    tie, or the chassis already chosen) reaches no flow (early cutoff), one that does
    moves the gateway."""
    app = GatewayWhere()
    view = LocalView(chassis_name="c1")
    sync = Sync(MemoryStore(), view)
    engine = Engine([app])
    engine.full(view)
    net = Network("n", 5, "flat", None, "physnet1", 1500, True, True, True)
    ops: list[tuple[str, str, Any]] = [("network", "n", net)]
    ops += [("chassis", c, Chassis(c, "", (), (("physnet1", "br-ex"),), 1)) for c in CHASSIS]
    ops += [("router", r, Router(r, i + 1, True, (), (), "n", None, True)) for i, r in
            enumerate(ROUTERS)]  # fmt: skip

    def apply(*batch: tuple[str, str, Any]) -> int:
        before = app.computed
        for kind, id_, record in batch:
            for change in put(sync, kind, id_, record):
                engine.apply(view, change)
        assert engine.fingerprints() == fingerprints_full([GatewayWhere()], view)
        return app.computed - before

    assert apply(*ops) >= 1
    assert "output:1" in "".join(engine.render().lines())  # c1: the lowest name
    assert apply(("gateway_host", "r0", GatewayHost("c1"))) == 0  # (c1 already)
    assert apply(("gateway_host", "r1", GatewayHost("c9"))) == 0  # (no such chassis)
    assert apply(("chassis_down", "c1", True)) == 1  # c2 takes over and reports it
    assert apply(("gateway_host", "r0", GatewayHost("c2"))) == 0
    assert apply(("chassis_down", "c1", None)) == 0  # c1 returns: c2 keeps it
    assert "output:2" in "".join(engine.render().lines())
    # a strictly higher priority takes it; without a tie the reports are not read at all
    assert apply(("chassis", "c3", Chassis("c3", "", (), (("physnet1", "br-ex"),), 2))) == 1
    assert apply(("gateway_host", "r0", GatewayHost("c1"))) == 0
    assert "output:3" in "".join(engine.render().lines())
