"""The L3 router app (router_input, routing, arp_resolve) and the NAT pass-through, by
packet outcome through the simulator.

The L2 stages are stood in for by a tiny local stub (cookie "pipeline"): classification
maps an ofport to its network and port keys, l2_lookup sends a router interface MAC to
router_input with the router key and any other port's MAC to output, and output maps the
destination port key to its ofport (or to in_port with flag_allow_loopback, as the output
app does). So the routing stages are tested on their own; the
same scenarios through every app run where tests/apps/scenario.py exists.
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.apps import scenario as sc
from tests.southbound.conftest import in_netns, ovs, unique
from wyvern.apps.base import App, Owner
from wyvern.apps.l3 import L3App
from wyvern.apps.nat import NatApp
from wyvern.apps.punts import PUNT_ARP_REQUEST, PUNT_ICMP4_ERROR, PUNT_ICMP6_ERROR
from wyvern.apps.services import Services
from wyvern.controller.engine import Engine
from wyvern.ir import PORT_IN_PORT, Flow, Goto, Load, Output, pipeline, table
from wyvern.ir import packet as pk
from wyvern.ir.cookies import encode
from wyvern.ir.misses import miss_flows
from wyvern.ir.packet import Packet
from wyvern.ir.render import render_flow
from wyvern.ir.simulator import Simulator, Trace
from wyvern.model.view import Binding, LocalView, record_from_obj
from wyvern.southbound import vif
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsInstance

__all__ = ["ovs"]  # the real-OVS fixture, imported for pytest

PIPE = encode("pipeline", 0)
ROUTER_OWNER = "network:router_interface"

# ------------------------------------------------------------------ store-shaped objects


def net(nid: str, key: int) -> dict[str, Any]:
    return {"id": nid, "_key": key, "provider:network_type": "geneve", "mtu": 1500}


def subnet(sid: str, nid: str, cidr: str, gw: str | None = None) -> dict[str, Any]:
    version = ipaddress.ip_network(cidr).version
    return {"id": sid, "network_id": nid, "cidr": cidr, "ip_version": version, "gateway_ip": gw}


def port(
    pid: str, nid: str, key: int, mac: str, ips: Iterable[tuple[str, str]], owner: str = ""
) -> dict[str, Any]:
    return {
        "id": pid,
        "network_id": nid,
        "_key": key,
        "mac_address": mac,
        "fixed_ips": [{"subnet_id": s, "ip_address": ip} for s, ip in ips],
        "device_owner": owner,
        "security_groups": [],
    }


def itf(pid: str, nid: str, ips: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    """A router's `_interfaces` entry: ips are (subnet id, address, cidr)."""
    return {
        "port_id": pid,
        "network_id": nid,
        "fixed_ips": [{"subnet_id": s, "ip_address": a, "cidr": c} for s, a, c in ips],
    }


def router(
    rid: str,
    key: int,
    interfaces: list[dict[str, Any]],
    routes: Iterable[tuple[str, str]] = (),
    admin_state_up: bool = True,
) -> dict[str, Any]:
    return {
        "id": rid,
        "_key": key,
        "admin_state_up": admin_state_up,
        "_interfaces": interfaces,
        "routes": [{"destination": d, "nexthop": n} for d, n in routes],
    }


# ------------------------------------------------------------------ the local stub


def stub_flows(view: LocalView) -> list[Flow]:
    """Stand-ins for the L2 apps: ofport → keys, MAC → router or port, port key → ofport."""
    out: list[Flow] = []
    router_of_port = {i.port_id: r for r in view.routers.values() for i in r.interfaces}
    for p in view.ports.values():
        n = view.networks.get(p.network_id)
        if n is None:
            continue
        b = view.bindings.get(p.id)
        if b is not None:
            out.append(
                table("classification").flow(
                    priority=100,
                    cookie=PIPE,
                    match={"in_port": b.ofport},
                    actions=(
                        Load("network_key", n.key),
                        Load("src_port_key", p.key),
                        Goto("l2_lookup"),
                    ),
                )
            )
            out.append(
                table("output").flow(
                    priority=110,
                    cookie=PIPE,
                    match={
                        "network_key": n.key,
                        "dst_port_key": p.key,
                        "in_port": b.ofport,
                        "flag_allow_loopback": 1,
                    },
                    actions=(Output(PORT_IN_PORT),),
                )
            )
            out.append(
                table("output").flow(
                    priority=100,
                    cookie=PIPE,
                    match={"network_key": n.key, "dst_port_key": p.key},
                    actions=(Output(b.ofport),),
                )
            )
        r = router_of_port.get(p.id)
        if r is not None:
            actions: tuple[Any, ...] = (Load("router_key", r.key), Goto("router_input"))
        else:
            actions = (Load("dst_port_key", p.key), Goto("output"))
        out.append(
            table("l2_lookup").flow(
                priority=100,
                cookie=PIPE,
                match={"network_key": n.key, "eth_dst": p.mac},
                actions=actions,
            )
        )
    return out


