"""Router gateways through the simulator: SNAT out of the patch port to the physical
network on the gateway chassis, replies un-SNATed back to the VM, ARP for the gateway
answered and learned, next hops without a MAC asked for; nothing on other chassis."""

from __future__ import annotations

from typing import Any

from tests.apps import scenario as sc
from wyvern.apps.gateway import REDIRECT_KEY, gateway_chassis, router_zone
from wyvern.apps.punts import PUNT_ARP_LEARN, PUNT_ARP_REQUEST
from wyvern.ir import packet as pk
from wyvern.ir.fields import FIELDS, format_value
from wyvern.ir.ofports import GENEVE, TUNNEL_OFPORTS, patch_ofports
from wyvern.ir.packet import Packet
from wyvern.model.keys import mac_binding_id
from wyvern.model.view import GatewayHost, LocalView, MacBinding

MAPPINGS = {"physnet1": "br-ex"}
PATCH = patch_ofports(MAPPINGS)["physnet1"]
GENEVE_PORT = TUNNEL_OFPORTS[GENEVE]
MAC_VM, MAC_RI, MAC_GW, MAC_UP, MAC_HOST = (f"fa:16:3e:00:00:0{c}" for c in "12345")
VM, GW, UPSTREAM, HOST, FAR = (
    "10.0.0.5",
    "203.0.113.10",
    "203.0.113.1",
    "203.0.113.50",
    ("198.51.100.7"),
)


FIP, MAC_FIP = "203.0.113.20", "fa:16:3e:00:00:06"


def view_of(
    *,
    snat: bool = True,
    chassis: dict[str, int] | None = None,
    fip: bool = False,
    upstream: str | None = UPSTREAM,
    routes: tuple[tuple[str, str], ...] = (),
    pfs: dict[str, Any] | None = None,
    hints: list[str] | None = None,
) -> LocalView:
    """us (hv1): the VM "a" (ofport 1) behind router r, whose gateway is on "ext" (flat on
    physnet1, its subnet's gateway UPSTREAM); CHASSIS: gateway priority per chassis name
    (hv1: 1 by default); ROUTES: the router's extra routes; PFS: its port forwardings
    (`_pfs`, as the API writes them)."""
    ext = sc.network(
        "ext",
        key=200,
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    gw_info: dict[str, Any] = {"network_id": "ext", "enable_snat": snat}
    view = sc.build_view(
        networks=[sc.network("n1", key=100), ext],
        subnets=[
            sc.subnet("s1", "n1", "10.0.0.0/24"),
            sc.subnet("se", "ext", "203.0.113.0/24", gateway_ip=upstream),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_VM, ips=[VM], port_security_enabled=False),
            sc.router_port("ri", "n1", 2, MAC_RI, "10.0.0.1", "r"),
            sc.port(
                "rg",
                "ext",
                key=3,
                mac=MAC_GW,
                ips=[GW],
                device_owner="network:router_gateway",
                device_id="r",
                port_security_enabled=False,
            ),
        ],
        routers=[
            sc.router(
                "r",
                7,
                external_gateway_info=gw_info,
                routes=[{"destination": d, "nexthop": h} for d, h in routes],
                _gw_port_id="rg",
                _fips={
                    "f1": {
                        "floating_ip_address": FIP,
                        "fixed_ip_address": VM,
                        "port_id": "a",
                        "mac": MAC_FIP,
                        "key": 9,
                    }
                }
                if fip
                else {},
                _pfs=pfs or {},
                availability_zone_hints=hints or [],
            )
        ],
        local={"a": 1},
        chassis_name="hv1",
    )
    add_chassis(view, chassis or {"hv1": 1})
    return view


