"""`/v2.0/rbac-policies`: share an object with a project (or every project), as Neutron.

What a policy grants is decided in wyvern.api.rbac (the visibility seam every resource
asks); this module is the CRUD, Neutron's checks, and the two-step revocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wyvern.api import rbac
from wyvern.api.attributes import Attr, ProjectId, ResourceDef, now, validate_update
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    NeutronError,
    NotFound,
    PolicyNotAuthorized,
    bad_request,
    conflict,
)
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, _Intent, check_revision, touch
from wyvern.api.types import ShortStr
from wyvern.model.keys import intent_key

DEFN = ResourceDef(
    name="rbac_policy",
    collection="rbac_policies",
    path="rbac-policies",
    kind=rbac.KIND,
    quota="rbac_policy",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
        Attr(
            "object_type",
            ShortStr,
            post=True,
            required=True,
            filter=True,
            sort=True,
            doc="network, security_group, address_group, address_scope, subnetpool or qos_policy",
        ),
        Attr("object_id", ShortStr, post=True, required=True, filter=True, sort=True),
        Attr(
            "action",
            ShortStr,
            post=True,
            required=True,
            filter=True,
            sort=True,
            doc="access_as_shared, or access_as_external (networks)",
        ),
        Attr(
            "target_tenant",
            ProjectId,
            post=True,
            put=True,
            filter=True,
            sort=True,
            doc="A project id, or * for every project.",
        ),
        # Neutron's records name it target_project, but its API shows only target_tenant
        # (what its attribute map declares); taken here as a synonym.
        Attr(
            "target_project",
            ProjectId,
            post=True,
            put=True,
            filter=True,
            sort=True,
            visible=False,
        ),
    ),
)


def policy_not_found(id_: str) -> NotFound:
    return NotFound(f"RBAC policy with ID {id_} not found", type="RbacPolicyNotFound")


def policy_in_use(object_id: str, details: str) -> Conflict:
    return conflict(
        "RbacPolicyInUse",
        f"RBAC policy on object {object_id} cannot be removed because other objects depend "
        f"on it.\nDetails: {details}",
    )


def _target(changes: dict[str, Any], required: bool) -> str | None:
    tenant = changes.pop("target_tenant", None)
    project = changes.pop("target_project", None)
    if tenant is not None and project is not None and tenant != project:
        raise BadRequest("'target_tenant' and 'target_project' do not match")
    target = tenant if tenant is not None else project
    if target is None and required:
        raise BadRequest(
            "Failed to parse request. Required attribute 'target_tenant' not specified"
        )
    return None if target is None else str(target)


def _restrict_wildcard(ctx: RequestContext, target: str | None, action: str) -> None:
    """Neutron's restrict_wildcard rule: only admins share with every project."""
    if target == rbac.WILDCARD and not ctx.is_admin:
        raise PolicyNotAuthorized(f"{action}_rbac_policy:target_tenant")


