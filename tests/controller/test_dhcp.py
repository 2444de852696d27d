"""DHCPv4 server logic: every message type and option, decoded as a client would."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import dhcp as oskdhcp
from os_ken.lib.packet import ethernet, ipv4, packet, udp

from wyvern.apps import punts
from wyvern.controller import dhcp
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.model.view import Binding, LocalView, Network, Port, Subnet
from wyvern.southbound.ofchannel import PacketIn

CLIENT_MAC = "fa:16:3e:00:00:05"
NET_ID, SUBNET_ID, PORT_ID = "net-1", "sub-1", "port-1"


def network(**kw: Any) -> Network:
    obj = {"id": NET_ID, "_key": 1001, "mtu": 1442, **kw}
    return Network.from_obj(obj)


def subnet(**kw: Any) -> Subnet:
    obj = {
        "id": SUBNET_ID,
        "network_id": NET_ID,
        "cidr": "10.0.0.0/24",
        "ip_version": 4,
        "gateway_ip": "10.0.0.1",
        "enable_dhcp": True,
        "dns_nameservers": ["8.8.8.8", "1.1.1.1"],
        "host_routes": [],
        **kw,
    }
    return Subnet.from_obj(obj)


def port(**kw: Any) -> Port:
    obj = {
        "id": PORT_ID,
        "network_id": NET_ID,
        "_key": 7,
        "mac_address": CLIENT_MAC,
        "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": "10.0.0.5"}],
        "name": "",
        **kw,
    }
    return Port.from_obj(obj)


def client_frame(
    mtype: int,
    *,
    mac: str = CLIENT_MAC,
    requested: str | None = None,
    server_id: str | None = None,
    ciaddr: str = "0.0.0.0",
    flags: int = 0,
    xid: int = 0x1234ABCD,
    src_ip: str = "0.0.0.0",
    dst_ip: str = "255.255.255.255",
) -> bytes:
    opts = [oskdhcp.option(tag=53, value=bytes([mtype]))]
    if requested:
        opts.append(oskdhcp.option(tag=50, value=ipaddress.IPv4Address(requested).packed))
    if server_id:
        opts.append(oskdhcp.option(tag=54, value=ipaddress.IPv4Address(server_id).packed))
    opts.append(oskdhcp.option(tag=55, value=bytes([1, 3, 6, 15, 26, 121])))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=mac, ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=17))
    pkt.add_protocol(udp.udp(src_port=68, dst_port=67))
    pkt.add_protocol(
        oskdhcp.dhcp(
            op=oskdhcp.DHCP_BOOT_REQUEST,
            chaddr=mac,
            xid=xid,
            flags=flags,
            ciaddr=ciaddr,
            options=oskdhcp.options(option_list=opts),
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def options_of(msg: oskdhcp.dhcp) -> dict[int, bytes]:
    """The options of a parsed os-ken dhcp message as {code: value}."""
    out: dict[int, bytes] = {}
    if msg.options is None:
        return out
    for opt in msg.options.option_list:
        if isinstance(opt, oskdhcp.option):
            # RFC 3396: a repeated option is concatenated.
            out[opt.tag] = out.get(opt.tag, b"") + bytes(opt.value)
    return out


class Decoded:
    """A reply frame as the client sees it."""

    def __init__(self, frame: bytes) -> None:
        pkt = packet.Packet(frame)
        self.eth = pkt.get_protocol(ethernet.ethernet)
        self.ip = pkt.get_protocol(ipv4.ipv4)
        self.udp = pkt.get_protocol(udp.udp)
        self.msg = pkt.get_protocol(oskdhcp.dhcp)
        assert self.eth and self.ip and self.udp and self.msg, "reply must parse as DHCP"
        self.opts = options_of(self.msg)
        self.frame = frame

    @property
    def mtype(self) -> int:
        return self.opts[53][0]

    def ips(self, code: int) -> list[str]:
        v = self.opts[code]
        return [str(ipaddress.IPv4Address(v[i : i + 4])) for i in range(0, len(v), 4)]

    def u32(self, code: int) -> int:
        return int(struct.unpack("!I", self.opts[code])[0])


def answer(frame: bytes, p: Port | None = None, **kw: Any) -> Decoded | None:
    reply = dhcp.handle(
        frame, p or port(), kw.pop("net", network()), kw.pop("subnets", [subnet()]), **kw
    )
    return None if reply is None else Decoded(reply.frame)


def test_discover_gets_offer_with_all_options() -> None:
    r = answer(client_frame(dhcp.DISCOVER))
    assert r is not None
    assert r.mtype == dhcp.OFFER
    assert r.msg.op == oskdhcp.DHCP_BOOT_REPLY
    assert r.msg.xid == 0x1234ABCD
    assert r.msg.yiaddr == "10.0.0.5"
    assert r.msg.chaddr == CLIENT_MAC
    assert r.ips(1) == ["255.255.255.0"]
    assert r.ips(3) == ["10.0.0.1"]
    assert r.ips(6) == ["8.8.8.8", "1.1.1.1"]
    assert r.ips(28) == ["10.0.0.255"]
    assert struct.unpack("!H", r.opts[26])[0] == 1442
    assert r.u32(51) == 86400
    assert r.u32(58) == 43200
    assert r.u32(59) == 75600
    assert r.ips(54) == ["10.0.0.1"]
    assert r.opts[12] == b"host-10-0-0-5"
    assert r.opts[15] == b"openstacklocal"
    assert 121 not in r.opts  # no host routes: option 3 alone
    # Unicast to the client (no broadcast flag), from the server, on UDP 67 -> 68.
    assert r.eth.dst == CLIENT_MAC
    assert r.eth.src == dhcp.service_mac(network())
    assert (r.ip.src, r.ip.dst) == ("10.0.0.1", "10.0.0.5")
    assert (r.udp.src_port, r.udp.dst_port) == (67, 68)
    assert len(r.frame) >= 14 + 20 + 8 + dhcp.MIN_BOOTP_LEN


def test_checksums_are_valid() -> None:
    r = answer(client_frame(dhcp.DISCOVER))
    assert r is not None
    # Re-serialising with the parsed checksums zeroed must give the same checksums.
    raw = r.frame
    ip_hdr = raw[14:34]
    assert _csum(ip_hdr) == 0
    udp_part = raw[34:]
    pseudo = ip_hdr[12:20] + struct.pack("!BBH", 0, 17, len(udp_part))
    assert _csum(pseudo + udp_part) == 0


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def test_broadcast_flag_means_broadcast_reply() -> None:
    r = answer(client_frame(dhcp.DISCOVER, flags=0x8000))
    assert r is not None
    assert r.eth.dst == "ff:ff:ff:ff:ff:ff"
    assert r.ip.dst == "255.255.255.255"
    assert r.msg.flags == 0x8000


def test_request_for_own_address_gets_ack() -> None:
    r = answer(client_frame(dhcp.REQUEST, requested="10.0.0.5", server_id="10.0.0.1"))
    assert r is not None
    assert r.mtype == dhcp.ACK
    assert r.msg.yiaddr == "10.0.0.5"
    assert r.u32(51) == 86400


def test_renewal_is_unicast_to_ciaddr() -> None:
    frame = client_frame(dhcp.REQUEST, ciaddr="10.0.0.5", src_ip="10.0.0.5", dst_ip="10.0.0.1")
    r = answer(frame)
    assert r is not None
    assert r.mtype == dhcp.ACK
    assert (r.eth.dst, r.ip.dst) == (CLIENT_MAC, "10.0.0.5")


def test_request_for_another_address_gets_nak() -> None:
    r = answer(client_frame(dhcp.REQUEST, requested="10.0.0.99"))
    assert r is not None
    assert r.mtype == dhcp.NAK
    assert r.msg.yiaddr == "0.0.0.0"
    assert r.ips(54) == ["10.0.0.1"]
    assert 51 not in r.opts and 3 not in r.opts
    assert (r.eth.dst, r.ip.dst) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")


def test_renewal_with_stale_address_gets_nak() -> None:
    r = answer(client_frame(dhcp.REQUEST, ciaddr="10.0.0.77"))
    assert r is not None and r.mtype == dhcp.NAK


def test_request_to_another_server_is_ignored() -> None:
    assert answer(client_frame(dhcp.REQUEST, requested="10.0.0.5", server_id="10.9.9.9")) is None


@pytest.mark.parametrize("mtype", [dhcp.RELEASE, dhcp.DECLINE])
def test_release_and_decline_get_no_reply(mtype: int) -> None:
    assert answer(client_frame(mtype, ciaddr="10.0.0.5")) is None


def test_inform_gets_ack_without_lease() -> None:
    frame = client_frame(dhcp.INFORM, ciaddr="10.0.0.5", src_ip="10.0.0.5")
    r = answer(frame)
    assert r is not None
    assert r.mtype == dhcp.ACK
    assert r.msg.yiaddr == "0.0.0.0"
    assert r.msg.ciaddr == "10.0.0.5"
    assert 51 not in r.opts and 58 not in r.opts and 59 not in r.opts
    assert r.ips(3) == ["10.0.0.1"]
    assert (r.eth.dst, r.ip.dst) == (CLIENT_MAC, "10.0.0.5")


def test_other_mac_is_ignored() -> None:
    assert answer(client_frame(dhcp.DISCOVER, mac="fa:16:3e:99:99:99")) is None


def test_pad_options_are_skipped() -> None:
    frame = client_frame(dhcp.DISCOVER)
    # Insert two PAD bytes right after the magic cookie (before option 53).
    at = 14 + 20 + 8 + 240
    padded = bytearray(frame[:at] + b"\0\0" + frame[at:])
    struct.pack_into("!H", padded, 14 + 2, len(padded) - 14)  # IPv4 total length
    struct.pack_into("!H", padded, 14 + 20 + 4, len(padded) - 34)  # UDP length
    struct.pack_into("!H", padded, 14 + 10, 0)
    struct.pack_into("!H", padded, 14 + 10, _csum(bytes(padded[14:34])))
    struct.pack_into("!H", padded, 14 + 20 + 6, 0)  # no UDP checksum
    r = answer(bytes(padded))
    assert r is not None and r.mtype == dhcp.OFFER


def test_truncated_options_are_ignored() -> None:
    frame = client_frame(dhcp.DISCOVER)
    assert dhcp.parse_options(frame[42:])[53] == bytes([dhcp.DISCOVER])
    with pytest.raises(dhcp.DhcpError):
        dhcp.parse_options(frame[42 : 42 + 240] + b"\x35\x05\x01")
    with pytest.raises(dhcp.DhcpError):
        dhcp.parse_options(b"\0" * 300)


def test_not_dhcp_is_ignored() -> None:
    assert answer(b"\x00" * 60) is None
    # A BOOTREPLY from a rogue server behind the port is not answered either.
    frame = bytearray(client_frame(dhcp.DISCOVER))
    frame[42] = oskdhcp.DHCP_BOOT_REPLY
    assert answer(bytes(frame)) is None


def test_no_dhcp_subnet_no_reply() -> None:
    assert answer(client_frame(dhcp.DISCOVER), subnets=[subnet(enable_dhcp=False)]) is None
    assert answer(client_frame(dhcp.DISCOVER), p=port(fixed_ips=[])) is None


def test_no_gateway_omits_router_and_derives_server_id() -> None:
    r = answer(client_frame(dhcp.DISCOVER), subnets=[subnet(gateway_ip=None)])
    assert r is not None
    assert 3 not in r.opts
    assert r.ips(54) == ["10.0.0.254"]
    assert r.ip.src == "10.0.0.254"
    # ... and never the client's own address.
    p = port(fixed_ips=[{"subnet_id": SUBNET_ID, "ip_address": "10.0.0.254"}])
    r = answer(client_frame(dhcp.DISCOVER), p=p, subnets=[subnet(gateway_ip=None)])
    assert r is not None and r.ips(54) == ["10.0.0.253"]


def test_host_routes_become_option_121_with_default_route() -> None:
    routes = [
        {"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},
        {"destination": "172.16.5.0/25", "nexthop": "10.0.0.253"},
        {"destination": "10.10.10.10/32", "nexthop": "10.0.0.252"},
    ]
    r = answer(client_frame(dhcp.DISCOVER), subnets=[subnet(host_routes=routes)])
    assert r is not None
    # RFC 3442 wire format, byte for byte.
    expected = (
        [16, 192, 168, 10, 0, 0, 254],  # /16: 2 significant octets, then the router
        [25, 172, 16, 5, 0, 10, 0, 0, 253],  # /25: 4 octets
        [32, 10, 10, 10, 10, 10, 0, 0, 252],
        [0, 10, 0, 0, 1],  # the default route: no destination octets
    )
    assert r.opts[121] == b"".join(bytes(route) for route in expected)
    assert dhcp.decode_classless_routes(r.opts[121]) == [
        ("192.168.0.0/16", "10.0.0.254"),
        ("172.16.5.0/25", "10.0.0.253"),
        ("10.10.10.10/32", "10.0.0.252"),
        ("0.0.0.0/0", "10.0.0.1"),
    ]


def test_hostname_is_the_dns_assignment_hostname() -> None:
    """Option 12 is the port's dns_name (its first label for an FQDN) once the dns_domain
    setting is not Neutron's default; else, or without a dns_name, host-<ip> (as
    Neutron's dns_assignment: the port name plays no part)."""
    org = dhcp.DhcpSettings(domain_name="example.org.")
    r = answer(client_frame(dhcp.DISCOVER), p=port(dns_name="web-1"), settings=org)
    assert r is not None and r.opts[12] == b"web-1"
    r = answer(client_frame(dhcp.DISCOVER), p=port(dns_name="db.example.org."), settings=org)
    assert r is not None and r.opts[12] == b"db"
    r = answer(client_frame(dhcp.DISCOVER), p=port(name="web-1"), settings=org)
    assert r is not None and r.opts[12] == b"host-10-0-0-5"
    r = answer(client_frame(dhcp.DISCOVER), p=port(dns_name="web-1"))  # default domain
    assert r is not None and r.opts[12] == b"host-10-0-0-5"


