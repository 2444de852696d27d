"""QoS: /v2.0/qos/policies, their rules, and /v2.0/qos/rule-types (Neutron's `qos`).

A policy record holds its rules (`_rules`, by id), so a rule change is one write of the
policy and two writers of one policy collide on its revision and retry (one rule of a
type and direction per policy is then always checked). Networks, ports (and floating
IPs) name a policy by `qos_policy_id`; attaching one `require`s the policy's record, and
a policy's delete marks it first (`delete_marked`), so the in-use check cannot race.
Agents follow the policies their local ports use, one record each.

Rule types served are exactly those the dataplane enforces (wyvern.apps.qos): bandwidth
limits and packet rate limits through OpenFlow meters, DSCP marks by set_field.
Minimum bandwidth and minimum packet rate cannot be guaranteed by a policer on the
userspace datapath, so they are not listed and creating one is refused (409).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from wyvern.api import rbac
from wyvern.api.attributes import (
    Attr,
    ResourceDef,
    now,
    present,
    standard_attrs,
    validate_update,
)
from wyvern.api.context import RequestContext
from wyvern.api.errors import NeutronError, NotFound, PolicyNotAuthorized, conflict
from wyvern.api.listing import ListQuery, filter_objects
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, Route, SharedByRbac, delete_marked
from wyvern.api.types import Bool
from wyvern.model.keys import uniq_key

KIND = "qos_policies"
MAX_INT = 2**31 - 1  # Neutron's DB_INTEGER_MAX_VALUE (max_kbps, max_burst_kbps, ...)
Rate = Annotated[int, Field(ge=0, le=MAX_INT)]
# Neutron's VALID_DSCP_MARKS (neutron_lib.services.qos.constants).
DSCP_MARKS = (0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56)
DscpMark = Literal[0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56]
Direction = Literal["egress", "ingress"]

BANDWIDTH_LIMIT = "bandwidth_limit"
DSCP_MARKING = "dscp_marking"
PACKET_RATE_LIMIT = "packet_rate_limit"
# The rule types the dataplane enforces (what /qos/rule-types lists), in Neutron's order.
RULE_TYPES = (BANDWIDTH_LIMIT, DSCP_MARKING, PACKET_RATE_LIMIT)
# Neutron's other rule types: served paths, refused creates (see the module docstring).
UNENFORCEABLE = ("minimum_bandwidth", "minimum_packet_rate")
DRIVER = "wyvern"

POLICY_DEFN = ResourceDef(
    name="policy",
    collection="policies",
    path="qos/policies",
    kind=KIND,
    attrs=(
        *standard_attrs(),
        Attr(
            "shared",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            sort=True,
            default_passes_policy=True,
        ),
        Attr(
            "is_default",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            sort=True,
            doc="the project's default: new networks of the project get it (qos-default)",
        ),
        Attr("rules", list[dict[str, Any]]),
    ),
)


def _rule_defn(rtype: str, attrs: tuple[Attr, ...]) -> ResourceDef:
    return ResourceDef(
        name=f"{rtype}_rule",
        collection=f"{rtype}_rules",
        path=f"qos/policies/{{policy_id}}/{rtype}_rules",
        kind=f"qos_{rtype}_rules",
        attrs=(
            Attr("id", str, filter=True, sort=True),
            Attr("qos_policy_id", str, filter=True, sort=True),
            *attrs,
        ),
        owned=False,
        parent_param="policy_id",
    )


def _direction() -> Attr:
    return Attr(
        "direction", Direction, post=True, put=True, default="egress", filter=True, sort=True
    )


RULE_DEFNS: dict[str, ResourceDef] = {
    BANDWIDTH_LIMIT: _rule_defn(
        BANDWIDTH_LIMIT,
        (
            Attr("max_kbps", Rate, post=True, put=True, required=True, filter=True, sort=True),
            Attr("max_burst_kbps", Rate, post=True, put=True, default=0, filter=True, sort=True),
            _direction(),
        ),
    ),
    DSCP_MARKING: _rule_defn(
        DSCP_MARKING,
        (Attr("dscp_mark", DscpMark, post=True, put=True, required=True, filter=True, sort=True),),
    ),
    PACKET_RATE_LIMIT: _rule_defn(
        PACKET_RATE_LIMIT,
        (
            Attr("max_kpps", Rate, post=True, put=True, required=True, filter=True, sort=True),
            Attr("max_burst_kpps", Rate, post=True, put=True, default=0, filter=True, sort=True),
            _direction(),
        ),
    ),
}
# What each type's parameters are, for rule type details (qos-rule-type-details).
PARAMETERS: dict[str, list[dict[str, Any]]] = {
    BANDWIDTH_LIMIT: [
        {
            "parameter_name": name,
            "parameter_type": "range",
            "parameter_values": {"start": 0, "end": MAX_INT},
        }
        for name in ("max_kbps", "max_burst_kbps")
    ]
    + [
        {
            "parameter_name": "direction",
            "parameter_type": "choices",
            "parameter_values": ["egress", "ingress"],
        }
    ],
    DSCP_MARKING: [
        {
            "parameter_name": "dscp_mark",
            "parameter_type": "choices",
            "parameter_values": list(DSCP_MARKS),
        }
    ],
    PACKET_RATE_LIMIT: [
        {
            "parameter_name": name,
            "parameter_type": "range",
            "parameter_values": {"start": 0, "end": MAX_INT},
        }
        for name in ("max_kpps", "max_burst_kpps")
    ]
    + [
        {
            "parameter_name": "direction",
            "parameter_type": "choices",
            "parameter_values": ["egress", "ingress"],
        }
    ],
}


def policy_not_found(id_: str) -> NotFound:
    return NotFound(f"QoS policy {id_} could not be found.", type="QosPolicyNotFound")


def rule_not_found(rule_id: str, policy_id: str) -> NotFound:
    return NotFound(
        f"QoS rule {rule_id} for policy {policy_id} could not be found.", type="QosRuleNotFound"
    )


def default_key(project: str) -> str:
    """One default policy per project (QoSPolicyDefaultAlreadyExists)."""
    return uniq_key("qos_default", project)


def rules_of(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy's rules as Neutron shows them in `rules`, oldest first."""
    raw: dict[str, dict[str, Any]] = policy.get("_rules") or {}
    return sorted(raw.values(), key=lambda r: (r.get("_order", 0), r["id"]))