class RbacPolicies(Resource):
    defn = DEFN

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        otype = str(attrs["object_type"]).strip().lower()
        spec = rbac.TYPES.get(otype)
        if spec is None:
            raise InvalidInput(f"'{attrs['object_type']}' is not a valid RBAC object type")
        attrs["object_type"] = otype
        if attrs["action"] not in spec.actions:
            raise bad_request(
                "InvalidActionForType",
                f"Invalid action '{attrs['action']}' for object type '{otype}'. Valid actions: "
                f"{list(spec.actions)}",
            )
        target = _target(attrs, required=True)
        _restrict_wildcard(ctx, target, "create")
        attrs["target_tenant"] = attrs["target_project"] = target

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        spec = rbac.TYPES[attrs["object_type"]]
        target = self._object(ctx, txn, spec, attrs["object_id"])
        policy = rbac.new_policy(
            spec.name,
            target.obj["id"],
            attrs["action"],
            attrs["target_tenant"],
            attrs["project_id"],
        )
        stamp = now()
        policy["created_at"] = policy["updated_at"] = stamp
        policy["revision_number"] = 0
        if spec.name == "subnetpool":
            self._check_scope_access(txn, target.obj, policy["target_tenant"])
        txn.create(rbac.KIND, policy)
        rbac.add_entry(txn, target.obj, policy)
        if spec.name == "network" and attrs["action"] == rbac.EXTERNAL:
            # Neutron turns the network into an external one (visible to the targets).
            target.obj["router:external"] = True
        touch(target.obj)
        txn.update(target)
        return policy

    def _check_scope_access(self, txn: Txn, pool: dict[str, Any], target: str) -> None:
        """Neutron's subnet pool policy check: a pool in an address scope is shared only
        with a target that may use the scope (here also its owner), else InvalidInput."""
        scope_id = pool.get("address_scope_id")
        if not scope_id:
            return
        scope = self.repo.get("address_scopes", scope_id)
        if scope is not None:
            txn.require(scope)
            if scope.obj.get("project_id") == target or rbac.granted_to(
                scope.obj, target, rbac.SHARED
            ):
                return
        raise InvalidInput(
            f"Failed to create RBAC policy on object {pool['id']} because target project doesn't "
            "have access to associated address scope."
        )

    def _object(self, ctx: RequestContext, txn: Txn, spec: rbac.ObjectType, id_: str) -> Stored:
        """The object a new policy names: the caller must own it (or be admin). One read per
        transaction, so a bulk create of many policies on one object writes it once."""
        cache: dict[str, Stored] = txn.__dict__.setdefault("_wyvern_rbac_objects", {})
        stored = cache.get(id_)
        if stored is not None:
            return stored
        res = self.state.resources[spec.resource]
        stored = self.repo.get(spec.kind, id_)
        if stored is None or stored.obj.get("_deleting") or not res.visible(ctx, stored.obj):
            # Neutron's create callback fails on the object's lookup: InvalidInput.
            label = spec.resource.replace("_", " ").capitalize()
            raise InvalidInput(f"{label} {id_} could not be found.")
        if not ctx.owns(stored.obj):
            raise InvalidInput(
                f"Only admins can manipulate policies on {spec.kind.replace('_', ' ')} they do "
                "not own"
            )
        cache[id_] = stored
        return stored

    # ---- read -----------------------------------------------------------------------------
    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(rbac.KIND, id_)
        if stored is None or not self.visible(ctx, stored.obj):
            raise policy_not_found(id_)
        return stored

    # ---- update: only the target ----------------------------------------------------------
    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        from wyvern.api.attributes import validate_update

        changes = validate_update(self.defn, ctx, body)
        new = _target(changes, required=False)
        _restrict_wildcard(ctx, new, "update")
        stored = self.load_for_write(ctx, id_, "update")
        if new is None or new == stored.obj["target_tenant"]:
            return stored.obj

        def final(txn: Txn, obj: Stored, policy: Stored) -> None:
            rbac.drop_entry(txn, obj.obj, policy.obj)
            policy.obj["target_tenant"] = policy.obj["target_project"] = new
            rbac.add_entry(txn, obj.obj, policy.obj)
            touch(policy.obj)
            txn.update(policy)

        # Checked as the old target's delete, as Neutron does (even towards "*": the new
        # target is not counted before it exists).
        return revoke(self, ctx, id_, final)

    # ---- delete ---------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        self.load_for_write(ctx, id_, "delete")

        def final(txn: Txn, obj: Stored, policy: Stored) -> None:
            rbac.drop_entry(txn, obj.obj, policy.obj)
            txn.delete(rbac.KIND, policy)
            if policy.obj["object_type"] == "network" and policy.obj["action"] == rbac.EXTERNAL:
                self._maybe_internal(obj.obj)

        revoke(self, ctx, id_, final)

    def _maybe_internal(self, net: dict[str, Any]) -> None:
        """Neutron: a network whose last access_as_external policy goes is no longer
        external, which a gateway port on it forbids (ExternalNetworkInUse, as the update
        of router:external to false)."""
        if rbac.targets(net, rbac.EXTERNAL):
            return
        if any(
            p.get("device_owner") == "network:router_gateway"
            for p in self.repo.objects("ports", net["id"])
        ):
            raise conflict(
                "ExternalNetworkInUse",
                f"External network {net['id']} cannot be updated to be non-external, "
                "since it has existing gateway ports.",
            )
        net["router:external"] = False


Final = Callable[[Txn, Stored, Stored], None]


def revoke(
    res: Resource,
    ctx: RequestContext,
    policy_id: str,
    final: Final,
    in_use: Callable[[str, str], NeutronError] = policy_in_use,
) -> dict[str, Any]:
    """Take a policy's grant away (delete it, or change its target): mark it on the
    object's record (creators that read the record before retry, and then find no grant),
    refuse if a project would lose access it builds on, then
    apply `final` to the object and policy and drop the mark, in one transaction. The mark
    rides on an intent key of this process's lease; see wyvern.api.rbac."""
    repo = res.repo
    intent = _Intent(repo.store)
    key = intent_key(rbac.KIND, policy_id)

    def read() -> tuple[Stored, Stored, rbac.ObjectType]:
        policy = repo.get(rbac.KIND, policy_id)
        if policy is None:
            raise policy_not_found(policy_id)
        spec = rbac.TYPES[policy.obj["object_type"]]
        obj = repo.get(spec.kind, policy.obj["object_id"])
        if obj is None:  # (the object's delete takes its policies in the same txn)
            raise policy_not_found(policy_id)
        return policy, obj, spec

    try:

        def mark() -> None:
            policy, obj, _ = read()
            revoking = {  # (marks left by dead processes go: their intents are gone)
                pid: True
                for pid in obj.obj.get("_rbac_revoking") or {}
                if repo.store.get(intent_key(rbac.KIND, pid)) is not None
            }
            revoking[policy_id] = True
            obj.obj["_rbac_revoking"] = revoking
            txn = repo.txn()
            txn.update(obj)
            txn.require(policy)
            txn.put_leased(key, b"revoke", intent.lease)
            txn.commit()

        with_retries(mark)
        try:

            def attempt() -> dict[str, Any]:
                policy, obj, spec = read()
                check_in_use(res, spec, obj.obj, policy.obj, in_use)
                txn = repo.txn()
                txn.release(key)
                final(txn, obj, policy)
                touch(obj.obj)
                txn.update(obj)
                txn.commit()
                return policy.obj

            return with_retries(attempt)
        except BaseException:

            def unmark() -> None:
                got = repo.get(rbac.KIND, policy_id)
                if got is None:
                    return
                obj = repo.get(rbac.TYPES[got.obj["object_type"]].kind, got.obj["object_id"])
                txn = repo.txn()
                if obj is not None and policy_id in (obj.obj.get("_rbac_revoking") or {}):
                    obj.obj["_rbac_revoking"].pop(policy_id)
                    txn.update(obj)
                txn.release(key)
                txn.commit()

            with_retries(unmark)
            raise
    finally:
        intent.close()


