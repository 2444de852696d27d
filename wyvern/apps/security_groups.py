"""Security groups: Neutron's stateful (conntrack) and stateless firewall.

Stages: pre_acl → acl (traffic FROM a local VM: the groups' *egress* rules) and
pre_acl_egress → acl_egress (traffic TO a local VM: the groups' *ingress* rules). Ports
without port security or without groups, and non-IP traffic (ARP), pass untouched. DHCP
client/server, ICMPv6 RS/RA/NS/NA and MLD queries bypass the rules (as Neutron's firewall
drivers do: MLD queries both ways, RS out, RA in).

Conntrack zones
    One zone per local port: `classifier.port_ct_zone()` (the port's ofport, unique on the
    bridge). pre_acl loads the SOURCE port's zone, pre_acl_egress the DESTINATION port's
    zone, after a `ct_clear`: one packet between two local VMs is tracked twice, once in
    each port's zone, and the second lookup must not see the first one's ct_state.

Stateful groups (the default)
    pre_acl / pre_acl_egress send the port's IP traffic through `ct(zone, table=acl…)`.
    In acl / acl_egress: ``+trk+inv`` drops (no rule flow passes ``+inv``), except ICMP
    that conntrack cannot track at all: OVS tracks echo (and IPv4's timestamp and
    information queries) and errors about a connection, and marks every other ICMP
    message ``+inv`` (MLD, node information, experimental types). Such a message is judged
    by the rules alone, like in a stateless group, and never committed; a rule naming
    its type (or all ICMP) is then what admits it. Fragments: the rules judge the first
    one, later ones (no L4 header) follow it through conntrack's reassembler
    (_fragment_flows). A packet matching a rule is committed with
    ``ct_mark = mark(rule)`` and continues; an established or related packet (either
    direction) continues if its connection's mark names a rule that still exists in one of
    the port's groups; anything else drops (the table default).

    Revocation: an established packet whose mark names no current rule of the port (rule
    deleted, port left the group) is evaluated against the rules again; if another rule
    still allows it, that commit re-marks the connection, otherwise it drops. So removing
    a rule stops its connections at their next packet, without touching conntrack. Only
    packets in the connection's original direction are committed (a rule matching a
    ``+rpl`` packet lets it pass uncommitted): a reply in flight when an ingress rule
    goes must not be re-marked by an egress rule, which would keep the connection alive.

Stateless groups (stateful=false)
    No conntrack: pre_acl goes straight to acl; a rule match continues, nothing else.
    Replies need their own rules, and later fragments a rule without a protocol (they
    carry no ports, and an IPv6 one no protocol either). (A port mixing stateful and
    stateless groups, which Neutron refuses, is treated as stateful.)

Flows and owners: conjunctive matches, shared by every local port of a group
    ("security_group", G) owns G's rule flows, at one priority P(G) in acl/acl_egress
    (a hash of G's id into [1000, 61000), with a rank among groups hashing alike, so two
    groups' flows never share a (priority, match) key). Each rule R is a conjunction:

    - clause 1, the port: one flow per local member port, (network_key, port key) →
      conjunction(rule(R), 1/n) for every rule of G in that direction, plus
      conjunction(est(R), 1/2) for every stateful rule of G (both directions: replies);
      owned by the member port ("port", P), so a port joining or leaving G does not
      rebuild every member's flow;
    - clause 2, what: eth_type, ip_proto, tcp/udp/sctp_dst masked ranges (`ir.port_range`),
      ICMP type/code;
    - clause 3, remote (only with a remote): the far end's address, one flow per CIDR of
      remote_ip_prefix, remote_group_id (`view.sg_addresses`) or remote_address_group_id,
      owned per (group, address): ("sg_remote", "G CIDR"), listing every rule of G whose
      remote holds that address. A member joining a remote group adds or changes only its
      own addresses' flows, in O(1) (the group is not rebuilt);
    - conj_id=rule(R): commit with ct_mark=mark(R) (stateless: just continue);
    - est(R), clause 2: ``ct_state=+trk-new-inv, ct_mark=mark(R)`` → conj_id=est(R) continues.

    So a group costs O(member ports + Σ_R (ranges + remotes)) flows, never a product. A
    clause flow shared by two rules of the group is one flow with both conjunction actions.
    Owners: ("security_group", G) the merged clause-2 flows; ("sg_rule", R) the rule's
    own conj_id flows (allow, reply, established). A rule change recomputes its own flows,
    its group's clause-2 merge (memoised parts: no flow of another rule is rebuilt) and its
    local members' clause-1 flows; unchanged rules keep identical flows, so the installer
    never touches them. ("port", P) also owns
    P's pre_acl / pre_acl_egress dispatch. Nothing of G is installed while G has no local
    member. Values every owner of a group shares (its priority, whether it has a local
    member, its clause-1 conjunctions) are read through view.derive: the engine
    recomputes them once per change and their readers only when they differ.

    Exactness: clause 2 admits exactly what the rule describes. Port ranges of TCP, UDP
    and SCTP become masked tcp/udp/sctp_dst matches; ICMP type/code become icmp(v6)_type/
    code. Whatever OpenFlow cannot match the API refuses (wyvern/api/resources/
    security_groups.py): port ranges of DCCP and UDP-Lite (no port fields), and IPv6 rules
    naming an extension header OVS skips to find the upper-layer protocol (hopopt,
    ipv6-route, ipv6-frag, ipv6-opts, ah). A rule that arrives anyway installs nothing.

Cookies: rule flows carry the rule id, per-port and merged flows the group or port id.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import socket
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wyvern.apps.base import App, Owner
from wyvern.apps.common import port_ct_zone
from wyvern.ir import (
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Action,
    Conjunction,
    Ct,
    CtClear,
    Flow,
    FlowTemplate,
    Goto,
    Load,
    Match,
    MatchValue,
    SetField,
    match,
    port_range,
    table,
)
from wyvern.ir.cookies import AppName, encode
from wyvern.ir.pipeline import StageName
from wyvern.model.protocols import PROTOCOLS
from wyvern.model.view import LocalView, Port, SecurityGroupRule

APP: AppName = "security_groups"
REMOTE = "sg_remote"  # owner kind of the per-address clause-3 flows
RULE = "sg_rule"  # owner kind of one rule's own flows (its conj_id matches)

# pre_acl / pre_acl_egress
P_BYPASS = 65000  # DHCP, ICMPv6 RS/RA/NS/NA, MLD queries: never filtered
P_PORT = 100  # a protected port's IP traffic → conntrack (or straight to acl)
# (everything else passes: the stage's declared miss, wyvern.ir.pipeline)
# acl / acl_egress
P_INVALID = 1  # +trk+inv that no rule passes (untracked ICMP) drops, visibly
P_FRAGMENT = 62000  # later fragments of the original direction (above every group)
P_GROUP_BASE = 1000
GROUP_SLOTS = 15000
GROUP_RANKS = 4  # groups whose ids hash to the same slot take ranks 0..3 of it
# (what no rule allows is dropped: the stage's declared miss)

ETH_TYPES = {"IPv4": ETH_TYPE_IP, "IPv6": ETH_TYPE_IPV6}
# The destination-port field of each protocol OpenFlow can match ports of.
PORT_FIELDS = {IPPROTO_TCP: "tcp_dst", IPPROTO_UDP: "udp_dst", IPPROTO_SCTP: "sctp_dst"}
ICMP_FIELDS = {
    (ETH_TYPE_IP, IPPROTO_ICMP): ("icmp_type", "icmp_code"),
    (ETH_TYPE_IPV6, IPPROTO_ICMPV6): ("icmpv6_type", "icmpv6_code"),
}
# IPv6 extension headers OVS skips to classify a packet by its upper-layer protocol (a
# later fragment aside): ip_proto never names them, so a rule naming one cannot be exact.
IPV6_SKIPPED = frozenset({0, 43, 44, 51, 60})  # hopopt, route, frag, ah, opts


@dataclass(frozen=True, slots=True)
class _Side:
    """One direction of filtering: the stages, the port-key register, where to go next."""

    pre: StageName
    acl: StageName
    port_key: str  # src_port_key | dst_port_key
    after_pre: StageName  # where unfiltered traffic continues
    after_acl: StageName
    rule_direction: str  # the Neutron rule direction this side enforces
    remote_end: str  # "dst" | "src": which address is the far end


FROM_VM = _Side("pre_acl", "acl", "src_port_key", "services", "services", "egress", "dst")
TO_VM = _Side(
    "pre_acl_egress",
    "acl_egress",
    "dst_port_key",
    "port_security_egress",
    "port_security_egress",
    "ingress",
    "src",
)
SIDES = (FROM_VM, TO_VM)


def _pre_templates(stateful: bool) -> tuple[FlowTemplate, ...]:
    """A protected port's pre_acl / pre_acl_egress flows, per side and IP version: its
    IP traffic through conntrack in its zone (stateful) or straight to the acl."""
    out = []
    for side in SIDES:
        for et in (ETH_TYPE_IP, ETH_TYPE_IPV6):
            actions: tuple[Action, ...]
            if stateful:
                actions = (Load("port_ct_zone", 1),)  # the zone varies per port
                if side is TO_VM:
                    actions += (CtClear(),)
                actions += (Ct(zone="port_ct_zone", table=side.acl),)
            else:
                actions = (CtClear(), Goto(side.acl)) if side is TO_VM else (Goto(side.acl),)
            out.append(
                table(side.pre).template(
                    priority=P_PORT,
                    cookie_app=APP,
                    varying=("network_key", side.port_key),
                    fixed={"eth_type": et},
                    actions=actions,
                    action_values=(0,) if stateful else (),
                )
            )
    return tuple(out)


_PRE_STATEFUL = _pre_templates(True)
_PRE_STATELESS = _pre_templates(False)


def _h32(text: str) -> int:
    """A stable non-zero 32-bit value of a string (conjunction ids, ct_mark)."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


