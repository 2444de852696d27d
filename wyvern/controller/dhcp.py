"""The distributed DHCPv4 server: one client frame + the port's records -> the reply frame.

Every chassis answers the DHCP requests of its own ports from the local view, so there
is no DHCP agent and no namespace per network (like OVN's native DHCP). This module is
pure: bytes and records in, bytes out; no I/O, no clock.

What the reply carries, following Neutron's dnsmasq configuration:
- the port's fixed IPv4 address on a DHCP-enabled subnet (the first one),
- 1 subnet mask, 28 broadcast, 3 router (gateway_ip; omitted without a gateway),
  6 DNS servers (dns_nameservers), 26 interface MTU (the network's MTU, which already
  accounts for tunnel overhead), 121 classless static routes (host_routes plus the
  default route via the gateway, since a client using 121 ignores option 3; on a
  network where no router owns the gateway, also 169.254.169.254/32 on-link, so the
  metadata service is reached without a router: wyvern.apps.metadata),
  51/58/59 lease time and renewal times, 12 hostname (the port's dns_assignment:
  its dns_name, else host-10-0-0-5), 15 domain name (the network's dns_domain, else the
  dns_domain setting),
  54 server identifier (the gateway, or a derived address when there is none),
- the port's extra_dhcp_opts (ip_version 4), which override the computed options.

Message handling (RFC 2131): DISCOVER -> OFFER; REQUEST -> ACK, or NAK when the
requested address is not the port's; a REQUEST naming another server's identifier is
ignored (the client chose another offer); RELEASE and DECLINE get no reply; INFORM ->
ACK without lease time, unicast to the client's ciaddr.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from wyvern.controller import frames
from wyvern.ir.metadata import SERVICE_V4 as METADATA_SERVICE
from wyvern.model import dns
from wyvern.model.view import DhcpOpt, Network, Port, Subnet

LOG = logging.getLogger(__name__)

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
SERVER_PORT, CLIENT_PORT = 67, 68
BROADCAST_FLAG = 0x8000
MIN_BOOTP_LEN = 300  # some (old) clients drop replies shorter than a BOOTP packet

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_NAMES = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}

# Option codes.
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN_NAME = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_MESSAGE = 56
OPT_T1 = 58
OPT_T2 = 59
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_DOMAIN_SEARCH = 119
OPT_CLASSLESS_ROUTES = 121
SIADDR = 255  # dnsmasq's "server-ip-address": the BOOTP siaddr field, not an option

DEFAULT_LEASE_TIME = 86400
DEFAULT_DOMAIN = "openstacklocal"

# Value encodings of the options extra_dhcp_opts may set.
IPS, U8, U16, U32, I32, TEXT, ROUTES, DOMAINS = (
    "ips", "u8", "u16", "u32", "i32", "text", "routes", "domains",
)  # fmt: skip

# Neutron (dnsmasq) option names -> (code, encoding).
OPTION_NAMES: dict[str, tuple[int, str]] = {
    "netmask": (1, IPS),
    "time-offset": (2, I32),
    "router": (3, IPS),
    "time-server": (4, IPS),
    "dns-server": (6, IPS),
    "domain-name-server": (6, IPS),
    "log-server": (7, IPS),
    "lpr-server": (9, IPS),
    "hostname": (12, TEXT),
    "boot-file-size": (13, U16),
    "domain-name": (15, TEXT),
    "swap-server": (16, IPS),
    "root-path": (17, TEXT),
    "extension-path": (18, TEXT),
    "ip-forward-enable": (19, U8),
    "non-local-source-routing": (20, U8),
    "max-datagram-reassembly": (22, U16),
    "default-ttl": (23, U8),
    "mtu": (26, U16),
    "all-subnets-local": (27, U8),
    "broadcast": (28, IPS),
    "router-discovery": (31, U8),
    "router-solicitation": (32, IPS),
    "arp-timeout": (35, U32),
    "ethernet-encap": (36, U8),
    "tcp-ttl": (37, U8),
    "tcp-keepalive": (38, U32),
    "nis-domain": (40, TEXT),
    "nis-server": (41, IPS),
    "ntp-server": (42, IPS),
    "netbios-ns": (44, IPS),
    "netbios-dd": (45, IPS),
    "netbios-nodetype": (46, U8),
    "netbios-scope": (47, TEXT),
    "x-windows-fs": (48, IPS),
    "x-windows-dm": (49, IPS),
    "lease-time": (51, U32),
    "server-identifier": (54, IPS),
    "message": (56, TEXT),
    "max-message-size": (57, U16),
    "T1": (58, U32),
    "T2": (59, U32),
    "nis+-domain": (64, TEXT),
    "nis+-server": (65, IPS),
    "tftp-server": (66, TEXT),
    "tftp-server-name": (66, TEXT),
    "bootfile-name": (67, TEXT),
    "mobile-ip-home": (68, IPS),
    "smtp-server": (69, IPS),
    "pop3-server": (70, IPS),
    "nntp-server": (71, IPS),
    "irc-server": (74, IPS),
    "domain-search": (119, DOMAINS),
    "classless-static-route": (121, ROUTES),
    "tftp-server-address": (150, IPS),
    "server-ip-address": (SIADDR, IPS),
}
CODE_ENCODINGS: dict[int, str] = {}
for _code, _enc in OPTION_NAMES.values():
    CODE_ENCODINGS.setdefault(_code, _enc)


@dataclass(frozen=True, slots=True)
class DhcpSettings:
    lease_time: int = DEFAULT_LEASE_TIME
    domain_name: str = DEFAULT_DOMAIN


@dataclass(frozen=True, slots=True)
class DhcpReply:
    """A reply to send back to the port, and what it is (for logs and tests)."""

    frame: bytes
    message_type: int
    ip: str | None

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))


@dataclass(frozen=True, slots=True)
class DhcpRequest:
    """The parts of a client's BOOTREQUEST the server looks at."""

    message_type: int
    xid: int
    flags: int
    chaddr: str
    ciaddr: str
    giaddr: str
    requested_ip: str | None
    server_id: str | None
    eth_src: str


