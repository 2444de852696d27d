"""Router advertisements: what each subnet mode makes of them, read back with os-ken (the
oracle: it parses the header, the source link-layer, prefix and MTU options; RDNSS and
DNSSL, which it leaves as raw bytes, are read here by RFC 8106's layout), the answer to
a solicitation, what is not a solicitation, the unsolicited schedule and the
dispatcher's punt."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from tests.apps import scenario as sc
from wyvern.apps.port_security import eui64_link_local
from wyvern.apps.punts import PUNT_ND_RA
from wyvern.controller import frames, nd, ra
from wyvern.controller.packetin import PacketInDispatcher
from wyvern.model.view import Binding, LocalView
from wyvern.southbound.ofchannel import PacketIn

MAC_VM, MAC_R, MAC_R2 = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:f1", "fa:16:3e:00:00:f2"
VM_LL = str(eui64_link_local(MAC_VM))
R_LL = str(eui64_link_local(MAC_R))
NET_KEY, OFPORT = 100, 7
S = ra.RaSettings()  # Neutron's defaults: 30..100 s


def view_of(
    *subnets: dict[str, Any],
    mtu: int = 1450,
    router_subnets: tuple[str, ...] | None = None,
    second_router: bool = False,
) -> LocalView:
    """Network n with SUBNETS, a VM bound here, and router r's interface on the subnets
    named ROUTER_SUBNETS (default: all)."""
    names = [s["id"] for s in subnets] if router_subnets is None else list(router_subnets)
    cidrs = {s["id"]: s["cidr"] for s in subnets}
    ips = [(s, str(ipaddress.ip_network(cidrs[s])[1])) for s in names]
    rp = sc.port(
        "rp", "n", key=9, mac=MAC_R, ips=ips, device_owner="network:router_interface",
        device_id="r", port_security_enabled=False,
    )  # fmt: skip
    ports = [sc.port("vm", "n", key=1, mac=MAC_VM, ips=[]), rp]
    routers = [sc.router("r", key=7)]
    if second_router:
        ports.append(
            sc.router_port("rp2", "n", key=10, mac=MAC_R2, ip="2001:db8:1::2", router_id="r2")
        )
        routers.append(sc.router("r2", key=8))
    return sc.build_view(
        networks=[sc.network("n", key=NET_KEY, mtu=mtu)],
        subnets=list(subnets),
        ports=ports if names else ports[:1],
        routers=routers if names else [],
        local={"vm": OFPORT},
    )


def sub(id_: str, cidr: str, mode: str | None, dns: tuple[str, ...] = ()) -> dict[str, Any]:
    return sc.subnet(id_, "n", cidr, ipv6_ra_mode=mode, ipv6_address_mode=mode,
                     dns_nameservers=list(dns))  # fmt: skip


def parse(frame: bytes) -> tuple[Any, Any, Any, dict[int, list[Any]]]:
    """(ethernet, ipv6, (type, code, nd_router_advert), options by type) as os-ken reads
    FRAME. Its RA parser mis-sizes an MTU option (and then reads garbage), so the
    options are cut here by their length fields and each is read by os-ken's parser for
    its type; the others (RDNSS, DNSSL) are kept as bytes."""
    eth, _, rest = ethernet.ethernet.parser(frame)
    ip6, _, _ = ipv6.ipv6.parser(rest)
    assert eth.ethertype == 0x86DD and ip6.nxt == 58
    msg = frame[54 : 54 + ip6.payload_length]
    advert = icmpv6.nd_router_advert.parser(msg[:16], 4)
    opts: dict[int, list[Any]] = {}
    rest = msg[16:]
    parsers = {1: icmpv6.nd_option_sla, 3: icmpv6.nd_option_pi, 5: icmpv6.nd_option_mtu}
    while rest:
        kind, length = rest[0], rest[1] * 8
        assert 0 < length <= len(rest)
        cls = parsers.get(kind)
        opts.setdefault(kind, []).append(cls.parser(rest[:length], 0) if cls else rest[:length])
        rest = rest[length:]
    return eth, ip6, (msg[0], msg[1], advert), opts


def checksum_ok(frame: bytes) -> bool:
    """The ICMPv6 checksum over the pseudo-header sums to 0xffff (RFC 4443 §2.3)."""
    ip6 = frame[14:54]
    payload = frame[54:]
    pseudo = ip6[8:40] + struct.pack("!I3xB", len(payload), 58) + payload
    if len(pseudo) % 2:
        pseudo += b"\0"
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def one(view: LocalView, dst_mac: str = ra.ALL_NODES_MAC, dst: str = ra.ALL_NODES) -> bytes:
    [adv] = ra.advertisements(view, view.networks["n"], S)
    return ra.build(adv, dst_mac, dst, S)


@pytest.mark.parametrize(
    ("mode", "m", "o", "autonomous"),
    [
        ("slaac", 0, 0, 1),
        ("dhcpv6-stateful", 1, 0, 0),
        ("dhcpv6-stateless", 0, 1, 1),
    ],
)
def test_flags_and_prefix_follow_the_mode(mode: str, m: int, o: int, autonomous: int) -> None:
    frame = one(view_of(sub("s", "2001:db8:1::/64", mode)))
    eth, ip6, (kind, code, advert), opts = parse(frame)
    assert (kind, code) == (134, 0) and checksum_ok(frame)
    assert eth.src == MAC_R and eth.dst == ra.ALL_NODES_MAC
    assert ip6.src == R_LL and ip6.dst == "ff02::1" and ip6.hop_limit == 255
    assert advert.res == (m << 1) | o  # (os-ken: M is bit 1, O bit 0)
    assert advert.ch_l == 64 and advert.rou_l == 300  # 3 x max_rtr_adv_interval
    assert advert.rea_t == 0 and advert.ret_t == 0
    [pi] = opts[icmpv6.ND_OPTION_PI]
    assert (pi.pl, pi.prefix) == (64, "2001:db8:1::")
    assert pi.res1 >> 1 == (0b10 | autonomous)  # L always, A per mode (os-ken: L, A, R)
    assert (pi.val_l, pi.pre_l) == (86400, 14400)  # radvd's defaults
    [sla] = opts[icmpv6.ND_OPTION_SLA]
    assert sla.hw_src == MAC_R
    [mtu] = opts[icmpv6.ND_OPTION_MTU]
    assert mtu.mtu == 1450  # the network's


def test_an_interface_with_several_subnets_advertises_them_all() -> None:
    v = view_of(
        sub("a", "2001:db8:1::/64", "slaac"),
        sub("b", "2001:db8:2::/64", "dhcpv6-stateful"),
        sub("c", "2001:db8:3::/64", "dhcpv6-stateless"),
        sub("d", "2001:db8:4::/64", None),
    )
    _, _, icmp, opts = parse(one(v))
    assert icmp[2].res == 0b11  # M (stateful) and O (stateless)
    got = {(p.prefix, p.res1 >> 1) for p in opts[icmpv6.ND_OPTION_PI]}
    assert got == {("2001:db8:1::", 0b11), ("2001:db8:3::", 0b11), ("2001:db8:2::", 0b10)}


def test_a_subnet_without_ra_mode_gets_a_default_router_and_no_prefix() -> None:
    """Neutron's l3 agent configures radvd on every interface with an IPv6 subnet; a
    subnet without ipv6_ra_mode is in neither prefix list of its template."""
    _, ip6, icmp, opts = parse(one(view_of(sub("s", "2001:db8:1::/64", None))))
    assert icmp[2].res == 0 and icmp[2].rou_l == 300 and ip6.src == R_LL
    assert icmpv6.ND_OPTION_PI not in opts and icmpv6.ND_OPTION_MTU in opts


def test_no_router_interface_no_advertisement() -> None:
    """Neutron needs a router (its radvd) to advertise: a subnet with a mode alone gets
    nothing, nor does a router interface on IPv4 subnets only."""
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"), router_subnets=())
    assert ra.advertisements(v, v.networks["n"], S) == []
    v4 = view_of(sc.subnet("s4", "n", "10.0.0.0/24"), sub("s", "2001:db8:1::/64", "slaac"),
                 router_subnets=("s4",))  # fmt: skip
    assert ra.advertisements(v4, v4.networks["n"], S) == []


def test_each_router_interface_advertises_itself() -> None:
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"), second_router=True)
    ads = ra.advertisements(v, v.networks["n"], S)
    assert [(a.router_id, a.mac, a.source) for a in ads] == [
        ("r", MAC_R, R_LL),
        ("r2", MAC_R2, str(eui64_link_local(MAC_R2))),
    ]


def rdnss_dnssl(opts: dict[int, list[Any]]) -> tuple[tuple[int, list[str]], tuple[int, list[str]]]:
    """(lifetime, servers) of the RDNSS option and (lifetime, domains) of the DNSSL, read
    by RFC 8106 §5.1 / §5.2's layout."""
    [rd] = opts[ra.ND_OPT_RDNSS]
    _, length, _, life = struct.unpack_from("!BBHI", rd)
    assert len(rd) == length * 8
    servers = [str(ipaddress.IPv6Address(bytes(rd[i : i + 16]))) for i in range(8, len(rd), 16)]
    [dl] = opts[ra.ND_OPT_DNSSL]
    _, length, _, dlife = struct.unpack_from("!BBHI", dl)
    assert len(dl) == length * 8
    names, raw, labels = [], bytes(dl[8:]), []
    while raw and raw[0]:
        labels.append(raw[1 : 1 + raw[0]].decode())
        raw = raw[1 + raw[0] :]
        if raw[:1] == b"\0":
            names.append(".".join(labels))
            labels = []
            raw = raw[1:]
    assert not raw.strip(b"\0")  # (only padding after the names)
    return (life, servers), (dlife, names)


