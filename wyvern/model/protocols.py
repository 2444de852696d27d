"""IP protocol names a security-group rule may give (neutron-lib's, plus the legacy
`icmpv6`): one table, so the API that validates a rule and the app that enforces it can
never disagree on what a name means."""

from __future__ import annotations

PROTOCOL_NUMBERS: dict[str, int] = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
LEGACY_NAMES: dict[str, int] = {"icmpv6": 58}  # accepted, rewritten to ipv6-icmp on IPv6
PROTOCOLS: dict[str, int] = {**PROTOCOL_NUMBERS, **LEGACY_NAMES}
