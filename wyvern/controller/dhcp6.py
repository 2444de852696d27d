"""The distributed DHCPv6 server: one client frame + the port's records -> the reply frame.

Like DHCPv4 (wyvern/controller/dhcp.py), every chassis answers its own ports from the
local view (OVN's native DHCPv6; Neutron runs dnsmasq per network). Pure: bytes and
records in, bytes out; no I/O, no clock.

Which subnets: a network's IPv6 subnets with enable_dhcp and an `ipv6_address_mode` of
dhcpv6-stateful or dhcpv6-stateless (Neutron's modes; slaac subnets get nothing here).

Messages (RFC 8415; malformed ones raise Dhcp6Error and are dropped by the caller):
- Solicit -> Advertise, or Reply when the client asked for Rapid Commit; Request, Renew,
  Rebind -> Reply. The first IA_NA carries exactly the port's fixed addresses on its
  dhcpv6-stateful subnets, preferred and valid for the lease time, T1 1/2 and T2 7/8 of
  it (dnsmasq's ratios; the lease time is DHCPv4's, the `dhcp_lease_duration` setting).
  Addresses the client names that are not the port's come back with lifetimes 0, so it
  drops them. A port without such an address gets status NoAddrsAvail in each IA (and,
  in an Advertise, in the message too, as dnsmasq does for RFC 3315 clients); further
  IA_NAs likewise (NoBinding for a Renew or Rebind). IA_TA gets NoAddrsAvail and IA_PD
  NoPrefixAvail: no temporary addresses, no prefix delegation.
- Confirm -> Reply Success when every address it names is the port's, else NotOnLink
  (the client then solicits again and gets the API's address); no addresses, no reply.
- Release, Decline -> Reply Success (the address stays the port's, as with DHCPv4).
- Information-Request -> Reply with the configuration options only (stateless).
Messages that RFC 8415 section 16 says to discard (a Solicit naming a server, a Request
naming another server, an Information-Request with an IA...) get no reply.

Options in every answer: Server Identifier, a DUID-LL of the network's service MAC (stable
for the network's life; a router attached later does not change it), the client's
Client Identifier echoed; and in Advertise/Reply to Solicit, Request, Renew, Rebind and
Information-Request: 39 Client FQDN when the client sent or asked for it (the fqdn of
its address's dns_assignment; N set: no DNS update is done), 23 DNS servers (the IPv6
`dns_nameservers` of the port's DHCPv6 subnets), 24 domain search (the network's
`dns_domain`, else the `dns_domain` setting: what DHCPv4 sends as option 15, as Neutron's
dnsmasq sends its `dns_domain`), then the port's extra_dhcp_opts with ip_version 6
(wyvern/model/dhcp6_options.py), which override 23 and 24.

The reply goes from the service MAC and its EUI-64 link-local address, UDP 547, to the
client's MAC, address and port.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from wyvern.controller import frames
from wyvern.controller.dhcp import DhcpSettings, service_mac
from wyvern.model import dhcp6_options, dns
from wyvern.model.view import DhcpOpt, Network, Port, Subnet

LOG = logging.getLogger(__name__)

SERVER_PORT, CLIENT_PORT = 547, 546
ALL_SERVERS = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers
ALL_SERVERS_MAC = "33:33:00:01:00:02"
STATEFUL, STATELESS = "dhcpv6-stateful", "dhcpv6-stateless"

# Message types.
(SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE, RECONFIGURE,
 INFORMATION_REQUEST, RELAY_FORW, RELAY_REPL) = range(1, 14)  # fmt: skip
MESSAGE_NAMES = {
    SOLICIT: "SOLICIT",
    ADVERTISE: "ADVERTISE",
    REQUEST: "REQUEST",
    CONFIRM: "CONFIRM",
    RENEW: "RENEW",
    REBIND: "REBIND",
    REPLY: "REPLY",
    RELEASE: "RELEASE",
    DECLINE: "DECLINE",
    RECONFIGURE: "RECONFIGURE",
    INFORMATION_REQUEST: "INFORMATION-REQUEST",
    RELAY_FORW: "RELAY-FORW",
    RELAY_REPL: "RELAY-REPL",
}

# Option codes.
OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_DNS_SERVERS = dhcp6_options.OPT_DNS_SERVERS
OPT_DOMAIN_LIST = dhcp6_options.OPT_DOMAIN_LIST
OPT_IA_PD = 25
OPT_CLIENT_FQDN = 39  # RFC 4704
FQDN_S, FQDN_O, FQDN_N = 0x01, 0x02, 0x04

# Status codes.
(SUCCESS, UNSPEC_FAIL, NO_ADDRS_AVAIL, NO_BINDING, NOT_ON_LINK, USE_MULTICAST,
 NO_PREFIX_AVAIL) = range(7)  # fmt: skip

DUID_LL, HW_ETHERNET = 3, 1
MAX_DUID = 130  # type (2) + up to 128 octets (RFC 8415 section 11.1)

_OPT = struct.Struct("!HH")
_IA = struct.Struct("!III")  # IAID, T1, T2
_IAADDR = struct.Struct("!16sII")  # address, preferred, valid


class Dhcp6Error(ValueError):
    """The frame is not a well-formed DHCPv6 client message."""


@dataclass(frozen=True, slots=True)
class IaNa:
    iaid: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dhcp6Request:
    """The parts of a client message the server looks at."""

    message_type: int
    xid: bytes  # 3 octets
    client_id: bytes | None
    server_id: bytes | None
    ia_nas: tuple[IaNa, ...]
    other_ias: tuple[tuple[int, int], ...]  # (IA_TA or IA_PD, IAID): never served
    rapid_commit: bool
    eth_src: str
    ip_src: str
    udp_src: int
    oro: tuple[int, ...] = ()  # the option codes the client asks for (Option Request)
    fqdn_flags: int | None = None  # the flags of the client's Client FQDN option (39)

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))


@dataclass(frozen=True, slots=True)
class Dhcp6Reply:
    """A reply to send back to the port, and what it is (for logs and tests)."""

    frame: bytes
    message_type: int
    addresses: tuple[str, ...]
    status: int | None = None  # a message-level status code, when there is one

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))


# -- parsing ------------------------------------------------------------------------------
def parse_options(data: bytes) -> list[tuple[int, bytes]]:
    """Options (code, data) in order; Dhcp6Error when one is truncated."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        if i + _OPT.size > len(data):
            raise Dhcp6Error("truncated option header")
        code, length = _OPT.unpack_from(data, i)
        value = data[i + _OPT.size : i + _OPT.size + length]
        if len(value) != length:
            raise Dhcp6Error(f"option {code} is truncated")
        out.append((code, value))
        i += _OPT.size + length
    return out


