"""The metadata service (stages metadata, metadata_reply, metadata_out): cloud-init's
169.254.169.254 and fe80::a9fe:a9fe, on every network, with or without a router.

The chassis has one metadata port (ofports.METADATA_OFPORT), a veth into a private
namespace where the agent's proxy listens on both service addresses (wyvern.ir.metadata
has the addresses, wyvern.controller.metadata the proxy). From a local VIF, after its
port security and security groups (services misses into the metadata stage):

- an ARP request for 169.254.169.254 is answered here with METADATA_MAC, whatever the
  network (a VM with the on-link route DHCP gives, wyvern.controller.dhcp);
- a neighbour solicitation for fe80::a9fe:a9fe is punted (PUNT_ND_NS): the agent answers
  it with METADATA_MAC (wyvern.controller.nd);
- per local port (owner ("port", id), two flows): TCP to either service address, port
  80, whatever its destination MAC (a VM with a router sends it to the router's), is
  source-NATed in METADATA_ZONE to the port's own per-port address and sent to the
  metadata port::

      in_port=<ofport>, tcp, nw_dst=169.254.169.254, tp_dst=80 →
          ct_clear, ct(commit, zone=METADATA_ZONE, nat(src=169.254.<hi>.<lo>),
                       exec(ct_label=<network key, port key, port MAC>)),
          eth_dst ← METADATA_MAC, output:METADATA_OFPORT

  so the proxy knows the VM by the OpenFlow port it came in on, never by an address or
  header the VM chose.

From the metadata port (classification sends everything there to metadata_reply): the
service's TCP replies go through the same zone with a bare ct(nat), which restores the
VM's address; metadata_out then takes the network key, port key and MAC the connection
was committed with (ct_label: bits 0-23, 24-55, 56-103) and hands the reply to the
VM's egress pipeline (pre_acl_egress): its security groups see it as the reply of the
connection they let out. Anything else from the metadata port is dropped.
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port
from wyvern.apps.punts import PUNT_ND_NS, punt
from wyvern.ir import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    PORT_IN_PORT,
    Bits,
    Ct,
    CtClear,
    Flow,
    FlowTemplate,
    Goto,
    Move,
    Nat,
    Output,
    SetField,
    table,
)
from wyvern.ir.cookies import encode
from wyvern.ir.metadata import (
    METADATA_MAC,
    METADATA_ZONE,
    SERVICE_PORT,
    SERVICE_V4,
    SERVICE_V6,
    has_metadata,
    port_address_v4,
    port_address_v6,
)
from wyvern.ir.ofports import METADATA_OFPORT
from wyvern.model.view import LocalView

# The object the global flows' cookies name (the metadata app's and the classifier's).
SERVICE_OBJECT = "metadata-service"
P_REQUEST = 100
P_ARP = 100
P_NS = 100
P_REPLY = 100
ND_NEIGHBOR_SOLICIT = 135

# ct_label of a metadata connection: where its replies go.
LABEL_NETWORK = Bits("ct_label", 0, 24)
LABEL_PORT = Bits("ct_label", 24, 32)
LABEL_MAC = Bits("ct_label", 56, 48)


def label(network_key: int, port_key: int, mac: str) -> int:
    """The ct_label a port's metadata connections are committed with."""
    mac_value = int(mac.replace(":", ""), 16)  # (the API's MAC: six hex pairs)
    return network_key | (port_key << 24) | (mac_value << 56)


def _request_template(v6: bool) -> FlowTemplate:
    """A port's request flow: flow(cookie, ofport, its Ct (per-port address and label))."""
    return table("metadata").template(
        priority=P_REQUEST,
        cookie_app="metadata",
        varying=("in_port",),
        fixed={
            "eth_type": ETH_TYPE_IPV6 if v6 else ETH_TYPE_IP,
            "ip_proto": IPPROTO_TCP,
            "ipv6_dst" if v6 else "ipv4_dst": SERVICE_V6 if v6 else SERVICE_V4,
            "tcp_dst": SERVICE_PORT,
        },
        actions=(
            CtClear(),
            _snat(port_address_v6(1) if v6 else port_address_v4(1), 0),
            SetField("eth_dst", METADATA_MAC),
            Output(METADATA_OFPORT),
        ),
        action_values=(1,),
    )


def _snat(source: str, ct_label: int) -> Ct:
    return Ct(
        commit=True,
        zone=METADATA_ZONE,
        nat=Nat("src", source),
        exec=(SetField("ct_label", ct_label),),
    )


REQUEST_V4 = _request_template(False)
REQUEST_V6 = _request_template(True)


def _global_flows() -> list[Flow]:
    cookie = encode("metadata", SERVICE_OBJECT)
    out = [
        table("metadata").flow(
            priority=P_ARP,
            cookie=cookie,
            match={"eth_type": ETH_TYPE_ARP, "arp_op": 1, "arp_tpa": SERVICE_V4},
            actions=(
                Move("eth_src", "eth_dst"),
                SetField("eth_src", METADATA_MAC),
                SetField("arp_op", 2),
                Move("arp_sha", "arp_tha"),
                SetField("arp_sha", METADATA_MAC),
                Move("arp_spa", "arp_tpa"),
                SetField("arp_spa", SERVICE_V4),
                Output(PORT_IN_PORT),
            ),
        ),
        table("metadata").flow(
            priority=P_NS,
            cookie=cookie,
            match={
                "eth_type": ETH_TYPE_IPV6,
                "ip_proto": IPPROTO_ICMPV6,
                "icmpv6_type": ND_NEIGHBOR_SOLICIT,
                "icmpv6_code": 0,
                "nd_target": SERVICE_V6,
            },
            actions=punt(bytes([PUNT_ND_NS])),
        ),
    ]
    for eth_type, src_field, src in (
        (ETH_TYPE_IP, "ipv4_src", SERVICE_V4),
        (ETH_TYPE_IPV6, "ipv6_src", SERVICE_V6),
    ):
        out.append(
            table("metadata_reply").flow(
                priority=P_REPLY,
                cookie=cookie,
                match={
                    "in_port": METADATA_OFPORT,
                    "eth_type": eth_type,
                    "ip_proto": IPPROTO_TCP,
                    src_field: src,
                    "tcp_src": SERVICE_PORT,
                },
                actions=(CtClear(), Ct(zone=METADATA_ZONE, nat=Nat(), table="metadata_out")),
            )
        )
        out.append(
            table("metadata_out").flow(
                priority=P_REPLY,
                cookie=cookie,
                match={"eth_type": eth_type, "ct_state": "+trk+est+rpl-inv"},
                actions=(
                    Move(LABEL_NETWORK, "network_key"),
                    Move(LABEL_PORT, "dst_port_key"),
                    Move(LABEL_MAC, "eth_dst"),
                    SetField("eth_src", METADATA_MAC),
                    CtClear(),
                    Goto("pre_acl_egress"),
                ),
            )
        )
    return out


class MetadataApp(App):
    """Owners: ("port", id) of local ports (their two request flows); the ARP and ND
    answers and the reply path are global."""

    name = "metadata"
    owner_tables = {"port": "bindings"}

    def global_flows(self) -> list[Flow]:
        return _global_flows()

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, ofport = found
        if not has_metadata(ofport):
            return []
        cookie = encode("metadata", port_id)
        ct_label = label(net.key, port.key, port.mac)
        return [
            REQUEST_V4.flow(cookie, ofport, _snat(port_address_v4(ofport), ct_label)),
            REQUEST_V6.flow(cookie, ofport, _snat(port_address_v6(ofport), ct_label)),
        ]