def check_in_use(
    res: Resource,
    spec: rbac.ObjectType,
    obj: dict[str, Any],
    policy: dict[str, Any],
    in_use: Callable[[str, str], NeutronError],
) -> None:
    """Neutron's BEFORE_DELETE / BEFORE_UPDATE checks: no project may lose access to the
    object while it has something built on it (ports on a shared network, routers with a
    gateway on an external one)."""
    action = policy["action"]
    users = bound_projects(res, spec, obj, action)
    remaining = rbac.covered(obj, action, skip=policy["id"])
    lost = rbac.stranded(users, remaining)
    if lost:
        raise in_use(obj["id"], f"project_id={','.join(sorted(lost))}")


def bound_projects(
    res: Resource, spec: rbac.ObjectType, obj: dict[str, Any], action: str
) -> set[str]:
    """Projects with something on the object that needs `action` on it."""
    repo = res.repo
    if spec.name == "network" and action == rbac.SHARED:
        return {str(p.get("project_id")) for p in repo.objects("ports", obj["id"])}
    if spec.name == "network" and action == rbac.EXTERNAL:
        return {
            str(r.get("project_id"))
            for r in repo.objects("routers")
            if (r.get("external_gateway_info") or {}).get("network_id") == obj["id"]
        }
    if spec.name == "security_group":
        return {
            str(p.get("project_id"))
            for p in repo.objects("ports")
            if obj["id"] in (p.get("security_groups") or [])
        }
    if spec.name == "address_group":
        return {
            str(r.get("project_id"))
            for r in repo.objects("security_group_rules")
            if r.get("remote_address_group_id") == obj["id"]
        }
    if spec.name == "address_scope":
        return {
            str(p.get("project_id"))
            for p in repo.objects("subnetpools")
            if p.get("address_scope_id") == obj["id"]
        }
    if spec.name == "subnetpool":
        return {
            str(s.get("project_id"))
            for s in repo.objects("subnets")
            if s.get("subnetpool_id") == obj["id"]
        }
    if spec.name == "qos_policy":  # (networks, ports and floating IPs naming it)
        return {
            str(o.get("project_id"))
            for kind in ("networks", "ports", "floatingips")
            for o in repo.objects(kind)
            if o.get("qos_policy_id") == obj["id"]
        }
    return set()


def unshare(
    res: Resource,
    ctx: RequestContext,
    id_: str,
    body: Any,
    if_match: int | None,
    in_use: Callable[[str, str], NeutronError],
) -> dict[str, Any] | None:
    """An update with `shared: false` deletes the wildcard access_as_shared policy, which
    may strand other projects' uses: a revocation whose last transaction also writes the
    other changes (`in_use` words the refusal). None: no wildcard to take away, an
    ordinary update."""
    changes = validate_update(res.defn, ctx, body)
    if changes.get("shared") is not False:
        return None
    stored = res.load_for_write(ctx, id_, "update")
    res.authorize(ctx, "update", {**stored.obj, **changes}, [(k, body[k]) for k in changes])
    check_revision(stored, if_match)
    wildcard = [
        pid
        for pid, (a, t) in rbac.entries(stored.obj).items()
        if a == rbac.SHARED and t == rbac.WILDCARD
    ]
    if not wildcard:
        return None

    def final(txn: Txn, obj: Stored, policy: Stored) -> None:
        rbac.drop_entry(txn, obj.obj, policy.obj)
        txn.delete(rbac.KIND, policy)
        res.update_ops(ctx, obj, changes, txn)

    revoke(res, ctx, wildcard[0], final, in_use=in_use)
    obj = with_retries(lambda: res.load(ctx, id_).obj)
    res.extend(ctx, [obj])
    return obj


RESOURCES = [RbacPolicies]