# The ct_mark of a connection whose first packet came in fragments (see _fragment_flows).
FRAGMENT_MARK = 0xF4A6_0001


def rule_mark(rule_id: str) -> int:
    """The ct_mark of connections a rule committed."""
    return _h32(f"mark:{rule_id}")


def rule_conj_id(rule_id: str) -> int:
    return _h32(f"rule:{rule_id}")


def est_conj_id(rule_id: str) -> int:
    return _h32(f"est:{rule_id}")


def _slot(sg_id: str) -> int:
    return _h32(f"slot:{sg_id}") % GROUP_SLOTS


def group_priority(view: LocalView, sg_id: str) -> int:
    """The acl priority of a group's flows: its hash slot, ranked among the groups of the
    view that share the slot (sorted by id), so no two groups share a priority."""
    slot = _slot(sg_id)
    peers = sorted(g for g in (set(view.security_groups) | {sg_id}) if _slot(g) == slot)
    rank = min(peers.index(sg_id), GROUP_RANKS - 1)
    return P_GROUP_BASE + slot * GROUP_RANKS + rank


def protocol_number(rule: SecurityGroupRule) -> int | None:
    """The IP protocol a rule names (None: any). An unknown name raises KeyError."""
    proto = rule.protocol
    if proto is None or proto.lower() in ("", "any", "0"):
        return None
    number = int(proto) if proto.isdigit() else PROTOCOLS[proto.lower()]
    if rule.ethertype == "IPv6" and number == IPPROTO_ICMP and not proto.isdigit():
        return IPPROTO_ICMPV6  # Neutron: "icmp" in an IPv6 rule is ICMPv6
    return number


