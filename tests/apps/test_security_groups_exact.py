"""Security-group rules never fail open: every rule the API accepts admits exactly the
packets it describes (through the simulator), and every other rule is a 400 naming why.

Rules go through the real API (a TestClient over a memory store); what it stores is
installed for port a, with port b unfiltered, and probe packets run both ways. Every probe
is first shown delivered under an allow-everything rule, so a drop is the rule's doing.
The oracle (`describes`, `refusal`) is written from Neutron's documented semantics, not
from the code under test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.api.conftest import error_type, make_client
from tests.apps import scenario as sc
from wyvern.apps.security_groups import SecurityGroups
from wyvern.ir import ETH_TYPE_IP, ETH_TYPE_IPV6
from wyvern.ir import packet as pk
from wyvern.nb.memory import MemoryStore

MAC_A, MAC_B = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
A, B = 1, 2  # ofports
ADDR = {4: ("10.0.0.5", "10.0.0.6"), 6: ("fd00::5", "fd00::6")}  # (a, b)

# Every protocol name Neutron accepts, with its IANA number (neutron-lib's table).
NAMES = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "icmpv6": 58,
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
TCP, UDP, SCTP, DCCP, UDPLITE, ICMP, ICMP6 = 6, 17, 132, 33, 136, 1, 58
PORTED = {TCP, UDP, SCTP}
IPV6_ONLY = {41, 43, 44, 58, 59, 60}  # Neutron refuses these in IPv4 rules
SKIPPED_V6 = {0, 43, 44, 51, 60}  # IPv6 extension headers OVS looks through
ND_TYPES = range(133, 138)  # RS, RA, NS, NA, redirect: neighbour discovery, not rules
ICMP_ERRORS = {4: {3, 4, 5, 11, 12}, 6: {1, 2, 3, 4}}


# ---------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Meaning:
    """What an accepted rule admits: family, protocol (None: any), ports or ICMP type/code."""

    version: int
    proto: int | None
    lo: int | None
    hi: int | None


def _number(protocol: Any) -> int | str | None:
    """Neutron's protocol value as a number (None: any); "bad" when it refuses it."""
    if protocol is None or (isinstance(protocol, str) and protocol.lower() in ("", "any")):
        return None
    if isinstance(protocol, bool):
        return "bad"
    if isinstance(protocol, str) and protocol.lower() in NAMES:
        return NAMES[protocol.lower()]
    try:
        value = int(protocol)
    except ValueError:
        return "bad"
    if not 0 <= value <= 255:
        return "bad"
    if value == 0 and not (isinstance(protocol, str) and protocol.lower() == "hopopt"):
        return None  # 0 means any
    return value


def refusal(
    ethertype: str, protocol: Any, lo: int | None, hi: int | None
) -> tuple[str, str] | None:
    """(error type, a phrase its message must hold) of a rule Wyvern must refuse."""
    number = _number(protocol)
    if number == "bad":
        return "SecurityGroupRuleInvalidProtocol", "not supported"
    assert not isinstance(number, str)
    version = 6 if ethertype == "IPv6" else 4
    if version == 6 and number == ICMP:
        number = ICMP6  # "icmp" (or 1) in an IPv6 rule is ICMPv6
    if lo is not None or hi is not None:
        if number is None:
            return "SecurityGroupProtocolRequiredWithPorts", "specify protocol"
        if number in (DCCP, UDPLITE):
            name = "DCCP" if number == DCCP else "UDP-Lite"
            return "SecurityGroupInvalidProtocolForPort", f"cannot match {name} ports"
        if number in PORTED:
            if lo == 0 or hi == 0:
                return "SecurityGroupInvalidPortValue", "port 0"
            if lo is None or hi is None or lo > hi:
                return "SecurityGroupInvalidPortRange", "port_range_min must be <="
        elif number in (ICMP, ICMP6):
            if (lo is not None and lo > 255) or (hi is not None and hi > 255):
                return "SecurityGroupInvalidIcmpValue", "must be 0 to 255"
            if lo is None:
                return "SecurityGroupMissingIcmpType", "ICMP type"
        else:
            return "SecurityGroupInvalidProtocolForPort", "for port range"
    if version == 4 and number in IPV6_ONLY:
        return "SecurityGroupEthertypeConflictWithProtocol", "Invalid ethertype"
    if version == 6 and number in SKIPPED_V6:
        return "SecurityGroupRuleInvalidProtocol", "extension header"
    return None


