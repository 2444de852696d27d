"""What a packet sent to the controller is for: the first byte of the punt's userdata.

Apps punt with `punt(userdata)`: the packet goes through the meter of the local port it
came from (a flood is dropped in the datapath, per port) and then to the agent with
`controller(userdata=...)`; the agent's packet-in dispatcher routes on the first byte.
One table, so a punt can never be misread by the wrong service.
"""

from __future__ import annotations

from wyvern.ir import Action, Controller, Flow, Goto, Load, Meter, table
from wyvern.ir.meters import punt_meter

PUNT_DHCP4 = 0x01  # DHCPv4 client → server packets from a local port
PUNT_DHCP6 = 0x02  # DHCPv6 client → server packets from a local port
PUNT_ICMP4_ERROR = 0x03  # generate ICMP time-exceeded / unreachable (routing)
PUNT_ND_RA = 0x04  # router solicitations (IPv6 RA)
PUNT_ND_NS = 0x05  # neighbour solicitations for a known address: answer with an NA
PUNT_ARP_LEARN = 0x06  # ARP to a router gateway from outside: learn the sender's MAC
PUNT_ARP_REQUEST = 0x07  # a next hop on an external network has no MAC yet: ARP for it
PUNT_ND_LEARN = 0x08  # NS/NA to a router gateway from outside: answer an NS, learn the MAC
PUNT_ND_REQUEST = 0x09  # an IPv6 next hop on an external network has no MAC yet: NS for it
PUNT_ICMP6_ERROR = 0x0A  # generate ICMPv6 time exceeded / unreachable / packet too big

NAMES = {
    PUNT_DHCP4: "dhcp4",
    PUNT_DHCP6: "dhcp6",
    PUNT_ICMP4_ERROR: "icmp4-error",
    PUNT_ND_RA: "ipv6-ra",
    PUNT_ND_NS: "nd-ns",
    PUNT_ARP_LEARN: "arp-learn",
    PUNT_ARP_REQUEST: "arp-request",
    PUNT_ND_LEARN: "nd-learn",
    PUNT_ND_REQUEST: "nd-request",
    PUNT_ICMP6_ERROR: "icmp6-error",
}

# Every punt's userdata: the punt stage has one controller(userdata) flow per entry, so a
# punt site may use only these (ICMP errors carry their type and code).
USERDATA = (
    bytes([PUNT_DHCP4]),
    bytes([PUNT_DHCP6]),
    bytes([PUNT_ND_NS]),
    bytes([PUNT_ND_RA]),
    bytes([PUNT_ICMP4_ERROR, 11, 0]),  # time exceeded
    bytes([PUNT_ICMP4_ERROR, 3, 0]),  # net unreachable
    bytes([PUNT_ARP_LEARN]),
    bytes([PUNT_ARP_REQUEST]),
    bytes([PUNT_ND_LEARN]),
    bytes([PUNT_ND_REQUEST]),
    bytes([PUNT_ICMP6_ERROR, 3, 0]),  # time exceeded (hop limit)
    bytes([PUNT_ICMP6_ERROR, 1, 0]),  # destination unreachable: no route
    bytes([PUNT_ICMP6_ERROR, 2, 0]),  # packet too big (the MTU: the egress network's)
)

# The per-port meter in the datapath, in front of the agent's own per-port token bucket
# (wyvern/controller/packetin.py, 20/s, burst 40): what passes it costs the agent a
# packet-in; what does not never leaves the datapath.
METER_RATE = 100  # packets per second, per local port
METER_BURST = 100


def code(userdata: bytes) -> int:
    """The punt_code register value of USERDATA (its bytes, big-endian, padded to 3)."""
    return int.from_bytes(userdata.ljust(3, b"\0"), "big")


def punt(userdata: bytes) -> tuple[Action, ...]:
    """The actions that send a packet to the agent: through the meter of the port it came
    from (stage punt_meter), then controller(userdata) (stage punt). Nothing may follow."""
    if userdata not in USERDATA:
        raise ValueError(f"punt userdata {userdata.hex()} is not in punts.USERDATA")
    return (Load("punt_code", code(userdata)), Goto("punt_meter"))


def meter_id(ofport: int) -> int:
    """The meter of a local port (wyvern.ir.meters declares every id space)."""
    return punt_meter(ofport)


# flow(classifier cookie, ofport, meter id): a flow per local port, made by template
METER_FLOW = table("punt_meter").template(
    priority=100,
    cookie_app="classifier",
    varying=("in_port",),
    actions=(Meter(1), Goto("punt")),
    action_values=(0,),
)


def meter_flow(cookie: int, ofport: int) -> Flow:
    """A local port's punts go through its own meter (COOKIE: the classifier's)."""
    return METER_FLOW.flow(cookie, ofport, meter_id(ofport))


def punt_flows(cookie: int) -> list[Flow]:
    """One controller(userdata) flow per punt code."""
    return [
        table("punt").flow(
            priority=100,
            cookie=cookie,
            match={"punt_code": code(u)},
            actions=(Controller(userdata=u),),
        )
        for u in USERDATA
    ]
