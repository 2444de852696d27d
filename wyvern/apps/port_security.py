"""Port security: anti-spoofing at ingress (port_security, port_security_nd,
port_security_l2) and egress (port_security_egress, port_security_egress_l2).

Ingress, for a local port with port_security_enabled (Neutron semantics, as OVN's
ls_in_port_sec_* stages): a packet continues to pre_acl only if

- its eth_src is the port's MAC or an allowed_address_pairs MAC, and
- IPv4: the source is one of that MAC's addresses (fixed IPs for the port MAC, the
  pair's IP or CIDR for a pair MAC), or it is a DHCP discover/request (0.0.0.0:68 →
  255.255.255.255:67) from a MAC with IPv4 addresses or none;
- ARP: arp_sha is that MAC and arp_spa one of its addresses (or 0.0.0.0: an RFC 5227
  probe);
- IPv6: the source is one of its addresses or its EUI-64 link-local address; neighbour
  solicitations carry nd_sll = the MAC or none, advertisements nd_target = one of its
  addresses and nd_tll = the MAC or none; DAD solicitations and MLD reports from :: to
  ff02::/16 are allowed; router advertisements are dropped (only the router interfaces
  advertise, from the agent: a VM's RA would hijack its neighbours' default route, and
  Neutron drops them too);
- a MAC with no address at all (a port without fixed IPs) is checked at L2 only.

Everything else from the port is dropped. Without port security everything passes.

How the stages share the work (so a port costs ~11 flows, not ~25):
- port_security: per (MAC, address) source checks, which also check the MAC: IPv4 and
  ARP (arp_sha, arp_spa) → pre_acl; IPv6 → port_security_nd. Shared flows send what is
  allowed by its shape alone (DHCP discover, DAD, MLD from ::) to port_security_l2.
  Everything else drops here, so a spoofed MAC or IP is dropped at port_security.
- port_security_nd (eth_src and ipv6_src already checked): per MAC nd_sll; per (MAC,
  target) nd_target with nd_tll; shared: NS without sll passes, other ND and every RA
  drops, non-ND passes.
- port_security_l2: eth_src must be one of the port's MACs (a MAC with IPv6 addresses
  only sends no IPv4 at all, so no DHCP).

Egress (port_security_egress), for a local destination port with port security: eth_dst
must be one of its MACs or a broadcast/multicast address; for its own MACs, IPv4/IPv6
destinations must be its addresses or broadcast/multicast. Per (MAC, address) flows
pass unicast IP; shared flows pass multicast eth_dst, drop other IP, and send broadcast
and multicast IP and non-IP to port_security_egress_l2, which checks eth_dst per MAC.

Flows match the network key with the port key (port keys are unique per network only).
Owner: ("port", id) of local ports; the shared flows are global ("app" owner).
Per-port flows are built from FlowTemplates (one checked shape each, values filled in).
"""

from __future__ import annotations

import ipaddress

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    Flow,
    Goto,
    MatchValue,
    match,
    parse_value,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.pipeline import StageName
from wyvern.model.view import LocalView, Port

ZERO_MAC = "00:00:00:00:00:00"
MCAST_MAC = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # group bit: broadcast + multicast

# port_security
P_NO_SECURITY = 100
P_ALLOW = 90
P_SHARED = 85  # shape-only allows (DHCP, DAD, MLD) → port_security_l2
P_L2_ONLY = 80
# port_security_nd
P_ND = 90
P_ND_DROP = 80
# port_security_l2 / port_security_egress_l2
P_V4_DROP = 60
P_L2 = 50
# port_security_egress
P_EG_NO_SECURITY = 110
P_EG_MCAST = 100
P_EG_L2_ONLY = 95
P_EG_ALLOW = 90
P_EG_SHARED = 85
P_EG_IP_DROP = 80
P_EG_OTHER = 1

ND_ROUTER_ADVERT = 134