def _parse_ia_na(value: bytes) -> IaNa:
    if len(value) < _IA.size:
        raise Dhcp6Error("IA_NA shorter than 12 octets")
    iaid, _, _ = _IA.unpack_from(value)
    addrs: list[str] = []
    for code, sub in parse_options(value[_IA.size :]):
        if code != OPT_IAADDR:
            continue
        if len(sub) < _IAADDR.size:
            raise Dhcp6Error("IA address shorter than 24 octets")
        raw, _, _ = _IAADDR.unpack_from(sub)
        addrs.append(str(ipaddress.IPv6Address(raw)))
    return IaNa(iaid, tuple(addrs))


def _other_ia(code: int, value: bytes) -> tuple[int, int]:
    if len(value) < (4 if code == OPT_IA_TA else _IA.size):
        raise Dhcp6Error(f"option {code} (an IA) is too short")
    return code, int.from_bytes(value[:4], "big")


def _single(options: list[tuple[int, bytes]], code: int, what: str) -> bytes | None:
    found = [v for c, v in options if c == code]
    if len(found) > 1:
        raise Dhcp6Error(f"more than one {what} option")
    if found and not 2 <= len(found[0]) <= MAX_DUID:
        raise Dhcp6Error(f"{what} of {len(found[0])} octets")
    return found[0] if found else None