def all_flows(view: LocalView, apps: Iterable[App]) -> list[Flow]:
    out: list[Flow] = []
    for app in apps:
        out.extend(app.global_flows())
        for owner in app.owners(view):
            out.extend(app.flows(view, owner))
    return out


def simulate(view: LocalView) -> Simulator:
    misses = [
        f
        for f in miss_flows()
        if pipeline.stage(f.stage).owner in ("l3", "nat", "metering")
        or f.stage in ("punt_meter", "punt")
    ]
    punts = Services().global_flows()  # (the punt stage: controller(userdata) per code)
    return Simulator([*stub_flows(view), *all_flows(view, [L3App(), NatApp()]), *misses, *punts])


# ------------------------------------------------------------------ the topology

MAC_A, MAC_B, MAC_C, MAC_D = (f"fa:16:3e:00:00:0{i}" for i in "abcd")
MAC_R1, MAC_R2 = "fa:16:3e:00:01:01", "fa:16:3e:00:01:02"
OF_A, OF_B, OF_C, OF_D = 1, 2, 3, 4


def two_subnets(routes: Iterable[tuple[str, str]] = ()) -> LocalView:
    """net1 10.0.1.0/24 (VM A 10.0.1.5) and net2 10.0.2.0/24 (VM B 10.0.2.5, VM C
    10.0.2.6), router R on both (.1). A and B share port key 2, in different networks."""
    v = LocalView(chassis_name="hv1")
    objs: list[tuple[str, dict[str, Any]]] = [
        ("network", net("n1", 101)),
        ("network", net("n2", 102)),
        ("subnet", subnet("s1", "n1", "10.0.1.0/24", "10.0.1.1")),
        ("subnet", subnet("s2", "n2", "10.0.2.0/24", "10.0.2.1")),
        ("port", port("rp1", "n1", 1, MAC_R1, [("s1", "10.0.1.1")], ROUTER_OWNER)),
        ("port", port("rp2", "n2", 1, MAC_R2, [("s2", "10.0.2.1")], ROUTER_OWNER)),
        ("port", port("a", "n1", 2, MAC_A, [("s1", "10.0.1.5")])),
        ("port", port("b", "n2", 2, MAC_B, [("s2", "10.0.2.5")])),
        ("port", port("c", "n2", 3, MAC_C, [("s2", "10.0.2.6")])),
        (
            "router",
            router(
                "r",
                7,
                [
                    itf("rp1", "n1", [("s1", "10.0.1.1", "10.0.1.0/24")]),
                    itf("rp2", "n2", [("s2", "10.0.2.1", "10.0.2.0/24")]),
                ],
                routes,
            ),
        ),
    ]
    for kind, obj in objs:
        v.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    for pid, ofport in (("a", OF_A), ("b", OF_B), ("c", OF_C)):
        v.apply("binding", pid, Binding(pid, ofport))
    return v


def delivered(trace: Trace, ofport: int) -> Packet:
    assert trace.output_ports == [ofport], trace.format()
    return trace.outputs[0].packet


# ------------------------------------------------------------------ tests


def test_routed_between_subnets() -> None:
    sim = simulate(two_subnets())
    t = sim.run(pk.tcp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1234, 80, ttl=64))
    out = delivered(t, OF_B)
    assert out["nw_ttl"] == 63
    assert out["eth_src"] == int(MAC_R2.replace(":", ""), 16)
    assert out["eth_dst"] == int(MAC_B.replace(":", ""), 16)
    assert out["ipv4_src"] == int(ipaddress.ip_address("10.0.1.5"))
    assert out["ipv4_dst"] == int(ipaddress.ip_address("10.0.2.5"))
    assert "routing" in t.stages() and "arp_resolve" in t.stages()
    # The packet enters net2 from the router port, not from A's key (2, like B's).
    assert out["src_port_key"] == 1 and out["network_key"] == 102
    # And back.
    back = sim.run(pk.tcp(OF_B, MAC_B, MAC_R2, "10.0.2.5", "10.0.1.5", 80, 1234, "SA"))
    assert delivered(back, OF_A)["eth_dst"] == int(MAC_A.replace(":", ""), 16)