class DhcpError(ValueError):
    """The frame is not a DHCPv4 client message we can answer."""


# -- parsing ------------------------------------------------------------------------------
BOOTREQUEST, BOOTREPLY = 1, 2
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # the fixed part, FIXED_LEN bytes


def parse_request(frame: bytes) -> DhcpRequest:
    """An Ethernet frame from a client -> DhcpRequest, or DhcpError."""
    eth = frames.parse_ethernet(frame)
    if eth is None or eth.ethertype != frames.ETH_TYPE_IP:
        raise DhcpError("not a DHCPv4 packet")
    ip = frames.parse_ipv4(eth.payload)
    transport = frames.parse_udp(ip.payload) if ip and ip.proto == frames.IPPROTO_UDP else None
    if transport is None or not {transport.src_port, transport.dst_port} & {67, 68}:
        raise DhcpError("not a DHCPv4 packet")
    bootp = transport.payload
    if len(bootp) < _BOOTP.size:
        raise DhcpError("unparsable frame: BOOTP message too short")
    op, _, hlen, _, xid, _, flags, ciaddr, _, _, giaddr, chaddr, _, _ = _BOOTP.unpack_from(bootp)
    if op != BOOTREQUEST:
        raise DhcpError("not a BOOTREQUEST")
    if hlen != 6:
        raise DhcpError(f"hardware address length {hlen}: not an Ethernet client")
    opts = parse_options(bootp)
    mtype = opts.get(OPT_MESSAGE_TYPE, b"")
    if len(mtype) != 1:
        raise DhcpError("no DHCP message type (plain BOOTP is not served)")
    return DhcpRequest(
        message_type=mtype[0],
        xid=xid,
        flags=flags,
        chaddr=frames.mac_text(chaddr[:6]),
        ciaddr=str(ipaddress.IPv4Address(ciaddr)),
        giaddr=str(ipaddress.IPv4Address(giaddr)),
        requested_ip=_ip_option(opts.get(OPT_REQUESTED_IP)),
        server_id=_ip_option(opts.get(OPT_SERVER_ID)),
        eth_src=eth.src,
    )