def test_rdnss_and_dnssl_carry_the_slaac_subnets_dns() -> None:
    """As Neutron: the IPv6 dns_nameservers of the slaac subnets, at most three; a
    stateless or stateful subnet's servers come by DHCPv6 instead."""
    v = view_of(
        sub("a", "2001:db8:1::/64", "slaac", ("2001:db8::53", "10.0.0.53", "2001:db8::54")),
        sub("b", "2001:db8:2::/64", "slaac", ("2001:db8::55", "2001:db8::56")),
        sub("c", "2001:db8:3::/64", "dhcpv6-stateless", ("2001:db8::99",)),
    )
    _, _, _, opts = parse(one(v))
    (life, servers), (dlife, names) = rdnss_dnssl(opts)
    assert servers == ["2001:db8::53", "2001:db8::54", "2001:db8::55"]
    assert names == ["openstacklocal"]
    assert life == dlife == 300
    v = view_of(sub("c", "2001:db8:3::/64", "dhcpv6-stateless", ("2001:db8::99",)))
    _, _, _, opts = parse(one(v))
    assert ra.ND_OPT_RDNSS not in opts and ra.ND_OPT_DNSSL not in opts


def test_dnssl_is_the_networks_dns_domain_when_set() -> None:
    v = view_of(sub("a", "2001:db8:1::/64", "slaac", ("2001:db8::53",)))
    net = sc.record_from_obj("network", sc.network("n", key=NET_KEY, dns_domain="lab.example."))
    v.apply("network", "n", net)
    _, _, _, opts = parse(one(v))
    assert rdnss_dnssl(opts)[1][1] == ["lab.example"]