Addr = tuple[int, int | None]  # (value, mask or None): an address or CIDR as a match value


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80::/64 + modified EUI-64 of a MAC (what a VM's kernel configures by default)."""
    return ipaddress.IPv6Address(_link_local(int(mac.replace(":", ""), 16)))


def _link_local(mac: int) -> int:
    flipped = mac ^ (0x02 << 40)
    iid = (flipped >> 24) << 40 | 0xFFFE << 24 | flipped & 0xFFFFFF
    return 0xFE80 << 112 | iid


def _addr(text: str) -> tuple[int, Addr]:
    """(IP version, match value) of an address or CIDR (host bits cleared, as Neutron)."""
    v6 = ":" in text
    value, mask = parse_value("ipv6_src" if v6 else "ipv4_src", text)
    full = (1 << (128 if v6 else 32)) - 1
    return (6 if v6 else 4), (value, None if mask == full else mask)


def _mac(text: str) -> int:
    return parse_value("eth_src", text)[0]


def _addresses(port: Port) -> dict[int, tuple[list[Addr], list[Addr]]]:
    """allowed_addresses as match values: MAC -> (IPv4 addresses, IPv6 addresses)."""
    mine: tuple[list[Addr], list[Addr]] = ([], [])
    out: dict[int, tuple[list[Addr], list[Addr]]] = {_mac(port.mac): mine}
    for ip in port.ips:
        version, a = _addr(ip)
        if a not in mine[version == 6]:
            mine[version == 6].append(a)
    for pair in port.allowed_address_pairs:
        lists = out.setdefault(_mac(pair.mac_address), ([], []))
        version, a = _addr(pair.ip_address)
        if a not in lists[version == 6]:
            lists[version == 6].append(a)
    return out


APP = "port_security"
_PRE_ACL = (Goto("pre_acl"),)
_TO_OUTPUT = (Goto("qos_to_vm"),)  # (QoS of what the VM receives, then output)
_IN = ("network_key", "src_port_key")
_EG = ("network_key", "dst_port_key")
_ICMP6: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6}

_ps, _nd, _l2 = table("port_security"), table("port_security_nd"), table("port_security_l2")
_eg, _eg_l2 = table("port_security_egress"), table("port_security_egress_l2")

IN_NO_SECURITY = _ps.template(priority=P_NO_SECURITY, cookie_app=APP, varying=_IN, actions=_PRE_ACL)
IN_V4 = _ps.template(
    priority=P_ALLOW,
    cookie_app=APP,
    varying=(*_IN, "eth_src"),
    masked=("ipv4_src",),
    actions=_PRE_ACL,
)
IN_ARP = _ps.template(
    priority=P_ALLOW,
    cookie_app=APP,
    varying=(*_IN, "eth_src", "arp_sha"),
    masked=("arp_spa",),
    fixed={"eth_type": ETH_TYPE_ARP},
    actions=_PRE_ACL,
)
IN_ARP_PROBE = _ps.template(
    priority=P_ALLOW,
    cookie_app=APP,
    varying=(*_IN, "eth_src", "arp_sha"),
    fixed={"eth_type": ETH_TYPE_ARP, "arp_spa": "0.0.0.0"},
    actions=_PRE_ACL,
)
IN_V6 = _ps.template(
    priority=P_ALLOW,
    cookie_app=APP,
    varying=(*_IN, "eth_src"),
    masked=("ipv6_src",),
    actions=(Goto("port_security_nd"),),
)
IN_L2_ONLY = _ps.template(
    priority=P_L2_ONLY, cookie_app=APP, varying=(*_IN, "eth_src"), actions=_PRE_ACL
)
ND_NS = _nd.template(
    priority=P_ND,
    cookie_app=APP,
    varying=(*_IN, "eth_src", "nd_sll"),
    fixed={**_ICMP6, "icmpv6_type": 135},
    actions=_PRE_ACL,
)
ND_NA = _nd.template(
    priority=P_ND,
    cookie_app=APP,
    varying=(*_IN, "eth_src", "nd_tll"),
    masked=("nd_target",),
    fixed={**_ICMP6, "icmpv6_type": 136},
    actions=_PRE_ACL,
)
L2_NO_V4 = _l2.template(
    priority=P_V4_DROP,
    cookie_app=APP,
    varying=(*_IN, "eth_src"),
    fixed={"eth_type": ETH_TYPE_IP},
)
L2_MAC = _l2.template(priority=P_L2, cookie_app=APP, varying=(*_IN, "eth_src"), actions=_PRE_ACL)
EG_NO_SECURITY = _eg.template(
    priority=P_EG_NO_SECURITY, cookie_app=APP, varying=_EG, actions=_TO_OUTPUT
)
EG_L2_ONLY = _eg.template(
    priority=P_EG_L2_ONLY, cookie_app=APP, varying=(*_EG, "eth_dst"), actions=_TO_OUTPUT
)
EG_V4 = _eg.template(
    priority=P_EG_ALLOW,
    cookie_app=APP,
    varying=(*_EG, "eth_dst"),
    masked=("ipv4_dst",),
    actions=_TO_OUTPUT,
)
EG_V6 = _eg.template(
    priority=P_EG_ALLOW,
    cookie_app=APP,
    varying=(*_EG, "eth_dst"),
    masked=("ipv6_dst",),
    actions=_TO_OUTPUT,
)
EG_MAC = _eg_l2.template(
    priority=P_L2, cookie_app=APP, varying=(*_EG, "eth_dst"), actions=_TO_OUTPUT
)


