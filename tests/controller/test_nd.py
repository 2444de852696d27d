"""IPv6 neighbour advertisements for known addresses: the NA bytes (parsed back with
os-ken, checksum verified independently) and the dispatcher path from the services
stage's PUNT_ND_NS punt."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet

from tests.apps import scenario as sc
from tests.southbound.conftest import VM, VmFactory, in_netns, ovs, vms
from wyvern.apps.punts import PUNT_ND_NS
from wyvern.controller import nd
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.ir import packet as pk
from wyvern.ir.render import render_flow
from wyvern.ir.simulator import Punt
from wyvern.model.view import LocalView
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.ofchannel import OfChannel, PacketIn
from wyvern.southbound.ovs import OvsInstance

__all__ = ["ovs", "vms"]  # fixtures, imported for pytest

MAC_A, MAC_B, MAC_R = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:f1"
MAC_REMOTE, MAC_VIP = "fa:16:3e:00:00:99", "fa:16:3e:00:00:64"
A6, B6, R6, REMOTE6, VIP6 = (
    "2001:db8::5",
    "2001:db8::6",
    "2001:db8::1",
    "2001:db8::8",
    "2001:db8::64",
)
LL_A = "fe80::f816:3eff:fe00:a"
OF_A, OF_B = 5, 6


def view() -> LocalView:
    return sc.build_view(
        networks=[sc.network("n1", key=100), sc.network("n2", key=200)],
        subnets=[
            sc.subnet("s6", "n1", "2001:db8::/64"),
            sc.subnet("s4", "n1", "10.0.0.0/24"),
            sc.subnet("t6", "n2", "2001:db8::/64"),
        ],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[A6, "10.0.0.5"]),
            sc.port(
                "b", "n1", key=2, mac=MAC_B, ips=[B6], allowed_address_pairs=[{"ip_address": VIP6}]
            ),
            sc.port("remote", "n1", key=3, mac=MAC_REMOTE, ips=["10.0.0.8", REMOTE6]),
            sc.port("vip", "n1", key=4, mac=MAC_VIP, ips=[VIP6]),
            sc.router_port("rp", "n1", key=9, mac=MAC_R, ip=R6, router_id="r1"),
            sc.port("x", "n2", key=1, mac=MAC_A, ips=[A6]),
        ],
        routers=[sc.router("r1", key=7)],
        local={"a": OF_A, "b": OF_B},
    )


def solicitation(
    target: str,
    *,
    src: str = A6,
    eth_src: str = MAC_A,
    hop_limit: int = 255,
    sll: bool = True,
) -> bytes:
    """An NS as a Linux VM sends it: to the target's solicited-node multicast address."""
    solicited = ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("ff02::1:ff00:0"))
        | (int(ipaddress.IPv6Address(target)) & 0xFFFFFF)
    )
    mcast_mac = "33:33:" + ":".join(f"{b:02x}" for b in solicited.packed[-4:])
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=mcast_mac, src=eth_src, ethertype=0x86DD))
    p.add_protocol(ipv6.ipv6(src=src, dst=str(solicited), nxt=58, hop_limit=hop_limit))
    option = icmpv6.nd_option_sla(hw_src=eth_src) if sll else None
    p.add_protocol(
        icmpv6.icmpv6(
            type_=icmpv6.ND_NEIGHBOR_SOLICIT,
            code=0,
            data=icmpv6.nd_neighbor(dst=target, option=option),
        )
    )
    p.serialize()
    return bytes(p.data)


def fields_of(punted: pk.Packet) -> dict[str, int]:
    """The registers of a simulator punt, as the channel delivers them in a packet-in."""
    regs = {f"reg{i}": punted[f"reg{i}"] for i in range(16)} | {"metadata": punted["metadata"]}
    return {k: v for k, v in regs.items() if v}


def punt_in(
    frame: bytes, in_port: int = OF_A, network_key: int = 100, port_key: int = 1
) -> PacketIn:
    p = pk.packet(network_key=network_key, src_port_key=port_key)
    return PacketIn(in_port=in_port, data=frame, userdata=bytes([PUNT_ND_NS]), fields=fields_of(p))


def icmpv6_checksum_ok(frame: bytes) -> bool:
    """RFC 4443 §2.3, computed here without os-ken: the one's complement sum over the
    pseudo-header and the ICMPv6 message is 0xffff."""
    ip = frame[14:54]
    (plen,) = struct.unpack("!H", ip[4:6])
    body = frame[54 : 54 + plen]
    data = ip[8:40] + struct.pack("!IxxxB", plen, 58) + body
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return bool(total == 0xFFFF)