def test_ping_router_interface_is_answered() -> None:
    sim = simulate(two_subnets())
    for target in ("10.0.1.1", "10.0.2.1"):  # the near and the far interface
        t = sim.run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "10.0.1.5", target, ttl=1))
        out = delivered(t, OF_A)
        assert out["icmp_type"] == 0
        assert out["ipv4_src"] == int(ipaddress.ip_address(target))
        assert out["ipv4_dst"] == int(ipaddress.ip_address("10.0.1.5"))
        assert out["eth_src"] == int(MAC_R1.replace(":", ""), 16)
        assert out["eth_dst"] == int(MAC_A.replace(":", ""), 16)


def test_other_traffic_to_the_router_is_dropped() -> None:
    sim = simulate(two_subnets())
    echo = sim.run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.1"))
    assert delivered(echo, OF_A)["icmp_type"] == 0  # the router answers pings
    t = sim.run(pk.tcp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.1", 1, 22))
    assert t.dropped, t.format()


def test_ttl_expiry_is_punted_not_delivered() -> None:
    sim = simulate(two_subnets())
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53, ttl=1))
    assert t.outputs == []
    assert [p.userdata for p in t.punts] == [bytes((PUNT_ICMP4_ERROR, 11, 0))]
    t2 = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53, ttl=2))
    assert delivered(t2, OF_B)["nw_ttl"] == 1


def test_no_route_is_punted_as_unreachable() -> None:
    sim = simulate(two_subnets())
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "8.8.8.8", 1, 53))
    assert t.outputs == []
    assert [p.userdata for p in t.punts] == [bytes((PUNT_ICMP4_ERROR, 3, 0))]


def test_unknown_next_hop_is_punted_for_arp_not_forwarded() -> None:
    """A next hop on an internal network that no port holds: punted for the agent to ARP
    for (PUNT_ARP_REQUEST), the packet itself not forwarded (as OVN drops it)."""
    sim = simulate(two_subnets())
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.99", 1, 53))
    assert t.outputs == [] and "arp_resolve" in t.stages(), t.format()
    assert [p.userdata for p in t.punts] == [bytes([PUNT_ARP_REQUEST])]


def test_extra_route_goes_to_the_next_hop_mac() -> None:
    view = two_subnets(routes=[("192.168.50.0/24", "10.0.2.6"), ("192.168.50.128/25", "10.0.2.5")])
    sim = simulate(view)
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "192.168.50.7", 1, 53))
    out = delivered(t, OF_C)
    assert out["eth_dst"] == int(MAC_C.replace(":", ""), 16)
    assert out["ipv4_dst"] == int(ipaddress.ip_address("192.168.50.7"))
    assert out["nw_ttl"] == 63
    # Longest prefix wins.
    t2 = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "192.168.50.200", 1, 53))
    assert delivered(t2, OF_B)["eth_dst"] == int(MAC_B.replace(":", ""), 16)


def test_default_route_and_unreachable_next_hop() -> None:
    # A default route via C; a route whose next hop is on no connected subnet is ignored.
    view = two_subnets(routes=[("0.0.0.0/0", "10.0.2.6"), ("172.16.0.0/16", "10.9.9.9")])
    sim = simulate(view)
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "172.16.1.1", 1, 53))
    assert delivered(t, OF_C)["eth_dst"] == int(MAC_C.replace(":", ""), 16)
    # Connected subnets still win over the default route.
    t2 = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53))
    assert delivered(t2, OF_B)