def protected(port: Port) -> bool:
    return port.port_security_enabled and bool(port.security_group_ids)


def _local_protected(view: LocalView, port_id: str) -> tuple[Port, int, int] | None:
    """(port, network key, zone) of a local port with port security and groups."""
    port = view.ports.get(port_id)
    zone = port_ct_zone(view, port_id)
    if port is None or zone is None or not protected(port):
        return None
    net = view.networks.get(port.network_id)
    if net is None:
        return None
    return port, net.key, zone


def port_is_stateful(view: LocalView, port: Port) -> bool:
    """Stateful unless every (known) group of the port is stateless."""
    groups = [view.security_groups.get(g) for g in port.security_group_ids]
    return any(g is None or g.stateful for g in groups)


# ---------------------------------------------------------------- rule clauses


def _what_matches(rule: SecurityGroupRule) -> list[dict[str, MatchValue]] | None:
    """Clause 2 of a rule: one match per flow, whose union is exactly the traffic the rule
    describes. None: it cannot be expressed exactly (the API refuses such rules), so it
    installs nothing rather than something wider."""
    et = ETH_TYPES.get(rule.ethertype)
    if et is None:
        return None
    try:
        proto = protocol_number(rule)
    except (KeyError, ValueError):
        return None
    lo, hi = rule.port_range_min, rule.port_range_max
    ranged = lo is not None or hi is not None
    base: dict[str, MatchValue] = {"eth_type": et}
    if proto is None:
        return None if ranged else [base]
    if not 0 <= proto <= 255 or (et == ETH_TYPE_IPV6 and proto in IPV6_SKIPPED):
        return None
    base["ip_proto"] = proto
    if not ranged:
        return [base]
    port_field = PORT_FIELDS.get(proto)
    if port_field is not None:
        lo = hi if lo is None else lo
        hi = lo if hi is None else hi
        assert lo is not None and hi is not None
        if not 0 <= lo <= hi <= 0xFFFF:
            return None
        if (lo, hi) == (0, 0xFFFF):
            return [base]
        return [{**base, port_field: (v, m)} for v, m in port_range(lo, hi)]
    icmp = ICMP_FIELDS.get((et, proto))
    if icmp is None or lo is None or not 0 <= lo <= 255:
        return None  # ports of DCCP/UDP-Lite (no OpenFlow field), of a portless protocol
    if hi is not None and not 0 <= hi <= 255:
        return None
    type_field, code_field = icmp
    m: dict[str, MatchValue] = {**base, type_field: lo}
    if hi is not None:
        m[code_field] = hi
    return [m]