def add_chassis(
    view: LocalView,
    priorities: dict[str, int],
    zones: dict[str, str] | None = None,
    disabled: tuple[str, ...] = (),
) -> None:
    """Chassis records mapping physnet1, with these gateway priorities by name (ZONES:
    availability zones by name, else nova; DISABLED: agent admin_state_up false)."""
    for name, priority in priorities.items():
        rec = {"name": name, "tunnel_ip": "192.0.2.1", "bridge_mappings": MAPPINGS,
               "gateway_priority": priority, "availability_zone": (zones or {}).get(name),
               "admin_state_up": name not in disabled}  # fmt: skip
        view.apply("chassis", name, sc.record_from_obj("chassis", rec))


def text(p: Packet, *names: str) -> tuple[str, ...]:
    """Fields of a packet as text (addresses as written here)."""
    return tuple(format_value(FIELDS[n].kind, FIELDS[n].bits, p[n]) for n in names)


def learn(view: LocalView, ip: str, mac: str) -> None:
    b = MacBinding(mac_binding_id("ext", ip), "ext", ip, mac)
    view.apply("mac_binding", b.id, b)


def test_the_highest_priority_gateway_chassis_mapping_the_physnet_hosts_it() -> None:
    view = view_of(chassis={"hv1": 1, "hv2": 5, "hv3": 0})
    assert gateway_chassis(view, view.networks["ext"]) == "hv2"
    view = view_of(chassis={"hv1": 2, "hv2": 2})
    assert gateway_chassis(view, view.networks["ext"]) == "hv1"  # ties: the lowest name
    assert router_zone(view.routers["r"]) >= 0xF000


def report(view: LocalView, router: str, chassis: str | None) -> None:
    """The gateway status key of ROUTER naming CHASSIS (None: no key), as agents write it."""
    obj = {"chassis": chassis, "status": "ACTIVE"}
    view.apply("gateway_host", router, None if chassis is None else GatewayHost.from_obj(obj))


def test_equal_priorities_keep_the_gateway_on_the_chassis_that_reports_it() -> None:
    # No preemption on a tie (OVN's and keepalived's rule): hv2 took the gateway while hv1
    # was down and keeps it when hv1 is back; only a strictly higher priority takes it.
    view = view_of(chassis={"hv1": 2, "hv2": 2, "hv0": 1})
    ext = view.networks["ext"]
    learn(view, UPSTREAM, MAC_UP)
    s = sc.Scenario(view)
    probe = pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)
    assert gateway_chassis(view, ext) == "hv1"  # (no report: the lowest name)
    assert s.outcome(probe).ports == [PATCH]  # (SNATed out here)
    view.apply("chassis_down", "hv1", True)
    assert gateway_chassis(view, ext) == "hv2"
    report(view, "r", "hv2")
    view.apply("chassis_down", "hv1", None)
    assert gateway_chassis(view, ext) == "hv2"  # hv1 is back: hv2 keeps it
    s = sc.Scenario(view)
    out = s.outcome(probe)
    assert out.ports == [GENEVE_PORT], out.trace.format()  # (redirected to hv2)
    # The reported chassis counts only while it is alive and of the top priority.
    view.apply("chassis_down", "hv2", True)
    assert gateway_chassis(view, ext) == "hv1"
    view.apply("chassis_down", "hv2", None)
    report(view, "r", "hv0")  # (a lower priority: as no report)
    assert gateway_chassis(view, ext) == "hv1"
    report(view, "r", "hv2")
    add_chassis(view, {"hv3": 3})  # a strictly higher priority preempts
    assert gateway_chassis(view, ext) == "hv3"
    view.apply("chassis", "hv3", None)
    view.apply("chassis", "hv2", None)  # its record gone (lease): the report is stale
    assert gateway_chassis(view, ext) == "hv1"
    report(view, "r", None)
    assert gateway_chassis(view, ext) == "hv1"