def parse_na(frame: bytes) -> tuple[ethernet.ethernet, ipv6.ipv6, icmpv6.icmpv6]:
    pkt = packet.Packet(frame)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip6 = pkt.get_protocol(ipv6.ipv6)
    icmp6 = pkt.get_protocol(icmpv6.icmpv6)
    assert eth is not None and ip6 is not None and icmp6 is not None
    return eth, ip6, icmp6


def check_na(
    frame: bytes, *, owner_mac: str, target: str, dst: str, eth_dst: str, flags: int
) -> None:
    eth, ip6, icmp6 = parse_na(frame)
    assert (eth.src, eth.dst, eth.ethertype) == (owner_mac, eth_dst, 0x86DD)
    assert (ip6.version, ip6.src, ip6.dst) == (6, target, dst)
    assert (ip6.nxt, ip6.hop_limit) == (58, 255)
    assert ip6.payload_length == len(frame) - 54 == 32  # 24 + one 8-byte option
    assert (icmp6.type_, icmp6.code) == (icmpv6.ND_NEIGHBOR_ADVERT, 0)
    assert icmpv6_checksum_ok(frame)
    assert struct.unpack("!H", frame[56:58])[0] == icmp6.csum != 0
    na = icmp6.data
    assert isinstance(na, icmpv6.nd_neighbor)
    assert na.res == flags
    assert na.dst == target
    assert isinstance(na.option, icmpv6.nd_option_tla)
    assert na.option.hw_src == owner_mac and na.option.length == 1
    # the flags on the wire: R (bit 31), S (bit 30), O (bit 29), rest reserved zero
    assert struct.unpack("!I", frame[58:62])[0] == flags << 29


RTR, SOL, OVR = nd.NA_ROUTER, nd.NA_SOLICITED, nd.NA_OVERRIDE


def test_advertisement_bytes_for_a_vm_and_a_router_port() -> None:
    d = PacketInDispatcher(view())
    (out,) = d.handle(punt_in(solicitation(B6)), now=0.0)
    assert out.ofport == OF_A
    check_na(out.data, owner_mac=MAC_B, target=B6, dst=A6, eth_dst=MAC_A, flags=SOL | OVR)
    (out,) = d.handle(punt_in(solicitation(R6, src=LL_A)), now=0.0)
    check_na(out.data, owner_mac=MAC_R, target=R6, dst=LL_A, eth_dst=MAC_A, flags=RTR | SOL | OVR)
    # a remote port (no binding here) is answered for too
    (out,) = d.handle(punt_in(solicitation(REMOTE6, sll=False)), now=0.0)
    check_na(out.data, owner_mac=MAC_REMOTE, target=REMOTE6, dst=A6, eth_dst=MAC_A, flags=SOL | OVR)
    assert d.stats["nd_na"] == 3 and d.stats["nd-ns"] == 3


def test_dad_probe_is_answered_to_all_nodes() -> None:
    """RFC 4861 §7.2.4: to a solicitation from ::, the NA goes to all-nodes, S clear."""
    d = PacketInDispatcher(view())
    (out,) = d.handle(punt_in(solicitation(B6, src="::", sll=False)), now=0.0)
    check_na(out.data, owner_mac=MAC_B, target=B6, dst="ff02::1", eth_dst=MAC_A, flags=OVR)


def test_build_advertisement_is_pure_bytes() -> None:
    sol = nd.parse_solicitation(solicitation(B6))
    assert sol == nd.Solicitation(MAC_A, A6, B6)
    frame = nd.build_advertisement(sol, MAC_B, router=False)
    assert frame == nd.build_advertisement(sol, MAC_B, router=False)
    check_na(frame, owner_mac=MAC_B, target=B6, dst=A6, eth_dst=MAC_A, flags=SOL | OVR)


def test_not_answered() -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1000.0, burst=1000.0))
    for frame in (
        solicitation("2001:db8::77"),  # unknown
        solicitation(A6),  # its own address (DAD)
        solicitation(VIP6),  # b may hold the VIP: b answers
        solicitation(B6, hop_limit=64),  # not from the link (RFC 4861 §7.1.1)
        solicitation("ff02::1"),  # multicast target
        b"\x00" * 20,  # garbage
        solicitation(B6)[:60],  # truncated
    ):
        assert d.handle(punt_in(frame), now=0.0) == [], frame.hex()
    # the owner must be on the solicitor's network: x (n2) asks for n1's remote port
    assert d.handle(punt_in(solicitation(REMOTE6), network_key=200, port_key=1), 0.0) == []
    # unknown solicitor port, or one not bound here (remote port key 3)
    assert d.handle(punt_in(solicitation(B6), port_key=42), now=0.0) == []
    assert d.handle(punt_in(solicitation(B6, eth_src=MAC_REMOTE), port_key=3), now=0.0) == []
    assert d.stats["nd_na"] == 0