@functools.lru_cache(maxsize=1 << 16)
def _network_info(text: str) -> tuple[int, int, int, str] | None:
    """(version, network address, prefix length, canonical text) of an address or CIDR
    as ipaddress.ip_network(text, strict=False) reads it; None: not one. Memoised."""
    addr, slash, plen = text.partition("/")
    if not slash or (plen.isascii() and plen.isdigit() and len(plen) <= 2 and int(plen) <= 32):
        try:  # an IPv4 dotted quad, fast (ipaddress is slow; port addresses are many)
            value = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
        except (OSError, ValueError):
            pass
        else:
            bits = int(plen) if slash else 32
            value &= 0xFFFFFFFF ^ ((1 << (32 - bits)) - 1)
            dotted = f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
            return 4, value, bits, f"{dotted}/{bits}"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net.version, int(net.network_address), net.prefixlen, str(net)


@functools.lru_cache(maxsize=1 << 16)
def _cookie(object_id: str) -> int:
    """encode(APP, object_id), memoised (it hashes the id: ~10 us, for every clause)."""
    return encode(APP, object_id)


def _version(rule: SecurityGroupRule) -> int:
    return 4 if rule.ethertype == "IPv4" else 6


@functools.lru_cache(maxsize=1 << 12)
def _expressible(rule: SecurityGroupRule) -> bool:
    """Whether a rule installs anything (see _what_matches), memoised."""
    return _what_matches(rule) is not None


def _any_of(cidrs: Iterable[str], version: int) -> bool:
    """Whether the addresses include a /0 of `version` (a remote clause then means any)."""
    for text in cidrs:
        info = _network_info(text)
        if info is not None and info[0] == version and info[2] == 0:
            return True
    return False


def _remote_is_any(view: LocalView, rule: SecurityGroupRule) -> bool:
    """Whether a rule has no remote clause: no remote at all, or one naming a /0.
    O(1) for remote groups (view.sg_addresses), so a member joining costs no scan."""
    version = _version(rule)
    if rule.remote_group_id:
        counts = view.sg_addresses.get(rule.remote_group_id, {})
        return ("0.0.0.0/0" if version == 4 else "::/0") in counts
    if rule.remote_address_group_id:
        ag = view.address_groups.get(rule.remote_address_group_id)
        return ag is not None and _any_of(ag.addresses, version)
    if rule.remote_ip_prefix:
        return _any_of((rule.remote_ip_prefix,), version)
    return True


def _rule_cidrs(view: LocalView, rule: SecurityGroupRule) -> list[str]:
    """Every canonical CIDR of the rule's family its remote names (a superset of its
    clause-3 flows: /0 included; [] for a rule without a remote)."""
    version = _version(rule)
    raw: Iterable[str]
    if rule.remote_group_id:
        raw = view.sg_addresses.get(rule.remote_group_id, {})
    elif rule.remote_address_group_id:
        ag = view.address_groups.get(rule.remote_address_group_id)
        raw = ag.addresses if ag is not None else ()
    elif rule.remote_ip_prefix:
        raw = (rule.remote_ip_prefix,)
    else:
        return []
    out = []
    for text in raw:
        info = _network_info(text)
        if info is not None and info[0] == version:
            out.append(info[3])
    return out


def _remote_contains(view: LocalView, rule: SecurityGroupRule, cidr: str) -> bool:
    """Whether `cidr` (canonical, of the rule's family, not a /0) is in the rule's remote."""
    if rule.remote_group_id:
        return cidr in view.sg_addresses.get(rule.remote_group_id, {})
    if rule.remote_address_group_id:
        ag = view.address_groups.get(rule.remote_address_group_id)
        return ag is not None and cidr in _canonical_set(ag.addresses)
    if rule.remote_ip_prefix:
        info = _network_info(rule.remote_ip_prefix)
        return info is not None and info[3] == cidr
    return False


@functools.lru_cache(maxsize=1 << 10)
def _canonical_set(addresses: tuple[str, ...]) -> frozenset[str]:
    out = (_network_info(a) for a in addresses)
    return frozenset(info[3] for info in out if info is not None)


def remote_owner(sg_id: str, cidr: str) -> Owner:
    """The owner of a group's clause-3 flows for one remote address (see the docstring)."""
    return (REMOTE, f"{sg_id} {cidr}")


# ---------------------------------------------------------------- the app


def has_local_member(view: LocalView, sg_id: str) -> bool:
    """Whether a local protected port is in the group (else its flows match nothing).
    Read through view.derive: a member coming or going re-checks it, and its readers
    recompute only when the answer flips."""
    return any(_local_protected(view, pid) is not None for pid in view.ports_by_sg.get(sg_id, ()))


def _priority(view: LocalView, sg_id: str) -> int:
    return view.derive(group_priority, sg_id)