def test_removing_the_interface_stops_routing() -> None:
    view = two_subnets()
    r = view.routers["r"]
    view.apply("router", "r", record_from_obj("router", router("r", 7, [
        itf("rp1", "n1", [("s1", "10.0.1.1", "10.0.1.0/24")]),
    ])))  # fmt: skip
    assert len(view.routers["r"].interfaces) == 1 and r.key == 7
    sim = simulate(view)
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53))
    assert t.outputs == [], t.format()
    # The interface IP on net2 is gone from the router too.
    ping = sim.run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.1"))
    assert ping.outputs == [], ping.format()
    # A router that is administratively down routes nothing.
    view2 = two_subnets()
    obj = router("r", 7, [itf("rp1", "n1", [("s1", "10.0.1.1", "10.0.1.0/24")])])
    view2.apply("router", "r", record_from_obj("router", {**obj, "admin_state_up": False}))
    t3 = simulate(view2).run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.1.1"))
    assert t3.dropped


def test_overlapping_subnets_on_two_routers_stay_isolated() -> None:
    """Tenant X: nx1/nx2 via router rx; tenant Y: the same CIDRs on ny1/ny2 via ry."""
    v = LocalView(chassis_name="hv1")
    objs: list[tuple[str, dict[str, Any]]] = []
    macs = {}
    for t, base, rkey in (("x", 200, 8), ("y", 300, 9)):
        objs += [
            ("network", net(f"n{t}1", base + 1)),
            ("network", net(f"n{t}2", base + 2)),
            ("subnet", subnet(f"s{t}1", f"n{t}1", "10.0.1.0/24")),
            ("subnet", subnet(f"s{t}2", f"n{t}2", "10.0.2.0/24")),
        ]
        m = {k: f"fa:16:3e:{base // 100:02x}:00:{i:02x}" for i, k in enumerate("rsab", 1)}
        macs[t] = m
        objs += [
            ("port", port(f"r{t}1", f"n{t}1", 1, m["r"], [(f"s{t}1", "10.0.1.1")], ROUTER_OWNER)),
            ("port", port(f"r{t}2", f"n{t}2", 1, m["s"], [(f"s{t}2", "10.0.2.1")], ROUTER_OWNER)),
            ("port", port(f"{t}a", f"n{t}1", 2, m["a"], [(f"s{t}1", "10.0.1.5")])),
            ("port", port(f"{t}b", f"n{t}2", 2, m["b"], [(f"s{t}2", "10.0.2.5")])),
            (
                "router",
                router(
                    f"r{t}",
                    rkey,
                    [
                        itf(f"r{t}1", f"n{t}1", [(f"s{t}1", "10.0.1.1", "10.0.1.0/24")]),
                        itf(f"r{t}2", f"n{t}2", [(f"s{t}2", "10.0.2.1", "10.0.2.0/24")]),
                    ],
                ),
            ),
        ]
    for kind, obj in objs:
        v.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    ofports = {"xa": 11, "xb": 12, "ya": 21, "yb": 22}
    for pid, of in ofports.items():
        v.apply("binding", pid, Binding(pid, of))
    sim = simulate(v)
    for t in ("x", "y"):
        m = macs[t]
        trace = sim.run(
            pk.udp(ofports[f"{t}a"], m["a"], m["r"], "10.0.1.5", "10.0.2.5", 1, 53, ttl=9)
        )
        out = delivered(trace, ofports[f"{t}b"])
        assert out["eth_dst"] == int(m["b"].replace(":", ""), 16)
        assert out["eth_src"] == int(m["s"].replace(":", ""), 16)