def test_az_hints_keep_the_gateway_on_gateway_chassis_of_those_zones() -> None:
    """hv2 (az2) has the higher priority; a router hinted to nova gets hv1 (us): its SNAT
    leaves by our patch port. Without hints (any zone) hv2 hosts it: sent there by
    Geneve. Hinted to a zone no gateway chassis is in: no chassis hosts it."""
    zones = {"hv1": "nova", "hv2": "az2"}
    for hints, host in ((["nova"], "hv1"), (["az2"], "hv2"), ([], "hv2"), (["az3"], None)):
        view = view_of(chassis={"hv1": 1, "hv2": 2}, hints=hints)
        add_chassis(view, {"hv1": 1, "hv2": 2}, zones)
        ext = view.networks["ext"]
        assert gateway_chassis(view, ext, view.routers["r"].az_hints) == host
        learn(view, UPSTREAM, MAC_UP)
        out = sc.Scenario(view).outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
        expected = {"hv1": [PATCH], "hv2": [GENEVE_PORT], None: []}[host]
        assert out.ports == expected, (hints, out.trace.format())
        if host == "hv1":
            assert text(out.packets[PATCH], "ipv4_src") == (GW,)


def test_routers_on_one_network_with_different_hints_get_different_chassis() -> None:
    view = view_of(chassis={"hv1": 1, "hv2": 2})
    add_chassis(view, {"hv1": 1, "hv2": 2, "hv3": 3}, {"hv1": "nova", "hv2": "az2", "hv3": "az2"})
    ext = view.networks["ext"]
    assert gateway_chassis(view, ext, ("nova",)) == "hv1"
    assert gateway_chassis(view, ext, ("az2",)) == "hv3"
    assert gateway_chassis(view, ext, ("az2", "nova")) == "hv3"
    assert gateway_chassis(view, ext) == "hv3"


def test_a_disabled_gateway_chassis_hosts_no_gateway() -> None:
    """The probe first: hv2 (priority 2) hosts the gateway, so our VM's packet goes there;
    hv2 disabled (agent admin_state_up false): we (hv1) host it and SNAT it here."""
    view = view_of(chassis={"hv1": 1, "hv2": 2})
    learn(view, UPSTREAM, MAC_UP)
    s = sc.Scenario(view)
    assert s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)).ports == [GENEVE_PORT]
    add_chassis(view, {"hv1": 1, "hv2": 2}, disabled=("hv2",))
    assert gateway_chassis(view, view.networks["ext"]) == "hv1"
    s.refresh()
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [PATCH], out.trace.format()
    add_chassis(view, {"hv1": 1, "hv2": 2}, disabled=("hv1", "hv2"))
    assert gateway_chassis(view, view.networks["ext"]) is None
    s.refresh()
    assert s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)).ports == []


def test_snat_out_and_the_reply_back() -> None:
    view = view_of()
    s = sc.Scenario(view)
    # No MAC for the upstream router yet: the packet asks the agent to ARP for it.
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [] and out.punts == [bytes([PUNT_ARP_REQUEST])], out.trace.format()

    learn(view, UPSTREAM, MAC_UP)
    s.refresh()
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [PATCH], out.trace.format()
    sent = out.packets[PATCH]
    assert text(sent, "ipv4_src", "ipv4_dst") == (GW, FAR), out.trace.format()
    assert text(sent, "eth_src", "eth_dst") == (MAC_GW, MAC_UP)

    reply = pk.tcp(PATCH, MAC_UP, MAC_GW, FAR, GW, 80, 40000, "SA")
    out = s.outcome(reply)
    assert out.ports == [1], out.trace.format()
    back = out.packets[1]
    assert text(back, "ipv4_src", "ipv4_dst", "eth_dst") == (FAR, VM, MAC_VM)

    # A host on the external subnet is its own next hop; an unsolicited packet to the
    # gateway address is no reply of ours and goes nowhere.
    learn(view, HOST, MAC_HOST)
    s.refresh()
    out = s.outcome(pk.udp(1, MAC_VM, MAC_RI, VM, HOST, 5000, 53))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "eth_dst", "ipv4_src") == (MAC_HOST, GW)
    assert s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_GW, HOST, GW, 999, 22)).ports == []


def test_enable_snat_false_routes_the_internal_address() -> None:
    view = view_of(snat=False)
    learn(view, UPSTREAM, MAC_UP)
    out = sc.Scenario(view).outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src") == (VM,)


