"""`wyvern trace`: packets explained in terms of API objects, through the simulator and
through `ofproto/trace` on a real bridge.

The topology is made through the real API (TestClient over a MemoryStore, or SQLite for
the CLI), so the trace reads exactly what the API stores:

    net1 10.0.0.0/24: vm-a, vm-b ─┐
                                  router r1
    net2 10.1.0.0/24: vm-c ───────┘
    every VM port in security group "web": ingress tcp 22 and icmp from 0.0.0.0/0
    (plus the default egress rules the API adds to a new group).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.api.conftest import create, make_client
from tests.apps.scenario import with_meters
from tests.southbound.conftest import ovs, unique
from wyvern.apps.punts import PUNT_DHCP4, PUNT_DHCP6
from wyvern.cli.main import app as cli_app
from wyvern.controller.engine import Engine, default_apps
from wyvern.ir.pipeline import table_of
from wyvern.ir.simulator import Trace
from wyvern.nb.memory import MemoryStore
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Store
from wyvern.southbound import vif
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ovs import OvsInstance, netns_exists, run_cmd
from wyvern.tools import trace as tr

__all__ = ["ovs"]  # the real-OVS fixture, imported for pytest


@dataclass
class World:
    store: Store
    ids: dict[str, str]  # name -> id (networks, ports, router, group)
    ports: dict[str, dict[str, Any]]  # port name -> API body

    def catalog(self) -> tr.Catalog:
        return tr.Catalog.from_store(self.store)

    def run(self, **spec: Any) -> tuple[tr.Tracer, tr.Built, Trace, str]:
        tracer, built = tr.Tracer.for_spec(self.catalog(), tr.PacketSpec(**spec))
        trace = tracer.simulate(built)
        return tracer, built, trace, tracer.explain(trace)


def populate(c: TestClient) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    ids: dict[str, str] = {}
    net1 = create(c, "networks", name="net1")
    net2 = create(c, "networks", name="net2")
    sub1 = create(c, "subnets", network_id=net1["id"], cidr="10.0.0.0/24", ip_version=4)
    sub2 = create(c, "subnets", network_id=net2["id"], cidr="10.1.0.0/24", ip_version=4)
    sg = create(c, "security-groups", name="web")
    for proto, port in (("tcp", 22), ("icmp", None)):
        create(
            c,
            "security-group-rules",
            security_group_id=sg["id"],
            direction="ingress",
            ethertype="IPv4",
            protocol=proto,
            port_range_min=port,
            port_range_max=port,
            remote_ip_prefix="0.0.0.0/0",
        )
    ports: dict[str, dict[str, Any]] = {}
    for name, net, ip in (("vm-a", net1, "10.0.0.5"), ("vm-b", net1, "10.0.0.6")):
        ports[name] = create(
            c,
            "ports",
            network_id=net["id"],
            name=name,
            security_groups=[sg["id"]],
            fixed_ips=[{"subnet_id": sub1["id"], "ip_address": ip}],
        )
    ports["vm-c"] = create(
        c,
        "ports",
        network_id=net2["id"],
        name="vm-c",
        security_groups=[sg["id"]],
        fixed_ips=[{"subnet_id": sub2["id"], "ip_address": "10.1.0.7"}],
    )
    router = create(c, "routers", name="r1")
    for sub in (sub1, sub2):
        resp = c.put(
            f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
        )
        assert resp.status_code == 200, resp.text
    ids.update(net1=net1["id"], net2=net2["id"], r1=router["id"], web=sg["id"])
    ids.update({name: p["id"] for name, p in ports.items()})
    return ids, ports


@pytest.fixture
def world() -> Iterator[World]:
    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        yield World(store, ids, ports)


# ------------------------------------------------------------------ the store -> view


def test_view_holds_every_api_object_and_only_the_named_bindings(world: World) -> None:
    view = tr.build_view(world.store, {world.ids["vm-a"]: 7})
    assert set(view.networks) == {world.ids["net1"], world.ids["net2"]}
    assert world.ids["r1"] in view.routers
    assert len(view.routers[world.ids["r1"]].interfaces) == 2
    assert {world.ids[n] for n in ("vm-a", "vm-b", "vm-c")} <= set(view.ports)
    assert view.bindings[world.ids["vm-a"]].ofport == 7
    assert list(view.bindings) == [world.ids["vm-a"]]


def test_cookies_name_owners_and_rules(world: World) -> None:
    view = tr.build_view(world.store, {world.ids["vm-a"]: 1, world.ids["vm-b"]: 2})
    flows, index = tr.desired_flows(view)
    ex = tr.Explainer(view, tr.Catalog.from_store(world.store), index)
    origins = {str(ex.origin(f.cookie)) for f in flows}
    assert f"classifier: port vm-a ({world.ids['vm-a']})" in origins
    assert f"l2: network net1 ({world.ids['net1']})" in origins
    assert f"l3: router r1 ({world.ids['r1']})" in origins
    assert any("rule ingress tcp 22 from 0.0.0.0/0" in o for o in origins)
    assert not [o for o in origins if "not in the store" in o or "unknown" in o]


# ------------------------------------------------------------------ simulated traces


def test_same_network_icmp_is_delivered_and_named(world: World) -> None:
    _, built, trace, text = world.run(from_port="vm-a", to_port="vm-b")
    assert trace.output_ports == [2]
    assert built.packet["eth_dst"] == int(world.ports["vm-b"]["mac_address"].replace(":", ""), 16)
    for words in (
        f"from: port vm-a ({world.ids['vm-a']}) (ofport 1)",
        f"delivered to port vm-b ({world.ids['vm-b']}) (ofport 2)",
        f"l2: port vm-b ({world.ids['vm-b']})",
        "rule ingress icmp from 0.0.0.0/0",
    ):
        assert words in text, text
    for stage in ("classification", "port_security", "acl", "l2_lookup", "acl_egress", "output"):
        assert f"({stage}) priority" in text
    classification = table_of("classification")
    assert f"table {classification} (classification) priority 100 — classifier: port vm-a" in text


def test_tcp_not_allowed_is_dropped_at_the_acl_naming_the_group(world: World) -> None:
    _, _, trace, text = world.run(from_port="vm-a", to_port="vm-b", proto="tcp", dport=23)
    assert trace.dropped
    assert tr.dropped_stage(trace) == "acl_egress"
    assert (
        f"dropped at stage acl_egress (table {table_of('acl_egress')}): "
        "no ingress rule of security group "
        f"web ({world.ids['web']}) of port vm-b ({world.ids['vm-b']}) allows it"
    ) in text, text
    # and port 22 is allowed, by that rule
    _, _, ok, text22 = world.run(from_port="vm-a", to_port="vm-b", proto="tcp", dport=22)
    assert ok.output_ports == [2]
    assert "security group web rule ingress tcp 22 from 0.0.0.0/0" in text22


def test_routed_packet_names_the_router(world: World) -> None:
    tracer, built, trace, text = world.run(from_port="vm-a", to_port="vm-c", proto="tcp")
    assert trace.output_ports == [2]
    gw_macs = {p.mac for p in tracer.view.ports.values() if p.is_router_port}
    assert f"{built.packet['eth_dst']:012x}" in {m.replace(":", "") for m in gw_macs}
    assert f"l3: router r1 ({world.ids['r1']})" in text
    assert "(routing) priority" in text and "(arp_resolve) priority" in text
    assert f"l2: port vm-c ({world.ids['vm-c']})" in text
    assert f"delivered to port vm-c ({world.ids['vm-c']}) (ofport 2)" in text
    # the same by address
    _, _, by_ip, _ = world.run(from_port="vm-a", dst_ip="10.1.0.7", proto="tcp")
    assert by_ip.output_ports == [2]


def test_spoofed_source_is_dropped_at_port_security_naming_the_port(world: World) -> None:
    _, _, own, _ = world.run(from_port="vm-a", to_port="vm-b")
    assert own.output_ports == [2]  # from the port's own addresses: delivered
    for spoof in ({"src_ip": "10.0.0.99"}, {"src_mac": "fa:16:3e:00:00:99"}):
        _, _, trace, text = world.run(from_port="vm-a", to_port="vm-b", **spoof)
        assert tr.dropped_stage(trace) == "port_security"
        stage = f"port_security (table {table_of('port_security')})"
        assert f"dropped at stage {stage}: the source MAC/IP" in text
        assert f"is not port vm-a ({world.ids['vm-a']})'s" in text, text
        assert "10.0.0.5" in text  # what the port does own


def test_dhcp_discover_is_punted_to_dhcp4(world: World) -> None:
    _, built, trace, text = world.run(from_port="vm-a", proto="dhcp")
    assert built.packet["udp_dst"] == 67 and built.packet["ipv4_src"] == 0
    assert [p.userdata[0] for p in trace.punts] == [PUNT_DHCP4]
    assert "punted to dhcp4" in text
    assert f"services: network net1 ({world.ids['net1']})" in text


def test_arp_for_the_gateway_is_answered_back(world: World) -> None:
    _, _, trace, text = world.run(from_port=world.ids["vm-a"], dst_ip="10.0.0.1", proto="arp")
    assert trace.output_ports == [1]
    assert "sent back to port vm-a" in text


def test_broadcast_floods_to_the_other_ports_of_the_network(world: World) -> None:
    _, built, trace, text = world.run(from_port="vm-a", dst_ip="10.0.0.255", proto="icmp")
    assert built.packet["eth_dst"] == 0xFFFFFFFFFFFF
    assert trace.output_ports == [2]  # vm-b; vm-c is on another network
    assert f"delivered to port vm-b ({world.ids['vm-b']}) (ofport 2)" in text
    assert "(ofport 3)" not in text


def test_bad_descriptions_are_refused(world: World) -> None:
    cat = world.catalog()
    for spec, words in (
        (tr.PacketSpec("nope", to_port="vm-b"), "no port 'nope'"),
        (tr.PacketSpec("vm-a"), "give a destination"),
        (tr.PacketSpec("vm-a", dst_ip="10.0.0.6", proto="sctp"), "protocol"),
        (tr.PacketSpec("vm-a", dst_ip="not-an-ip"), "not an IP address"),
        (tr.PacketSpec("vm-a", to_port="vm-b", src_mac="zz"), "cannot build"),
        (tr.PacketSpec("vm-a", to_port="vm-b", src_ip="10.0.0"), "cannot build"),
        (tr.PacketSpec("vm-a", to_port="vm-b", proto="arp", src_ip="fd00::1"), "cannot build"),
    ):
        with pytest.raises(tr.TraceError, match=words):
            tr.Tracer.for_spec(cat, spec)


def north_south(world: World, c: TestClient) -> dict[str, Any]:
    """Gives r1 a gateway on an external flat network (physnet1) hosted by chassis "gw",
    whose upstream router's MAC an agent learned; vm-a is bound on "gw", vm-b on
    "compute" (no physnet: its traffic out is redirected to "gw"), and a floating IP is
    associated to vm-b."""
    import orjson

    from wyvern.model.keys import chassis_key, mac_binding_id, mac_binding_key, status_key
    from wyvern.nb.store import Put

    ext = create(
        c,
        "networks",
        name="public",
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    create(c, "subnets", network_id=ext["id"], cidr="203.0.113.0/24", ip_version=4,
           gateway_ip="203.0.113.1")  # fmt: skip
    r = c.put(
        f"/v2.0/routers/{world.ids['r1']}",
        json={"router": {"external_gateway_info": {"network_id": ext["id"]}}},
    )
    assert r.status_code == 200, r.text
    fip = create(c, "floatingips", floating_network_id=ext["id"], port_id=world.ids["vm-b"])
    puts = []
    for name, ip, mappings, prio in (
        ("gw", "192.0.2.1", {"physnet1": "br-ex"}, 1),
        ("compute", "192.0.2.2", {}, 0),
    ):
        rec = {"name": name, "tunnel_ip": ip, "encaps": ["geneve"], "bridge_mappings": mappings,
               "gateway_priority": prio}  # fmt: skip
        puts.append(Put(chassis_key(name), orjson.dumps(rec)))
    for vm, where in (("vm-a", "gw"), ("vm-b", "compute")):
        status = {"chassis": where, "status": "ACTIVE"}
        puts.append(Put(status_key(world.ids["net1"], world.ids[vm]), orjson.dumps(status)))
    upstream = {"id": mac_binding_id(ext["id"], "203.0.113.1"), "network_id": ext["id"],
                "ip": "203.0.113.1", "mac": "02:00:00:00:00:01"}  # fmt: skip
    puts.append(Put(mac_binding_key(ext["id"], "203.0.113.1"), orjson.dumps(upstream)))
    world.store.txn([], puts)
    return fip


def test_north_south_names_the_gateway_and_the_floating_ip() -> None:
    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        fip = north_south(world, c)
        gw_ip = c.get(f"/v2.0/routers/{ids['r1']}").json()["router"]["external_gateway_info"][
            "external_fixed_ips"
        ][0]["ip_address"]
    # vm-a, on the gateway chassis: SNAT to the gateway address, out to the physnet
    _, _, trace, text = world.run(from_port="vm-a", dst_ip="198.51.100.7")
    assert trace.outputs and trace.outputs[0].packet["ipv4_src"] == int(
        ipaddress.IPv4Address(gw_ip)
    ), text
    assert (
        f"(snat) priority 100 — nat: router r1 ({ids['r1']}) gateway {gw_ip} on network public"
        in text
    )
    assert "sent out to physical network physnet1" in text
    assert "l3: MAC binding 203.0.113.1 is 02:00:00:00:00:01 on network public" in text
    assert ", active on chassis gw" in text  # which chassis hosts the gateway
    # vm-b, on a chassis without the physnet: redirected to the gateway chassis by Geneve
    _, _, trace, text = world.run(from_port="vm-b", dst_ip="198.51.100.7")
    assert "sent by geneve to chassis gw (192.0.2.1)" in text, text
    assert "(snat)" not in text  # the NAT happens on gw, not here
    # the floating IP's own NAT, named, where it happens (centralized on gw: traced from
    # gw's point of view by binding vm-b there)
    status = tr.Catalog.from_store(store)
    status.port_chassis[ids["vm-b"]] = "gw"
    tracer, built = tr.Tracer.for_spec(status, tr.PacketSpec("vm-b", dst_ip="198.51.100.7"))
    out = tracer.simulate(built)
    text = tracer.explain(out)
    assert out.outputs[0].packet["ipv4_src"] == int(
        ipaddress.IPv4Address(fip["floating_ip_address"])
    ), text
    assert (
        f"nat: floating IP {fip['floating_ip_address']} ({fip['id']}) for 10.0.0.6 of port vm-b"
    ) in text


def test_a_tie_of_gateway_priorities_is_traced_as_the_agents_decide_it() -> None:
    """Another gateway chassis of gw's priority, with a lower name: it hosts the gateway
    while nothing is reported; once gw reports hosting it, gw keeps it (no preemption on
    a tie), and the trace shows the agents' answer."""
    import orjson

    from wyvern.model.keys import chassis_key, gateway_status_key
    from wyvern.nb.store import Put

    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        north_south(world, c)
    rec = {"name": "a-gw", "tunnel_ip": "192.0.2.3", "encaps": ["geneve"],
           "bridge_mappings": {"physnet1": "br-ex"}, "gateway_priority": 1}  # fmt: skip
    store.txn([], [Put(chassis_key("a-gw"), orjson.dumps(rec))])
    _, _, _, text = world.run(from_port="vm-b", dst_ip="198.51.100.7")
    assert "sent by geneve to chassis a-gw (192.0.2.3)" in text, text
    report = {"chassis": "gw", "status": "ACTIVE"}
    store.txn([], [Put(gateway_status_key(ids["r1"]), orjson.dumps(report))])
    _, _, _, text = world.run(from_port="vm-b", dst_ip="198.51.100.7")
    assert "sent by geneve to chassis gw (192.0.2.1)" in text, text


