"""The pure pipeline IR: the vocabulary apps, the simulator and the OVS driver share.

Apps build flows only through checked table objects::

    from wyvern.ir import Goto, Load, match, table
    table("classification").flow(
        priority=100, match=match(in_port=3), cookie=encode("classifier", port_id),
        actions=(Load("src_port_key", 7), Load("network_key", 12), Goto("port_security")),
    )

`Flow` validates itself when built, so an invalid flow cannot exist: a match field the
stage did not declare, a write to an undeclared field or register, a continuation to an
undeclared stage, a backward `goto_table`, a cookie of another app, or an action whose
OpenFlow prerequisites the match does not meet (OVS would reject it with
OFPBAC_MATCH_INCONSISTENT) all raise `IRError`.

Values are ints internally (MACs and IPs too); `match()` accepts the usual text forms.
OpenFlow prerequisites are completed where unambiguous: `match(ipv4_src="10.0.0.0/8")`
gets `eth_type=0x0800`; `match(tcp_dst=80)` raises because it could be IPv4 or IPv6.

Modules: `fields` (header fields, values), `matches`, `actions`, `checks` (validity),
`flows` (Flow, GroupDef), `templates` (FlowTemplate, Table); beside them `pipeline`
(every stage by name, table numbers derived), `registers`, `cookies`, `ofports` (the
OpenFlow port numbers the chassis setup reserves), `render` (ovs-ofctl text), and the
reference simulator (`simulator`, `packet`). Nothing here does I/O.
"""

from wyvern.ir.actions import (
    DROP,
    Action,
    Bits,
    CheckPktLarger,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Goto,
    Group,
    Load,
    Meter,
    Move,
    Nat,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    field_bits,
    setfield_value,
)
from wyvern.ir.checks import check_actions
from wyvern.ir.fields import (
    CT_DNAT,
    CT_EST,
    CT_FLAGS,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_SNAT,
    CT_TRK,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FIELDS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_IN_PORT,
    PORT_LOCAL,
    VLAN_PRESENT,
    FieldKind,
    FieldSpec,
    IRError,
    MatchValue,
    Writable,
    format_value,
    ip_value,
    ip_version,
    parse_value,
    parse_value_uncached,
    port_range,
    valid_port,
)
from wyvern.ir.flows import Bucket, Flow, GroupDef
from wyvern.ir.matches import Match, match, satisfies
from wyvern.ir.templates import FlowTemplate, Table, clear_caches, table

__all__ = [
    "CT_DNAT",
    "CT_EST",
    "CT_FLAGS",
    "CT_INV",
    "CT_NEW",
    "CT_REL",
    "CT_RPL",
    "CT_SNAT",
    "CT_TRK",
    "DROP",
    "ETH_TYPE_ARP",
    "ETH_TYPE_IP",
    "ETH_TYPE_IPV6",
    "FIELDS",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_SCTP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "PORT_IN_PORT",
    "PORT_LOCAL",
    "VLAN_PRESENT",
    "Action",
    "Bits",
    "Bucket",
    "CheckPktLarger",
    "Conjunction",
    "Controller",
    "Ct",
    "CtClear",
    "DecTtl",
    "FieldKind",
    "FieldSpec",
    "Flow",
    "FlowTemplate",
    "Goto",
    "Group",
    "GroupDef",
    "IRError",
    "Load",
    "Match",
    "MatchValue",
    "Meter",
    "Move",
    "Nat",
    "Output",
    "OutputReg",
    "PopVlan",
    "PushVlan",
    "Resubmit",
    "SetField",
    "Table",
    "Writable",
    "check_actions",
    "clear_caches",
    "field_bits",
    "format_value",
    "ip_value",
    "ip_version",
    "match",
    "parse_value",
    "parse_value_uncached",
    "port_range",
    "satisfies",
    "setfield_value",
    "table",
    "valid_port",
]