def meaning(ethertype: str, protocol: Any, lo: int | None, hi: int | None) -> Meaning:
    number = _number(protocol)
    assert not isinstance(number, str)
    version = 6 if ethertype == "IPv6" else 4
    if version == 6 and number == ICMP:
        number = ICMP6
    return Meaning(version, number, lo, hi)


@dataclass(frozen=True)
class Probe:
    version: int
    proto: int
    port: int = 0  # destination port (TCP, UDP, SCTP)
    type: int = 0  # ICMP type and code
    code: int = 0


def describes(m: Meaning, p: Probe) -> bool:
    """Whether the rule's description covers the packet (Neutron's semantics)."""
    if p.version != m.version or (m.proto is not None and p.proto != m.proto):
        return False
    if m.lo is None and m.hi is None:
        return True
    if m.proto in PORTED:
        assert m.lo is not None and m.hi is not None
        return m.lo <= p.port <= m.hi
    assert m.proto in (ICMP, ICMP6)  # (nothing else takes a range)
    return p.type == m.lo and (m.hi is None or p.code == m.hi)


def _icmp(version: int) -> int:
    return ICMP if version == 4 else ICMP6


def probes(m: Meaning, seed: int, stateful: bool) -> list[Probe]:
    """Packets inside and just outside the rule: in its family and protocol, every port
    range edge and ICMP type/code neighbour; then other protocols and the other family."""
    ports = {0, 1, 65535, seed % 65536}
    types = {0, 8, 128, 255, seed % 256}
    codes = {0, 1, seed % 256}
    if m.lo is not None:
        ports |= {m.lo - 1, m.lo, m.lo + 1}
        types |= {m.lo - 1, m.lo, m.lo + 1}
    if m.hi is not None:
        ports |= {m.hi - 1, m.hi, m.hi + 1, (m.hi + (m.lo or 0)) // 2}
        codes |= {m.hi - 1, m.hi, m.hi + 1}
    inside_port = m.lo if m.lo is not None else 22
    others = {TCP, UDP, SCTP, DCCP, UDPLITE, 47, seed % 256}
    out: list[Probe] = []
    for version in (4, 6):
        icmp = ICMP if version == 4 else ICMP6
        for proto in sorted(others | {icmp} | ({m.proto} if m.proto is not None else set())):
            if version == 6 and proto in SKIPPED_V6:
                continue  # OVS never reports these as an IPv6 packet's protocol
            full = version == m.version and proto == m.proto  # the rule's own: every edge
            if proto in PORTED:
                wanted = ports if full else {inside_port}
                out += [Probe(version, proto, port=p) for p in sorted(wanted) if 0 <= p <= 65535]
            elif proto == icmp:
                for t in sorted(types if full else {m.lo if m.lo is not None else 8}):
                    if not 0 <= t <= 255 or (version == 6 and t in ND_TYPES):
                        continue  # ND is never filtered
                    if stateful and t in ICMP_ERRORS[version]:
                        continue  # conntrack drops an error about no connection
                    for c in sorted(codes if full else {m.hi or 0}):
                        if 0 <= c <= 255:
                            out.append(Probe(version, proto, type=t, code=c))
            else:
                out.append(Probe(version, proto))
    return out


def packet(p: Probe, ingress: bool) -> pk.Packet:
    """The probe from b to a (a's ingress rules) or from a to b (its egress rules)."""
    a, b = ADDR[p.version]
    port, smac, dmac, src, dst = (B, MAC_B, MAC_A, b, a) if ingress else (A, MAC_A, MAC_B, a, b)
    if p.proto == TCP:
        return pk.tcp(port, smac, dmac, src, dst, 40000, p.port, "S")
    if p.proto == UDP:
        return pk.udp(port, smac, dmac, src, dst, 40000, p.port)
    if p.proto == SCTP:
        return pk.sctp(port, smac, dmac, src, dst, 40000, p.port)
    if p.proto == _icmp(p.version):
        field = "icmp" if p.version == 4 else "icmpv6"
        l3 = (
            {"eth_type": ETH_TYPE_IP, "ipv4_src": src, "ipv4_dst": dst}
            if p.version == 4
            else {"eth_type": ETH_TYPE_IPV6, "ipv6_src": src, "ipv6_dst": dst}
        )
        return pk.packet(
            in_port=port,
            eth_src=smac,
            eth_dst=dmac,
            ip_proto=p.proto,
            nw_ttl=64,
            **l3,
            **{f"{field}_type": p.type, f"{field}_code": p.code},
        )
    return pk.ip(port, smac, dmac, src, dst, p.proto)


# ---------------------------------------------------------------- the dataplane


def _scenario(rule: dict[str, Any], stateful: bool) -> sc.Scenario:
    """Port a in group sg holding just `rule` (as the API stored it); b unfiltered."""
    view = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24"), sc.subnet("s6", "n1", "fd00::/64")],
        ports=[
            sc.port(
                "a", "n1", key=1, mac=MAC_A, ips=[ADDR[4][0], ADDR[6][0]], security_groups=["sg"]
            ),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[ADDR[4][1], ADDR[6][1]]),
        ],
        security_groups=[sc.security_group("sg", stateful=stateful)],
        rules=[
            sc.rule(
                "r",
                "sg",
                rule["direction"],
                ethertype=rule["ethertype"],
                protocol=rule["protocol"],
                port_range_min=rule["port_range_min"],
                port_range_max=rule["port_range_max"],
            )
        ],
        local={"a": A, "b": B},
    )
    return sc.Scenario(view, [*sc.l2_apps(), SecurityGroups()])


