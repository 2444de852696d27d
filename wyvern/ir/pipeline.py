"""The pipeline: every OpenFlow stage, declared once, by name, in order.

This is the only place that knows table numbers, and it derives them: the stage at
position i of `PIPELINE` is table `TABLE_BASE + i`, so classification is table 0, where
OVS starts every packet. Apps name stages (`table("acl")`), never numbers, and tests that
compare flow dumps should mask table numbers so that adding a stage breaks nothing.

Each stage declares (as faucet's valve_table does):
- its owning app: the only app (besides "pipeline" defaults) allowed to put flows there;
- the match fields its flows may use (IR field names from `ir.FIELDS`, or register names);
- the fields and registers its actions may write (set_field, load, move, push/pop_vlan,
  dec_ttl, ct exec);
- the stages it may continue to: `goto_table` (forward only), `resubmit` (any direction,
  returns) and `ct(table=…)` (recirculation after conntrack);
- its miss: what a packet that no flow of the owner matched does (faucet's `miss_goto`):
  drop, or go on to a declared next stage. Every stage's priority-0 flow is made from
  this declaration in one place (`wyvern.ir.misses`); no app writes a default.

Walk of a packet (OVN style):
- A trunk's VIF: classification sends a frame tagged with a subport's VLAN to the trunk
  stage, which untags it into the subport's patch port; it comes back in by the peer, the
  subport's own port, as any VIF's frame. What leaves by the subport's port comes back by
  the peer, and the trunk stage tags it out of the parent's VIF (wyvern.apps.trunk).
- From a local VIF: classification → qos_from_vm → qos_from_vm_pps → port_security
  (→ port_security_nd or port_security_l2) → pre_acl →ct→ acl → services → metadata →
  l2_lookup → (to a router MAC: router_input → dnat →ct→ meter_ingress → routing →
  mtu_check → arp_resolve → meter_egress → snat → resubmit l2_lookup in the next
  network) → pre_acl_egress →ct→ acl_egress → port_security_egress
  (→ port_security_egress_l2) → qos_to_vm → qos_to_vm_pps → output.
- From a tunnel: classification reads the network key (VNI) and both port keys
  (tun_metadata0), sets flag_from_tunnel and goes straight to pre_acl_egress: the ingress
  half already ran on the sending chassis.
- To a remote port: l2_lookup goes straight to output, which sets the tunnel fields.
- TCP to the metadata service leaves the metadata stage by the metadata port; its
  replies come back in by it: classification → metadata_reply →ct→ metadata_out →
  pre_acl_egress (the VM's egress half).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from wyvern.ir.cookies import AppName

StageName = Literal[
    "classification",
    "qos_from_vm",
    "qos_from_vm_pps",
    "port_security",
    "port_security_nd",
    "port_security_l2",
    "pre_acl",
    "acl",
    "services",
    "metadata",
    "metadata_reply",
    "metadata_out",
    "l2_lookup",
    "router_input",
    "dnat",
    "meter_ingress",
    "routing",
    "mtu_check",
    "arp_resolve",
    "meter_egress",
    "snat",
    "pre_acl_egress",
    "acl_egress",
    "port_security_egress",
    "port_security_egress_l2",
    "qos_to_vm",
    "qos_to_vm_pps",
    "output",
    "punt_meter",
    "punt",
    "meter_count",
    "trunk",
]
Direction = Literal["ingress", "l3", "egress"]

TABLE_BASE = 0


@dataclass(frozen=True, slots=True)
class Miss:
    """What a stage does with a packet none of its owner's flows matched."""

    action: Literal["drop", "goto", "resubmit"]
    target: StageName | None = None

    def __str__(self) -> str:
        return self.action if self.target is None else f"{self.action} {self.target}"


DROP = Miss("drop")


def goto(target: StageName) -> Miss:
    return Miss("goto", target)


def resubmit(target: StageName) -> Miss:
    return Miss("resubmit", target)


@dataclass(frozen=True, slots=True)
class Stage:
    name: StageName
    direction: Direction
    owner: AppName
    description: str
    match: frozenset[str]
    writes: frozenset[str]
    next: tuple[StageName, ...]
    miss: Miss


def _stage(
    name: StageName,
    direction: Direction,
    owner: AppName,
    description: str,
    *,
    match: Iterable[str],
    writes: Iterable[str] = (),
    next: Sequence[StageName] = (),
    miss: Miss,
) -> Stage:
    return Stage(
        name, direction, owner, description, frozenset(match), frozenset(writes), tuple(next), miss
    )