def test_from_outside_to_a_floating_ip_and_the_gateway() -> None:
    """A packet from a host on the external network: DNAT of the floating IP named, on
    the gateway chassis that NATs it (vm-b's chassis has no physnet), then to vm-b's
    chassis by Geneve; a ping to the gateway address answered back out."""
    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        fip = north_south(world, c)
        info = c.get(f"/v2.0/routers/{ids['r1']}").json()["router"]["external_gateway_info"]
        gw_ip = info["external_fixed_ips"][0]["ip_address"]
    cat = tr.Catalog.from_store(store)
    spec = tr.PacketSpec("", dst_ip=fip["floating_ip_address"], proto="tcp", dport=22,
                         src_ip="198.51.100.7", from_network="public")  # fmt: skip
    tracer, built = tr.Tracer.for_spec(cat, spec)
    out = tracer.simulate(built)
    text = tracer.explain(out)
    assert "from: physical network physnet1 on chassis gw" in text, text
    assert f"(dnat) priority 110 — nat: floating IP {fip['floating_ip_address']}" in text, text
    assert "sent by geneve to chassis compute (192.0.2.2)" in text, text
    assert out.outputs[0].packet["ipv4_dst"] == int(ipaddress.IPv4Address("10.0.0.6"))
    # the gateway address answers ping, back out to the physical network
    spec = tr.PacketSpec("", dst_ip=gw_ip, src_ip="198.51.100.7", from_network="public")
    tracer, built = tr.Tracer.for_spec(cat, spec)
    out = tracer.simulate(built)
    text = tracer.explain(out)
    assert "sent out to physical network physnet1" in text, text
    assert out.outputs[0].packet["ipv4_src"] == int(ipaddress.IPv4Address(gw_ip))
    # and what cannot be traced says why
    for bad, words in (
        (tr.PacketSpec("", dst_ip=gw_ip, src_ip="198.51.100.7", from_network="net1"),
         "not a flat or vlan provider network"),
        (tr.PacketSpec("", dst_ip=gw_ip, from_network="public"), "give --src-ip"),
        (tr.PacketSpec("", dst_ip="203.0.113.99", src_ip="198.51.100.7", from_network="public"),
         "no floating IP or gateway address"),
        (tr.PacketSpec("", dst_ip=gw_ip, src_ip="198.51.100.7", from_network="nope"),
         "no network 'nope'"),
    ):  # fmt: skip
        with pytest.raises(tr.TraceError, match=words):
            tr.Tracer.for_spec(cat, bad)


