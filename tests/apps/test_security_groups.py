"""Security groups through the simulator: packet outcomes with the L2 apps around them."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.apps import scenario as sc
from wyvern.apps.base import App, Owner
from wyvern.apps.punts import PUNT_ND_NS
from wyvern.apps.security_groups import FRAGMENT_MARK, SecurityGroups, group_priority
from wyvern.controller.engine import Engine
from wyvern.ir import Conjunction, Flow
from wyvern.ir import packet as pk
from wyvern.ir.cookies import decode, encode
from wyvern.model.view import Binding, Kind, LocalView, record_from_obj

MAC_A, MAC_B, MAC_C = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
IP_A, IP_B, IP_C = "10.0.0.5", "10.0.0.6", "10.0.0.7"
A, B, C = 1, 2, 3  # ofports


def apps() -> list[App]:
    return [*sc.l2_apps(), SecurityGroups()]


def view(
    *,
    groups: dict[str, list[str]] | None = None,
    sgs: list[dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    address_groups: list[dict[str, Any]] | None = None,
    c_local: bool = True,
) -> LocalView:
    """Ports a, b, c on one network; `groups` = port id -> its security groups."""
    groups = groups or {}
    return sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[IP_A], security_groups=groups.get("a", [])),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[IP_B], security_groups=groups.get("b", [])),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=[IP_C], security_groups=groups.get("c", [])),
        ],
        security_groups=sgs or [],
        rules=rules or [],
        address_groups=address_groups or [],
        local={"a": A, "b": B, "c": C} if c_local else {"a": A, "b": B},
    )


def tcp(src: str, dst: str, dport: int, flags: str = "S", sport: int = 40000) -> pk.Packet:
    ips = {"a": (A, MAC_A, IP_A), "b": (B, MAC_B, IP_B), "c": (C, MAC_C, IP_C)}
    (port, smac, sip), (_, dmac, dip) = ips[src], ips[dst]
    return pk.tcp(port, smac, dmac, sip, dip, sport, dport, flags)


def ping(src: str, dst: str, reply: bool = False) -> pk.Packet:
    ips = {"a": (A, MAC_A, IP_A), "b": (B, MAC_B, IP_B), "c": (C, MAC_C, IP_C)}
    (port, smac, sip), (_, dmac, dip) = ips[src], ips[dst]
    return pk.icmp_echo(port, smac, dmac, sip, dip, reply=reply)


def delivered(s: sc.Scenario, packet: pk.Packet, port: int) -> bool:
    out = s.outcome(packet)
    assert out.ports in ([], [port]), out.trace.format()
    return out.ports == [port]


def allow_all_egress(sg: str) -> list[dict[str, Any]]:
    return [
        sc.rule(f"{sg}-eg4", sg, "egress", ethertype="IPv4"),
        sc.rule(f"{sg}-eg6", sg, "egress", ethertype="IPv6"),
    ]


# ---------------------------------------------------------------- basics


def test_ports_without_groups_or_port_security_are_not_filtered() -> None:
    v = view(groups={"b": []}, sgs=[sc.security_group("sg")])
    s = sc.Scenario(v, apps=apps())
    assert delivered(s, tcp("a", "b", 23), B)
    assert delivered(s, ping("b", "a"), A)


def test_icmp_needs_an_egress_and_an_ingress_rule() -> None:
    groups = {"a": ["sg"], "b": ["sg"]}
    rules = [sc.rule("in-icmp", "sg", "ingress", protocol="icmp")]
    eg = [sc.rule("eg-icmp", "sg", "egress", protocol="icmp")]
    # both
    s = sc.Scenario(view(groups=groups, sgs=[sc.security_group("sg")], rules=rules + eg), apps())
    assert delivered(s, ping("a", "b"), B)
    # ingress only: a cannot send (no egress rule)
    s = sc.Scenario(view(groups=groups, sgs=[sc.security_group("sg")], rules=rules), apps())
    assert not delivered(s, ping("a", "b"), B)
    # egress only: b refuses
    s = sc.Scenario(view(groups=groups, sgs=[sc.security_group("sg")], rules=eg), apps())
    assert not delivered(s, ping("a", "b"), B)
    assert delivered(s, ping("b", "a", reply=True), A)  # the reply, without a rule for it


def test_tcp_22_allowed_23_denied_and_the_reply_passes_statefully() -> None:
    groups = {"a": ["client"], "b": ["server"]}
    sgs = [sc.security_group("client"), sc.security_group("server")]
    rules = [
        *allow_all_egress("client"),
        sc.rule("ssh", "server", "ingress", protocol="tcp", port_range_min=22, port_range_max=22),
    ]
    s = sc.Scenario(view(groups=groups, sgs=sgs, rules=rules), apps())
    assert delivered(s, tcp("a", "b", 22), B)
    assert not delivered(s, tcp("a", "b", 23), B)
    # b's SYN-ACK: no egress rule in "server", no ingress rule in "client": conntrack
    assert delivered(s, tcp("b", "a", 40000, "SA", sport=22), A)
    assert delivered(s, tcp("a", "b", 22, "A"), B)
    # a reply to the denied connection is not "established"
    assert not delivered(s, tcp("b", "a", 40000, "SA", sport=23), A)
    # b cannot open a connection to a on its own
    assert not delivered(s, tcp("b", "a", 22, sport=41000), A)


def test_port_ranges_are_masked_matches() -> None:
    groups = {"a": ["c"], "b": ["s"]}
    rules = [
        *allow_all_egress("c"),
        sc.rule("r", "s", "ingress", protocol="tcp", port_range_min=1000, port_range_max=1999),
        sc.rule("u", "s", "ingress", protocol="udp", port_range_min=53, port_range_max=53),
    ]
    sgs = [sc.security_group("c"), sc.security_group("s")]
    s = sc.Scenario(view(groups=groups, sgs=sgs, rules=rules), apps())
    for port, ok in ((999, False), (1000, True), (1500, True), (1999, True), (2000, False)):
        assert delivered(s, tcp("a", "b", port, sport=port + 10000), B) is ok, port
    udp53 = pk.udp(A, MAC_A, MAC_B, IP_A, IP_B, 5353, 53)
    udp54 = pk.udp(A, MAC_A, MAC_B, IP_A, IP_B, 5353, 54)
    assert delivered(s, udp53, B)
    assert not delivered(s, udp54, B)
    assert not delivered(s, tcp("a", "b", 53), B)


def test_arp_and_dhcp_pass_a_group_without_rules() -> None:
    v = view(groups={"a": ["sg"], "b": ["sg"]}, sgs=[sc.security_group("sg")])
    s = sc.Scenario(v, apps())
    out = s.outcome(pk.arp(A, MAC_A, IP_A, "10.0.0.200"))
    assert B in out.ports, out.trace.format()
    discover = pk.udp(A, MAC_A, pk.BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67)
    out = s.outcome(discover)
    assert out.punts, out.trace.format()  # reaches the DHCP service
    assert not delivered(s, ping("a", "b"), B)


def test_invalid_packets_are_dropped() -> None:
    groups = {"a": ["sg"], "b": ["sg"]}
    sgs = [sc.security_group("sg")]
    rules = [
        *allow_all_egress("sg"),
        sc.rule("any-in", "sg", "ingress", ethertype="IPv4"),
    ]
    s = sc.Scenario(view(groups=groups, sgs=sgs, rules=rules), apps())
    assert delivered(s, tcp("a", "b", 80), B)  # a SYN (another connection) passes
    # a SYN-ACK for no connection: conntrack says +inv; even "allow everything" drops it
    out = s.outcome(tcp("a", "b", 22, "SA"))
    assert out.dropped, out.trace.format()
    assert any("acl" in st.stage for st in out.trace.steps)


# ---------------------------------------------------------------- stateless


def test_stateless_group_needs_rules_both_ways() -> None:
    groups = {"a": ["sl"], "b": ["sl"]}
    sgs = [sc.security_group("sl", stateful=False)]
    rules = [
        sc.rule("e", "sl", "egress", protocol="tcp"),
        sc.rule("i", "sl", "ingress", protocol="tcp", port_range_min=22, port_range_max=22),
    ]
    s = sc.Scenario(view(groups=groups, sgs=sgs, rules=rules), apps())
    assert delivered(s, tcp("a", "b", 22), B)
    # the reply arrives at a on port 40000: no rule allows it, and no conntrack
    assert not delivered(s, tcp("b", "a", 40000, "SA", sport=22), A)
    # no conntrack: a bare ACK (which conntrack would call invalid) passes the rule
    assert delivered(s, tcp("a", "b", 22, "A"), B)
    # an explicit rule for the replies
    reply = sc.rule(
        "i2", "sl", "ingress", protocol="tcp", port_range_min=40000, port_range_max=40000
    )
    s = sc.Scenario(view(groups=groups, sgs=sgs, rules=[*rules, reply]), apps())
    assert delivered(s, tcp("b", "a", 40000, "SA", sport=22), A)
    assert len(s.conntrack) == 0


# ---------------------------------------------------------------- remotes


def test_remote_group_members_changes_take_effect() -> None:
    groups = {"a": ["web"], "b": ["db"], "c": []}
    sgs = [sc.security_group("web"), sc.security_group("db")]
    rules = [
        *allow_all_egress("web"),
        sc.rule("from-web", "db", "ingress", protocol="tcp", remote_group_id="web"),
        *allow_all_egress("db"),
    ]
    v = view(groups=groups, sgs=sgs, rules=rules)
    s = sc.Scenario(v, apps())
    assert delivered(s, tcp("a", "b", 5432), B)
    assert not delivered(s, tcp("c", "b", 5432), B)
    # c joins "web": its address is now allowed (only the port change is applied)
    c = sc.port("c", "n1", key=3, mac=MAC_C, ips=[("s1", IP_C)], security_groups=["web"])
    v.apply("port", "c", record_from_obj("port", c))
    s.refresh()
    assert delivered(s, tcp("c", "b", 5432, sport=40001), B)
    # a leaves "web" (no group at all): a's new connections are refused
    a = sc.port("a", "n1", key=1, mac=MAC_A, ips=[("s1", IP_A)], security_groups=[])
    v.apply("port", "a", record_from_obj("port", a))
    s.refresh()
    assert not delivered(s, tcp("a", "b", 5432, sport=40002), B)


def test_remote_ip_prefix_and_address_group() -> None:
    groups = {"a": ["o"], "b": ["o"], "c": ["s"]}
    sgs = [sc.security_group("o"), sc.security_group("s")]
    rules = [
        *allow_all_egress("o"),
        sc.rule(
            "pfx", "s", "ingress", protocol="tcp", port_range_min=80, remote_ip_prefix="10.0.0.5/32"
        ),
        sc.rule(
            "ag", "s", "ingress", protocol="tcp", port_range_min=443, remote_address_group_id="ag1"
        ),
    ]
    ags = [sc.address_group("ag1", ["10.0.0.6/32", "192.168.0.0/16"])]
    v = view(groups=groups, sgs=sgs, rules=rules, address_groups=ags)
    s = sc.Scenario(v, apps())
    assert delivered(s, tcp("a", "c", 80), C)
    assert not delivered(s, tcp("b", "c", 80), C)
    assert delivered(s, tcp("b", "c", 443), C)
    assert not delivered(s, tcp("a", "c", 443), C)
    # the address group changes: a is in, b is out
    v.apply(
        "address_group", "ag1", record_from_obj("address_group", sc.address_group("ag1", [IP_A]))
    )
    s.refresh()
    assert delivered(s, tcp("a", "c", 443, sport=40003), C)
    assert not delivered(s, tcp("b", "c", 443, sport=40004), C)


def test_egress_remote_prefix_limits_destinations() -> None:
    groups = {"a": ["lim"], "b": [], "c": []}
    rules = [sc.rule("to-b", "lim", "egress", remote_ip_prefix=IP_B + "/32")]
    s = sc.Scenario(view(groups=groups, sgs=[sc.security_group("lim")], rules=rules), apps())
    assert delivered(s, ping("a", "b"), B)
    assert not delivered(s, ping("a", "c"), C)


# ---------------------------------------------------------------- revocation


def test_removing_a_rule_stops_its_established_connections() -> None:
    groups = {"a": ["c"], "b": ["s"]}
    sgs = [sc.security_group("c"), sc.security_group("s")]
    rules = [
        *allow_all_egress("c"),
        sc.rule("ssh", "s", "ingress", protocol="tcp", port_range_min=22),
        sc.rule("web", "s", "ingress", protocol="tcp", port_range_min=80),
    ]
    v = view(groups=groups, sgs=sgs, rules=rules)
    s = sc.Scenario(v, apps())
    for port in (22, 80):
        assert delivered(s, tcp("a", "b", port, sport=port + 30000), B)
        assert delivered(s, tcp("b", "a", port + 30000, "SA", sport=port), A)
        assert delivered(s, tcp("a", "b", port, "A", sport=port + 30000), B)
    v.apply("security_group_rule", "ssh", None)
    s.refresh()
    # the ssh connection is cut both ways; the web one is untouched
    assert not delivered(s, tcp("a", "b", 22, "A", sport=30022), B)
    assert not delivered(s, tcp("b", "a", 30022, "A", sport=22), A)
    assert delivered(s, tcp("a", "b", 80, "A", sport=30080), B)
    assert delivered(s, tcp("b", "a", 30080, "A", sport=80), A)
    # a rule allowing it again (another id) re-admits and re-marks the connection
    again = sc.rule("ssh2", "s", "ingress", protocol="tcp", port_range_min=22)
    v.apply("security_group_rule", "ssh2", record_from_obj("security_group_rule", again))
    s.refresh()
    assert delivered(s, tcp("a", "b", 22, "A", sport=30022), B)
    assert delivered(s, tcp("b", "a", 30022, "A", sport=22), A)


def test_a_reply_after_revocation_does_not_re_allow_the_connection() -> None:
    """b's group allows all egress: a reply of a revoked ingress connection must not be
    re-committed by that egress rule (it would re-mark the connection and keep it alive)."""
    groups = {"a": ["c"], "b": ["s"]}
    sgs = [sc.security_group("c"), sc.security_group("s")]
    rules = [
        *allow_all_egress("c"),
        *allow_all_egress("s"),
        sc.rule("ssh", "s", "ingress", protocol="tcp", port_range_min=22),
    ]
    v = view(groups=groups, sgs=sgs, rules=rules)
    s = sc.Scenario(v, apps())
    assert delivered(s, tcp("a", "b", 22, sport=30022), B)
    assert delivered(s, tcp("b", "a", 30022, "SA", sport=22), A)
    v.apply("security_group_rule", "ssh", None)
    s.refresh()
    # a reply in flight may pass (b's egress allows it) but must not re-mark the
    # connection: the next request is dropped, and so is the one after
    delivered(s, tcp("b", "a", 30022, "A", sport=22), A)
    assert not delivered(s, tcp("a", "b", 22, "A", sport=30022), B)
    assert not delivered(s, tcp("a", "b", 22, "PA", sport=30022), B)


# ---------------------------------------------------------------- flow shape


def test_remote_group_costs_members_plus_ranges_flows() -> None:
    """A remote group of M members and a rule with R masked ranges: O(M + R) flows."""
    members = [f"m{i}" for i in range(20)]
    ports = [
        sc.port(
            m,
            "n1",
            key=10 + i,
            mac=f"fa:16:3e:00:01:{i:02x}",
            ips=[f"10.0.1.{i + 1}"],
            security_groups=["web"],
        )
        for i, m in enumerate(members)
    ]
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/16")],
        ports=[
            *ports,
            sc.port("db", "n1", key=1, mac=MAC_A, ips=["10.0.0.5"], security_groups=["db"]),
        ],
        security_groups=[sc.security_group("web"), sc.security_group("db")],
        rules=[
            sc.rule(
                "r",
                "db",
                "ingress",
                protocol="tcp",
                port_range_min=1000,
                port_range_max=1999,
                remote_group_id="web",
            )
        ],
        local={"db": 1},
    )
    app = SecurityGroups()
    owners = [o for o in app.owners(v) if o[0] != "port"]  # the group's and its remotes'
    assert ("sg_remote", "db 10.0.1.7/32") in owners
    flows = [f for o in owners for f in app.flows(v, o)]
    conj = [f for f in flows if f.actions and isinstance(f.actions[0], Conjunction)]
    # ranges(1000..1999) = 6 masked matches, 20 members, 2 port flows, est clause flows
    assert len(flows) < 20 + 6 + 10, len(flows)
    assert len(conj) >= 26
    for f in flows:
        app, _ = decode(f.cookie)
        assert app == "security_groups"


def test_unchanged_rules_keep_identical_flows() -> None:
    groups = {"a": ["sg"], "b": ["sg"]}
    rules = [sc.rule("r1", "sg", "ingress", protocol="tcp", port_range_min=22)]
    v = view(groups=groups, sgs=[sc.security_group("sg")], rules=rules)
    app = SecurityGroups()
    before = set(app.flows(v, ("security_group", "sg")))
    r2 = sc.rule("r2", "sg", "ingress", protocol="udp", port_range_min=53)
    v.apply("security_group_rule", "r2", record_from_obj("security_group_rule", r2))
    after = set(app.flows(v, ("security_group", "sg")))
    # r1's own flows are untouched (same key, actions and cookie): the installer skips them
    r1_before = {f for f in before if f.cookie == _cookie("r1")}
    r1_after = {f for f in after if f.cookie == _cookie("r1")}
    assert r1_before and r1_before <= r1_after
    # what changed is the per-port clause flows (they list r2's conjunction too) + r2's own
    for f in before - after:
        assert f.cookie == _cookie("sg"), f


def _cookie(object_id: str) -> int:
    return encode("security_groups", object_id)


def test_groups_get_distinct_priorities() -> None:
    v = view(sgs=[sc.security_group(f"g{i}") for i in range(200)])
    prios = {group_priority(v, f"g{i}") for i in range(200)}
    assert len(prios) == 200


# ---------------------------------------------------------------- incremental = full


def _full(app: App, v: LocalView) -> dict[Owner, frozenset[Flow]]:
    out: dict[Owner, frozenset[Flow]] = {}
    for owner in app.owners(v):
        fl = app.flows(v, owner)
        if fl:
            out[owner] = frozenset(fl)
    return out


_SGS = ["g1", "g2", "x941"]  # x941 hashes to the same priority slot as g1
_PORTS = ["a", "b", "c", "d"]
_IPS = ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9"]


@st.composite
def _changes(draw: st.DrawFn) -> list[tuple[Kind, str, Any]]:
    out: list[tuple[Kind, str, Any]] = []
    for _ in range(draw(st.integers(1, 12))):
        what = draw(st.sampled_from(["port", "binding", "sg", "rule", "ag", "net"]))
        if what == "port":
            pid = draw(st.sampled_from(_PORTS))
            gone = draw(st.booleans()) and draw(st.booleans())
            obj = None
            if not gone:
                obj = sc.port(
                    pid,
                    "n1",
                    key=_PORTS.index(pid) + 1,
                    mac=f"fa:16:3e:00:00:{_PORTS.index(pid):02x}",
                    ips=[("s1", draw(st.sampled_from(_IPS)))],
                    security_groups=draw(st.lists(st.sampled_from(_SGS), max_size=2, unique=True)),
                    port_security_enabled=draw(st.booleans()) or draw(st.booleans()),
                    allowed_address_pairs=[
                        {"ip_address": a}
                        for a in draw(
                            st.lists(
                                st.sampled_from(["10.0.0.200", "10.0.0.0/30", "0.0.0.0/0"]),
                                max_size=2,
                                unique=True,
                            )
                        )
                    ],
                )
            out.append(("port", pid, obj))
        elif what == "binding":
            pid = draw(st.sampled_from(_PORTS))
            out.append(("binding", pid, draw(st.sampled_from([None, 1]))))
        elif what == "sg":
            gid = draw(st.sampled_from(_SGS))
            gone = draw(st.booleans()) and draw(st.booleans())
            out.append(
                (
                    "security_group",
                    gid,
                    None if gone else sc.security_group(gid, stateful=draw(st.booleans())),
                )
            )
        elif what == "rule":
            rid = draw(st.sampled_from(["r1", "r2", "r3", "r4"]))
            if draw(st.booleans()) and draw(st.booleans()):
                out.append(("security_group_rule", rid, None))
                continue
            remote = draw(st.sampled_from(["none", "prefix", "group", "ag"]))
            proto = draw(st.sampled_from([None, "tcp", "udp", "icmp", "47"]))
            lo = draw(st.sampled_from([None, 22, 1000])) if proto in ("tcp", "udp") else None
            obj = sc.rule(
                rid,
                draw(st.sampled_from(_SGS)),
                draw(st.sampled_from(["ingress", "egress"])),
                protocol=proto,
                port_range_min=lo,
                port_range_max=None if lo is None else lo + draw(st.sampled_from([0, 9])),
                remote_ip_prefix="10.0.0.0/30" if remote == "prefix" else None,
                remote_group_id=draw(st.sampled_from(_SGS)) if remote == "group" else None,
                remote_address_group_id="ag1" if remote == "ag" else None,
            )
            out.append(("security_group_rule", rid, obj))
        elif what == "ag":
            addrs = draw(st.lists(st.sampled_from([*_IPS, "10.1.0.0/16"]), max_size=3))
            out.append(("address_group", "ag1", sc.address_group("ag1", addrs)))
        else:
            out.append(("network", "n1", sc.network("n1", key=draw(st.sampled_from([100, 101])))))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_changes())
def test_incremental_equals_full_recompute(changes: list[tuple[Kind, str, Any]]) -> None:
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[IP_A], security_groups=["g1", "x941"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[IP_B], security_groups=["g2"]),
            sc.port("c", "n1", key=3, mac=MAC_C, ips=[IP_C], security_groups=["g2"]),
        ],
        security_groups=[sc.security_group(g) for g in _SGS],
        rules=[
            sc.rule("r1", "g1", "ingress", protocol="tcp", remote_group_id="g2"),
            sc.rule("r2", "g2", "egress", remote_group_id="g1"),
            sc.rule("r3", "x941", "egress", remote_address_group_id="ag1"),
        ],
        local={"a": 1, "c": 3},
    )
    app = SecurityGroups()
    engine = Engine([app])
    engine.full(v)
    for kind, id_, obj in changes:
        if kind == "binding":
            binding = None if obj is None else Binding(id_, _PORTS.index(id_) + 1)
            change = v.apply("binding", id_, binding)
        else:
            change = v.apply(kind, id_, None if obj is None else record_from_obj(kind, obj))
        engine.apply(v, change)
        desired = sc.engine_app_flows(engine)[app.name]
        assert desired == sc.as_entries(app.name, _full(app, v)), (kind, id_)


def test_ipv6_rules_and_neighbour_discovery() -> None:
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s1", "n1", "10.0.0.0/24"), sc.subnet("s6", "n1", "fd00::/64")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[IP_A, "fd00::5"], security_groups=["sg"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[IP_B, "fd00::6"], security_groups=["sg"]),
        ],
        security_groups=[sc.security_group("sg")],
        rules=[
            sc.rule("eg6", "sg", "egress", ethertype="IPv6"),
            sc.rule(
                "echo6", "sg", "ingress", ethertype="IPv6", protocol="icmp", port_range_min=128
            ),
        ],
        local={"a": A, "b": B},
    )
    s = sc.Scenario(v, apps())
    assert delivered(s, pk.icmp_echo(A, MAC_A, MAC_B, "fd00::5", "fd00::6"), B)
    assert delivered(s, pk.icmp_echo(B, MAC_B, MAC_A, "fd00::6", "fd00::5", reply=True), A)
    # only echo requests (type 128) come in: TCP over IPv6 and IPv4 anything do not
    tcp6 = pk.tcp(A, MAC_A, MAC_B, "fd00::5", "fd00::6", 40000, 22)
    assert not delivered(s, tcp6, B)
    assert not delivered(s, ping("a", "b"), B)
    # neighbour discovery needs no rule
    out = s.outcome(pk.nd_solicit(A, MAC_A, "fd00::5", "fd00::6"))
    assert out.punts == [bytes([PUNT_ND_NS])], out.trace.format()  # to the ND responder
    out = s.outcome(pk.nd_solicit(A, MAC_A, "fd00::5", "fd00::77"))
    assert B in out.ports, out.trace.format()


def _icmp6(
    src: tuple[int, str, str], dst: tuple[int, str, str], type_: int, code: int
) -> pk.Packet:
    return pk.packet(in_port=src[0], eth_src=src[1], eth_dst=dst[1], eth_type=0x86DD,
                     ipv6_src=src[2], ipv6_dst=dst[2], ip_proto=58, nw_ttl=64,
                     icmpv6_type=type_, icmpv6_code=code)  # fmt: skip


def test_icmpv6_conntrack_cannot_track_is_judged_by_the_rules() -> None:
    """ICMPv6 other than echo and errors (MLD, node information, experimental types) is
    +inv in conntrack: the rules decide it alone, by type and code, never committing it;
    invalid TCP still passes no rule."""
    a, b = (A, MAC_A, "fd00::5"), (B, MAC_B, "fd00::6")

    def scenario(stateful: bool, *extra: dict[str, Any]) -> sc.Scenario:
        v = sc.build_view(
            networks=[sc.network("n1", key=100)],
            subnets=[sc.subnet("s6", "n1", "fd00::/64")],
            ports=[
                sc.port("a", "n1", key=1, mac=MAC_A, ips=[a[2]], security_groups=["out"]),
                sc.port("b", "n1", key=2, mac=MAC_B, ips=[b[2]], security_groups=["sg"]),
            ],
            security_groups=[sc.security_group("out"), sc.security_group("sg", stateful=stateful)],
            rules=[
                sc.rule("eg6", "out", "egress", ethertype="IPv6"),
                sc.rule(
                    "t200",
                    "sg",
                    "ingress",
                    ethertype="IPv6",
                    protocol="ipv6-icmp",
                    port_range_min=200,
                    port_range_max=1,
                ),
                sc.rule(
                    "ssh",
                    "sg",
                    "ingress",
                    ethertype="IPv6",
                    protocol="tcp",
                    port_range_min=22,
                    port_range_max=22,
                ),
                *extra,
            ],
            local={"a": A, "b": B},
        )
        return sc.Scenario(v, apps())

    for stateful in (True, False):
        s = scenario(stateful)
        assert delivered(s, _icmp6(a, b, 200, 1), B), stateful
        assert not delivered(s, _icmp6(a, b, 200, 2), B)  # another code
        assert not delivered(s, _icmp6(a, b, 201, 1), B)  # another type
        assert not delivered(s, _icmp6(a, b, 143, 0), B)  # an MLD report: no rule for it
        assert not delivered(s, pk.icmp_echo(A, MAC_A, MAC_B, a[2], b[2]), B)
        syn = pk.tcp(A, MAC_A, MAC_B, a[2], b[2], 40000, 22, "S")
        assert delivered(s, syn, B)
    s = scenario(True)
    assert len(s.conntrack) == 0 or all(
        c.original[3] != 58 for c in s.conntrack.connections()
    )  # no ICMPv6 connection committed
    ack = pk.tcp(A, MAC_A, MAC_B, a[2], b[2], 40001, 22, "A")
    assert not delivered(s, ack, B)  # +inv: not a clean SYN, no connection
    # A rule for all ICMPv6 (or all IPv6) admits every type, tracked or not.
    s = scenario(True, sc.rule("icmp6", "sg", "ingress", ethertype="IPv6", protocol="icmp"))
    for type_ in (200, 143, 139, 128):
        assert delivered(s, _icmp6(a, b, type_, 3), B), type_
    assert not delivered(s, ack, B)
    s = scenario(True, sc.rule("all6", "sg", "ingress", ethertype="IPv6"))
    assert delivered(s, _icmp6(a, b, 200, 9), B)
    assert not delivered(s, ack, B)


def test_later_fragments_follow_their_first_fragment() -> None:
    """A later fragment has no L4 header (an IPv6 one not even its protocol: 44). Of a
    new connection it is committed with the fragment mark (the reassembler then lets the
    packet through only with its first fragment, which the rules judged); replies of
    such a connection pass; an established connection's later fragments pass on their
    rule's mark. Later fragments of an unprotected port are not filtered at all."""
    a, b = (A, MAC_A, "fd00::5"), (B, MAC_B, "fd00::6")
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s6", "n1", "fd00::/64")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[a[2]], security_groups=["out"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[b[2]], security_groups=["sg"]),
        ],
        security_groups=[sc.security_group("out"), sc.security_group("sg")],
        rules=[
            sc.rule("eg6", "out", "egress", ethertype="IPv6"),
            sc.rule("echo", "sg", "ingress", ethertype="IPv6", protocol="icmp", port_range_min=128),
        ],
        local={"a": A, "b": B},
    )
    s = sc.Scenario(v, apps())

    def later(src: tuple[int, str, str], dst: tuple[int, str, str]) -> pk.Packet:
        return pk.packet(in_port=src[0], eth_src=src[1], eth_dst=dst[1], eth_type=0x86DD,
                         ipv6_src=src[2], ipv6_dst=dst[2], ip_proto=44, nw_ttl=64,
                         ip_frag="later")  # fmt: skip

    first = pk.icmp_echo(A, MAC_A, MAC_B, a[2], b[2])
    first["ip_frag"] = 1  # FRAG_ANY: a first fragment keeps its ICMPv6 header
    assert delivered(s, first, B)
    out = s.outcome(later(a, b))
    assert out.ports == [B], out.trace.format()
    marks = {c.mark for c in s.conntrack.connections()}
    assert FRAGMENT_MARK in marks, marks  # committed in b's zone with the fragment mark
    # b's reply (in fragments too) passes: its connection's mark is the fragment mark.
    assert delivered(s, later(b, a), A)
    # Without the first fragment's rule nothing changes for later fragments: the
    # reassembler holds them (the dataplane proves it, tests/e2e/test_security_groups_v6).
    s2 = sc.Scenario(
        sc.build_view(
            networks=[sc.network("n1", key=100)],
            subnets=[sc.subnet("s6", "n1", "fd00::/64")],
            ports=[
                sc.port("a", "n1", key=1, mac=MAC_A, ips=[a[2]]),
                sc.port("b", "n1", key=2, mac=MAC_B, ips=[b[2]]),
            ],
            local={"a": A, "b": B},
        ),
        apps(),
    )
    assert delivered(s2, later(a, b), B)  # no groups: nothing filters