def test_domain_is_the_networks_dns_domain_else_the_setting() -> None:
    org = dhcp.DhcpSettings(domain_name="example.org")
    r = answer(client_frame(dhcp.DISCOVER), net=network(dns_domain="lab.example.net."))
    assert r is not None and r.opts[15] == b"lab.example.net"
    r = answer(client_frame(dhcp.DISCOVER), net=network(dns_domain=""), settings=org)
    assert r is not None and r.opts[15] == b"example.org"


def test_settings_lease_time_and_domain() -> None:
    settings = dhcp.DhcpSettings(lease_time=600, domain_name="example.org")
    r = answer(client_frame(dhcp.DISCOVER), settings=settings)
    assert r is not None
    assert (r.u32(51), r.u32(58), r.u32(59)) == (600, 300, 525)
    assert r.opts[15] == b"example.org"


def test_server_mac_is_used() -> None:
    r = answer(client_frame(dhcp.DISCOVER), server_mac="fa:16:3e:aa:bb:cc")
    assert r is not None and r.eth.src == "fa:16:3e:aa:bb:cc"


def test_ipv6_only_dns_servers_are_skipped() -> None:
    r = answer(client_frame(dhcp.DISCOVER), subnets=[subnet(dns_nameservers=["2001:db8::1"])])
    assert r is not None and 6 not in r.opts


