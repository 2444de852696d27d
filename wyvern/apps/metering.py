"""Metering: per-label packet and byte counters of what passes a router's gateway.

Neutron's metering counts, per label, the traffic of every router of the label's
project (every router, for a shared label) that enters the router from its external
network (ingress) or leaves the router by it (egress), matched after DNAT and before
SNAT: the VM side's addresses. A label counts a packet when one of its rules of that
direction matches it and none of its `excluded` rules does.

The counters are the statistics of this app's flows (the agent reads them:
wyvern.controller.metering). Wherever a router's pipeline runs (the gateway chassis,
or a floating IP's own chassis) packets pass two stages of ours:

- meter_ingress (after dnat, before routing) and meter_egress (after arp_resolve,
  before snat), owner ("router", id): a router whose gateway network is known here gets
  one flow per direction matching its key and the external network's. For each label of
  its project with a rule of that direction it loads the label's slot (label key * 2 +
  direction) and resubmits to meter_count, then goes on; the stages' misses go on too.
- meter_count, owner ("metering_label", id): one flow per (router, rule) matching the
  router, the slot and the rule's prefixes, with no actions: the resubmit returns.
  Excluded rules are above every counted rule, so a packet an excluded rule matches is
  counted by no flow of the label; each packet matches at most one flow per label, so
  the sum of a label's counted flows is its counter, exactly.

A new label changes its routers' dispatch flows, never another label's counting flows:
their statistics live on in OVS. A rule whose prefixes are of two IP versions never
reaches here (the API refuses it).
"""

from __future__ import annotations

import ipaddress

from wyvern.apps.base import App, Owner
from wyvern.ir import ETH_TYPE_IP, ETH_TYPE_IPV6, Flow, Goto, Load, MatchValue, Resubmit, table
from wyvern.ir.cookies import encode
from wyvern.model.view import LocalView, MeteringLabel, MeterRule, Router

P_DISPATCH = 100
P_COUNTED = 100  # + the rule's prefix lengths (longest first: any order counts once)
P_EXCLUDED = 1000  # + the same; above every counted rule of the label
DIRECTIONS = ("ingress", "egress")
STAGE = {"ingress": "meter_ingress", "egress": "meter_egress"}
NEXT = {"ingress": "routing", "egress": "snat"}
MAX_LABEL_KEY = (1 << 15) - 1  # meter_slot is 16 bits: key * 2 + direction


def slot(label_key: int, direction: str) -> int:
    """The label's meter_slot value for one direction."""
    return label_key * 2 + (1 if direction == "egress" else 0)


def direction_of(slot_value: int) -> str:
    return "egress" if slot_value & 1 else "ingress"


def metered(label: MeteringLabel, router: Router) -> bool:
    """Whether LABEL counts ROUTER's traffic (Neutron: its project's routers, or every
    router when shared; a router that is administratively down is skipped)."""
    return router.admin_state_up and (label.shared or label.project_id == router.project_id)


def _gateway_key(view: LocalView, router: Router) -> int | None:
    """The key of the router's external network, when the router has a gateway whose
    network this chassis knows (else its pipeline never reaches that network here)."""
    if not router.gateway_network_id:
        return None
    net = view.networks.get(router.gateway_network_id)
    return None if net is None else net.key


def _rule_match(rule: MeterRule) -> dict[str, MatchValue] | None:
    nets = [
        (field, ipaddress.ip_network(text, strict=False))
        for field, text in (("src", rule.source), ("dst", rule.destination))
        if text
    ]
    versions = {n.version for _, n in nets}
    if len(versions) != 1:
        return None  # none, or two versions (the API refuses both)
    v6 = versions == {6}
    match: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IPV6 if v6 else ETH_TYPE_IP}
    for field, net in nets:
        if net.prefixlen:  # (a /0 matches every address: no field)
            match[f"ipv6_{field}" if v6 else f"ipv4_{field}"] = str(net)
    return match


def _prefix_lengths(rule: MeterRule) -> int:
    return sum(
        ipaddress.ip_network(text, strict=False).prefixlen
        for text in (rule.source, rule.destination)
        if text
    )


def _router_flows(view: LocalView, router_id: str) -> list[Flow]:
    router = view.routers.get(router_id)
    if router is None:
        return []
    net_key = _gateway_key(view, router)
    if net_key is None:
        return []
    labels = sorted(
        (lb for lb in view.metering_labels.values() if metered(lb, router)), key=lambda x: x.key
    )
    out: list[Flow] = []
    for direction in DIRECTIONS:
        actions: list[Load | Resubmit | Goto] = []
        for label in labels:
            if label.key > MAX_LABEL_KEY or not any(r.direction == direction for r in label.rules):
                continue
            actions += [Load("meter_slot", slot(label.key, direction)), Resubmit("meter_count")]
        if not actions:
            continue
        actions.append(Goto(NEXT[direction]))  # type: ignore[arg-type]
        out.append(
            table(STAGE[direction]).flow(  # type: ignore[arg-type]
                priority=P_DISPATCH,
                cookie=encode("metering", router_id),
                match={"router_key": router.key, "network_key": net_key},
                actions=tuple(actions),
            )
        )
    return out


def _label_flows(view: LocalView, label_id: str) -> list[Flow]:
    label = view.metering_labels.get(label_id)
    if label is None or label.key > MAX_LABEL_KEY or not label.rules:
        return []
    out: list[Flow] = []
    for rid in sorted(view.routers):
        router = view.routers[rid]
        if not metered(label, router) or _gateway_key(view, router) is None:
            continue
        seen: set[tuple[int, str, frozenset[tuple[str, MatchValue]]]] = set()
        for rule in label.rules:  # (by id: a duplicate's flow is its first rule's)
            match = _rule_match(rule)
            if match is None:
                continue
            base = P_EXCLUDED if rule.excluded else P_COUNTED
            ident = (base, rule.direction, frozenset(match.items()))
            if ident in seen:
                continue
            seen.add(ident)
            out.append(
                table("meter_count").flow(
                    priority=base + _prefix_lengths(rule),
                    cookie=encode("metering", rule.id),
                    match={
                        "router_key": router.key,
                        "meter_slot": slot(label.key, rule.direction),
                        **match,
                    },
                    actions=(),
                )
            )
    return out


class MeteringApp(App):
    name = "metering"

    owner_tables = {"router": "routers", "metering_label": "metering_labels"}

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, id_ = owner
        if kind == "router":
            return _router_flows(view, id_)
        if kind == "metering_label":
            return _label_flows(view, id_)
        return []