def _live(view: LocalView, sg_id: str) -> bool:
    return view.derive(has_local_member, sg_id)


@functools.lru_cache(maxsize=1 << 16)
def _rule_parts(rule: SecurityGroupRule) -> tuple[Match, int, int, tuple[Match, ...] | None]:
    """(est clause-2 match, est conj id, rule conj id, clause-2 matches or None when the
    rule cannot be expressed) of a rule, memoised."""
    what = _what_matches(rule)
    return (
        match(ct_state="+trk-new-inv", ct_mark=rule_mark(rule.id)),
        est_conj_id(rule.id),
        rule_conj_id(rule.id),
        None if what is None else tuple(match(**fields) for fields in what),
    )


def port_conj(view: LocalView, sg_id: str, stateful: bool, acl: str) -> tuple[Conjunction, ...]:
    """The clause-1 conjunctions of a group's rules on one side (sorted, unique)."""
    side = FROM_VM if acl == FROM_VM.acl else TO_VM
    out: list[Conjunction] = []
    for rule in view.sg_rules(sg_id):
        _, eid, cid, what = _rule_parts(rule)
        if stateful:
            out.append(Conjunction(eid, 1, 2))
        if rule.direction != side.rule_direction or what is None:
            continue
        n = 2 if _remote_is_any(view, rule) else 3
        out.append(Conjunction(cid, 1, n))
    return tuple(sorted(set(out), key=_conj_order))


def remote_parts(
    view: LocalView, sg_id: str, version: int
) -> tuple[bool, int, list[SecurityGroupRule]]:
    """(has a local member, priority, its rules of one family that have a clause 3) of a
    group: what every clause-3 owner of the group reads (through view.derive)."""
    rules = [
        r
        for r in view.sg_rules(sg_id)
        if _version(r) == version and _expressible(r) and not _remote_is_any(view, r)
    ]
    return _live(view, sg_id), _priority(view, sg_id), rules


def member_parts(
    view: LocalView, sg_id: str, stateful: bool
) -> tuple[int, tuple[Conjunction, ...], tuple[Conjunction, ...]]:
    """(priority, clause-1 conjunctions from the VM, to the VM) of a group: what every
    member port's clause-1 flows read (through view.derive)."""
    return (
        _priority(view, sg_id),
        port_conj(view, sg_id, stateful, FROM_VM.acl),
        port_conj(view, sg_id, stateful, TO_VM.acl),
    )