# Field groups, to keep the declarations readable.
_IP = ("eth_type", "ip_proto")
_L3 = (*_IP, "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst")
_L4 = (
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
    "sctp_src",
    "sctp_dst",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    "icmpv6_type",
    "icmpv6_code",
)
_ARP = ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")
_ND = ("icmpv6_type", "icmpv6_code", "nd_target", "nd_sll", "nd_tll")
_CT = ("ct_state", "ct_zone", "ct_mark", "ct_label")
_ACL = (*_L3, *_L4, *_CT, "conj_id", "ip_frag")
_ANSWER = (
    "eth_src",
    "eth_dst",
    *_ARP,
    "ipv4_src",
    "ipv4_dst",
    "ipv6_src",
    "ipv6_dst",
    "icmp_type",
    "icmp_code",
    "icmpv6_type",
    "nd_target",
    "nd_tll",
    "nw_ttl",
    "dst_port_key",
    "flag_allow_loopback",
)

PIPELINE: tuple[Stage, ...] = (
    # ---- ingress: from a port towards the logical switch ------------------------------
    _stage(
        "classification",
        "ingress",
        "classifier",
        "in_port or tunnel (VNI, tun_metadata0) → network key, port keys, ct zone",
        match=("in_port", "tun_id", "tun_src", "tun_dst", "tun_metadata0", "vlan_vid", "eth_type"),
        writes=(
            "network_key",
            "src_port_key",
            "dst_port_key",
            "port_ct_zone",
            "flag_from_tunnel",
            "vlan_vid",
            "router_key",
            "addr_scope",
        ),
        next=(
            "qos_from_vm",
            "port_security",
            "metadata_reply",
            "l2_lookup",
            "pre_acl_egress",
            "routing",
            "trunk",
        ),
        miss=DROP,  # an unknown in_port
    ),
    _stage(
        "qos_from_vm",
        "ingress",
        "qos",
        "QoS of what a VM sends: its bandwidth meter (egress rule), DSCP mark (set_field)",
        match=("in_port", "eth_type"),
        writes=("ip_dscp",),
        next=("qos_from_vm_pps",),
        miss=goto("qos_from_vm_pps"),  # no policy, or none of these rules
    ),
    _stage(
        "qos_from_vm_pps",
        "ingress",
        "qos",
        "QoS of what a VM sends: its packet rate meter (egress packet_rate_limit rule)",
        match=("in_port",),
        next=("port_security",),
        miss=goto("port_security"),
    ),
    _stage(
        "port_security",
        "ingress",
        "port_security",
        "L2/L3 anti-spoofing: source MAC/IP per port (allowed address pairs), ARP and ND",
        match=(
            "src_port_key",
            "network_key",
            "eth_src",
            "eth_dst",
            "vlan_vid",
            *_L3,
            "udp_src",
            "udp_dst",
            *_ARP,
            *_ND,
        ),
        next=("pre_acl", "port_security_nd", "port_security_l2"),
        miss=DROP,  # from no known port, or spoofed
    ),
    _stage(
        "port_security_nd",
        "ingress",
        "port_security",
        "ND from a checked IPv6 source: nd_sll/nd_tll the port's MAC or none, targets its own",
        match=("src_port_key", "network_key", "eth_src", *_IP, *_ND),
        next=("pre_acl",),
        miss=goto("pre_acl"),  # (its owner drops what fails)
    ),
    _stage(
        "port_security_l2",
        "ingress",
        "port_security",
        "Source MAC check for what port_security passes on shape alone (DHCP, DAD, MLD)",
        match=("src_port_key", "network_key", "eth_src", "eth_type"),
        next=("pre_acl",),
        miss=DROP,  # a source MAC that is not the port's
    ),
    _stage(
        "pre_acl",
        "ingress",
        "security_groups",
        "Send IP traffic of ports with security groups to conntrack (zone = port's)",
        match=("src_port_key", "network_key", *_L3, "udp_src", "udp_dst", "icmpv6_type"),
        writes=("port_ct_zone",),
        next=("acl", "services"),
        miss=goto("services"),  # not IP, or a port without groups: no ACL
    ),
    _stage(
        "acl",
        "ingress",
        "security_groups",
        "Security group egress rules (VM → network) on ct_state; commit new connections",
        match=("src_port_key", "network_key", "eth_src", *_ACL, "flag_acl_allowed"),
        writes=("ct_mark", "ct_label", "flag_acl_allowed"),
        next=("services",),
        miss=DROP,  # no rule allowed it
    ),
    _stage(
        "services",
        "ingress",
        "services",
        "ARP/ND responder, DHCP and DHCPv6 punts, metadata service redirect",
        match=(
            "network_key",
            "src_port_key",
            "eth_src",
            "eth_dst",
            *_L3,
            "udp_src",
            "udp_dst",
            "tcp_dst",
            *_ARP,
            *_ND,
        ),
        writes=(*_ANSWER, "punt_code"),
        next=("metadata", "l2_lookup", "output", "punt_meter"),
        miss=goto("metadata"),  # nothing to answer or punt
    ),
    _stage(
        "metadata",
        "ingress",
        "metadata",
        "Metadata service: ARP/ND for it, SNAT each local port's TCP to it, to its port",
        match=(
            "in_port",
            *_IP,
            "ipv4_dst",
            "ipv6_dst",
            "tcp_dst",
            "arp_op",
            "arp_tpa",
            "icmpv6_type",
            "icmpv6_code",
            "nd_target",
        ),
        writes=(*_ANSWER, "punt_code", "ct_label"),
        next=("l2_lookup", "punt_meter"),
        miss=goto("l2_lookup"),  # not for the metadata service
    ),
    _stage(
        "metadata_reply",
        "ingress",
        "metadata",
        "From the metadata port: the service's TCP replies to conntrack (un-SNAT)",
        match=("in_port", *_IP, "ipv4_src", "ipv6_src", "tcp_src"),
        next=("metadata_out",),
        miss=DROP,  # anything else the metadata namespace sends
    ),
    _stage(
        "metadata_out",
        "ingress",
        "metadata",
        "A reply of a metadata connection: its VM's port, network and MAC from ct_label",
        match=("ct_state", "eth_type"),
        writes=("network_key", "dst_port_key", "eth_src", "eth_dst"),
        next=("pre_acl_egress",),
        miss=DROP,  # not the reply of a connection we committed
    ),
    _stage(
        "l2_lookup",
        "ingress",
        "l2",
        "Destination MAC in the network → destination port, router, or flood",
        match=(
            "network_key",
            "eth_dst",
            *_IP,
            "flag_from_tunnel",
            "arp_tpa",
            "icmpv6_type",
            "nd_target",
        ),
        writes=("dst_port_key", "router_key"),
        next=("router_input", "pre_acl_egress", "output"),
        miss=DROP,  # the network is not known here
    ),
    # ---- l3: logical routers ---------------------------------------------------------
    _stage(
        "router_input",
        "l3",
        "l3",
        "Packets for the router itself: ARP for its IPs, ICMP echo, TTL expiry",
        match=(
            "router_key",
            "network_key",
            "eth_dst",
            *_L3,
            "nw_ttl",
            "icmp_type",
            "icmpv6_type",
            "arp_op",
            "arp_tpa",
            "nd_target",
        ),
        writes=(*_ANSWER, "router_ct_zone", "punt_code", "addr_scope"),
        next=("dnat", "output", "punt_meter"),
        miss=DROP,  # no router here
    ),
    _stage(
        "dnat",
        "l3",
        "nat",
        "Floating IP / DNAT and un-SNAT of replies through the router's conntrack zone",
        match=("router_key", "network_key", *_L3, *_L4, "ct_state"),
        next=("meter_ingress", "routing"),  # (routing: past the counters, as tests do)
        miss=goto("meter_ingress"),  # no DNAT applies
    ),
    _stage(
        "meter_ingress",
        "l3",
        "metering",
        "Into a router from its external network (after DNAT): count it per metering label",
        match=("router_key", "network_key"),
        writes=("meter_slot",),
        next=("routing", "meter_count"),
        miss=goto("routing"),  # not from a metered router's gateway
    ),
    _stage(
        "routing",
        "l3",
        "l3",
        "Longest-prefix match on destination: next hop, output network, source MAC, TTL",
        match=("router_key", "network_key", *_L3, "nw_ttl", "addr_scope"),
        writes=(
            "next_hop_ipv4",
            "next_hop_ipv6",
            "network_key",
            "src_port_key",
            "dst_port_key",
            "eth_src",
            "nw_ttl",
            "scratch",
            "punt_code",
            "flag_pkt_larger",
            "routed_eth_src",
        ),
        next=("mtu_check", "arp_resolve", "punt_meter", "output"),
        miss=DROP,  # no route
    ),
    _stage(
        "mtu_check",
        "l3",
        "l3",
        "Routed IPv6 over the egress network's MTU (check_pkt_larger) → punt, packet too big",
        match=("router_key", "flag_pkt_larger", "dst_port_key", "eth_type"),
        writes=("punt_code",),
        next=("arp_resolve", "output", "punt_meter"),
        miss=goto("arp_resolve"),  # fits: on to next-hop resolution
    ),
    _stage(
        "arp_resolve",
        "l3",
        "l3",
        "Next hop IP → destination MAC in the output network (unknown: ARP for it)",
        match=(
            "router_key",
            "network_key",
            "next_hop_ipv4",
            "next_hop_ipv6",
            *_IP,
            "ipv4_src",
            "ipv6_src",
        ),
        writes=("eth_dst", "punt_code"),
        next=("meter_egress", "snat", "punt_meter"),  # (snat: past the counters)
        miss=DROP,  # next hop not known
    ),
    _stage(
        "meter_egress",
        "l3",
        "metering",
        "Out of a router by its external network (before SNAT): count it per metering label",
        match=("router_key", "network_key"),
        writes=("meter_slot",),
        next=("snat", "meter_count"),
        miss=goto("snat"),  # not to a metered router's gateway
    ),
    _stage(
        "snat",
        "l3",
        "nat",
        "SNAT / floating IP source translation, then back to L2 in the output network",
        match=("router_key", "network_key", *_L3, *_L4, "ct_state"),
        next=("l2_lookup",),
        miss=resubmit("l2_lookup"),  # no SNAT applies: on to L2 in the output network
    ),
    # ---- egress: from the logical switch towards a port ------------------------------
    _stage(
        "pre_acl_egress",
        "egress",
        "security_groups",
        "Load the destination port's ct zone; send its IP traffic to conntrack",
        match=(
            "dst_port_key",
            "network_key",
            *_L3,
            "udp_src",
            "udp_dst",
            "icmpv6_type",
            "flag_from_tunnel",
        ),
        writes=("port_ct_zone",),
        next=("acl_egress", "port_security_egress"),
        miss=goto("port_security_egress"),  # no ACL (as pre_acl)
    ),
    _stage(
        "acl_egress",
        "egress",
        "security_groups",
        "Security group ingress rules (network → VM) on ct_state; commit new connections",
        match=("dst_port_key", "network_key", "eth_dst", *_ACL, "flag_acl_allowed"),
        writes=("ct_mark", "ct_label", "flag_acl_allowed"),
        next=("port_security_egress",),
        miss=DROP,  # no rule allowed it
    ),
    _stage(
        "port_security_egress",
        "egress",
        "port_security",
        "Destination MAC/IP must belong to the destination port",
        match=("dst_port_key", "network_key", "eth_dst", *_L3),
        next=("qos_to_vm", "output", "port_security_egress_l2"),
        miss=DROP,  # destination port not local
    ),
    _stage(
        "port_security_egress_l2",
        "egress",
        "port_security",
        "Destination MAC check for broadcast/multicast IP and non-IP to a secured port",
        match=("dst_port_key", "network_key", "eth_dst"),
        next=("qos_to_vm", "output"),
        miss=DROP,  # destination MAC is not the port's
    ),
    _stage(
        "qos_to_vm",
        "egress",
        "qos",
        "QoS of what a VM receives: its bandwidth meter (ingress bandwidth_limit rule)",
        match=("dst_port_key", "network_key"),
        next=("qos_to_vm_pps",),
        miss=goto("qos_to_vm_pps"),
    ),
    _stage(
        "qos_to_vm_pps",
        "egress",
        "qos",
        "QoS of what a VM receives: its packet rate meter (ingress packet_rate_limit rule)",
        match=("dst_port_key", "network_key"),
        next=("output",),
        miss=goto("output"),
    ),
    _stage(
        "output",
        "egress",
        "output",
        "Local delivery (port key → ofport), or tunnel to the chassis hosting the port",
        match=(
            "in_port",
            "dst_port_key",
            "src_port_key",
            "network_key",
            "flag_allow_loopback",
            "flag_from_tunnel",
            "eth_dst",
        ),
        writes=("tun_id", "tun_dst", "tun_metadata0", "vlan_vid"),
        miss=DROP,  # destination not reachable from here
    ),
    # ---- punts: what goes to the agent, metered per port ------------------------------
    _stage(
        "punt_meter",
        "ingress",
        "classifier",
        "Per local port: its punts through its own meter (a flood is dropped in the datapath)",
        match=("in_port",),
        next=("punt",),
        miss=goto("punt"),  # not from a local VIF (a provider network): unmetered
    ),
    _stage(
        "punt",
        "ingress",
        "services",
        "punt_code → controller(userdata): the packet-in, routed by the agent on its userdata",
        match=("punt_code",),
        miss=DROP,  # an unknown code
    ),
    # ---- metering: resubmitted into, one pass per label; its flows are the counters ---
    _stage(
        "meter_count",
        "l3",
        "metering",
        "Per metering label rule: the label's slot and the rule's prefixes (flow statistics)",
        match=("router_key", "meter_slot", *_IP, "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst"),
        miss=DROP,  # no rule of that label matched: not counted (resubmit returns)
    ),
    # ---- trunks: a VIF's VLANs to and from its subports' patch ports -----------------------
    _stage(
        "trunk",
        "ingress",
        "trunk",
        "A trunk's VLANs: a subport's tagged frames untagged into its patch port, and back",
        match=("in_port", "vlan_vid"),
        writes=("vlan_vid",),
        miss=DROP,  # a VLAN of no subport here
    ),
)