def test_from_outside_to_a_port_forwarding() -> None:
    """A port forwarding is traced on the gateway chassis, its DNAT named: the forwarded
    port reaches vm-a (bound there) on its internal port; another port does not."""
    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        north_south(world, c)
        ext = c.get("/v2.0/networks?name=public").json()["networks"][0]["id"]
        fip = create(c, "floatingips", floating_network_id=ext)
        vm_a = c.get(f"/v2.0/ports/{ids['vm-a']}").json()["port"]
        body = {"protocol": "tcp", "internal_port_id": vm_a["id"], "internal_port": 22,
                "external_port_range": "8022:8023"}  # fmt: skip
        r = c.post(
            f"/v2.0/floatingips/{fip['id']}/port_forwardings", json={"port_forwarding": body}
        )
        assert r.status_code == 201, r.text
        pf = r.json()["port_forwarding"]
    addr, vm_ip = fip["floating_ip_address"], vm_a["fixed_ips"][0]["ip_address"]
    cat = tr.Catalog.from_store(store)
    spec = tr.PacketSpec("", dst_ip=addr, proto="tcp", dport=8023, src_ip="198.51.100.7",
                         from_network="public")  # fmt: skip
    tracer, built = tr.Tracer.for_spec(cat, spec)
    out = tracer.simulate(built)
    text = tracer.explain(out)
    assert "from: physical network physnet1 on chassis gw" in text, text
    assert (
        f"(dnat) priority 120 — nat: port forwarding {pf['id']}: tcp {addr}:8022-8023 → "
        f"{vm_ip}:22 of port vm-a ({vm_a['id']})"
    ) in text, text
    assert out.outputs and out.outputs[0].packet["ipv4_dst"] == int(ipaddress.IPv4Address(vm_ip))
    assert out.outputs[0].packet["tcp_dst"] == 22
    spec = tr.PacketSpec("", dst_ip=addr, proto="tcp", dport=8024, src_ip="198.51.100.7",
                         from_network="public")  # fmt: skip
    tracer, built = tr.Tracer.for_spec(cat, spec)
    assert tracer.simulate(built).outputs == []