def shown_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if not k.startswith("_")}


class QosPolicies(SharedByRbac):
    defn = POLICY_DEFN

    def all_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.repo.objects(KIND) if not o.get("_deleting")]

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        objs = super().visible_objects(ctx)
        self.extend(ctx, objs)
        return objs

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        super().extend(ctx, objs)
        for o in objs:
            o["rules"] = [shown_rule(r) for r in rules_of(o)]

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(KIND, id_)
        if stored is None or stored.obj.get("_deleting") or not self.readable(ctx, stored.obj):
            raise policy_not_found(id_[:64])
        return stored

    # ---- create ---------------------------------------------------------------------------
    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        attrs.pop("rules", None)
        obj = self.new_object(attrs)
        obj["_rules"] = {}
        if obj.get("is_default"):
            self._claim_default(txn, obj)
        if obj.pop("shared", False):  # shared: the wildcard policy, as Neutron
            rbac.wildcard(txn, obj, "qos_policy")
        rbac.sync_flags(obj)
        txn.create(KIND, obj)
        return obj

    def _claim_default(self, txn: Txn, obj: dict[str, Any]) -> None:
        project = obj["project_id"]
        txn.claim(
            default_key(project),
            obj["id"],
            conflict(
                "QoSPolicyDefaultAlreadyExists",
                f"A default QoS policy exists for project {project}.",
            ),
        )

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        changes = dict(changes)
        shared = changes.pop("shared", None)
        if shared and rbac.WILDCARD not in rbac.targets(obj, rbac.SHARED):
            rbac.wildcard(txn, obj, "qos_policy")
        is_default = changes.pop("is_default", None)
        if is_default is True and not obj.get("is_default"):
            self._claim_default(txn, obj)
            obj["is_default"] = True
        elif is_default is False and obj.get("is_default"):
            txn.release(default_key(obj["project_id"]))
            obj["is_default"] = False
        obj.update(changes)

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        """`shared: false` is a revocation (rbac_policies.unshare)."""
        from wyvern.api.resources.rbac_policies import unshare

        def unshared(object_id: str, details: str) -> NeutronError:
            return conflict("QosPolicyInUse", f"QoS Policy {object_id} is used by {details}.")

        obj = unshare(self, ctx, id_, body, if_match, in_use=unshared)
        return obj if obj is not None else super().update(ctx, id_, body, if_match)

    # ---- delete ---------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        delete_marked(self, ctx, id_, if_match, params, self.delete_checks)

    def delete_checks(self, ctx: RequestContext, stored: Stored) -> None:
        used = users(self.repo, stored.obj["id"])
        if used:
            kind, oid = used[0]
            raise conflict(
                "QosPolicyInUse", f"QoS Policy {stored.obj['id']} is used by {kind} {oid}."
            )

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        self.delete_checks(ctx, stored)
        if stored.obj.get("is_default"):
            txn.release(default_key(stored.obj["project_id"]))
        rbac.drop_all(self.repo, txn, stored.obj, "qos_policy")
        txn.delete(KIND, stored)

    # ---- rule types, unenforceable rules ----------------------------------------------------
    def extra_routes(self) -> list[Route]:
        name_param = {"rule_type": {"type": "string", "maxLength": 255}}
        out = [
            Route("/v2.0/qos/rule-types", "GET", self.list_rule_types),
            Route(
                "/v2.0/qos/rule-types/{rule_type}",
                "GET",
                self.show_rule_type,
                path_params=name_param,
            ),
        ]
        for rtype in UNENFORCEABLE:
            coll = f"/v2.0/qos/policies/{{policy_id}}/{rtype}_rules"
            out.append(Route(coll, "GET", self._unenforceable_list(rtype)))
            out.append(
                Route(coll, "POST", self._unenforceable_create(rtype), body={"type": "object"})
            )
        return out

    def _rule_types_allowed(self, ctx: RequestContext) -> None:
        if not self.allowed(ctx, "get_rule_type", {"project_id": ctx.project_id}):
            raise PolicyNotAuthorized("get_rule_type")

    def list_rule_types(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        self._rule_types_allowed(ctx)
        return {"rule_types": [{"type": t} for t in RULE_TYPES]}, 200

    def show_rule_type(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        self._rule_types_allowed(ctx)
        rtype = params["rule_type"]
        if rtype not in RULE_TYPES:
            raise NotFound(
                f"Rule type {rtype[:64]} could not be found.", type="QosRuleTypeNotFound"
            )
        driver = {"name": DRIVER, "supported_parameters": PARAMETERS[rtype]}
        return {"rule_type": {"type": rtype, "drivers": [driver]}}, 200

    def _unenforceable_list(
        self, rtype: str
    ) -> Callable[[RequestContext, dict[str, str], Any], tuple[Any, int]]:
        def handler(ctx: RequestContext, params: dict[str, str], body: Any) -> tuple[Any, int]:
            self.load(ctx, params["policy_id"])
            return {f"{rtype}_rules": []}, 200

        return handler

    def _unenforceable_create(
        self, rtype: str
    ) -> Callable[[RequestContext, dict[str, str], Any], tuple[Any, int]]:
        def handler(ctx: RequestContext, params: dict[str, str], body: Any) -> tuple[Any, int]:
            self.load(ctx, params["policy_id"])
            raise conflict(
                "QosRuleNotSupported",
                f"Rule {rtype} is not supported by Wyvern's datapath: a policer cannot "
                "guarantee a minimum rate (see GET /v2.0/qos/rule-types).",
            )

        return handler

    # ---- what others call -------------------------------------------------------------------
    def for_attach(self, ctx: RequestContext, txn: Txn, policy_id: str) -> Stored:
        """The policy a network, port or floating IP names: visible to the caller (owned,
        or shared with it), else 404; its record is guarded, so its delete cannot race."""
        stored = self.repo.get(KIND, policy_id)
        if stored is None or stored.obj.get("_deleting"):
            raise policy_not_found(policy_id)
        if not rbac.may_use(self.repo, ctx, stored.obj, rbac.SHARED):
            raise policy_not_found(policy_id)
        if stored.key not in txn.puts:
            txn.require(stored)
        return stored

    def default_for(self, project: str) -> str | None:
        """The project's default policy id, if any."""
        got = self.repo.store.get(default_key(project))
        return got.value.decode() if got is not None else None


def users(repo: Any, policy_id: str) -> list[tuple[str, str]]:
    """(kind, id) of what names the policy: networks, ports, floating IPs."""
    out: list[tuple[str, str]] = []
    for kind, label in (("networks", "network"), ("ports", "port"), ("floatingips", "fip")):
        out += [(label, o["id"]) for o in repo.objects(kind) if o.get("qos_policy_id") == policy_id]
    return out


class _Rules(Resource):
    """One rule type's sub-resource (/qos/policies/{policy_id}/<type>_rules)."""

    rtype: str

    @property
    def policies(self) -> QosPolicies:
        res = self.state.resources["policy"]
        assert isinstance(res, QosPolicies)
        return res

    def _policy(self, ctx: RequestContext) -> Stored:
        try:
            uuid.UUID(ctx.parent)
        except ValueError:
            raise policy_not_found(ctx.parent[:64]) from None
        return self.policies.load(ctx, ctx.parent)

    def _check(self, ctx: RequestContext, action: str, policy: dict[str, Any]) -> None:
        rule = f"{action}_policy_{self.rtype}_rule"
        target = {"ext_parent:project_id": policy.get("project_id")}
        self.state.policy.enforce(ctx, rule, target, ())

    def _mine(self, policy: dict[str, Any]) -> list[dict[str, Any]]:
        return [shown_rule(r) for r in rules_of(policy) if r["type"] == self.rtype]

    # ---- reading --------------------------------------------------------------------------
    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        policy = self._policy(ctx).obj
        self._check(ctx, "get", policy)
        return self._mine(policy)

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        return filter_objects(self.defn, query, self.visible_objects(ctx))

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        policy = self._policy(ctx)
        self._check(ctx, "get", policy.obj)
        rule = (policy.obj.get("_rules") or {}).get(id_)
        if rule is None or rule["type"] != self.rtype:
            raise rule_not_found(id_[:64], policy.obj["id"])
        return Stored(shown_rule(rule), policy.key, policy.mod_revision)

    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        return present(self.defn, ctx, obj, fields)

    # ---- writing --------------------------------------------------------------------------
    def _conflicts(self, policy: dict[str, Any], rule: dict[str, Any]) -> None:
        """One rule of a type per direction (DSCP: one) in a policy, as Neutron's unique
        constraints."""
        for other in rules_of(policy):
            if other["id"] == rule["id"] or other["type"] != self.rtype:
                continue
            if other.get("direction") == rule.get("direction"):
                raise conflict(
                    "QoSRulesConflict",
                    f"Rule {self.rtype} conflicts with rule {other['id']} which already "
                    f"exists in QoS Policy {policy['id']}.",
                )

    def create_many(self, ctx: RequestContext, bodies: list[Any]) -> list[dict[str, Any]]:
        from wyvern.api.attributes import validate_create

        prepared = [validate_create(self.defn, ctx, b) for b in bodies]

        def attempt() -> list[dict[str, Any]]:
            policy = self._policy(ctx)
            self._check(ctx, "create", policy.obj)
            raw = dict(policy.obj.get("_rules") or {})
            order = max((int(r.get("_order", 0)) for r in raw.values()), default=0)
            out = []
            for attrs in prepared:
                order += 1
                rule = {
                    "id": str(uuid.uuid4()),
                    "qos_policy_id": policy.obj["id"],
                    **{k: v for k, v in attrs.items() if k not in ("id", "qos_policy_id")},
                    "type": self.rtype,
                    "_order": order,
                }
                self._conflicts({**policy.obj, "_rules": raw}, rule)
                raw[rule["id"]] = rule
                out.append(shown_rule(rule))
            self._write(policy, raw)
            return out

        return with_retries(attempt)

    def _write(self, policy: Stored, raw: dict[str, dict[str, Any]]) -> None:
        """Neutron bumps the policy's revision with each rule change."""
        policy.obj["_rules"] = raw
        policy.obj["revision_number"] = int(policy.obj.get("revision_number", 0)) + 1
        policy.obj["updated_at"] = now()
        txn = self.repo.txn()
        txn.update(policy)
        txn.commit()

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        changes = validate_update(self.defn, ctx, body)

        def attempt() -> dict[str, Any]:
            policy = self._policy(ctx)
            self._check(ctx, "update", policy.obj)
            raw = dict(policy.obj.get("_rules") or {})
            old = raw.get(id_)
            if old is None or old["type"] != self.rtype:
                raise rule_not_found(id_[:64], policy.obj["id"])
            rule = {**old, **changes}
            self._conflicts(policy.obj, rule)
            raw[id_] = rule
            self._write(policy, raw)
            return shown_rule(rule)

        return with_retries(attempt)

    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        def attempt() -> None:
            policy = self._policy(ctx)
            self._check(ctx, "delete", policy.obj)
            raw = dict(policy.obj.get("_rules") or {})
            old = raw.get(id_)
            if old is None or old["type"] != self.rtype:
                raise rule_not_found(id_[:64], policy.obj["id"])
            del raw[id_]
            self._write(policy, raw)

        with_retries(attempt)


class BandwidthLimitRules(_Rules):
    defn = RULE_DEFNS[BANDWIDTH_LIMIT]
    rtype = BANDWIDTH_LIMIT


class DscpMarkingRules(_Rules):
    defn = RULE_DEFNS[DSCP_MARKING]
    rtype = DSCP_MARKING


class PacketRateLimitRules(_Rules):
    defn = RULE_DEFNS[PACKET_RATE_LIMIT]
    rtype = PACKET_RATE_LIMIT


RESOURCES: list[type[Resource]] = [
    QosPolicies,
    BandwidthLimitRules,
    DscpMarkingRules,
    PacketRateLimitRules,
]