def test_the_gateway_answers_arp_and_ping_from_outside_and_learns_the_asker() -> None:
    s = sc.Scenario(view_of())
    out = s.outcome(pk.arp(PATCH, MAC_HOST, HOST, GW))
    assert out.ports == [PATCH], out.trace.format()
    answer = out.packets[PATCH]
    assert answer["arp_op"] == 2
    assert text(answer, "arp_sha", "arp_spa", "eth_dst") == (MAC_GW, GW, MAC_HOST)
    assert out.punts == [bytes([PUNT_ARP_LEARN])]
    # an ARP reply to the gateway is learned, not answered
    out = s.outcome(pk.arp(PATCH, MAC_UP, UPSTREAM, GW, op=2, eth_dst=MAC_GW))
    assert out.ports == [] and out.punts == [bytes([PUNT_ARP_LEARN])], out.trace.format()
    out = s.outcome(pk.icmp_echo(PATCH, MAC_HOST, MAC_GW, HOST, GW))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src", "ipv4_dst") == (GW, HOST)


def test_another_chassis_hosting_the_gateway_gets_what_leaves_by_it() -> None:
    # The same probes as above, on a chassis that is not the gateway: the VM's packet goes
    # to the gateway chassis by Geneve, unrouted (VNI: the router's key); nothing from the
    # physical network is answered here.
    view = view_of(chassis={"hv1": 1, "hv2": 2})
    learn(view, UPSTREAM, MAC_UP)
    s = sc.Scenario(view)
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [GENEVE_PORT], out.trace.format()
    sent = out.packets[GENEVE_PORT]
    assert (sent["tun_id"], sent["tun_metadata0"]) == (7, (1 << 32) | REDIRECT_KEY)
    assert (text(sent, "ipv4_src"), sent["nw_ttl"]) == ((VM,), 64)
    out = s.outcome(pk.arp(PATCH, MAC_HOST, HOST, GW))
    assert out.punts == [] and not [o for o in out.trace.outputs if o.packet["arp_op"] == 2], (
        out.trace.format()
    )


def test_extra_routes_through_an_outside_next_hop_are_redirected_too() -> None:
    # No default route (the external subnet has no gateway): only the extra route's
    # destination leaves, by the gateway chassis; elsewhere is unreachable.
    view = view_of(chassis={"hv1": 1, "hv2": 2}, upstream=None,
                   routes=(("100.64.7.0/24", "203.0.113.251"),))  # fmt: skip
    s = sc.Scenario(view)
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, "100.64.7.7", 40000, 80))
    assert out.ports == [GENEVE_PORT], out.trace.format()
    out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
    assert out.ports == [], out.trace.format()


def test_a_floating_ip_is_natted_on_its_ports_chassis_even_when_not_the_gateway() -> None:
    for chassis in ({"hv1": 1}, {"hv1": 0, "hv2": 1}):
        view = view_of(fip=True, chassis=chassis)
        learn(view, UPSTREAM, MAC_UP)
        s = sc.Scenario(view)
        # out: the floating address and MAC, not the gateway's
        out = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80))
        assert out.ports == [PATCH], out.trace.format()
        assert text(out.packets[PATCH], "ipv4_src", "eth_src", "eth_dst") == (FIP, MAC_FIP, MAC_UP)
        back = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_FIP, FAR, FIP, 80, 40000, "SA"))
        assert back.ports == [1], back.trace.format()
        assert text(back.packets[1], "ipv4_src", "ipv4_dst") == (FAR, VM)
        # in: a new connection to the floating address reaches the VM, and its answer
        # leaves from the floating address to the host (a neighbour on the subnet)
        learn(view, HOST, MAC_HOST)
        s.refresh()
        inbound = s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_FIP, HOST, FIP, 50000, 22))
        assert inbound.ports == [1], inbound.trace.format()
        assert text(inbound.packets[1], "ipv4_src", "ipv4_dst") == (HOST, VM)
        answer = s.outcome(pk.tcp(1, MAC_VM, MAC_RI, VM, HOST, 22, 50000, "SA"))
        assert answer.ports == [PATCH], answer.trace.format()
        assert text(answer.packets[PATCH], "ipv4_src", "ipv4_dst") == (FIP, HOST)
        # ARP for the floating address: answered with its own MAC
        arp = s.outcome(pk.arp(PATCH, MAC_HOST, HOST, FIP))
        assert arp.ports == [PATCH], arp.trace.format()
        assert text(arp.packets[PATCH], "arp_sha", "arp_spa") == (MAC_FIP, FIP)