def _opts(*pairs: tuple[str, str], version: int = 4) -> list[dict[str, Any]]:
    return [{"opt_name": n, "opt_value": v, "ip_version": version} for n, v in pairs]


def test_extra_dhcp_opts() -> None:
    extra = _opts(
        ("router", "10.0.0.254"),
        ("dns-server", "9.9.9.9,149.112.112.112"),
        ("mtu", "9000"),
        ("tftp-server", "10.0.0.50"),
        ("bootfile-name", "pxelinux.0"),
        ("server-ip-address", "10.0.0.51"),
        ("lease-time", "3600"),
        ("domain-search", "a.example,b.example"),
        ("150", "10.0.0.60"),
        ("option:252", "http://wpad/wpad.dat"),
        ("ntp-server", "10.0.0.70"),
    ) + _opts(("dns-server", "2001:db8::53"), version=6)
    r = answer(client_frame(dhcp.DISCOVER), p=port(extra_dhcp_opts=extra))
    assert r is not None
    assert r.ips(3) == ["10.0.0.254"]
    assert r.ips(6) == ["9.9.9.9", "149.112.112.112"]
    assert struct.unpack("!H", r.opts[26])[0] == 9000
    assert r.opts[66] == b"10.0.0.50"
    assert r.opts[67] == b"pxelinux.0"
    assert r.msg.siaddr == "10.0.0.51"
    assert 255 not in r.opts
    assert r.u32(51) == 3600
    assert r.opts[119] == b"\x01a\x07example\x00\x01b\x07example\x00"
    assert r.ips(150) == ["10.0.0.60"]
    assert r.opts[252] == b"http://wpad/wpad.dat"
    assert r.ips(42) == ["10.0.0.70"]
    assert r.ips(54) == ["10.0.0.1"]  # the server stays the gateway