def test_ipv6_routed_and_ping() -> None:
    v = LocalView(chassis_name="hv1")
    objs: list[tuple[str, dict[str, Any]]] = [
        ("network", net("n1", 101)),
        ("network", net("n2", 102)),
        ("subnet", subnet("s1", "n1", "2001:db8:1::/64")),
        ("subnet", subnet("s2", "n2", "2001:db8:2::/64")),
        ("port", port("rp1", "n1", 1, MAC_R1, [("s1", "2001:db8:1::1")], ROUTER_OWNER)),
        ("port", port("rp2", "n2", 1, MAC_R2, [("s2", "2001:db8:2::1")], ROUTER_OWNER)),
        ("port", port("a", "n1", 2, MAC_A, [("s1", "2001:db8:1::5")])),
        ("port", port("b", "n2", 2, MAC_B, [("s2", "2001:db8:2::5")])),
        (
            "router",
            router(
                "r",
                7,
                [
                    itf("rp1", "n1", [("s1", "2001:db8:1::1", "2001:db8:1::/64")]),
                    itf("rp2", "n2", [("s2", "2001:db8:2::1", "2001:db8:2::/64")]),
                ],
            ),
        ),
    ]
    for kind, obj in objs:
        v.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    v.apply("binding", "a", Binding("a", OF_A))
    v.apply("binding", "b", Binding("b", OF_B))
    sim = simulate(v)
    t = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "2001:db8:1::5", "2001:db8:2::5", 1, 53, ttl=64))
    out = delivered(t, OF_B)
    assert out["nw_ttl"] == 63
    assert out["eth_src"] == int(MAC_R2.replace(":", ""), 16)
    assert out["eth_dst"] == int(MAC_B.replace(":", ""), 16)
    ping = sim.run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "2001:db8:1::5", "2001:db8:2::1"))
    reply = delivered(ping, OF_A)
    assert reply["icmpv6_type"] == 129
    assert reply["ipv6_src"] == int(ipaddress.ip_address("2001:db8:2::1"))
    hop1 = sim.run(pk.udp(OF_A, MAC_A, MAC_R1, "2001:db8:1::5", "2001:db8:2::5", 1, 53, ttl=1))
    assert hop1.outputs == []  # punted for a time exceeded (tests/apps/test_l3_icmp6.py)
    assert [p.userdata for p in hop1.punts] == [bytes((PUNT_ICMP6_ERROR, 3, 0))]


@pytest.mark.system
def test_ovs_ofctl_accepts_the_flows(tmp_path: Path) -> None:
    view = two_subnets(routes=[("0.0.0.0/0", "10.0.2.6"), ("192.168.50.0/24", "10.0.2.5")])
    v6 = {"network": net("n6", 106), "subnet": subnet("s6", "n6", "2001:db8:6::/64")}
    for kind, obj in v6.items():
        view.apply(kind, obj["id"], record_from_obj(kind, obj))  # type: ignore[arg-type]
    rp6 = port("rp6", "n6", 1, "fa:16:3e:00:01:06", [("s6", "2001:db8:6::1")], ROUTER_OWNER)
    view.apply("port", "rp6", record_from_obj("port", rp6))
    view.apply(
        "port", "d", record_from_obj("port", port("d", "n6", 2, MAC_D, [("s6", "2001:db8:6::5")]))
    )
    r = router("r", 7, [
        itf("rp1", "n1", [("s1", "10.0.1.1", "10.0.1.0/24")]),
        itf("rp2", "n2", [("s2", "10.0.2.1", "10.0.2.0/24")]),
        itf("rp6", "n6", [("s6", "2001:db8:6::1", "2001:db8:6::/64")]),
    ], routes=[("0.0.0.0/0", "10.0.2.6")])  # fmt: skip
    view.apply("router", "r", record_from_obj("router", r))
    flows = all_flows(view, [L3App(), NatApp()])
    lines = [render_flow(f) for f in flows]
    path = tmp_path / "flows.txt"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow14", "parse-flows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "decode error" not in text and "|WARN|" not in text, text
    assert text.count("OFPT_FLOW_MOD") == len(lines), text


# ------------------------------------------------------------------ incremental == full

NETS = ["n1", "n2", "n3", "n4"]
PORTS = ["p1", "p2", "p3", "p4", "p5", "rp1", "rp2", "rp3"]
ROUTERS = ["r1", "r2"]
CIDRS = {"n1": "10.0.1.0/24", "n2": "10.0.2.0/24", "n3": "10.0.1.0/24", "n4": "2001:db8::/64"}