class SecurityGroups(App):
    """Owners beyond owner_tables: the clause-3 owners (REMOTE, "G CIDR") are listed by
    no view table, so owners_of() finds them from the change (a rule, a remote group's
    member address, an address group) and owns() checks one. Listing them on every
    change instead is O(members of a remote group): 10k owners per port add."""

    name = APP
    owner_tables = {"port": "bindings", "security_group": "security_groups", RULE: "rules"}

    def __init__(self) -> None:
        # Memos of pure values keyed by their inputs (they cannot change a result).
        self._member_memo: dict[object, tuple[FlowTemplate, dict[tuple[int, int], Flow]]] = {}
        self._rtmpl: dict[object, tuple[int, FlowTemplate]] = {}
        self._memo: dict[object, Flow] = {}

    # -- owners -----------------------------------------------------------------------

    def owners(self, view: LocalView) -> Iterable[Owner]:
        yield from super().owners(view)
        for g in sorted(view.rules_by_sg):
            cidrs = {c for r in view.sg_rules(g) for c in _rule_cidrs(view, r)}
            for cidr in sorted(cidrs):
                yield remote_owner(g, cidr)

    def owner_sources(self) -> Iterable[str]:
        return {*self.owner_tables.values(), "sg_addresses", "address_groups"}

    def owners_of(self, view: LocalView, table: str, key: Any) -> Iterable[Owner]:
        out = list(super().owners_of(view, table, key))
        if table == "rules":
            rule = view.rules.get(key)
            if rule is not None:
                g = rule.security_group_id
                out += [remote_owner(g, c) for c in _rule_cidrs(view, rule)]
        elif table == "sg_addresses" and key[1] is not None:  # (remote group, CIDR)
            info = _network_info(key[1])
            if info is not None:
                out += [
                    remote_owner(r.security_group_id, info[3])
                    for r in view.rules.values()
                    if r.remote_group_id == key[0] and _version(r) == info[0]
                ]
        elif table == "address_groups":
            out += [
                remote_owner(r.security_group_id, c)
                for r in view.rules.values()
                if r.remote_address_group_id == key
                for c in _rule_cidrs(view, r)
            ]
        return out

    def owns(self, view: LocalView, owner: Owner) -> bool:
        kind, id_ = owner
        if kind != REMOTE:
            return super().owns(view, owner)
        sg_id, _, cidr = id_.partition(" ")
        info = _network_info(cidr)
        if info is None or info[3] != cidr:
            return False
        return any(
            _version(r) == info[0] and _remote_contains(view, r, cidr) for r in view.sg_rules(sg_id)
        )

    # -- flows ------------------------------------------------------------------------

    def global_flows(self) -> list[Flow]:
        out: list[Flow] = []
        for side in SIDES:
            cookie = encode(APP, f"defaults:{side.pre}")
            pre = table(side.pre)
            for m in _bypass_matches(side):
                out.append(
                    pre.flow(
                        priority=P_BYPASS, cookie=cookie, match=m, actions=(Goto(side.after_pre),)
                    )
                )
            acl = table(side.acl)
            acl_cookie = encode(APP, f"defaults:{side.acl}")
            out.append(
                acl.flow(priority=P_INVALID, cookie=acl_cookie, match=match(ct_state="+trk+inv"))
            )
            out += _fragment_flows(side, acl_cookie)
        return out

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, id_ = owner
        if kind == "port":
            return self._port_flows(view, id_)
        if kind == "security_group":
            return self._group_flows(view, id_)
        if kind == RULE:
            return self._rule_flows(view, id_)
        if kind == REMOTE:
            sg_id, _, cidr = id_.partition(" ")
            return self._remote_flows(view, sg_id, cidr) if cidr else []
        return []

    def _port_flows(self, view: LocalView, port_id: str) -> list[Flow]:
        found = _local_protected(view, port_id)
        if found is None:
            return []
        port, net_key, zone = found
        cookie = _cookie(port_id)
        key = port.key
        if port_is_stateful(view, port):
            out = [t.flow(cookie, net_key, key, zone) for t in _PRE_STATEFUL]
        else:
            out = [t.flow(cookie, net_key, key) for t in _PRE_STATELESS]
        # Clause 1 of every rule of each of the port's groups (see _member_flow).
        for sg_id in dict.fromkeys(port.security_group_ids):
            sg = view.security_groups.get(sg_id)
            if sg is None:
                continue
            prio, *conjs = view.derive(member_parts, sg_id, sg.stateful)
            for side, port_actions in zip(SIDES, conjs, strict=True):
                flow = self._member_flow(sg_id, prio, port_actions, side, net_key, port.key)
                if flow is not None:
                    out.append(flow)
        return out

    def _member_flow(
        self,
        sg_id: str,
        prio: int,
        port_actions: tuple[Conjunction, ...],
        side: _Side,
        net_key: int,
        key: int,
    ) -> Flow | None:
        """A member port's clause-1 flow of a group on one side ((network_key, port key) →
        the conjunctions of the group's rules), owned by the port: a port joining or
        leaving a group touches only its own flows here. The flow is memoised by its
        inputs, so it is the same object as last time."""
        if not port_actions:
            return None
        group_cookie = _cookie(sg_id)
        outer = (side.acl, prio, group_cookie, port_actions)
        known = self._member_memo.get(outer)
        if known is None or len(known[1]) >= 1 << 16:
            if len(self._member_memo) >= 1 << 10:
                self._member_memo.clear()
            known = self._member_memo[outer] = (
                table(side.acl).template(
                    priority=prio,
                    cookie_app=APP,
                    varying=("network_key", side.port_key),
                    actions=port_actions,
                ),
                {},
            )
        template, flows = known
        flow = flows.get((net_key, key))
        if flow is None:
            flow = flows[(net_key, key)] = template.flow(group_cookie, net_key, key)
        return flow

    def _group_flows(self, view: LocalView, sg_id: str) -> list[Flow]:
        """Clause 2 of every rule of the group, merged: a match two rules share is one
        flow with both conjunctions. O(rules) lookups of memoised parts, so a rule change
        in a big group rebuilds none of the other rules' flows (their own flows are
        owned per rule, _rule_flows)."""
        sg = view.security_groups.get(sg_id)
        if sg is None:
            return []
        if not _live(view, sg_id):
            return []  # no local member: nothing would match
        prio = _priority(view, sg_id)
        group_cookie = _cookie(sg_id)
        rules = view.sg_rules(sg_id)
        out: list[Flow] = []
        for side in SIDES:
            # clause flows of this side: match -> (conjunctions, rule ids)
            clauses: dict[Match, tuple[list[Conjunction], set[str]]] = defaultdict(
                lambda: ([], set())
            )
            any_clause1 = False
            for rule in rules:
                est_match, eid, cid, what = _rule_parts(rule)
                if sg.stateful:
                    any_clause1 = True
                    entry = clauses[est_match]
                    entry[0].append(Conjunction(eid, 2, 2))
                    entry[1].add(rule.id)
                if rule.direction != side.rule_direction or what is None:
                    continue
                any_clause1 = True
                n = 2 if _remote_is_any(view, rule) else 3
                conj = Conjunction(cid, 2, n)
                for m in what:
                    entry = clauses[m]
                    entry[0].append(conj)
                    entry[1].add(rule.id)
            if not any_clause1:
                continue
            for m, (conjs, rule_ids) in clauses.items():
                cookie = _cookie(next(iter(rule_ids))) if len(rule_ids) == 1 else group_cookie
                actions = tuple(sorted(set(conjs), key=_conj_order))
                out.append(self._flow(side.acl, prio, cookie, actions, m))
        return out

    def _rule_flows(self, view: LocalView, rule_id: str) -> list[Flow]:
        """A rule's own flows, on each side: its established-traffic and reply passes
        and its allow (stateful: committing with the rule's ct_mark). They depend on the
        rule and on its group's priority, statefulness and local membership only."""
        rule = view.rules.get(rule_id)
        if rule is None:
            return []
        sg = view.security_groups.get(rule.security_group_id)
        if sg is None or not _live(view, sg.id):
            return []
        prio = _priority(view, sg.id)
        cookie = _cookie(rule.id)
        _, eid, cid, what = _rule_parts(rule)
        out: list[Flow] = []
        for side in SIDES:
            acl = table(side.acl)
            if sg.stateful:
                out.append(
                    acl.flow(
                        priority=prio,
                        cookie=cookie,
                        match=match(conj_id=eid),
                        actions=(Goto(side.after_acl),),
                    )
                )
            if rule.direction != side.rule_direction or what is None:
                continue
            et = ETH_TYPES[rule.ethertype]
            allow: tuple[Action, ...] = (Goto(side.after_acl),)
            icmp = _icmp_proto(rule)
            if icmp is not None:
                # ICMP that conntrack does not track (not echo, nor an error about a
                # connection) is +inv: judged by the rules alone, never committed.
                untracked = match(conj_id=cid, eth_type=et, ip_proto=icmp, ct_state="+trk+inv")
                out.append(acl.flow(priority=prio, cookie=cookie, match=untracked, actions=allow))
            if sg.stateful:
                commit = Ct(
                    commit=True,
                    zone="port_ct_zone",
                    exec=(SetField("ct_mark", rule_mark(rule.id)),),
                )
                allow = (commit, *allow)
                # A reply passes but is never committed: its connection was allowed (and
                # marked) in the other direction, and re-marking it here would keep
                # alive a connection whose rule was just revoked.
                out.append(
                    acl.flow(
                        priority=prio,
                        cookie=cookie,
                        match=match(conj_id=cid, eth_type=et, ct_state="+trk+rpl-inv"),
                        actions=(Goto(side.after_acl),),
                    )
                )
                rule_match = match(conj_id=cid, eth_type=et, ct_state="+trk-rpl-inv")
            else:  # (-inv: a port mixing stateless and stateful groups is tracked)
                rule_match = match(conj_id=cid, eth_type=et, ct_state="-inv")
            out.append(acl.flow(priority=prio, cookie=cookie, match=rule_match, actions=allow))
        return out

    def _remote_flows(self, view: LocalView, sg_id: str, cidr: str) -> list[Flow]:
        """Clause 3 for one remote address: on each side, the far end's address →
        conjunction(R, 3/3) for every rule R of the group whose remote holds it. Owned
        per (group, address), so a remote-group member joining touches only its own
        addresses' flows, never the group's other members'."""
        sg = view.security_groups.get(sg_id)
        info = _network_info(cidr)
        if sg is None or info is None or info[3] != cidr or info[2] == 0:
            return []
        version, value, plen, _ = info
        live, prio, remote = view.derive(remote_parts, sg_id, version)
        if not live:
            return []
        rules = [r for r in remote if _remote_contains(view, r, cidr)]
        if not rules:
            return []
        bits = 32 if version == 4 else 128
        addr = (value, ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1))
        out: list[Flow] = []
        for side in SIDES:
            ids = tuple(r.id for r in rules if r.direction == side.rule_direction)
            if not ids:
                continue
            cookie, template = self._remote_template(sg_id, side, version, prio, ids)
            out.append(template.flow(cookie, addr))
        return out

    def _remote_template(
        self, sg_id: str, side: _Side, version: int, prio: int, ids: tuple[str, ...]
    ) -> tuple[int, FlowTemplate]:
        """(cookie, template) of a clause-3 flow listing these rules: one per combination."""
        memo = self._rtmpl
        key = (sg_id, side.acl, version, prio, ids)
        got = memo.get(key)
        if got is None:
            cookie = _cookie(ids[0]) if len(set(ids)) == 1 else _cookie(sg_id)
            actions = tuple(
                sorted({Conjunction(rule_conj_id(i), 3, 3) for i in ids}, key=_conj_order)
            )
            field = ("ipv4_" if version == 4 else "ipv6_") + side.remote_end
            template = table(side.acl).template(
                priority=prio, cookie_app=APP, varying=(), masked=(field,), actions=actions
            )
            if len(memo) >= 1 << 12:
                memo.clear()
            got = memo[key] = (cookie, template)
        return got

    def _flow(
        self,
        stage: StageName,
        prio: int,
        cookie: int,
        actions: tuple[Action, ...],
        m: Match,
    ) -> Flow:
        """table(stage).flow(...) memoised: a group's flows are rebuilt whenever one
        member comes or goes, and all but a few are the same as last time."""
        memo = self._memo
        key = (stage, prio, cookie, actions, m)
        flow = memo.get(key)
        if flow is None:
            flow = table(stage).flow(priority=prio, cookie=cookie, match=m, actions=actions)
            if len(memo) >= 1 << 17:
                memo.clear()
            memo[key] = flow
        return flow


