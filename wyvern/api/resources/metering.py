"""Metering labels and their rules (`metering`, `metering_source_and_destination_fields`).

Neutron's metering: a label counts the traffic through the external gateway of every
router of its project (of every router when `shared`), as its rules select it; the
agents count it in flows (wyvern.apps.metering) and report per chassis
(wyvern.controller.metering); `/metrics` and `wyvern meters` sum the chassis.

As in Neutron, neither labels nor rules are standard-attribute resources (no tags,
timestamps or revision numbers) and neither can be updated. A rule's attributes are
Neutron's: `direction` (required), `excluded`, and the prefixes: `remote_ip_prefix`
(legacy: the source of egress, the destination of ingress traffic, a CIDR without host
bits) or `source_ip_prefix` / `destination_ip_prefix` (not with remote_ip_prefix; at
least one of the three). Neutron's MeteringLabelRuleOverlaps refuses a rule whose
remote_ip_prefix overlaps one of the same label, direction and exclusion. Beyond
Neutron: the prefixes of one rule must be of one IP version (a flow cannot match an
IPv4 source and an IPv6 destination; Neutron's iptables driver meters IPv4 only).

Store: a label holds a small key (claim `meterkey/<n>`: its slot in the meter_count
stage) and, in `_rules`, its rules as the agents read them; each rule is also its own
object under its label (`metering_label_rules/<label>/<id>`) for the API. A rule's
create or delete rewrites the label in the same transaction (guarded), so overlap
checks and a label's delete cannot race.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator

from wyvern.api.attributes import (
    Attr,
    Description,
    Name,
    ProjectId,
    ResourceDef,
    validate_update,
)
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, Conflict, InvalidInput, NotFound
from wyvern.api.listing import ListQuery, filter_objects
from wyvern.api.repo import Stored, Txn
from wyvern.api.resource import Resource, free_key
from wyvern.api.types import Bool, Uuid
from wyvern.model.keys import uniq_key

MAX_LABEL_KEY = (1 << 15) - 1  # (wyvern.apps.metering: the meter_slot register's reach)


def _ip_prefix(value: str) -> str:
    """Neutron checks these with ip_interface: an address, with or without a prefix."""
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError as exc:
        raise ValueError(f"'{value}' is invalid [{exc}]") from None


def _subnet(value: str) -> str:
    """neutron-lib's type:subnet: a CIDR without host bits."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP subnet") from None
    if "/" not in value or str(net) != str(ipaddress.ip_interface(value)):
        raise ValueError(f"'{value}' isn't a recognized IP subnet cidr, '{net}' is recommended")
    return str(net)


IpPrefix = Annotated[str, AfterValidator(_ip_prefix)]
Subnet = Annotated[str, AfterValidator(_subnet)]

LABEL_DEFN = ResourceDef(
    name="metering_label",
    collection="metering_labels",
    path="metering/metering-labels",
    kind="metering_labels",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("name", Name, post=True, default="", filter=True, sort=True),
        Attr("description", Description, post=True, default="", filter=True, sort=True),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
        Attr(
            "shared",
            Bool,
            post=True,
            default=False,
            filter=True,
            sort=True,
            doc="Count the traffic of every project's routers, not only the label's own.",
        ),
    ),
)

RULE_DEFN = ResourceDef(
    name="metering_label_rule",
    collection="metering_label_rules",
    path="metering/metering-label-rules",
    kind="metering_label_rules",
    parent_attr="metering_label_id",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("metering_label_id", Uuid, post=True, required=True, filter=True, sort=True),
        Attr(
            "direction",
            Literal["ingress", "egress"],
            post=True,
            required=True,
            filter=True,
            sort=True,
            doc="ingress: into the router from its external network; egress: out by it.",
        ),
        Attr("excluded", Bool, post=True, default=False, filter=True, sort=True),
        Attr("remote_ip_prefix", Subnet | None, post=True, default=None, filter=True, sort=True),
        Attr("source_ip_prefix", IpPrefix | None, post=True, default=None, filter=True, sort=True),
        Attr(
            "destination_ip_prefix",
            IpPrefix | None,
            post=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
    ),
)


def label_not_found(id_: str) -> NotFound:
    return NotFound(f"Metering label '{id_[:64]}' does not exist.", type="MeteringLabelNotFound")


def rule_not_found(id_: str) -> NotFound:
    return NotFound(
        f"Metering label rule '{id_[:64]}' does not exist.", type="MeteringLabelRuleNotFound"
    )


def _no_update(defn: ResourceDef, ctx: RequestContext, body: Any) -> None:
    """Neutron updates none of these: every attribute is read-only (400 naming it), and
    an empty update changes nothing."""
    validate_update(defn, ctx, body)


def agent_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """What an agent needs of a rule (the label's `_rules` entry)."""
    keep = ("id", "direction", "excluded", "remote_ip_prefix")
    out = {k: rule[k] for k in keep if rule.get(k) is not None}
    for k in ("source_ip_prefix", "destination_ip_prefix"):
        if rule.get(k):
            out[k] = rule[k]
    return out


