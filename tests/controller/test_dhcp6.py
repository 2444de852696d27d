"""The DHCPv6 server: every message type, decoded as a client would (os-ken as the oracle
for the framing, the checksums and the options), and fuzzed through the dispatcher."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import dhcp6 as osk6
from os_ken.lib.packet import ethernet, ipv6, packet, udp

from tests.apps import scenario as sc
from wyvern.apps import punts
from wyvern.controller import dhcp6, frames
from wyvern.controller.dhcp import DhcpSettings, service_mac
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.ir import packet as pk
from wyvern.model import dhcp6_options
from wyvern.model.view import DhcpOpt, LocalView, Network, Port, Subnet
from wyvern.southbound.ofchannel import PacketIn

CLIENT_MAC = "fa:16:3e:00:00:05"
CLIENT_LL = "fe80::f816:3eff:fe00:5"
NET_ID, S_FUL, S_LESS, S_V4, PORT_ID = "net-1", "sub-ful", "sub-less", "sub-4", "port-1"
ADDR = "fd00:1::5"
CLIENT_DUID = struct.pack("!HH", 3, 1) + bytes.fromhex("fa163e000005")
NET_KEY, PORT_KEY, OFPORT = 1001, 7, 3


def network(**kw: Any) -> Network:
    return Network.from_obj({"id": NET_ID, "_key": NET_KEY, "mtu": 1442, **kw})


def subnet(id: str, cidr: str, mode: str | None, **kw: Any) -> Subnet:
    version = ipaddress.ip_network(cidr).version
    obj = {
        "id": id,
        "network_id": NET_ID,
        "cidr": cidr,
        "ip_version": version,
        "gateway_ip": str(ipaddress.ip_network(cidr).network_address + 1),
        "enable_dhcp": True,
        "dns_nameservers": ["fd00:53::1", "8.8.8.8", "fd00:53::2"] if version == 6 else [],
        "ipv6_address_mode": mode,
        "ipv6_ra_mode": mode,
        **kw,
    }
    return Subnet.from_obj(obj)


SUBNETS = [
    subnet(S_FUL, "fd00:1::/64", "dhcpv6-stateful"),
    subnet(S_LESS, "fd00:2::/64", "dhcpv6-stateless", dns_nameservers=["fd00:53::3"]),
    subnet(S_V4, "10.0.0.0/24", None),
]


def port(ips: list[tuple[str, str]] | None = None, **kw: Any) -> Port:
    fixed = ips if ips is not None else [(S_FUL, ADDR), (S_V4, "10.0.0.5")]
    obj = {
        "id": PORT_ID,
        "network_id": NET_ID,
        "_key": PORT_KEY,
        "mac_address": CLIENT_MAC,
        "fixed_ips": [{"subnet_id": s, "ip_address": a} for s, a in fixed],
        **kw,
    }
    return Port.from_obj(obj)


def opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def ia_na(iaid: int = 0xDEAD, *addrs: str) -> bytes:
    inner = b"".join(
        opt(5, ipaddress.IPv6Address(a).packed + struct.pack("!II", 0, 0)) for a in addrs
    )
    return opt(3, struct.pack("!III", iaid, 0, 0) + inner)


def client_frame(
    mtype: int,
    options: bytes = b"",
    *,
    client_id: bytes | None = CLIENT_DUID,
    server_id: bytes | None = None,
    xid: int = 0xABCDEF,
    src: str = CLIENT_LL,
    mac: str = CLIENT_MAC,
) -> bytes:
    """A client message, framed by os-ken (not by the code under test)."""
    body = b""
    if client_id is not None:
        body += opt(1, client_id)
    if server_id is not None:
        body += opt(2, server_id)
    body += opt(8, b"\0\0") + options  # elapsed time
    msg = bytes([mtype]) + xid.to_bytes(3, "big") + body
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="33:33:00:01:00:02", src=mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src, dst="ff02::1:2", nxt=17, hop_limit=1))
    pkt.add_protocol(udp.udp(src_port=546, dst_port=547))
    pkt.add_protocol(msg)
    pkt.serialize()
    return bytes(pkt.data)


SERVER_MAC = service_mac(network())
SERVER_DUID = struct.pack("!HH", 3, 1) + frames.mac_bytes(SERVER_MAC)


class Decoded:
    """A reply frame as the client sees it, parsed by os-ken."""

    def __init__(self, frame: bytes) -> None:
        pkt = packet.Packet(frame)
        self.eth = pkt.get_protocol(ethernet.ethernet)
        self.ip = pkt.get_protocol(ipv6.ipv6)
        self.udp = pkt.get_protocol(udp.udp)
        self.msg = pkt.get_protocol(osk6.dhcp6)
        assert self.msg is not None, pkt
        # os-ken checks nothing on parse: verify the UDP checksum over the pseudo-header.
        seg = frame[54:]
        pseudo = (
            ipaddress.IPv6Address(self.ip.src).packed
            + ipaddress.IPv6Address(self.ip.dst).packed
            + struct.pack("!IxxxB", len(seg), 17)
        )
        assert frames.checksum(pseudo + seg) == 0
        self.options: list[tuple[int, bytes]] = [
            (o.code, bytes(o.data)) for o in self.msg.options.option_list
        ]

    def get(self, code: int) -> bytes | None:
        found = [d for c, d in self.options if c == code]
        assert len(found) <= 1, self.options
        return found[0] if found else None

    def ias(self) -> list[tuple[int, int, int, list[tuple[int, bytes]]]]:
        out = []
        for c, d in self.options:
            if c == 3:
                iaid, t1, t2 = struct.unpack("!III", d[:12])
                out.append((iaid, t1, t2, dhcp6.parse_options(d[12:])))
        return out

    def addresses(self) -> list[tuple[str, int, int]]:
        return [
            (str(ipaddress.IPv6Address(d[:16])), *struct.unpack("!II", d[16:24]))
            for _, _, _, inner in self.ias()
            for c, d in inner
            if c == 5
        ]

    def status(self) -> int | None:
        data = self.get(13)
        return None if data is None else int(struct.unpack("!H", data[:2])[0])


def ask(frame: bytes, p: Port | None = None, **kw: Any) -> dhcp6.Dhcp6Reply | None:
    return dhcp6.handle(frame, p or port(), kw.pop("net", network()), SUBNETS, **kw)


def reply_of(frame: bytes, p: Port | None = None, **kw: Any) -> Decoded:
    reply = ask(frame, p, **kw)
    assert reply is not None
    return Decoded(reply.frame)


# -- stateful ---------------------------------------------------------------------------


def test_solicit_is_advertised_the_ports_address_with_lease_times() -> None:
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na(0xDEAD) + opt(6, b"\0\x17\0\x18")))
    assert d.msg.msg_type == dhcp6.ADVERTISE
    assert d.msg.transaction_id == 0xABCDEF
    assert d.get(1) == CLIENT_DUID and d.get(2) == SERVER_DUID
    ((iaid, t1, t2, _),) = d.ias()
    assert (iaid, t1, t2) == (0xDEAD, 43200, 75600)  # 1/2 and 7/8 of the lease
    assert d.addresses() == [(ADDR, 86400, 86400)]
    # DNS: the stateful subnet's IPv6 servers (not the IPv4 one); the domain search list.
    assert d.get(23) == b"".join(
        ipaddress.IPv6Address(a).packed for a in ("fd00:53::1", "fd00:53::2")
    )
    assert dhcp6_options.decode_names(d.get(24) or b"") == ["openstacklocal"]
    assert d.status() is None
    # Addressed from the service MAC's link-local address, back to the client.
    assert d.eth.src == SERVER_MAC and d.eth.dst == CLIENT_MAC
    assert d.ip.src == dhcp6.link_local(SERVER_MAC) and d.ip.dst == CLIENT_LL
    assert ipaddress.IPv6Address(d.ip.src).is_link_local
    assert (d.udp.src_port, d.udp.dst_port) == (547, 546)


def test_link_local_is_the_modified_eui64() -> None:
    assert dhcp6.link_local(CLIENT_MAC) == CLIENT_LL


def test_lease_time_is_the_dhcpv4_setting() -> None:
    frame = client_frame(dhcp6.SOLICIT, ia_na())
    d = reply_of(frame, settings=DhcpSettings(lease_time=600, domain_name="example.org"))
    ((_, t1, t2, _),) = d.ias()
    assert (t1, t2) == (300, 525) and d.addresses() == [(ADDR, 600, 600)]
    assert dhcp6_options.decode_names(d.get(24) or b"") == ["example.org"]


def test_domain_search_is_the_networks_dns_domain_else_the_setting() -> None:
    frame = client_frame(dhcp6.SOLICIT, ia_na())
    d = reply_of(frame, net=network(dns_domain="lab.example.net."))
    assert dhcp6_options.decode_names(d.get(24) or b"") == ["lab.example.net"]
    d = reply_of(frame, settings=DhcpSettings(domain_name="example.org"))
    assert dhcp6_options.decode_names(d.get(24) or b"") == ["example.org"]


def test_client_fqdn_only_when_asked_with_the_dns_assignment_fqdn() -> None:
    """RFC 4704: the fqdn of the address's dns_assignment, N set (no DNS update), O set
    when the client asked the server to update (S)."""
    org = DhcpSettings(domain_name="example.org")
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na()), port(dns_name="web-1"), settings=org)
    assert d.get(39) is None
    asks = opt(6, struct.pack("!HH", 23, 39))
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na() + asks), port(dns_name="web-1"), settings=org)
    value = d.get(39) or b""
    assert value[0] == dhcp6.FQDN_N
    assert dhcp6_options.decode_names(value[1:]) == ["web-1.example.org"]
    sent = opt(39, bytes([dhcp6.FQDN_S]) + dhcp6_options.encode_names(["vm"]))
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na() + sent), settings=org)
    value = d.get(39) or b""
    assert value[0] == dhcp6.FQDN_N | dhcp6.FQDN_O
    host = "host-" + ADDR.replace(":", "-")
    assert dhcp6_options.decode_names(value[1:]) == [f"{host}.example.org"]


def test_rapid_commit_solicit_gets_a_reply_with_rapid_commit() -> None:
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na() + opt(14, b"")))
    assert d.msg.msg_type == dhcp6.REPLY
    assert d.get(14) == b""
    assert d.addresses() == [(ADDR, 86400, 86400)]


@pytest.mark.parametrize("mtype", [dhcp6.REQUEST, dhcp6.RENEW])
def test_request_and_renew_get_the_address(mtype: int) -> None:
    d = reply_of(client_frame(mtype, ia_na(1, ADDR), server_id=SERVER_DUID))
    assert d.msg.msg_type == dhcp6.REPLY
    assert d.addresses() == [(ADDR, 86400, 86400)]
    assert d.get(23) is not None


def test_rebind_gets_the_address_and_other_addresses_are_withdrawn() -> None:
    d = reply_of(client_frame(dhcp6.REBIND, ia_na(1, "fd00:1::99", ADDR)))
    assert d.msg.msg_type == dhcp6.REPLY
    assert sorted(d.addresses()) == sorted([(ADDR, 86400, 86400), ("fd00:1::99", 0, 0)])


def test_every_stateful_address_is_in_the_first_ia_and_only_there() -> None:
    subs = [*SUBNETS, subnet("sub-ful2", "fd00:3::/64", "dhcpv6-stateful")]
    p = port([(S_FUL, ADDR), ("sub-ful2", "fd00:3::7"), (S_LESS, "fd00:2::8")])
    reply = dhcp6.handle(client_frame(dhcp6.SOLICIT, ia_na(1) + ia_na(2)), p, network(), subs)
    assert reply is not None
    d = Decoded(reply.frame)
    first, second = d.ias()
    assert [ipaddress.IPv6Address(x[:16]) for c, x in first[3] if c == 5] == [
        ipaddress.IPv6Address(ADDR),
        ipaddress.IPv6Address("fd00:3::7"),
    ]  # not the stateless subnet's address
    assert [(c, struct.unpack("!H", x[:2])[0]) for c, x in second[3]] == [(13, 2)]


def test_a_port_without_a_stateful_address_gets_no_addrs_avail() -> None:
    p = port([(S_LESS, "fd00:2::8")])
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na(9)), p)
    assert d.msg.msg_type == dhcp6.ADVERTISE
    ((iaid, _, _, inner),) = d.ias()
    assert iaid == 9
    assert [(c, struct.unpack("!H", x[:2])[0]) for c, x in inner] == [(13, 2)]  # NoAddrsAvail
    assert d.status() == 2
    assert d.addresses() == []
    # Its DNS servers come from its own (stateless) subnet.
    assert d.get(23) == ipaddress.IPv6Address("fd00:53::3").packed
    # Rapid commit is not honoured without an address; Request gets the IA's status.
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na(9) + opt(14, b"")), p)
    assert d.msg.msg_type == dhcp6.ADVERTISE and d.get(14) is None
    d = reply_of(client_frame(dhcp6.REQUEST, ia_na(9), server_id=SERVER_DUID), p)
    assert d.msg.msg_type == dhcp6.REPLY and d.status() is None
    assert [(c, struct.unpack("!H", x[:2])[0]) for c, x in d.ias()[0][3]] == [(13, 2)]


def test_temporary_addresses_and_prefix_delegation_are_refused_per_ia() -> None:
    ta = opt(4, struct.pack("!I", 0x7A))
    pd = opt(25, struct.pack("!III", 0x9D, 0, 0))
    d = reply_of(client_frame(dhcp6.SOLICIT, ia_na(1) + ta + pd))
    assert d.addresses() == [(ADDR, 86400, 86400)]  # the IA_NA is still served
    assert d.get(4) == struct.pack("!I", 0x7A) + opt(13, b"\0\x02")  # NoAddrsAvail
    assert d.get(25) == struct.pack("!III", 0x9D, 0, 0) + opt(13, b"\0\x06")  # NoPrefixAvail


def test_confirm_release_and_decline() -> None:
    ok = reply_of(client_frame(dhcp6.CONFIRM, ia_na(1, ADDR)))
    assert ok.msg.msg_type == dhcp6.REPLY and ok.status() == 0 and not ok.ias()
    moved = reply_of(client_frame(dhcp6.CONFIRM, ia_na(1, "fd00:1::99")))
    assert moved.status() == 4  # NotOnLink: the client solicits again
    assert ask(client_frame(dhcp6.CONFIRM, ia_na(1))) is None  # nothing to confirm
    for mtype in (dhcp6.RELEASE, dhcp6.DECLINE):
        d = reply_of(client_frame(mtype, ia_na(1, ADDR), server_id=SERVER_DUID))
        assert d.msg.msg_type == dhcp6.REPLY and d.status() == 0
        assert d.get(1) == CLIENT_DUID and d.get(2) == SERVER_DUID


# -- stateless ----------------------------------------------------------------------------


def test_information_request_gets_dns_and_domain_search_only() -> None:
    p = port([(S_LESS, "fd00:2::8")])
    d = reply_of(client_frame(dhcp6.INFORMATION_REQUEST, opt(6, b"\0\x17\0\x18")), p)
    assert d.msg.msg_type == dhcp6.REPLY
    assert {c for c, _ in d.options} == {1, 2, 23, 24}
    assert d.get(23) == ipaddress.IPv6Address("fd00:53::3").packed
    # Without a client identifier too (RFC 8415 allows it).
    d = reply_of(client_frame(dhcp6.INFORMATION_REQUEST, client_id=None), p)
    assert {c for c, _ in d.options} == {2, 23, 24}


def test_extra_dhcp_opts_v6_are_served_and_override() -> None:
    extra = [
        {"opt_name": "bootfile-url", "opt_value": "tftp://[fd00::1]/boot.efi", "ip_version": 6},
        {"opt_name": "option6:24", "opt_value": "a.example,b.example", "ip_version": 6},
        {"opt_name": "dns-server", "opt_value": "[fd00:53::9]", "ip_version": 6},
        {"opt_name": "ntp-server", "opt_value": "fd00::123", "ip_version": 6},
        {"opt_name": "mtu", "opt_value": "1400", "ip_version": 4},  # not DHCPv6's
    ]
    p = port(extra_dhcp_opts=extra)
    for frame in (
        client_frame(dhcp6.SOLICIT, ia_na()),
        client_frame(dhcp6.INFORMATION_REQUEST),
    ):
        d = reply_of(frame, p)
        assert d.get(59) == b"tftp://[fd00::1]/boot.efi"
        assert dhcp6_options.decode_names(d.get(24) or b"") == ["a.example", "b.example"]
        assert d.get(23) == ipaddress.IPv6Address("fd00:53::9").packed
        assert d.get(56) == struct.pack("!HH", 1, 16) + ipaddress.IPv6Address("fd00::123").packed
        assert d.get(26) is None


# -- what is not answered -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mtype", "kw", "options"),
    [
        (dhcp6.SOLICIT, {"client_id": None}, ia_na()),  # no client id
        (dhcp6.SOLICIT, {"server_id": SERVER_DUID}, ia_na()),  # a Solicit names no server
        (dhcp6.REQUEST, {}, ia_na()),  # a Request must name us
        (dhcp6.REQUEST, {"server_id": b"\0\3\0\1abcdef"}, ia_na()),  # another server
        (dhcp6.RENEW, {"server_id": b"\0\3\0\1abcdef"}, ia_na(1, ADDR)),
        (dhcp6.RELEASE, {}, ia_na(1, ADDR)),
        (dhcp6.REBIND, {"server_id": SERVER_DUID}, ia_na(1, ADDR)),
        (dhcp6.CONFIRM, {"server_id": SERVER_DUID}, ia_na(1, ADDR)),
        (dhcp6.INFORMATION_REQUEST, {}, ia_na()),  # an IA in an Information-Request
        (dhcp6.INFORMATION_REQUEST, {"server_id": b"\0\3\0\1abcdef"}, b""),
    ],
)
def test_rfc8415_discards(mtype: int, kw: dict[str, Any], options: bytes) -> None:
    assert ask(client_frame(mtype, options, **kw)) is None


def test_no_reply_on_a_network_without_a_dhcpv6_subnet() -> None:
    slaac = [subnet(S_FUL, "fd00:1::/64", "slaac"), subnet(S_LESS, "fd00:2::/64", None)]
    frame = client_frame(dhcp6.SOLICIT, ia_na())
    assert dhcp6.handle(frame, port(), network(), slaac) is None
    off = [subnet(S_FUL, "fd00:1::/64", "dhcpv6-stateful", enable_dhcp=False)]
    assert dhcp6.handle(frame, port(), network(), off) is None
    # The probe works where it should.
    assert dhcp6.handle(frame, port(), network(), SUBNETS) is not None


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00" * 13,
        client_frame(dhcp6.SOLICIT)[:-3],  # a truncated option
        client_frame(dhcp6.ADVERTISE),  # a server's message
        client_frame(dhcp6.RELAY_FORW),
        client_frame(dhcp6.SOLICIT, opt(1, CLIENT_DUID)),  # two client ids
        client_frame(dhcp6.SOLICIT, client_id=b"x"),  # a one-octet DUID
        client_frame(dhcp6.SOLICIT, opt(3, b"\0" * 11)),  # a short IA_NA
        client_frame(dhcp6.SOLICIT, opt(3, b"\0" * 12 + opt(5, b"\0" * 23))),  # short IA addr
        client_frame(dhcp6.SOLICIT, opt(25, b"\0" * 11)),  # a short IA_PD
    ],
)
def test_malformed_messages_raise_dhcp6_error(frame: bytes) -> None:
    with pytest.raises(dhcp6.Dhcp6Error):
        dhcp6.parse_request(frame)


# -- through the dispatcher: rate limit, counters, fuzz -------------------------------------


def view() -> LocalView:
    stateful = sc.subnet(
        S_FUL, NET_ID, "fd00:1::/64", ipv6_address_mode="dhcpv6-stateful",
        dns_nameservers=["fd00:53::1"],
    )  # fmt: skip
    stateless = sc.subnet(S_LESS, NET_ID, "fd00:2::/64", ipv6_address_mode="dhcpv6-stateless")
    return sc.build_view(
        networks=[sc.network(NET_ID, key=NET_KEY)],
        subnets=[stateful, stateless],
        ports=[sc.port(PORT_ID, NET_ID, key=PORT_KEY, mac=CLIENT_MAC, ips=[(S_FUL, ADDR)])],
        local={PORT_ID: OFPORT},
    )


def punt_in(frame: bytes) -> PacketIn:
    regs = pk.packet(network_key=NET_KEY, src_port_key=PORT_KEY)
    fields = {f"reg{i}": regs[f"reg{i}"] for i in range(16)} | {"metadata": regs["metadata"]}
    fields = {k: v for k, v in fields.items() if v}
    return PacketIn(in_port=OFPORT, data=frame, userdata=bytes([punts.PUNT_DHCP6]), fields=fields)


def test_dispatcher_answers_a_punted_solicit_to_the_port() -> None:
    d = PacketInDispatcher(view())
    (out,) = d.handle(punt_in(client_frame(dhcp6.SOLICIT, ia_na())), now=0.0)
    assert out.ofport == OFPORT
    reply = Decoded(out.data)
    assert reply.msg.msg_type == dhcp6.ADVERTISE and reply.addresses()[0][0] == ADDR
    assert d.stats["dhcp6"] == 1 and d.stats["dhcp6_advertise"] == 1


def test_dispatcher_drops_and_counts_malformed_and_rate_limits_per_port() -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1.0, burst=3.0))
    assert d.handle(punt_in(b"\x01\x02garbage"), now=0.0) == []
    assert d.stats["dhcp6_malformed"] == 1
    good = punt_in(client_frame(dhcp6.SOLICIT, ia_na()))
    assert len(d.handle(good, now=0.0)) == 1
    assert len(d.handle(good, now=0.0)) == 1
    assert d.handle(good, now=0.0) == []  # the port's bucket is empty
    assert d.stats["rate_limited"] == 1
    assert len(d.handle(good, now=1.0)) == 1  # and refills


def valid_messages() -> list[bytes]:
    return [
        client_frame(dhcp6.SOLICIT, ia_na(1) + opt(14, b"")),
        client_frame(dhcp6.REQUEST, ia_na(1, ADDR), server_id=SERVER_DUID),
        client_frame(dhcp6.CONFIRM, ia_na(1, ADDR)),
        client_frame(dhcp6.INFORMATION_REQUEST, opt(6, b"\0\x17")),
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(valid_messages())))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        # Mostly in the DHCPv6 message (after Ethernet 14 + IPv6 40 + UDP 8).
        at = draw(st.integers(min(62, len(frame) - 1), len(frame) - 1))
        if kind == "flip":
            frame[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del frame[at:]
        else:
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        if not frame:
            break
    return bytes(frame)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), mutated()))
def test_fuzz_never_raises_and_counts_what_it_drops(data: bytes) -> None:
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1e9, burst=1e9))
    outs = d.handle(punt_in(data), now=0.0)
    answered = sum(v for k, v in d.stats.items() if k.startswith("dhcp6_"))
    assert answered == 1  # malformed, unanswered, or one reply kind
    for out in outs:
        reply = Decoded(out.data)  # whatever is sent is a well-formed reply
        assert reply.msg.msg_type in (dhcp6.ADVERTISE, dhcp6.REPLY)


def test_option_table_encodings() -> None:
    assert dhcp6_options.encode("23", "[fd00::1], fd00::2") == (
        23,
        ipaddress.IPv6Address("fd00::1").packed + ipaddress.IPv6Address("fd00::2").packed,
    )
    assert dhcp6_options.encode("information-refresh-time", "3600") == (32, b"\0\0\x0e\x10")
    assert dhcp6_options.encode("bootfile-param", "a,bc") == (60, b"\0\x01a\0\x02bc")
    for name, value in (
        ("server-id", "x"),  # the server's own
        ("ia-addr", "fd00::1"),
        ("5", "fd00::1"),
        ("mtu", "1400"),  # a DHCPv4 option
        ("999", "x"),
        ("dns-server", "10.0.0.1"),
        ("domain-search", "a..b"),
        ("information-refresh-time", "-1"),
    ):
        with pytest.raises(dhcp6_options.Dhcp6OptionError):
            dhcp6_options.encode(name, value)


def test_extra_options_skip_what_cannot_be_sent() -> None:
    opts = [DhcpOpt("server-id", "x", 6), DhcpOpt("dns-server", "fd00::1", 6)]
    assert dhcp6.extra_options(opts) == {23: ipaddress.IPv6Address("fd00::1").packed}