@functools.cache
def _control(direction: str, ethertype: str, stateful: bool) -> sc.Scenario:
    """The same port with a rule allowing all of one family in one direction."""
    return _scenario(
        {
            "direction": direction,
            "ethertype": ethertype,
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
        },
        stateful,
    )


@functools.cache
def _control_delivers(direction: str, version: int, stateful: bool, probe: Probe) -> bool:
    """Whether the probe passes a rule allowing its whole family (memoised)."""
    control = _control(direction, "IPv4" if version == 4 else "IPv6", stateful)
    return delivered(control, probe, direction == "ingress")


def delivered(s: sc.Scenario, probe: Probe, ingress: bool) -> bool:
    s.conntrack.flush()  # each probe is a first packet
    out = s.outcome(packet(probe, ingress))
    want = A if ingress else B
    assert out.ports in ([], [want]), out.trace.format()
    return out.ports == [want]


# ---------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[TestClient, str]]:
    with make_client(MemoryStore()) as client:
        r = client.post("/v2.0/security-groups", json={"security_group": {"name": "exact"}})
        assert r.status_code == 201, r.text
        group = r.json()["security_group"]
        for rule in group["security_group_rules"]:  # its automatic egress rules
            url = f"/v2.0/security-group-rules/{rule['id']}"
            assert client.delete(url).status_code == 204
        yield client, group["id"]


_PROTOCOLS = st.one_of(
    st.sampled_from([None, "any", "", 0, "0", "ANY"]),
    st.sampled_from(sorted(NAMES)),
    st.sampled_from(sorted(NAMES)).map(str.upper),
    st.integers(0, 255),
    st.integers(0, 255).map(str),
    st.sampled_from([TCP, UDP, SCTP, DCCP, UDPLITE, ICMP, ICMP6]).map(str),
)
_PORTS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 7, 8, 22, 80, 128, 255, 256, 1024, 65535]),
    st.integers(0, 65535),
)