def test_extra_classless_routes_replace_host_routes() -> None:
    extra = _opts(("classless-static-route", "{169.254.169.254/32,10.0.0.2, 0.0.0.0/0,10.0.0.1}"))
    routes = [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    r = answer(
        client_frame(dhcp.DISCOVER),
        p=port(extra_dhcp_opts=extra),
        subnets=[subnet(host_routes=routes)],
    )
    assert r is not None
    assert dhcp.decode_classless_routes(r.opts[121]) == [
        ("169.254.169.254/32", "10.0.0.2"),
        ("0.0.0.0/0", "10.0.0.1"),
    ]


def test_extra_router_is_the_121_default_route() -> None:
    extra = _opts(("router", "10.0.0.254"))
    routes = [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.253"}]
    r = answer(
        client_frame(dhcp.DISCOVER),
        p=port(extra_dhcp_opts=extra),
        subnets=[subnet(host_routes=routes)],
    )
    assert r is not None
    assert ("0.0.0.0/0", "10.0.0.254") in dhcp.decode_classless_routes(r.opts[121])


def test_unknown_and_invalid_extra_opts_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    extra = _opts(("no-such-option", "1"), ("mtu", "huge"), ("router", "not-an-ip"))
    r = answer(client_frame(dhcp.DISCOVER), p=port(extra_dhcp_opts=extra))
    assert r is not None
    assert r.ips(3) == ["10.0.0.1"]
    assert struct.unpack("!H", r.opts[26])[0] == 1442
    assert "no-such-option" in caplog.text


def test_option_value_encodings() -> None:
    assert dhcp.encode_option_value(dhcp.U8, "true") == b"\x01"
    assert dhcp.encode_option_value(dhcp.U8, "false") == b"\x00"
    assert dhcp.encode_option_value(dhcp.I32, "-3600") == struct.pack("!i", -3600)
    assert dhcp.encode_classless_routes([("0.0.0.0/0", "10.0.0.1")]) == bytes([0, 10, 0, 0, 1])
    assert dhcp.encode_classless_routes([("10.0.0.0/8", "1.2.3.4")]) == bytes([8, 10, 1, 2, 3, 4])


# -- dispatcher + rate limiter ---------------------------------------------------------------
def local_view(ofport: int = 3) -> LocalView:
    view = LocalView(chassis_name="c1")
    view.apply("network", NET_ID, network())
    view.apply("subnet", SUBNET_ID, subnet())
    view.apply("port", PORT_ID, port())
    view.apply("binding", PORT_ID, Binding(PORT_ID, ofport))
    return view


def pin(frame: bytes, *, net_key: int = 1001, port_key: int = 7, in_port: int = 3) -> PacketIn:
    return PacketIn(
        in_port=in_port,
        data=frame,
        userdata=bytes([punts.PUNT_DHCP4]),
        fields={"in_port": in_port, "reg14": port_key, "metadata": net_key},
    )


def test_dispatcher_answers_dhcp_to_the_bound_ofport() -> None:
    d = PacketInDispatcher(local_view(ofport=3))
    outs = d.handle(pin(client_frame(dhcp.DISCOVER)), now=0.0)
    assert len(outs) == 1 and outs[0].ofport == 3
    r = Decoded(outs[0].data)
    assert r.mtype == dhcp.OFFER and r.msg.yiaddr == "10.0.0.5"


def add_router_interface(view: Any) -> None:
    """A router interface on the subnet's gateway address 10.0.0.1 (port "rp")."""
    router_port = port(
        id="rp",
        _key=1,
        mac_address="fa:16:3e:11:22:33",
        device_owner="network:router_interface",
        fixed_ips=[{"subnet_id": SUBNET_ID, "ip_address": "10.0.0.1"}],
    )
    view.apply("port", "rp", router_port)


def test_dispatcher_uses_router_interface_mac() -> None:
    view = local_view()
    add_router_interface(view)
    outs = PacketInDispatcher(view).handle(pin(client_frame(dhcp.DISCOVER)), now=0.0)
    assert Decoded(outs[0].data).eth.src == "fa:16:3e:11:22:33"


def test_dispatcher_drops_unknown_port_network_punt_and_remote_port() -> None:
    view = local_view()
    d = PacketInDispatcher(view)
    frame = client_frame(dhcp.DISCOVER)
    assert d.handle(pin(frame, port_key=99), 0.0) == []
    assert d.handle(pin(frame, net_key=5), 0.0) == []
    other = PacketIn(in_port=3, data=frame, userdata=b"\x7f")
    assert d.handle(other, 0.0) == []
    assert d.handle(PacketIn(in_port=3, data=frame), 0.0) == []
    view.apply("binding", PORT_ID, None)
    assert d.handle(pin(frame), 0.0) == []
    assert d.stats["unknown"] == 2


def test_dispatcher_custom_handler() -> None:
    d = PacketInDispatcher(local_view())
    seen: list[bytes] = []

    def handler(p: PacketIn, now: float) -> list[Any]:
        seen.append(p.userdata)
        return []

    d.register(punts.PUNT_ICMP4_ERROR, handler)
    d.handle(PacketIn(in_port=3, data=b"x", userdata=b"\x03\x01"), 0.0)
    assert seen == [b"\x03\x01"]


def test_rate_limit_per_port() -> None:
    d = PacketInDispatcher(local_view(), limiter=TokenBucket(rate=20, burst=40))
    frame = client_frame(dhcp.DISCOVER)
    answered = sum(len(d.handle(pin(frame), now=0.0)) for _ in range(100))
    assert answered == 40  # the burst, then nothing at the same instant
    assert d.stats["rate_limited"] == 60
    # Another port is not affected by the flood.
    view2 = d.view
    view2.apply(
        "port",
        "p2",
        port(
            id="p2",
            _key=8,
            mac_address="fa:16:3e:00:00:08",
            fixed_ips=[{"subnet_id": SUBNET_ID, "ip_address": "10.0.0.8"}],
        ),
    )
    view2.apply("binding", "p2", Binding("p2", 4))
    f2 = client_frame(dhcp.DISCOVER, mac="fa:16:3e:00:00:08")
    assert len(d.handle(pin(f2, port_key=8, in_port=4), now=0.0)) == 1
    # Half a second later: 10 more tokens for the flooding port.
    answered = sum(len(d.handle(pin(frame), now=0.5)) for _ in range(100))
    assert answered == 10


def test_token_bucket() -> None:
    tb = TokenBucket(rate=2, burst=3, max_keys=2)
    assert [tb.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert tb.allow("a", 0.49) is False
    assert tb.allow("a", 0.5) is True
    assert tb.allow("a", 100.0) is True  # refills, capped at the burst
    assert [tb.allow("a", 100.0) for _ in range(3)] == [True, True, False]
    # Full buckets are forgotten when the table is full.
    tb.allow("b", 200.0)
    tb.allow("c", 200.0)
    assert len(tb) <= 2
    tb.forget("c")
    assert tb.allow("c", 200.0) is True


def test_packet_in_register_decoding() -> None:
    p = PacketIn(in_port=1, data=b"", fields={"reg14": 7, "metadata": (0xAB << 24) | 1001})
    assert p.src_port_key == 7
    assert p.network_key == 1001  # only metadata[0..23]
    assert p.register("dst_port_key") == 0
    assert replace(p, userdata=b"\x01").punt == 1


# -- the byte codec against os-ken, the packet library it replaced ---------------------------
def osken_reply(req: dhcp.DhcpRequest, reply_type: int, opts: dict[int, bytes], **kw: str) -> bytes:
    """build_reply as it was written with os-ken (the oracle)."""
    if reply_type != dhcp.NAK and kw["ciaddr"] != "0.0.0.0":
        eth_dst, ip_dst = req.chaddr, kw["ciaddr"]
    elif reply_type == dhcp.NAK or req.flags & dhcp.BROADCAST_FLAG:
        eth_dst, ip_dst = dhcp.BROADCAST_MAC, "255.255.255.255"
    else:
        eth_dst, ip_dst = req.chaddr, kw["yiaddr"]
    option_list: list[oskdhcp.option | bytes] = [oskdhcp.option(tag=53, value=opts[53])]
    option_list += [
        oskdhcp.option(tag=code, value=value)
        for code, value in sorted(opts.items())
        if code != 53 and len(value) <= 255
    ]
    option_list.append(b"\xff")
    msg = oskdhcp.dhcp(
        op=oskdhcp.DHCP_BOOT_REPLY,
        chaddr=req.chaddr,
        xid=req.xid,
        flags=req.flags,
        ciaddr=kw["ciaddr"],
        yiaddr=kw["yiaddr"],
        siaddr=kw["siaddr"],
        giaddr=req.giaddr,
        options=oskdhcp.options(option_list=option_list),
    )
    body = bytes(msg.serialize())
    if len(body) < dhcp.MIN_BOOTP_LEN:
        msg.options.option_list.append(b"\0" * (dhcp.MIN_BOOTP_LEN - len(body)))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=eth_dst, src=kw["server_mac"], ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=kw["server_ip"], dst=ip_dst, proto=17, ttl=64))
    pkt.add_protocol(udp.udp(src_port=67, dst_port=68))
    pkt.add_protocol(msg)
    pkt.serialize()
    return bytes(pkt.data)


ipv4s = st.ip_addresses(v=4).map(str)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@given(
    st.sampled_from([dhcp.DISCOVER, dhcp.REQUEST, dhcp.INFORM, dhcp.RELEASE]),
    macs,
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, dhcp.BROADCAST_FLAG]),
    ipv4s,
    st.one_of(st.none(), ipv4s),
    st.one_of(st.none(), ipv4s),
    ipv4s,
)
def test_requests_parse_as_os_ken_parses_them(
    mtype: int,
    mac: str,
    xid: int,
    flags: int,
    ciaddr: str,
    requested: str | None,
    server_id: str | None,
    src_ip: str,
) -> None:
    frame = client_frame(
        mtype,
        mac=mac,
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        requested=requested,
        server_id=server_id,
        src_ip=src_ip,
    )
    theirs = packet.Packet(frame)
    msg = theirs.get_protocol(oskdhcp.dhcp)
    req = dhcp.parse_request(frame)
    assert (req.message_type, req.xid, req.flags) == (options_of(msg)[53][0], msg.xid, msg.flags)
    assert (req.chaddr, req.ciaddr, req.giaddr) == (msg.chaddr, msg.ciaddr, msg.giaddr)
    assert req.eth_src == theirs.get_protocol(ethernet.ethernet).src == mac
    assert (req.requested_ip, req.server_id) == (requested, server_id)