def test_a_floating_ip_of_a_port_elsewhere_is_not_natted_here() -> None:
    # the same probes from the physical network, but the port is bound on another chassis
    view = view_of(fip=True)
    sc.unbind(view, "a")
    view.port_chassis["a"] = "hv2"
    s = sc.Scenario(view)
    assert s.outcome(pk.tcp(PATCH, MAC_HOST, MAC_FIP, HOST, FIP, 50000, 22)).ports == []
    assert s.outcome(pk.arp(PATCH, MAC_HOST, HOST, FIP)).ports == []
    # while the gateway here still answers for its own address
    assert s.outcome(pk.arp(PATCH, MAC_HOST, HOST, GW)).ports == [PATCH]


def redirected(p: Packet) -> Packet:
    """P as the gateway chassis receives it from the VM's chassis (see above)."""
    p = p.copy()
    p["in_port"] = GENEVE_PORT
    p["tun_id"] = 7
    p["tun_metadata0"] = (1 << 32) | REDIRECT_KEY
    return p


def elsewhere(view: LocalView, mappings: dict[str, str] | None = None) -> None:
    """Port "a" bound on hv2 instead (mapping MAPPINGS, by default none), by Geneve."""
    sc.unbind(view, "a")
    view.port_chassis["a"] = "hv2"
    rec = {"name": "hv2", "tunnel_ip": "192.0.2.2", "bridge_mappings": mappings or {}}
    view.apply("chassis", "hv2", sc.record_from_obj("chassis", rec))


def test_the_gateway_chassis_routes_and_snats_what_other_chassis_send_it() -> None:
    view = view_of()
    elsewhere(view)
    learn(view, UPSTREAM, MAC_UP)
    s = sc.Scenario(view)
    out = s.outcome(redirected(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 40000, 80)))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src", "eth_src") == (GW, MAC_GW)
    # the reply goes back to the VM's chassis through the internal network's tunnel
    back = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_GW, FAR, GW, 80, 40000, "SA"))
    assert back.ports == [GENEVE_PORT], back.trace.format()
    assert (back.packets[GENEVE_PORT]["tun_id"], text(back.packets[GENEVE_PORT], "ipv4_dst")) == (
        100,
        (VM,),
    )


def test_a_floating_ip_of_a_port_on_a_chassis_without_the_physnet_is_centralized() -> None:
    view = view_of(fip=True)
    elsewhere(view)
    learn(view, UPSTREAM, MAC_UP)
    s = sc.Scenario(view)
    inbound = s.outcome(pk.tcp(PATCH, MAC_UP, MAC_FIP, FAR, FIP, 50000, 22))
    assert inbound.ports == [GENEVE_PORT], inbound.trace.format()
    assert text(inbound.packets[GENEVE_PORT], "ipv4_dst") == (VM,)
    out = s.outcome(redirected(pk.tcp(1, MAC_VM, MAC_RI, VM, FAR, 22, 50000, "SA")))
    assert out.ports == [PATCH], out.trace.format()
    assert text(out.packets[PATCH], "ipv4_src", "eth_src") == (FIP, MAC_FIP)
    # the port's chassis maps the physnet after all: it NATs the floating IP, not us
    elsewhere(view, MAPPINGS)
    s = sc.Scenario(view)
    assert s.outcome(pk.tcp(PATCH, MAC_UP, MAC_FIP, FAR, FIP, 50001, 22)).ports == []