def test_vip_owner_is_answered_without_the_pair() -> None:
    v = view()
    b = sc.port("b", "n1", key=2, mac=MAC_B, ips=[("s6", B6)])
    v.apply("port", "b", sc.record_from_obj("port", b))
    (out,) = PacketInDispatcher(v).handle(punt_in(solicitation(VIP6)), now=0.0)
    check_na(out.data, owner_mac=MAC_VIP, target=VIP6, dst=A6, eth_dst=MAC_A, flags=SOL | OVR)


def test_rate_limited_per_port() -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1.0, burst=2.0))
    frame = solicitation(B6)
    answered = [len(d.handle(punt_in(frame), now=0.0)) for _ in range(5)]
    assert answered == [1, 1, 0, 0, 0]
    assert d.stats["rate_limited"] == 3
    assert len(d.handle(punt_in(frame), now=1.0)) == 1  # refilled


def test_simulated_punt_is_answered() -> None:
    """The services stage's punt (registers as at the punt) drives the handler."""
    v = view()
    s = sc.Scenario(v, apps=sc.l2_apps())
    for target, owner in ((B6, MAC_B), (R6, MAC_R), (REMOTE6, MAC_REMOTE)):
        trace = s.run(pk.nd_solicit(OF_A, MAC_A, A6, target))
        (punt,) = trace.punts
        assert isinstance(punt, Punt) and punt.userdata == bytes([PUNT_ND_NS])
        pin = PacketIn(
            in_port=OF_A,
            data=solicitation(target),
            userdata=punt.userdata,
            fields=fields_of(punt.packet),
        )
        (out,) = PacketInDispatcher(v).handle(pin, now=0.0)
        assert out.ofport == OF_A
        eth, ip6, icmp6 = parse_na(out.data)
        assert eth.src == owner and icmp6.data.option.hw_src == owner
        assert ip6.src == target and ip6.dst == A6


# ---------------------------------------------------------------- real OVS

GHOST_MAC, ROUTER_MAC = "02:00:00:00:00:99", "fa:16:3e:00:00:f9"
VM6, GHOST6, ROUTER6 = "2001:db8::a", "2001:db8::99", "2001:db8::1"


async def _in_netns(netns: str, *cmd: str, timeout: float = 15.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, *cmd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return out.decode(errors="replace")


def neighbour(vm: VM, ip: str) -> str:
    return in_netns(vm.netns, "ip", "-6", "neigh", "show", ip, "dev", "eth0").stdout


@pytest.mark.system
def test_vm_resolves_ipv6_neighbours_through_our_advertisements(
    ovs: OvsInstance,
    vms: VmFactory,
) -> None:
    """A VM pings the IPv6 address of a port that exists nowhere but in the view (and of a
    router interface): nobody could answer its solicitation but the ND responder, so a
    neighbour entry with the right MAC (and the router flag) proves our advertisement."""
    a = vms(10)
    for cmd in (
        ("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"),
        ("ip", "-6", "addr", "add", f"{VM6}/64", "dev", "eth0", "nodad"),
    ):
        r = in_netns(a.netns, *cmd)
        assert r.returncode == 0, r.stderr
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s4", "n1", "10.0.0.0/24"), sc.subnet("s6", "n1", "2001:db8::/64")],
        ports=[
            sc.port(a.vif.port_id, "n1", key=1, mac=a.mac, ips=[a.ip, VM6]),
            sc.port("ghost", "n1", key=9, mac=GHOST_MAC, ips=[GHOST6]),
            sc.router_port("rp", "n1", key=10, mac=ROUTER_MAC, ip=ROUTER6, router_id="r1"),
        ],
        routers=[sc.router("r1", key=7)],
        local={a.vif.port_id: a.ofport},
    )
    flows = sc.with_meters(ovs, sc.all_flows(v, sc.l2_apps()))
    FlowInstaller(ovs).sync(render_flow(f) for f in flows)
    dispatcher = PacketInDispatcher(v)

    async def scenario() -> list[str]:
        async with OfChannel(ovs.mgmt_path("br-int")) as channel:
            await channel.wait_connected()
            service = asyncio.create_task(dispatcher.run(channel))
            try:
                return list(
                    await asyncio.gather(
                        *(
                            _in_netns(a.netns, "ping", "-6", "-c", "1", "-W", "1", ip)
                            for ip in (GHOST6, ROUTER6)
                        )
                    )
                )
            finally:
                service.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service

    pings = asyncio.run(scenario())
    ghost = neighbour(a, GHOST6)
    assert f"lladdr {GHOST_MAC}" in ghost and ("REACHABLE" in ghost or "STALE" in ghost), (
        ghost,
        pings,
    )
    assert "router" not in ghost
    router = neighbour(a, ROUTER6)
    assert f"lladdr {ROUTER_MAC} router" in router, (router, pings)
    assert dispatcher.stats["nd_na"] >= 2


