"""The logical topology of the OVN comparison, independent of either system (pure).

vs_ovn.py turns a Plan into Neutron API calls for Wyvern and ovn_peer.py into OVN
northbound rows; both then read their system back into `Description` form, which must
equal `expected(plan)` before any figure counts. Every address is chosen here, so both
systems carry exactly the same MACs and IPs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SG_NAME = "bench_sg"  # also the OVN port group's name (an identifier: $bench_sg_ip4)


@dataclass(frozen=True)
class Rule:
    """One security-group rule, in Neutron's terms."""

    direction: str  # ingress | egress
    ethertype: str = "IPv4"
    protocol: str | None = None  # tcp | udp | icmp | None (any)
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_self: bool = False


# Ten rules, as a Neutron user writes them: the two egress rules every new group gets,
# plus eight ingress rules of the usual kinds (ports, a range, a prefix, the group itself).
SG_RULES: tuple[Rule, ...] = (
    Rule("egress", "IPv4"),
    Rule("egress", "IPv6"),
    Rule("ingress", protocol="icmp"),
    Rule("ingress", protocol="tcp", port_min=22, port_max=22),
    Rule("ingress", protocol="tcp", port_min=80, port_max=80),
    Rule("ingress", protocol="tcp", port_min=443, port_max=443),
    Rule("ingress", protocol="tcp", port_min=8000, port_max=8100),
    Rule("ingress", protocol="udp", port_min=53, port_max=53),
    Rule("ingress", protocol="tcp", port_min=3306, port_max=3306, remote_ip_prefix="10.0.0.0/8"),
    Rule("ingress", remote_group_self=True),
)


def probe_rule(i: int) -> Rule:
    """The i-th rule added on top for the rule-latency figure (a port nothing else uses)."""
    return Rule("ingress", protocol="tcp", port_min=9000 + i, port_max=9000 + i)


@dataclass(frozen=True)
class Plan:
    name: str
    ports: int
    networks: int
    routers: int = 0
    security_group: bool = False
    ping_guard: bool = False  # a routed ping between two namespaces before timing
    floating_ips: bool = False  # the router has a gateway, every port a floating IP

    def scaled(self, scale: float) -> Plan:
        """The same shape with ports scaled (networks and routers kept when possible)."""
        if scale == 1.0:
            return self
        ports = max(self.networks * 2, math.ceil(self.ports * scale))
        return dataclasses.replace(self, ports=ports)

    def network_of(self, k: int) -> int:
        return k % self.networks

    def router_of(self, net: int) -> int | None:
        """Routers take consecutive networks in equal shares (none: no router)."""
        if not self.routers:
            return None
        return net // math.ceil(self.networks / self.routers)


SCENARIOS: dict[str, Plan] = {
    "1": Plan("1: 1,000 ports / 1 network", 1000, 1),
    "2": Plan("2: 1,000 ports / 10 networks + router", 1000, 10, 1, ping_guard=True),
    "3": Plan("3: 5,000 ports / 50 networks / 5 routers / SG 10 rules", 5000, 50, 5, True),
    "4": Plan(
        "4: 1,000 ports / 10 networks + router with gateway / a floating IP each",
        1000,
        10,
        1,
        ping_guard=True,
        floating_ips=True,
    ),
}

# The external network of scenario 4: a flat provider network on PHYSNET (the name
# Wyvern's API accepts by default, physical_networks), the upstream router at .1, the
# router's gateway at .2, floating IPs from EXT_FIP_BASE on (one per port number).
PHYSNET = "physnet1"
EXT_BRIDGE = "br-ex"
EXT_CIDR = "172.16.0.0/16"
EXT_UPSTREAM = "172.16.0.1"
EXT_GATEWAY = "172.16.0.2"
EXT_FIP_BASE = 256  # host number of port 0's floating IP (172.16.1.0)
GUARD_FIP = "172.16.255.200"  # the guard VM's floating IP (far above any port's)


def cidr(net: int) -> str:
    return f"10.{net}.0.0/16"


def gateway(net: int) -> str:
    return f"10.{net}.0.1"