class PipelineError(ValueError):
    """The stage declarations are inconsistent."""


def validate(stages: Sequence[Stage]) -> None:
    """Names unique, tables unique, every continuation and miss target declared."""
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise PipelineError(f"stages declared twice: {sorted(dupes)}")
    tables = [TABLE_BASE + i for i in range(len(stages))]
    if len(set(tables)) != len(tables) or not all(0 <= t < 255 for t in tables):
        raise PipelineError("table numbers must be unique and within 0..254")
    for s in stages:
        missing = [t for t in s.next if t not in names]
        if missing:
            raise PipelineError(f"stage {s.name}: undeclared next stage(s) {missing}")
        if s.name in s.next:
            raise PipelineError(f"stage {s.name}: may not continue into itself")
        if (s.miss.action == "drop") != (s.miss.target is None):
            raise PipelineError(f"stage {s.name}: a drop miss has no target, others one")
        target = s.miss.target
        if target is not None and target not in s.next:
            raise PipelineError(f"stage {s.name}: miss target {target} not in next")
        if (
            s.miss.action == "goto"
            and target is not None
            and names.index(target) < names.index(s.name)
        ):
            raise PipelineError(f"stage {s.name}: a miss goto must go forward")


validate(PIPELINE)
if tuple(s.name for s in PIPELINE) != get_args(StageName):
    raise AssertionError("StageName must list pipeline.PIPELINE's stages in the same order")