# ------------------------------------------------------------------ ofproto/trace text

SAMPLE = """\
Flow: tcp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:00:00:01,dl_dst=fa:16:3e:00:00:02

bridge("br-int")
----------------
 0. in_port=1, priority 100, cookie {classifier:#x}
    load:0x1->NXM_NX_REG14[]
    goto_table:{l2_lookup}
 {l2_lookup}. metadata=0x4/0xffffff,dl_dst=fa:16:3e:00:00:02, priority 100, cookie {l2:#x}
    resubmit(,{output})
        {output}. reg15=0x2, priority 100, cookie 0xdead
            output:2
 {acl}. No match.
    drop

Resuming from table {acl_egress}
"""


def test_ofproto_trace_lines_get_stages_and_objects(world: World) -> None:
    from wyvern.ir.cookies import encode

    view = tr.build_view(world.store, {world.ids["vm-a"]: 1})
    ex = tr.Explainer(view, world.catalog())
    tables = {s: table_of(s) for s in ("l2_lookup", "output", "acl", "acl_egress")}
    text = SAMPLE.format(
        classifier=encode("classifier", world.ids["vm-a"]),
        l2=encode("l2", world.ids["net1"]),
        **tables,
    )
    out = tr.annotate_ofproto_trace(text, ex).splitlines()
    assert out[4].startswith(" 0. (classification) in_port=1, priority 100, cookie 0x2")
    assert out[4].endswith(f"[classifier: port vm-a ({world.ids['vm-a']})]")
    assert out[7].startswith(f" {tables['l2_lookup']}. (l2_lookup) metadata=")
    assert out[7].endswith(f"[l2: network net1 ({world.ids['net1']})]")
    assert (
        out[9] == f"        {tables['output']}. (output) reg15=0x2, priority 100, cookie 0xdead"
        "  [?: unknown cookie 0xdead]"
    )
    assert out[11] == f" {tables['acl']}. (acl) No match."
    assert out[-1] == f"Resuming from table {tables['acl_egress']} (acl_egress)"


