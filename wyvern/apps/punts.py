"""What a packet sent to the controller is for: the first byte of the punt's userdata.

Apps put these in `Controller(userdata=...)` actions; the agent's packet-in dispatcher
routes on them. One table, so a punt can never be misread by the wrong service.
"""

from __future__ import annotations

PUNT_DHCP4 = 0x01  # DHCPv4 client → server packets from a local port
PUNT_DHCP6 = 0x02  # DHCPv6 client packets
PUNT_ICMP4_ERROR = 0x03  # generate ICMP time-exceeded / unreachable (routing)
PUNT_ND_RA = 0x04  # router solicitations (IPv6 RA)
PUNT_ND_NS = 0x05  # neighbour solicitations for a known address: answer with an NA

NAMES = {
    PUNT_DHCP4: "dhcp4",
    PUNT_DHCP6: "dhcp6",
    PUNT_ICMP4_ERROR: "icmp4-error",
    PUNT_ND_RA: "ipv6-ra",
    PUNT_ND_NS: "nd-ns",
}