_BY_NAME: dict[str, Stage] = {s.name: s for s in PIPELINE}
_TABLE: dict[str, int] = {s.name: TABLE_BASE + i for i, s in enumerate(PIPELINE)}
_BY_TABLE: dict[int, Stage] = {TABLE_BASE + i: s for i, s in enumerate(PIPELINE)}


def stage(name: StageName | str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r} in pipeline.PIPELINE") from None


def table_of(name: StageName | str) -> int:
    """The OpenFlow table number of a stage."""
    stage(name)
    return _TABLE[name]


def stage_of(table: int) -> Stage:
    """The stage behind an OpenFlow table number (KeyError if none)."""
    try:
        return _BY_TABLE[table]
    except KeyError:
        raise KeyError(f"table {table} is not a pipeline stage") from None


def is_forward(src: StageName | str, dst: StageName | str) -> bool:
    """Whether `goto_table` may go from src to dst (OpenFlow: strictly increasing)."""
    return table_of(dst) > table_of(src)


class StageRow(NamedTuple):
    table: int
    stage: str
    direction: str
    owner: str
    next: str
    miss: str
    description: str


def describe() -> list[StageRow]:
    """The name ↔ number map as rows (for `wyvern pipeline` and docs/architecture.md)."""
    return [
        StageRow(
            _TABLE[s.name],
            s.name,
            s.direction,
            s.owner,
            ",".join(s.next),
            str(s.miss),
            s.description,
        )
        for s in PIPELINE
    ]
