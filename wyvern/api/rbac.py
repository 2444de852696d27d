"""Network RBAC (`/v2.0/rbac-policies`), Neutron's model: who may see and use an object.

The visibility seam: resources ask `visible(ctx, obj)` (may see it) and `may_use(repo,
ctx, obj, action)` (may build on it: a port on a network shared with them, a router
gateway on an external network). Both read only the object's own record, which carries
its policies as `_rbac` ({policy id: [action, target project]}); the policy records
(`/wyvern/rbac_policies/<id>`) are what the API lists and shows. Every policy write
writes the object's record in the same transaction, guarded, so the two never disagree.

Race safety. Granting access breaks nothing, so a policy create is one transaction.
Taking access away (a delete, or an update that changes the target) is two, as a
network delete is (wyvern.api.resource.delete_marked): first the object's record marks
the policy as being revoked (`_rbac_revoking`, with an intent key on this process's
lease); creators that build on the object `require` its record, so one that read it
before the mark fails its guard, retries and finds no usable grant. Then the users the
revocation would strand are counted (`in_use`), and the policy goes or the mark is
undone. A mark whose intent is gone (its process died) is ignored by `may_use`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from wyvern.api.context import RequestContext
from wyvern.api.errors import NeutronError, conflict
from wyvern.api.repo import Repo, Txn
from wyvern.model.keys import intent_key, uniq_key

SHARED = "access_as_shared"
EXTERNAL = "access_as_external"
WILDCARD = "*"
KIND = "rbac_policies"


@dataclass(frozen=True)
class ObjectType:
    """An RBAC object type: its store kind, resource name and the actions it takes."""

    name: str
    kind: str
    resource: str
    actions: tuple[str, ...]


# The types this API serves (Neutron also has bgpvpn: no such resource here, so it is
# refused as an unknown type, as Neutron refuses a type no plugin registered).
TYPES: dict[str, ObjectType] = {
    "network": ObjectType("network", "networks", "network", (SHARED, EXTERNAL)),
    "security_group": ObjectType("security_group", "security_groups", "security_group", (SHARED,)),
    "address_group": ObjectType("address_group", "address_groups", "address_group", (SHARED,)),
    "address_scope": ObjectType("address_scope", "address_scopes", "address_scope", (SHARED,)),
    "subnetpool": ObjectType("subnetpool", "subnetpools", "subnetpool", (SHARED,)),
    "qos_policy": ObjectType("qos_policy", "qos_policies", "policy", (SHARED,)),
}


def entries(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The object's policies: id -> (action, target project)."""
    raw: dict[str, list[str]] = obj.get("_rbac") or {}
    return {pid: (e[0], e[1]) for pid, e in raw.items()}


def targets(obj: dict[str, Any], action: str) -> set[str]:
    return {t for a, t in entries(obj).values() if a == action}


def granted_to(obj: dict[str, Any], project: str, action: str) -> list[str]:
    """Ids of the policies that give `project` `action` on the object."""
    return [pid for pid, (a, t) in entries(obj).items() if a == action and t in (WILDCARD, project)]


def visible(ctx: RequestContext, obj: dict[str, Any], actions: tuple[str, ...]) -> bool:
    """Owner, admin, or a policy of one of `actions` targets the caller or everyone."""
    if ctx.owns(obj):
        return True
    return any(granted_to(obj, ctx.project_id, a) for a in actions)


def shared_with(ctx: RequestContext, obj: dict[str, Any]) -> bool:
    """Neutron's `shared` attribute as the caller sees it: shared with everyone or with
    the caller's project."""
    return bool(granted_to(obj, ctx.project_id, SHARED))


def may_use(repo: Repo, ctx: RequestContext, obj: dict[str, Any], action: str) -> bool:
    """The caller may build on the object (the caller's writes `require` its record). A
    grant being revoked does not count, unless the revoking process is gone."""
    return ctx.owns(obj) or project_may_use(repo, ctx.project_id, obj, action)


