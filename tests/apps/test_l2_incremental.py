"""The engine's invariant for the L2 family: incremental recomputation of the owners whose reads
changed equals a full recompute, after any sequence of changes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.apps import scenario as sc
from wyvern.apps.base import App, Owner
from wyvern.controller.engine import Engine
from wyvern.ir import Flow
from wyvern.model.view import Binding, Change, Kind, LocalView, record_from_obj

NETS = ["n0", "n1", "n2"]
SUBNETS = ["s0", "s1", "s2", "s3"]
PORTS = ["p0", "p1", "p2", "p3", "p4", "p5"]
ROUTERS = ["r0", "r1"]
MACS = ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"]
CIDRS = ["10.0.0.0/24", "10.0.1.0/24", "2001:db8::/64"]

Op = tuple[Kind, str, Any]  # kind, id, stored object / Binding / None (delete)


@st.composite
def network_op(draw: st.DrawFn) -> Op:
    nid = draw(st.sampled_from(NETS))
    if draw(st.booleans()) and draw(st.booleans()):
        return ("network", nid, None)
    obj = sc.network(
        nid, key=draw(st.sampled_from([10, 20, 30])), admin_state_up=draw(st.booleans())
    )
    return ("network", nid, obj)


@st.composite
def subnet_op(draw: st.DrawFn) -> Op:
    sid = draw(st.sampled_from(SUBNETS))
    if draw(st.integers(0, 3)) == 0:
        return ("subnet", sid, None)
    obj = sc.subnet(
        sid,
        draw(st.sampled_from(NETS)),
        draw(st.sampled_from(CIDRS)),
        enable_dhcp=draw(st.booleans()),
    )
    return ("subnet", sid, obj)


@st.composite
def port_op(draw: st.DrawFn) -> Op:
    pid = draw(st.sampled_from(PORTS))
    if draw(st.integers(0, 3)) == 0:
        return ("port", pid, None)
    ips = draw(st.lists(st.sampled_from(IPS), max_size=2, unique=True))
    pairs = draw(
        st.lists(
            st.fixed_dictionaries(
                {"ip_address": st.sampled_from(["10.9.0.0/16", "10.0.0.2", "10.0.0.0/30"])},
                optional={"mac_address": st.sampled_from(MACS)},
            ),
            max_size=2,
        )
    )
    router = draw(st.sampled_from([None, *ROUTERS]))
    obj = sc.port(
        pid,
        draw(st.sampled_from(NETS)),
        key=draw(st.integers(1, 4)),
        mac=draw(st.sampled_from(MACS)),
        ips=[(draw(st.sampled_from(SUBNETS)), ip) for ip in ips],
        allowed_address_pairs=pairs,
        port_security_enabled=draw(st.booleans()),
        admin_state_up=draw(st.booleans()),
        device_owner="network:router_interface" if router else "compute:nova",
        device_id=router or "",
    )
    return ("port", pid, obj)


@st.composite
def binding_op(draw: st.DrawFn) -> Op:
    pid = draw(st.sampled_from(PORTS))
    if draw(st.booleans()):
        return ("binding", pid, None)
    return ("binding", pid, Binding(pid, draw(st.sampled_from([-1, 0, 1, 2, 3, 7, 0xFFFE]))))


@st.composite
def router_op(draw: st.DrawFn) -> Op:
    rid = draw(st.sampled_from(ROUTERS))
    if draw(st.integers(0, 3)) == 0:
        return ("router", rid, None)
    itf_ports = draw(st.lists(st.sampled_from(PORTS), max_size=3, unique=True))
    itfs = [
        {
            "port_id": p,
            "network_id": draw(st.sampled_from(NETS)),
            "fixed_ips": [{"subnet_id": "s0", "ip_address": "10.0.0.1", "cidr": "10.0.0.0/24"}],
        }
        for p in itf_ports
    ]
    gw = draw(st.sampled_from([None, *NETS]))
    obj = sc.router(
        rid,
        key=draw(st.integers(1, 3)),
        _interfaces=itfs,
        external_gateway_info={"network_id": gw} if gw else None,
        _gw_port_id=draw(st.sampled_from(PORTS)) if gw else None,
    )
    return ("router", rid, obj)


OPS = st.lists(
    st.one_of(network_op(), subnet_op(), port_op(), binding_op(), router_op()),
    min_size=1,
    max_size=25,
)


def apply(view: LocalView, op: Op) -> Change:
    kind, id_, obj = op
    if kind == "binding":
        old = view.bindings.get(id_)
        if obj is None:
            sc.unbind(view, id_)
        else:
            sc.bind(view, id_, obj.ofport)
        return Change("binding", id_, old, obj)
    return view.apply(kind, id_, None if obj is None else record_from_obj(kind, obj))


def full(view: LocalView, app: App) -> dict[Owner, list[Flow]]:
    return sc.app_flows(view, app)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_incremental_equals_full_recompute(ops: list[Op]) -> None:
    apps = sc.l2_apps()
    view = LocalView(chassis_name="chassis-1")
    engine = Engine(apps)
    engine.full(view)
    for op in ops:
        engine.apply(view, apply(view, op))
        desired = sc.engine_app_flows(engine)
        for app in apps:
            assert desired[app.name] == sc.as_entries(app.name, full(view, app)), (app.name, op)


@settings(max_examples=60, deadline=None)
@given(base=OPS, ops=OPS)
def test_apply_then_revert_restores_identical_flows(base: list[Op], ops: list[Op]) -> None:
    """From any state, changes undone in reverse order give back identical flows."""
    apps = sc.l2_apps()
    view = LocalView(chassis_name="chassis-1")
    for op in base:
        apply(view, op)
    before = {a.name: full(view, a) for a in apps}
    undo: list[Op] = []
    for op in ops:
        kind, id_, _ = op
        undo.append((kind, id_, view._table(kind).get(id_)))
        apply(view, op)
    for kind, id_, old in reversed(undo):
        if kind == "binding":
            apply(view, (kind, id_, old))
        else:
            view.apply(kind, id_, old)
    assert {a.name: full(view, a) for a in apps} == before