@given(
    st.sampled_from([dhcp.OFFER, dhcp.ACK, dhcp.NAK]),
    macs,
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, dhcp.BROADCAST_FLAG]),
    st.tuples(ipv4s, ipv4s, ipv4s, ipv4s, ipv4s),
    st.dictionaries(
        st.integers(1, 254).filter(lambda c: c != 53), st.binary(max_size=300), max_size=12
    ),
    macs,
)
def test_replies_encode_as_os_ken_encodes_them(
    reply_type: int,
    mac: str,
    xid: int,
    flags: int,
    addrs: tuple[str, str, str, str, str],
    opts: dict[int, bytes],
    server_mac: str,
) -> None:
    giaddr, ciaddr, yiaddr, siaddr, server_ip = addrs
    req = dhcp.DhcpRequest(dhcp.REQUEST, xid, flags, mac, ciaddr, giaddr, None, None, mac)
    opts = {53: bytes([reply_type]), **opts}
    kw = dict(server_mac=server_mac, server_ip=server_ip, yiaddr=yiaddr, ciaddr=ciaddr)
    kw["siaddr"] = siaddr
    assert dhcp.build_reply(req, reply_type, opts, **kw) == osken_reply(req, reply_type, opts, **kw)


def test_frames_that_are_not_dhcp_requests_are_refused() -> None:
    good = client_frame(dhcp.DISCOVER)
    assert dhcp.parse_request(good).message_type == dhcp.DISCOVER
    for bad, why in [
        (good[:12] + b"\x86\xdd" + good[14:], "not a DHCPv4"),  # IPv6 ethertype
        (good[:23] + b"\x06" + good[24:], "not a DHCPv4"),  # TCP
        (good[:34] + struct.pack("!HH", 1000, 2000) + good[38:], "not a DHCPv4"),  # ports
        (good[:42] + b"\x02" + good[43:], "BOOTREQUEST"),  # op
        (good[:60], "too short"),
        (good[:44] + b"\x10" + good[45:], "hardware address length"),
    ]:
        with pytest.raises(dhcp.DhcpError, match=why):
            dhcp.parse_request(bad)