def project_may_use(repo: Repo, project: str, obj: dict[str, Any], action: str) -> bool:
    """`may_use` for what a project's object builds on (a port's security groups)."""
    if obj.get("project_id") == project:
        return True
    revoking: dict[str, bool] = obj.get("_rbac_revoking") or {}
    for pid in granted_to(obj, project, action):
        if pid not in revoking or repo.store.get(intent_key(KIND, pid)) is None:
            return True
    return False


def show_shared(ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
    """Set each object's `shared` as the caller sees it (`shared_with`), before filters
    (`?shared=true` means shared with me) and presentation."""
    for o in objs:
        o["shared"] = shared_with(ctx, o)


def wildcard(txn: Txn, obj: dict[str, Any], object_type: str, action: str = SHARED) -> None:
    """A policy giving every project `action` on the object, owned by its project: what
    Neutron writes when `shared` (or a network's `router:external`) is set."""
    policy = new_policy(object_type, obj["id"], action, WILDCARD, obj["project_id"])
    policy["created_at"] = policy["updated_at"] = obj.get("updated_at") or ""
    policy["revision_number"] = 0
    txn.create(KIND, policy)
    add_entry(txn, obj, policy)


def covered(obj: dict[str, Any], action: str, skip: str | None = None) -> set[str]:
    """Projects that keep `action` on the object without policy `skip`: its owner, the
    targets of the other policies (WILDCARD among them if one shares with everyone)."""
    out = {str(obj.get("project_id"))}
    out |= {t for pid, (a, t) in entries(obj).items() if a == action and pid != skip}
    return out


def stranded(users: set[str], keep: set[str]) -> set[str]:
    """The projects in `users` that `keep` does not cover."""
    return set() if WILDCARD in keep else users - keep


# ---- writes on the object's record (the caller also writes the policy record) -----------


def claim_key(object_type: str, object_id: str, action: str, target: str) -> str:
    """No two identical policies (DuplicateRbacPolicy)."""
    return uniq_key("rbac", object_type, object_id, action, target)


def duplicate() -> NeutronError:
    return conflict("DuplicateRbacPolicy", "An RBAC policy already exists with those values.")


def add_entry(txn: Txn, obj: dict[str, Any], policy: dict[str, Any]) -> None:
    """Record `policy` on `obj` (the caller writes obj) and claim its uniqueness."""
    raw = dict(obj.get("_rbac") or {})
    raw[policy["id"]] = [policy["action"], policy["target_tenant"]]
    obj["_rbac"] = raw
    txn.claim(
        claim_key(policy["object_type"], obj["id"], policy["action"], policy["target_tenant"]),
        policy["id"],
        duplicate(),
    )
    sync_flags(obj)


def drop_entry(txn: Txn, obj: dict[str, Any], policy: dict[str, Any]) -> None:
    raw = dict(obj.get("_rbac") or {})
    raw.pop(policy["id"], None)
    obj["_rbac"] = raw
    revoking = dict(obj.get("_rbac_revoking") or {})
    revoking.pop(policy["id"], None)
    obj["_rbac_revoking"] = revoking
    txn.release(
        claim_key(policy["object_type"], obj["id"], policy["action"], policy["target_tenant"])
    )
    sync_flags(obj)


def sync_flags(obj: dict[str, Any]) -> None:
    """The stored `shared` flag: a wildcard access_as_shared policy exists (what Neutron's
    `shared` means to a project no policy names)."""
    obj["shared"] = WILDCARD in targets(obj, SHARED)


def new_policy(
    object_type: str, object_id: str, action: str, target: str, project: str
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "project_id": project,
        "tenant_id": project,
        "object_type": object_type,
        "object_id": object_id,
        "action": action,
        "target_tenant": target,
        "target_project": target,
    }


def drop_all(repo: Repo, txn: Txn, obj: dict[str, Any], object_type: str) -> None:
    """The object goes: its policies go with it (Neutron's rows cascade)."""
    for pid, (action, target) in entries(obj).items():
        stored = repo.get(KIND, pid)
        if stored is not None:
            txn.delete(KIND, stored)
        txn.release(claim_key(object_type, obj["id"], action, target))