def port_mac(k: int) -> str:
    return f"0a:00:00:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}"


def port_ip(plan: Plan, k: int) -> str:
    """Port k's address in its network: hosts from .10 on, in the order ports are added."""
    net = plan.network_of(k)
    host = k // plan.networks + 10
    return f"10.{net}.{host >> 8}.{host & 255}"


def router_mac(net: int) -> str:
    return f"0a:ff:00:00:{net:02x}:01"


def gateway_mac() -> str:
    """The OVN router's gateway port MAC (Wyvern allocates its own)."""
    return "0a:fe:ff:00:00:01"


def fip_ip(k: int) -> str:
    """Port k's floating IP on the external network (both systems: the same address)."""
    host = EXT_FIP_BASE + k
    if host >= 1 << 16:
        raise ValueError(f"port {k} has no floating IP in {EXT_CIDR}")
    return f"172.16.{host >> 8}.{host & 255}"


def fip_mac(k: int) -> str:
    """The MAC of port k's floating IP (OVN's NAT external_mac: Neutron writes the MAC of
    the floating IP's own port there; Wyvern allocates that port's MAC itself)."""
    return f"0a:fe:00:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}"


# (bulk ports are 0..ports-1, the single adds follow, then the two ping-guard ports)
def extra_port(plan: Plan, i: int) -> int:
    return plan.ports + i


GUARD_BASE = 100_000


def guard_ports(plan: Plan) -> tuple[int, int]:
    """Port numbers of the two guard VMs: networks 0 and 1 (routed), never used by others."""
    a = GUARD_BASE - GUARD_BASE % plan.networks
    return a, a + 1


# ---------------------------------------------------------------- equivalence


Description = dict[str, int]


def expected(plan: Plan) -> Description:
    """What either system must hold once the bulk ports are created."""
    rules = len(SG_RULES) if plan.security_group else 0
    return {
        "networks": plan.networks + (1 if plan.floating_ips else 0),  # + the external one
        "vm_ports": plan.ports,
        "routers": plan.routers,
        "router_interfaces": plan.networks if plan.routers else 0,
        "sg_rules": rules,
        "ports_in_sg": plan.ports if plan.security_group else 0,
        "router_gateways": plan.routers if plan.floating_ips else 0,
        "floating_ips": plan.ports if plan.floating_ips else 0,
    }


def differences(plan: Plan, found: Description) -> list[str]:
    want = expected(plan)
    return [
        f"{key}: expected {want[key]}, found {found.get(key)}"
        for key in want
        if found.get(key) != want[key]
    ]


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Figure:
    scenario: str
    what: str
    unit: str
    ovn: float | None
    wyvern: float | None
    goal: float | None = None  # the goal for wyvern/ovn (None: none)

    @property
    def ratio(self) -> float | None:
        if self.ovn is None or self.wyvern is None or self.ovn == 0:
            return None
        return self.wyvern / self.ovn

    @property
    def verdict(self) -> str:
        r = self.ratio
        if r is None or self.goal is None:
            return ""
        return "met" if r <= self.goal else "MISSED"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if unit == "MiB":
        return f"{value:.1f}"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:.1f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def render_table(figures: list[Figure]) -> str:
    """One table: scenario, figure, OVN, Wyvern, ratio Wyvern/OVN, goal and verdict."""
    head = f"{'figure':44} {'unit':5} {'OVN':>10} {'Wyvern':>10} {'W/OVN':>7}  goal"
    lines = [head, "-" * len(head)]
    scenario = None
    for f in figures:
        if f.scenario != scenario:
            scenario = f.scenario
            lines.append(f"scenario {scenario}")
        goal = f"<= {f.goal:g}x {f.verdict}" if f.goal is not None else ""
        lines.append(
            f"  {f.what:42} {f.unit:5} {fmt_value(f.ovn, f.unit):>10} "
            f"{fmt_value(f.wyvern, f.unit):>10} {fmt_ratio(f.ratio):>7}  {goal}".rstrip()
        )
    return "\n".join(lines)