def _check(
    api: tuple[TestClient, str],
    direction: str,
    ethertype: str,
    protocol: Any,
    lo: int | None,
    hi: int | None,
    stateful: bool,
    seed: int,
) -> None:
    client, sg = api
    body = {
        "security_group_id": sg,
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": lo,
        "port_range_max": hi,
    }
    r = client.post("/v2.0/security-group-rules", json={"security_group_rule": body})
    refused = refusal(ethertype, protocol, lo, hi)
    if refused is not None:
        assert r.status_code == 400, (body, r.text)
        assert error_type(r) == refused[0], (body, r.text)
        assert refused[1] in r.json()["NeutronError"]["message"], (body, r.text)
        return
    assert r.status_code == 201, (body, r.text)
    rule = r.json()["security_group_rule"]
    assert client.delete(f"/v2.0/security-group-rules/{rule['id']}").status_code == 204
    m = meaning(ethertype, protocol, lo, hi)
    ingress = direction == "ingress"
    s = _scenario(rule, stateful)
    admitted_any = False
    for probe in probes(m, seed, stateful):
        # the probe itself works: the same packet passes a rule allowing its family
        assert _control_delivers(direction, probe.version, stateful, probe), probe
        want = describes(m, probe)
        assert delivered(s, probe, ingress) == want, (body, rule, probe, want)
        admitted_any |= want
    if not (m.proto == ICMP6 and m.lo in ND_TYPES) and not (
        stateful and m.proto in (ICMP, ICMP6) and m.lo in ICMP_ERRORS[m.version]
    ):
        assert admitted_any, (body, "no probe inside the rule")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    direction=st.sampled_from(["ingress", "egress"]),
    ethertype=st.sampled_from(["IPv4", "IPv6"]),
    protocol=_PROTOCOLS,
    lo=_PORTS,
    hi=_PORTS,
    stateful=st.booleans(),
    seed=st.integers(0, 1 << 16),
)
@example("ingress", "IPv4", "sctp", 1000, 1999, True, 7)
@example("egress", "IPv6", "132", 5060, 5061, False, 7)
@example("ingress", "IPv4", "dccp", 1000, 1999, True, 7)
@example("ingress", "IPv6", "136", 53, 53, True, 7)
@example("ingress", "IPv4", "udplite", None, None, True, 7)
@example("ingress", "IPv6", "dccp", None, None, False, 7)
@example("ingress", "IPv4", "tcp", 22, 22, True, 7)
@example("egress", "IPv6", "icmp", 128, 0, False, 7)
@example("ingress", "IPv4", "icmp", 8, None, True, 7)
@example("ingress", "IPv4", "icmpv6", None, None, True, 7)
@example("ingress", "IPv6", "hopopt", None, None, True, 7)
@example("ingress", "IPv4", "hopopt", None, None, False, 7)
@example("ingress", "IPv6", "ipv6-route", None, None, True, 7)
@example("ingress", "IPv4", "gre", 1, 2, True, 7)
@example("ingress", "IPv6", "1", 3, 0, False, 7)
def test_accepted_rules_admit_exactly_what_they_describe(
    api: tuple[TestClient, str],
    direction: str,
    ethertype: str,
    protocol: Any,
    lo: int | None,
    hi: int | None,
    stateful: bool,
    seed: int,
) -> None:
    _check(api, direction, ethertype, protocol, lo, hi, stateful, seed)


@pytest.mark.parametrize("ethertype", ["IPv4", "IPv6"])
def test_every_protocol_name_and_number(api: tuple[TestClient, str], ethertype: str) -> None:
    """Exhaustively: every name and every number 0-255, bare, with a port range and with
    an ICMP type/code."""
    for protocol in [*NAMES, *range(256)]:
        for lo, hi in ((None, None), (1000, 1999), (8, 0)):
            _check(api, "ingress", ethertype, protocol, lo, hi, True, 4242)


def test_the_app_and_the_api_know_the_same_protocols() -> None:
    """The app reads what the API stored: the same names, the same refused headers."""
    from wyvern.api.resources import security_groups as api_sg
    from wyvern.apps import security_groups as app_sg

    assert {**api_sg.PROTOCOL_NUMBERS, **api_sg.LEGACY_NAMES} == app_sg.PROTOCOLS == NAMES
    assert api_sg.IPV6_SKIPPED_HEADERS == app_sg.IPV6_SKIPPED == SKIPPED_V6
    assert set(app_sg.PORT_FIELDS) == api_sg.PORT_PROTOCOLS - set(api_sg.UNMATCHABLE_PORT_PROTOCOLS)