MAGIC_COOKIE = b"\x63\x82\x53\x63"
FIXED_LEN = 236  # the BOOTP header before the magic cookie


def parse_options(bootp: bytes) -> dict[int, bytes]:
    """The options of a raw BOOTP message as {code: value} (pads skipped, RFC 3396)."""
    if bootp[FIXED_LEN : FIXED_LEN + 4] != MAGIC_COOKIE:
        raise DhcpError("no DHCP magic cookie")
    out: dict[int, bytes] = {}
    i = FIXED_LEN + 4
    while i < len(bootp):
        code = bootp[i]
        if code == 0:  # pad
            i += 1
            continue
        if code == 255 or i + 1 >= len(bootp):  # end
            break
        length = bootp[i + 1]
        value = bootp[i + 2 : i + 2 + length]
        if len(value) != length:
            raise DhcpError(f"option {code} is truncated")
        out[code] = out.get(code, b"") + value
        i += 2 + length
    return out


def _ip_option(value: bytes | None) -> str | None:
    if value is None or len(value) != 4:
        return None
    return str(ipaddress.IPv4Address(value))


# -- encodings ------------------------------------------------------------------------------
def encode_ips(ips: Sequence[str]) -> bytes:
    return b"".join(ipaddress.IPv4Address(ip).packed for ip in ips)


def encode_classless_routes(routes: Sequence[tuple[str, str]]) -> bytes:
    """RFC 3442: per route, the prefix length, the significant octets, the router."""
    out = bytearray()
    for destination, nexthop in routes:
        net = ipaddress.IPv4Network(destination, strict=False)
        significant = (net.prefixlen + 7) // 8
        out.append(net.prefixlen)
        out += net.network_address.packed[:significant]
        out += ipaddress.IPv4Address(nexthop).packed
    return bytes(out)


def decode_classless_routes(value: bytes) -> list[tuple[str, str]]:
    """The inverse of encode_classless_routes (for tests and logs)."""
    routes: list[tuple[str, str]] = []
    i = 0
    while i < len(value):
        plen = value[i]
        significant = (plen + 7) // 8
        dest = value[i + 1 : i + 1 + significant].ljust(4, b"\0")
        hop = value[i + 1 + significant : i + 5 + significant]
        routes.append((f"{ipaddress.IPv4Address(dest)}/{plen}", str(ipaddress.IPv4Address(hop))))
        i += 5 + significant
    return routes


def encode_domain_search(names: Sequence[str]) -> bytes:
    """RFC 3397 domain search list (DNS wire format, without compression)."""
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            if label:
                raw = label.encode("idna")
                out.append(len(raw))
                out += raw
        out.append(0)
    return bytes(out)


def _split_values(value: str) -> list[str]:
    return [v.strip() for v in value.strip().strip("{}").split(",") if v.strip()]


def encode_option_value(encoding: str, value: str) -> bytes:
    """A Neutron extra_dhcp_opt value (a string) -> option bytes; ValueError if invalid."""
    if encoding == IPS:
        return encode_ips(_split_values(value))
    if encoding == U8:
        v = value.strip().lower()
        flags = {"true": 1, "false": 0}
        return struct.pack("!B", flags[v] if v in flags else int(v, 0))
    if encoding == U16:
        return struct.pack("!H", int(value.strip(), 0))
    if encoding == U32:
        return struct.pack("!I", int(value.strip(), 0))
    if encoding == I32:
        return struct.pack("!i", int(value.strip(), 0))
    if encoding == ROUTES:
        parts = _split_values(value)
        if len(parts) % 2:
            raise ValueError("classless-static-route needs destination,nexthop pairs")
        return encode_classless_routes(list(zip(parts[::2], parts[1::2], strict=True)))
    if encoding == DOMAINS:
        return encode_domain_search(_split_values(value))
    return value.strip().strip('"').encode()