def host(nid: str, n: int) -> str:
    return str(ipaddress.ip_network(CIDRS[nid])[n])


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, str, dict[str, Any] | None]:
    kind = draw(st.sampled_from(["network", "port", "router", "subnet"]))
    delete = draw(st.integers(0, 5)) == 0
    if kind == "network":
        nid = draw(st.sampled_from(NETS))
        # Keys are unique and immutable in the store: draw none that the API could not make.
        return kind, nid, None if delete else net(nid, 100 + NETS.index(nid))
    if kind == "subnet":
        nid = draw(st.sampled_from(NETS))
        return kind, "s" + nid, None if delete else subnet("s" + nid, nid, CIDRS[nid])
    if kind == "port":
        pid = draw(st.sampled_from(PORTS))
        nid = draw(st.sampled_from(NETS))
        n = draw(st.integers(1, 6))
        mac = f"fa:16:3e:00:{PORTS.index(pid):02x}:{draw(st.integers(0, 3)):02x}"
        obj = port(pid, nid, PORTS.index(pid) + 1, mac, [("s" + nid, host(nid, n))])
        if pid.startswith("rp"):
            obj["device_owner"] = ROUTER_OWNER
        return kind, pid, None if delete else obj
    rid = draw(st.sampled_from(ROUTERS))
    itfs = []
    for pid in draw(st.lists(st.sampled_from(PORTS), max_size=3, unique=True)):
        nid = draw(st.sampled_from(NETS))
        ip = host(nid, draw(st.integers(1, 6)))
        itfs.append(itf(pid, nid, [("s" + nid, ip, CIDRS[nid])]))
    routes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["192.168.50.0/24", "0.0.0.0/0", "10.0.2.0/25", "::/0"]),
                st.sampled_from(["10.0.1.3", "10.0.2.4", "10.9.9.9", "2001:db8::3"]),
            ),
            max_size=3,
        )
    )
    obj = router(rid, 7 + ROUTERS.index(rid), itfs, routes, draw(st.booleans()))
    return kind, rid, None if delete else obj


def full(view: LocalView, app: App) -> dict[Owner, frozenset[Flow]]:
    out = {o: frozenset(app.flows(view, o)) for o in app.owners(view)}
    return {o: f for o, f in out.items() if f}


@settings(max_examples=150, deadline=None)
@given(st.lists(changes(), min_size=1, max_size=25))
def test_incremental_equals_full_recompute(
    steps: list[tuple[str, str, dict[str, Any] | None]],
) -> None:
    app = L3App()
    view = LocalView(chassis_name="hv1")
    engine = Engine([app])
    engine.full(view)
    state: dict[Owner, frozenset[Flow]] = {}
    for kind, oid, obj in steps:
        rec = None if obj is None else record_from_obj(kind, obj)
        engine.apply(view, view.apply(kind, oid, rec))  # type: ignore[arg-type]
        assert sc.engine_app_flows(engine)[app.name] == sc.as_entries(app.name, full(view, app))
        state = full(view, app)
    # Whatever the state, the flows form a valid table set (no two flows share a key).
    Simulator([f for fs in state.values() for f in fs])


# ------------------------------------------------------------------ end to end (all apps)


def _e2e_apps() -> list[App]:
    """Every app the agent runs (wyvern.apps.ALL_APPS, L3 and NAT included)."""
    return sc.default_apps()


E2E_MAC = {"a": MAC_A, "b": MAC_B, "c": MAC_C, "r1": MAC_R1, "r2": MAC_R2}


def e2e_two_subnets(**router_extra: Any) -> sc.Scenario:
    view = sc.build_view(
        networks=[sc.network("n1", 101), sc.network("n2", 102)],
        subnets=[sc.subnet("s1", "n1", "10.0.1.0/24"), sc.subnet("s2", "n2", "10.0.2.0/24")],
        ports=[
            sc.router_port("rp1", "n1", 1, MAC_R1, "10.0.1.1", "r"),
            sc.router_port("rp2", "n2", 1, MAC_R2, "10.0.2.1", "r"),
            sc.port("a", "n1", 2, MAC_A, ["10.0.1.5"]),
            sc.port("b", "n2", 2, MAC_B, ["10.0.2.5"]),
            # C routes 192.168.50.0/24 (a network behind it): its port allows that.
            sc.port(
                "c",
                "n2",
                3,
                MAC_C,
                ["10.0.2.6"],
                allowed_address_pairs=[{"ip_address": "192.168.50.0/24"}],
            ),
        ],
        routers=[sc.router("r", 7, **router_extra)],
        local={"a": OF_A, "b": OF_B, "c": OF_C},
    )
    return sc.Scenario(view, apps=_e2e_apps())


def mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def test_e2e_routed_between_subnets() -> None:
    s = e2e_two_subnets()
    t = s.run(pk.tcp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1234, 80, ttl=64))
    out = delivered(t, OF_B)
    assert (out["nw_ttl"], out["eth_src"], out["eth_dst"]) == (63, mac(MAC_R2), mac(MAC_B))
    back = s.run(pk.tcp(OF_B, MAC_B, MAC_R2, "10.0.2.5", "10.0.1.5", 80, 1234, "SA"))
    assert delivered(back, OF_A)["eth_dst"] == mac(MAC_A)