def _fragment_flows(side: _Side, cookie: int) -> list[Flow]:
    """Later fragments of a stateful port's packets (userspace datapath).

    Conntrack reassembles a fragmented packet to track it, but the pipeline goes on with
    the fragments, and a later fragment has no L4 header (an IPv6 one not even its
    protocol: ip_proto is 44), so no rule naming a protocol, port or ICMP type matches
    it. The first fragment is judged by the rules; a commit holds it until the later
    fragments reach a commit in the same zone too. So a later fragment of a new
    connection (or of one such a commit marked) is committed here with FRAGMENT_MARK:
    the whole packet goes on only if its first fragment was admitted (alone, the later
    fragments wait in the reassembler until they expire). Replies of a connection with
    that mark pass like any reply; the connection's next unfragmented packet in the
    original direction is judged by the rules and re-marked (the revocation path).
    Established connections' later fragments pass on their rule's mark (est clause)."""
    acl = table(side.acl)
    commit = Ct(commit=True, zone="port_ct_zone", exec=(SetField("ct_mark", FRAGMENT_MARK),))
    out = []
    for et in (ETH_TYPE_IP, ETH_TYPE_IPV6):
        for m in (
            match(eth_type=et, ip_frag="later", ct_state="+trk+new-rpl-inv"),
            match(eth_type=et, ip_frag="later", ct_state="+trk+est-rpl-inv", ct_mark=FRAGMENT_MARK),
        ):
            out.append(
                acl.flow(
                    priority=P_FRAGMENT,
                    cookie=cookie,
                    match=m,
                    actions=(commit, Goto(side.after_acl)),
                )
            )
        reply = match(eth_type=et, ct_state="+trk+est+rpl-inv", ct_mark=FRAGMENT_MARK)
        out.append(
            acl.flow(
                priority=P_FRAGMENT, cookie=cookie, match=reply, actions=(Goto(side.after_acl),)
            )
        )
    return out