class MeteringLabels(Resource):
    defn = LABEL_DEFN

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or not self.readable(ctx, stored.obj):
            raise label_not_found(id_)
        return stored

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        stored = self.load(ctx, id_)
        _no_update(self.defn, ctx, body)
        return stored.obj

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        exhausted = Conflict(
            f"No metering label key is free: at most {MAX_LABEL_KEY} labels can exist.",
            type="MeteringLabelsExhausted",
        )
        key = free_key(self.repo, txn, "meterkey", MAX_LABEL_KEY, exhausted)
        txn.claim(uniq_key("meterkey", key), obj["id"], None)
        obj["_key"] = key
        obj["_rules"] = {}
        txn.create(self.defn.kind, obj)
        return obj

    def new_object(self, attrs: dict[str, Any]) -> dict[str, Any]:
        obj = super().new_object(attrs)
        for stamp in ("created_at", "updated_at", "revision_number"):
            obj.pop(stamp, None)  # (not a standard-attribute resource in Neutron)
        return obj

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        """The label and its rules (Neutron's cascade), and its key."""
        for rule in self.repo.scan(RULE_DEFN.kind, stored.obj["id"]):
            txn.delete(RULE_DEFN.kind, rule)
        txn.release(uniq_key("meterkey", stored.obj["_key"]))
        txn.delete(self.defn.kind, stored)


class MeteringLabelRules(Resource):
    defn = RULE_DEFN

    def labels(self) -> MeteringLabels:
        return self.state.resources["metering_label"]  # type: ignore[return-value]

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or not self.readable(ctx, stored.obj):
            raise rule_not_found(id_)
        return stored

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        """Filtering on one label reads only that label's rules."""
        labels = query.filters.get("metering_label_id")
        if labels and len(labels) == 1:
            mine = self.repo.objects(self.defn.kind, labels[0])
            objs = [o for o in mine if self.readable(ctx, o)]
            return filter_objects(self.defn, query, objs)
        return super().list_visible(ctx, query)

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        stored = self.load(ctx, id_)
        _no_update(self.defn, ctx, body)
        return stored.obj

    def policy_target(self, ctx: RequestContext, obj: dict[str, Any]) -> dict[str, Any]:
        """A new rule is its label's (a label the caller cannot see is its 404)."""
        if "id" not in obj:
            label = self.labels().load(ctx, str(obj.get("metering_label_id")))
            project = label.obj["project_id"]
            return {**obj, "project_id": project, "tenant_id": project}
        return obj

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        """Neutron's validate_metering_label_rule, and one IP version per rule."""
        remote = attrs.get("remote_ip_prefix")
        source, destination = attrs.get("source_ip_prefix"), attrs.get("destination_ip_prefix")
        if remote and (source or destination):
            raise BadRequest(
                "Cannot use 'remote-ip-prefix' in conjunction with 'source-ip-prefix' or "
                "'destination-ip-prefix'.",
                type="Invalid",
            )
        if not (remote or source or destination):
            raise BadRequest(
                "You must define at least one of the following parameters "
                "'remote_ip_prefix', or 'source_ip_prefix' or 'destination_ip_prefix'.",
                type="Invalid",
            )
        if source and destination:
            v_src = ipaddress.ip_interface(source).version
            if v_src != ipaddress.ip_interface(destination).version:
                raise InvalidInput(
                    "source_ip_prefix and destination_ip_prefix must be of the same IP "
                    "version: no flow matches an IPv4 source with an IPv6 destination."
                )

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        label = self.labels().load(ctx, attrs["metering_label_id"])
        pending = txn.puts.get(label.key)  # (a bulk: this label has rules in it already)
        if pending is not None:
            label = Stored(orjson.loads(pending), label.key, label.mod_revision)
        # The rule is its label's, whoever creates it (the label's project sees it).
        attrs["project_id"] = attrs["tenant_id"] = label.obj["project_id"]
        rules: dict[str, Any] = label.obj.setdefault("_rules", {})
        self._check_overlap(attrs, list(rules.values()))
        obj = self.new_object(attrs)
        for stamp in ("created_at", "updated_at", "revision_number"):
            obj.pop(stamp, None)
        rules[obj["id"]] = agent_rule(obj)
        txn.create(self.defn.kind, obj, label.obj["id"], owned=False)
        txn.update(label)  # (guarded: a concurrent rule or delete of the label retries)
        return obj

    @staticmethod
    def _check_overlap(new: dict[str, Any], rules: list[dict[str, Any]]) -> None:
        remote = new.get("remote_ip_prefix")
        if not remote:
            return
        net = ipaddress.ip_network(remote)
        for rule in rules:
            other = rule.get("remote_ip_prefix")
            if (
                other
                and rule.get("direction") == new["direction"]
                and bool(rule.get("excluded")) == bool(new["excluded"])
                and net.version == ipaddress.ip_network(other).version
                and net.overlaps(ipaddress.ip_network(other))
            ):
                raise Conflict(
                    f"Metering label rule with remote_ip_prefix '{remote}' overlaps another.",
                    type="MeteringLabelRuleOverlaps",
                )

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        label = self.repo.get(LABEL_DEFN.kind, stored.obj["metering_label_id"])
        if label is not None:
            label.obj.get("_rules", {}).pop(stored.obj["id"], None)
            txn.update(label)
        txn.delete(self.defn.kind, stored, owned=False)


RESOURCES = [MeteringLabels, MeteringLabelRules]