def _guess_encoding(value: str) -> str:
    """For an option given by number that we know nothing about."""
    parts = _split_values(value)
    try:
        if parts:
            encode_ips(parts)
            return IPS
    except ValueError:
        pass
    return TEXT


def extra_options(opts: Sequence[DhcpOpt], port_id: str = "") -> dict[int, bytes]:
    """Port extra_dhcp_opts (ip_version 4) -> {code: value}; unknown names are logged."""
    out: dict[int, bytes] = {}
    for opt in opts:
        if opt.ip_version != 4:
            continue
        name = opt.opt_name.strip()
        for prefix in ("option:", "option4:"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if name in OPTION_NAMES:
            code, encoding = OPTION_NAMES[name]
        elif name.isdigit() and 0 < int(name) < 255:
            code = int(name)
            encoding = CODE_ENCODINGS.get(code) or _guess_encoding(opt.opt_value)
        else:
            LOG.warning("dhcp port %s: ignoring unknown DHCP option %r", port_id, opt.opt_name)
            continue
        try:
            value = encode_option_value(encoding, opt.opt_value)
        except (ValueError, OverflowError, struct.error, UnicodeError) as exc:
            LOG.warning(
                "dhcp port %s: ignoring option %s=%r: %s", port_id, name, opt.opt_value, exc
            )
            continue
        if len(value) > 255:
            LOG.warning("dhcp port %s: ignoring option %s: longer than 255 bytes", port_id, name)
            continue
        out[code] = value
    return out


# -- the server -------------------------------------------------------------------------------
def dhcp_subnet(port: Port, subnets: Sequence[Subnet]) -> tuple[str, Subnet] | None:
    """The port's first fixed IPv4 address on a DHCP-enabled subnet, and that subnet."""
    by_id = {s.id: s for s in subnets}
    for fixed in port.fixed_ips:
        subnet = by_id.get(fixed.subnet_id)
        if subnet is not None and subnet.ip_version == 4 and subnet.enable_dhcp:
            return fixed.ip_address, subnet
    return None


def hostname(port: Port, ip: str, domain: str = DEFAULT_DOMAIN) -> str:
    """The first label of the address's dns_assignment hostname (wyvern.model.dns): the
    port's dns_name, or Neutron's `host-10-0-0-5` (also while DOMAIN, the dns_domain
    setting, is Neutron's default, as Neutron)."""
    return dns.dhcp_hostname(port.dns_name, ip, domain)


def server_identifier(subnet: Subnet, client_ip: str) -> str:
    """The gateway, or (no gateway) the subnet's last host address that is not the client."""
    if subnet.gateway_ip:
        return subnet.gateway_ip
    net = ipaddress.IPv4Network(subnet.cidr)
    last = net.broadcast_address - 1 if net.prefixlen < 31 else net.broadcast_address
    if str(last) == client_ip:
        last -= 1
    return str(last)


def service_mac(network: Network) -> str:
    """A fixed, locally administered MAC for the network's DHCP server (02:77:76:<key>)."""
    key = network.key & 0xFFFFFF
    return f"02:77:76:{key >> 16:02x}:{(key >> 8) & 0xFF:02x}:{key & 0xFF:02x}"


def reply_options(
    port: Port,
    network: Network,
    subnet: Subnet,
    ip: str,
    message_type: int,
    settings: DhcpSettings,
    *,
    lease: bool = True,
    metadata_route: bool = False,
) -> tuple[dict[int, bytes], str]:
    """The options of an OFFER/ACK and the siaddr to put in the header (no lease: INFORM).
    METADATA_ROUTE: no router owns the gateway (or there is none), so the VM gets an
    on-link route to the metadata service (metadata_routes)."""
    net = ipaddress.IPv4Network(subnet.cidr)
    server_id = server_identifier(subnet, ip)
    opts: dict[int, bytes] = {
        OPT_SUBNET_MASK: net.netmask.packed,
        OPT_BROADCAST: net.broadcast_address.packed,
        OPT_MTU: struct.pack("!H", network.mtu),
        OPT_HOSTNAME: hostname(port, ip, settings.domain_name).encode(),
        OPT_DOMAIN_NAME: dns.dhcp_domain(network.dns_domain, settings.domain_name).encode(),
    }
    if subnet.gateway_ip:
        opts[OPT_ROUTER] = encode_ips([subnet.gateway_ip])
    servers = [d for d in subnet.dns_nameservers if ipaddress.ip_address(d).version == 4]
    if servers:
        opts[OPT_DNS] = encode_ips(servers)
    if lease:
        seconds = settings.lease_time
        opts[OPT_LEASE_TIME] = struct.pack("!I", seconds)
        opts[OPT_T1] = struct.pack("!I", seconds // 2)
        opts[OPT_T2] = struct.pack("!I", seconds * 7 // 8)
    extra = extra_options(port.extra_dhcp_opts, port.id)
    siaddr = server_id
    if SIADDR in extra:
        siaddr = str(ipaddress.IPv4Address(extra.pop(SIADDR)[:4]))
    opts.update(extra)
    if OPT_CLASSLESS_ROUTES not in extra:
        routes = [
            (dest, hop)
            for dest, hop in subnet.host_routes
            if ipaddress.ip_network(dest).version == 4
        ]
        if metadata_route:
            routes = metadata_routes(routes)
        if routes:
            router = opts.get(OPT_ROUTER, b"")[:4]
            if len(router) == 4 and not any(d.endswith("/0") for d, _ in routes):
                # Clients that use option 121 ignore option 3: add the default route.
                routes.append(("0.0.0.0/0", str(ipaddress.IPv4Address(router))))
            opts[OPT_CLASSLESS_ROUTES] = encode_classless_routes(routes)
    opts[OPT_MESSAGE_TYPE] = bytes([message_type])
    opts[OPT_SERVER_ID] = ipaddress.IPv4Address(server_id).packed
    return opts, siaddr


def metadata_routes(routes: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """ROUTES plus 169.254.169.254/32 on-link (next hop 0.0.0.0, RFC 3442; the metadata
    app answers ARP for it), unless a host route already covers the service address."""
    service = ipaddress.IPv4Address(METADATA_SERVICE)
    covered = any(
        service in ipaddress.ip_network(dest) and not dest.endswith("/0") for dest, _ in routes
    )
    if covered:
        return list(routes)
    return [(f"{METADATA_SERVICE}/32", "0.0.0.0"), *routes]


def handle(
    frame: bytes,
    port: Port,
    network: Network,
    subnets: Sequence[Subnet],
    settings: DhcpSettings | None = None,
    server_mac: str | None = None,
    *,
    metadata_route: bool = False,
) -> DhcpReply | None:
    """Answer one client frame from PORT, or None when no reply is due.

    SUBNETS are the network's subnets; SERVER_MAC is the reply's Ethernet source (the
    router interface MAC when there is one, else service_mac(network)). METADATA_ROUTE:
    no router interface owns the gateway (or there is none), so a VM would send what it
    sends 169.254.169.254 to a gateway nobody routes for: it gets an on-link route to
    the metadata service (option 121).
    """
    settings = settings or DhcpSettings()
    try:
        req = parse_request(frame)
    except DhcpError as exc:
        LOG.debug("dhcp port %s: %s", port.id, exc)
        return None
    if req.chaddr != port.mac.lower():
        LOG.info("dhcp port %s: ignoring request for MAC %s", port.id, req.chaddr)
        return None
    found = dhcp_subnet(port, subnets)
    if found is None:
        LOG.debug("dhcp port %s: no DHCP-enabled IPv4 subnet", port.id)
        return None
    ip, subnet = found
    server_id = server_identifier(subnet, ip)
    mtype = req.message_type
    if mtype == DISCOVER:
        reply_type = OFFER
    elif mtype == REQUEST:
        if req.server_id is not None and req.server_id != server_id:
            LOG.info("dhcp port %s: client chose server %s", port.id, req.server_id)
            return None
        wanted = req.requested_ip or (req.ciaddr if req.ciaddr != "0.0.0.0" else None)
        reply_type = ACK if wanted in (None, ip) else NAK
    elif mtype == INFORM:
        reply_type = ACK
    else:  # RELEASE, DECLINE (the address stays the port's), anything else
        LOG.info("dhcp port %s: %s, no reply", port.id, MESSAGE_NAMES.get(mtype, mtype))
        return None

    mac = server_mac or service_mac(network)
    if reply_type == NAK:
        opts = {
            OPT_MESSAGE_TYPE: bytes([NAK]),
            OPT_SERVER_ID: ipaddress.IPv4Address(server_id).packed,
            OPT_MESSAGE: b"requested address is not this port's",
        }
        siaddr, yiaddr, ciaddr = "0.0.0.0", "0.0.0.0", "0.0.0.0"
    else:
        opts, siaddr = reply_options(
            port,
            network,
            subnet,
            ip,
            reply_type,
            settings,
            lease=mtype != INFORM,
            metadata_route=metadata_route,
        )
        yiaddr = "0.0.0.0" if mtype == INFORM else ip
        ciaddr = req.ciaddr if mtype == INFORM else "0.0.0.0"
    frame_out = build_reply(
        req,
        reply_type,
        opts,
        server_mac=mac,
        server_ip=server_id,
        yiaddr=yiaddr,
        ciaddr=ciaddr,
        siaddr=siaddr,
    )
    LOG.info(
        "dhcp port %s: %s -> %s %s",
        port.id,
        MESSAGE_NAMES.get(mtype, mtype),
        MESSAGE_NAMES[reply_type],
        ip if reply_type != NAK else req.requested_ip,
    )
    return DhcpReply(frame_out, reply_type, None if reply_type == NAK else ip)


def build_reply(
    req: DhcpRequest,
    reply_type: int,
    opts: dict[int, bytes],
    *,
    server_mac: str,
    server_ip: str,
    yiaddr: str,
    ciaddr: str,
    siaddr: str,
) -> bytes:
    """The Ethernet/IPv4/UDP/BOOTP frame; addressed per RFC 2131 section 4.1."""
    if reply_type != NAK and ciaddr != "0.0.0.0":
        eth_dst, ip_dst = req.chaddr, ciaddr  # INFORM / renewal: the client has its address
    elif reply_type == NAK or req.flags & BROADCAST_FLAG:
        eth_dst, ip_dst = BROADCAST_MAC, "255.255.255.255"
    else:
        eth_dst, ip_dst = req.chaddr, yiaddr
    # Option 53 first, the rest by code, then END, padded to a BOOTP packet's length.
    options = bytearray(MAGIC_COOKIE)
    rest = sorted((c, v) for c, v in opts.items() if c != OPT_MESSAGE_TYPE and len(v) <= 255)
    for code, value in [(OPT_MESSAGE_TYPE, opts[OPT_MESSAGE_TYPE]), *rest]:
        options += bytes([code, len(value)]) + value
    options.append(255)
    bootp = (
        _BOOTP.pack(
            BOOTREPLY,
            1,  # Ethernet
            6,
            0,
            req.xid,
            0,
            req.flags,
            ipaddress.IPv4Address(ciaddr).packed,
            ipaddress.IPv4Address(yiaddr).packed,
            ipaddress.IPv4Address(siaddr).packed,
            ipaddress.IPv4Address(req.giaddr).packed,
            frames.mac_bytes(req.chaddr),
            b"",
            b"",
        )
        + options
    )
    bootp = bootp.ljust(MIN_BOOTP_LEN, b"\0")
    udp = frames.udp4(server_ip, ip_dst, SERVER_PORT, CLIENT_PORT, bootp)
    ip = frames.ipv4(server_ip, ip_dst, frames.IPPROTO_UDP, udp, ttl=64)
    return frames.ethernet(eth_dst, server_mac, frames.ETH_TYPE_IP, ip)