def _stage_cookie(stage: StageName) -> int:
    """Stage-wide flows carry the stage's default cookie (tools name it by the stage)."""
    return encode("pipeline", f"default:{stage}")


def _shared_flows() -> list[Flow]:
    """What does not depend on the port: shape-only allows, drops and stage defaults."""
    to_l2 = (Goto("port_security_l2"),)
    from_unspecified: dict[str, MatchValue] = {**_ICMP6, "ipv6_src": "::", "ipv6_dst": "ff02::/16"}
    out = [
        _ps.flow(
            priority=P_SHARED,
            cookie=_stage_cookie("port_security"),
            match=match(
                ipv4_src="0.0.0.0",
                ipv4_dst="255.255.255.255",
                ip_proto=IPPROTO_UDP,
                udp_src=68,
                udp_dst=67,
            ),
            actions=to_l2,
        ),
        _ps.flow(
            priority=P_SHARED,
            cookie=_stage_cookie("port_security"),
            match=match(**from_unspecified, icmpv6_type=135, nd_sll=ZERO_MAC),
            actions=to_l2,
        ),
        *(
            _ps.flow(
                priority=P_SHARED,
                cookie=_stage_cookie("port_security"),
                match=match(**from_unspecified, icmpv6_type=mld),
                actions=to_l2,
            )
            for mld in (131, 143)
        ),
        _nd.flow(
            priority=P_ND,
            cookie=_stage_cookie("port_security_nd"),
            match=match(**_ICMP6, icmpv6_type=135, nd_sll=ZERO_MAC),
            actions=_PRE_ACL,
        ),
        *(
            _nd.flow(
                priority=P_ND_DROP,
                cookie=_stage_cookie("port_security_nd"),
                match=match(**_ICMP6, icmpv6_type=t),
            )
            for t in (ND_ROUTER_ADVERT, 135, 136)
        ),
        _eg.flow(
            priority=P_EG_MCAST,
            cookie=_stage_cookie("port_security_egress"),
            match=match(eth_dst=MCAST_MAC),
            actions=_TO_OUTPUT,
        ),
        *(
            _eg.flow(
                priority=P_EG_SHARED,
                cookie=_stage_cookie("port_security_egress"),
                match=match(**{field: dst}),
                actions=(Goto("port_security_egress_l2"),),
            )
            for field, dst in (
                ("ipv4_dst", "255.255.255.255"),
                ("ipv4_dst", "224.0.0.0/4"),
                ("ipv6_dst", "ff00::/8"),
            )
        ),
        *(
            _eg.flow(
                priority=P_EG_IP_DROP,
                cookie=_stage_cookie("port_security_egress"),
                match=match(eth_type=eth_type),
            )
            for eth_type in (ETH_TYPE_IP, ETH_TYPE_IPV6)
        ),
        _eg.flow(
            priority=P_EG_OTHER,
            cookie=_stage_cookie("port_security_egress"),
            actions=(Goto("port_security_egress_l2"),),
        ),
    ]
    return out


class PortSecurity(App):
    name = "port_security"
    owner_tables = {"port": "bindings"}

    def global_flows(self) -> list[Flow]:
        return _shared_flows()

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, _ = found
        cookie = encode("port_security", port_id)
        nk, pk = net.key, port.key
        if not port.port_security_enabled:
            return [IN_NO_SECURITY.flow(cookie, nk, pk), EG_NO_SECURITY.flow(cookie, nk, pk)]
        out: list[Flow] = []
        add = out.append
        for mac, (v4, v6) in _addresses(port).items():
            add(L2_MAC.flow(cookie, nk, pk, mac))
            if not v4 and not v6:
                add(IN_L2_ONLY.flow(cookie, nk, pk, mac))
                add(EG_L2_ONLY.flow(cookie, nk, pk, mac))
                continue
            for a in v4:
                add(IN_V4.flow(cookie, nk, pk, mac, a))
                add(IN_ARP.flow(cookie, nk, pk, mac, mac, a))
                add(EG_V4.flow(cookie, nk, pk, mac, a))
            if v4:
                add(IN_ARP_PROBE.flow(cookie, nk, pk, mac, mac))
            else:
                add(L2_NO_V4.flow(cookie, nk, pk, mac))
            add(ND_NS.flow(cookie, nk, pk, mac, mac))
            ll: Addr = (_link_local(mac), None)
            for a in (*v6, ll) if ll not in v6 else v6:
                add(IN_V6.flow(cookie, nk, pk, mac, a))
                add(EG_V6.flow(cookie, nk, pk, mac, a))
                add(ND_NA.flow(cookie, nk, pk, mac, mac, a))
                add(ND_NA.flow(cookie, nk, pk, mac, 0, a))
            add(EG_MAC.flow(cookie, nk, pk, mac))
        return out