# -- the byte codec against os-ken, the packet library it replaced ---------------------------
def osken_advertisement(sol: nd.Solicitation, owner_mac: str, router: bool) -> bytes:
    """build_advertisement as it was written with os-ken (the oracle)."""
    unspecified = ipaddress.IPv6Address(sol.ipv6_src).is_unspecified
    flags = nd.NA_OVERRIDE | (nd.NA_ROUTER if router else 0) | (0 if unspecified else 0b010)
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=sol.eth_src, src=owner_mac, ethertype=0x86DD))
    reply.add_protocol(
        ipv6.ipv6(
            src=sol.target, dst="ff02::1" if unspecified else sol.ipv6_src, nxt=58, hop_limit=255
        )
    )
    reply.add_protocol(
        icmpv6.icmpv6(
            type_=icmpv6.ND_NEIGHBOR_ADVERT,
            code=0,
            data=icmpv6.nd_neighbor(
                res=flags, dst=sol.target, option=icmpv6.nd_option_tla(hw_src=owner_mac)
            ),
        )
    )
    reply.serialize()
    return bytes(reply.data)


def osken_solicitation(frame: bytes) -> nd.Solicitation | None:
    """parse_solicitation as it was written with os-ken (the oracle)."""
    pkt = packet.Packet(frame)
    eth, ip6 = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6)
    icmp6 = pkt.get_protocol(icmpv6.icmpv6)
    if eth is None or ip6 is None or icmp6 is None:
        return None
    if icmp6.type_ != icmpv6.ND_NEIGHBOR_SOLICIT or icmp6.code != 0:
        return None
    if ip6.hop_limit != 255 or not isinstance(icmp6.data, icmpv6.nd_neighbor):
        return None
    target = ipaddress.IPv6Address(icmp6.data.dst)
    if target.is_multicast or target.is_unspecified:
        return None
    return nd.Solicitation(str(eth.src), str(ip6.src), str(target))


ipv6s = st.ip_addresses(v=6).map(str)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@given(ipv6s, ipv6s, macs, st.sampled_from([255, 64, 1]), st.booleans(), macs, st.booleans())
def test_solicitations_and_advertisements_match_os_ken(
    target: str, src: str, eth_src: str, hop_limit: int, sll: bool, owner: str, router: bool
) -> None:
    frame = solicitation(target, src=src, eth_src=eth_src, hop_limit=hop_limit, sll=sll)

    def same(s: nd.Solicitation | None) -> tuple[str, object, object] | None:
        # (os-ken spells an IPv4-mapped address ::ffff:0.0.0.0, ipaddress ::ffff:0:0)
        if s is None:
            return None
        return s.eth_src, ipaddress.ip_address(s.ipv6_src), ipaddress.ip_address(s.target)

    ours = nd.parse_solicitation(frame)
    assert same(ours) == same(osken_solicitation(frame))
    bad_target = ipaddress.ip_address(target).is_multicast or target == "::"
    assert (ours is None) == (hop_limit != 255 or bad_target)
    sol = nd.Solicitation(eth_src, src, target)
    assert nd.build_advertisement(sol, owner, router) == osken_advertisement(sol, owner, router)


def test_only_neighbour_solicitations_parse() -> None:
    good = solicitation(B6)
    assert nd.parse_solicitation(good) == nd.Solicitation(MAC_A, A6, B6)
    assert nd.parse_solicitation(good[:12] + b"\x08\x00" + good[14:]) is None  # IPv4 type
    assert nd.parse_solicitation(good[:20] + b"\x11" + good[21:]) is None  # next header UDP
    assert nd.parse_solicitation(good[:54] + b"\x88" + good[55:]) is None  # NA, not NS
    assert nd.parse_solicitation(good[:70]) is None  # cut inside the target


def test_the_metadata_service_address_is_answered_with_its_mac() -> None:
    """fe80::a9fe:a9fe (punted by the metadata app) is the metadata port's, for any local
    port; a link-local address nobody holds is not answered."""
    from wyvern.apps.port_security import eui64_link_local
    from wyvern.ir.metadata import METADATA_MAC, SERVICE_V6

    d = PacketInDispatcher(view())
    assert d.handle(punt_in(solicitation("fe80::a9fe:a9fd", src=LL_A)), now=0.0) == []
    for mac, port_key, ofport in ((MAC_A, 1, OF_A), (MAC_B, 2, OF_B)):
        ll = str(eui64_link_local(mac))
        frame = solicitation(SERVICE_V6, src=ll, eth_src=mac)
        (out,) = d.handle(punt_in(frame, in_port=ofport, port_key=port_key), now=0.0)
        assert out.ofport == ofport
        check_na(out.data, owner_mac=METADATA_MAC, target=SERVICE_V6, dst=ll, eth_dst=mac,
                 flags=SOL | OVR)  # fmt: skip
