"""Every registered packet-in handler against garbage: random bytes and mutated valid
frames, with the registers of a real local port (so the handler gets past the port
lookup and parses). A handler may answer or not, but never raises, and what it sends
goes out of a port of this chassis. Registering a new punt in the dispatcher puts it
under this test: add a valid frame for it to VALID so mutations start from something
its parser accepts."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.apps import scenario as sc
from tests.controller import test_dhcp6, test_ra
from wyvern.apps import punts
from wyvern.controller import dhcp6, frames, nd
from wyvern.controller.packetin import PacketInDispatcher, TokenBucket
from wyvern.model.view import LocalView
from wyvern.southbound.ofchannel import PacketIn

MAC_VM = test_ra.MAC_VM
OFPORT, NET_KEY, PORT_KEY, ROUTER_KEY = test_ra.OFPORT, test_ra.NET_KEY, 1, 7


def view() -> LocalView:
    """A VM on a dual-stack network behind router r (DHCPv4, ND, RA all served)."""
    return sc.build_view(
        networks=[sc.network("n", key=NET_KEY, mtu=1450)],
        subnets=[
            sc.subnet("s4", "n", "10.0.0.0/24"),
            sc.subnet(
                "s6",
                "n",
                "2001:db8:1::/64",
                ipv6_ra_mode="slaac",
                ipv6_address_mode="slaac",
                dns_nameservers=["2001:db8::53"],
            ),
        ],
        ports=[
            sc.port("vm", "n", key=PORT_KEY, mac=MAC_VM, ips=["10.0.0.5", "2001:db8:1::5"]),
            sc.port("b", "n", key=2, mac="fa:16:3e:00:00:0b", ips=["2001:db8:1::6"]),
            sc.port(
                "rp",
                "n",
                key=9,
                mac=test_ra.MAC_R,
                ips=["10.0.0.1", "2001:db8:1::1"],
                device_owner="network:router_interface",
                device_id="r",
            ),
        ],
        routers=[sc.router("r", key=ROUTER_KEY)],
        local={"vm": OFPORT},
    )


def _dhcp_discover() -> bytes:
    mac = frames.mac_bytes(MAC_VM)
    bootp = bytes([1, 1, 6, 0]) + b"\x12\x34\x56\x78" + bytes(20) + mac + bytes(10)
    bootp += bytes(192) + bytes.fromhex("63825363") + bytes([53, 1, 1, 255])
    udp = frames.udp4("0.0.0.0", "255.255.255.255", 68, 67, bootp)
    ip = frames.ipv4("0.0.0.0", "255.255.255.255", frames.IPPROTO_UDP, udp)
    return frames.ethernet("ff:ff:ff:ff:ff:ff", MAC_VM, frames.ETH_TYPE_IP, ip)


def _ttl1() -> bytes:
    udp = frames.udp4("10.0.0.5", "10.9.0.9", 40000, 33434, b"x" * 18)
    ip = frames.ipv4("10.0.0.5", "10.9.0.9", frames.IPPROTO_UDP, udp, ttl=1)
    return frames.ethernet(test_ra.MAC_R, MAC_VM, frames.ETH_TYPE_IP, ip)


def _hop_limit1() -> bytes:
    ip = frames.ipv6("2001:db8:1::5", "2001:db8:9::9", frames.IPPROTO_UDP, b"x" * 26, hop_limit=1)
    return frames.ethernet(test_ra.MAC_R, MAC_VM, frames.ETH_TYPE_IPV6, ip)


# A frame each punt's parser accepts (mutations start from these).
VALID: dict[int, bytes] = {
    punts.PUNT_DHCP4: _dhcp_discover(),
    punts.PUNT_DHCP6: test_dhcp6.client_frame(
        1, test_dhcp6.ia_na(), mac=MAC_VM, src=dhcp6.link_local(MAC_VM)
    ),
    punts.PUNT_ICMP4_ERROR: _ttl1(),
    punts.PUNT_ICMP6_ERROR: _hop_limit1(),
    punts.PUNT_ND_NS: nd.build_solicitation(MAC_VM, "2001:db8:1::5", "2001:db8:1::6"),
    punts.PUNT_ND_RA: test_ra.rs(),
    punts.PUNT_ARP_LEARN: frames.arp_request("fa:16:3e:00:00:99", "10.0.0.9", "10.0.0.1"),
    punts.PUNT_ARP_REQUEST: _ttl1(),
    punts.PUNT_ND_LEARN: nd.build_solicitation(
        "fa:16:3e:00:00:99", "2001:db8:1::9", "2001:db8:1::1"
    ),
    punts.PUNT_ND_REQUEST: b"",
}
HANDLERS = sorted(PacketInDispatcher(LocalView()).handlers)


def test_every_handler_has_a_valid_frame() -> None:
    assert set(HANDLERS) <= set(VALID), "add a valid frame for the new punt to VALID"


def pin(kind: int, data: bytes, extra: bytes) -> PacketIn:
    userdata = bytes([kind]) + extra
    fields = {"in_port": OFPORT, "metadata": NET_KEY, "reg14": PORT_KEY, "reg12": ROUTER_KEY}
    return PacketIn(OFPORT, data, userdata, fields)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(HANDLERS),
    data=st.one_of(
        st.binary(max_size=400),
        st.tuples(
            st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
            st.none() | st.integers(0, 400),
        ),
    ),
    extra=st.binary(max_size=4),
)
def test_no_handler_raises_on_garbage(
    kind: int, data: bytes | tuple[list[tuple[int, int]], int | None], extra: bytes
) -> None:
    frame = data if isinstance(data, bytes) else mutate(VALID[kind], *data)
    d = PacketInDispatcher(view(), limiter=TokenBucket(rate=1e9, burst=1e9))
    outs = d.handlers[kind](pin(kind, frame, extra), 0.0)  # (straight, and through handle)
    assert all(isinstance(o.data, bytes) and o.ofport == OFPORT for o in outs)
    assert d.handle(pin(kind, frame, extra), 1.0) is not None


def test_the_valid_frames_are_valid() -> None:
    """The seeds get past each parser (else the mutations test little): the ones that
    answer the VM do."""
    d = PacketInDispatcher(view())
    for kind in (punts.PUNT_DHCP4, punts.PUNT_ND_NS, punts.PUNT_ND_RA):
        assert d.handle(pin(kind, VALID[kind], b""), 0.0), punts.NAMES[kind]