def test_a_group_without_rules_passes_nd_and_mld_queries_only() -> None:
    """Neutron's always-allowed ICMPv6: NS and NA both ways, MLD queries both ways; an
    MLD report or an echo request needs a rule."""
    a, b = (A, MAC_A, "fd00::5"), (B, MAC_B, "fd00::6")
    v = sc.build_view(
        networks=[sc.network("n1", key=100)],
        subnets=[sc.subnet("s6", "n1", "fd00::/64")],
        ports=[
            sc.port("a", "n1", key=1, mac=MAC_A, ips=[a[2]], security_groups=["deny"]),
            sc.port("b", "n1", key=2, mac=MAC_B, ips=[b[2]], security_groups=["deny"]),
        ],
        security_groups=[sc.security_group("deny")],
        local={"a": A, "b": B},
    )
    s = sc.Scenario(v, apps())
    assert delivered(s, _icmp6(a, b, 130, 0), B)  # MLD query: out of a, into b
    assert delivered(s, _icmp6(b, a, 130, 0), A)
    na = pk.packet(in_port=A, eth_src=MAC_A, eth_dst=MAC_B, eth_type=0x86DD, ipv6_src=a[2],
                   ipv6_dst=b[2], ip_proto=58, nw_ttl=255, icmpv6_type=136,
                   nd_target=a[2])  # fmt: skip
    assert delivered(s, na, B)  # NA (of a's own address: port security checks that)
    for type_ in (131, 143, 132, 128):  # MLD reports, done; echo
        assert not delivered(s, _icmp6(a, b, type_, 0), B), type_
