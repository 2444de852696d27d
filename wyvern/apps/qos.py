"""QoS (Neutron's `qos`): bandwidth and packet rate limits by meter, DSCP marks by set_field.

A local port's policy is its own `qos_policy_id`, else its network's (Neutron: a port's
policy overrides its network's; network-owned ports take none from their network). Its
rules, seen from the VM as Neutron's directions are:

    qos_from_vm      in_port=<ofport>             → meter:<bw_from_vm>, goto qos_from_vm_pps
                     in_port=<ofport>, ip|ipv6    → [meter,] set_field:<dscp>->ip_dscp, goto
    qos_from_vm_pps  in_port=<ofport>             → meter:<pps_from_vm>, goto port_security
    qos_to_vm        network_key, dst_port_key    → meter:<bw_to_vm>, goto qos_to_vm_pps
    qos_to_vm_pps    network_key, dst_port_key    → meter:<pps_to_vm>, goto output

Each stage's miss goes on to the next, so a port without a policy (or without a rule of
that kind) passes untouched. Meters are policers: OVS drops what exceeds the band. The
meters themselves (ids from wyvern.ir.meters, one per port and kind) are configured by
the southbound from `wanted_meters(view)`, before the flows that name them are installed.

A rate of 0 is no limit (as Neutron's OVS driver treats max_kbps 0). A burst of 0 takes
80% of the rate, the burst Neutron recommends for TCP (a policer with a tiny bucket gives
TCP about half the rate).
"""

from __future__ import annotations

from wyvern.apps.base import App, Owner
from wyvern.apps.common import local_port
from wyvern.ir import ETH_TYPE_IP, ETH_TYPE_IPV6, Action, Flow, Goto, Meter, SetField, table
from wyvern.ir.cookies import encode
from wyvern.ir.meters import MeterSpec, QosMeterKind, qos_meter
from wyvern.model.view import LocalView, Port, QosPolicy, QosRule

P_PORT = 100
P_DSCP = 110
BANDWIDTH_LIMIT = "bandwidth_limit"
PACKET_RATE_LIMIT = "packet_rate_limit"
DSCP_MARKING = "dscp_marking"
DEFAULT_BURST_PERCENT = 80  # Neutron's advice for TCP: 80% of the rate


def port_policy(view: LocalView, port: Port) -> QosPolicy | None:
    """The policy that applies to a port: its own, else its network's (not for ports the
    network owns: routers, DHCP, floating IPs)."""
    policy_id = port.qos_policy_id
    if policy_id is None and not port.device_owner.startswith("network:"):
        net = view.networks.get(port.network_id)
        policy_id = net.qos_policy_id if net is not None else None
    return view.qos_policies.get(policy_id) if policy_id else None


def _rule(policy: QosPolicy | None, kind: str, direction: str) -> QosRule | None:
    if policy is None:
        return None
    for r in policy.rules:
        if r.kind == kind and r.direction == direction and (kind == DSCP_MARKING or r.rate > 0):
            return r
    return None


def meter_spec(rule: QosRule) -> MeterSpec:
    """A rule's meter band: kbit/s with a kbit burst, or packets/s (Neutron's kpps)."""
    if rule.kind == BANDWIDTH_LIMIT:
        rate, burst = rule.rate, rule.burst
        unit = "kbps"
    else:
        rate, burst = rule.rate * 1000, rule.burst * 1000
        unit = "pktps"
    if burst == 0:
        burst = max(1, rate * DEFAULT_BURST_PERCENT // 100)
    return MeterSpec(unit, rate, burst)  # type: ignore[arg-type]


_KINDS: tuple[tuple[QosMeterKind, str, str], ...] = (
    ("bw_from_vm", BANDWIDTH_LIMIT, "egress"),
    ("bw_to_vm", BANDWIDTH_LIMIT, "ingress"),
    ("pps_from_vm", PACKET_RATE_LIMIT, "egress"),
    ("pps_to_vm", PACKET_RATE_LIMIT, "ingress"),
)


def port_meters(view: LocalView, port_id: str) -> dict[int, MeterSpec]:
    """The meters one local port's flows name (by id)."""
    found = local_port(view, port_id)
    if found is None:
        return {}
    port, _, ofport = found
    policy = port_policy(view, port)
    out: dict[int, MeterSpec] = {}
    for kind, rtype, direction in _KINDS:
        rule = _rule(policy, rtype, direction)
        if rule is not None:
            out[qos_meter(kind, ofport)] = meter_spec(rule)
    return out


def wanted_meters(view: LocalView) -> dict[int, MeterSpec]:
    """Every QoS meter the local ports' flows may name (what the southbound keeps)."""
    out: dict[int, MeterSpec] = {}
    for port_id in sorted(view.bindings):
        out.update(port_meters(view, port_id))
    return out


class QosApp(App):
    name = "qos"
    owner_tables = {"port": "bindings"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, ofport = found
        policy = port_policy(view, port)
        if policy is None:
            return []
        cookie = encode("qos", port_id)
        out: list[Flow] = []

        def metered(kind: QosMeterKind, rtype: str, direction: str) -> tuple[Action, ...]:
            rule = _rule(policy, rtype, direction)
            return (Meter(qos_meter(kind, ofport)),) if rule is not None else ()

        # From the VM: bandwidth, DSCP, then packet rate.
        bw = metered("bw_from_vm", BANDWIDTH_LIMIT, "egress")
        dscp = _rule(policy, DSCP_MARKING, "egress")
        st = table("qos_from_vm")
        if dscp is not None:
            for eth_type in (ETH_TYPE_IP, ETH_TYPE_IPV6):
                out.append(
                    st.flow(
                        priority=P_DSCP,
                        cookie=cookie,
                        match={"in_port": ofport, "eth_type": eth_type},
                        actions=(
                            *bw,
                            SetField("ip_dscp", dscp.rate),
                            Goto("qos_from_vm_pps"),
                        ),
                    )
                )
        if bw:
            out.append(
                st.flow(
                    priority=P_PORT,
                    cookie=cookie,
                    match={"in_port": ofport},
                    actions=(*bw, Goto("qos_from_vm_pps")),
                )
            )
        pps = metered("pps_from_vm", PACKET_RATE_LIMIT, "egress")
        if pps:
            out.append(
                table("qos_from_vm_pps").flow(
                    priority=P_PORT,
                    cookie=cookie,
                    match={"in_port": ofport},
                    actions=(*pps, Goto("port_security")),
                )
            )
        # To the VM: bandwidth, then packet rate.
        to_port = {"network_key": net.key, "dst_port_key": port.key}
        bw = metered("bw_to_vm", BANDWIDTH_LIMIT, "ingress")
        if bw:
            out.append(
                table("qos_to_vm").flow(
                    priority=P_PORT,
                    cookie=cookie,
                    match=to_port,
                    actions=(*bw, Goto("qos_to_vm_pps")),
                )
            )
        pps = metered("pps_to_vm", PACKET_RATE_LIMIT, "ingress")
        if pps:
            out.append(
                table("qos_to_vm_pps").flow(
                    priority=P_PORT,
                    cookie=cookie,
                    match=to_port,
                    actions=(*pps, Goto("output")),
                )
            )
        return out