# --- the route to the metadata service (option 121) ---------------------------------------

METADATA_ROUTE = ("169.254.169.254/32", "0.0.0.0")  # on-link (RFC 3442: router 0.0.0.0)


def test_without_a_router_the_metadata_service_is_on_link() -> None:
    # No gateway at all: the route alone (no default route to add).
    r = answer(client_frame(dhcp.DISCOVER), subnets=[subnet(gateway_ip=None)], metadata_route=True)
    assert r is not None and 3 not in r.opts
    assert dhcp.decode_classless_routes(r.opts[121]) == [METADATA_ROUTE]
    # A gateway that is no router's: the route, then the default route (clients using
    # option 121 ignore option 3).
    r = answer(client_frame(dhcp.DISCOVER), metadata_route=True)
    assert r is not None and r.ips(3) == ["10.0.0.1"]
    assert dhcp.decode_classless_routes(r.opts[121]) == [METADATA_ROUTE, ("0.0.0.0/0", "10.0.0.1")]


def test_a_host_route_covering_the_service_is_left_as_it_is() -> None:
    routes = [{"destination": "169.254.0.0/16", "nexthop": "10.0.0.9"}]
    r = answer(
        client_frame(dhcp.DISCOVER), subnets=[subnet(host_routes=routes)], metadata_route=True
    )
    assert r is not None
    assert dhcp.decode_classless_routes(r.opts[121]) == [
        ("169.254.0.0/16", "10.0.0.9"),
        ("0.0.0.0/0", "10.0.0.1"),
    ]


def test_the_dispatcher_gives_the_route_only_where_no_router_owns_the_gateway() -> None:
    view = local_view()
    outs = PacketInDispatcher(view).handle(pin(client_frame(dhcp.DISCOVER)), now=0.0)
    routes = dhcp.decode_classless_routes(Decoded(outs[0].data).opts[121])
    assert routes == [METADATA_ROUTE, ("0.0.0.0/0", "10.0.0.1")]
    add_router_interface(view)
    outs = PacketInDispatcher(view).handle(pin(client_frame(dhcp.DISCOVER)), now=0.0)
    assert 121 not in Decoded(outs[0].data).opts  # the router takes it: option 3 alone