def test_ovs_interfaces_become_bindings() -> None:
    text = (
        '{"data":[["br-int",65534,["map",[]]],'
        '["tapa",1,["map",[["attached-mac","fa:16:3e:00:00:01"],["iface-id","p-a"]]]],'
        '["tapb",["set",[]],["map",[["iface-id","p-b"]]]],'
        '["tapc",-1,["map",[["iface-id","p-c"]]]]],'
        '"headings":["name","ofport","external_ids"]}'
    )
    assert tr.parse_interfaces(text) == {"p-a": 1}


# ------------------------------------------------------------------ the command


@pytest.fixture
def restore_env() -> Iterator[None]:
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("WYVERN_")]:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """The topology in <tmp_path>/wyvern.db: where `--run-dir tmp_path` finds it."""
    with make_client(SqliteStore(str(tmp_path / "wyvern.db"))) as c:
        ids, ports = populate(c)
    store = SqliteStore(str(tmp_path / "wyvern.db"))
    try:
        yield World(store, ids, ports)
    finally:
        store.close()


def test_cli_traces_from_the_configured_store(
    tmp_path: Path, sqlite_world: World, restore_env: None
) -> None:
    ids = sqlite_world.ids
    runner = CliRunner()
    base = ["trace", "--run-dir", str(tmp_path), "--store", "sqlite", "--from", "vm-a"]
    res = runner.invoke(cli_app, [*base, "--to", "vm-b", "--proto", "tcp", "--dport", "23"])
    assert res.exit_code == 0, res.output
    assert "dropped at stage acl_egress" in res.output
    assert f"security group web ({ids['web']})" in res.output
    res = runner.invoke(cli_app, [*base, "--dst-ip", "10.1.0.7"])
    assert res.exit_code == 0, res.output
    assert "router r1" in res.output and "delivered to port vm-c" in res.output
    res = runner.invoke(cli_app, [*base.copy()[:-2], "--from", "ghost", "--to", "vm-b"])
    assert res.exit_code == 1
    assert "no port 'ghost'" in res.output


# ------------------------------------------------------------------ real OVS


@contextlib.contextmanager
def plugged(ovs: OvsInstance, world: World, *names: str) -> Iterator[dict[str, int]]:
    """Plug the named ports as VMs (os-vif style); yields the bindings read back from OVS."""
    vifs: list[vif.Vif] = []
    try:
        for name in names:
            port = world.ports[name]
            ip = port["fixed_ips"][0]["ip_address"]
            v = vif.plug(ovs, port["id"], port["mac_address"], unique("wvt-tr-"), 1442,
                         ip_cidr=f"{ip}/24")  # fmt: skip
            vifs.append(v)
        bindings = tr.ovs_bindings(ovs)
        assert bindings == {v.port_id: v.ofport for v in vifs}
        yield bindings
    finally:
        for v in vifs:
            try:
                vif.unplug(ovs, v.port_id, delete_netns=True)
            finally:
                if netns_exists(v.netns):
                    run_cmd(["ip", "netns", "del", v.netns], check=False)


def install(ovs: OvsInstance, world: World, bindings: dict[str, int]) -> tr.Tracer:
    """What the agent would install for these bindings, installed on br-int as the agent
    does (each flow with its engine entry's cookie)."""
    tracer = tr.Tracer.from_catalog(world.catalog(), bindings)
    with_meters(ovs, tracer.flows)  # (the punt meters the flows name)
    engine = Engine(default_apps())
    engine.full(tracer.view)
    FlowInstaller(ovs, "br-int").apply(engine.render())
    return tracer


@pytest.mark.system
def test_ovs_trace_is_annotated_with_stages_and_api_objects(ovs: OvsInstance, world: World) -> None:
    with plugged(ovs, world, "vm-a", "vm-b") as bindings:
        tracer = install(ovs, world, bindings)
        spec = tr.PacketSpec("vm-a", to_port="vm-b", proto="tcp", dport=22)
        built = tr.build_packet(tracer.view, spec, in_port=bindings[world.ids["vm-a"]])
        out = tr.ovs_trace(ovs, "br-int", tr.flow_spec(built.packet), tracer.explainer)
        assert " 0. (classification) in_port=" in out, out
        assert f"[classifier: port vm-a ({world.ids['vm-a']})]" in out
        assert "(port_security) " in out and "(l2_lookup) " in out
        assert f"[l2: port vm-b ({world.ids['vm-b']})]" in out
        assert "(acl_egress) " in out
        assert "security group web rule ingress tcp 22 from 0.0.0.0/0" in out, out
        assert f"[output: port vm-b ({world.ids['vm-b']})]" in out, out
        assert f"output:{bindings[world.ids['vm-b']]}  [port vm-b (" in out

        denied = tr.PacketSpec("vm-a", to_port="vm-b", proto="tcp", dport=23)
        built = tr.build_packet(tracer.view, denied, in_port=bindings[world.ids["vm-a"]])
        out = tr.ovs_trace(ovs, "br-int", tr.flow_spec(built.packet), tracer.explainer)
        assert "[pipeline: default of stage acl_egress]" in out, out