def test_e2e_ping_router_and_ttl_expiry() -> None:
    s = e2e_two_subnets()
    t = s.run(pk.icmp_echo(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.1"))
    reply = delivered(t, OF_A)
    assert reply["icmp_type"] == 0 and reply["ipv4_src"] == int(ipaddress.ip_address("10.0.2.1"))
    assert reply["eth_dst"] == mac(MAC_A)
    expired = s.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53, ttl=1))
    assert expired.outputs == []
    assert [p.userdata[:1] for p in expired.punts] == [bytes((PUNT_ICMP4_ERROR,))]


def test_e2e_extra_route_and_interface_removal() -> None:
    s = e2e_two_subnets(routes=[{"destination": "192.168.50.0/24", "nexthop": "10.0.2.6"}])
    t = s.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "192.168.50.9", 1, 53))
    assert delivered(t, OF_C)["eth_dst"] == mac(MAC_C)
    # Remove the interface on n2 (the API deletes its port and rewrites _interfaces).
    r = s.view.routers["r"]
    obj = sc.router("r", 7, _interfaces=[itf("rp1", "n1", [("s1", "10.0.1.1", "10.0.1.0/24")])])
    s.view.apply("port", "rp2", None)
    s.view.apply("router", "r", record_from_obj("router", obj))
    assert r.key == s.view.routers["r"].key
    s.refresh()
    t2 = s.run(pk.udp(OF_A, MAC_A, MAC_R1, "10.0.1.5", "10.0.2.5", 1, 53))
    assert t2.outputs == [], t2.format()


# ------------------------------------------------------------------ on a real Open vSwitch


@pytest.mark.system
def test_routing_on_real_ovs(ovs: OvsInstance) -> None:
    """Two VMs in two subnets joined by the router: ping across it, ping the router's far
    interface, and a TTL-1 packet goes nowhere (punted; no controller here)."""
    plugged: list[vif.Vif] = []
    try:
        a = vif.plug(
            ovs, str(uuid.uuid4()), MAC_A, unique("wvt-l3a-"), ip_cidr="10.0.1.5/24",
            gateway="10.0.1.1",
        )  # fmt: skip
        plugged.append(a)
        b = vif.plug(
            ovs, str(uuid.uuid4()), MAC_B, unique("wvt-l3b-"), ip_cidr="10.0.2.5/24",
            gateway="10.0.2.1",
        )  # fmt: skip
        plugged.append(b)
        view = sc.build_view(
            networks=[sc.network("n1", 101), sc.network("n2", 102)],
            subnets=[
                sc.subnet("s1", "n1", "10.0.1.0/24", enable_dhcp=False),
                sc.subnet("s2", "n2", "10.0.2.0/24", enable_dhcp=False),
            ],
            ports=[
                sc.router_port("rp1", "n1", 1, MAC_R1, "10.0.1.1", "r"),
                sc.router_port("rp2", "n2", 1, MAC_R2, "10.0.2.1", "r"),
                sc.port(a.port_id, "n1", 2, MAC_A, ["10.0.1.5"]),
                sc.port(b.port_id, "n2", 2, MAC_B, ["10.0.2.5"]),
            ],
            routers=[sc.router("r", 7)],
            local={a.port_id: a.ofport, b.port_id: b.ofport},
        )
        flows = sc.with_meters(ovs, sc.all_flows(view, _e2e_apps()))
        stats = FlowInstaller(ovs).sync(render_flow(f) for f in flows)
        assert stats.added == len(flows)

        def ping(v: vif.Vif, ip: str, *args: str, count: int = 3) -> bool:
            """Any reply of `count` tries (the first may wait for ARP)."""
            cmd = ("ping", "-c", str(count), "-i", "0.2", "-W", "1", *args, ip)
            return in_netns(v.netns, *cmd, timeout=10).returncode == 0

        assert ping(a, "10.0.2.5")
        assert ping(b, "10.0.1.5")
        assert ping(a, "10.0.2.1")  # answered by router_input
        assert ping(a, "10.0.2.5", "-t", "2", count=1)  # one hop: TTL 2 is enough
        assert not ping(a, "10.0.2.5", "-t", "1", count=1)  # TTL expires at the router
    finally:
        for v in plugged:
            vif.unplug(ovs, v.port_id, delete_netns=True)