def parse_request(frame: bytes) -> Dhcp6Request:
    """An Ethernet frame from a client -> Dhcp6Request, or Dhcp6Error."""
    eth = frames.parse_ethernet(frame)
    if eth is None or eth.ethertype != frames.ETH_TYPE_IPV6:
        raise Dhcp6Error("not an IPv6 frame")
    ip = frames.parse_ipv6(eth.payload)
    if ip is None or ip.next_header != frames.IPPROTO_UDP:
        raise Dhcp6Error("not an IPv6 UDP packet (extension headers are not followed)")
    udp = frames.parse_udp(ip.payload)
    if udp is None or udp.dst_port != SERVER_PORT:
        raise Dhcp6Error("not a UDP datagram to port 547")
    msg = udp.payload
    if len(msg) != udp.length - 8:
        raise Dhcp6Error("UDP length beyond the packet")
    if len(msg) < 4:
        raise Dhcp6Error("DHCPv6 message shorter than 4 octets")
    mtype = msg[0]
    if mtype in (ADVERTISE, REPLY, RECONFIGURE, RELAY_FORW, RELAY_REPL) or not (
        SOLICIT <= mtype <= INFORMATION_REQUEST
    ):
        raise Dhcp6Error(f"message type {mtype} is not a client message")
    options = parse_options(msg[4:])
    ia_nas = tuple(_parse_ia_na(v) for c, v in options if c == OPT_IA_NA)
    return Dhcp6Request(
        message_type=mtype,
        xid=msg[1:4],
        client_id=_single(options, OPT_CLIENTID, "client identifier"),
        server_id=_single(options, OPT_SERVERID, "server identifier"),
        ia_nas=ia_nas,
        other_ias=tuple(_other_ia(c, v) for c, v in options if c in (OPT_IA_TA, OPT_IA_PD)),
        rapid_commit=any(c == OPT_RAPID_COMMIT for c, _ in options),
        eth_src=eth.src,
        ip_src=ip.src,
        udp_src=udp.src_port,
        oro=tuple(
            code
            for c, v in options
            if c == OPT_ORO
            for (code,) in struct.iter_unpack("!H", v[: len(v) // 2 * 2])
        ),
        fqdn_flags=next((v[0] for c, v in options if c == OPT_CLIENT_FQDN and v), None),
    )


# -- building -----------------------------------------------------------------------------
def option(code: int, value: bytes) -> bytes:
    return _OPT.pack(code, len(value)) + value


def duid_ll(mac: str) -> bytes:
    """DUID-LL (RFC 8415 section 11.4) of an Ethernet MAC."""
    return struct.pack("!HH", DUID_LL, HW_ETHERNET) + frames.mac_bytes(mac)


def link_local(mac: str) -> str:
    """fe80::/64 with the modified EUI-64 interface identifier of MAC (RFC 4291)."""
    raw = bytearray(frames.mac_bytes(mac))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def status(code: int, message: str) -> bytes:
    return option(OPT_STATUS_CODE, struct.pack("!H", code) + message.encode())


def ia_na(iaid: int, t1: int, t2: int, inner: bytes) -> bytes:
    return option(OPT_IA_NA, _IA.pack(iaid, t1, t2) + inner)


def ia_address(address: str, preferred: int, valid: int) -> bytes:
    return option(OPT_IAADDR, _IAADDR.pack(ipaddress.IPv6Address(address).packed, preferred, valid))


# -- the server ---------------------------------------------------------------------------
def dhcp6_subnets(subnets: Sequence[Subnet]) -> list[Subnet]:
    """The subnets a DHCPv6 server serves (enable_dhcp, a DHCPv6 address mode)."""
    return [
        s
        for s in subnets
        if s.ip_version == 6 and s.enable_dhcp and s.ipv6_address_mode in (STATEFUL, STATELESS)
    ]


def stateful_addresses(port: Port, subnets: Sequence[Subnet]) -> list[tuple[str, Subnet]]:
    """The port's fixed addresses on its dhcpv6-stateful subnets, with those subnets."""
    by_id = {s.id: s for s in dhcp6_subnets(subnets) if s.ipv6_address_mode == STATEFUL}
    return [
        (str(ipaddress.IPv6Address(f.ip_address)), by_id[f.subnet_id])  # (canonical text)
        for f in port.fixed_ips
        if f.subnet_id in by_id
    ]


def port_subnets(port: Port, subnets: Sequence[Subnet]) -> list[Subnet]:
    """The DHCPv6 subnets the port has an address on; all of them when it has none."""
    served = dhcp6_subnets(subnets)
    mine = {f.subnet_id for f in port.fixed_ips}
    return [s for s in served if s.id in mine] or served


def dns_servers(port: Port, subnets: Sequence[Subnet]) -> list[str]:
    out: list[str] = []
    for s in port_subnets(port, subnets):
        for d in s.dns_nameservers:
            addr = ipaddress.ip_address(d)
            if addr.version == 6 and not addr.is_unspecified and str(addr) not in out:
                out.append(str(addr))
    return out


def extra_options(opts: Sequence[DhcpOpt], port_id: str = "") -> dict[int, bytes]:
    """Port extra_dhcp_opts (ip_version 6) -> {code: data}. The API refuses what cannot
    be encoded; an option stored before that check is logged and left out."""
    out: dict[int, bytes] = {}
    for opt in opts:
        if opt.ip_version != 6:
            continue
        try:
            code, value = dhcp6_options.encode(opt.opt_name, opt.opt_value)
        except dhcp6_options.Dhcp6OptionError as exc:
            LOG.warning("dhcp6 port %s: ignoring option %s: %s", port_id, opt.opt_name, exc)
            continue
        out[code] = value
    return out


def client_fqdn(
    req: Dhcp6Request, port: Port, subnets: Sequence[Subnet], settings: DhcpSettings
) -> bytes | None:
    """The Client FQDN option (RFC 4704) when the client sent one or asked for it: the
    fqdn of the port's first DHCPv6 address in its dns_assignment (wyvern.model.dns), N
    set (we update no DNS), O set when that overrides the client's S."""
    if req.fqdn_flags is None and OPT_CLIENT_FQDN not in req.oro:
        return None
    ips = [ip for ip, _ in stateful_addresses(port, subnets)] or [
        f.ip_address for f in port.fixed_ips if ":" in f.ip_address
    ]
    if not ips:
        return None
    _, fqdn = dns.assignment(port.dns_name, ips[0], settings.domain_name)
    flags = FQDN_N | (FQDN_O if (req.fqdn_flags or 0) & FQDN_S else 0)
    try:
        return bytes([flags]) + dhcp6_options.encode_names([fqdn])
    except dhcp6_options.Dhcp6OptionError:
        return None


def config_options(
    port: Port,
    network: Network,
    subnets: Sequence[Subnet],
    settings: DhcpSettings,
    req: Dhcp6Request | None = None,
) -> bytes:
    """DNS servers, domain search (the network's dns_domain, else the setting), the
    client's FQDN when it asks, and the port's extra options, by code."""
    opts: dict[int, bytes] = {}
    fqdn = client_fqdn(req, port, subnets, settings) if req is not None else None
    if fqdn is not None:
        opts[OPT_CLIENT_FQDN] = fqdn
    servers = dns_servers(port, subnets)
    if servers:
        opts[OPT_DNS_SERVERS] = b"".join(ipaddress.IPv6Address(d).packed for d in servers)
    domain = dns.dhcp_domain(network.dns_domain, settings.domain_name)
    if domain:
        try:
            opts[OPT_DOMAIN_LIST] = dhcp6_options.encode_names([domain])
        except dhcp6_options.Dhcp6OptionError:
            LOG.warning("dhcp6: the domain name %r cannot be sent", domain)
    opts.update(extra_options(port.extra_dhcp_opts, port.id))
    return b"".join(option(code, value) for code, value in sorted(opts.items()))


def _discard(req: Dhcp6Request, server_duid: bytes) -> str | None:
    """Why RFC 8415 section 16 has the server discard REQ (None: answer it)."""
    mtype = req.message_type
    if mtype != INFORMATION_REQUEST and req.client_id is None:
        return "no client identifier"
    if mtype in (SOLICIT, CONFIRM, REBIND) and req.server_id is not None:
        return "names a server"
    if mtype in (REQUEST, RENEW, RELEASE, DECLINE) and req.server_id != server_duid:
        return "for another server" if req.server_id else "names no server"
    if mtype == INFORMATION_REQUEST:
        if req.server_id is not None and req.server_id != server_duid:
            return "for another server"
        if req.ia_nas or req.other_ias:
            return "an Information-Request with an IA"
    return None


def answer(
    req: Dhcp6Request,
    port: Port,
    network: Network,
    subnets: Sequence[Subnet],
    settings: DhcpSettings | None = None,
) -> Dhcp6Reply | None:
    """The reply to REQ from PORT (None: no reply is due). SUBNETS: the network's."""
    settings = settings or DhcpSettings()
    if not dhcp6_subnets(subnets):
        LOG.debug("dhcp6 port %s: no DHCPv6 subnet on its network", port.id)
        return None
    mac = service_mac(network)
    duid = duid_ll(mac)
    why = _discard(req, duid)
    if why is not None:
        LOG.info("dhcp6 port %s: %s discarded: %s", port.id, req.name, why)
        return None
    mine = [ip for ip, _ in stateful_addresses(port, subnets)]
    mtype = req.message_type
    body = bytearray(option(OPT_SERVERID, duid))
    if req.client_id is not None:
        body += option(OPT_CLIENTID, req.client_id)
    given: tuple[str, ...] = ()
    top_status: int | None = None
    if mtype in (SOLICIT, REQUEST, RENEW, REBIND):
        reply_type = REPLY if mtype != SOLICIT or (req.rapid_commit and mine) else ADVERTISE
        if reply_type == REPLY and mtype == SOLICIT:
            body += option(OPT_RAPID_COMMIT, b"")
        lease = settings.lease_time
        missing = NO_BINDING if mtype in (RENEW, REBIND) and not mine else NO_ADDRS_AVAIL
        for n, ia in enumerate(req.ia_nas):
            if n == 0 and mine:
                inner = b"".join(ia_address(a, lease, lease) for a in mine)
                # What the client holds that is not the port's: valid for 0 s (drop it).
                inner += b"".join(ia_address(a, 0, 0) for a in ia.addresses if a not in mine)
                body += ia_na(ia.iaid, lease // 2, lease * 7 // 8, inner)
                given = tuple(mine)
            else:
                text = "no address for this port" if not mine else "one IA_NA is served"
                body += ia_na(ia.iaid, 0, 0, status(missing, text))
        for code, iaid in req.other_ias:  # temporary addresses, prefix delegation: none
            if code == OPT_IA_TA:
                body += option(code, iaid.to_bytes(4, "big") + status(NO_ADDRS_AVAIL, ""))
            else:
                body += option(code, _IA.pack(iaid, 0, 0) + status(NO_PREFIX_AVAIL, ""))
        if not mine and reply_type == ADVERTISE:
            top_status = NO_ADDRS_AVAIL
            body += status(NO_ADDRS_AVAIL, "no address for this port")
        body += config_options(port, network, subnets, settings, req)
    elif mtype == CONFIRM:
        named = [a for ia in req.ia_nas for a in ia.addresses]
        if not named:
            LOG.info("dhcp6 port %s: CONFIRM without addresses, no reply", port.id)
            return None
        reply_type = REPLY
        top_status = SUCCESS if all(a in mine for a in named) else NOT_ON_LINK
        body += status(top_status, "" if top_status == SUCCESS else "not this port's address")
    elif mtype in (RELEASE, DECLINE):
        reply_type, top_status = REPLY, SUCCESS
        body += status(SUCCESS, "")
    else:  # INFORMATION_REQUEST
        reply_type = REPLY
        body += config_options(port, network, subnets, settings, req)
    message = bytes([reply_type]) + req.xid + bytes(body)
    src = link_local(mac)
    udp = frames.udp6(src, req.ip_src, SERVER_PORT, req.udp_src, message)
    ip = frames.ipv6(src, req.ip_src, frames.IPPROTO_UDP, udp)
    frame = frames.ethernet(req.eth_src, mac, frames.ETH_TYPE_IPV6, ip)
    LOG.info(
        "dhcp6 port %s: %s -> %s %s",
        port.id,
        req.name,
        MESSAGE_NAMES[reply_type],
        ",".join(given) or (f"status {top_status}" if top_status is not None else ""),
    )
    return Dhcp6Reply(frame, reply_type, given, top_status)


def handle(
    frame: bytes,
    port: Port,
    network: Network,
    subnets: Sequence[Subnet],
    settings: DhcpSettings | None = None,
) -> Dhcp6Reply | None:
    """Parse and answer one client frame (Dhcp6Error if it is malformed)."""
    return answer(parse_request(frame), port, network, subnets, settings)