@pytest.mark.system
def test_cli_ovs_traces_the_agents_bridge(
    ovs: OvsInstance, sqlite_world: World, tmp_path: Path, restore_env: None
) -> None:
    world = sqlite_world
    with plugged(ovs, world, "vm-a", "vm-b") as bindings:
        install(ovs, world, bindings)
        res = CliRunner().invoke(
            cli_app,
            [
                "trace", "--run-dir", str(tmp_path), "--store", "sqlite", "--ovs",
                "--ovs-run-dir", str(ovs.run_dir), "--ovs-netns", ovs.netns or "",
                "--from", "vm-a", "--to", "vm-b", "--proto", "tcp", "--dport", "22",
            ],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        ofport = bindings[world.ids["vm-a"]]
        assert f"from: port vm-a ({world.ids['vm-a']}) (ofport {ofport})" in res.output
        assert "ofproto/trace br-int tcp,in_port=" in res.output
        assert "(acl_egress) " in res.output
        assert f"[output: port vm-b ({world.ids['vm-b']})]" in res.output, res.output
        res = CliRunner().invoke(
            cli_app,
            [
                "trace", "--run-dir", str(tmp_path), "--store", "sqlite", "--ovs",
                "--ovs-run-dir", str(ovs.run_dir), "--from", "vm-c", "--to", "vm-b",
            ],
        )  # fmt: skip
        assert res.exit_code == 1
        assert "is not plugged into this OVS" in res.output


def test_ipv6_out_through_the_gateway_is_routed_and_names_the_nd_binding() -> None:
    """A VM's IPv6 packet out through the router's gateway (on chassis "gw"): no NAT
    step, its own source address on the physical network, the next hop's MAC binding
    learned by ND."""
    import orjson

    from wyvern.model.keys import chassis_key, mac_binding_id, mac_binding_key, status_key
    from wyvern.nb.store import Put

    store = MemoryStore()
    with make_client(store) as c:
        ids, _ = populate(c)
        world = World(store, ids, {})
        provider = {"provider:network_type": "flat", "provider:physical_network": "physnet1"}
        ext = create(c, "networks", name="public", **{"router:external": True, **provider})
        for cidr, version, upstream in (("203.0.113.0/24", 4, "203.0.113.1"),
                                        ("2001:db8:ff::/64", 6, "2001:db8:ff::250")):  # fmt: skip
            create(c, "subnets", network_id=ext["id"], cidr=cidr, ip_version=version,
                   gateway_ip=upstream)  # fmt: skip
        gw_info = {"external_gateway_info": {"network_id": ext["id"]}}
        r = c.put(f"/v2.0/routers/{ids['r1']}", json={"router": gw_info})
        assert r.status_code == 200, r.text
        sub6 = create(c, "subnets", network_id=ids["net1"], cidr="2001:db8:1::/64", ip_version=6)
        r = c.put(f"/v2.0/routers/{ids['r1']}/add_router_interface", json={"subnet_id": sub6["id"]})
        assert r.status_code == 200, r.text
        fixed = [{"subnet_id": sub6["id"], "ip_address": "2001:db8:1::d"}]
        vm = create(c, "ports", network_id=ids["net1"], name="vm-d", fixed_ips=fixed)
    up = {"id": mac_binding_id(ext["id"], "2001:db8:ff::250"), "network_id": ext["id"],
          "ip": "2001:db8:ff::250", "mac": "02:00:00:00:00:06"}  # fmt: skip
    gw = {"name": "gw", "tunnel_ip": "192.0.2.1", "encaps": ["geneve"],
          "bridge_mappings": {"physnet1": "br-ex"}, "gateway_priority": 1}  # fmt: skip
    store.txn([], [
        Put(chassis_key("gw"), orjson.dumps(gw)),
        Put(mac_binding_key(ext["id"], "2001:db8:ff::250"), orjson.dumps(up)),
        Put(status_key(ids["net1"], vm["id"]), orjson.dumps({"chassis": "gw", "status": "ACTIVE"})),
    ])  # fmt: skip
    _, _, trace, text = world.run(from_port="vm-d", dst_ip="2001:db8:99::7")
    assert "sent out to physical network physnet1" in text, text
    sent = trace.outputs[0].packet
    assert sent["ipv6_src"] == int(ipaddress.IPv6Address("2001:db8:1::d")), text
    assert "(snat) priority 0 — pipeline: default" in text and "nat: router" not in text, text
    assert "MAC binding 2001:db8:ff::250 is 02:00:00:00:00:06 on network public" in text, text
    assert "(learned by ND)" in text, text


# ------------------------------------------------------------------ ICMPv6 errors


def v6_world(c: TestClient, store: Store) -> World:
    """net-big (MTU 1438) with vm-e and net-small (MTU 1400) with vm-f, IPv6 only,
    behind router r6."""
    ids: dict[str, str] = {}
    ports: dict[str, dict[str, Any]] = {}
    router = create(c, "routers", name="r6")
    ids["r6"] = router["id"]
    for name, mtu, cidr, vm, ip in (
        ("net-big", None, "2001:db8:e::/64", "vm-e", "2001:db8:e::5"),
        ("net-small", 1400, "2001:db8:f::/64", "vm-f", "2001:db8:f::5"),
    ):
        net = create(c, "networks", name=name, **({"mtu": mtu} if mtu else {}))
        sub = create(c, "subnets", network_id=net["id"], cidr=cidr, ip_version=6)
        resp = c.put(
            f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
        )
        assert resp.status_code == 200, resp.text
        ports[vm] = create(
            c,
            "ports",
            network_id=net["id"],
            name=vm,
            port_security_enabled=False,
            security_groups=[],
            fixed_ips=[{"subnet_id": sub["id"], "ip_address": ip}],
        )
        ids.update({name: net["id"], vm: ports[vm]["id"]})
    return World(store, ids, ports)


def test_ipv6_routed_too_big_time_exceeded_and_no_route_are_explained() -> None:
    store = MemoryStore()
    with make_client(store) as c:
        world = v6_world(c, store)
    ids = world.ids
    router = f"router r6 ({ids['r6']})"
    small = f"network net-small ({ids['net-small']})"
    big = f"network net-big ({ids['net-big']})"
    # routed, at exactly the egress MTU: delivered, through mtu_check
    _, _, trace, text = world.run(from_port="vm-e", to_port="vm-f", proto="udp", size=1400)
    assert trace.output_ports == [2], text
    assert "(mtu_check)" in text and "check_pkt_larger(1414)" in text, text
    assert f"delivered to port vm-f ({ids['vm-f']})" in text, text
    # one byte more: punted for a packet too big from the router on the sender's network
    _, _, trace, text = world.run(from_port="vm-e", to_port="vm-f", proto="udp", size=1401)
    assert trace.output_ports == [] and "punted to icmp6-error" in text, text
    assert (
        f"{router} sends an ICMPv6 packet too big to the sender, from 2001:db8:e::1 on {big}:"
        f" the packet (1401 bytes of IPv6) is larger than the MTU of {small}, 1400;"
        " the error's MTU is 1400"
    ) in text, text
    # the other way 1401 fits (1438)
    _, _, back, text = world.run(from_port="vm-f", to_port="vm-e", proto="udp", size=1401)
    assert back.output_ports == [2], text
    # hop limit 1, and no route
    _, _, trace, text = world.run(from_port="vm-e", to_port="vm-f", ttl=1)
    assert trace.output_ports == [], text
    assert (
        f"{router} sends an ICMPv6 time exceeded (hop limit) to the sender, from"
        f" 2001:db8:e::1 on {big}"
    ) in text, text
    _, _, trace, text = world.run(from_port="vm-e", dst_ip="2001:db8:99::1")
    assert "an ICMPv6 destination unreachable (no route)" in text, text


def test_cli_takes_ttl_and_size(tmp_path: Path, restore_env: None) -> None:
    with make_client(SqliteStore(str(tmp_path / "wyvern.db"))) as c:
        v6_world(c, MemoryStore())
    runner = CliRunner()
    base = ["trace", "--run-dir", str(tmp_path), "--store", "sqlite", "--from", "vm-e"]
    res = runner.invoke(cli_app, [*base, "--to", "vm-f", "--proto", "udp", "--size", "1500"])
    assert res.exit_code == 0, res.output
    assert "ICMPv6 packet too big" in res.output and "the error's MTU is 1400" in res.output
    res = runner.invoke(cli_app, [*base, "--to", "vm-f", "--ttl", "1"])
    assert res.exit_code == 0 and "ICMPv6 time exceeded" in res.output, res.output
    res = runner.invoke(cli_app, [*base, "--to", "vm-f", "--size", "30"])
    assert res.exit_code == 1 and "size 30 is not 40..65535" in res.output, res.output
    res = runner.invoke(cli_app, [*base, "--to", "vm-f", "--size", "1500", "--ovs"])
    assert res.exit_code == 2 and "--size needs the simulator" in res.output, res.output


def test_a_router_solicitation_is_punted_and_answered_by_the_router_interface() -> None:
    """`--proto rs`: the VM's RS from its link-local address is punted to the agent,
    which answers with router r1's advertisement on the subnets of its interface."""
    from wyvern.apps.port_security import eui64_link_local
    from wyvern.apps.punts import PUNT_ND_RA

    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        sub6 = create(c, "subnets", network_id=ids["net1"], cidr="2001:db8:1::/64",
                      ip_version=6, name="v6", ipv6_ra_mode="slaac", ipv6_address_mode="slaac",
                      dns_nameservers=["2001:db8::53"])  # fmt: skip
        r = c.put(f"/v2.0/routers/{ids['r1']}/add_router_interface", json={"subnet_id": sub6["id"]})
        assert r.status_code == 200, r.text
        itf = r.json()["port_id"]
        rp = c.get(f"/v2.0/ports/{itf}").json()["port"]
        vm = create(c, "ports", network_id=ids["net1"], name="vm-6")
    _, built, trace, text = world.run(from_port="vm-6", proto="rs")
    assert built.packet["ipv6_src"] == int(eui64_link_local(vm["mac_address"]))
    assert built.packet["icmpv6_type"] == 133
    assert [p.userdata[0] for p in trace.punts] == [PUNT_ND_RA] and not trace.outputs, text
    assert "punted to ipv6-ra" in text, text
    assert f"services: network net1 ({ids['net1']})" in text, text
    assert (
        f"answered by the agent with a router advertisement to that port only, from router "
        f"r1 ({ids['r1']})'s interface port {itf} (interface of router r1 ({ids['r1']})) "
        f"({eui64_link_local(rp['mac_address'])}, {rp['mac_address']}) on subnet v6 "
        f"({sub6['id']}): flags none, prefixes 2001:db8:1::/64 (autonomous), MTU 1438, DNS "
        "2001:db8::53 (search openstacklocal)"
    ) in text, text
    # on net2 (no IPv6 subnet on the router's interface there) nobody answers: flooded
    _, _, trace, text = world.run(from_port="vm-c", proto="rs")
    assert not trace.punts, text


def test_dhcp6_solicit_is_punted_to_the_dhcpv6_server_naming_port_and_subnet() -> None:
    store = MemoryStore()
    with make_client(store) as c:
        net = create(c, "networks", name="net6")
        sub = create(
            c, "subnets", network_id=net["id"], cidr="fd00:6::/64", ip_version=6,
            name="sub6", ipv6_address_mode="dhcpv6-stateful", dns_nameservers=["fd00:6::53"],
        )  # fmt: skip
        vm = create(c, "ports", network_id=net["id"], name="vm6")
    world = World(store, {}, {})
    _, built, trace, text = world.run(from_port="vm6", proto="dhcp6")
    assert built.packet["udp_src"] == 546 and built.packet["udp_dst"] == 547
    assert [p.userdata[0] for p in trace.punts] == [PUNT_DHCP6], text
    assert not trace.outputs
    addr = vm["fixed_ips"][0]["ip_address"]
    assert "punted to dhcp6" in text, text
    assert (
        f"the agent's DHCPv6 server for port vm6 ({vm['id']}): a Solicit gets {addr} on "
        f"subnet sub6 ({sub['id']}) (dhcpv6-stateful)"
    ) in text, text
    assert "DNS servers fd00:6::53; domain search openstacklocal" in text, text


def test_a_metered_router_shows_the_label_rules_that_count_the_packet() -> None:
    store = MemoryStore()
    with make_client(store) as c:
        ids, ports = populate(c)
        world = World(store, ids, ports)
        north_south(world, c)
        label = c.post(
            "/v2.0/metering/metering-labels", json={"metering_label": {"name": "web"}}
        ).json()["metering_label"]
        rules = {}
        for direction, excluded, prefix in (
            ("egress", False, "10.0.0.0/24"),
            ("egress", True, "10.0.0.99/32"),
        ):
            r = c.post(
                "/v2.0/metering/metering-label-rules",
                json={"metering_label_rule": {"metering_label_id": label["id"],
                      "direction": direction, "excluded": excluded,
                      "remote_ip_prefix": prefix}},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            rules[excluded] = r.json()["metering_label_rule"]["id"]
    _, _, trace, text = world.run(from_port="vm-a", dst_ip="198.51.100.7")
    assert trace.outputs, text
    assert "(meter_count)" in text and "(meter_egress)" in text, text
    assert (
        f"metering label web egress rule from 10.0.0.0/24 to any (rule {rules[False]}): counted"
        in text
    ), text
    assert rules[True] not in text  # (vm-a is not the excluded address)


def test_qos_meters_and_dscp_are_traced_with_their_policy() -> None:
    """The meter and DSCP steps name the port and the QoS policy (with its rules) behind
    them, whether the port's own or its network's."""
    store = MemoryStore()
    with make_client(store) as c:
        ids, _ = populate(c)
        pol = c.post("/v2.0/qos/policies", json={"policy": {"name": "gold"}}).json()["policy"]
        for rtype, attrs in (
            ("bandwidth_limit", {"max_kbps": 3000}),
            ("dscp_marking", {"dscp_mark": 26}),
        ):
            r = c.post(
                f"/v2.0/qos/policies/{pol['id']}/{rtype}_rules", json={f"{rtype}_rule": attrs}
            )
            assert r.status_code == 201, r.text
        r = c.put(f"/v2.0/networks/{ids['net1']}", json={"network": {"qos_policy_id": pol["id"]}})
        assert r.status_code == 200, r.text
    world = World(store, ids, {})
    _, _, trace, text = world.run(from_port="vm-a", to_port="vm-b", proto="tcp", dport=22)
    assert trace.output_ports == [2], text
    assert trace.meters and trace.outputs[0].packet["ip_dscp"] == 26
    assert "(qos_from_vm) priority 110" in text
    assert "meter:" in text and "set_field:26->ip_dscp" in text
    assert (
        f"qos: port vm-a ({ids['vm-a']}), QoS policy gold ({pol['id']}) of its network: "
        "bandwidth_limit egress 3000 kbps, dscp_marking 26"
    ) in text, text


def test_a_subports_packet_is_traced_through_the_vlan_step(world: World) -> None:
    """From a trunk's subport: the frame enters tagged on the parent's VIF, the trunk
    stage (naming the subport) untags it, and the reply to it is tagged again."""
    with make_client(world.store) as c:
        net = create(c, "networks", name="net3")
        parent = create(c, "ports", network_id=net["id"], name="parent")
        resp = c.post(
            "/v2.0/trunks",
            json={
                "trunk": {
                    "port_id": parent["id"],
                    "sub_ports": [
                        {
                            "port_id": world.ids["vm-a"],
                            "segmentation_type": "vlan",
                            "segmentation_id": 42,
                        }
                    ],
                }
            },
        )
        assert resp.status_code == 201, resp.text
    _, built, trace, text = world.run(from_port="vm-a", to_port="vm-b")
    assert trace.output_ports == [2], text
    assert built.packet["vlan_vid"] == 0  # (what the guest's VLAN interface sends)
    assert trace.stages()[:2] == ["classification", "trunk"], text
    assert f"trunk: port vm-a ({world.ids['vm-a']})" in text, text
    assert trace.outputs[0].packet["vlan_vid"] == 0
    _, _, back, text = world.run(from_port="vm-b", to_port="vm-a")
    parent_ofport = [o.port for o in back.outputs]
    assert len(parent_ofport) == 1 and back.outputs[0].packet["vlan_vid"] == 0x1000 | 42, text