def test_settings_set_the_lifetimes_and_a_small_mtu_is_left_out() -> None:
    s = ra.RaSettings(min_interval=3, max_interval=4, dns_domain="example.org")
    v = view_of(sub("a", "2001:db8:1::/64", "slaac", ("2001:db8::53",)), mtu=1200)
    [adv] = ra.advertisements(v, v.networks["n"], s)
    _, _, icmp, opts = parse(ra.build(adv, MAC_VM, VM_LL, s))
    assert icmp[2].rou_l == 12
    assert icmpv6.ND_OPTION_MTU not in opts  # below IPv6's minimum (radvd's template)
    assert rdnss_dnssl(opts) == ((12, ["2001:db8::53"]), (12, ["example.org"]))


def rs(src: str = VM_LL, *, hop: int = 255, code: int = 0, options: bytes | None = None) -> bytes:
    """A router solicitation built by os-ken (with a source link-layer option unless
    OPTIONS says otherwise)."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="33:33:00:00:00:02", src=MAC_VM, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src, dst="ff02::2", nxt=58, hop_limit=hop))
    sla = icmpv6.nd_option_sla(hw_src=MAC_VM) if options is None else None
    pkt.add_protocol(icmpv6.icmpv6(type_=133, code=code, data=icmpv6.nd_router_solicit(option=sla)))
    pkt.serialize()
    frame = bytes(pkt.data)
    if options:
        body = frame[54:58] + bytes(4) + options  # (type, code, checksum, reserved)
        msg = frames.icmp6(src, "ff02::2", 133, code, body[4:])
        ip6 = frames.ipv6(src, "ff02::2", 58, msg, hop_limit=hop)
        frame = frame[:14] + ip6
    return frame


def test_a_solicitation_is_answered_unicast_and_from_unspecified_to_all_nodes() -> None:
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    [frame] = ra.answer(v, v.networks["n"], rs(), S) or []
    eth, ip6, _, _ = parse(frame)
    assert (eth.dst, ip6.dst) == (MAC_VM, VM_LL)  # radvd's AdvRASolicitedUnicast
    assert frame == one(v, MAC_VM, VM_LL)
    [frame] = ra.answer(v, v.networks["n"], rs("::", options=b""), S) or []
    eth, ip6, _, _ = parse(frame)
    assert (eth.dst, ip6.dst) == ("33:33:00:00:00:01", "ff02::1")  # RFC 4861 §6.2.6


def test_what_is_no_solicitation() -> None:
    good = rs()
    assert ra.parse_solicitation(good) == ra.Solicitation(MAC_VM, VM_LL)
    bad_checksum = good[:56] + bytes([good[56] ^ 0xFF]) + good[57:]
    for frame in (
        rs(hop=64),  # not from the link (RFC 4861 §6.1.1)
        rs(code=1),
        bad_checksum,
        rs(options=bytes([1, 0, 0, 0, 0, 0, 0, 0])),  # an option of length 0
        rs(options=bytes([1, 2]) + bytes(6)),  # longer than the packet
        rs("::"),  # a source link-layer option from the unspecified address
        good[:60],  # truncated
        good[:12] + b"\x08\x00" + good[14:],  # not IPv6
        b"",
    ):
        assert ra.parse_solicitation(frame) is None, frame.hex()
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    assert ra.answer(v, v.networks["n"], bad_checksum, S) is None


def test_a_router_interface_s_link_local_address_gets_its_neighbour_advertisement() -> None:
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    ns = nd.build_solicitation(MAC_VM, VM_LL, R_LL)
    answer = nd.answer(v, v.networks["n"], v.ports["vm"], ns)
    assert answer is not None
    assert nd.parse_neighbour(answer) == nd.Neighbour(136, R_LL, MAC_R, R_LL)


def test_the_schedule_sends_at_once_then_jittered_between_min_and_max() -> None:
    draws: list[tuple[float, float]] = []

    def rng(lo: float, hi: float) -> float:
        draws.append((lo, hi))
        return hi

    sched = ra.Schedule(ra.RaSettings(min_interval=20, max_interval=40), rng)
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    sched.update(v, 0.0)
    sent = sched.due(v, 0.0)  # the port is new: at once
    assert [(port, parse(f)[1].dst) for port, f in sent] == [(OFPORT, "ff02::1")]
    assert sched.due(v, 15.9) == []
    times = [t for t in (16.0, 32.0, 72.0, 112.0) if sched.due(v, t)]
    assert times == [16.0, 32.0, 72.0, 112.0]  # 3 initial ones at most 16 s apart, then 40
    assert draws and all(d == (20, 40) for d in draws)
    sched.update(v, 113.0)  # nothing changed: the period goes on
    assert sched.due(v, 113.0) == [] and sched.next_due() == 152.0
    v.apply(
        "subnet", "s", sc.record_from_obj("subnet", sub("s", "2001:db8:1::/64", "dhcpv6-stateful"))
    )
    sched.update(v, 114.0)  # the advertisement changed: at once again
    [(_, frame)] = sched.due(v, 114.0)
    assert parse(frame)[2][2].res == 0b10
    sc.unbind(v, "vm")
    sched.update(v, 115.0)  # the port left the chassis: nothing more
    assert sched.next_due() is None and sched.due(v, 1000.0) == []


def pin(data: bytes, port_key: int = 1) -> PacketIn:
    return PacketIn(OFPORT, data, bytes([PUNT_ND_RA]), {"metadata": NET_KEY, "reg14": port_key})


def test_the_dispatcher_answers_the_port_and_counts_malformed_solicitations() -> None:
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    d = PacketInDispatcher(v)
    [out] = d.handle(pin(rs()), 0.0)
    assert out.ofport == OFPORT and out.data == one(v, MAC_VM, VM_LL)
    assert d.handle(pin(rs(hop=1)), 1.0) == []
    assert d.handle(pin(b"\x00" * 3), 2.0) == []
    assert d.stats["ra_rs_malformed"] == 2 and d.stats["ra_solicited"] == 1
    assert d.handle(pin(rs(), port_key=99), 3.0) == []  # no such port: nothing


def test_an_interface_that_stops_advertising_says_goodbye_once() -> None:
    """RFC 4861 §6.2.5: a final RA with router lifetime 0, so the VMs drop the default
    route now rather than when its lifetime runs out; then nothing more."""
    sched = ra.Schedule(S, lambda lo, hi: lo)
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"), second_router=True)
    sched.update(v, 0.0)
    assert len(sched.due(v, 0.0)) == 2  # one per router
    v.apply("router", "r2", None)
    sched.update(v, 1.0)
    sent = [(port, parse(f)[0].src, parse(f)[2][2].rou_l) for port, f in sched.due(v, 1.0)]
    assert sent == [(OFPORT, MAC_R2, 0), (OFPORT, MAC_R, 300)]  # (the network changed)
    assert sched.due(v, 2.0) == [] and sched.next_due() == 17.0  # (16 s after the change)
    assert [parse(f)[0].src for _, f in sched.due(v, 17.0)] == [MAC_R]


# One network's worth of moving parts: ports bound and unbound or moved between two
# networks, subnets changing mode or going, the router's interfaces and state changing.
OPS = st.sampled_from(
    ["bind", "unbind", "move", "mode", "drop_subnet", "router_down", "router_up",
     "no_interface", "interface"]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(OPS, st.sampled_from(["p0", "p1", "p2"]), st.sampled_from(
    ["slaac", "dhcpv6-stateful", "dhcpv6-stateless", None])), max_size=12))  # fmt: skip
def test_the_schedule_following_changes_equals_a_fresh_one(ops: list[Any]) -> None:
    """Following the view's changes network by network ends where a schedule built from
    the whole view starts: the same ports scheduled, the same advertisements."""
    rec = sc.record_from_obj
    v = sc.build_view(
        networks=[sc.network("n", key=1), sc.network("m", key=2)],
        subnets=[sub("s", "2001:db8:1::/64", "slaac"),
                 sc.subnet("t", "m", "2001:db8:2::/64", ipv6_ra_mode="slaac")],
        ports=[*(sc.port(p, "n", key=i + 1, mac=f"fa:16:3e:00:00:0{i}") for i, p in
                 enumerate(["p0", "p1", "p2"])),
               sc.router_port("rp", "n", key=9, mac=MAC_R, ip="2001:db8:1::1", router_id="r"),
               sc.router_port("rq", "m", key=9, mac=MAC_R2, ip="2001:db8:2::1", router_id="r")],
        routers=[sc.router("r", key=7)],
        local={"p0": 1},
    )  # fmt: skip
    sched = ra.Schedule(S)
    sched.update(v, 0.0)
    router = v.routers["r"]
    for t, (op, p, mode) in enumerate(ops, start=1):
        port = v.ports[p]
        if op == "bind":
            changes = [v.apply("binding", p, Binding(p, 10 + int(p[1])))]
        elif op == "unbind":
            changes = [v.apply("binding", p, None)]
        elif op == "move":
            other = "m" if port.network_id == "n" else "n"
            changes = [v.apply("port", p, dataclasses.replace(port, network_id=other))]
        elif op == "mode":
            changes = [v.apply("subnet", "s", rec("subnet", sub("s", "2001:db8:1::/64", mode)))]
        elif op == "drop_subnet":
            changes = [v.apply("subnet", "s", None)]
        elif op in ("router_down", "router_up"):
            up = op == "router_up"
            changes = [v.apply("router", "r", dataclasses.replace(router, admin_state_up=up))]
        elif op == "no_interface":
            itfs = tuple(i for i in router.interfaces if i.network_id != "n")
            changes = [v.apply("router", "r", dataclasses.replace(router, interfaces=itfs))]
        else:
            changes = [v.apply("router", "r", router)]
        sched.update(v, float(t), changes)
        sched.due(v, float(t))
    fresh = ra.Schedule(S)
    fresh.update(v, 0.0)
    assert sched._ads == fresh._ads
    assert {p: n for p, (n, _, _) in sched._next.items()} == {
        p: n for p, (n, _, _) in fresh._next.items()
    }


def test_an_administratively_down_port_gets_no_advertisement() -> None:
    v = view_of(sub("s", "2001:db8:1::/64", "slaac"))
    sched = ra.Schedule(S)
    sched.update(v, 0.0)
    assert sched.due(v, 0.0)  # up: advertised to
    down = dataclasses.replace(v.ports["vm"], admin_state_up=False)
    sched.update(v, 1.0, [v.apply("port", "vm", down)])
    assert sched.next_due() is None and sched.due(v, 1000.0) == []
    assert PacketInDispatcher(v).handle(pin(rs()), 0.0) == []