def _icmp_proto(rule: SecurityGroupRule) -> int | None:
    """The ICMP protocol of the rule's family if the rule can match ICMP (it names ICMP,
    or no protocol), else None."""
    icmp = IPPROTO_ICMP if rule.ethertype == "IPv4" else IPPROTO_ICMPV6
    try:
        proto = protocol_number(rule)
    except (KeyError, ValueError):
        return None
    return icmp if proto is None or proto == icmp else None


def _conj_order(c: Conjunction) -> tuple[int, int]:
    return c.conj_id, c.clause


def _is_any(cidr: str) -> bool:
    """Whether an address or CIDR is a /0 (then a remote clause means any address)."""
    info = _network_info(cidr)
    return info is not None and info[2] == 0


@functools.lru_cache(maxsize=1 << 16)
def _remote_match(field: str, cidr: str) -> Match:
    return match(**{field: cidr})


def _bypass_matches(side: _Side) -> list[Match]:
    """Traffic no security group filters: DHCP, ICMPv6 neighbour and router discovery,
    and MLD queries (Neutron's ICMPV6_ALLOWED_INGRESS/EGRESS_TYPES; MLD reports and
    done messages need a rule)."""
    if side is FROM_VM:
        dhcp = [
            match(eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_UDP, udp_src=68, udp_dst=67),
            match(eth_type=ETH_TYPE_IPV6, ip_proto=IPPROTO_UDP, udp_src=546, udp_dst=547),
        ]
        nd = (130, 133, 135, 136)  # MLD query, RS, NS, NA
    else:
        dhcp = [
            match(eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_UDP, udp_src=67, udp_dst=68),
            match(eth_type=ETH_TYPE_IPV6, ip_proto=IPPROTO_UDP, udp_src=547, udp_dst=546),
        ]
        nd = (130, 134, 135, 136)  # MLD query, RA, NS, NA
    return dhcp + [match(icmpv6_type=t) for t in nd]
